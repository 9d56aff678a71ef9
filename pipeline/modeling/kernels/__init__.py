"""The scoring module's faster paths, each behind a flag and held to today's padded eager scores:
packed (unpadded) batches with variable-length attention (`--attention`) and torch.compile
(`--compile`)."""
