"""Shared by the scripts in this directory: find gilfree, run workloads.

The scripts work both with gilfree installed (``pip install -e .``) and
straight from a checkout, where ``src/`` is put on ``sys.path``.
"""

from __future__ import annotations

import os
import sys

_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _import_bench():
    try:
        import gilfree.bench as bench
    except ImportError:
        if _SRC not in sys.path:
            sys.path.insert(0, _SRC)
        import gilfree.bench as bench
    return bench


def main(names, description: str) -> None:
    """Parse this script's options and run ``names``; exit with its code."""
    bench = _import_bench()
    prog = os.path.basename(sys.argv[0])
    sys.exit(bench.main(sys.argv[1:], names=names, description=description, prog=prog))
