"""The GPU benchmark and check: `python -m bench.gpu` (bench/gpu/benchmark.py) runs the job's stages
on one GPU without Ray; bench/gpu/check.sh runs tests/gpu and then it on a CUDA machine. Run from
the repository root, as a module (`-m`), so that no folder of this package lands on sys.path."""
