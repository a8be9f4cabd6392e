#!/usr/bin/env python3
"""Seed 001: countdown(n) on threads: the GIL, measured.

    python benchmarks/bench_seed001.py [--quick] [--workers N] [--repeat K] [--json PATH]
"""

from _common import main

if __name__ == "__main__":
    main(["seed001"], __doc__.splitlines()[0])
