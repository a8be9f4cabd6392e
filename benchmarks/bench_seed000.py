#!/usr/bin/env python3
"""Seed 000: a C loop holding the GIL vs releasing it, on gilfree and stdlib threads (plus numpy).

    python benchmarks/bench_seed000.py [--quick] [--workers N] [--repeat K] [--json PATH]
"""

from _common import main

if __name__ == "__main__":
    main(["seed000", "numpy"], __doc__.splitlines()[0])
