"""Seed 001: ``countdown(n)`` on threads shows the GIL.

The seed runs ``countdown(50_000_000)`` once, then split over 2 threads, and
finds the threads no faster (often slower): pure-Python bytecode holds the
GIL. Here ``workers`` countdowns run serially, on ``workers`` gilfree threads
and on ``workers`` stdlib threads; ``n`` is calibrated so that one countdown
takes about 0.2 s. The expected speedup is ≈1× on the threads backend; the
interpreters and processes backends (later releases) are what beats it.
"""

from __future__ import annotations

from typing import List

from ..case import GILFREE, SERIAL, STDLIB, Case
from ..timing import fmt_n
from .base import Workload
from .common import (GILFREE_POOL, GILFREE_TPE, SERIAL_RUN, STDLIB_TPE, CountdownCalls,
                     calls_setup, label)

GROUP = "seed 001: countdown (pure Python)"


class Seed001(CountdownCalls, Workload):
    name = "seed001"
    title = "seed 001"
    about = ("countdown(n), seed 001's pure-Python loop: on threads it stays ≈1× "
             "(or worse) because bytecode holds the GIL")

    def _prepare(self):
        return self._countdown_calls(self.cfg.workers)

    def cases(self) -> List[Case]:
        w = self.cfg.workers

        def case(runner, workers, kind, key, **kw):
            return Case(group=GROUP, subject=label(runner, workers), kind=kind,
                        key=f"s001.{key}", items=w, unit="call",
                        setup=calls_setup(self._prepare, runner, workers),
                        speedup_to="s001.serial", **kw)

        return [
            case(SERIAL_RUN, 1, SERIAL, "serial"),
            case(GILFREE_TPE, w, GILFREE, "gtpeN", ratio_to="s001.stpeN"),
            case(GILFREE_POOL, w, GILFREE, "gpoolN", ratio_to="s001.stpeN"),
            case(STDLIB_TPE, w, STDLIB, "stpeN"),
        ]

    def notes(self) -> List[str]:
        if self._n is None:
            return []
        return [f"seed 001: {self.cfg.workers} calls of countdown(n={fmt_n(self._n)}) per run "
                f"(the seed used 50,000,000; one call here ≈{self.cfg.call_seconds:g} s)"]
