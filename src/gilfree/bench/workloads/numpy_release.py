"""Seed 000 with a real library: numpy ufuncs release the GIL.

What seed 000 does by hand in its C extension, numpy does in every ufunc
loop on a non-object array: the loop runs inside ``NPY_BEGIN_THREADS``, so
plain Python threads calling ``np.sin`` run in parallel. One call here is
``reps`` × ``np.sin(x, out=out)`` on a 64k-element float64 array (512 KiB:
it stays in cache, so the loop is compute-bound, not memory-bound); each
worker writes its own ``out``. ``reps`` is calibrated to ≈0.2 s per call.
"""

from __future__ import annotations

from typing import List

from ..case import GILFREE, SERIAL, STDLIB, Case
from ..timing import calibrate, fmt_n
from .base import Workload
from .common import GILFREE_POOL, GILFREE_TPE, SERIAL_RUN, STDLIB_TPE, calls_setup, label

GROUP = "seed 000 with numpy: np.sin releases the GIL"
ELEMENTS = 1 << 16


def sin_repeat(task) -> float:
    """``reps`` times ``np.sin(x, out=out)``; module level so any backend can import it."""
    import numpy as np

    x, out, reps = task
    for _ in range(reps):
        np.sin(x, out=out)
    return float(out[0])


class NumpyRelease(Workload):
    name = "numpy"
    title = "numpy"
    about = ("numpy releases the GIL inside its ufunc loops, so np.sin on threads scales "
             "like seed 000's releasing loop: the threads backend's best case")

    def __init__(self, cfg):
        super().__init__(cfg)
        self._reps = None

    def _prepare(self):
        import numpy as np

        x = np.linspace(0.0, 100.0, ELEMENTS)
        w = self.cfg.workers
        outs = [np.empty_like(x) for _ in range(w)]
        if self._reps is None:
            scratch = np.empty_like(x)
            self._reps = calibrate(lambda r: sin_repeat((x, scratch, r)),
                                   self.cfg.call_seconds, start=4)
            self.cfg.log(f"       calibrated: np.sin reps = {fmt_n(self._reps)} "
                         f"(≈{self.cfg.call_seconds:g} s per call)")
        args = [(x, outs[i], self._reps) for i in range(w)]
        warm = [(x, outs[i], max(1, self._reps // 50)) for i in range(w)]
        return sin_repeat, args, warm

    def cases(self) -> List[Case]:
        w = self.cfg.workers

        def case(runner, workers, kind, key, **kw):
            return Case(group=GROUP, subject=label(runner, workers), kind=kind,
                        key=f"np.{key}", items=w, unit="call", requires="numpy",
                        setup=calls_setup(self._prepare, runner, workers),
                        speedup_to="np.serial", **kw)

        rows = [case(SERIAL_RUN, 1, SERIAL, "serial")]
        if w > 1:
            rows += [
                case(GILFREE_TPE, w, GILFREE, "gtpeN", ratio_to="np.stpeN"),
                case(GILFREE_POOL, w, GILFREE, "gpoolN", ratio_to="np.stpeN"),
                case(STDLIB_TPE, w, STDLIB, "stpeN"),
            ]
        return rows

    def notes(self) -> List[str]:
        if self._reps is None:
            return []
        return [f"numpy: {self.cfg.workers} calls of {fmt_n(self._reps)} × np.sin on "
                f"{ELEMENTS:,} float64 per run"]
