"""gilfree.Pool: one pool, both vocabularies, any backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from . import _core
from . import _interpreters
from ._executor import ThreadPoolExecutor
from ._futures import Future
from ._processes import ProcessPoolExecutor

_T = TypeVar("_T")

__all__ = ["Pool", "BACKENDS", "PoolNotRunningError"]

#: Every backend name, and whether this release has it on this Python.
BACKENDS = {
    "threads": True,
    "interpreters": _interpreters.available(),
    "processes": True,
    "ray": False,
    "auto": True,
}

# SHUTDOWN: stopped with shutdown(), so concurrent.futures' errors apply;
# CLOSE/TERMINATE: stopped with multiprocessing's verbs, so its errors do.
_RUN, _CLOSE, _TERMINATE, _SHUTDOWN = "RUN", "CLOSE", "TERMINATE", "SHUTDOWN"


class PoolNotRunningError(ValueError, RuntimeError):
    """``Pool.map`` after ``close()`` or ``terminate()``.

    ``map`` belongs to both vocabularies, so this is both the ``ValueError``
    that ``multiprocessing.Pool`` raises and the ``RuntimeError`` that
    ``concurrent.futures`` raises: whichever the caller catches, catches it.
    """


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        names = ", ".join(repr(b) for b in BACKENDS)
        raise ValueError(f"unknown backend {backend!r}; choose one of {names}")
    if backend == "interpreters" and not _interpreters.available():
        raise NotImplementedError(_interpreters.unavailable_reason())
    if not BACKENDS[backend]:
        raise NotImplementedError(
            f"backend={backend!r} is not available in this version of gilfree "
            f"yet; use backend='threads' (parallel for code that releases the "
            f"GIL) in the meantime"
        )


def _resolve_auto() -> str:
    """``backend="auto"``: interpreters where they are safe on this Python,
    else processes."""
    if _interpreters.available() and _interpreters.safe_by_default():
        return "interpreters"
    return "processes"


def _lazy_window(iterable: Iterable[Any], chunksize: int, workers: int) -> int:
    """Inputs to read ahead for imap: all of a sized collection (it is in
    memory already), a bounded window of an iterator (which may be endless)."""
    if hasattr(iterable, "__len__"):
        return 0
    return max(1024, 8 * chunksize * workers)


class Pool:
    """A pool of workers that speaks both ``concurrent.futures`` and
    ``multiprocessing.Pool``.

    Args:
        workers: How many workers; default ``os.cpu_count()``.
        backend: Where calls run: ``"threads"``; ``"interpreters"`` (Python
            3.12+: one sub-interpreter with its own GIL per worker, so pure
            Python runs in parallel; calls and results must pickle);
            ``"processes"`` (worker processes fed through shared memory:
            pure Python in parallel on any Python; calls and results must
            pickle); ``"auto"`` (interpreters where this Python's
            sub-interpreters are safe, else processes); later ``"ray"``.
        initializer: Called with ``*initargs`` in each worker first.
        initargs: Arguments for ``initializer``.
        maxtasksperchild: Each worker process runs at most this many calls
            (a map chunk counts as one) before it is replaced. Accepted and
            ignored by the threads and interpreters backends: a thread owns
            no memory that a restart would free.
        thread_name_prefix: Worker names are ``<prefix>_<n>``.

    ``with Pool() as pool:`` shuts down on exit *waiting* for submitted work
    (``multiprocessing.Pool`` would terminate it; no work is lost here).
    """

    def __init__(
        self,
        workers: int | None = None,
        backend: str = "threads",
        *,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        thread_name_prefix: str = "",
    ) -> None:
        _check_backend(backend)
        if workers is None:
            workers = os.cpu_count() or 1
        if workers <= 0:
            raise ValueError("workers must be greater than 0")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if backend == "auto":
            backend = _resolve_auto()
        self._backend = backend
        self._workers = workers
        self._state = _RUN
        self._executor: Any
        if backend == "processes":
            self._executor = ProcessPoolExecutor(
                workers, None, initializer, tuple(initargs),
                max_tasks_per_child=maxtasksperchild)
        else:
            executor = (_interpreters.InterpreterPoolExecutor if backend == "interpreters"
                        else ThreadPoolExecutor)
            self._executor = executor(
                workers,
                thread_name_prefix or f"gilfree-Pool-{_core._next_executor_number()}",
                initializer,
                tuple(initargs),
            )
        #: ``submit(fn, /, *args, **kwargs) -> Future``: schedule one call.
        self.submit = self._executor.submit

    # -- properties --------------------------------------------------------
    @property
    def workers(self) -> int:
        """The number of workers."""
        return self._workers

    @property
    def backend(self) -> str:
        """The backend's name."""
        return self._backend

    def __repr__(self) -> str:
        return (f"<gilfree.Pool backend={self._backend!r} "
                f"workers={self._workers} state={self._state}>")

    # -- concurrent.futures vocabulary ---------------------------------------
    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        task_timeout: float | None = None,
    ) -> list[_T]:
        """``[fn(*args) for args in zip(*iterables)]``, computed by the workers.

        Returns a list (as ``multiprocessing.Pool.map`` does). Raises the
        exception of the first failed item, or ``TimeoutError`` after
        ``timeout`` seconds (the unstarted rest is then cancelled).
        ``multiprocessing``'s positional form ``map(fn, iterable, chunksize)``
        works too: an int or None there cannot be an iterable.
        ``task_timeout`` (processes backend): seconds each item may run; a
        chunk that runs past its items' total has its worker killed and
        fails with ``TimeoutError``.
        """
        if len(iterables) == 2 and (iterables[1] is None
                                    or isinstance(iterables[1], int)):
            iterables, chunksize = iterables[:1], iterables[1]
        if self._state in (_CLOSE, _TERMINATE):
            raise PoolNotRunningError(
                "Pool not running: cannot schedule new futures after shutdown")
        if len(iterables) == 1:
            future = self._map_future(fn, iterables[0], chunksize, False, task_timeout)
        else:
            future = self._map_future(fn, zip(*iterables), chunksize, True, task_timeout)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()  # timed out or interrupted: drop the rest
            raise

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; with ``wait``, return once every worker exited.

        ``cancel_futures`` cancels the calls that have not started.
        """
        if self._state == _RUN:
            self._state = _SHUTDOWN
        self._executor.shutdown(wait, cancel_futures=cancel_futures)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)

    # -- multiprocessing vocabulary -------------------------------------------
    def _check_running(self) -> None:
        if self._state != _RUN:
            raise ValueError("Pool not running")

    def apply(self, func: Callable[..., _T], args: Iterable[Any] = (),
              kwds: dict[str, Any] | None = None) -> _T:
        """Call ``func(*args, **kwds)`` on a worker and return its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> Future:
        """Schedule ``func(*args, **kwds)``; the returned Future has ``get()``.

        ``callback(result)`` or ``error_callback(exception)`` runs when the
        call is done. ``timeout`` (processes backend): seconds the call may
        run once started; then its worker is killed and replaced and the
        future raises ``TimeoutError``.
        """
        self._check_running()
        if timeout is not None:
            future = self._submit_timeout(timeout, func, *args, **(kwds or {}))
        else:
            future = self.submit(func, *args, **(kwds or {}))
        _add_callbacks(future, callback, error_callback)
        return future

    def map_async(
        self,
        func: Callable[[Any], _T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> Future:
        """Like :meth:`map` for one iterable; a Future of the list."""
        return self._map_async(func, iterable, chunksize, False, callback,
                               error_callback)

    def starmap(self, func: Callable[..., _T], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None) -> list[_T]:
        """``[func(*args) for args in iterable]``, computed by the workers."""
        return self._map_async(func, iterable, chunksize, True, None, None).get()

    def starmap_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> Future:
        """Like :meth:`starmap`; a Future of the list."""
        return self._map_async(func, iterable, chunksize, True, callback,
                               error_callback)

    def imap(self, func: Callable[[Any], _T], iterable: Iterable[Any],
             chunksize: int = 1) -> Iterator[_T]:
        """Results in input order as they are ready; a failed call raises
        when reached, and iteration may go on past it."""
        return self._imap(func, iterable, chunksize, True)

    def imap_unordered(self, func: Callable[[Any], _T], iterable: Iterable[Any],
                       chunksize: int = 1) -> Iterator[_T]:
        """Results in completion order."""
        return self._imap(func, iterable, chunksize, False)

    def close(self) -> None:
        """No more work; the workers finish what was submitted, then exit."""
        if self._state == _RUN:
            self._state = _CLOSE
            self._executor.shutdown(wait=False)

    def terminate(self) -> None:
        """Cancel the work that has not started, then stop the workers
        (threads cannot be killed: running calls are waited for)."""
        self._state = _TERMINATE
        self._executor.shutdown(wait=True, cancel_futures=True)

    def join(self) -> None:
        """Wait for the workers to exit, after :meth:`close` or :meth:`terminate`."""
        if self._state == _RUN:
            raise ValueError("Pool is still running")
        self._executor.shutdown(wait=True)

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled")

    # -- helpers ------------------------------------------------------------------
    def _map_future(self, fn: Callable[..., Any], items: Iterable[Any],
                    chunksize: int | None, star: bool,
                    task_timeout: float | None = None) -> Future:
        if chunksize is not None and chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0:n}".format(chunksize))
        future = Future()
        if task_timeout is not None:
            self._need_timeouts()
            self._executor._map(fn, items, chunksize=chunksize or 0, star=star,
                                future=future, task_timeout=task_timeout)
        else:
            self._executor._map(fn, items, chunksize=chunksize or 0, star=star,
                                future=future)
        return future

    def _need_timeouts(self) -> None:
        if self._backend != "processes":
            raise NotImplementedError(
                f"per-task timeouts need a backend that can stop a running call: "
                f"use backend='processes' (this pool's is {self._backend!r})")

    def _submit_timeout(self, timeout: float, func: Callable[..., Any], *args: Any,
                        **kwargs: Any) -> Future:
        self._need_timeouts()
        return self._executor.submit_timeout(timeout, func, *args, **kwargs)

    def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any],
                   chunksize: int | None, star: bool,
                   callback: Callable[[Any], object] | None,
                   error_callback: Callable[[BaseException], object] | None
                   ) -> Future:
        self._check_running()
        future = self._map_future(func, iterable, chunksize, star)
        _add_callbacks(future, callback, error_callback)
        return future

    def _imap(self, func: Callable[[Any], Any], iterable: Iterable[Any],
              chunksize: int, ordered: bool) -> Iterator[Any]:
        self._check_running()
        if chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0:n}".format(chunksize))
        window = _lazy_window(iterable, chunksize, self._workers)
        return self._executor._map(func, iterable, chunksize=chunksize,
                                   ordered=ordered, window=window,
                                   stop_on_error=False)


def _add_callbacks(future: Future, callback: Callable[[Any], object] | None,
                   error_callback: Callable[[BaseException], object] | None) -> None:
    if callback is None and error_callback is None:
        return

    def on_done(f: Future) -> None:
        if f.cancelled():
            return
        exc = f.exception()
        if exc is None:
            if callback is not None:
                callback(f.result())
        elif error_callback is not None:
            error_callback(exc)

    future.add_done_callback(on_done)
