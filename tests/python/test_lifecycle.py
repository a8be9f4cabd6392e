"""Lifecycle that only a fresh interpreter can show: exit, fork, Ctrl-C.

Each test runs ``python -c`` with a generous timeout (see the ``run_python``
fixture) and asserts on its exit code and output, so that a hang or a crash
in gilfree fails one test instead of the whole run.
"""

import textwrap

import pytest

from backends import CF, MP, PoolCase, cross, requires
from support import describe

# Prepended to every script: the pool under test is made by POOL(workers).
PRELUDE = """\
import os, signal, sys, threading, time
import tasks
tasks.WAIT_S = 15.0  # a gate nobody opens fails the task, well before the test's timeout
{imports}
def POOL(workers):
    return {pool_expr}
"""

# Presses Ctrl-C the way a terminal does: SIGINT to the whole process, not to
# one thread, a moment after the main thread has started to block.
#
# "Promptly" needs one loose bound: a wait that only notices the signal when
# its own timeout expires (20 s) would still end in KeyboardInterrupt, so the
# script also reports how long the interrupt took, and anything over 10 s
# (against 0.3 s expected) counts as not interrupted.
CTRL_C = """\
def press_ctrl_c_soon():
    def press():
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)
    presser = threading.Thread(target=press)
    presser.start()
    return presser, time.monotonic()

def interrupted(since):
    waited = time.monotonic() - since
    print("interrupted" if waited < 10 else f"LATE INTERRUPT after {waited:.1f}s")
"""


class SubprocessCase(PoolCase):
    def script(self, body):
        prelude = PRELUDE.format(imports=self.imports, pool_expr=self.pool_expr("workers"))
        return prelude + CTRL_C + textwrap.dedent(body)

    def check(self, proc, *expected_lines):
        assert proc.returncode == 0, describe(proc)
        lines = proc.stdout.splitlines()
        for line in expected_lines:
            assert line in lines, f"missing {line!r}\n{describe(proc)}"
        assert "Traceback" not in proc.stderr and "Fatal Python error" not in proc.stderr, describe(proc)
        return lines


class LifecycleBehaviour(SubprocessCase):
    vocab = CF

    def test_exit_with_an_idle_live_pool(self, run_python):
        proc = run_python(self.script("""
            pool = POOL(2)
            assert pool.submit(tasks.square, 3).result(timeout=15) == 9
            print("main exits")
        """))
        self.check(proc, "main exits")

    def test_exit_right_after_shutdown_without_wait(self, run_python):
        proc = run_python(self.script("""
            pool = POOL(1)
            started = threading.Event()
            pool.submit(tasks.start_sleep_then_write, started, 0.2, "task finished\\n")
            assert started.wait(15)
            pool.shutdown(wait=False)
            tasks.write_stdout("main exits\\n")
        """))
        self.check(proc, "main exits", "task finished")

    @requires("exit_completes_work")
    def test_exit_with_live_pool_and_pending_work(self, run_python):
        proc = run_python(self.script("""
            pool = POOL(1)
            pool.submit(tasks.sleep_then_write, 0.2, "first\\n")
            for i in range(5):
                pool.submit(tasks.write_stdout, f"pending {i}\\n")
            tasks.write_stdout("main exits\\n")
            # no shutdown: the interpreter exits with one task running, five queued
        """))
        lines = self.check(proc, "main exits", "first", *[f"pending {i}" for i in range(5)])
        assert lines.index("main exits") < lines.index("pending 4"), describe(proc)

    @requires("exit_completes_work")
    def test_exit_while_a_task_is_running(self, run_python):
        proc = run_python(self.script("""
            pool = POOL(2)
            started = threading.Event()
            pool.submit(tasks.start_sleep_then_write, started, 0.3, "task finished\\n")
            assert started.wait(15)
            tasks.write_stdout("main exits\\n")
        """))
        lines = self.check(proc, "main exits", "task finished")
        assert lines.index("main exits") < lines.index("task finished")

    def test_submit_from_atexit_is_refused(self, run_python):
        # atexit handlers run after threading's shutdown hooks, where the
        # stdlib's executors stop: submitting then must fail, not hang.
        proc = run_python(self.script("""
            import atexit
            pool = POOL(1)
            assert pool.submit(tasks.square, 2).result(timeout=15) == 4
            def late():
                try:
                    f = pool.submit(tasks.square, 3)
                    print("accepted", f.result(timeout=15))
                except RuntimeError:
                    print("refused")
            atexit.register(late)
        """))
        self.check(proc, "refused")

    def test_ctrl_c_while_blocked_in_result(self, run_python):
        proc = run_python(self.script("""
            pool = POOL(1)
            gate = threading.Event()
            blocker = pool.submit(tasks.wait_event, gate, "blocker")
            target = pool.submit(tasks.identity, 42)  # queued behind the blocker
            try:
                presser, since = press_ctrl_c_soon()
                target.result(timeout=20)
                print("NOT INTERRUPTED: result returned")
            except KeyboardInterrupt:
                interrupted(since)
            except TimeoutError:
                print("NOT INTERRUPTED: result timed out")
            presser.join()
            gate.set()
            print("target", target.result(timeout=15))
            print("again", pool.submit(tasks.square, 4).result(timeout=15))
            pool.shutdown(wait=True)
            print("clean")
        """))
        self.check(proc, "interrupted", "target 42", "again 16", "clean")

    @requires("ctrl_c_at_once")
    def test_ctrl_c_as_the_wait_starts(self, run_python):
        # The signal lands while result() may still spin before it sleeps:
        # its C handler then runs on a thread that is not asleep, and a
        # wait that goes to sleep without looking held Ctrl-C until the
        # result came (most of these trials, before the fix).  The presser
        # holds the GIL until it presses, so it presses after result() has
        # let the GIL go: 0 to 1.5 ms into the wait.
        proc = run_python(self.script("""
            import _thread
            pool = POOL(1)
            late = []
            for trial in range(30):
                gate, go = threading.Event(), _thread.allocate_lock()
                go.acquire()
                def press(delay=trial * 50e-6):
                    go.acquire()
                    end = time.perf_counter() + delay
                    while time.perf_counter() < end:
                        pass
                    os.kill(os.getpid(), signal.SIGINT)
                presser = threading.Thread(target=press)
                presser.start()
                blocker = pool.submit(tasks.wait_event, gate, "blocker")
                since = time.monotonic()
                try:
                    go.release()
                    blocker.result(timeout=5)
                    late.append((trial, "not interrupted"))
                except KeyboardInterrupt:
                    if time.monotonic() - since > 2:
                        late.append((trial, f"{time.monotonic() - since:.1f}s"))
                presser.join()
                gate.set()
                assert blocker.result(timeout=15) == "blocker"
            print("late", late)
            pool.shutdown(wait=True)
            print("clean")
        """))
        self.check(proc, "late []", "clean")

    def test_ctrl_c_while_blocked_in_map(self, run_python):
        proc = run_python(self.script("""
            pool = POOL(1)
            gate = threading.Event()
            try:
                presser, since = press_ctrl_c_soon()
                list(pool.map(tasks.wait_event, [gate, gate, gate], timeout=20))
                print("NOT INTERRUPTED: map returned")
            except KeyboardInterrupt:
                interrupted(since)
            except TimeoutError:
                print("NOT INTERRUPTED: map timed out")
            presser.join()
            gate.set()
            print("again", list(pool.map(tasks.square, range(4), timeout=15)))
            pool.shutdown(wait=True)
            print("clean")
        """))
        self.check(proc, "interrupted", "again [0, 1, 4, 9]", "clean")

    def test_ctrl_c_while_blocked_in_shutdown(self, run_python):
        proc = run_python(self.script("""
            pool = POOL(1)
            gate = threading.Event()
            running = pool.submit(tasks.wait_event, gate, "finished")
            try:
                presser, since = press_ctrl_c_soon()
                pool.shutdown(wait=True)
                print("NOT INTERRUPTED: shutdown returned")
            except KeyboardInterrupt:
                interrupted(since)
            presser.join()
            gate.set()
            print("running", running.result(timeout=15))
            pool.shutdown(wait=True)
            print("clean")
        """))
        self.check(proc, "interrupted", "running finished", "clean")

    @requires("fork_safe", "fork_keeps_running_tasks")
    def test_fork_with_a_live_pool(self, run_python):
        proc = run_python(self.script("""
            import warnings
            from concurrent.futures.thread import BrokenThreadPool
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process
            pool = POOL(1)
            assert pool.submit(tasks.square, 3).result(timeout=15) == 9  # the workers are up
            started, gate = threading.Event(), threading.Event()
            running = pool.submit(tasks.start_and_wait, started, gate, "parent")
            queued = pool.submit(tasks.identity, "queued")
            assert started.wait(15)
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                status = 3
                try:
                    print("child square", pool.submit(tasks.square, 7).result(timeout=15))
                    print("child map", list(pool.map(tasks.square, range(4))))
                    for name, f in (("running", running), ("queued", queued)):
                        try:
                            f.result(timeout=15)
                            print("child", name, "NOT BROKEN")
                        except BrokenThreadPool:
                            print("child", name, "broken")
                    pool.shutdown(wait=True)
                    print("child clean")
                    status = 0
                finally:
                    sys.stdout.flush()
                sys.exit(status)  # through the normal interpreter exit
            tasks.wait_for_child(pid)
            gate.set()
            print("parent", running.result(timeout=15), queued.result(timeout=15))
            pool.shutdown(wait=True)
            print("parent clean")
        """))
        self.check(
            proc,
            "child square 49",
            "child map [0, 1, 4, 9]",
            "child running broken",
            "child queued broken",
            "child clean",
            "child exit code 0",
            "parent parent queued",
            "parent clean",
        )


class MpLifecycleBehaviour(SubprocessCase):
    vocab = MP

    def test_ctrl_c_while_blocked_in_get(self, run_python):
        proc = run_python(self.script("""
            import multiprocessing
            pool = POOL(1)
            gate = threading.Event()
            r = pool.apply_async(tasks.wait_event, (gate, 42))
            try:
                presser, since = press_ctrl_c_soon()
                r.get(timeout=20)
                print("NOT INTERRUPTED: get returned")
            except KeyboardInterrupt:
                interrupted(since)
            except multiprocessing.TimeoutError:
                print("NOT INTERRUPTED: get timed out")
            presser.join()
            gate.set()
            print("result", r.get(timeout=15))
            pool.close()
            pool.join()
            print("clean")
        """))
        self.check(proc, "interrupted", "result 42", "clean")

    def test_ctrl_c_while_blocked_in_map(self, run_python):
        proc = run_python(self.script("""
            pool = POOL(1)
            gate = threading.Event()
            try:
                presser, since = press_ctrl_c_soon()
                pool.map(tasks.wait_event, [gate, gate, gate])
                print("NOT INTERRUPTED: map returned")
            except KeyboardInterrupt:
                interrupted(since)
            except RuntimeError as e:  # tasks.wait_event gave up: nobody interrupted map
                print("NOT INTERRUPTED:", e)
            presser.join()
            gate.set()
            print("again", pool.map(tasks.square, range(4)))
            print("imap", list(pool.imap(tasks.square, range(3))))
            pool.close()
            pool.join()
            print("clean")
        """))
        self.check(proc, "interrupted", "again [0, 1, 4, 9]", "imap [0, 1, 4]", "clean")

    def test_ctrl_c_while_blocked_in_imap(self, run_python):
        proc = run_python(self.script("""
            pool = POOL(1)
            gate = threading.Event()
            got = []
            try:
                presser, since = press_ctrl_c_soon()
                for value in pool.imap(tasks.wait_event, [gate, gate], 1):
                    got.append(value)
                print("NOT INTERRUPTED: imap finished")
            except KeyboardInterrupt:
                interrupted(since)
            except RuntimeError as e:
                print("NOT INTERRUPTED:", e)
            presser.join()
            gate.set()
            print("got", got)
            print("again", list(pool.imap_unordered(tasks.square, [3])))
            pool.close()
            pool.join()
            print("clean")
        """))
        self.check(proc, "interrupted", "got []", "again [9]", "clean")

    def test_exit_after_close_without_join(self, run_python):
        proc = run_python(self.script("""
            pool = POOL(2)
            assert pool.apply(tasks.square, (3,)) == 9
            pool.close()
            print("main exits")
        """))
        self.check(proc, "main exits")

    @requires("exit_completes_work")
    def test_exit_with_live_pool_and_pending_apply_async(self, run_python):
        proc = run_python(self.script("""
            pool = POOL(1)
            pool.apply_async(tasks.sleep_then_write, (0.2, "first\\n"))
            for i in range(3):
                pool.apply_async(tasks.write_stdout, (f"pending {i}\\n",))
            tasks.write_stdout("main exits\\n")
        """))
        self.check(proc, "main exits", "first", "pending 0", "pending 1", "pending 2")


cross(globals(), LifecycleBehaviour, MpLifecycleBehaviour)

pytestmark = pytest.mark.timeout(120)
