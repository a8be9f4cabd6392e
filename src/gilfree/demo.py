"""Demo workloads from the seeds.

- seed 000: :func:`busy_loop_holding_gil` and :func:`busy_loop_releasing_gil`
  are the same C loop; on N threads the first runs at 1x (it keeps the GIL),
  the second at Nx. ``NATIVE_*`` are addresses of C functions with
  :mod:`gilfree.native`'s signatures, for its demos and benchmarks.
- seed 001: :func:`countdown`, the pure-Python loop that shows the GIL.
"""

from __future__ import annotations

from ._core import (  # noqa: F401 (re-exported)
    NATIVE_BUSY_RANGE,
    NATIVE_EMPTY_RANGE,
    NATIVE_EMPTY_TASK,
    busy_loop_holding_gil,
    busy_loop_releasing_gil,
)

__all__ = [
    "busy_loop_holding_gil", "busy_loop_releasing_gil", "countdown",
    "NATIVE_BUSY_RANGE", "NATIVE_EMPTY_RANGE", "NATIVE_EMPTY_TASK",
]


def countdown(n: int) -> None:
    """Seed 001's benchmark: count down from n in pure Python."""
    while n > 0:
        n -= 1
