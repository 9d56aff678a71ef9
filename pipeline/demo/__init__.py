"""The job without outside resources: what `rerank demo` generates (a synthetic corpus, `corpus`,
from the words in `words`; a demo model, `model`) and a local S3 endpoint (`s3_endpoint`: moto on
loopback, with `processes` to start and wait for it). The benchmarks and the tests draw on the same
generators and endpoint; nothing else in the library imports this package."""
