"""gilfree.ProcessPoolExecutor: pure Python on every core, in worker processes.

Each worker is a process with its own interpreter and GIL, fed by one C
thread of the caller (its proxy) through a shared-memory channel: calls and
results cross as pickles, written into the channel's ring and read there in
place; buffers of at least ``OUT_OF_BAND_BYTES`` (bytes, bytearray,
memoryview, numpy arrays) go out of band, each in its own shared-memory
segment, written once and mapped by the other side.  No Python thread
shuffles bytes and dispatch runs with the GIL released (``_core/proc.c``).

Workers are forked from gilfree's zygote (``_zygote.py``), a clean process
started once, never from the caller's (possibly threaded) process. A worker
that dies fails only the call it was running, with
:class:`WorkerCrashedError` naming its exit code or signal, and is replaced;
a call given a timeout (``submit_timeout``, ``Pool.apply_async(...,
timeout=)``) that runs too long has its worker killed and fails with
``TimeoutError``.

What crosses must pickle: functions from ``__main__``, lambdas and closures
go by value through cloudpickle; a worker finds the main script's functions
by running the script once as ``__mp_main__`` (keep its work under ``if
__name__ == "__main__":``).
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import multiprocessing.context
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _core, _worker
from ._remote import (RemoteMapMixin, _cloudpickle_installed, _dumps_any, _fallback_dumps,
                      _main_file, _rebuild)

__all__ = ["ProcessPoolExecutor", "BrokenProcessPool", "WorkerCrashedError",
           "OUT_OF_BAND_BYTES"]

#: Buffers at least this big travel in shared memory of their own.
OUT_OF_BAND_BYTES = 1 << 20


class BrokenProcessPool(concurrent.futures.process.BrokenProcessPool):
    """A process pool cannot run tasks any more (its initializer failed, or
    no worker process could be started)."""


class WorkerCrashedError(BrokenProcessPool):
    """The worker process running this task died (``os._exit``, a signal, a
    crash in C code). Only this task fails: the pool replaced the worker and
    goes on. A subclass of the stdlib's ``BrokenProcessPool``, so handlers
    written for ``concurrent.futures`` still catch it.

    Attributes:
        exitcode: As :attr:`multiprocessing.Process.exitcode`: the exit
            code, or ``-N`` when signal N killed it (0 if unknown).
        pid: The worker's process id.
    """

    def __init__(self, message: str, exitcode: int = 0, pid: int = 0) -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.pid = pid


def _failure(status: str, message: str, code: int, pid: int) -> BaseException:
    """The exception for a call that did not come back pickled (remote.c)."""
    if status == "crashed":
        return WorkerCrashedError(message, code, pid)
    if status == "timedout":
        return _core.TimeoutError(message)
    if status == "broken":
        return BrokenProcessPool(message)
    return RuntimeError(message)


def _dumps(obj: Any, protocol: int = 5) -> Any:
    return _worker.dumps_out(obj, OUT_OF_BAND_BYTES)


#: Whether calls are shipped by value (cloudpickle): no main script to
#: find ``__main__``'s functions in (a REPL, ``-c``, Jupyter).
by_value = False


def _install_codec() -> None:
    # Without a main script (REPL, -c, Jupyter) the workers cannot find
    # __main__'s functions by running it: ship every call by value then.
    # _core pickles the common call itself with plain (pickle.dumps) and
    # calls dumps for the rest: big bytes to move out of band, or a call
    # plain pickle refuses.
    global by_value
    dumps: Callable[..., Any] = _dumps
    plain: Callable[..., Any] | None = pickle.dumps
    by_value = False
    if _main_file() is None and _cloudpickle_installed():
        dumps = _fallback_dumps
        plain = None
        by_value = True
    _core._remote_set_codec(_core.REMOTE_PROCESSES,
                            (dumps, _fallback_dumps, pickle.loads, _rebuild, _failure,
                             plain, OUT_OF_BAND_BYTES))


with open(os.path.join(os.path.dirname(__file__), "_worker.py"), "rb") as _f:
    _WORKER_SOURCE = _f.read()


# -- the zygote -----------------------------------------------------------------

_zygote_lock = threading.Lock()
_zygote_process: subprocess.Popen | None = None


def _start_zygote() -> bool:
    """Start a zygote and hand its socket to _core, unless one is attached;
    True if it started one (the caller then detaches once its pool holds
    the zygote). A zygote whose pools are all gone was told to exit: reap
    it first."""
    global _zygote_process
    if _core._proc_zygote_attached():
        return False
    _reap_zygote()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    here = os.path.dirname(os.path.abspath(__file__))
    from . import _zygote

    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _zygote.BOOTSTRAP, str(theirs.fileno()),
             _core.__file__, os.path.join(here, "_zygote.py")],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
    finally:
        theirs.close()
    _core._proc_attach_zygote(ours.detach())
    _zygote_process = process
    return True


def _reap_zygote() -> None:
    """Wait for a zygote that no pool uses any more (it exits at once)."""
    global _zygote_process
    process = _zygote_process
    if process is None or _core._proc_zygote_attached():
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _zygote_process = None


#: Zygotes forked from this process for start method "fork", by pid: each
#: serves one pool and exits when that pool lets go of its socket.
_forked_zygotes: set[int] = set()


def _fork_zygote() -> tuple[socket.socket, int]:
    """Fork this process into a zygote of one pool's own (start method
    "fork"): its workers are forked from a copy of this process as it is
    now, so they see what the caller has (module globals, ``__main__``'s
    names), as the stdlib's fork start method gives them.  The caller runs
    threads (gilfree's, perhaps its own), and a lock one of them holds
    stays held in the copy: that is the risk the user takes with "fork"
    (Python 3.12+ warns of it).  Returns the socket to hand the pool, and
    the zygote's pid."""
    from . import _zygote

    _reap_forked_zygotes()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the zygote: never returns into the caller's code
        try:
            ours.close()
            _core._proc_close_inherited()
            _zygote.main(theirs.detach(), _core)
        finally:
            os._exit(0)
    theirs.close()
    _forked_zygotes.add(pid)
    return ours, pid


def _reap_forked_zygotes(wait_for: int | None = None) -> None:
    """Reap the forked zygotes that have exited; wait (10 s at most, then
    kill) for ``wait_for``, whose pool has let it go."""
    for pid in list(_forked_zygotes):
        deadline = time.monotonic() + 10 if pid == wait_for else 0.0
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # not ours to reap after all
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        if done:
            _forked_zygotes.discard(pid)
        elif pid == wait_for:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            _forked_zygotes.discard(pid)


def _after_fork_child() -> None:
    """The parent's zygote is not ours (_core closed its socket)."""
    global _zygote_process, _zygote_lock
    _zygote_process = None
    _zygote_lock = threading.Lock()
    _forked_zygotes.clear()


# -- the executor ---------------------------------------------------------------

def default_process_workers() -> int:
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return count or 1


_START_METHODS = ("fork", "forkserver", "spawn")


class ProcessPoolExecutor(RemoteMapMixin, _core.RemoteExecutor,  # type: ignore[misc]
                          concurrent.futures.Executor):
    """The stdlib's :class:`concurrent.futures.ProcessPoolExecutor`, with
    workers fed through shared memory by C threads.

    Args:
        max_workers: The most worker processes (started on demand).
            Default: the CPUs this process may use.
        mp_context: A :mod:`multiprocessing` context; its start method
            decides what workers start from.  ``"spawn"`` and
            ``"forkserver"`` (and no context): gilfree's zygote, a fresh
            ``python`` started once, which workers fork from - they inherit
            nothing of the caller.  ``"fork"``: a zygote forked from the
            caller when the pool is made, so workers see the caller's state
            as it was then (module globals, ``__main__``); forking a
            process that runs threads can deadlock the copy, which is why
            it is not the default.
        initializer: Called with ``*initargs`` in each worker before its
            first task; if it raises, the pool is broken and its tasks fail
            with :class:`BrokenProcessPool`.
        initargs: Arguments for ``initializer`` (pickled).
        max_tasks_per_child: Each worker process runs at most this many
            calls (a map chunk counts as one), then is replaced.
        kill_on_cancel: If true, :meth:`Future.cancel` also stops a call
            that has started: its worker process is killed (and replaced)
            and the future is cancelled; calls queued behind it are kept.
            By default, as in the stdlib, a running call cannot be
            cancelled.
    """

    def __new__(
        cls,
        max_workers: int | None = None,
        mp_context: multiprocessing.context.BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        kill_on_cancel: bool = False,
    ) -> ProcessPoolExecutor:
        if max_workers is None:
            max_workers = default_process_workers()
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if mp_context is not None and not (
                hasattr(mp_context, "get_start_method")
                and mp_context.get_start_method() in _START_METHODS):
            raise TypeError(f"mp_context must be a multiprocessing context, "
                            f"not {mp_context!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        # Decided now, not only at import: under ``python -m pkg`` gilfree is
        # imported before ``__main__`` has its file, which would look like a
        # REPL and ship every call by value.
        _install_codec()
        init_blob = None
        if initializer is not None:
            init_blob = _dumps_any((initializer, tuple(initargs)))
        if "__main__" in sys.modules:
            # Results naming the main script's classes come back pickled as
            # __mp_main__.<name> (the workers run the script under that name).
            sys.modules.setdefault("__mp_main__", sys.modules["__main__"])
        init = pickle.dumps((list(sys.path), _main_file(), init_blob, OUT_OF_BAND_BYTES), 5)
        name = f"ProcessPoolExecutor-{_core._next_executor_number()}"
        if mp_context is not None and mp_context.get_start_method() == "fork":
            with _zygote_lock:
                own, pid = _fork_zygote()
            try:  # the pool takes a duplicate of the socket
                self = super().__new__(
                    cls, _core.REMOTE_PROCESSES, max_workers, name, init, _WORKER_SOURCE,
                    max_tasks_per_child or 0, bool(kill_on_cancel), own.fileno())
            finally:
                own.close()  # without a pool, the zygote sees end-of-file and exits
            self._forked_zygote = pid
            return self
        with _zygote_lock:
            started = _start_zygote()
            try:
                return super().__new__(
                    cls, _core.REMOTE_PROCESSES, max_workers, name, init,
                    _WORKER_SOURCE, max_tasks_per_child or 0, bool(kill_on_cancel))
            finally:
                if started:  # the pool holds it now (or it closes: no pool)
                    _core._proc_detach_zygote()

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: multiprocessing.context.BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        kill_on_cancel: bool = False,
    ) -> None:
        """The stdlib's signature; the arguments were taken by ``__new__``
        (the C core needs them when it is allocated)."""

    def submit_timeout(self, timeout: float | None, fn: Callable[..., Any], /,
                       *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Like :meth:`submit`; the call may run ``timeout`` seconds (from
        when a worker starts it), after which its worker is killed and
        replaced and the future raises ``TimeoutError``. ``None``: no limit."""
        return self._submit_timeout(timeout, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; with ``wait``, return once every worker
        process has exited (and the zygote too, if no other pool uses it)."""
        super().shutdown(wait, cancel_futures=cancel_futures)
        if wait:
            with _zygote_lock:
                _reap_zygote()
                _reap_forked_zygotes(getattr(self, "_forked_zygote", None))


_install_codec()
os.register_at_fork(after_in_child=_after_fork_child)
