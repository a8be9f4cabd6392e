"""Interpreter exit, fork, and how worker threads appear to `threading`.

- At exit every executor is shut down and joined *before* the interpreter is
  finalised, through threading's own atexit list (the stdlib's executors use
  the same hook): queued work completes, like with the stdlib, and no worker
  ever tries to take the GIL of a finalising interpreter.
- After ``os.fork()`` the child has no worker threads: work that was queued
  or running at the fork fails with BrokenThreadPool instead of hanging, and
  each pool starts fresh workers when it is next used.
- Each C worker registers a ``threading`` entry with its name, so logging's
  ``%(threadName)s`` and ``threading.current_thread().name`` show
  ``<thread_name_prefix>_<n>``, as with the stdlib's workers.
"""

from __future__ import annotations

import os
import threading

from . import _core


def _worker_started(name: str) -> None:
    threading.current_thread().name = name


def _worker_stopping() -> None:
    # current_thread() made a _DummyThread for this C thread; the thread is
    # ending, so drop it from threading's table (there is no public API).
    with threading._active_limbo_lock:  # type: ignore[attr-defined]
        threading._active.pop(threading.get_ident(), None)  # type: ignore[attr-defined]


def install() -> None:
    _core._set_worker_hooks(_worker_started, _worker_stopping)
    threading._register_atexit(_core._shutdown_all)  # type: ignore[attr-defined]
    try:
        os.register_at_fork(after_in_child=_core._after_fork_child)
    except RuntimeError:  # pragma: no cover - not allowed in this interpreter
        pass
