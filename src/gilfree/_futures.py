"""gilfree.Future: concurrent.futures.Future's contract, state kept in C."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Generator
from typing import Any, TypeVar

from . import _core

_T = TypeVar("_T")

__all__ = ["Future"]


class Future(_core.FutureBase, concurrent.futures.Future):  # type: ignore[misc]
    """The result of a call that runs elsewhere.

    It *is* a :class:`concurrent.futures.Future` (``isinstance`` holds, so
    :func:`concurrent.futures.wait`, :func:`~concurrent.futures.as_completed`,
    :func:`asyncio.wrap_future` and ``loop.run_in_executor`` accept it), it is
    awaitable, and it also answers to :class:`multiprocessing.pool.AsyncResult`'s
    ``get``/``wait``/``ready``/``successful``. Its state lives in C: the
    methods come from ``gilfree._core.FutureBase``, first in the MRO.
    """

    def __await__(self) -> Generator[Any, None, Any]:
        # Imported here, not at the top: whoever awaits has asyncio loaded
        # already, and importing it first inside a sub-interpreter crashes
        # CPython 3.12.0-3.12.3 at exit (gh-119213).
        import asyncio

        # wrap_future chains a loop future to this one with a done-callback
        # that hops to the loop thread with call_soon_threadsafe.
        return asyncio.wrap_future(self).__await__()


_core._register_future_class(Future)
