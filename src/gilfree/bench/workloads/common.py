"""Pieces the workloads share: "run these calls on that pool" as a case setup.

A workload that measures *N calls of one function* (the seed demos, numpy)
describes the work with a ``prepare()`` callable returning
``(fn, args, warm_args)`` -- evaluated at setup time, after calibration --
and picks where the calls run with one of the runner names below. Adding a
backend later (interpreters, processes) means adding a runner here, not
touching the workloads.
"""

from __future__ import annotations

import concurrent.futures as cf
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Sequence, Tuple

from .. import probe
from ..case import Timed
from ..timing import calibrate, fmt_n

Prepare = Callable[[], Tuple[Callable[[Any], Any], Sequence[Any], Sequence[Any]]]

# runner name -> (kind, row label template); {w} is the worker count
SERIAL_RUN = "serial"
GILFREE_TPE = "gilfree-tpe"
GILFREE_POOL = "gilfree-pool"
STDLIB_TPE = "stdlib-tpe"

LABELS = {
    SERIAL_RUN: "serial (calling thread)",
    GILFREE_TPE: "gilfree.ThreadPoolExecutor, {w} thread{s}",
    GILFREE_POOL: "gilfree.Pool(backend='threads'), {w} worker{s}",
    STDLIB_TPE: "stdlib ThreadPoolExecutor, {w} thread{s}",
}


def label(runner: str, workers: int) -> str:
    return LABELS[runner].format(w=workers, s="" if workers == 1 else "s")


def plural(n: int, word: str) -> str:
    """``plural(1, "thread")`` → ``1 thread``; ``plural(2, ...)`` → ``2 threads``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _submit_all(ex: Any) -> Callable[[Callable, Sequence], List]:
    # seed 000's asynchronous task type: submit everything, then fetch
    return lambda fn, args: [f.result() for f in [ex.submit(fn, a) for a in args]]


@contextmanager
def open_runner(runner: str, workers: int) -> Iterator[Callable[[Callable, Sequence], List]]:
    """Yield ``call_all(fn, args) -> results`` running ``fn(a)`` for each a."""
    if runner == SERIAL_RUN:
        yield lambda fn, args: [fn(a) for a in args]
    elif runner == GILFREE_TPE:
        with probe.gilfree("ThreadPoolExecutor")(max_workers=workers) as ex:
            yield _submit_all(ex)
    elif runner == GILFREE_POOL:
        with probe.gilfree("Pool")(workers=workers, backend="threads") as pool:
            # chunksize=1: with as many items as workers, a default chunking
            # could hand two calls to one worker and hide the parallelism
            yield lambda fn, args: pool.map(fn, args, chunksize=1)
    elif runner == STDLIB_TPE:
        with cf.ThreadPoolExecutor(max_workers=workers) as ex:
            yield _submit_all(ex)
    else:
        raise ValueError(f"unknown runner {runner!r}")


def calls_setup(prepare: Prepare, runner: str, workers: int) -> Callable:
    """A case setup that times ``call_all(fn, args)`` on ``runner``.

    The warm-up runs ``warm_args`` (one short call per worker) so that every
    worker thread exists before the first timed run.
    """

    @contextmanager
    def setup():
        fn, args, warm_args = prepare()
        with open_runner(runner, workers) as call_all:
            yield Timed(run=lambda: call_all(fn, args), warm=lambda: call_all(fn, warm_args))

    return setup


def countdown_iterations(cfg: Any) -> int:
    """n for which seed 001's ``countdown(n)`` takes about ``cfg.call_seconds``
    in the calling thread (calibrated now; the workloads keep the value)."""
    countdown = probe.gilfree("demo").countdown
    n = calibrate(countdown, cfg.call_seconds, start=10_000)
    cfg.log(f"       calibrated: countdown n = {fmt_n(n)} (≈{cfg.call_seconds:g} s per call)")
    return n


class CountdownCalls:
    """For the workloads that run seed 001's countdown once per worker: n,
    calibrated the first time it is asked for (``_n`` stays None until
    then, for the notes)."""

    cfg: Any
    _n: Any = None

    def _countdown_calls(self, workers: int) -> Tuple[Callable[[int], None], List[int], List[int]]:
        """(countdown, the arguments of a timed run, those of the warm-up):
        one call per worker, the warm-up's 50 times shorter."""
        if self._n is None:
            self._n = countdown_iterations(self.cfg)
        n = self._n
        return probe.gilfree("demo").countdown, [n] * workers, [max(1, n // 50)] * workers
