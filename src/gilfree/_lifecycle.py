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
    _install_remote()


def _install_remote() -> None:
    """The interpreters (Python 3.12+, shared/notes/subinterpreters.md P7/P8)
    and processes backends.

    - Exit: registered after ``_shutdown_all``, so it runs first (threading
      calls these in reverse): queued work completes, every worker ends its
      interpreter while the runtime is whole (3.12 aborts, and 3.13.0 may
      crash, if the process exits with live sub-interpreters), and every
      worker process exits.
    - Fork: a fork while sub-interpreters live kills the child, so before a
      fork the running tasks finish, the workers end their interpreters and
      exit, and the queued tasks wait; after it the parent's pools start
      workers again on demand (and run what waited), the child's start fresh.
      A fork therefore waits for the running tasks of every interpreter pool.
      Worker processes go on serving the parent; in the child, the parent's
      process pools are broken (a new pool there works).
    """
    threading._register_atexit(_core._remote_shutdown_all)  # type: ignore[attr-defined]
    try:
        os.register_at_fork(before=_core._remote_before_fork,
                            after_in_parent=_core._remote_after_fork_parent,
                            after_in_child=_core._remote_after_fork_child)
    except RuntimeError:  # pragma: no cover - not allowed in this interpreter
        pass
