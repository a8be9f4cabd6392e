"""Small helpers shared by the test modules (fixtures live in conftest.py)."""

import os
import shutil
import subprocess
import sys
import threading
import time
import traceback

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


def task_file(tid, entry, missing="?"):
    """/proc/self/task/<tid>/<entry>, stripped; ``missing`` once the thread is gone."""
    try:
        with open(f"/proc/self/task/{tid}/{entry}") as f:
            return f.read().strip()
    except OSError:
        return missing


def thread_comm(tid):
    """The OS name of thread ``tid`` of this process (15 bytes at most)."""
    return task_file(tid, "comm", "<gone>")


def describe_thread(tid):
    """What a leaked thread is: OS name, state, wait channel and, for a Python
    thread, its name and stack, else its C stack. Enough to tell who
    started it."""
    state = task_file(tid, "stat").rpartition(")")[2].split()[:1]
    text = f"{tid}:{thread_comm(tid)} (state {''.join(state) or '?'}, wchan {task_file(tid, 'wchan')})"
    for thread in threading.enumerate():
        if str(thread.native_id) == tid:
            frame = sys._current_frames().get(thread.ident)
            stack = "".join(traceback.format_stack(frame)) if frame else ""
            return text + f" Python thread {thread.name!r}, target {getattr(thread, '_target', None)!r}\n{stack}"
    return text + " not a Python thread; C stack:\n" + c_stack(tid)


def c_stack(tid):
    """The C stack of thread ``tid`` of this process (its bottom frame names
    the code that started it), from gdb where there is one."""
    if not shutil.which("gdb"):
        return "(no gdb to show it)"
    try:
        out = subprocess.run(
            ["gdb", "-p", str(os.getpid()), "-batch", "-nx",
             "-ex", "set pagination off", "-ex", "thread apply all bt"],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(gdb failed: {e})"
    # gdb names threads "Thread 0x... (LWP <tid>)"; keep that one's block.
    blocks = out.split("\nThread ")
    return next((b for b in blocks if f"(LWP {tid})" in b), "(gdb did not list it)")


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
