"""gilfree's zygote: the clean process that worker processes are forked from.

The processes backend never forks the caller's process, which may run
threads (gilfree's own, or the user's) whose locks a child would inherit
held.  Instead the first process pool starts this program once, with a
fresh ``python`` (fork + exec: no thread, no lock carried over), and each
worker is forked from it: a worker is ready in about a millisecond, with
the modules the zygote loaded (``gilfree._core``, ``pickle``, later
``cloudpickle``) already there.

Requests come on one ``SOCK_SEQPACKET`` socket from the parent
(``_core/proc.c``): a spawn request carries the worker's channel (a memfd)
and its descriptor socket; the answer is the new pid.  The zygote reaps its
children and writes each one's wait status into its channel
(``_core._proc_mark_exited``), which wakes the parent's proxy thread.  When
the socket closes - the last process pool is gone, or the parent died - the
zygote kills what is left, reaps it and exits; workers also die with the
zygote (``PR_SET_PDEATHSIG``), so nothing outlives a ``SIGKILL``ed parent.

Run as ``python -c <bootstrap> CTL_FD CORE_PATH ZYGOTE_PATH``: the bootstrap
loads the ``gilfree._core`` extension from its path without importing the
package, and *lean*: without the stdlib's futures vocabulary
(``concurrent.futures``, ``multiprocessing``: 30 ms), which a worker needs
only if a task imports gilfree, whose ``__init__`` then completes it.
"""

import os
import select
import signal
import socket
import struct
import sys

# Every worker's setup needs these two: loaded once here, shared by every fork.
import pickle  # noqa: F401
import threading  # noqa: F401

BOOTSTRAP = """
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("gilfree._core", sys.argv[2])
core = importlib.util.module_from_spec(spec)
sys.modules["gilfree._core"] = core
os.environ["GILFREE_LEAN_CORE"] = "1"
spec.loader.exec_module(core)
del os.environ["GILFREE_LEAN_CORE"]
spec = importlib.util.spec_from_file_location("gilfree._zygote", sys.argv[3])
zygote = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zygote)
zygote.main(int(sys.argv[1]), core)
"""

_REQUEST = struct.Struct("ii")   # ('S', worker index)
_REPLY = struct.Struct("i")      # pid, or -errno
_PRELOAD_AFTER_IDLE_S = 0.05


def _preload():
    """What workers may need later, loaded once here."""
    try:
        import cloudpickle  # noqa: F401 - functions sent by value need it
    except ImportError:
        pass


def _child(core, ctl, wake_r, wake_w, chan_fd, sock_fd, others, zygote_pid):
    """In a new worker: drop the zygote's descriptors, serve, exit."""
    status = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ctl.close()
        os.close(wake_r)
        os.close(wake_w)
        for fd in others:
            os.close(fd)
        status = core._proc_worker_main(chan_fd, sock_fd, zygote_pid)
    finally:
        os._exit(status)


def main(ctl_fd, core):
    # Ctrl-C in a terminal reaches the whole process group: the parent
    # handles it (KeyboardInterrupt), the zygote and workers go on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl = socket.socket(fileno=ctl_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children = {}                # pid -> its channel's descriptor
    preloaded = False
    while True:
        # Preload once the first requests are served and none came for a
        # while: it takes tens of ms, and a pool's first workers should not
        # wait for it.
        idle = None if preloaded or not children else _PRELOAD_AFTER_IDLE_S
        readable, _, _ = select.select([ctl, wake_r], [], [], idle)
        if not readable:
            _preload()
            preloaded = True
            continue
        if wake_r in readable:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            _reap(core, children, block=False)
        if ctl not in readable:
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, _REQUEST.size, 2)
        except OSError:
            msg, fds = b"", []
        if not msg:
            break                # end of file: the parent is gone or done
        if len(fds) != 2 or len(msg) != _REQUEST.size:
            for fd in fds:
                os.close(fd)
            ctl.send(_REPLY.pack(-22))  # EINVAL
            continue
        chan_fd, sock_fd = fds
        zygote_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError as e:
            os.close(chan_fd)
            os.close(sock_fd)
            ctl.send(_REPLY.pack(-(e.errno or 12)))
            continue
        if pid == 0:
            _child(core, ctl, wake_r, wake_w, chan_fd, sock_fd, list(children.values()),
                   zygote_pid)
        os.close(sock_fd)
        children[pid] = chan_fd
        ctl.send(_REPLY.pack(pid))
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(core, children, block=True)
    sys.exit(0)


def _reap(core, children, block):
    while children:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        chan_fd = children.pop(pid, None)
        if chan_fd is not None:
            core._proc_mark_exited(chan_fd, status)
            os.close(chan_fd)
