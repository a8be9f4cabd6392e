"""The interpreters backend: what only it has, and every crash-prone scenario.

The shared behaviour suites run on this backend too (backends.py). Here:
the sub-interpreter specifics - pickling across interpreters, ``__main__``
functions, lambdas, remote tracebacks, worker replacement, the version
gate - and the scenarios that crash CPython 3.12.1/3.13.0 unless gilfree
works around them (shared/notes/subinterpreters.md): exit without shutdown,
exit with a busy worker, fork with live workers, datetime/decimal/hashlib
first imported in two workers at once, an extension that refuses
sub-interpreters. Each of those runs in its own subprocess with a timeout
and must end cleanly: exit status 0, no traceback, no fatal error.
"""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from support import T, describe, subprocess_env

HERE = os.path.dirname(os.path.abspath(__file__))
import gilfree._interpreters as _gi

HAVE = _gi.available()
needs_312 = pytest.mark.skipif(
    not HAVE, reason=f"the interpreters backend is not available here: {_gi.unavailable_reason()}")

PRELUDE = """\
import os, sys, time, warnings
warnings.simplefilter("ignore", RuntimeWarning)  # the 3.12 limits warning
import gilfree, interp_tasks, tasks
from xinterp import FileEvent
"""


def clean(proc, *expected):
    assert proc.returncode == 0, describe(proc)
    assert "Traceback" not in proc.stderr and "Fatal Python error" not in proc.stderr, describe(proc)
    lines = proc.stdout.splitlines()
    for line in expected:
        assert line in lines, f"missing {line!r}\n{describe(proc)}"
    return lines


@pytest.fixture
def script(run_python):
    def run(body, timeout=60):
        return run_python(PRELUDE + textwrap.dedent(body), timeout=timeout)

    return run


@pytest.fixture
def pool():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        import gilfree

        p = gilfree.InterpreterPoolExecutor(max_workers=2)
    yield p
    p.shutdown(wait=True, cancel_futures=True)


# -- the version gate ---------------------------------------------------------


@pytest.mark.skipif(not ((3, 12) <= sys.version_info < (3, 12, 4)), reason="3.12.0-3.12.3 only")
def test_unsafe_point_release_refuses_with_a_clear_error(monkeypatch):
    import gilfree

    monkeypatch.delenv(_gi.UNSAFE_ENV, raising=False)
    with pytest.raises(NotImplementedError, match=r"3\.12\.4.*GILFREE_UNSAFE_SUBINTERPRETERS"):
        gilfree.Pool(1, backend="interpreters")
    with pytest.raises(RuntimeError, match=r"memory bugs.*upgrade"):
        gilfree.InterpreterPoolExecutor(1)
    monkeypatch.setenv(_gi.UNSAFE_ENV, "1")
    assert _gi.available()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.11 only")
def test_on_311_the_backend_says_which_version_it_needs():
    import gilfree

    with pytest.raises(NotImplementedError, match=r"3\.12.*3\.11"):
        gilfree.Pool(1, backend="interpreters")
    with pytest.raises(RuntimeError, match=r"3\.12.*3\.11"):
        gilfree.InterpreterPoolExecutor(1)
    assert gilfree.BACKENDS["interpreters"] is False


def test_auto_picks_interpreters_only_where_safe():
    import gilfree
    from gilfree import _interpreters

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto picks quietly
        p = gilfree.Pool(1, backend="auto")
    try:
        if _interpreters.available() and _interpreters.safe_by_default():
            assert p.backend == "interpreters"
        else:
            assert p.backend == "processes"
        assert p.apply(pow, (2, 5)) == 32
    finally:
        p.shutdown()


# -- in this process: what crosses, and how failures look ------------------


@needs_312
def test_two_workers_really_run_at_the_same_time(pool):
    from xinterp import FileEvent

    a, b = FileEvent(), FileEvent()
    fa = pool.submit(__import__("interp_tasks").meet, a, b)
    fb = pool.submit(__import__("interp_tasks").meet, b, a)
    assert fa.result(timeout=T) == fb.result(timeout=T) == "met"


@needs_312
def test_each_worker_is_its_own_interpreter(pool):
    import interp_tasks

    ids = {pool.submit(interp_tasks.interpreter_id).result(timeout=T) for _ in range(20)}
    assert id(sys) not in ids


@needs_312
def test_lambdas_and_closures_cross_by_value(pool):
    import interp_tasks

    assert pool.submit(lambda x: x * 3, 5).result(timeout=T) == 15
    assert pool.submit(interp_tasks.make_adder(10), 5).result(timeout=T) == 15
    assert list(pool.map(interp_tasks.make_adder(1), range(5))) == [1, 2, 3, 4, 5]


@needs_312
def test_exception_carries_the_worker_traceback(pool):
    import tasks

    exc = pool.submit(tasks.raise_value_error, "bad").exception(timeout=T)
    assert type(exc) is ValueError and str(exc) == "bad"
    assert type(exc.__cause__).__name__ == "RemoteTraceback"
    assert "raise_value_error" in str(exc.__cause__)


@needs_312
def test_an_exception_that_will_not_pickle_is_named(pool):
    import interp_tasks

    exc = pool.submit(interp_tasks.raise_unpicklable, "the message").exception(timeout=T)
    assert isinstance(exc, RuntimeError)
    assert "Unpicklable" in str(exc) and "the message" in str(exc)
    assert "raise_unpicklable" in str(exc.__cause__)


@needs_312
def test_a_result_that_will_not_pickle_fails_that_task_only(pool):
    exc = pool.submit(__import__("threading").Lock).exception(timeout=T)
    assert exc is not None and "pickle" in str(exc)
    assert pool.submit(pow, 3, 2).result(timeout=T) == 9


@needs_312
def test_unpicklable_arguments_are_refused_at_submit(pool):
    import threading

    with pytest.raises(Exception, match="pickle"):
        pool.submit(print, threading.Lock())


@needs_312
def test_a_broken_worker_interpreter_is_replaced(pool):
    import interp_tasks

    one = __import__("gilfree").InterpreterPoolExecutor(max_workers=1)
    try:
        before = one.submit(interp_tasks.interpreter_id).result(timeout=T)
        assert one.submit(interp_tasks.break_worker).result(timeout=T) == "broken"
        with pytest.raises(RuntimeError, match="stopped working"):
            one.submit(pow, 2, 2).result(timeout=T)
        assert one.submit(pow, 2, 3).result(timeout=T) == 8
        after = one.submit(interp_tasks.interpreter_id).result(timeout=T)
        assert after != before or True  # ids may be reused; the pow above is the check
    finally:
        one.shutdown(wait=True)


@needs_312
def test_map_with_star_and_errors_per_item():
    import gilfree
    import tasks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = gilfree.Pool(2, backend="interpreters")
    with p:
        assert p.starmap(tasks.add, [(i, i) for i in range(1000)]) == [2 * i for i in range(1000)]
        it = p.imap(__import__("functools").partial(tasks.fail_at, k=3), range(6))
        assert [next(it) for _ in range(3)] == [0, 1, 4]
        with pytest.raises(ValueError, match="boom at 3"):
            next(it)
        assert list(it) == [16, 25]  # imap goes on past a failure


# -- crash-prone scenarios, each in its own process ---------------------------


@needs_312
def test_exit_without_shutdown(script):
    clean(script("""
        pool = gilfree.InterpreterPoolExecutor(max_workers=2)
        assert sum(pool.map(tasks.square, range(100))) == sum(i * i for i in range(100))
        p2 = gilfree.Pool(2, backend="interpreters")
        assert p2.map(tasks.square, range(10))[-1] == 81
        print("main exits")
    """), "main exits")


@needs_312
def test_exit_with_a_busy_worker(script):
    lines = clean(script("""
        pool = gilfree.InterpreterPoolExecutor(max_workers=2)
        started = FileEvent()
        pool.submit(tasks.start_sleep_then_write, started, 0.5, "task finished\\n")
        pool.submit(tasks.sleep_then_write, 0.3, "second finished\\n")
        assert started.wait(30)
        tasks.write_stdout("main exits\\n")
    """), "main exits", "task finished", "second finished")
    assert lines.index("main exits") < lines.index("task finished")


@needs_312
def test_fork_with_live_workers(script):
    clean(script("""
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a threaded process
        pool = gilfree.InterpreterPoolExecutor(max_workers=2)
        assert pool.submit(tasks.square, 3).result(timeout=30) == 9   # workers are live
        slow = pool.submit(tasks.sleep_then_return, 0.3, "slow")   # running at the fork
        queued = [pool.submit(tasks.square, i) for i in range(20)]  # maybe queued at the fork
        sys.stdout.flush()
        pid = os.fork()   # waits for the running task; no interpreter is alive across it
        if pid == 0:
            code = 3
            try:
                print("child square", pool.submit(tasks.square, 7).result(timeout=30))
                print("child map", list(pool.map(tasks.square, range(4))))
                pool.shutdown(wait=True)
                print("child clean")
                code = 0
            finally:
                sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print("child status", os.waitstatus_to_exitcode(status))
        print("parent slow", slow.result(timeout=30))
        print("parent queued", sum(f.result(timeout=30) for f in queued))
        print("parent again", pool.submit(tasks.square, 5).result(timeout=30))
        pool.shutdown(wait=True)
        print("parent clean")
    """), "child square 49", "child map [0, 1, 4, 9]", "child clean", "child status 0",
        "parent slow slow", f"parent queued {sum(i * i for i in range(20))}",
        "parent again 25", "parent clean")


@needs_312
@pytest.mark.parametrize("name", ["datetime", "decimal", "hashlib"])
def test_first_import_in_two_workers_at_once(script, name):
    # The main interpreter never imports the module itself: gilfree does, as
    # the mitigation, before the first worker starts.
    for _ in range(3):
        proc = script(f"""
            assert {name!r} not in sys.modules or {name!r} == "decimal"
            pool = gilfree.InterpreterPoolExecutor(max_workers=2)
            futures = [pool.submit(interp_tasks.import_and_use, {name!r}) for _ in range(4)]
            print("results", len({{f.result(timeout=30) for f in futures}}))
            pool.shutdown(wait=True)
            print("clean")
        """)
        clean(proc, "results 1", "clean")


@needs_312
def test_an_extension_that_refuses_sub_interpreters(script):
    proc = script("""
        import importlib.util
        name = "_testsinglephase" if importlib.util.find_spec("_testsinglephase") else "_testcapi"
        pool = gilfree.InterpreterPoolExecutor(max_workers=1)
        exc = pool.submit(__import__, name).exception(timeout=30)
        print("type", type(exc).__name__)
        print("names module", name in str(exc))
        print("suggests processes", 'backend="processes"' in str(exc))
        print("again", pool.submit(tasks.square, 4).result(timeout=30))
        pool.shutdown(wait=True)
        print("clean")
    """)
    clean(proc, "type ImportError", "names module True", "suggests processes True", "again 16", "clean")


@needs_312
def test_functions_from_the_main_script(tmp_path):
    # A script's own functions and classes reach the workers, which run the
    # script once as __mp_main__ (the guarded part does not run there).
    path = tmp_path / "main_script.py"
    path.write_text(textwrap.dedent("""
        import os, warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        import gilfree

        os.write(1, b"top level ran\\n")

        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

        def norm2(p):
            return Point(p.x * p.x, p.y * p.y)

        if __name__ == "__main__":
            with gilfree.Pool(2, backend="interpreters") as pool:
                out = pool.map(norm2, [Point(i, i + 1) for i in range(10)])
                print("points", [(p.x, p.y) for p in out][:3], type(out[0]).__name__)
                print("lambda", pool.apply(lambda a: a * 2, (21,)))
            print("clean")
    """))
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=60, env=subprocess_env(), cwd=HERE)
    lines = clean(proc, "points [(0, 1), (1, 4), (4, 9)] Point", "lambda 42", "clean")
    # The main process ran the top level once; each worker that needed the
    # script ran it once more (at most two workers).
    assert 2 <= lines.count("top level ran") <= 3, describe(proc)
