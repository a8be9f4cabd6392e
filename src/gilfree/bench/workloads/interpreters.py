"""The interpreters backend: pure Python in parallel, and what a task costs.

Each worker owns a sub-interpreter with its own GIL (Python 3.12+), so
seed 001's ``countdown`` runs in parallel there, where threads stay at
about 1×. Calls and results cross as pickled bytes, so a trivial task costs
more than on threads: the dispatch rows measure that, in the three shapes
of ``dispatch`` (``map``, submit-all-then-result, one round trip). The
start-up rows time a fresh pool until its first result (one worker, then
``workers`` at once); memory per worker is a note (RSS growth / workers).

On Python 3.11 every row reads as an error naming the version.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import List

from .. import probe
from ..case import GILFREE, SERIAL, STDLIB, Case, Timed, per_item_at_most, speedup_at_least
from ..timing import fmt_n
from .base import Workload
from .common import CountdownCalls, plural

COUNTDOWN_TARGET = 1.8      # × serial, on 2 workers (issue 3)
SUBMIT_ALL_TARGET = 3e-6    # s per task
MAP_TARGET = 0.15e-6        # s per item
READY_TARGET = 25e-3        # s per worker

G_COUNT = "interpreters: countdown (pure Python)"
G_DISPATCH = "interpreters: dispatch ({n} × noop)"
G_START = "interpreters: worker start-up"


def _noop():
    # gilfree._interpreters.identity: workers import it by name, and they
    # could not import this module (gilfree.bench needs faulthandler, which
    # refuses sub-interpreters).
    return probe.gilfree("_interpreters").identity


def _executor(workers: int):
    with warnings.catch_warnings():  # the 3.12 limits warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return probe.gilfree("InterpreterPoolExecutor")(max_workers=workers)


def _pool(workers: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return probe.gilfree("Pool")(workers=workers, backend="interpreters")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Interpreters(CountdownCalls, Workload):
    name = "interpreters"
    title = "interpreters"
    about = ("the interpreters backend (sub-interpreters with their own GIL): countdown "
             "in parallel, the cost of a task crossing interpreters, worker start-up")

    def __init__(self, cfg):
        super().__init__(cfg)
        self._rss_per_worker = None

    def unsupported(self):
        if probe.gilfree("_interpreters").available():
            return None
        v = sys.version_info
        return (f"not on Python {v.major}.{v.minor}.{v.micro} "
                f"(3.12.4+ or 3.13: see gilfree._interpreters.unavailable_reason())")

    def cases(self) -> List[Case]:
        w = self.cfg.workers
        n = self.cfg.dispatch_items
        rt = self.cfg.roundtrip_items
        workers = plural(w, "worker")

        # -- countdown ----------------------------------------------------------
        def countdown_setup(parallel: bool, threads: bool = False, processes: bool = False):
            @contextmanager
            def setup():
                countdown, args, warm = self._countdown_calls(w)
                if not parallel:
                    yield Timed(run=lambda: [countdown(a) for a in args])
                    return
                if threads:
                    ex = probe.gilfree("ThreadPoolExecutor")(max_workers=w)
                    run = lambda a: [f.result() for f in [ex.submit(countdown, x) for x in a]]  # noqa: E731
                elif processes:
                    # The control: what this machine gives two CPU-bound
                    # processes in the same run (a busy or SMT-shared host
                    # gives less than N x to any N threads of work).
                    import concurrent.futures
                    import multiprocessing
                    ex = concurrent.futures.ProcessPoolExecutor(
                        w, mp_context=multiprocessing.get_context("forkserver"))
                    run = lambda a: list(ex.map(countdown, a))  # noqa: E731
                else:
                    ex = _pool(w)
                    run = lambda a: ex.map(countdown, a, chunksize=1)  # noqa: E731
                with ex:
                    yield Timed(run=lambda: run(args), warm=lambda: run(warm))
            return setup

        def count_case(key, subject, kind, parallel, threads=False, processes=False, **kw):
            return Case(group=G_COUNT, subject=subject, kind=kind, key=f"int.cd.{key}",
                        items=w, unit="call",
                        setup=countdown_setup(parallel, threads, processes),
                        speedup_to="int.cd.serial", **kw)

        # -- dispatch -----------------------------------------------------------
        def dispatch_setup(items: int, run):
            @contextmanager
            def setup():
                data = list(range(items))
                warm = data[: max(1, items // 10)]
                with _pool(w) as pool:
                    yield Timed(run=lambda: run(pool, data), warm=lambda: run(pool, warm))
            return setup

        noop = _noop()

        def d_map(pool, items):
            return pool.map(noop, items)

        def d_submit_all(pool, items):
            return [f.result() for f in [pool.submit(noop, i) for i in items]]

        def d_round_trips(pool, items):
            for i in items:
                pool.submit(noop, i).result()

        def d_serial(items):
            @contextmanager
            def setup():
                data = list(range(items))
                yield Timed(run=lambda: list(map(noop, data)))
            return setup

        # -- start-up -----------------------------------------------------------
        def start_setup(count: int):
            @contextmanager
            def setup():
                def run():
                    before = _rss()
                    ex = _executor(count)
                    try:
                        # count tasks at once: a worker starts per task until
                        # count are up (none is idle before its first result)
                        # int: a builtin, so that "ready" is the interpreter
                        # and its set-up, not the first import of gilfree
                        # that noop would cost each worker (≈ 25-50 ms)
                        futures = [ex.submit(int, i) for i in range(count)]
                        for f in futures:
                            f.result()
                        if count == w and ex._started_workers == count:
                            self._rss_per_worker = (_rss() - before) / count
                    finally:
                        ex.shutdown(wait=True)
                yield Timed(run=run)
            return setup

        g_d = G_DISPATCH.format(n=f"{n // 1000}k" if n % 1000 == 0 else n)
        return [
            count_case("serial", "serial (calling thread)", SERIAL, False),
            count_case("pool", f"gilfree.Pool(backend='interpreters'), {workers}", GILFREE, True,
                       target=speedup_at_least(COUNTDOWN_TARGET)),
            count_case("threads", f"gilfree.ThreadPoolExecutor, {plural(w, 'thread')} (GIL)",
                       GILFREE, True, threads=True),
            count_case("processes", f"stdlib ProcessPoolExecutor, {w} processes (control)",
                       STDLIB, True, processes=True),
            Case(group=g_d, subject="serial list(map(noop, items))", kind=SERIAL,
                 key="int.d.serial", items=n, unit="task", setup=d_serial(n)),
            Case(group=g_d, subject=f"Pool(backend='interpreters').map, {workers}",
                 kind=GILFREE, key="int.d.map", items=n, unit="task",
                 setup=dispatch_setup(n, d_map), target=per_item_at_most(MAP_TARGET)),
            Case(group=g_d, subject=f"submit-all-then-result, {workers}",
                 kind=GILFREE, key="int.d.all", items=n, unit="task",
                 setup=dispatch_setup(n, d_submit_all), target=per_item_at_most(SUBMIT_ALL_TARGET)),
            Case(group=g_d, subject=f"round trip submit(noop).result() ({rt // 1000}k ×)",
                 kind=GILFREE, key="int.d.rt", items=rt, unit="task",
                 setup=dispatch_setup(rt, d_round_trips)),
            Case(group=G_START, subject="1 worker: new pool until its first result",
                 kind=GILFREE, key="int.start.1", items=1, unit="worker",
                 setup=start_setup(1), target=per_item_at_most(READY_TARGET)),
            Case(group=G_START, subject=f"{workers} at once: new pool until {w} results",
                 kind=GILFREE, key="int.start.n", items=w, unit="worker",
                 setup=start_setup(w)),
        ]

    def notes(self) -> List[str]:
        out = []
        if self._n is not None:
            out.append(f"interpreters: {self.cfg.workers} calls of countdown(n={fmt_n(self._n)}) per run")
        if self._rss_per_worker is not None:
            out.append(f"interpreters: RSS per worker ≈ {self._rss_per_worker / 2**20:.1f} MiB "
                       f"(growth of the process RSS when {self.cfg.workers} workers start)")
        return out

