#!/usr/bin/env python3
"""Dispatch cost of trivial tasks: map, submit-all-then-result, round trips vs the stdlib and peers.

    python benchmarks/bench_dispatch.py [--quick] [--workers N] [--repeat K] [--json PATH]
"""

from _common import main

if __name__ == "__main__":
    main(["dispatch"], __doc__.splitlines()[0])
