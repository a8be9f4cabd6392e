"""gilfree imports and works in a sub-interpreter with its own GIL (PEP 684).

That needs Python 3.12+ and the stdlib's low-level module for it
(``_xxsubinterpreters`` on 3.12, ``_interpreters`` on 3.13+). Every check runs
in a subprocess: an extension that is not isolated can crash the process.

The scripts import gilfree in the main interpreter first, as a real program
does; on 3.12.0-3.12.3 importing asyncio or hashlib first in a
sub-interpreter crashes the main interpreter at exit (CPython gh-119213), a
bug that is not gilfree's.
"""

import sys
import textwrap

import pytest

from support import describe

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="sub-interpreters with their own GIL need Python 3.12+"
)

# A tiny shim over the two private modules: create an isolated (own GIL,
# own allocator, multi-phase extensions only) interpreter and run code in it;
# an exception in the interpreter becomes RuntimeError with its traceback.
SHIM = """\
import importlib.util, sys
try:
    import _interpreters as _interp  # 3.13+

    def create_isolated():
        iid = _interp.create("isolated")
        config = _interp.get_config(iid)
        assert config.gil == "own" and not config.use_main_obmalloc, config
        assert config.check_multi_interp_extensions, config
        return iid

    def run(iid, source):
        failure = _interp.run_string(iid, source)
        if failure is not None:
            raise RuntimeError(failure.errdisplay)
except ImportError:
    import _xxsubinterpreters as _interp  # 3.12

    def create_isolated():
        return _interp.create(isolated=True)

    def run(iid, source):
        try:
            _interp.run_string(iid, source)
        except _interp.RunFailedError as e:
            raise RuntimeError(str(e)) from None

def destroy(iid):
    _interp.destroy(iid)
"""


def script(body):
    return SHIM + textwrap.dedent(body)


def test_the_interpreter_really_is_isolated(run_python):
    # Control: an isolated interpreter refuses a single-phase extension. If
    # this passed, "gilfree imports there" would prove nothing.
    proc = run_python(script("""
        if importlib.util.find_spec("_testsinglephase") is None:
            print("no control module")
            raise SystemExit(0)
        iid = create_isolated()
        try:
            run(iid, "import _testsinglephase")
            print("NOT ISOLATED")
        except RuntimeError as e:
            print("refused" if "does not support loading in subinterpreters" in str(e) else repr(e))
        finally:
            destroy(iid)
    """))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.strip() in ("refused", "no control module"), describe(proc)


def test_core_imports_in_an_own_gil_interpreter(run_python):
    proc = run_python(script("""
        import gilfree._core
        iid = create_isolated()
        try:
            run(iid, "import gilfree._core")
            run(iid, "import gilfree; import gilfree.native; import gilfree.demo")
            print("imported")
        finally:
            destroy(iid)
        print("destroyed")
    """))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.splitlines() == ["imported", "destroyed"], describe(proc)


def test_threads_pool_runs_inside_an_own_gil_interpreter(run_python):
    # The isolated config allows (non-daemon) threads, so the threads backend
    # must work there, with its C workers attached to that interpreter.
    proc = run_python(script("""
        import gilfree
        iid = create_isolated()
        try:
            run(iid, '''
        import gilfree, gilfree.demo
        def square(x):
            return x * x
        with gilfree.ThreadPoolExecutor(max_workers=2) as ex:
            assert list(ex.map(square, range(100))) == [i * i for i in range(100)]
            assert ex.submit(square, 9).result(timeout=30) == 81
        with gilfree.Pool(workers=2) as pool:
            assert pool.map(square, range(10)) == [i * i for i in range(10)]
            assert sum(pool.imap_unordered(square, range(100))) == sum(i * i for i in range(100))
            assert pool.apply_async(square, (7,)).get(timeout=30) == 49
        assert gilfree.demo.busy_loop_releasing_gil(1000) == gilfree.demo.busy_loop_holding_gil(1000)
        ''')
            print("ran")
        finally:
            destroy(iid)
        # The main interpreter's gilfree still works after the other one is gone.
        with gilfree.ThreadPoolExecutor(max_workers=2) as ex:
            assert ex.submit(pow, 2, 10).result(timeout=30) == 1024
        print("main ok")
    """))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.splitlines() == ["ran", "main ok"], describe(proc)


def test_two_interpreters_each_run_a_pool(run_python):
    proc = run_python(script("""
        import gilfree
        a, b = create_isolated(), create_isolated()
        try:
            for iid in (a, b):
                run(iid, '''
        import gilfree
        with gilfree.ThreadPoolExecutor(max_workers=1) as ex:
            assert ex.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        ''')
            print("both ran")
        finally:
            destroy(a)
            destroy(b)
        print("destroyed")
    """))
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.splitlines() == ["both ran", "destroyed"], describe(proc)
