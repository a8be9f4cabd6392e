"""Seed 000: one C busy loop, once keeping the GIL and once releasing it.

The seed's point: a C extension function that keeps the GIL runs at 100% of
one core however many threads call it; the same loop inside
``Py_BEGIN_ALLOW_THREADS`` scales with the cores. One measurement runs
``workers`` calls of ``n`` iterations (``n`` calibrated so that one call
takes about 0.2 s): serially, on one pool thread, and on ``workers``
threads.
"""

from __future__ import annotations

from typing import List

from .. import probe
from ..case import GILFREE, SERIAL, STDLIB, Case, speedup_about, speedup_at_least
from ..timing import calibrate, fmt_n
from .base import Workload
from .common import GILFREE_POOL, GILFREE_TPE, SERIAL_RUN, STDLIB_TPE, calls_setup, label

VARIANTS = (
    ("holding", "C loop holding the GIL"),
    ("releasing", "C loop releasing the GIL"),
)

# Targets. Releasing: ≥ 95% of linear (1.90× on 2 threads, the brief's
# number); holding: no speedup at all, anything above 1.2× means the demo
# does not hold the GIL and the experiment shows nothing.
RELEASING_EFFICIENCY = 0.95
HOLDING_BAND = (0.8, 1.2)


class Seed000(Workload):
    name = "seed000"
    title = "seed 000"
    about = ("a C loop that keeps the GIL (busy_loop_holding_gil) gives ≈1× however many "
             "threads run it; the same loop inside Py_BEGIN_ALLOW_THREADS "
             "(busy_loop_releasing_gil) scales with the cores")

    def __init__(self, cfg):
        super().__init__(cfg)
        self._n = None

    def _iterations(self) -> int:
        if self._n is None:
            demo = probe.gilfree("demo")
            self._n = calibrate(demo.busy_loop_holding_gil, self.cfg.call_seconds, start=10_000)
            self.cfg.log(f"       calibrated: busy loop n = {fmt_n(self._n)} "
                         f"(≈{self.cfg.call_seconds:g} s per call)")
        return self._n

    def _prepare(self, variant: str):
        def prepare():
            fn = getattr(probe.gilfree("demo"), f"busy_loop_{variant}_gil")
            n = self._iterations()
            w = self.cfg.workers
            return fn, [n] * w, [max(1, n // 50)] * w

        return prepare

    def cases(self) -> List[Case]:
        w = self.cfg.workers
        out: List[Case] = []
        for variant, title in VARIANTS:
            group = f"seed 000: {title}"
            prep = self._prepare(variant)
            serial_key = f"s000.{variant}.serial"
            if variant == "holding":
                target = speedup_about(*HOLDING_BAND)
            else:
                factor = RELEASING_EFFICIENCY * self.cfg.parallelism
                target = speedup_at_least(factor) if self.cfg.parallelism > 1 else None

            def case(runner, workers, kind, key, **kw):
                return Case(group=group, subject=label(runner, workers), kind=kind,
                            key=f"s000.{variant}.{key}", items=w, unit="call",
                            setup=calls_setup(prep, runner, workers),
                            speedup_to=serial_key, **kw)

            out.append(case(SERIAL_RUN, 1, SERIAL, "serial"))
            out.append(case(GILFREE_TPE, 1, GILFREE, "gtpe1", ratio_to=f"s000.{variant}.stpe1"))
            if w > 1:
                out.append(case(GILFREE_TPE, w, GILFREE, "gtpeN",
                                ratio_to=f"s000.{variant}.stpeN", target=target))
                out.append(case(GILFREE_POOL, w, GILFREE, "gpoolN",
                                ratio_to=f"s000.{variant}.stpeN", target=target))
            out.append(case(STDLIB_TPE, 1, STDLIB, "stpe1"))
            if w > 1:
                out.append(case(STDLIB_TPE, w, STDLIB, "stpeN"))
        return out

    def notes(self) -> List[str]:
        if self._n is None:
            return []
        return [f"seed 000: {self.cfg.workers} calls of busy_loop_*_gil(n={fmt_n(self._n)}) "
                f"per run (one call ≈{self.cfg.call_seconds:g} s)"]
