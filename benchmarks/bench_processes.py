#!/usr/bin/env python3
"""The processes backend: countdown in parallel, task cost, round trips, big buffers, start-up.

    python benchmarks/bench_processes.py [--quick] [--workers N] [--repeat K] [--json PATH]
"""

from _common import main

if __name__ == "__main__":
    main(["processes"], __doc__.splitlines()[0])
