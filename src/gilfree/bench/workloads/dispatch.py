"""Dispatch cost: how much a pool costs per trivial task.

``noop`` does nothing, so every microsecond measured is the pool's own
overhead: creating a future, crossing to a worker thread, taking the GIL,
publishing the result, waking the caller. Three shapes of use:

* ``map``: the synchronous task type (seed 000's ``pool.map``) -- the whole
  batch is known up front, so it can be cut in chunks.
* submit-all-then-result: the asynchronous task type (seed 000's
  ``submit_task(i)`` ... ``fetch_result(i)``) -- every task is its own future.
* one-at-a-time round trips ``submit(noop, i).result()``: pure latency.

Each gilfree call is compared ("vs stdlib") with the stdlib call of the same
vocabulary: ``gilfree.ThreadPoolExecutor`` and ``gilfree.Pool.submit`` with
``concurrent.futures.ThreadPoolExecutor``, ``gilfree.Pool.map`` with
``multiprocessing.dummy.Pool.map`` (both chunk the input by default).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing.dummy
import os
from contextlib import contextmanager
from typing import List

from .. import probe
from ..case import GILFREE, PEER, SERIAL, STDLIB, Case, Timed, per_item_at_most
from .base import Workload
from .common import plural

MAP_TARGET = 0.08e-6
SUBMIT_ALL_TARGET = 1.5e-6
ROUND_TRIP_TARGET = 5e-6

MAP = "dispatch map ({n} × noop)"
SUBMIT_ALL = "dispatch submit-all-then-result ({n} × noop)"
ROUND_TRIP = "dispatch round trip submit(noop).result() ({n} ×)"


def noop(x):
    """The trivial task; module level so that process pools can import it."""
    return x


def _short(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 and n >= 1000 else str(n)


def _items_setup(n: int, open_pool, run):
    """A setup: open the pool, then time ``run(pool, items)`` on n items."""

    @contextmanager
    def setup():
        items = list(range(n))
        warm = items[: max(1, n // 10)]
        with open_pool() as pool:
            yield Timed(run=lambda: run(pool, items), warm=lambda: run(pool, warm))

    return setup


# -- pools --------------------------------------------------------------------

def _gilfree_tpe(w):
    return lambda: probe.gilfree("ThreadPoolExecutor")(max_workers=w)


def _gilfree_pool(w):
    return lambda: probe.gilfree("Pool")(workers=w, backend="threads")


def _stdlib_tpe(w):
    return lambda: cf.ThreadPoolExecutor(max_workers=w)


def _mp_dummy(w):
    return lambda: multiprocessing.dummy.Pool(w)


@contextmanager
def _nothing():
    yield None


@contextmanager
def _joblib(w):
    import joblib

    with joblib.Parallel(n_jobs=w, prefer="threads") as par:
        yield par


@contextmanager
def _mpire(w):
    from mpire import WorkerPool

    with WorkerPool(n_jobs=w, start_method="threading", keep_alive=True) as pool:
        yield pool


def _importable_env() -> dict:
    """PYTHONPATH for child processes that must import this module (noop).

    A process pool imports ``noop`` by name; when gilfree runs from a
    checkout whose ``src`` was put on ``sys.path`` at run time (the scripts
    in ``benchmarks/``), children would not find it without this.
    """
    import gilfree

    roots = [os.path.dirname(p) for p in gilfree.__path__]
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join(roots + ([old] if old else []))}


@contextmanager
def _loky(w):
    import loky

    ex = loky.get_reusable_executor(max_workers=w, env=_importable_env())
    try:
        yield ex
    finally:
        ex.shutdown(wait=True)


# -- what is timed ------------------------------------------------------------

def _map_builtin(_, items):
    return list(map(noop, items))


def _map_executor(ex, items):
    return list(ex.map(noop, items))


def _map_pool(pool, items):
    return pool.map(noop, items)


def _map_joblib(par, items):
    from joblib import delayed

    return par(delayed(noop)(i) for i in items)


def _map_mpire(pool, items):
    return pool.map(noop, items)


def _map_loky(ex, items):
    # processes: chunk like multiprocessing.Pool.map does, or IPC dominates
    return list(ex.map(noop, items, chunksize=max(1, len(items) // 32)))


def _loop_builtin(_, items):
    return [noop(i) for i in items]


def _submit_all(ex, items):
    return [f.result() for f in [ex.submit(noop, i) for i in items]]


def _round_trips(ex, items):
    for i in items:
        ex.submit(noop, i).result()


class Dispatch(Workload):
    name = "dispatch"
    title = "dispatch"
    about = ("dispatch cost of trivial tasks: map (synchronous task type), "
             "submit-all-then-result (asynchronous task type) and one-at-a-time round trips")

    def cases(self) -> List[Case]:
        w = self.cfg.workers
        n = self.cfg.dispatch_items
        rt = self.cfg.roundtrip_items
        g_map = MAP.format(n=_short(n))
        g_all = SUBMIT_ALL.format(n=_short(n))
        g_rt = ROUND_TRIP.format(n=_short(rt))

        threads, workers = plural(w, "thread"), plural(w, "worker")

        def case(group, key, subject, kind, items, open_pool, run, **kw):
            return Case(group=group, subject=subject, kind=kind, key=key, items=items,
                        unit="task", setup=_items_setup(items, open_pool, run),
                        speedup_to=key.rsplit(".", 1)[0] + ".serial", **kw)

        return [
            # (a) map
            case(g_map, "d.map.serial", "serial list(map(noop, items))", SERIAL, n,
                 _nothing, _map_builtin),
            case(g_map, "d.map.gpool", f"gilfree.Pool(backend='threads').map, {workers}",
                 GILFREE, n, _gilfree_pool(w), _map_pool,
                 ratio_to="d.map.dummy", target=per_item_at_most(MAP_TARGET)),
            case(g_map, "d.map.gtpe", f"gilfree.ThreadPoolExecutor.map, {threads}",
                 GILFREE, n, _gilfree_tpe(w), _map_executor,
                 ratio_to="d.map.stpe", target=per_item_at_most(MAP_TARGET)),
            case(g_map, "d.map.stpe", f"stdlib ThreadPoolExecutor.map, {threads}",
                 STDLIB, n, _stdlib_tpe(w), _map_executor),
            case(g_map, "d.map.dummy", f"stdlib multiprocessing.dummy.Pool.map, {threads}",
                 STDLIB, n, _mp_dummy(w), _map_pool),
            case(g_map, "d.map.joblib", f"joblib Parallel(prefer='threads'), {threads}",
                 PEER, n, lambda: _joblib(w), _map_joblib, ratio_to="d.map.stpe",
                 requires="joblib"),
            case(g_map, "d.map.mpire", f"mpire WorkerPool(start_method='threading'), {threads}",
                 PEER, n, lambda: _mpire(w), _map_mpire, ratio_to="d.map.stpe",
                 requires="mpire"),
            case(g_map, "d.map.loky", f"loky reusable executor, {w} process{'' if w == 1 else 'es'}",
                 PEER, n, lambda: _loky(w), _map_loky, ratio_to="d.map.stpe",
                 requires="loky"),
            # (b) submit all, then result
            case(g_all, "d.all.serial", "serial [noop(i) for i in items]", SERIAL, n,
                 _nothing, _loop_builtin),
            case(g_all, "d.all.gtpe", f"gilfree.ThreadPoolExecutor.submit, {threads}",
                 GILFREE, n, _gilfree_tpe(w), _submit_all,
                 ratio_to="d.all.stpe", target=per_item_at_most(SUBMIT_ALL_TARGET)),
            case(g_all, "d.all.gpool", f"gilfree.Pool(backend='threads').submit, {workers}",
                 GILFREE, n, _gilfree_pool(w), _submit_all,
                 ratio_to="d.all.stpe", target=per_item_at_most(SUBMIT_ALL_TARGET)),
            case(g_all, "d.all.stpe", f"stdlib ThreadPoolExecutor.submit, {threads}",
                 STDLIB, n, _stdlib_tpe(w), _submit_all),
            # (c) one round trip at a time
            case(g_rt, "d.rt.serial", "serial noop(i) one by one", SERIAL, rt,
                 _nothing, _loop_builtin),
            case(g_rt, "d.rt.gtpe", f"gilfree.ThreadPoolExecutor, {threads}",
                 GILFREE, rt, _gilfree_tpe(w), _round_trips,
                 ratio_to="d.rt.stpe", target=per_item_at_most(ROUND_TRIP_TARGET)),
            case(g_rt, "d.rt.gpool", f"gilfree.Pool(backend='threads'), {workers}",
                 GILFREE, rt, _gilfree_pool(w), _round_trips,
                 ratio_to="d.rt.stpe", target=per_item_at_most(ROUND_TRIP_TARGET)),
            case(g_rt, "d.rt.stpe", f"stdlib ThreadPoolExecutor, {threads}",
                 STDLIB, rt, _stdlib_tpe(w), _round_trips),
        ]

    def notes(self) -> List[str]:
        return ["dispatch: vs stdlib pairs the same vocabulary: gilfree.ThreadPoolExecutor "
                "and Pool.submit with concurrent.futures.ThreadPoolExecutor, gilfree.Pool.map "
                "with multiprocessing.dummy.Pool.map (both chunk by default); peers with "
                "ThreadPoolExecutor.map"]
