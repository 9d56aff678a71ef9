#!/usr/bin/env bash
# Submit the nightly rerank job to a running Ray cluster with `ray job submit`.
#
#   deploy/submit.sh ADDRESS [DATE] [CONFIG]
#     ADDRESS  the cluster's job server, e.g. http://ray-head:8265
#     DATE     run date YYYY-MM-DD (default: today, UTC)
#     CONFIG   job config inside the repo (default: deploy/nightly.yaml)
#
# The repo is uploaded as the job's working_dir (deploy/runtime_env.yaml); object-storage
# credentials come from the cluster nodes (instance role / env), never from this command line.
set -euo pipefail
address=${1:?usage: deploy/submit.sh ADDRESS [DATE] [CONFIG]}
date=${2:-$(date -u +%F)}
config=${3:-deploy/nightly.yaml}
cd "$(dirname "$0")/.."
exec ray job submit --address "$address" \
    --submission-id "rerank-nightly-${date}-$(date -u +%H%M%S)" \
    --runtime-env deploy/runtime_env.yaml \
    -- python -m jobs.rerank_nightly --date "$date" --config "$config"
