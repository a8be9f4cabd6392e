#!/usr/bin/env python3
"""Native C tasks with no GIL: parallel_for scaling and per-chunk / per-task dispatch cost.

    python benchmarks/bench_native.py [--quick] [--workers N] [--repeat K] [--json PATH]
"""

from _common import main

if __name__ == "__main__":
    main(["native"], __doc__.splitlines()[0])
