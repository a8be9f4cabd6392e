"""Native tasks: C function pointers run by gilfree's runtime with no GIL.

* ``parallel_for(NATIVE_BUSY_RANGE, n)``: CPU-bound C work split in chunks.
  ``parallel_for`` runs on gilfree's default native pool and has no worker
  count argument, so the number of workers is chosen with ``chunksize``:
  ``chunksize=n`` is one chunk (one worker), ``chunksize=ceil(n/N)`` is N
  chunks (at most N workers busy). The serial baseline is the same C
  function called once on the whole range through ctypes from one thread
  (ctypes releases the GIL around foreign calls); the stdlib equivalent is a
  ``ThreadPoolExecutor`` calling it through ctypes on N chunks.
* ``parallel_for(NATIVE_EMPTY_RANGE, m, chunksize=1)``: the cost of one
  dispatched chunk, amortised over m chunks.
* ``native.submit(NATIVE_EMPTY_TASK)`` × m, then every result: the cost of
  one native task with a future.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
from contextlib import contextmanager
from typing import List

from .. import probe
from ..case import GILFREE, SERIAL, STDLIB, Case, Timed, per_item_at_most, speedup_at_least
from ..timing import calibrate, fmt_n
from .base import Workload
from .common import plural

RANGE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
TASK_FN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)

# 1.95× on 2 workers in the brief: 97.5% of linear, scaled with the cores.
PARALLEL_EFFICIENCY = 0.975
EMPTY_CHUNK_TARGET = 0.5e-6

BUSY = "native parallel_for(NATIVE_BUSY_RANGE, n)"
EMPTY = "native parallel_for(NATIVE_EMPTY_RANGE, {n}, chunksize=1)"
SUBMIT = "native submit(NATIVE_EMPTY_TASK) × {n}, then results"


def _short(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _chunks(n: int, parts: int):
    step = -(-n // parts)
    return [(b, min(n, b + step)) for b in range(0, n, step)]


class Native(Workload):
    name = "native"
    title = "native"
    about = ("native C tasks run by gilfree's runtime with no GIL: the answer to seed 000's "
             "closing question (a C task queue running in the background while Python runs)")

    def __init__(self, cfg):
        super().__init__(cfg)
        self._n = None

    # -- the busy range -------------------------------------------------------

    def _busy_fn(self):
        return RANGE_FN(probe.gilfree("demo").NATIVE_BUSY_RANGE)

    def _busy_n(self) -> int:
        if self._n is None:
            fn = self._busy_fn()
            # the whole range ≈ call_seconds per worker, so each worker of the
            # parallel run is busy ≈ call_seconds
            budget = self.cfg.call_seconds * max(1, self.cfg.workers)
            self._n = calibrate(lambda n: fn(None, 0, n), budget, start=1000)
            self.cfg.log(f"       calibrated: NATIVE_BUSY_RANGE n = {fmt_n(self._n)} "
                         f"(≈{budget:g} s serial)")
        return self._n

    def _busy_serial(self):
        @contextmanager
        def setup():
            fn = self._busy_fn()
            n = self._busy_n()
            yield Timed(run=lambda: fn(None, 0, n), warm=lambda: fn(None, 0, max(1, n // 50)))
        return setup

    def _busy_parallel_for(self, parts):
        """``parts`` = number of chunks; None = parallel_for's default chunksize."""
        @contextmanager
        def setup():
            native = probe.gilfree("native")
            addr = probe.gilfree("demo").NATIVE_BUSY_RANGE
            n = self._busy_n()
            cs = None if parts is None else -(-n // parts)
            warm_n = max(1, n // 50)
            warm_cs = None if parts is None else -(-warm_n // parts)
            yield Timed(run=lambda: native.parallel_for(addr, n, None, chunksize=cs),
                        warm=lambda: native.parallel_for(addr, warm_n, None, chunksize=warm_cs))
        return setup

    def _busy_stdlib(self, workers):
        @contextmanager
        def setup():
            fn = self._busy_fn()
            n = self._busy_n()
            chunks = _chunks(n, workers)
            warm = _chunks(max(workers, n // 50), workers)
            call = lambda c: fn(None, c[0], c[1])  # noqa: E731
            with cf.ThreadPoolExecutor(max_workers=workers) as ex:
                yield Timed(run=lambda: list(ex.map(call, chunks)),
                            warm=lambda: list(ex.map(call, warm)))
        return setup

    # -- empty chunks and tasks -----------------------------------------------

    @staticmethod
    def _empty_range_gilfree(m):
        @contextmanager
        def setup():
            native = probe.gilfree("native")
            addr = probe.gilfree("demo").NATIVE_EMPTY_RANGE
            yield Timed(run=lambda: native.parallel_for(addr, m, None, chunksize=1),
                        warm=lambda: native.parallel_for(addr, max(1, m // 10), None, chunksize=1))
        return setup

    @staticmethod
    def _empty_range_python(m, workers):
        """ctypes calls of the empty range, one per chunk: serially (workers=0)
        or from a stdlib ThreadPoolExecutor."""
        @contextmanager
        def setup():
            fn = RANGE_FN(probe.gilfree("demo").NATIVE_EMPTY_RANGE)
            call = lambda i: fn(None, i, i + 1)  # noqa: E731
            idx = list(range(m))
            warm = idx[: max(1, m // 10)]
            if workers == 0:
                yield Timed(run=lambda: [call(i) for i in idx], warm=lambda: [call(i) for i in warm])
                return
            with cf.ThreadPoolExecutor(max_workers=workers) as ex:
                yield Timed(run=lambda: list(ex.map(call, idx)),
                            warm=lambda: list(ex.map(call, warm)))
        return setup

    @staticmethod
    def _empty_tasks(m, how, workers=0):
        @contextmanager
        def setup():
            addr = probe.gilfree("demo").NATIVE_EMPTY_TASK
            warm_m = max(1, m // 10)
            if how == "gilfree":
                native = probe.gilfree("native")

                def run(k):
                    return [f.result() for f in [native.submit(addr) for _ in range(k)]]
                yield Timed(run=lambda: run(m), warm=lambda: run(warm_m))
                return
            task = TASK_FN(addr)
            if how == "serial":
                yield Timed(run=lambda: [task(None) for _ in range(m)],
                            warm=lambda: [task(None) for _ in range(warm_m)])
                return
            with cf.ThreadPoolExecutor(max_workers=workers) as ex:
                def run_s(k):
                    return [f.result() for f in [ex.submit(task, None) for _ in range(k)]]
                yield Timed(run=lambda: run_s(m), warm=lambda: run_s(warm_m))
        return setup

    # -------------------------------------------------------------------------

    def cases(self) -> List[Case]:
        w = self.cfg.workers
        chunks = self.cfg.native_chunks
        tasks = self.cfg.native_tasks
        busy_items = lambda: self._n or 0  # noqa: E731  (known after calibration)
        g_empty = EMPTY.format(n=_short(chunks))
        g_submit = SUBMIT.format(n=_short(tasks))
        factor = PARALLEL_EFFICIENCY * self.cfg.parallelism

        def busy(key, subject, kind, setup, **kw):
            return Case(group=BUSY, subject=subject, kind=kind, key=f"nat.busy.{key}",
                        items=busy_items, unit="index", setup=setup,
                        speedup_to="nat.busy.serial", **kw)

        rows = [
            busy("serial", "serial: one ctypes call on [0, n), GIL released", SERIAL,
                 self._busy_serial()),
            busy("g1", "gilfree parallel_for, chunksize=n (1 worker)", GILFREE,
                 self._busy_parallel_for(1)),
        ]
        if w > 1:
            rows += [
                busy("gN", f"gilfree parallel_for, chunksize=n/{w} ({plural(w, 'worker')})", GILFREE,
                     self._busy_parallel_for(w), ratio_to="nat.busy.stpeN",
                     target=speedup_at_least(factor, vs="nat.busy.g1", vs_label="1 worker")
                     if self.cfg.parallelism > 1 else None),
                busy("gdef", "gilfree parallel_for, default chunksize", GILFREE,
                     self._busy_parallel_for(None), ratio_to="nat.busy.stpeN"),
                busy("stpeN", f"stdlib ThreadPoolExecutor × ctypes, {w} chunks", STDLIB,
                     self._busy_stdlib(w)),
            ]
        rows += [
            Case(group=g_empty, subject=f"serial: ctypes call per chunk ({_short(tasks)} chunks)",
                 kind=SERIAL, key="nat.empty.serial", items=tasks, unit="chunk",
                 setup=self._empty_range_python(tasks, 0), speedup_to="nat.empty.serial"),
            Case(group=g_empty, subject="gilfree parallel_for (native pool)", kind=GILFREE,
                 key="nat.empty.g", items=chunks, unit="chunk",
                 setup=self._empty_range_gilfree(chunks), speedup_to="nat.empty.serial",
                 ratio_to="nat.empty.stpe", target=per_item_at_most(EMPTY_CHUNK_TARGET)),
            Case(group=g_empty,
                 subject=f"stdlib ThreadPoolExecutor.map × ctypes ({_short(tasks)} chunks)",
                 kind=STDLIB, key="nat.empty.stpe", items=tasks, unit="chunk",
                 setup=self._empty_range_python(tasks, w), speedup_to="nat.empty.serial"),
            Case(group=g_submit, subject="serial: ctypes call per task", kind=SERIAL,
                 key="nat.submit.serial", items=tasks, unit="task",
                 setup=self._empty_tasks(tasks, "serial"), speedup_to="nat.submit.serial"),
            Case(group=g_submit, subject="gilfree.native.submit (native pool)", kind=GILFREE,
                 key="nat.submit.g", items=tasks, unit="task",
                 setup=self._empty_tasks(tasks, "gilfree"), speedup_to="nat.submit.serial",
                 ratio_to="nat.submit.stpe"),
            Case(group=g_submit, subject=f"stdlib ThreadPoolExecutor.submit × ctypes, {plural(w, 'thread')}",
                 kind=STDLIB, key="nat.submit.stpe", items=tasks, unit="task",
                 setup=self._empty_tasks(tasks, "stdlib", w), speedup_to="nat.submit.serial"),
        ]
        return rows

    def notes(self) -> List[str]:
        out = []
        if self._n is not None:
            out.append(f"native: NATIVE_BUSY_RANGE over n = {fmt_n(self._n)} indices, arg=NULL "
                       "(1000 busy iterations per index)")
        pool = ""
        try:
            workers = probe.gilfree("native").workers
            workers = workers() if callable(workers) else workers
            pool = f"; gilfree's native pool has {workers} workers"
            if isinstance(workers, int) and workers < self.cfg.workers:
                pool += f", so the {self.cfg.workers}-chunk row runs on {workers}"
        except Exception:  # noqa: BLE001 -- a footnote must not fail the report
            pass
        out.append("native: parallel_for has no worker-count argument; the worker count is set "
                   f"with chunksize (n = 1 chunk = 1 worker, ceil(n/N) = N chunks){pool}")
        return out
