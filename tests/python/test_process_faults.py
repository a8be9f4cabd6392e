"""The process backend's fault suite (issue #4).

Faults must fail only their own task, with the pool still serving, and
nothing may leak. Every scenario that involves a process pool runs in its
own Python subprocess with a hard timeout, so a crash or hang in the backend
fails one test, not the session. A scenario script is PRELUDE (imports and
the leak counters) followed by the scenario's body; it prints one line
``RESULT {json}`` that the test asserts on. Each one

* takes a ``snapshot()`` of its descendants (zombies included), OS threads,
  open file descriptors and /dev/shm before it creates a pool;
* checks that the pool still serves after the fault (``serves(pool)``);
* shuts the pool down and reports ``leaks(before)``: what is there now that
  was not before, after a grace period; the test requires it to be empty.

Nothing here skips: on a gilfree without the backend every test fails.

The tasks live in proc_fault_tasks.py (workers import them by reference).
"""

import concurrent.futures
import concurrent.futures.process
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import proc_fault_tasks as pft
import pytest
from support import subprocess_env, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))

# How long one scenario may run before it is declared hung (and killed,
# with everything it started).
SCENARIO_TIMEOUT_S = 60

# pytest-timeout backstop: above the scenario timeout plus the clean-up.
pytestmark = pytest.mark.timeout(SCENARIO_TIMEOUT_S + 60)

# The shared start of every scenario script: imports, the leak counters and
# the helpers that turn outcomes into JSON. The scenario's parameters are
# assigned (as Python literals) between this and the body; TMP is a fresh
# directory for pid files.
PRELUDE = r'''
import concurrent.futures, concurrent.futures.process, json, multiprocessing, os, pickle
import signal, sys, threading, time

import gilfree
import gilfree._interpreters
import proc_fault_tasks as pft
import tasks
from support import fd_target, leakable_threads, open_fds, thread_comm, wait_until

# AttributeError here, until the process backend lands: the test fails.
ProcessPoolExecutor = gilfree.ProcessPoolExecutor
BrokenProcessPool = gilfree.BrokenProcessPool
WorkerCrashedError = gilfree.WorkerCrashedError
RemoteTraceback = gilfree._interpreters.RemoteTraceback
STDLIB_BROKEN = concurrent.futures.process.BrokenProcessPool

T = 30.0  # every blocking call's timeout: a bug fails, it does not hang
TMP = sys.argv[1]


def our_processes():
    return {os.getpid(), *pft.descendants()}


# /dev/shm paths our processes held at some point while a pool served
# (serves() looks): gilfree uses memfd, so this must stay empty. It catches
# what the before/after diff of /dev/shm cannot tell apart from the entries
# other programs on the machine create meanwhile.
SHM_HELD = set()


def snapshot():
    """What a pool could leak: descendants (zombies too), OS threads, fds, /dev/shm."""
    return {
        "children": set(pft.descendants()),
        "threads": leakable_threads(),
        "fds": open_fds(),
        "shm": set(os.listdir(pft.SHM)),
        "shm_held": pft.shm_held_by(our_processes()),
    }


def _extra(before):
    now = snapshot()
    new_shm = now["shm"] - before["shm"]
    return {
        "children": sorted(
            f"{pid} state={(pft.proc_stat(pid) or ('gone',))[0]} {pft.cmdline(pid)!r}"
            for pid in now["children"] - before["children"]),
        "threads": sorted(f"{tid}:{thread_comm(tid)}" for tid in now["threads"] - before["threads"]),
        # an fd that is already closed again was listdir's own
        "fds": sorted(f"{fd}->{fd_target(fd)}" for fd in now["fds"] - before["fds"]
                      if fd_target(fd) != "<gone>"),
        "shm": sorted(new_shm - pft.foreign_shm(new_shm, our_processes())),
        "shm_used_while_serving": sorted((now["shm_held"] | SHM_HELD) - before["shm_held"]),
    }


def leaks(before, grace=10.0):
    """What is still there ``grace`` seconds after shutdown that was not ``before``
    (and /dev/shm entries our processes held while the pool served)."""
    deadline = time.monotonic() + grace
    extra = _extra(before)
    while any(extra.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
        extra = _extra(before)
    if extra["shm"]:
        # A leaked entry stays; other programs' entries (multiprocessing's
        # sem.mp-* live as long as their pool) come and go: keep only what
        # is still there, and still not theirs, a second later.
        time.sleep(1.0)
        extra["shm"] = sorted(set(extra["shm"]) & set(_extra(before)["shm"]))
    return {kind: what for kind, what in extra.items() if what}


def exc_info(exc):
    cause = exc.__cause__
    return {
        "ok": False,
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "msg": str(exc),
        "exitcode": getattr(exc, "exitcode", None),
        "pid": getattr(exc, "pid", None),
        "is_stdlib_broken": isinstance(exc, STDLIB_BROKEN),
        "is_broken": isinstance(exc, BrokenProcessPool),
        "is_crashed": isinstance(exc, WorkerCrashedError),
        "is_timeout": isinstance(exc, TimeoutError),
        "is_pickling": isinstance(exc, (TypeError, pickle.PicklingError, AttributeError)),
        "cause_type": None if cause is None else type(cause).__qualname__,
        "cause_is_remote": isinstance(cause, RemoteTraceback),
        "cause": None if cause is None else str(cause),
    }


def attempt(fn, *args, **kwargs):
    """{"ok": True, "value": ...} or exc_info(the exception fn raised).

    BaseException too: a task's KeyboardInterrupt or SystemExit comes back
    as its outcome (the Ctrl-C scenarios catch their own around map)."""
    try:
        return {"ok": True, "value": fn(*args, **kwargs)}
    except BaseException as exc:
        return exc_info(exc)


def submit(pool, fn, *args, **kwargs):
    """pool.submit, except that if submit raises, the returned future holds
    that exception: a broken pool becomes a failed assertion in the test,
    not a traceback in the scenario."""
    try:
        return pool.submit(fn, *args, **kwargs)
    except Exception as exc:
        failed = concurrent.futures.Future()
        failed.set_exception(exc)
        return failed


def results(futures):
    return [attempt(f.result, timeout=T) for f in futures]


def call(pool, fn, *args):
    """Submit and wait: one outcome, whether submit or the task failed."""
    return attempt(lambda: pool.submit(fn, *args).result(timeout=T))


def serves(pool):
    """Does the pool still run a normal task? (expected: {"ok": True, "value": 49})
    Also notes which /dev/shm entries our processes hold now (SHM_HELD)."""
    outcome = call(pool, pft.square, 7)
    SHM_HELD.update(pft.shm_held_by(our_processes()))
    return outcome


def make_pool(api, workers=2, **kwargs):
    if api == "executor":
        return ProcessPoolExecutor(max_workers=workers, **kwargs)
    return gilfree.Pool(workers, backend="processes", **kwargs)


def pidfile(name):
    return os.path.join(TMP, name)


def emit(**result):
    print("RESULT " + json.dumps(result, default=repr), flush=True)

'''


# -- running a scenario ----------------------------------------------------------


def _kill_everything(proc, known=None):
    """Kill a scenario and whatever it started: its process group, its
    descendants, and ``known`` ({pid: starttime}, processes seen earlier
    that may have left both; each killed only if it is still that process)."""
    targets = dict(known or {})
    if proc.poll() is None:
        targets.update({pid: (pft.proc_stat(pid) or (0, 0, None))[2] for pid in pft.descendants(proc.pid)})
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid, start in targets.items():
        if start is not None and not pft.is_gone(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait()


def start_scenario(tmp_path, body, **params):
    """Start PRELUDE + params + body (dedented) in a subprocess of its own session
    (so that a Ctrl-C it sends its process group reaches no one else);
    stdout and stderr go to files in tmp_path (no pipe can keep it alive)."""
    code = PRELUDE + "".join(f"{k} = {v!r}\n" for k, v in params.items()) + textwrap.dedent(body)
    work = tmp_path / "scenario"
    work.mkdir()
    (tmp_path / "scenario.py").write_text(code)  # to read when it fails
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        # -c, not the file: __main__ has no path, so no start method can
        # re-run the scenario in a worker by importing the main module.
        return subprocess.Popen(
            [sys.executable, "-c", code, str(work)],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            env=subprocess_env(), cwd=HERE, start_new_session=True,
        )


def _output(tmp_path):
    return (tmp_path / "stdout").read_text(errors="replace"), (tmp_path / "stderr").read_text(errors="replace")


def _describe(proc, tmp_path):
    out, err = _output(tmp_path)
    return f"returncode={proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err[-20000:]}"


def run_scenario(tmp_path, body, *, crashy=False, timeout=SCENARIO_TIMEOUT_S, **params):
    """Run a scenario to its end; return the dict it printed as ``RESULT``.

    It must exit 0 within ``timeout``. ``crashy``: workers die on purpose,
    so a fatal error report from one (faulthandler) is expected on stderr.
    """
    proc = start_scenario(tmp_path, body, **params)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_everything(proc)
        pytest.fail(f"scenario hung (killed after {timeout}s)\n{_describe(proc, tmp_path)}")
    finally:
        if proc.returncode is None:  # interrupted: leave nothing behind
            _kill_everything(proc)
    out, err = _output(tmp_path)
    print(_describe(proc, tmp_path))  # pytest shows it if the test fails
    assert proc.returncode == 0, _describe(proc, tmp_path)
    assert "Exception in thread" not in err, _describe(proc, tmp_path)
    if not crashy:
        assert "Fatal Python error" not in err, _describe(proc, tmp_path)
    results = [line[len("RESULT "):] for line in out.splitlines() if line.startswith("RESULT ")]
    assert results, f"the scenario printed no RESULT line\n{_describe(proc, tmp_path)}"
    return json.loads(results[-1])


def ok(outcome, value):
    assert outcome == {"ok": True, "value": value}, outcome


def assert_serves_and_no_leak(r):
    """The checks every scenario ends with."""
    assert r["serves"] == {"ok": True, "value": 49}, f"the pool no longer serves: {r['serves']}"
    assert r["leaks"] == {}, f"leaked (after shutdown, or /dev/shm used at all): {r['leaks']}"


# -- without a subprocess: the names and the exception hierarchy ---------------------


def test_exception_hierarchy():
    import gilfree

    stdlib = concurrent.futures.process.BrokenProcessPool
    assert issubclass(gilfree.BrokenProcessPool, stdlib)
    assert issubclass(gilfree.WorkerCrashedError, gilfree.BrokenProcessPool)
    assert issubclass(gilfree.WorkerCrashedError, stdlib)
    assert issubclass(gilfree.WorkerCrashedError, Exception)
    assert not issubclass(gilfree.BrokenProcessPool, gilfree.WorkerCrashedError)


def test_the_api_has_the_stdlib_signature_and_the_timeout_extensions():
    import gilfree

    def shape(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    ours = gilfree.ProcessPoolExecutor
    # The stdlib's parameters, in its order, then our keyword-only opt-in.
    extra = ("kill_on_cancel", inspect.Parameter.KEYWORD_ONLY, False)
    assert shape(ours.__init__) == shape(concurrent.futures.ProcessPoolExecutor.__init__) + [extra]
    for name in ("submit", "map", "shutdown", "submit_timeout", "__enter__", "__exit__"):
        assert callable(getattr(ours, name, None)), name
    assert "timeout" in inspect.signature(ours.submit_timeout).parameters
    timeout = inspect.signature(gilfree.Pool.apply_async).parameters.get("timeout")
    assert timeout is not None and timeout.kind is inspect.Parameter.KEYWORD_ONLY
    task_timeout = inspect.signature(gilfree.Pool.map).parameters.get("task_timeout")
    assert task_timeout is not None and task_timeout.kind is inspect.Parameter.KEYWORD_ONLY


# -- 1-3. a worker that dies fails its task only ----------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("crash", sorted(pft.CRASHES))
def test_a_worker_that_dies_fails_only_its_task(tmp_path, crash, workers):
    r = run_scenario(tmp_path, """
        task, args, _, _ = pft.CRASHES[CRASH]
        before = snapshot()
        ex = ProcessPoolExecutor(max_workers=WORKERS)
        ahead = [submit(ex, pft.square, i) for i in range(3)]
        bad = submit(ex, task, *args, pidfile=pidfile("crashed"))
        behind = [submit(ex, pft.square, i) for i in range(10)]  # queued behind it
        bad_outcome = attempt(bad.result, timeout=T)
        crashed_pid = pft.read_pidfile(pidfile("crashed"))[0]
        result = dict(
            bad=bad_outcome,
            crashed_pid=crashed_pid,
            ahead=results(ahead),
            behind=results(behind),
            crashed_worker_gone=wait_until(lambda: pft.is_gone(crashed_pid), timeout=5),
            serves=serves(ex),
        )
        ex.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """, crashy=True, CRASH=crash, WORKERS=workers)
    _, _, exitcode, names = pft.CRASHES[crash]
    bad = r["bad"]
    assert not bad["ok"], f"the task that killed its worker returned: {bad}"
    assert bad["is_crashed"], f"expected gilfree.WorkerCrashedError, got {bad['type']}: {bad['msg']}"
    assert bad["is_broken"] and bad["is_stdlib_broken"], bad
    assert bad["exitcode"] == exitcode, bad
    assert bad["pid"] == r["crashed_pid"], bad
    assert re.search(names, bad["msg"]), f"the message should name {names!r}: {bad['msg']!r}"
    assert r["ahead"] == [{"ok": True, "value": i * i} for i in range(3)]
    assert r["behind"] == [{"ok": True, "value": i * i} for i in range(10)], r["behind"]
    assert r["crashed_worker_gone"]
    assert_serves_and_no_leak(r)


# -- 4. many crashes in a row ---------------------------------------------------------


def test_many_crashes_in_a_row_then_normal_work(tmp_path):
    r = run_scenario(tmp_path, """
        before = snapshot()
        ex = ProcessPoolExecutor(max_workers=2)
        crashes = [submit(ex, pft.exit_with, 3) for _ in range(20)]
        normal = [submit(ex, pft.square, i) for i in range(100)]
        result = dict(
            crashes=[(o["ok"], o.get("is_crashed"), o.get("exitcode")) for o in results(crashes)],
            normal=results(normal),
            # and once more, now that every crash is over
            again=results([submit(ex, pft.square, i) for i in range(100)]),
            serves=serves(ex),
        )
        ex.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """)
    assert r["crashes"] == [[False, True, 3]] * 20, r["crashes"]
    squares = [{"ok": True, "value": i * i} for i in range(100)]
    assert r["normal"] == squares
    assert r["again"] == squares
    assert_serves_and_no_leak(r)


# -- 5. arguments that do not cross ------------------------------------------------------


@pytest.mark.parametrize("api", ["executor", "pool"])
def test_an_unpicklable_argument_fails_only_its_task(tmp_path, api):
    r = run_scenario(tmp_path, """
        before = snapshot()
        pool = make_pool(API)
        first = submit(pool, pft.square, 3)
        try:
            if API == "executor":
                bad = pool.submit(pft.take, threading.Lock())
            else:
                bad = pool.apply_async(pft.take, (threading.Lock(),))
        except Exception as exc:
            bad_outcome = dict(exc_info(exc), at="submit")
        else:
            get = bad.result if API == "executor" else bad.get
            bad_outcome = dict(attempt(get, timeout=T), at="future")
        result = dict(
            bad=bad_outcome,
            first=attempt(first.result, timeout=T),
            after=[call(pool, pft.square, i) for i in range(10)],
            serves=serves(pool),
        )
        pool.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """, API=api)
    bad = r["bad"]
    assert not bad["ok"], f"a threading.Lock argument crossed to a worker: {bad}"
    if bad["at"] == "submit":
        assert bad["is_pickling"], f"submit should raise what pickle raises, got {bad['type']}: {bad['msg']}"
    ok(r["first"], 9)
    assert r["after"] == [{"ok": True, "value": i * i} for i in range(10)]
    assert_serves_and_no_leak(r)


def test_an_argument_that_fails_to_unpickle_in_the_worker_fails_only_its_task(tmp_path):
    # Not spelled out by the contract; the same rule ("that one future fails;
    # nothing else affected") applied to the other end of the trip.
    r = run_scenario(tmp_path, """
        before = snapshot()
        ex = ProcessPoolExecutor(max_workers=2)
        first = submit(ex, pft.square, 3)
        try:
            bad_outcome = dict(attempt(ex.submit(pft.take, pft.UnpicklesBadly("arg")).result, timeout=T),
                               at="future")
        except Exception as exc:
            bad_outcome = dict(exc_info(exc), at="submit")
        result = dict(
            bad=bad_outcome,
            first=attempt(first.result, timeout=T),
            after=[call(ex, pft.square, i) for i in range(10)],
            serves=serves(ex),
        )
        ex.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """)
    assert not r["bad"]["ok"], r["bad"]
    ok(r["first"], 9)
    assert r["after"] == [{"ok": True, "value": i * i} for i in range(10)]
    assert_serves_and_no_leak(r)


# -- 6-7. results that do not cross ---------------------------------------------------------


@pytest.mark.parametrize("make", ["make_lock", "make_unpickles_badly"])
def test_a_result_that_does_not_cross_fails_only_its_task(tmp_path, make):
    # make_lock: the result cannot be pickled in the worker;
    # make_unpickles_badly: it pickles, but unpickling it in the parent raises.
    r = run_scenario(tmp_path, """
        before = snapshot()
        ex = ProcessPoolExecutor(max_workers=2)
        fs = [submit(ex, pft.square, i) for i in range(5)]
        bad = submit(ex, getattr(pft, MAKE))
        fs += [submit(ex, pft.square, i) for i in range(5, 10)]
        result = dict(
            bad=attempt(bad.result, timeout=T),
            others=results(fs),
            bad_again=call(ex, getattr(pft, MAKE)),
            serves=serves(ex),
        )
        ex.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """, MAKE=make)
    assert not r["bad"]["ok"], f"{make}'s result reached the caller: {r['bad']}"
    assert not r["bad_again"]["ok"], r["bad_again"]
    assert r["others"] == [{"ok": True, "value": i * i} for i in range(10)]
    assert_serves_and_no_leak(r)


# -- 8. per-task timeouts ----------------------------------------------------------------------

# A timed-out task sleeps this long: if the timeout does nothing, the wait
# (below) expires first and the elapsed-time check says so, and shutdown
# (which waits for the task) still ends before the scenario's own timeout.
NEVER_S = 30
# How long the caller waits for a task that should time out after 0.5 s.
WAIT_S = 10


def _assert_timed_out(r):
    slow = r["slow"]
    assert not slow["ok"], f"the task ran past its timeout and returned: {slow}"
    assert slow["is_timeout"], f"expected TimeoutError, got {slow['type']}: {slow['msg']}"
    assert 0.45 <= r["elapsed"] < 3.0, f"TimeoutError after {r['elapsed']:.2f}s (timeout=0.5)"
    assert r["slow_worker_killed"], "the timed-out task's worker is still alive"


@pytest.mark.parametrize("api", ["pool", "executor"])
def test_a_task_past_its_timeout_raises_and_its_worker_is_replaced(tmp_path, api):
    r = run_scenario(tmp_path, """
        before = snapshot()
        pool = make_pool(API)
        warm = pool.map(pft.square, range(8))  # workers up: the 0.5 s is the task's alone
        list(warm)

        def with_timeout(timeout, fn, *args):  # submit; return the call that waits
            if API == "pool":
                return pool.apply_async(fn, args, timeout=timeout).get
            return pool.submit_timeout(timeout, fn, *args).result

        other = pool.submit(pft.sleep_then_return, 1.5, "other")  # on the other worker
        t0 = time.monotonic()
        slow = with_timeout(0.5, pft.write_pid_then_sleep, pidfile("slow"), NEVER_S, "late")
        slow_outcome = attempt(slow, timeout=WAIT_S)
        elapsed = time.monotonic() - t0
        slow_pid = pft.read_pidfile(pidfile("slow"), timeout=1)[0]
        result = dict(
            slow=slow_outcome,
            elapsed=elapsed,
            slow_worker_killed=wait_until(lambda: pft.is_gone(slow_pid), timeout=5),
            other=attempt(other.result, timeout=T),
            fast=attempt(lambda: with_timeout(5, pft.square, 6)(timeout=T)),
            serves=serves(pool),
        )
        pool.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """, API=api, NEVER_S=NEVER_S, WAIT_S=WAIT_S)
    _assert_timed_out(r)
    ok(r["other"], "other")
    ok(r["fast"], 36)
    assert_serves_and_no_leak(r)


def test_pool_map_task_timeout(tmp_path):
    r = run_scenario(tmp_path, """
        before = snapshot()
        pool = gilfree.Pool(2, backend="processes")
        list(pool.map(pft.square, range(8)))  # workers up
        t0 = time.monotonic()
        slow = attempt(pool.map, pft.sleep_for, [0, 0, NEVER_S, 0], task_timeout=0.5)
        elapsed = time.monotonic() - t0
        result = dict(
            slow=slow,
            elapsed=elapsed,
            slow_worker_killed=True,  # no pid to look at here; the apply_async test checks it
            fast=attempt(pool.map, pft.sleep_for, [0, 0.1, 0, 0.1], task_timeout=5),
            after=attempt(pool.map, pft.square, range(10)),
            serves=serves(pool),
        )
        pool.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """, NEVER_S=NEVER_S)
    _assert_timed_out(r)
    ok(r["fast"], [0, 0.1, 0, 0.1])
    ok(r["after"], [i * i for i in range(10)])
    assert_serves_and_no_leak(r)


# -- 8b. cancel() that kills a running task (opt-in: kill_on_cancel) ---------------------------


def test_cancel_kills_a_running_task_when_the_pool_opts_in(tmp_path):
    r = run_scenario(tmp_path, """
        before = snapshot()
        pool = ProcessPoolExecutor(max_workers=2, kill_on_cancel=True)
        list(pool.map(pft.square, range(8)))  # workers up
        other = pool.submit(pft.sleep_then_return, 1.0, "other")  # on the other worker
        slow = pool.submit(pft.write_pid_then_sleep, pidfile("slow"), NEVER_S, "late")
        slow_pid = pft.read_pidfile(pidfile("slow"), timeout=T)[0]
        behind = [pool.submit(pft.square, i) for i in range(6)]
        callback_saw = []
        slow.add_done_callback(lambda f: callback_saw.append(f.cancelled()))
        t0 = time.monotonic()
        cancelled = slow.cancel()
        waited = concurrent.futures.wait([slow], timeout=T)
        result = dict(
            was_running=True,
            cancelled=cancelled,
            state=[slow.cancelled(), slow.done(), slow.running()],
            in_done=slow in waited.done,
            callback_saw=callback_saw,
            outcome=attempt(slow.result, timeout=T)["type"],
            cancel_again=slow.cancel(),
            elapsed=time.monotonic() - t0,
            slow_worker_killed=wait_until(lambda: pft.is_gone(slow_pid), timeout=5),
            other=attempt(other.result, timeout=T),
            behind=results(behind),
            serves=serves(pool),
        )
        pool.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """, NEVER_S=NEVER_S)
    assert r["cancelled"] is True
    assert r["state"] == [True, True, False]
    assert r["in_done"] and r["callback_saw"] == [True]
    assert r["outcome"] == "concurrent.futures._base.CancelledError"
    assert r["cancel_again"] is True
    assert r["elapsed"] < 3.0, f"cancel took {r['elapsed']:.2f}s"
    assert r["slow_worker_killed"], "the cancelled task's worker is still alive"
    ok(r["other"], "other")
    assert r["behind"] == [{"ok": True, "value": i * i} for i in range(6)]
    assert_serves_and_no_leak(r)


def test_cancel_of_queued_and_pipelined_tasks_with_kill_on_cancel(tmp_path):
    """Short calls are pipelined into a worker's ring before they start:
    cancelling those takes them back (nothing is killed, nothing runs
    twice); every call is either cancelled or returns its own result."""
    r = run_scenario(tmp_path, """
        before = snapshot()
        pool = ProcessPoolExecutor(max_workers=2, kill_on_cancel=True)
        futures = [pool.submit(pft.square_and_pid, i) for i in range(400)]
        verdicts = [f.cancel() for f in futures[100::3]]
        outcomes = []
        for i, f in enumerate(futures):
            try:
                value, pid = f.result(timeout=T)
                outcomes.append(["value", i, value])
            except concurrent.futures.CancelledError:
                outcomes.append(["cancelled", i, f.cancelled()])
        pool.shutdown(wait=True)
        emit(verdicts=verdicts, outcomes=outcomes, serves={"ok": True, "value": 49},
             leaks=leaks(before))
    """)
    cancelled = {i for kind, i, _ in r["outcomes"] if kind == "cancelled"}
    asked = set(range(100, 400, 3))
    assert cancelled == {i for i, v in zip(sorted(asked), r["verdicts"]) if v}
    assert cancelled, "no cancel won: the test did not test anything"
    for kind, i, value in r["outcomes"]:
        assert value is True if kind == "cancelled" else value == i * i, (kind, i, value)
    assert_serves_and_no_leak(r)


def test_without_kill_on_cancel_a_running_task_cannot_be_cancelled(tmp_path):
    r = run_scenario(tmp_path, """
        before = snapshot()
        pool = ProcessPoolExecutor(max_workers=1)
        slow = pool.submit(pft.write_pid_then_sleep, pidfile("slow"), 0.5, "finished")
        pft.read_pidfile(pidfile("slow"), timeout=T)
        result = dict(cancelled=slow.cancel(), outcome=attempt(slow.result, timeout=T),
                      serves=serves(pool))
        pool.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """)
    assert r["cancelled"] is False
    ok(r["outcome"], "finished")
    assert_serves_and_no_leak(r)


# -- 9. Ctrl-C during map -----------------------------------------------------------------------

CTRL_C = """
    assert os.getpgrp() == os.getpid(), "the scenario must lead its own process group"

    def ctrl_c():
        if TARGET == "group":  # a terminal's Ctrl-C: the whole foreground group, workers too
            os.killpg(os.getpgrp(), signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)

    def slow_map(pool):
        # 8 tasks of 3 s on 2 workers: 12 s, unless Ctrl-C cuts it short
        return list(pool.map(pft.sleep_for, [3] * 8))
"""


@pytest.mark.parametrize("target", ["parent", "group"])
@pytest.mark.parametrize("api", ["executor", "pool"])
def test_ctrl_c_during_map(tmp_path, api, target):
    r = run_scenario(tmp_path, textwrap.dedent(CTRL_C) + textwrap.dedent("""
        before = snapshot()
        pool = make_pool(API)
        pool.submit(pft.square, 1).result(timeout=T)
        bystanders = [pool.submit(pft.sleep_then_return, 2, i) for i in range(2)]  # running at the Ctrl-C
        timer = threading.Timer(0.5, ctrl_c)
        t0 = time.monotonic()
        timer.start()
        try:
            slow_map(pool)
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        elapsed = time.monotonic() - t0
        timer.join()
        result = dict(
            interrupted=interrupted,
            elapsed=elapsed,
            bystanders=results(bystanders),
            serves=serves(pool),
            after=attempt(lambda: list(pool.map(pft.square, range(10)))),
        )
        pool.shutdown(wait=True, cancel_futures=True)
        emit(**result, leaks=leaks(before))
    """), API=api, TARGET=target)
    assert r["interrupted"], "Ctrl-C during map raised no KeyboardInterrupt in the caller"
    assert r["elapsed"] < 5.0, f"KeyboardInterrupt came {r['elapsed']:.1f}s after map started (Ctrl-C at 0.5s)"
    # workers ignore SIGINT: what was running when Ctrl-C came still finishes
    assert r["bystanders"] == [{"ok": True, "value": i} for i in range(2)], r["bystanders"]
    ok(r["after"], [i * i for i in range(10)])
    assert_serves_and_no_leak(r)


@pytest.mark.parametrize("target", ["parent", "group"])
def test_ctrl_c_during_map_in_a_with_block_shuts_down_cleanly(tmp_path, target):
    r = run_scenario(tmp_path, textwrap.dedent(CTRL_C) + textwrap.dedent("""
        before = snapshot()
        timer = threading.Timer(0.5, ctrl_c)
        t0 = time.monotonic()
        try:
            with ProcessPoolExecutor(max_workers=2) as pool:
                pool.submit(pft.square, 1).result(timeout=T)
                timer.start()
                slow_map(pool)
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        elapsed = time.monotonic() - t0
        timer.join()
        emit(interrupted=interrupted, elapsed=elapsed, leaks=leaks(before))
    """), TARGET=target)
    assert r["interrupted"]
    # the interrupted map's queued tasks must not all run out: 12 s of work
    assert r["elapsed"] < 10.0, f"the with block took {r['elapsed']:.1f}s to unwind after Ctrl-C at 0.5s"
    assert r["leaks"] == {}, f"left behind after shutdown: {r['leaks']}"


# -- 10. the parent killed with SIGKILL --------------------------------------------------------


@pytest.mark.parametrize("busy", [True, False], ids=["busy", "idle"])
def test_workers_and_zygote_exit_when_the_parent_is_killed(tmp_path, busy):
    proc = start_scenario(tmp_path, """
        ex = ProcessPoolExecutor(max_workers=2)
        if BUSY:
            futures = [ex.submit(pft.write_pid_then_sleep, pidfile(f"w{i}"), 120) for i in range(2)]
            infos = [pft.read_pidfile(pidfile(f"w{i}")) for i in range(2)]
        else:
            infos = [ex.submit(pft.pid_info).result(timeout=T) for _ in range(4)]
        with open(pidfile("ready.tmp"), "w") as f:
            json.dump({"workers": sorted({p for p, _ in infos}), "zygotes": sorted({z for _, z in infos})}, f)
        os.replace(pidfile("ready.tmp"), pidfile("ready"))
        time.sleep(120)
    """, BUSY=busy)
    ready = tmp_path / "scenario" / "ready"
    starts = {}
    try:
        if not wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=SCENARIO_TIMEOUT_S):
            pytest.fail(f"the scenario never got its pool running\n{_describe(proc, tmp_path)}")
        assert proc.poll() is None, _describe(proc, tmp_path)
        info = json.loads(ready.read_text())
        known = set(info["workers"]) | set(info["zygotes"]) | set(pft.descendants(proc.pid))
        known.discard(proc.pid)
        starts = {pid: (pft.proc_stat(pid) or (None, None, None))[2] for pid in known}
        assert all(starts[pid] is not None for pid in info["workers"]), f"workers already gone: {info}"

        proc.kill()
        proc.wait()
        t0 = time.monotonic()
        wait_until(lambda: all(pft.is_gone(pid, starts[pid]) for pid in known), timeout=2.0, interval=0.01)
        elapsed = time.monotonic() - t0
        alive = {pid: pft.cmdline(pid) for pid in known if not pft.is_gone(pid, starts[pid])}
        assert not alive, (
            f"still alive {elapsed:.1f}s after their parent was SIGKILLed: {alive} "
            f"(workers {info['workers']}, zygote {info['zygotes']})")
    finally:
        _kill_everything(proc, starts)


# -- 11. an initializer that raises ------------------------------------------------------------


@pytest.mark.parametrize("api", ["executor", "pool"])
def test_an_initializer_that_raises_breaks_the_pool(tmp_path, api):
    r = run_scenario(tmp_path, """
        before = snapshot()
        pool = make_pool(API, initializer=pft.init_fail)
        outcomes = results([submit(pool, pft.square, i) for i in range(5)])
        try:
            late = pool.submit(pft.square, 3)
        except Exception as exc:
            submit_after = dict(exc_info(exc), at="submit")
        else:
            submit_after = dict(attempt(late.result, timeout=T), at="future")
        apply = attempt(pool.apply, pft.square, (2,)) if API == "pool" else None
        pool.shutdown(wait=True)

        # the control: an initializer that works, with initargs
        good = make_pool(API, initializer=pft.init_token, initargs=("tok",))
        tokens = results([submit(good, pft.get_token) for _ in range(4)])
        result = dict(outcomes=outcomes, submit_after=submit_after, apply=apply,
                      tokens=tokens, serves=serves(good))
        good.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """, API=api)
    for outcome in r["outcomes"]:
        assert not outcome["ok"] and outcome["is_broken"] and outcome["is_stdlib_broken"], outcome
    after = r["submit_after"]
    assert after["at"] == "submit", f"submit on a broken pool should raise BrokenProcessPool: {after}"
    assert after["is_broken"], after
    if api == "pool":
        assert not r["apply"]["ok"] and r["apply"]["is_broken"], r["apply"]
    assert r["tokens"] == [{"ok": True, "value": "tok"}] * 4
    assert_serves_and_no_leak(r)


# -- 12. max_tasks_per_child -------------------------------------------------------------------


@pytest.mark.parametrize("api", ["executor", "pool"])
def test_max_tasks_per_child_recycles_workers(tmp_path, api):
    r = run_scenario(tmp_path, """
        before = snapshot()
        if API == "executor":
            pool = ProcessPoolExecutor(max_workers=1, max_tasks_per_child=2)
        else:
            pool = gilfree.Pool(1, backend="processes", maxtasksperchild=2)
        result = dict(results=results([submit(pool, pft.square_and_pid, i) for i in range(6)]),
                      serves=serves(pool))
        pool.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """, API=api)
    assert all(o["ok"] for o in r["results"]), r["results"]
    assert [o["value"][0] for o in r["results"]] == [i * i for i in range(6)]
    pids = [o["value"][1] for o in r["results"]]
    assert len(set(pids)) >= 3, f"6 tasks, 2 per child, yet only these workers: {pids}"
    assert_serves_and_no_leak(r)


# -- 13. exceptions carry the worker's traceback --------------------------------------------------


def test_a_task_exception_carries_the_worker_traceback(tmp_path):
    r = run_scenario(tmp_path, """
        before = snapshot()
        ex = ProcessPoolExecutor(max_workers=2)
        pool = gilfree.Pool(1, backend="processes")
        result = dict(
            own=call(ex, pft.raise_task_error, "bad"),
            builtin=call(ex, tasks.raise_value_error, "worse"),
            apply=attempt(pool.apply, pft.raise_task_error, ("via apply",)),
            serves=serves(ex),
        )
        ex.shutdown(wait=True)
        pool.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """)
    for key, type_, msg, func in [
        ("own", "proc_fault_tasks.TaskError", "bad", "raise_task_error"),
        ("builtin", "builtins.ValueError", "worse", "raise_value_error"),
        ("apply", "proc_fault_tasks.TaskError", "via apply", "raise_task_error"),
    ]:
        o = r[key]
        assert not o["ok"] and o["type"] == type_ and o["msg"] == msg, o
        assert o["cause_is_remote"], f"__cause__ should be gilfree._interpreters.RemoteTraceback: {o}"
        assert func in o["cause"] and "Traceback" in o["cause"], o["cause"]
    assert_serves_and_no_leak(r)


# -- 14. shutdown ends the zygote -----------------------------------------------------------------


def test_workers_come_from_one_zygote_that_exits_with_the_last_pool(tmp_path):
    r = run_scenario(tmp_path, """
        before = snapshot()
        a = ProcessPoolExecutor(max_workers=2)
        b = gilfree.Pool(2, backend="processes")
        ia = a.submit(pft.pid_info).result(timeout=T)
        ib = b.submit(pft.pid_info).result(timeout=T)
        zygote = ia[1]
        try:
            exe = os.readlink(f"/proc/{zygote}/exe")
        except OSError as e:
            exe = repr(e)
        during = pft.descendants()
        a.shutdown(wait=True)
        alive_with_b = not pft.is_gone(zygote)
        b_serves = serves(b)
        b.shutdown(wait=True)
        # the zygote is our child: gone means reaped, not a zombie
        zygote_reaped = wait_until(lambda: pft.proc_stat(zygote) is None, timeout=10)
        left_after_last = sorted(pft.descendants())
        c = ProcessPoolExecutor(max_workers=1)  # a new pool after the zygote left
        ic = c.submit(pft.pid_info).result(timeout=T)
        result = dict(
            me=os.getpid(), ia=ia, ib=ib, ic=ic, exe=exe, python=os.path.realpath(sys.executable),
            zygote_was_descendant=zygote in during, alive_with_b=alive_with_b, b_serves=b_serves,
            zygote_reaped=zygote_reaped, left_after_last=left_after_last, serves=serves(c),
        )
        c.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """)
    zygote = r["ia"][1]
    assert zygote != r["me"], "workers must be forked from the zygote, not from the (threaded) parent"
    assert r["ib"][1] == zygote, f"one zygote per parent: pool a's is {zygote}, pool b's {r['ib'][1]}"
    assert r["zygote_was_descendant"]
    assert r["exe"] == r["python"], f"the zygote runs {r['exe']}, not this Python ({r['python']})"
    assert r["alive_with_b"], "the zygote exited while another process pool was alive"
    ok(r["b_serves"], 49)
    assert r["zygote_reaped"], "the zygote outlived the last process pool (or was left a zombie)"
    assert r["left_after_last"] == [], r["left_after_last"]
    assert r["ic"][1] != r["me"]
    assert_serves_and_no_leak(r)


# -- 15. every start method -------------------------------------------------------------------------


@pytest.mark.parametrize("context", [None, "forkserver", "spawn", "fork"])
def test_every_mp_context_runs_plain_tasks(tmp_path, context):
    r = run_scenario(tmp_path, """
        ctx = None if CONTEXT is None else multiprocessing.get_context(CONTEXT)
        before = snapshot()
        with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as ex:
            mapped = attempt(lambda: list(ex.map(pft.square, range(20))))
            one = call(ex, pft.square, 12)
            result = dict(mapped=mapped, one=one, serves=serves(ex))
        # multiprocessing's own process-wide helpers (its forkserver, its
        # resource tracker) outlive pools by design in the stdlib; stop them
        # if something started them, so the leak check looks at gilfree only.
        stdlib_helpers = []
        for mod, attr in (("multiprocessing.forkserver", "_forkserver"),
                          ("multiprocessing.resource_tracker", "_resource_tracker")):
            helper = getattr(sys.modules.get(mod), attr, None)
            if helper is None:
                continue
            if getattr(helper, "_forkserver_pid", None) or getattr(helper, "_pid", None):
                stdlib_helpers.append(mod)
            helper._stop()
        emit(**result, stdlib_helpers=stdlib_helpers, leaks=leaks(before))
    """, CONTEXT=context)
    ok(r["mapped"], [i * i for i in range(20)])
    ok(r["one"], 144)
    assert_serves_and_no_leak(r)


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_only_the_fork_context_gives_workers_the_callers_state(tmp_path, context):
    """"fork": workers come from a copy of the caller made with the pool, so
    a module global the caller set at run time is there; the other methods
    start from a fresh interpreter, where the module has its initial value."""
    r = run_scenario(tmp_path, """
        pft.init_token("set by the caller")
        before = snapshot()
        with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context(CONTEXT)) as ex:
            seen = [f.result(timeout=T) for f in [ex.submit(pft.get_token) for _ in range(4)]]
            zygote = ex.submit(pft.pid_info).result(timeout=T)[1]
            result = dict(seen=seen, zygote=zygote, serves=serves(ex))
        result["zygote_reaped"] = pft.proc_stat(zygote) is None
        emit(**result, leaks=leaks(before))
    """, CONTEXT=context)
    expected = "set by the caller" if context == "fork" else None
    assert r["seen"] == [expected] * 4
    assert r["zygote_reaped"], "the pool's zygote outlived shutdown(wait=True)"
    assert_serves_and_no_leak(r)


def test_a_fork_pool_has_its_own_zygote_and_leaves_the_others_alone(tmp_path):
    """A forked zygote must not hold the other pools' descriptors: each
    zygote exits with its own pool, whichever is shut down first."""
    r = run_scenario(tmp_path, """
        before = snapshot()
        plain = ProcessPoolExecutor(max_workers=1)
        z_plain = plain.submit(pft.pid_info).result(timeout=T)[1]
        forked = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
        z_fork = forked.submit(pft.pid_info).result(timeout=T)[1]
        forked2 = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
        z_fork2 = forked2.submit(pft.pid_info).result(timeout=T)[1]
        plain.shutdown(wait=True)
        plain_gone = wait_until(lambda: pft.proc_stat(z_plain) is None, timeout=10)
        forked.shutdown(wait=True)
        fork_gone = pft.proc_stat(z_fork) is None
        fork2_alive = pft.proc_stat(z_fork2) is not None
        result = dict(zygotes=[z_plain, z_fork, z_fork2], plain_gone=plain_gone, fork_gone=fork_gone,
                      fork2_alive=fork2_alive, serves=serves(forked2))
        forked2.shutdown(wait=True)
        emit(**result, leaks=leaks(before))
    """)
    assert len(set(r["zygotes"])) == 3, r["zygotes"]
    assert r["plain_gone"], "the plain zygote outlived its pool (a forked zygote holds its socket?)"
    assert r["fork_gone"], "a forked zygote outlived its pool's shutdown(wait=True)"
    assert r["fork2_alive"], "shutting down one fork pool took another's zygote with it"
    assert_serves_and_no_leak(r)
