"""gilfree.native: C function pointers run on the runtime pool with no GIL.

A tiny shared library is compiled once per session with the system's C
compiler and loaded with ctypes (and cffi, where it is installed). A missing
compiler fails these tests: the contract is about C code, and a skipped
native suite would hide that nothing was checked.
"""

import array
import ctypes
import os
import shutil
import struct
import subprocess
import sysconfig
import textwrap
import threading

import pytest

from support import T, describe

LIBRARY_SOURCE = r"""
#include <stdint.h>
#include <stddef.h>

/* task: returns the square of the int64 at arg */
int64_t square_task(void *arg) {
    int64_t v = *(const int64_t *)arg;
    return v * v;
}

/* task: tells whether it was given NULL */
int64_t is_null_task(void *arg) { return arg == NULL ? 1 : 0; }

/* range: writes 2 * i into the int64 array at arg */
void fill_range(void *arg, int64_t begin, int64_t end) {
    int64_t *out = arg;
    for (int64_t i = begin; i < end; i++) out[i] = 2 * i;
}

/* range: counts, atomically, into an int64 array laid out as
 *   [0] calls  [1] indices  [2] longest chunk  [3] bad chunks  [4] n  [5 + i] hits of index i
 * A chunk is bad when it is empty, negative or reaches past n; its indices are
 * then not counted (so that a bug cannot write out of bounds). */
void count_range(void *arg, int64_t begin, int64_t end) {
    int64_t *s = arg;
    int64_t n = s[4];
    __atomic_fetch_add(&s[0], 1, __ATOMIC_RELAXED);
    if (begin < 0 || end <= begin || end > n) {
        __atomic_fetch_add(&s[3], 1, __ATOMIC_RELAXED);
        return;
    }
    int64_t len = end - begin;
    __atomic_fetch_add(&s[1], len, __ATOMIC_RELAXED);
    int64_t seen = __atomic_load_n(&s[2], __ATOMIC_RELAXED);
    while (len > seen && !__atomic_compare_exchange_n(&s[2], &seen, len, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    for (int64_t i = begin; i < end; i++) __atomic_fetch_add(&s[5 + i], 1, __ATOMIC_RELAXED);
}
"""

TASK = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)
RANGE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
STATS = 5  # int64 slots before the per-index hit counters in count_range's array


def compiler():
    cc = os.environ.get("CC", "cc").split()[0]
    path = shutil.which(cc)
    if path is None:
        pytest.fail(f"no C compiler ({cc!r} is not on PATH): the native tests build a small C library; "
                    "install one (e.g. apt-get install gcc) or set CC")
    return path


@pytest.fixture(scope="session")
def library_path(tmp_path_factory):
    build = tmp_path_factory.mktemp("native")
    src = build / "gftest.c"
    src.write_text(LIBRARY_SOURCE)
    out = build / "libgftest.so"
    proc = subprocess.run([compiler(), "-std=c11", "-O2", "-shared", "-fPIC", "-o", str(out), str(src)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"could not compile the native test library\n{describe(proc)}")
    return str(out)


@pytest.fixture(scope="session")
def lib(library_path):
    dll = ctypes.CDLL(library_path)
    dll.square_task.restype = ctypes.c_int64
    dll.square_task.argtypes = [ctypes.c_void_p]
    dll.is_null_task.restype = ctypes.c_int64
    dll.is_null_task.argtypes = [ctypes.c_void_p]
    dll.fill_range.restype = None
    dll.fill_range.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    dll.count_range.restype = None
    dll.count_range.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    return dll


@pytest.fixture(scope="session")
def native():
    import gilfree.native

    return gilfree.native


def int64(value):
    return ctypes.c_int64(value)


# -- submit -------------------------------------------------------------------


def test_submit_returns_the_task_result(native, lib):
    x = int64(12)
    f = native.submit(lib.square_task, x)
    assert f.result(timeout=T) == 144
    assert f.done() and not f.cancelled()


@pytest.mark.parametrize("make_arg", ["ctypes", "address", "bytearray", "array", "bytes", "memoryview"])
def test_submit_arg_kinds(native, lib, make_arg):
    keep = int64(-9)
    arg = {
        "ctypes": lambda: keep,
        "address": lambda: ctypes.addressof(keep),
        "bytearray": lambda: bytearray(struct.pack("q", -9)),
        "array": lambda: array.array("q", [-9]),
        "bytes": lambda: struct.pack("q", -9),
        "memoryview": lambda: memoryview(bytearray(struct.pack("q", -9))),
    }[make_arg]()
    assert native.submit(lib.square_task, arg).result(timeout=T) == 81


def test_submit_keeps_a_temporary_buffer_alive(native, lib):
    # Nothing else refers to the buffers: gilfree must hold them until the tasks ran.
    futures = [native.submit(lib.square_task, bytearray(struct.pack("q", i))) for i in range(2000)]
    assert [f.result(timeout=T) for f in futures] == [i * i for i in range(2000)]


def test_submit_without_arg_passes_null(native, lib):
    assert native.submit(lib.is_null_task).result(timeout=T) == 1
    assert native.submit(lib.is_null_task, None).result(timeout=T) == 1
    assert native.submit(lib.is_null_task, int64(0)).result(timeout=T) == 0


def test_submit_accepts_every_function_form(native, lib):
    x = int64(5)
    address = ctypes.cast(lib.square_task, ctypes.c_void_p).value
    for func in (lib.square_task, address, TASK(address)):
        assert native.submit(func, x).result(timeout=T) == 25


def test_submit_result_is_a_concurrent_future(native, lib):
    import concurrent.futures

    import gilfree

    f = native.submit(lib.square_task, int64(3))
    assert isinstance(f, concurrent.futures.Future) and isinstance(f, gilfree.Future)
    done, _ = concurrent.futures.wait([f], timeout=T)
    assert done == {f} and f.result() == 9


@pytest.mark.parametrize("func", [None, 0])
def test_submit_null_function_is_a_value_error(native, func):
    with pytest.raises(ValueError):
        native.submit(func)


@pytest.mark.parametrize("func", ["square_task", object(), 1.5, [1]])
def test_submit_non_pointer_function_is_a_type_error(native, func):
    with pytest.raises(TypeError):
        native.submit(func)


def test_submit_bad_arg_is_a_type_error(native, lib):
    with pytest.raises(TypeError):
        native.submit(lib.square_task, "a str is not a buffer")
    with pytest.raises(TypeError):
        native.submit(lib.square_task, 1.5)


# -- parallel_for -------------------------------------------------------------


def counting_array(n):
    stats = (ctypes.c_int64 * (STATS + n))()
    stats[4] = n
    return stats


@pytest.mark.parametrize(
    "n,chunksize",
    [(0, None), (0, 3), (1, None), (1, 1), (1, 1000), (7, None), (7, 1), (7, 3), (7, 7), (7, 8),
     (1000, None), (1000, 1), (1000, 7), (1000, 999), (1000, 5000),
     (1_000_003, None), (1_000_003, 4096), (1_000_003, 999_999), (1_000_003, 10**7)],
)
def test_parallel_for_covers_every_index_exactly_once(native, lib, n, chunksize):
    stats = counting_array(n)
    native.parallel_for(lib.count_range, n, stats, chunksize=chunksize)
    calls, indices, longest, bad = stats[0], stats[1], stats[2], stats[3]
    assert bad == 0
    assert indices == n
    hits = memoryview(stats).cast("B").cast("q")[STATS:]
    assert hits.tolist() == [1] * n  # every index, exactly once
    if n == 0:
        assert calls == 0
    if chunksize is not None and n > 0:
        assert 0 < longest <= chunksize


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 1_000_003])
def test_parallel_for_fills_an_array(native, lib, n):
    out = array.array("q", [-1]) * n
    native.parallel_for(lib.fill_range, n, out)
    assert out == array.array("q", range(0, 2 * n, 2))


def test_parallel_for_on_a_bytearray_and_a_ctypes_array(native, lib):
    n = 10_000
    buf = bytearray(8 * n)
    native.parallel_for(lib.fill_range, n, buf, chunksize=100)
    assert memoryview(buf).cast("q").tolist() == list(range(0, 2 * n, 2))
    arr = (ctypes.c_int64 * n)()
    native.parallel_for(lib.fill_range, n, arr)
    assert list(arr) == list(range(0, 2 * n, 2))
    native.parallel_for(lib.fill_range, n, ctypes.addressof(arr), chunksize=3)
    assert list(arr) == list(range(0, 2 * n, 2))


def test_parallel_for_accepts_an_address_and_a_cfunctype(native, lib):
    n = 100
    address = ctypes.cast(lib.count_range, ctypes.c_void_p).value
    for func in (address, RANGE(address)):
        stats = counting_array(n)
        native.parallel_for(func, n, stats)
        assert stats[1] == n and stats[3] == 0


def test_parallel_for_bad_input(native, lib):
    out = array.array("q", [0]) * 10
    with pytest.raises(ValueError):
        native.parallel_for(None, 10, out)
    with pytest.raises(ValueError):
        native.parallel_for(0, 10, out)
    with pytest.raises(ValueError):
        native.parallel_for(lib.fill_range, -1, out)
    for chunksize in (0, -5):
        with pytest.raises(ValueError):
            native.parallel_for(lib.fill_range, 10, out, chunksize=chunksize)
    for func in ("fill_range", object(), 2.0):
        with pytest.raises(TypeError):
            native.parallel_for(func, 10, out)
    assert out == array.array("q", [0]) * 10  # nothing ran


def test_python_callbacks_through_ctypes_do_not_deadlock(run_python):
    # A CFUNCTYPE wrapping a Python function takes the GIL itself when a
    # worker calls it. That only works if parallel_for and result() release
    # the GIL while they wait: run it in a subprocess, where a deadlock is a
    # timeout, not a hung test run.
    proc = run_python(textwrap.dedent("""
        import ctypes, threading
        import gilfree.native as native
        RANGE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
        TASK = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)
        lock = threading.Lock()
        seen = []
        def visit(arg, begin, end):
            with lock:
                seen.extend(range(begin, end))
        visit_c = RANGE(visit)
        native.parallel_for(visit_c, 5000, None, chunksize=64)
        assert sorted(seen) == list(range(5000)), len(seen)
        answer = TASK(lambda arg: 42)
        assert native.submit(answer).result(timeout=30) == 42
        print("ok")
    """), timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", describe(proc)


def test_parallel_for_from_several_threads_at_once(native, lib):
    n, callers = 200_000, 6
    outs = [array.array("q", [-1]) * n for _ in range(callers)]
    barrier = threading.Barrier(callers)
    errors = []

    def caller(k):
        try:
            barrier.wait(T)
            native.parallel_for(lib.fill_range, n, outs[k], chunksize=1000 + k)
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    assert errors == []
    expected = array.array("q", range(0, 2 * n, 2))
    assert all(out == expected for out in outs)


def test_native_calls_from_pool_tasks(native, lib, library_path):
    import gilfree

    def job(k):
        out = array.array("q", [0]) * (1000 + k)
        native.parallel_for(lib.fill_range, len(out), out)
        return out == array.array("q", range(0, 2 * len(out), 2)) and \
            native.submit(lib.square_task, int64(k)).result(timeout=T) == k * k

    with gilfree.ThreadPoolExecutor(max_workers=3) as ex:
        assert all(ex.map(job, range(12)))


NATIVE_SCRIPT = """\
import array, ctypes, os, signal, sys, threading, time
import gilfree.native as native
import gilfree.demo as demo
lib = ctypes.CDLL({path!r})
def filled(n):
    out = array.array("q", [0]) * n
    native.parallel_for(lib.fill_range, n, out)
    return out == array.array("q", range(0, 2 * n, 2))
"""


def test_ctrl_c_interrupts_parallel_for(run_python, library_path):
    # About 200 s of busy work in short chunks: Ctrl-C must end it early.
    proc = run_python(NATIVE_SCRIPT.format(path=library_path) + textwrap.dedent("""
        def press():
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGINT)
        presser = threading.Thread(target=press)
        presser.start()
        since = time.monotonic()
        try:
            native.parallel_for(demo.NATIVE_BUSY_RANGE, 10**7, ctypes.c_int64(20_000), chunksize=16)
            print("NOT INTERRUPTED")
        except KeyboardInterrupt:
            waited = time.monotonic() - since
            print("interrupted" if waited < 10 else f"LATE INTERRUPT after {waited:.1f}s")
        presser.join()
        print("again", filled(10_000))
    """), timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.splitlines() == ["interrupted", "again True"], describe(proc)


def test_fork_after_the_native_pool_started(run_python, library_path):
    proc = run_python(NATIVE_SCRIPT.format(path=library_path) + textwrap.dedent("""
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process
        print("parent before", filled(100_000))
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            try:
                print("child", filled(100_000), native.submit(lib.square_task, ctypes.c_int64(6)).result(timeout=15))
            finally:
                sys.stdout.flush()
            sys.exit(0)
        import tasks
        tasks.wait_for_child(pid)
        print("parent after", filled(100_000))
    """), timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.splitlines() == [
        "parent before True", "child True 36", "child exit code 0", "parent after True"], describe(proc)


def test_exit_with_native_work_in_flight(run_python, library_path):
    proc = run_python(NATIVE_SCRIPT.format(path=library_path) + textwrap.dedent("""
        x = ctypes.c_int64(3)
        futures = [native.submit(lib.square_task, x) for _ in range(5000)]
        futures[-1].add_done_callback(lambda f: None)  # someone is waiting: the bridge is busy too
        assert futures[0].result(timeout=15) == 9
        print("exiting")
    """), timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.splitlines() == ["exiting"], describe(proc)
    assert "Fatal Python error" not in proc.stderr and "Traceback" not in proc.stderr, describe(proc)


# -- address ------------------------------------------------------------------


def test_address_of_ctypes_functions(native, lib):
    expected = ctypes.cast(lib.square_task, ctypes.c_void_p).value
    assert native.address(lib.square_task) == expected
    assert native.address(TASK(expected)) == expected
    assert native.address(expected) == expected
    callback = TASK(lambda arg: 0)
    assert native.address(callback) == ctypes.cast(callback, ctypes.c_void_p).value


def test_address_rejects_non_pointers(native):
    for bad in ("x", object(), 1.0):
        with pytest.raises(TypeError):
            native.address(bad)


def test_cffi_function_pointer(native, library_path):
    cffi = pytest.importorskip("cffi", reason="cffi is not installed for this Python: the cffi case is not checked")
    ffi = cffi.FFI()
    ffi.cdef("int64_t square_task(void *arg); void fill_range(void *arg, int64_t b, int64_t e);")
    clib = ffi.dlopen(library_path)
    expected = int(ffi.cast("uintptr_t", clib.square_task))
    assert native.address(clib.square_task) == expected
    x = ffi.new("int64_t *", 13)
    assert native.submit(clib.square_task, ffi.buffer(x)).result(timeout=T) == 169
    assert native.submit(clib.square_task, int(ffi.cast("uintptr_t", x))).result(timeout=T) == 169
    out = ffi.new("int64_t[]", 1000)
    native.parallel_for(clib.fill_range, 1000, ffi.buffer(out))
    assert list(out) == list(range(0, 2000, 2))


# -- the C API header ---------------------------------------------------------


def test_get_include_has_the_header():
    import gilfree

    include = gilfree.get_include()
    assert os.path.isfile(os.path.join(include, "gilfree.h")), include


def test_header_is_self_contained(tmp_path):
    import gilfree

    src = tmp_path / "uses_gilfree.c"
    # First thing in the file, and twice: no prerequisite include, and a guard.
    src.write_text('#include "gilfree.h"\n#include "gilfree.h"\nint main(void) { return 0; }\n')
    proc = subprocess.run(
        [compiler(), "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
         "-I", gilfree.get_include(), "-isystem", sysconfig.get_paths()["include"], str(src)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, describe(proc)


def test_c_api_capsule():
    import gilfree._core

    capsule = gilfree._core._C_API
    assert type(capsule).__name__ == "PyCapsule"
    is_valid = ctypes.pythonapi.PyCapsule_IsValid
    is_valid.restype = ctypes.c_int
    is_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]
    assert is_valid(capsule, b"gilfree._core._C_API") == 1
