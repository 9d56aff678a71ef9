"""`python -m bench.gpu [--smoke] --out gpu.json`: see bench/gpu/benchmark.py."""

import sys

from bench.gpu.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
