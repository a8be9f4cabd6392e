"""Bad input and broken pools."""

import concurrent.futures
import multiprocessing
import os
import re
import threading
from concurrent.futures.thread import BrokenThreadPool

import pytest

import tasks
from backends import CF, MP, PLANNED_POOL_BACKENDS, PoolCase, cross, requires
from support import T


class BadInputBehaviour(PoolCase):
    """Argument errors every pool reports the same way, whatever its vocabulary."""

    vocab = CF

    @pytest.mark.parametrize("workers", [0, -1])
    def test_workers_must_be_positive(self, workers):
        with pytest.raises(ValueError):
            self.make_pool(workers=workers)

    def test_non_callable_initializer(self):
        with pytest.raises(TypeError, match="initializer must be a callable"):
            self.make_pool(initializer=42)

    def test_non_callable_fn_fails_with_type_error(self):
        pool = self.make_pool()
        with pytest.raises(TypeError):
            pool.submit(42).result(timeout=T)
        assert pool.submit(tasks.identity, "still fine").result(timeout=T) == "still fine"

    @requires("eager_type_check")
    def test_non_callable_fn_is_rejected_at_submit_time(self):
        pool = self.make_pool()
        with pytest.raises(TypeError):
            pool.submit(42)
        with pytest.raises(TypeError):
            pool.submit("not a function", 1)
        with pytest.raises(TypeError):
            pool.map(None, [1, 2])

    def test_submit_needs_a_function(self):
        pool = self.make_pool()
        with pytest.raises(TypeError):
            pool.submit()

    @requires("broken_on_init_failure")
    def test_failing_initializer_breaks_the_pool(self):
        pool = self.make_pool(workers=2, initializer=tasks.init_fail)
        first = pool.submit(tasks.identity, 1)
        with pytest.raises(self.broken_error):
            first.result(timeout=T)
        assert isinstance(first.exception(timeout=0), self.broken_error)
        # Once broken, the pool refuses new work at once.
        with pytest.raises(self.broken_error):
            pool.submit(tasks.identity, 2)
        pool.shutdown(wait=True)


class MpBadInputBehaviour(PoolCase):
    vocab = MP

    @pytest.mark.parametrize("workers", [0, -3])
    def test_workers_must_be_positive(self, workers):
        with pytest.raises(ValueError):
            self.make_pool(workers=workers)

    def test_non_callable_initializer(self):
        with pytest.raises(TypeError, match="initializer must be a callable"):
            self.make_pool(initializer="nope")

    @requires("maxtasksperchild")
    @pytest.mark.parametrize("bad", [0, -1])
    def test_maxtasksperchild_must_be_positive(self, bad):
        with pytest.raises(ValueError):
            self.make_pool(maxtasksperchild=bad)

    @pytest.mark.parametrize("call", ["imap", "imap_unordered"])
    def test_imap_chunksize_must_be_positive(self, call):
        pool = self.make_pool()
        with pytest.raises(ValueError):
            list(getattr(pool, call)(tasks.identity, [1, 2], 0))

    def test_non_callable_func_fails_with_type_error(self):
        pool = self.make_pool()
        with pytest.raises(TypeError):
            pool.apply_async(42).get(timeout=T)
        with pytest.raises(TypeError):
            pool.map(42, [1, 2])
        assert pool.apply(tasks.identity, ("still fine",)) == "still fine"

    @requires("eager_type_check")
    def test_non_callable_func_is_rejected_at_call_time(self):
        pool = self.make_pool()
        for call in (
            lambda: pool.apply_async(42),
            lambda: pool.map_async(42, [1]),
            lambda: pool.starmap_async(42, [(1,)]),
            lambda: pool.imap(42, [1]),
            lambda: pool.imap_unordered(42, [1]),
        ):
            with pytest.raises(TypeError):
                call()

    @requires("broken_on_init_failure")
    def test_failing_initializer_breaks_apply_async(self):
        pool = self.make_pool(workers=1, initializer=tasks.init_fail)
        with pytest.raises(self.broken_error):
            pool.apply_async(tasks.identity, (1,)).get(timeout=T)
        with pytest.raises(self.broken_error):
            # Either refused at once or failed in its result: never run, never hung.
            pool.apply_async(tasks.identity, (2,)).get(timeout=T)


cross(globals(), BadInputBehaviour, MpBadInputBehaviour)


# -- gilfree-only: constructor messages and backend names -----------------------


@pytest.fixture
def gilfree():
    import gilfree

    return gilfree


def test_executor_max_workers_message(gilfree):
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            gilfree.ThreadPoolExecutor(max_workers=bad)


def test_executor_is_a_concurrent_futures_executor(gilfree):
    with gilfree.ThreadPoolExecutor(max_workers=1) as ex:
        assert isinstance(ex, concurrent.futures.Executor)


def test_timeout_error_is_both_kinds(gilfree):
    assert issubclass(gilfree.TimeoutError, TimeoutError)
    assert issubclass(gilfree.TimeoutError, multiprocessing.TimeoutError)


def test_executor_default_max_workers_is_the_stdlib_default(gilfree):
    cpus = (os.process_cpu_count() if hasattr(os, "process_cpu_count") else None) or os.cpu_count() or 1
    expected = min(32, cpus + 4)
    barrier = threading.Barrier(expected)
    with gilfree.ThreadPoolExecutor() as ex:
        # Each task passes the barrier only when `expected` of them run at once.
        futures = [ex.submit(tasks.barrier_wait, barrier) for _ in range(expected)]
        assert sorted(f.result(timeout=T) for f in futures) == list(range(expected))


def test_broken_thread_pool_is_the_stdlib_class(gilfree):
    assert gilfree.BrokenThreadPool is BrokenThreadPool


def test_pool_properties_and_defaults(gilfree):
    pool = gilfree.Pool(workers=3)
    try:
        assert pool.workers == 3
        assert pool.backend == "threads"
    finally:
        pool.shutdown()
    pool = gilfree.Pool()
    try:
        cpus = {os.cpu_count(), len(os.sched_getaffinity(0))}
        if hasattr(os, "process_cpu_count"):
            cpus.add(os.process_cpu_count())
        assert pool.workers in cpus
        assert isinstance(pool.workers, int)
    finally:
        pool.shutdown()


@pytest.mark.parametrize("name", PLANNED_POOL_BACKENDS)
def test_planned_backends_are_not_implemented_yet(gilfree, name):
    with pytest.raises(NotImplementedError) as info:
        gilfree.Pool(workers=1, backend=name)
    message = str(info.value)
    assert name in message and "threads" in message, message


@pytest.mark.parametrize("name", ["thread", "Threads", "", "gpu"])
def test_unknown_backend_is_a_value_error_listing_the_valid_names(gilfree, name):
    with pytest.raises(ValueError) as info:
        gilfree.Pool(workers=1, backend=name)
    message = str(info.value)
    for valid in ("threads",) + PLANNED_POOL_BACKENDS:
        assert re.search(rf"\b{valid}\b", message), (valid, message)
