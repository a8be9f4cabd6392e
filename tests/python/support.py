"""Small helpers shared by the test modules (fixtures live in conftest.py)."""

import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# The generous timeout every blocking call in the suite passes, so that a bug
# makes a test fail instead of hanging it. No test asserts a duration.
T = 30.0

# How long an exiting thread may take to disappear from /proc.
LEAK_GRACE_S = 10.0

# Threads that live for the whole process by design, so the leak check lets
# them appear (by their OS names, which the contract does not fix yet):
# - gilfree.native's pool (src/runtime/gf_native_pool.c): started on first
#   use, no shutdown, workers named gf-native_<n>;
# - the per-interpreter "bridge" that finishes native futures someone waits
#   on (src/gilfree/_core/native.c): one worker, gilfree-bridge truncated by
#   the 15-byte OS limit to gilfree-bri_0.
PROCESS_WIDE_THREADS = ("gf-native_", "gilfree-bri")


def os_threads():
    """The ids of this process's OS threads (C workers included)."""
    return set(os.listdir("/proc/self/task"))


def leakable_threads():
    """os_threads() less the process-wide ones (PROCESS_WIDE_THREADS)."""
    return {t for t in os_threads() if not thread_comm(t).startswith(PROCESS_WIDE_THREADS)}


def thread_comm(tid):
    """The OS name of thread ``tid`` of this process (15 bytes at most)."""
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "<gone>"


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def fd_target(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "<gone>"


def wait_until(predicate, timeout=T, interval=0.005):
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def subprocess_env():
    """The environment for a ``python -c`` subprocess: it can import tasks and gilfree."""
    env = dict(os.environ)
    paths = [HERE] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONFAULTHANDLER"] = "1"  # a crash prints the C-level stacks
    # Debug allocators fill freed memory with a pattern: a use-after-free in
    # gilfree's C code (say, at interpreter exit) crashes every time instead
    # of depending on the memory layout of the run.
    env["PYTHONMALLOC"] = "debug"
    env.pop("PYTHONWARNINGS", None)
    return env


def describe(proc):
    """A failure message that shows everything a subprocess said."""
    return f"returncode={proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
