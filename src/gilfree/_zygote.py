"""gilfree's zygote: the clean process that worker processes are forked from.

The processes backend never forks the caller's process, which may run
threads (gilfree's own, or the user's) whose locks a child would inherit
held.  Instead the first process pool starts this program once, with a
fresh ``python`` (fork + exec: no thread, no lock carried over), and each
worker is forked from it: a worker is ready in about a millisecond, with
the modules the zygote loaded (``gilfree._core``, ``_pickle``,
``threading``) already there.  ``cloudpickle`` is not among them: a worker
imports it the first time it unpickles a function sent by value (only
pools made without a main script send those), and a zygote that loaded
it on its own would take a core from the workers running meanwhile.

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

# Every import here delays a cold pool's first task, which waits for the
# zygote to start.  Hence the C halves of ``signal`` and ``socket``, not the
# modules: those wrap them in enums and pull in ``enum``, ``selectors`` and
# ``collections`` (about 10 ms, a quarter of the zygote's start), none of
# which the zygote needs.  ``threading`` here, and ``_pickle`` below: every
# worker's setup needs them (it unpickles its setup record and names its
# thread), so they are loaded once here and shared by every fork - this
# costs a pool's first worker no more than loading them in that worker
# would, and saves it in the others.
import _signal  # type: ignore[import-not-found]  # no stub: signal's C half
import _socket
import os
import select
import sys
import threading  # noqa: F401


def _import_pickle():
    """Import ``_pickle`` (``pickle``'s C half: see _worker.py) without
    ``functools``, when that is not loaded yet (3.13+, whose ``threading``
    no longer imports it).

    ``_pickle`` takes only ``partial`` from ``functools``, and that is
    ``_functools.partial``, re-exported; the real ``functools`` would cost
    about 3 ms more (with ``collections``), for nothing here.  A stand-in
    module holding just ``partial`` serves ``_pickle``'s initialization -
    nothing else runs meanwhile: the modules it imports besides are loaded
    first - and is dropped right after, so a later ``import functools``
    loads the real one.  Should some ``_pickle`` want more of ``functools``,
    it is imported the ordinary way."""
    if "functools" not in sys.modules:
        import _compat_pickle  # noqa: F401
        import _functools  # type: ignore[import-not-found]  # no stub
        import copyreg  # noqa: F401

        stand_in = type(sys)("functools")
        stand_in.partial = _functools.partial
        sys.modules["functools"] = stand_in
        try:
            import _pickle
        except (AttributeError, ImportError):
            pass                 # it wants more: imported below
        finally:
            del sys.modules["functools"]
    import _pickle  # noqa: F401


_import_pickle()

# Plain ``python -c``, without -S or -I: the zygote, and the workers forked
# from it, must see site-packages as the caller does (.pth files, editable
# installs), to import the modules that tasks need.  The loaders come from
# the import system's own modules, loaded at start: ``importlib.util`` would
# cost a millisecond more.
BOOTSTRAP = """
import _frozen_importlib as bootstrap, _frozen_importlib_external as external
import os, sys
spec = external.spec_from_file_location("gilfree._core", sys.argv[2])
core = bootstrap.module_from_spec(spec)
sys.modules["gilfree._core"] = core
os.environ["GILFREE_LEAN_CORE"] = "1"
spec.loader.exec_module(core)
del os.environ["GILFREE_LEAN_CORE"]
spec = external.spec_from_file_location("gilfree._zygote", sys.argv[3])
zygote = bootstrap.module_from_spec(spec)
spec.loader.exec_module(zygote)
zygote.main(int(sys.argv[1]), core)
"""

_REQUEST_SIZE = 8                # ('S', worker index): two C ints
_FD_SIZE = 4                     # a descriptor in SCM_RIGHTS: a C int


def _recv_request(ctl):
    """A request and the descriptors that came with it; (b"", []) at end
    of file.  What ``socket.recv_fds`` does, on the bare ``_socket``."""
    try:
        msg, ancillary, _, _ = ctl.recvmsg(_REQUEST_SIZE,
                                           _socket.CMSG_SPACE(2 * _FD_SIZE))
    except OSError:
        return b"", []
    fds = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += memoryview(data[:len(data) - len(data) % _FD_SIZE]).cast("i")
    return msg, fds


def _reply(ctl, value):
    """Answer a request: the new pid, or -errno."""
    ctl.send(value.to_bytes(4, sys.byteorder, signed=True))


def _child(core, ctl, wake_r, wake_w, chan_fd, sock_fd, others, zygote_pid):
    """In a new worker: drop the zygote's descriptors, serve, exit."""
    status = 1
    try:
        _signal.set_wakeup_fd(-1)
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
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
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    ctl = _socket.socket(fileno=ctl_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(wake_w)
    _signal.signal(_signal.SIGCHLD, lambda *_: None)
    children = {}                # pid -> its channel's descriptor
    while True:
        readable, _, _ = select.select([ctl_fd, wake_r], [], [])
        if wake_r in readable:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            _reap(core, children, block=False)
        if ctl_fd not in readable:
            continue
        msg, fds = _recv_request(ctl)
        if not msg:
            break                # end of file: the parent is gone or done
        if len(fds) != 2 or len(msg) != _REQUEST_SIZE:
            for fd in fds:
                os.close(fd)
            _reply(ctl, -22)     # EINVAL
            continue
        chan_fd, sock_fd = fds
        zygote_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError as e:
            os.close(chan_fd)
            os.close(sock_fd)
            _reply(ctl, -(e.errno or 12))
            continue
        if pid == 0:
            _child(core, ctl, wake_r, wake_w, chan_fd, sock_fd, list(children.values()),
                   zygote_pid)
        os.close(sock_fd)
        children[pid] = chan_fd
        _reply(ctl, pid)
    for pid in children:
        try:
            os.kill(pid, _signal.SIGKILL)
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
