"""gilfree.demo: the seeds' workloads (a C loop that keeps the GIL and one that releases it)."""

import ctypes
import threading
import types

import pytest

from support import T


@pytest.fixture(scope="module")
def demo():
    import gilfree.demo

    return gilfree.demo


@pytest.mark.parametrize("n", [0, 1, 2, 1000, 123_457])
def test_holding_and_releasing_loops_compute_the_same_checksum(demo, n):
    held = demo.busy_loop_holding_gil(n)
    released = demo.busy_loop_releasing_gil(n)
    assert isinstance(held, int) and isinstance(released, int)
    assert held == released


def test_checksum_depends_on_the_work_done(demo):
    # A checksum that ignored n would let the compiler drop the loop it measures.
    assert len({demo.busy_loop_releasing_gil(n) for n in (1, 2, 3, 1000, 1001)}) > 1


def progress_of_another_thread_during(call, n):
    """How far a spinning Python thread counted while ``call(n)`` ran in this one.

    Both samples are taken by this thread right around the call: if the call
    keeps the GIL, the spinner cannot count between them.
    """
    counter = [0]
    stop, spinning = threading.Event(), threading.Event()

    def spin():
        spinning.set()
        while not stop.is_set():
            counter[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        assert spinning.wait(T)
        before = counter[0]
        call(n)
        after = counter[0]
    finally:
        stop.set()
        spinner.join(T)
    return after - before


def test_releasing_loop_lets_python_threads_run(demo):
    # Grow the loop until it runs long enough for the spinner to be scheduled;
    # with the GIL really released, the first long-enough call shows progress.
    # No duration is asserted: a loop that kept the GIL would show none at any n.
    for n in (10**5, 10**6, 10**7, 10**8, 10**9):
        progress = progress_of_another_thread_during(demo.busy_loop_releasing_gil, n)
        if progress > 0:
            break
    assert progress > 0


def test_releasing_loops_run_on_a_pool(demo):
    import gilfree

    n = 200_000
    expected = demo.busy_loop_holding_gil(n)
    with gilfree.ThreadPoolExecutor(max_workers=2) as ex:
        assert list(ex.map(demo.busy_loop_releasing_gil, [n] * 8)) == [expected] * 8


def test_countdown_is_the_pure_python_seed_loop(demo):
    assert isinstance(demo.countdown, types.FunctionType)
    demo.countdown(0)
    demo.countdown(10_000)


def test_native_demo_functions(demo):
    import gilfree.native as native

    for name in ("NATIVE_BUSY_RANGE", "NATIVE_EMPTY_TASK", "NATIVE_EMPTY_RANGE"):
        address = getattr(demo, name)
        assert isinstance(address, int) and address != 0, name
    assert isinstance(native.submit(demo.NATIVE_EMPTY_TASK).result(timeout=T), int)
    native.parallel_for(demo.NATIVE_EMPTY_RANGE, 100_000)
    native.parallel_for(demo.NATIVE_BUSY_RANGE, 64)  # NULL arg: 1000 iterations per index
    iterations = ctypes.c_int64(10)
    native.parallel_for(demo.NATIVE_BUSY_RANGE, 10_000, iterations, chunksize=100)
    native.parallel_for(demo.NATIVE_BUSY_RANGE, 1000, ctypes.addressof(iterations))
