#!/usr/bin/env python3
"""The interpreters backend: countdown in parallel, task cost across interpreters, worker start-up.

    python benchmarks/bench_interpreters.py [--quick] [--workers N] [--repeat K] [--json PATH]
"""

from _common import main

if __name__ == "__main__":
    main(["interpreters"], __doc__.splitlines()[0])
