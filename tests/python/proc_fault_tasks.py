"""Tasks for the process backend's fault suite (test_process_faults.py).

Every callable here is module-level, so a worker process imports it by
reference (tests/python is on the workers' sys.path, which they inherit
from the parent). Tasks that take a ``pidfile`` write their worker's pid to
it before doing anything else, so the test learns which process ran (and
died) without needing the task's result.

The last section holds /proc helpers that the scenario scripts (and the
test module itself) use to find a process's descendants and to tell whether
a process is gone; they run in the parent, never in a worker.
"""

import os
import signal
import threading
import time


def _disable_core_dumps():
    """A crash on purpose must not write (or wait for) a core file."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass


def _write_pid(pidfile):
    if pidfile is not None:
        tmp = f"{pidfile}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()} {os.getppid()}")
        os.replace(tmp, pidfile)  # readers never see a half-written file


def read_pidfile(pidfile, timeout=30.0):
    """(pid, ppid) a task wrote to ``pidfile``; waits for the file to appear."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(pidfile):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no task wrote {pidfile} within {timeout}s")
        time.sleep(0.005)
    with open(pidfile) as f:
        pid, ppid = f.read().split()
    return int(pid), int(ppid)


# -- normal work ---------------------------------------------------------------


def square(x):
    return x * x


def square_and_pid(x):
    return x * x, os.getpid()


def pid_info(_item=None):
    """(worker pid, its parent's pid: the zygote, per the contract)."""
    return os.getpid(), os.getppid()


def sleep_for(seconds):
    """One argument, for map: sleep, then return ``seconds``."""
    time.sleep(seconds)
    return seconds


def sleep_then_return(seconds, value):
    time.sleep(seconds)
    return value


def write_pid_then_sleep(pidfile, seconds, value=None):
    _write_pid(pidfile)
    time.sleep(seconds)
    return value


# -- the worker dies -----------------------------------------------------------


def exit_with(code, pidfile=None):
    """``os._exit(code)``: no cleanup, no exception, the process just ends."""
    _write_pid(pidfile)
    os._exit(code)


def kill_self(signum, pidfile=None):
    """Send ``signum`` to this worker (SIGKILL cannot be caught)."""
    _disable_core_dumps()
    _write_pid(pidfile)
    if signum not in (signal.SIGKILL, signal.SIGSTOP):  # these have no handler
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(30)  # the signal is delivered before this returns
    return "still alive"


def segfault(pidfile=None):
    """Crash with SIGSEGV the way a broken C extension does."""
    _disable_core_dumps()
    _write_pid(pidfile)
    import faulthandler

    if hasattr(faulthandler, "_sigsegv"):
        faulthandler._sigsegv()
    import ctypes

    ctypes.string_at(0)
    return "still alive"


def abort(pidfile=None):
    _disable_core_dumps()
    _write_pid(pidfile)
    os.abort()


CRASHES = {
    # name: (task, args, expected exitcode, what the message must name)
    "exit3": (exit_with, (3,), 3, r"\b3\b"),
    "sigkill": (kill_self, (signal.SIGKILL,), -signal.SIGKILL, "SIGKILL"),
    "sigsegv": (segfault, (), -signal.SIGSEGV, "SIGSEGV"),
    "sigabrt": (abort, (), -signal.SIGABRT, "SIGABRT"),
}


# -- what does not pickle --------------------------------------------------------


def make_lock(_item=None):
    """A result that cannot be pickled in the worker."""
    return threading.Lock()


def _refuse_to_unpickle(message):
    raise RuntimeError(f"refusing to unpickle: {message}")


class UnpicklesBadly:
    """Pickles fine; unpickling it (in the other process) raises RuntimeError."""

    def __init__(self, message="no"):
        self.message = message

    def __reduce__(self):
        return (_refuse_to_unpickle, (self.message,))


def make_unpickles_badly(_item=None):
    """A result that pickles in the worker but cannot be unpickled in the parent."""
    return UnpicklesBadly("result")


def take(arg):
    """Receives ``arg`` (to test arguments that fail to cross) and returns a tag."""
    return f"got {type(arg).__name__}"


# -- exceptions ----------------------------------------------------------------


class TaskError(Exception):
    """An exception type of this module, to check the caller gets the same type."""


def raise_task_error(message):
    raise TaskError(message)


# -- initializers ----------------------------------------------------------------

_token = None


def init_fail():
    raise RuntimeError("initializer failed on purpose")


def init_token(token):
    global _token
    _token = token


def get_token(_item=None):
    return _token


# -- /proc helpers (run in the parent) --------------------------------------------


def proc_stat(pid):
    """(state, ppid, starttime) of ``pid``, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def proc_table():
    """{pid: (state, ppid)} for every process this machine shows us."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(name)
            if stat is not None:
                table[int(name)] = stat[:2]
    return table


def descendants(root=None):
    """{pid: state} of every process whose parent chain leads to ``root``
    (default: this process), zombies included."""
    root = os.getpid() if root is None else root
    table = proc_table()
    children = {}
    for pid, (_state, ppid) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found[child] = table[child][0]
                todo.append(child)
    return found


def is_gone(pid, starttime=None):
    """True if ``pid`` has exited: no /proc entry, a zombie (it exited and
    nobody reaped it yet), or the pid now names another process."""
    stat = proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return True
    return starttime is not None and stat[2] != starttime


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "<gone>"


# -- /dev/shm: who holds what ---------------------------------------------------------

SHM = "/dev/shm"


def shm_held_by(pids):
    """The /dev/shm paths that processes ``pids`` have open (fds) or mapped;
    a mapped one that was unlinked already ends with " (deleted)"."""
    held = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(SHM + "/"):
                    held.add(target)
        except OSError:
            pass
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    fields = line.split(None, 5)  # the 6th, the path, may hold spaces
                    if len(fields) == 6 and fields[5].startswith(SHM + "/"):
                        held.add(fields[5].rstrip("\n"))  # "... (deleted)" if unlinked
        except OSError:
            pass
    return held


def foreign_shm(names, ours):
    """Those of the /dev/shm entries ``names`` that belong to some other
    program running on this machine at the same time, not to the process
    tree ``ours`` (pids): an entry that a process outside ``ours`` holds
    (open or mapped, itself or a file under it), or whose name carries the
    pid of a live process outside ``ours`` (as joblib's and loky's do).
    An entry nobody holds and that names no foreign process counts as ours."""
    if not names:
        return set()
    ours = set(ours)
    others = [pid for pid in proc_table() if pid not in ours]
    held = shm_held_by(others)
    live_others = {str(pid) for pid in others}
    foreign = set()
    for name in names:
        path = f"{SHM}/{name}"
        held_by_others = any(h == path or h.startswith(path + "/") for h in held)
        names_another = any(len(run) >= 3 and run in live_others for run in _digit_runs(name))
        if held_by_others or names_another:
            foreign.add(name)
    return foreign


def _digit_runs(text):
    run = ""
    for ch in text + " ":
        if ch.isdigit():
            run += ch
        elif run:
            yield run
            run = ""
