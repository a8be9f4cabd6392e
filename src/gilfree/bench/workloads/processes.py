"""The processes backend against the stdlib's process pools and the peers.

Issue 4's rows, one workload each so that any of them runs alone, e.g.
``python -m gilfree bench --only processes-map``; all six (about a minute on
2 cores) with ``--only processes-countdown processes-map processes-stream
processes-roundtrip processes-buffer processes-startup``:

* ``processes-countdown``: seed 001's pure-Python ``countdown`` on
  ``workers`` processes, as a speedup over the calling thread.
* ``processes-map``: 100k trivial tasks through ``map`` (µs per item).
* ``processes-stream``: single tasks one by one, ``imap(chunksize=1)``
  and submit-all-then-result.
* ``processes-roundtrip``: one ``submit(...).result()`` at a time.
* ``processes-buffer``: a 100 MB ``bytes`` (and numpy array) sent to a
  worker, and sent there and back.
* ``processes-startup``: a new pool until its first result: cold (a fresh
  process: gilfree's zygote, or the stdlib's fork server, starts too) and
  warm (gilfree's zygote already running for another pool).

The trivial task is ``gilfree._interpreters.identity`` (cheap to import in a
worker, unlike ``gilfree.bench``); start-up and "to the worker" rows use
builtins (``int``, ``len``) so that no import is timed. The stdlib pools use
the ``forkserver`` context (Python 3.14's default on Linux; ``fork`` from a
threaded process is deprecated since 3.12), except in the start-up rows,
which time every context. gilfree rows read "processes backend not
available" while ``gilfree.BACKENDS["processes"]`` is false; the stdlib and
peer rows run regardless. A footnote per gilfree row gives its ratio to
every other row of its section that ran.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import subprocess
import sys
import tempfile
import warnings
from contextlib import ExitStack, contextmanager
from typing import Callable, Dict, List, Optional

from .. import probe
from ..case import (GILFREE, PEER, SERIAL, STDLIB, Case, Result, Target, Timed, format_seconds,
                    per_item_at_most, speedup_at_least)
from ..timing import fmt_n
from .base import Workload
from .common import CountdownCalls, plural
from .dispatch import _importable_env

# Issue 4's targets (on 2 cores).
COUNTDOWN_EFFICIENCY = 0.95  # ≥ 0.95 × parallelism × serial: 1.90× on 2 workers
MAP_TARGET = 0.15e-6         # s per item, default map
STREAM_TARGET = 5e-6         # s per item, imap(chunksize=1) / submit-all
ROUND_TRIP_TARGET = 20e-6    # s per submit(...).result()
BUFFER_TARGET = 10e-3        # s for 100 MB to a worker
START_TARGET = 30e-3         # s from a new pool to its first result

NO_BACKEND = "processes backend not available"
STDLIB_CONTEXT = "forkserver"


def _identity():
    # gilfree._interpreters.identity: what a worker imports to run it is
    # gilfree alone (this module would pull in gilfree.bench)
    return probe.gilfree("_interpreters").identity


def _short(n: int) -> str:
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def _times(x: float) -> str:
    return f"{x:.2f}×" if x < 100 else f"{x:.0f}×"


def _mp_chunksize(n: int, workers: int) -> int:
    """multiprocessing.Pool.map's default: about 4 chunks per worker."""
    size, extra = divmod(n, workers * 4)
    return max(1, size + (1 if extra else 0))


@contextmanager
def _quiet_fork():
    """os.fork() in a process with threads (the runner's watchdog, gilfree's
    workers) warns since 3.12; the forks made here are deliberate."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _processes(n: int) -> str:
    return f"{n} process{'' if n == 1 else 'es'}"


class _After:
    """What a timed run returns when it leaves work to do: ``fn`` runs when
    the result is dropped, which :func:`~..timing.measure` does after the
    clock stopped (``del out``) -- so a pool's shutdown, or the start of the
    next fresh process, is not timed, and is over before the next run."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]):
        self.fn = fn

    def __del__(self):
        fn, self.fn = self.fn, None
        if fn is not None:
            fn()


# -- pools ----------------------------------------------------------------------

def _gilfree_ppe(w):
    return lambda: probe.gilfree("ProcessPoolExecutor")(max_workers=w)


def _gilfree_pool(w):
    return lambda: probe.gilfree("Pool")(w, backend="processes")


def _stdlib_ppe(w, method=STDLIB_CONTEXT):
    return lambda: cf.ProcessPoolExecutor(w, mp_context=multiprocessing.get_context(method))


def _mp_pool(w):
    return lambda: multiprocessing.get_context(STDLIB_CONTEXT).Pool(w)


@contextmanager
def _loky(w):
    import loky

    ex = loky.get_reusable_executor(max_workers=w, env=_importable_env())
    try:
        yield ex
    finally:
        ex.shutdown(wait=True)


@contextmanager
def _joblib(w):
    import joblib

    with joblib.Parallel(n_jobs=w, batch_size="auto") as par:
        yield par


@contextmanager
def _mpire(w):
    from mpire import WorkerPool

    with _quiet_fork(), WorkerPool(n_jobs=w, keep_alive=True) as pool:  # default: fork
        yield pool


@contextmanager
def _nothing():
    yield None


def _items_setup(n: int, open_pool, run):
    """Open the pool, warm it on a tenth of the items, time ``run(pool, fn, items)``."""

    @contextmanager
    def setup():
        items = list(range(n))
        warm = items[: max(1, n // 10)]
        fn = _identity()
        with open_pool() as pool:
            yield Timed(run=lambda: run(pool, fn, items), warm=lambda: run(pool, fn, warm))

    return setup


# -- what is timed --------------------------------------------------------------

def _serial_map(_, fn, items):
    return list(map(fn, items))


def _serial_loop(_, fn, items):
    for i in items:
        fn(i)


def _map_list(pool, fn, items):  # Pool.map, multiprocessing.Pool.map, mpire: a list
    return pool.map(fn, items)


def _executor_map(ex, fn, items):  # concurrent.futures: an iterator, default chunksize
    return list(ex.map(fn, items))


def _executor_map_chunks(chunksize):
    def run(ex, fn, items):
        return list(ex.map(fn, items, chunksize=chunksize))
    return run


def _mpire_map_chunks(chunk_size):
    def run(pool, fn, items):
        return pool.map(fn, items, chunk_size=chunk_size)
    return run


def _joblib_map(par, fn, items):
    from joblib import delayed

    return par(delayed(fn)(i) for i in items)


def _imap1(pool, fn, items):
    return list(pool.imap(fn, items, chunksize=1))


def _submit_all(ex, fn, items):
    return [f.result() for f in [ex.submit(fn, i) for i in items]]


def _round_trips(ex, fn, items):
    for i in items:
        ex.submit(fn, i).result()


def _apply_round_trips(pool, fn, items):
    for i in items:
        pool.apply(fn, (i,))


# -- fresh processes for the cold start-up rows ------------------------------------

_COLD_SCRIPT = r"""
import sys
kind, workers = sys.argv[1], int(sys.argv[2])
if kind == "gilfree":
    import gilfree
    def make():
        return gilfree.ProcessPoolExecutor(max_workers=workers)
else:
    import concurrent.futures, multiprocessing
    ctx = multiprocessing.get_context(kind)
    def make():
        return concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
print("ready", flush=True)
if sys.stdin.readline().strip() == "go":
    ex = make()
    print("done", ex.submit(int, 7).result(), flush=True)
    ex.shutdown(wait=True)
"""


class _Cold:
    """Pool start-up in a process that never had a process pool.

    One fresh ``python -c`` waits, gilfree (or multiprocessing) imported, for
    "go"; a timed run sends it, and the child creates its pool, submits
    ``int(7)`` and prints the result. Only that is timed (plus a pipe round
    trip, ≈50 µs); the child's shutdown and the start of the next child
    happen when the run's result is dropped (see :class:`_After`).
    """

    def __init__(self, kind: str, workers: int):
        self.argv = [sys.executable, "-c", _COLD_SCRIPT, kind, str(workers)]
        self.env = {**os.environ, **_importable_env()}
        self.proc: Optional[subprocess.Popen] = None
        self.failure: Optional[BaseException] = None

    def _spawn(self) -> None:
        err = tempfile.TemporaryFile()
        proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, env=self.env, text=True)
        proc._gilfree_err = err  # type: ignore[attr-defined]
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(self._why(proc, "the fresh process did not start"))
        self.proc = proc

    @staticmethod
    def _why(proc: subprocess.Popen, what: str) -> str:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:  # the child is gone: the unflushed "go" cannot go
                pass
        err = proc._gilfree_err  # type: ignore[attr-defined]
        err.seek(0)
        lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
        err.close()
        return f"{what} (exit {proc.returncode}): {lines[-1] if lines else 'no message'}"

    def _finish(self, proc: subprocess.Popen) -> None:
        try:
            proc.stdin.close()
            if proc.wait(timeout=60) != 0:
                raise RuntimeError(self._why(proc, "the fresh process failed at shutdown"))
            proc.stdout.close()
            proc._gilfree_err.close()  # type: ignore[attr-defined]
            self._spawn()
        except BaseException as exc:  # raised by the next run, not lost in __del__
            self.failure = exc

    def run(self) -> _After:
        if self.failure is not None:
            raise self.failure
        if self.proc is None:
            self._spawn()
        proc, self.proc = self.proc, None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line.startswith("done"):
            raise RuntimeError(self._why(proc, "no first result"))
        return _After(lambda: self._finish(proc))

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.stdin.close()  # EOF instead of "go": it exits
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc._gilfree_err.close()  # type: ignore[attr-defined]


def _cold_setup(kind: str, workers: int):
    @contextmanager
    def setup():
        cold = _Cold(kind, workers)
        try:
            cold._spawn()
            yield Timed(run=cold.run)
        finally:
            cold.close()
    return setup


def _start_setup(make, keep_alive=None):
    """Time ``make()`` until its first result; the shutdown happens when
    the run's result is dropped. ``keep_alive`` opens a pool that lives
    through the row (gilfree's zygote stays up: the warm case)."""

    @contextmanager
    def setup():
        with ExitStack() as stack:
            if keep_alive is not None:
                keeper = stack.enter_context(keep_alive())
                keeper.submit(int, 0).result()

            def run():
                with _quiet_fork():
                    ex = make()
                    try:
                        ex.submit(int, 7).result()
                    except BaseException:
                        ex.shutdown(wait=True)
                        raise
                return _After(lambda: ex.shutdown(wait=True))

            yield Timed(run=run)

    return setup


# -- 100 MB buffers ------------------------------------------------------------------

def _buffer_maker(numpy: bool, size: int) -> Callable[[], object]:
    if numpy:
        import numpy as np

        return lambda: np.full(size, 7, dtype=np.uint8)
    return lambda: b"\x07" * size  # real pages: bytes(size) could be lazy zero pages


def _buffer_timed(send: Callable[[object], object], make: Callable[[], object],
                  size: int) -> Timed:
    """Each timed run sends a buffer never sent before (so that no one's cache
    of a known buffer, joblib's for one, is what gets timed); the next one is
    made, and what came back freed, when the run's result is dropped."""
    bufs = [make()]
    small = bufs[0][: max(1, size // 10)]  # the warm-up: workers up, code paths hot
    if not isinstance(small, bytes):
        small = small.copy()

    def renew(out):
        del out
        bufs[0] = None
        bufs[0] = make()

    def run():
        out = send(bufs[0])
        return _After(lambda: renew(out))

    return Timed(run=run, warm=lambda: send(small))


def _buffer_setup(open_pool, numpy: bool, back: bool, size: int):
    """Time one ``submit(len, buf).result()`` (to the worker) or
    ``submit(identity, buf).result()`` (there and back)."""

    @contextmanager
    def setup():
        fn = _identity() if back else len
        make = _buffer_maker(numpy, size)
        with open_pool() as ex:
            yield _buffer_timed(lambda buf: ex.submit(fn, buf).result(), make, size)

    return setup


def _joblib_buffer_setup(w, size: int):
    """joblib memory-maps a big numpy argument (``max_nbytes``, 1 MB) into a
    file in /dev/shm instead of pickling it through a pipe: the peer that
    already avoids the copy to the worker (not the copy back)."""

    @contextmanager
    def setup():
        import joblib

        make = _buffer_maker(True, size)
        with joblib.Parallel(n_jobs=w) as par:
            yield _buffer_timed(lambda buf: par([joblib.delayed(len)(buf)])[0], make, size)

    return setup


# -- the workloads ------------------------------------------------------------------

class _Recording(Target):
    """A target that also keeps the run's results (``check`` is the one place
    a workload sees them) for the "gilfree against every other row" notes."""

    def __init__(self, inner: Target, sink: Dict[str, Result]):
        super().__init__(inner.text, inner._check, inner.show_value, inner.relative, inner.vs)
        self._sink = sink

    def check(self, result: Result, by_key: dict) -> tuple:
        self._sink.update(by_key)
        return super().check(result, by_key)


class _Processes(Workload):
    """One section of the processes rows; subclasses plan :meth:`rows`, each
    row through :meth:`row` with a short name for the footnotes."""

    group = ""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._results: Dict[str, Result] = {}
        self._cases: List[Case] = []
        self._short: Dict[str, str] = {}

    @property
    def w(self) -> int:
        return self.cfg.workers

    @property
    def slow_items(self) -> int:
        """Items for rows that cost ~100 µs each (PPE chunksize 1 and the like)."""
        return 100 if self.cfg.quick else 1_000

    def _no_backend(self) -> Optional[str]:
        """The skip reason of gilfree rows (the stdlib's and peers' still run)."""
        try:
            available = bool(probe.gilfree("BACKENDS").get("processes"))
        except Exception:  # noqa: BLE001 -- the rows themselves will say what is wrong
            return None
        return None if available else NO_BACKEND

    def row(self, key: str, short: str, subject: str, kind: str, setup, *, items=1,
            unit: str = "task", target: Optional[Target] = None, **kw) -> Case:
        key = f"pr.{self.name.split('-', 1)[1]}.{key}"
        for ref in ("ratio_to", "speedup_to"):
            if kw.get(ref):
                kw[ref] = f"pr.{self.name.split('-', 1)[1]}.{kw[ref]}"
        if target is not None:
            target = _Recording(target, self._results)
        self._short[key] = short
        return Case(group=self.group, subject=subject, kind=kind, key=key, items=items,
                    unit=unit, setup=setup, target=target, **kw)

    def rows(self) -> List[Case]:
        raise NotImplementedError

    def cases(self) -> List[Case]:
        skip = self._no_backend()
        self._cases = self.rows()
        for c in self._cases:
            if c.kind == GILFREE and c.unsupported is None:
                c.unsupported = skip
        return self._cases

    def _comparable(self, gilfree_case: Case, other: Case) -> bool:
        return True

    def notes(self) -> List[str]:
        """Per gilfree row: its time per item against every other row that ran."""
        out = []
        for c in self._cases:
            r = self._results.get(c.key)
            if c.kind != GILFREE or r is None or r.per_item is None:
                continue
            vs = [f"{self._short[o.key]} {_times(ref.per_item / r.per_item)}"
                  for o in self._cases
                  for ref in [self._results.get(o.key)]
                  if o.kind in (STDLIB, PEER) and ref is not None and ref.per_item
                  and self._comparable(c, o)]
            if vs:
                out.append(f"{self.title}: gilfree {self._short[c.key]} "
                           f"{format_seconds(r.per_item)}/{c.unit} vs " + ", ".join(vs))
        if out:
            out.insert(0, f"{self.title}: × = the other row's time per item / gilfree's "
                          f"(> 1: gilfree is faster)")
        # once per run, from the first of these workloads to be asked
        if getattr(self.cfg, "_processes_caveat", self.name) == self.name:
            self.cfg._processes_caveat = self.name  # type: ignore[attr-defined]
            out.insert(0, "processes: on rows with worker processes, cores counts the calling "
                          "process only, and its workers' CPU counts as other processes' (†)")
        return out


class ProcessesCountdown(CountdownCalls, _Processes):
    name = "processes-countdown"
    title = "processes countdown"
    group = "processes: countdown (pure Python)"
    about = ("seed 001's countdown on the processes backend: pure Python in parallel, "
             "against the stdlib ProcessPoolExecutor")

    def rows(self) -> List[Case]:
        w = self.w

        def setup(open_pool, run):
            @contextmanager
            def s():
                countdown, args, warm = self._countdown_calls(w)
                with open_pool() as pool:
                    yield Timed(run=lambda: run(pool, countdown, args),
                                warm=lambda: run(pool, countdown, warm))
            return s

        def pool_map1(pool, fn, args):
            # chunksize=1: as many calls as workers, one per worker
            return pool.map(fn, args, chunksize=1)

        target = speedup_at_least(round(COUNTDOWN_EFFICIENCY * self.cfg.parallelism, 2))
        procs = _processes(w)

        def case(key, short, subject, kind, open_pool, run, **kw):
            return self.row(key, short, subject, kind, setup(open_pool, run), items=w,
                            unit="call", speedup_to="serial", **kw)

        return [
            case("serial", "serial", "serial (calling thread)", SERIAL, _nothing, _serial_loop),
            case("gppe", "ProcessPoolExecutor.submit",
                 f"gilfree.ProcessPoolExecutor.submit, {procs}", GILFREE,
                 _gilfree_ppe(w), _submit_all, ratio_to="sppe", target=target),
            case("gpool", "Pool.map(chunksize=1)",
                 f"gilfree.Pool(backend='processes').map(chunksize=1), {procs}",
                 GILFREE, _gilfree_pool(w), pool_map1, ratio_to="sppe", target=target),
            case("sppe", "stdlib PPE",
                 f"stdlib ProcessPoolExecutor.submit ({STDLIB_CONTEXT}), {procs}",
                 STDLIB, _stdlib_ppe(w), _submit_all),
        ]

    def notes(self) -> List[str]:
        out = super().notes()
        if self._n is not None:
            out.insert(0, f"{self.title}: {self.w} calls of countdown(n={fmt_n(self._n)}) "
                          f"per run (≈{self.cfg.call_seconds:g} s each in the calling thread)")
        return out


class ProcessesMap(_Processes):
    name = "processes-map"
    title = "processes map"
    about = ("a batch of trivial tasks through map: what a process pool costs per item "
             "when it may cut the batch in chunks")

    @property
    def group(self) -> str:  # type: ignore[override]
        return f"processes: map ({_short(self.cfg.dispatch_items)} × identity)"

    @property
    def few_items(self) -> int:
        """joblib and mpire cost µs per item even in chunks: a fifth of the items."""
        return max(1, self.cfg.dispatch_items // 5)

    def rows(self) -> List[Case]:
        w, n, slow, few = self.w, self.cfg.dispatch_items, self.slow_items, self.few_items
        workers = plural(w, "worker")
        cs = _mp_chunksize(n, w)

        def case(key, short, subject, kind, items, open_pool, run, **kw):
            if items != n:
                subject += f" [{_short(items)} items]"
            return self.row(key, short, subject, kind, _items_setup(items, open_pool, run),
                            items=items, speedup_to="serial", **kw)

        return [
            case("serial", "serial", "serial list(map(identity, items))", SERIAL, n,
                 _nothing, _serial_map),
            case("gpool", "Pool.map", f"gilfree.Pool(backend='processes').map, {workers}",
                 GILFREE, n, _gilfree_pool(w), _map_list, ratio_to="mppool",
                 target=per_item_at_most(MAP_TARGET)),
            case("gppe", "ProcessPoolExecutor.map",
                 f"gilfree.ProcessPoolExecutor.map (chunksize=1: automatic), {workers}",
                 GILFREE, n, _gilfree_ppe(w), _executor_map, ratio_to="sppe1",
                 target=per_item_at_most(MAP_TARGET)),
            case("sppe1", "PPE.map(chunksize=1)",
                 "stdlib ProcessPoolExecutor.map, chunksize=1 (its default)", STDLIB, slow,
                 _stdlib_ppe(w), _executor_map),
            case("sppe1000", "PPE.map(chunksize=1000)",
                 "stdlib ProcessPoolExecutor.map, chunksize=1000", STDLIB, n,
                 _stdlib_ppe(w), _executor_map_chunks(1000)),
            case("mppool", "multiprocessing.Pool.map",
                 f"stdlib multiprocessing.Pool.map (chunksize {cs}: its default)", STDLIB, n,
                 _mp_pool(w), _map_list),
            case("loky", "loky", f"loky get_reusable_executor().map(chunksize={cs})", PEER, n,
                 lambda: _loky(w), _executor_map_chunks(cs), ratio_to="mppool",
                 requires="loky"),
            case("joblib", "joblib", "joblib Parallel(batch_size='auto') (loky backend)", PEER,
                 few, lambda: _joblib(w), _joblib_map, ratio_to="mppool", requires="joblib"),
            case("mpire", "mpire", "mpire WorkerPool.map (chunk_size automatic)", PEER, few,
                 lambda: _mpire(w), _map_list, ratio_to="mppool", requires="mpire"),
            case("mpire1", "mpire(chunk_size=1)", "mpire WorkerPool.map(chunk_size=1)", PEER,
                 slow, lambda: _mpire(w), _mpire_map_chunks(1), ratio_to="sppe1",
                 requires="mpire"),
        ]


class ProcessesStream(_Processes):
    name = "processes-stream"
    title = "processes stream"
    group = "processes: stream of single tasks (identity)"
    about = ("trivial tasks handed over one at a time with no chunking: imap(chunksize=1) "
             "and submit-all-then-result")

    def rows(self) -> List[Case]:
        w, n, slow = self.w, self.cfg.roundtrip_items, self.slow_items // 2
        workers = plural(w, "worker")

        def case(key, short, subject, kind, items, open_pool, run, **kw):
            return self.row(key, short, f"{subject} [{_short(items)} items]", kind,
                            _items_setup(items, open_pool, run), items=items, **kw)

        return [
            case("gimap", "Pool.imap(chunksize=1)",
                 f"gilfree.Pool(backend='processes').imap(chunksize=1), {workers}",
                 GILFREE, n, _gilfree_pool(w), _imap1, ratio_to="mpimap",
                 target=per_item_at_most(STREAM_TARGET)),
            case("gall", "ProcessPoolExecutor submit-all",
                 f"gilfree.ProcessPoolExecutor submit-all-then-result, {workers}",
                 GILFREE, n, _gilfree_ppe(w), _submit_all, ratio_to="sall",
                 target=per_item_at_most(STREAM_TARGET)),
            case("mpimap", "multiprocessing.Pool.imap(chunksize=1)",
                 "stdlib multiprocessing.Pool.imap(chunksize=1)", STDLIB, slow,
                 _mp_pool(w), _imap1),
            case("sall", "PPE submit-all", "stdlib ProcessPoolExecutor submit-all-then-result",
                 STDLIB, slow, _stdlib_ppe(w), _submit_all),
            case("loky", "loky submit-all", "loky reusable executor submit-all-then-result",
                 PEER, slow, lambda: _loky(w), _submit_all, ratio_to="sall", requires="loky"),
        ]


class ProcessesRoundTrip(_Processes):
    name = "processes-roundtrip"
    title = "processes round trip"
    group = "processes: one round trip at a time (identity)"
    about = ("one task at a time, submit(identity, i).result(): the latency of a "
             "process pool (the mean over many round trips, best run)")

    def rows(self) -> List[Case]:
        w, slow = self.w, self.slow_items // 2
        n = 500 if self.cfg.quick else 5_000
        workers = plural(w, "worker")

        def case(key, short, subject, kind, items, open_pool, run, **kw):
            return self.row(key, short, f"{subject} [{_short(items)} ×]", kind,
                            _items_setup(items, open_pool, run), items=items, **kw)

        return [
            case("gppe", "ProcessPoolExecutor",
                 f"gilfree.ProcessPoolExecutor submit().result(), {workers}", GILFREE, n,
                 _gilfree_ppe(w), _round_trips, ratio_to="sppe",
                 target=per_item_at_most(ROUND_TRIP_TARGET)),
            case("gpool", "Pool.apply", f"gilfree.Pool(backend='processes').apply(), {workers}",
                 GILFREE, n, _gilfree_pool(w), _apply_round_trips, ratio_to="mppool",
                 target=per_item_at_most(ROUND_TRIP_TARGET)),
            case("sppe", "PPE", "stdlib ProcessPoolExecutor submit().result()", STDLIB, slow,
                 _stdlib_ppe(w), _round_trips),
            case("mppool", "multiprocessing.Pool.apply", "stdlib multiprocessing.Pool.apply()",
                 STDLIB, slow, _mp_pool(w), _apply_round_trips),
            case("loky", "loky", "loky reusable executor submit().result()", PEER, slow,
                 lambda: _loky(w), _round_trips, ratio_to="sppe", requires="loky"),
        ]


class ProcessesBuffer(_Processes):
    name = "processes-buffer"
    title = "processes buffer"
    about = ("one big buffer as a task's argument: to the worker (the task returns "
             "len(buf)) and there and back (it returns buf); each run sends a buffer not "
             "sent before (joblib would otherwise reuse the file it dumped the array to)")

    @property
    def size(self) -> int:
        return 10_000_000 if self.cfg.quick else 100_000_000

    @property
    def group(self) -> str:  # type: ignore[override]
        return f"processes: a {self.size // 1_000_000} MB buffer as the argument"

    def rows(self) -> List[Case]:
        w, size = self.w, self.size
        numpy_missing = None if probe.peer_installed("numpy") else "numpy not installed"
        rows = []
        for np_ in (False, True):
            what, tag = ("numpy uint8 array", "np") if np_ else ("bytes", "b")
            req = {"requires": "numpy"} if np_ else {}
            for back in (False, True):
                how = "there and back: identity(buf)" if back else "to the worker: len(buf)"
                k = f"{tag}.{'rt' if back else 'to'}"
                # the notes compare like with like, so only gilfree's short name says what
                short = f"{what}, {'there and back' if back else 'to the worker'}"
                rows += [
                    self.row(f"g.{k}", f"ProcessPoolExecutor, {short}",
                             f"gilfree.ProcessPoolExecutor, {what}, {how}", GILFREE,
                             _buffer_setup(_gilfree_ppe(w), np_, back, size), unit="transfer",
                             ratio_to=f"s.{k}",
                             target=None if back else per_item_at_most(BUFFER_TARGET), **req),
                    self.row(f"s.{k}", "stdlib PPE", f"stdlib ProcessPoolExecutor, {what}, {how}",
                             STDLIB, _buffer_setup(_stdlib_ppe(w), np_, back, size),
                             unit="transfer", **req),
                ]
                if np_ and not back:
                    rows.append(self.row(
                        f"j.{k}", "joblib", f"joblib Parallel (memmapped), {what}, {how}", PEER,
                        _joblib_buffer_setup(w, size), unit="transfer", ratio_to=f"s.{k}",
                        requires="joblib", unsupported=numpy_missing))
        return rows

    def _comparable(self, gilfree_case: Case, other: Case) -> bool:
        # bytes with bytes, numpy with numpy; to the worker with to the worker
        return gilfree_case.key.split(".")[-2:] == other.key.split(".")[-2:]


class ProcessesStartup(_Processes):
    name = "processes-startup"
    title = "processes start-up"
    about = ("a new pool of `workers` until its first result (int(7)): cold in a fresh "
             "process (gilfree's zygote or the stdlib's fork server starts too), warm "
             "with the zygote or fork server already running")

    @property
    def group(self) -> str:  # type: ignore[override]
        return f"processes: new pool ({plural(self.w, 'worker')}) until its first result"

    def rows(self) -> List[Case]:
        w = self.w

        def case(key, short, subject, kind, setup, **kw):
            return self.row(key, short, subject, kind, setup, unit="pool", **kw)

        start = per_item_at_most(START_TARGET)
        return [
            case("gcold", "ProcessPoolExecutor cold",
                 "gilfree.ProcessPoolExecutor, cold (fresh process, zygote starts)", GILFREE,
                 _cold_setup("gilfree", w), ratio_to="fscold", target=start),
            case("gwarm", "ProcessPoolExecutor warm",
                 "gilfree.ProcessPoolExecutor, warm (another pool alive)", GILFREE,
                 _start_setup(_gilfree_ppe(w), keep_alive=_gilfree_ppe(1)),
                 ratio_to="fswarm", target=start),
            case("gpool", "Pool warm",
                 "gilfree.Pool(backend='processes'), warm (another pool alive)", GILFREE,
                 _start_setup(_gilfree_pool(w), keep_alive=_gilfree_ppe(1)),
                 ratio_to="fswarm", target=start),
            case("fork", "fork", "stdlib ProcessPoolExecutor, fork", STDLIB,
                 _start_setup(_stdlib_ppe(w, "fork"))),
            case("fscold", "forkserver cold",
                 "stdlib ProcessPoolExecutor, forkserver, cold (fresh process, server starts)",
                 STDLIB, _cold_setup("forkserver", w)),
            # the warm-up run starts this process's fork server if need be
            case("fswarm", "forkserver warm",
                 "stdlib ProcessPoolExecutor, forkserver, warm (server running)", STDLIB,
                 _start_setup(_stdlib_ppe(w, "forkserver"))),
            case("spawn", "spawn", "stdlib ProcessPoolExecutor, spawn", STDLIB,
                 _start_setup(_stdlib_ppe(w, "spawn"))),
        ]


PARTS = (ProcessesCountdown, ProcessesMap, ProcessesStream, ProcessesRoundTrip,
         ProcessesBuffer, ProcessesStartup)
