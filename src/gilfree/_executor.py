"""gilfree.ThreadPoolExecutor: the stdlib's, with its workers in C."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from . import _core

_T = TypeVar("_T")

__all__ = ["ThreadPoolExecutor", "default_thread_workers"]


class MapMixin:
    """concurrent.futures' ``map`` on top of the executor's ``_map``, which
    each core provides (threads: ``_core.Executor._map``; interpreters and
    processes: ``_remote.RemoteMapMixin._map``)."""

    _map: Callable[..., Iterator[Any]]

    def map(  # type: ignore[override]
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[_T]:
        """Like :func:`map`, with the calls running in the workers.

        The inputs are taken at once, results come back in order, and the
        exception of a failed call is raised when the iterator reaches it.
        ``timeout`` counts from this call. ``chunksize`` is accepted as the
        stdlib does; above 1 it fixes how many items go to a worker at a
        time, otherwise the pool sizes the chunks itself (threads: from the
        measured time per item; interpreters and processes: about four
        chunks per worker, one pickle each).
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if len(iterables) == 1:
            items: Iterable[Any] = iterables[0]
            star = False
        else:
            items, star = zip(*iterables), True
        return self._map(
            fn, items, chunksize=chunksize if chunksize > 1 else 0,
            star=star, timeout=timeout,
        )


def default_thread_workers() -> int:
    """The stdlib's default: ``min(32, cpus + 4)``."""
    count = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    return min(32, count + 4)


class ThreadPoolExecutor(MapMixin, _core.Executor,  # type: ignore[misc]
                         concurrent.futures.Executor):
    """A drop-in for :class:`concurrent.futures.ThreadPoolExecutor`.

    Same arguments, behaviour and errors; the workers are gilfree's C threads.
    A worker takes the GIL once and runs every task it can grab before it lets
    the GIL go, and whoever waits for a result picks it up itself, so a task
    costs a microsecond or so instead of the stdlib's ten or more. Code that
    releases the GIL (I/O, hashlib, numpy, C extensions) runs in parallel;
    pure Python code does not - use ``gilfree.Pool(backend="processes")`` or
    ``"interpreters"`` for that once they are available.

    Args:
        max_workers: The most threads to start (started on demand). Default:
            ``min(32, os.cpu_count() + 4)``, as in the stdlib.
        thread_name_prefix: Names the workers ``<prefix>_<n>``.
        initializer: Called with ``*initargs`` in each worker before its first
            task. If it raises, the pool is broken: pending and later tasks
            fail with :class:`~concurrent.futures.thread.BrokenThreadPool`.
        initargs: Arguments for ``initializer``.
    """

    def __new__(
        cls,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> ThreadPoolExecutor:
        if max_workers is None:
            max_workers = default_thread_workers()
        prefix = thread_name_prefix or (
            f"ThreadPoolExecutor-{_core._next_executor_number()}"
        )
        return super().__new__(cls, max_workers, prefix, initializer, tuple(initargs))
