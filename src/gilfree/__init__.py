"""gilfree: use every core from Python.

A C engine behind the APIs you know: :class:`ThreadPoolExecutor` (a drop-in
for the stdlib's), :class:`Pool` (``concurrent.futures`` and
``multiprocessing.Pool`` vocabularies in one object, several backends),
:class:`ProcessPoolExecutor` and :class:`InterpreterPoolExecutor` for pure
Python on every core, :class:`Future` (a ``concurrent.futures.Future`` that
is also awaitable), and
:mod:`gilfree.native` for C functions that run with no GIL at all.
"""

from __future__ import annotations

import os as _os
from concurrent.futures.thread import BrokenThreadPool

from . import _core

_core._complete()  # a worker process's copy is loaded lean (_zygote.py)

from . import _lifecycle  # noqa: E402
from ._core import TimeoutError  # noqa: E402
from ._executor import ThreadPoolExecutor
from ._futures import Future
from ._interpreters import BrokenInterpreterPool, InterpreterPoolExecutor
from ._pool import BACKENDS, Pool
from ._processes import BrokenProcessPool, ProcessPoolExecutor, WorkerCrashedError
from . import demo, native

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "BrokenInterpreterPool", "BrokenProcessPool", "BrokenThreadPool",
    "Future", "InterpreterPoolExecutor", "Pool", "ProcessPoolExecutor",
    "ThreadPoolExecutor", "TimeoutError", "WorkerCrashedError", "demo",
    "get_include", "native",
]


def get_include() -> str:
    """The directory holding ``gilfree.h``, gilfree's C API header."""
    return _os.path.join(_os.path.dirname(__file__), "include")


_lifecycle.install()
