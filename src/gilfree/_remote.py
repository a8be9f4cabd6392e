"""What the interpreters and processes backends share in Python: the codec
pieces (pickles, exceptions rebuilt from a worker's encoding) and the map
family over chunks.  Both executors are ``_core.RemoteExecutor`` (remote.c)
underneath; see ``_worker.py`` for the worker's half of the protocol.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import importlib.util
import itertools
import operator
import os
import pickle
import queue
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from ._executor import MapMixin

_T = TypeVar("_T")

_SUBINTERP_REFUSED = "does not support loading in subinterpreters"


# -- what crosses: pickles --------------------------------------------------------

class RemoteTraceback(Exception):
    """The ``__cause__`` of an exception raised in a worker interpreter:
    the worker's formatted traceback (as ``concurrent.futures.process``)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _fallback_dumps(obj: Any, protocol: int = 5) -> bytes:
    """What plain pickle refuses (lambdas, closures, a REPL's functions)."""
    try:
        import cloudpickle
    except ImportError:
        raise pickle.PicklingError(
            "this call does not pickle, and cloudpickle (which ships lambdas and "
            "closures by value) is not installed: pip install cloudpickle") from None
    return cloudpickle.dumps(obj, protocol)


def _cloudpickle_installed() -> bool:
    """Whether calls can go by value, without importing cloudpickle (about
    13 ms, which ``import gilfree`` should not cost): _fallback_dumps
    imports it on first use."""
    return importlib.util.find_spec("cloudpickle") is not None


def _dumps_any(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, 5)
    except Exception:
        return _fallback_dumps(obj, 5)


def _rebuild(encoded: tuple) -> BaseException:
    """The exception a worker encoded (_worker._encode), re-made here
    with the worker's traceback as its ``__cause__``."""
    blob, tb, desc = encoded
    exc = None
    if blob is not None:
        try:
            exc = pickle.loads(blob)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RuntimeError(
            f"a task raised {desc} in a worker interpreter; that exception could not be "
            f"pickled back to the caller, so this RuntimeError stands for it")
    elif isinstance(exc, ImportError) and _SUBINTERP_REFUSED in str(exc):
        words = str(exc).split()
        name = exc.name or (words[1] if len(words) > 1 else "?")
        exc = ImportError(
            f"{exc} - the extension module {name!r} cannot be loaded in the sub-interpreter "
            f"of an interpreters-backend worker; run this task with "
            f"gilfree.Pool(backend=\"processes\") (or \"threads\") instead",
            name=name)
    exc.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
    return exc


def _main_file() -> str | None:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.abspath(path) if isinstance(path, str) else None


class RemoteMapMixin(MapMixin):
    """``map`` and the ``_map`` family for a ``_core.RemoteExecutor``."""

    # From _core.RemoteExecutor: _max_workers, _shutdown, and
    # _submit_chunk(fn, items, star[, timeout]) -> Future of (values, errors).
    _max_workers: int
    _shutdown: bool
    _submit_chunk: Callable[..., concurrent.futures.Future]

    def _map(self, fn: Callable[..., Any], items: Iterable[Any], *, chunksize: int = 0,
             ordered: bool = True, star: bool = False, timeout: float | None = None,
             window: int = 0, stop_on_error: bool = True,
             future: concurrent.futures.Future | None = None,
             task_timeout: float | None = None) -> Any:
        """The map family, with the same options as ``_core.Executor._map``."""
        if not callable(fn):
            raise TypeError(f"map() needs a callable, not {type(fn).__name__}")
        if chunksize is None or chunksize < 0:
            chunksize = 0
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if (chunksize == 1 and window == 0 and ordered and not stop_on_error
                and timeout is None and task_timeout is None and future is None):
            return _stream_of_calls(self, fn, items, star)
        run = _MapRun(self, fn, items, chunksize, star, timeout, window, task_timeout)
        if future is not None:
            run.into_future(future)
            return None
        if ordered and stop_on_error:
            return _ordered_results(_MapIterator(run, ordered, stop_on_error))
        return _MapIterator(run, ordered, stop_on_error)


class _Unread(collections.deque):  # type: ignore[type-arg]
    """The futures a stream has not handed out yet: dropping the stream
    (it stopped early, or the caller was interrupted) cancels them."""

    def __del__(self) -> None:
        for f in self:
            if f is not _END:
                f.cancel()


_END = object()
_result = operator.methodcaller("result")


def _stream_of_calls(ex: Any, fn: Callable[..., Any], items: Iterable[Any],
                     star: bool) -> Iterator[Any]:
    """``Pool.imap(fn, sized, chunksize=1)``: one call per item, all
    submitted now, results in order; a failed call raises when reached and
    the stream goes on past it.  Both loops are C iterators (map, starmap,
    a deque's popleft until a sentinel), not Python frames per item: at a
    few microseconds per call, a Python loop would be a third of the cost."""
    submit = functools.partial(ex.submit, fn)
    unread = _Unread(itertools.starmap(submit, items) if star else map(submit, items))
    unread.append(_END)
    return map(_result, iter(unread.popleft, _END))


def identity(x: _T) -> _T:
    """The trivial task the benchmarks time (importable in a worker without
    gilfree.bench, which needs faulthandler: a single-phase module that no
    sub-interpreter can load)."""
    return x


#: The most items an automatic chunk holds: big enough that a chunk's
#: fixed cost (a future, two pickles) is noise, small enough that pickling
#: in the main interpreter overlaps the workers' running of earlier chunks.
_MAX_AUTO_CHUNK = 2048


def _auto_chunksize(n: int, workers: int) -> int:
    # multiprocessing.Pool's rule, about four chunks per worker, capped.
    size, extra = divmod(n, workers * 4)
    return max(1, min(_MAX_AUTO_CHUNK, size + (1 if extra else 0)))


def _ordered_results(it: _MapIterator) -> Iterator[Any]:
    """concurrent.futures' map: results in order, stopping at the first
    failure.  Whole chunks are handed out with ``yield from`` (a C loop),
    not item by item through ``_MapIterator.__next__``; closing the
    generator (or dropping it) cancels what has not started."""
    try:
        while True:
            while it.pos >= len(it.buffer):
                if not it._load_next_chunk():
                    it.finished = True
                    return
            if it.errors:
                yield next(it)  # item by item until past the failure
                continue
            buffer, it.buffer, it.pos = it.buffer, [], 0
            yield from buffer
    finally:
        if not it.finished:
            it.finished = True
            it.run.cancel()


class _MapRun:
    """The chunks of one map call: submitted, in flight, done."""

    def __init__(self, ex: Any, fn: Callable[..., Any],
                 items: Iterable[Any], chunksize: int, star: bool,
                 timeout: float | None, window: int,
                 task_timeout: float | None = None) -> None:
        self.ex = ex
        self.task_timeout = task_timeout
        self.fn = fn
        self.star = star
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.window = window
        self.ramp = False
        if window == 0:
            items = list(items)
            if chunksize == 0:
                # About four chunks per worker, reached by doubling from one
                # item: the first results come back at once, and a timeout
                # or failure early on leaves most items unstarted (as the
                # threads backend's adaptive chunks do).
                chunksize = _auto_chunksize(len(items), ex._max_workers)
                self.ramp = True
            self.source: Iterator[Any] | None = None
            self.pending_items = items
        else:
            self.source = iter(items)
            self.pending_items = None
            chunksize = chunksize or 1
        self.chunksize = chunksize
        # (start, count, future); count -1: a single call, whose future holds
        # the value itself (a chunk's holds (values, errors))
        self.chunks: list[tuple[int, int, Any]] = []
        self.nitems = 0
        self.inflight = 0
        self.done_queue: queue.SimpleQueue | None = None
        self.cancelled = False

    def _submit(self, chunk: list[Any]) -> None:
        count = len(chunk)
        if count == 1 and self.task_timeout is None:
            # One item (imap's chunksize=1): a plain call, whose function
            # pickles once per executor, not once per chunk.
            args = tuple(chunk[0]) if self.star else (chunk[0],)
            f = self.ex.submit(self.fn, *args)
            count = -1
        elif self.task_timeout is None:
            f = self.ex._submit_chunk(self.fn, chunk, self.star)
        else:  # each item may take task_timeout: the chunk, all of theirs
            f = self.ex._submit_chunk(self.fn, chunk, self.star,
                                      self.task_timeout * len(chunk))
        index = len(self.chunks)
        self.chunks.append((self.nitems, count, f))
        self.nitems += len(chunk)
        self.inflight += len(chunk)
        if self.done_queue is not None:
            q = self.done_queue
            f.add_done_callback(lambda _f, i=index: q.put(i))

    def fill(self) -> None:
        """Submit what may be in flight now."""
        if self.cancelled:
            return
        if self.pending_items is not None:
            items, self.pending_items = self.pending_items, None
            size = self.chunksize
            start = 0
            if self.ramp:
                step = 1
                while step < size and start < len(items):
                    self._submit(items[start:start + step])
                    start += step
                    step *= 2
            for start in range(start, len(items), size):
                self._submit(items[start:start + size])
            return
        while self.source is not None and self.inflight < max(self.window, self.chunksize):
            chunk = []
            for x in self.source:
                chunk.append(x)
                if len(chunk) == self.chunksize:
                    break
            if len(chunk) < self.chunksize:
                self.source = None
            if chunk:
                self._submit(chunk)

    def exhausted(self) -> bool:
        return self.pending_items is None and self.source is None

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def cancel(self) -> None:
        self.cancelled = True
        self.source = None
        self.pending_items = None
        for _, _, f in self.chunks:
            if f is not None:
                f.cancel()

    @staticmethod
    def outcome(f: concurrent.futures.Future, count: int) -> tuple[list[Any], dict[int, BaseException]]:
        """(values, {index: exception}) of a finished chunk (count -1: call)."""
        if count < 0:
            try:
                return [f.result(timeout=0)], {}
            except BaseException as e:
                return [None], {0: e}
        try:
            values, errors = f.result(timeout=0)
        except BaseException as e:  # the whole chunk failed (unpicklable fn, broken pool)
            return [None] * count, {i: e for i in range(count)}
        if not errors:
            return values, {}
        return values, {i: _rebuild(enc) for i, enc in errors}

    # -- map_async / Pool.map: results into a future --------------------------------
    def into_future(self, future: concurrent.futures.Future) -> None:
        self.fill()
        chunks = list(self.chunks)
        left = [len(chunks)]
        if not chunks:
            future.set_result([])
            return

        def on_chunk_done(_f: Any) -> None:
            left[0] -= 1  # callbacks run one at a time, on the bridge or in the caller
            if left[0] or future.done():
                return
            results: list[Any] = []
            for start, count, f in chunks:
                values, errors = self.outcome(f, count)
                if errors:
                    future.set_exception(errors[min(errors)])
                    return
                results.extend(values)
            future.set_result(results)

        def on_future_done(fut: Any) -> None:
            if fut.cancelled():
                self.cancel()

        future.add_done_callback(on_future_done)
        for _, _, f in chunks:
            f.add_done_callback(on_chunk_done)


class _MapIterator:
    """Results of a map, in input or completion order; may go on past a
    failed item when ``stop_on_error`` is false (``Pool.imap``)."""

    def __init__(self, run: _MapRun, ordered: bool, stop_on_error: bool) -> None:
        self.finished = True  # until set up (__del__ may see a half-made one)
        self.run = run
        self.ordered = ordered
        self.stop_on_error = stop_on_error
        if not ordered:
            run.done_queue = queue.SimpleQueue()
        run.fill()
        self.next_chunk = 0        # ordered: the chunk being read
        self.buffer: list[Any] = []
        self.pos = 0
        self.errors: dict[int, BaseException] = {}
        self.finished = False

    def __iter__(self) -> _MapIterator:
        return self

    def _fail(self, exc: BaseException) -> BaseException:
        self.finished = True
        self.run.cancel()
        return exc

    def _load_next_chunk(self) -> bool:
        run = self.run
        if self.ordered:
            while self.next_chunk >= len(run.chunks):
                if run.exhausted():
                    return False
                run.fill()
            start, count, f = run.chunks[self.next_chunk]
            self.next_chunk += 1
            try:
                f.exception(timeout=run.remaining())  # waits; raises TimeoutError
            except concurrent.futures.CancelledError:
                pass
        else:
            assert run.done_queue is not None
            while True:
                if run.inflight == 0:
                    if run.exhausted():
                        return False
                    run.fill()
                    continue
                try:
                    index = run.done_queue.get(timeout=run.remaining())
                except queue.Empty:
                    raise TimeoutError() from None
                break
            start, count, f = run.chunks[index]
        run.inflight -= abs(count)
        run.chunks[self.next_chunk - 1 if self.ordered else index] = (start, count, None)
        self.buffer, self.errors = run.outcome(f, count)
        self.pos = 0
        run.fill()
        return True

    def __next__(self) -> Any:
        if self.finished:
            raise StopIteration
        while self.pos >= len(self.buffer):
            try:
                more = self._load_next_chunk()
            except BaseException as e:  # timeout or interrupt: drop the rest
                self._fail(e)
                raise
            if not more:
                self.finished = True
                raise StopIteration
        i = self.pos
        self.pos += 1
        if i in self.errors:
            exc = self.errors.pop(i)
            if self.stop_on_error:
                self._fail(exc)
            raise exc
        value = self.buffer[i]
        self.buffer[i] = None
        return value

    def __del__(self) -> None:
        if not self.finished:
            try:
                self.run.cancel()
            except Exception:
                pass


