"""Shared fixtures for the Python suite.

Every test runs under two teardown checks, because gilfree's workers are C
threads that ``threading.enumerate()`` cannot see:

* ``no_thread_leak``: the OS threads of this process (``/proc/self/task``)
  after the test must be the ones that were there before it (less the
  process-wide native pool, see support.PROCESS_WIDE_THREADS).
* ``no_fd_leak``: likewise for open file descriptors (``/proc/self/fd``).

Something on its way out gets a grace period; what is still there after it
fails the test at teardown, named (the thread's OS name, the fd's target).
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# The helper modules (support, tasks, backends) must import under any
# --import-mode, and from the subprocesses the lifecycle tests start.
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from support import (  # noqa: E402
    LEAK_GRACE_S,
    describe_thread,
    fd_target,
    leakable_threads,
    open_fds,
    subprocess_env,
    wait_until,
)

# How long a subprocess may run before it is declared hung.
SUBPROCESS_TIMEOUT_S = 60.0


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "reference: a behaviour suite run against a stdlib pool, to validate the tests themselves "
        "(deselect with -m 'not reference')",
    )
    if not config.pluginmanager.hasplugin("timeout"):
        # pytest-timeout is in the project's test requirements; register the
        # marker anyway so that the suite still collects without it.
        config.addinivalue_line("markers", "timeout(seconds): per-test timeout (pytest-timeout)")


def _leftovers(snapshot, before):
    wait_until(lambda: not (snapshot() - before), timeout=LEAK_GRACE_S)
    return snapshot() - before


@pytest.fixture(autouse=True)
def no_thread_leak():
    before = leakable_threads()
    yield
    extra = _leftovers(leakable_threads, before)
    if extra:
        names = "\n".join(describe_thread(tid) for tid in sorted(extra))
        pytest.fail(f"threads leaked by this test (still alive {LEAK_GRACE_S}s after it):\n{names}")


@pytest.fixture(autouse=True)
def no_fd_leak(no_thread_leak):
    # Requests no_thread_leak so that it is checked after the threads that
    # might still be closing descriptors are gone.
    before = open_fds()
    yield
    extra = _leftovers(open_fds, before)
    if extra:
        pytest.fail(f"file descriptors leaked by this test: {sorted((fd, fd_target(fd)) for fd in extra)}")


@pytest.fixture
def run_python():
    """Run ``sys.executable -c code`` from tests/python; a hang fails the test with what it printed."""

    def run(code, timeout=SUBPROCESS_TIMEOUT_S):
        try:
            return subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=subprocess_env(),
                cwd=HERE,
            )
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr
            pytest.fail(f"subprocess hung (killed after {timeout}s)\n--- stdout\n{out}\n--- stderr\n{err}")

    return run
