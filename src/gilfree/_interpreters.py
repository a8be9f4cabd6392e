"""gilfree.InterpreterPoolExecutor: pure Python in parallel, in one process.

Each worker is a C thread that owns a sub-interpreter with its own GIL
(PEP 684, Python 3.12+), created once and kept for the pool's life. Calls
and results cross as pickled bytes (``pickle``, or ``cloudpickle`` for what
plain pickle refuses: lambdas, closures, functions of a REPL session);
nothing else is shared between interpreters. See ``_core/interp.c`` and
``_worker.py``, and ``shared/notes/subinterpreters.md`` for the
CPython bugs the code below works around.

What a task may do differs from threads, since it runs in another
interpreter: it sees module globals of its *own* copy of every module (set
up by its imports, or by the ``initializer``), it cannot share objects (a
``threading.Event`` or a list) with the caller, and it cannot import
extension modules that do not support sub-interpreters (the error says so
and suggests ``backend="processes"``). Functions from the main script are
found by running the script again in each worker, once, as ``__mp_main__``
(as ``multiprocessing``'s spawn does): keep its work under
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import sys
import warnings
from collections.abc import Callable
from typing import Any

from . import _core
from ._executor import default_thread_workers
from ._remote import (  # noqa: F401 - RemoteTraceback and identity are public here
    RemoteMapMixin, RemoteTraceback, _cloudpickle_installed, _dumps_any, _fallback_dumps,
    _main_file, _rebuild,
    identity,
)

__all__ = [
    "InterpreterPoolExecutor", "BrokenInterpreterPool", "RemoteTraceback",
    "available", "unavailable_reason", "safe_by_default",
]

#: Raised for the tasks of a pool whose initializer failed (a subclass of
#: ``concurrent.futures.thread.BrokenThreadPool``, as in Python 3.14).
if hasattr(_core, "BrokenInterpreterPool"):
    BrokenInterpreterPool = _core.BrokenInterpreterPool
else:  # Python 3.11: never raised, but importable everywhere
    from concurrent.futures.thread import BrokenThreadPool

    class BrokenInterpreterPool(BrokenThreadPool):  # type: ignore[no-redef]
        """An interpreter pool cannot run tasks any more."""


#: Set to "1" to run the interpreters backend on 3.12.0-3.12.3 regardless.
UNSAFE_ENV = "GILFREE_UNSAFE_SUBINTERPRETERS"


def unavailable_reason() -> str | None:
    """Why this Python has no interpreters backend, or None."""
    if sys.version_info < (3, 12):
        return (f"the interpreters backend needs Python 3.12 or newer (sub-interpreters "
                f"with their own GIL, PEP 684); this is Python "
                f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}: "
                f"use backend='threads', or 'processes' once available")
    if getattr(sys, "_is_gil_enabled", lambda: True)() is False:  # pragma: no cover
        return "the interpreters backend is not supported on free-threaded builds"
    if sys.version_info[:2] == (3, 12) and sys.version_info < (3, 12, 4) \
            and os.environ.get(UNSAFE_ENV) != "1":
        v = sys.version_info
        return (f"Python {v.major}.{v.minor}.{v.micro} has sub-interpreter memory "
                f"bugs, fixed in 3.12.4, that corrupt the heap or crash the process "
                f"at exit (gh-119213 and related; shared/notes/subinterpreters.md): "
                f"upgrade to Python 3.12.4 or newer, use Python 3.13, or use "
                f"backend='threads'; set {UNSAFE_ENV}=1 to run it anyway")
    return None


def available() -> bool:
    return unavailable_reason() is None


def safe_by_default() -> bool:
    """Whether ``backend="auto"`` may pick interpreters on this Python.

    The point releases with crash bugs that gilfree can only partly work
    around are left out (shared/notes/subinterpreters.md, section 5): 3.12
    before 3.12.4 (gh-119213: a worker that first calls some C functions
    with keywords crashes the process at exit) and 3.13.0 (concurrent first
    imports of datetime in two workers; mitigated here by importing it in
    the main interpreter first, but other modules of that kind remain).
    """
    v = sys.version_info
    if v < (3, 12):
        return False
    if v[:2] == (3, 12):
        return v >= (3, 12, 4)
    if v[:2] == (3, 13):
        return v >= (3, 13, 1)
    return True


def _install_codec() -> None:
    # Without a main script (REPL, -c, Jupyter), functions of __main__ cannot
    # be found by re-running it: ship every call by value then.
    by_value = _main_file() is None and _cloudpickle_installed()
    dumps = _fallback_dumps if by_value else pickle.dumps
    _core._remote_set_codec(_core.REMOTE_INTERPRETERS,
                            (dumps, _fallback_dumps, pickle.loads, _rebuild, _failure))


def _failure(status: str, message: str, code: int, pid: int) -> BaseException:
    """The exception for a call that did not come back pickled (remote.c)."""
    if status == "broken":
        return BrokenInterpreterPool(message)
    return RuntimeError(message)


with open(os.path.join(os.path.dirname(__file__), "_worker.py"), "rb") as _f:
    _WORKER_SOURCE = _f.read()


# -- mitigations (shared/notes/subinterpreters.md, P1-P3) ----------------------

_prepared = False


def _prepare() -> None:
    """Once, before the first worker interpreter starts."""
    global _prepared
    if _prepared:
        return
    # P2/P3: datetime and decimal (single-phase C modules) corrupt the heap
    # (3.12) or crash at exit (3.13.0) when first imported in workers; once
    # the main interpreter has them, a worker gets a clean result (3.13) or
    # a clean ImportError and the pure-Python fallback (3.12).
    # P1 (3.12.0-3.12.3, gh-119213): C functions first called with keywords
    # in a worker leave a dangling tuple that crashes the process at exit;
    # hashlib, ssl and asyncio do that at import, so import them here first.
    names = ["datetime", "decimal"]
    if sys.version_info[:2] == (3, 12) and sys.version_info < (3, 12, 4):
        names += ["hashlib", "ssl", "asyncio"]
    for name in names:
        try:
            __import__(name)
        except ImportError:
            pass
    # Results that refer to the main script's classes come back pickled as
    # __mp_main__.<name> (the workers run the script under that name).
    if "__main__" in sys.modules:
        sys.modules.setdefault("__mp_main__", sys.modules["__main__"])
    if sys.version_info[:2] == (3, 12):
        warnings.warn(
            "gilfree interpreters backend on Python 3.12: worker interpreters cannot "
            "load _datetime, _decimal, pyexpat or _ctypes (datetime and decimal fall back "
            "to their slower pure-Python versions; ctypes and xml.etree parsing fail)"
            + ("; and this point release (< 3.12.4) has sub-interpreter crash bugs that "
               "gilfree only partly works around (gh-119213)"
               if sys.version_info < (3, 12, 4) else ""),
            RuntimeWarning, stacklevel=4)
    _prepared = True


def _check_available() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)


# -- the executor -------------------------------------------------------------------

# On 3.11 the class exists; __new__ says why it cannot be used.
class InterpreterPoolExecutor(RemoteMapMixin, _core.RemoteExecutor,  # type: ignore[misc]
                              concurrent.futures.Executor):
    """Python 3.14's :class:`concurrent.futures.InterpreterPoolExecutor`, on 3.12+.

    Each worker runs its calls in its own sub-interpreter with its own GIL,
    so pure-Python code runs in parallel, in one process. Calls, arguments
    and results must pickle (lambdas and closures go through cloudpickle);
    an exception raised in a worker comes back with the worker's traceback
    as its ``__cause__``.

    Args:
        max_workers: The most workers (started on demand; each costs about
            20 ms and 3-4 MB). Default: ``min(32, os.cpu_count() + 4)``, as
            in Python 3.14.
        thread_name_prefix: Names the worker threads ``<prefix>_<n>``.
        initializer: Called with ``*initargs`` in each worker interpreter
            before its first task; if it raises, the pool is broken and its
            tasks fail with :class:`BrokenInterpreterPool`.
        initargs: Arguments for ``initializer`` (pickled).
    """

    def __new__(
        cls,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> InterpreterPoolExecutor:
        _check_available()
        if max_workers is None:
            max_workers = default_thread_workers()
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        _prepare()
        _install_codec()
        init_blob = None
        if initializer is not None:
            init_blob = _dumps_any((initializer, tuple(initargs)))
        init = pickle.dumps((list(sys.path), _main_file(), init_blob, 0), 5)
        prefix = thread_name_prefix or (
            f"InterpreterPoolExecutor-{_core._next_executor_number()}")
        return super().__new__(cls, _core.REMOTE_INTERPRETERS, max_workers, prefix,
                               init, _WORKER_SOURCE)


_install_codec()
