"""Futures: state, results, cancellation, callbacks, and the stdlib's wait/as_completed."""

import concurrent.futures as cf
import gc
import logging
import multiprocessing
import threading
import traceback
import weakref

import pytest

import tasks
from backends import CF, PoolCase, cross, requires
from support import T, wait_until


def formatted(exc):
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class FuturesBehaviour(PoolCase):
    vocab = CF

    def blocked_pool(self, workers=1):
        """A pool whose workers are all busy on one gate: the next submission stays pending."""
        pool = self.make_pool(workers=workers)
        gate = self.event()
        blockers = []
        for _ in range(workers):
            started = self.event()
            blockers.append(pool.submit(tasks.start_and_wait, started, gate, "blocker"))
            assert started.wait(T), "a blocker never started"
        return pool, gate, blockers

    # -- results and state --------------------------------------------------

    def test_result_and_state_of_a_finished_task(self):
        pool = self.make_pool()
        f = pool.submit(tasks.square, 7)
        assert f.result(timeout=T) == 49
        assert f.done()
        assert not f.running()
        assert not f.cancelled()
        assert f.exception(timeout=T) is None
        assert f.cancel() is False  # a finished future cannot be cancelled

    def test_submit_passes_args_and_kwargs_through(self):
        pool = self.make_pool()
        f = pool.submit(tasks.echo, 1, "two", three=3, fn="a kwarg named fn", self="and self")
        assert f.result(timeout=T) == ((1, "two"), {"three": 3, "fn": "a kwarg named fn", "self": "and self"})

    def test_future_is_a_concurrent_futures_future(self):
        pool = self.make_pool()
        f = pool.submit(tasks.identity, None)
        for cls in self.future_types():
            assert isinstance(f, cls)
        assert f.result(timeout=T) is None

    def test_exception_is_returned_and_raised_with_its_traceback(self):
        pool = self.make_pool()
        f = pool.submit(tasks.raise_value_error, "bad input")
        exc = f.exception(timeout=T)
        assert type(exc) is ValueError
        assert str(exc) == "bad input"
        assert f.done() and not f.cancelled()
        # The task's own frame is in the traceback, not only the pool's.
        assert "raise_value_error" in formatted(exc)
        with pytest.raises(ValueError, match="bad input") as info:
            f.result(timeout=T)
        assert "raise_value_error" in formatted(info.value)

    def test_base_exception_in_task_is_captured_and_pool_survives(self):
        pool = self.make_pool(workers=1)
        f = pool.submit(tasks.raise_system_exit, 3)
        exc = f.exception(timeout=T)
        assert isinstance(exc, SystemExit) and exc.code == 3
        assert pool.submit(tasks.square, 5).result(timeout=T) == 25

    def test_result_timeout_raises_timeout_error(self):
        pool, gate, _ = self.blocked_pool()
        f = pool.submit(tasks.identity, "late")
        with pytest.raises(TimeoutError):
            f.result(timeout=0.05)
        with pytest.raises(cf.TimeoutError):
            f.exception(timeout=0.05)
        assert not f.done()
        gate.set()
        assert f.result(timeout=T) == "late"

    def test_running_task_reports_running_and_cannot_be_cancelled(self):
        pool = self.make_pool(workers=1)
        started, gate = self.event(), self.event()
        f = pool.submit(tasks.start_and_wait, started, gate, "ran")
        assert started.wait(T)
        assert f.running()
        assert not f.done()
        assert f.cancel() is False
        assert not f.cancelled()
        gate.set()
        assert f.result(timeout=T) == "ran"
        assert not f.running()

    def test_cancel_pending_task(self):
        pool, gate, blockers = self.blocked_pool()
        sink = self.sink()
        f = pool.submit(tasks.record, sink, "must not run")
        assert not f.running() and not f.done()
        assert f.cancel() is True
        assert f.cancelled() and f.done() and not f.running()
        assert f.cancel() is True  # cancelling twice is still "cancelled"
        with pytest.raises(cf.CancelledError):
            f.result(timeout=0)
        with pytest.raises(cf.CancelledError):
            f.exception(timeout=0)
        gate.set()
        assert blockers[0].result(timeout=T) == "blocker"
        # The pool goes on, and the cancelled task never ran.
        assert pool.submit(tasks.square, 6).result(timeout=T) == 36
        pool.shutdown(wait=True)
        assert list(sink) == []

    def test_tasks_queued_behind_a_running_one_are_pending(self):
        # Submitted before the worker even started the first: none of them may
        # be claimed early (running, not cancellable) by a batching worker.
        pool = self.make_pool(workers=1)
        started, gate = self.event(), self.event()
        futures = [pool.submit(tasks.start_and_wait, started, gate)] + [pool.submit(tasks.identity, i) for i in range(5)]
        assert started.wait(T)
        assert [f.running() for f in futures[1:]] == [False] * 5
        assert [f.cancel() for f in futures[1:]] == [True] * 5
        gate.set()
        assert futures[0].result(timeout=T) is None

    def test_many_futures_all_resolve(self):
        pool = self.make_pool()
        n = 10_000
        futures = [pool.submit(tasks.square, i) for i in range(n)]
        done, not_done = cf.wait(futures, timeout=T * 2)
        assert not not_done
        assert len(done) == n
        assert [f.result() for f in futures] == [i * i for i in range(n)]

    def test_wait_and_as_completed_never_miss_a_completion(self):
        # Futures finish on other threads while concurrent.futures.wait and
        # as_completed hold every future's lock and read its state: a state
        # that changed between their reads was once lost. A race, so repeat.
        pool = self.make_pool(workers=2)
        for _ in range(6):
            futures = [pool.submit(tasks.square, i) for i in range(3000)]
            done, not_done = cf.wait(futures, timeout=T * 2)
            assert not not_done and len(done) == len(futures)
            futures = [pool.submit(tasks.square, i) for i in range(3000)]
            assert len(set(cf.as_completed(futures, timeout=T * 2))) == len(futures)

    def test_submitting_from_many_threads_at_once(self):
        pool = self.make_pool()
        per_thread, n_threads = 2000, 4
        barrier = threading.Barrier(n_threads)
        results = [None] * n_threads

        def submitter(k):
            barrier.wait(T)
            futures = [pool.submit(tasks.add, k, i) for i in range(per_thread)]
            results[k] = [f.result(timeout=T) for f in futures]

        threads = [threading.Thread(target=submitter, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T * 2)
        assert results == [[k + i for i in range(per_thread)] for k in range(n_threads)]

    def test_cancel_racing_with_the_workers_is_consistent(self):
        pool = self.make_pool(workers=2)
        sink = self.sink()
        n = 4000
        futures = [pool.submit(tasks.record, sink, i) for i in range(n)]
        said_cancelled = {i for i, f in enumerate(futures) if i % 2 and f.cancel()}
        done, not_done = cf.wait(futures, timeout=T * 2)
        assert not not_done
        pool.shutdown(wait=True)
        ran = list(sink)
        assert len(ran) == len(set(ran))  # nothing ran twice
        for i, f in enumerate(futures):
            if f.cancelled():
                assert i in said_cancelled and i not in ran
            else:
                assert i not in said_cancelled and f.result(timeout=0) == i and i in ran
        assert len(ran) + len(said_cancelled) == n

    def test_shutdown_cancel_futures_racing_with_the_workers_is_consistent(self):
        pool = self.make_pool(workers=2)
        sink = self.sink()
        futures = [pool.submit(tasks.record, sink, i) for i in range(4000)]
        pool.shutdown(wait=True, cancel_futures=True)
        assert all(f.done() for f in futures)
        ran = list(sink)
        assert len(ran) == len(set(ran))
        assert {i for i, f in enumerate(futures) if not f.cancelled()} == set(ran)

    def test_many_threads_wait_on_one_future(self):
        pool, gate, _ = self.blocked_pool()
        f = pool.submit(tasks.identity, "shared")
        got, ready = [], threading.Barrier(9)

        def waiter():
            ready.wait(T)
            got.append(f.result(timeout=T))

        threads = [threading.Thread(target=waiter) for _ in range(8)]
        for t in threads:
            t.start()
        ready.wait(T)
        gate.set()
        for t in threads:
            t.join(T)
        assert got == ["shared"] * 8

    @requires("objects_by_reference")
    def test_task_can_submit_to_its_own_pool(self):
        pool = self.make_pool(workers=2)
        key = id(pool)
        tasks.POOLS[key] = pool
        try:
            # One outer task at a time: its inner task needs the other worker
            # (with every worker waiting on an inner task, any pool deadlocks).
            for i in range(20):
                assert pool.submit(tasks.submit_and_wait, key, i).result(timeout=T) == i * i
        finally:
            del tasks.POOLS[key]

    @requires("objects_by_reference")
    def test_finished_work_is_not_kept_alive(self):
        # Once a task has finished and the caller dropped its future, the pool
        # must not pin the future, its result, its arguments or its exception
        # (a big result would stay in memory until the pool's next job).
        pool = self.make_pool(workers=2)
        arg = tasks.Payload()
        f = pool.submit(tasks.make_payload, arg)
        refs = {"argument": weakref.ref(arg), "result": weakref.ref(f.result(timeout=T)), "future": weakref.ref(f)}
        payload = tasks.Payload()
        bad = pool.submit(tasks.raise_payload_error, payload)
        assert isinstance(bad.exception(timeout=T), tasks.PayloadError)
        refs["exception payload"] = weakref.ref(payload)
        refs["failed future"] = weakref.ref(bad)
        del arg, f, payload, bad

        def alive():
            gc.collect()
            return sorted(name for name, ref in refs.items() if ref() is not None)

        assert wait_until(lambda: not alive(), timeout=5), f"still alive: {alive()}"

    def test_huge_and_non_positive_timeouts(self):
        pool, gate, _ = self.blocked_pool()
        f = pool.submit(tasks.identity, "v")
        for timeout in (0, -1, 0.0):
            with pytest.raises(TimeoutError):
                f.result(timeout=timeout)
        opener = threading.Timer(0.05, gate.set)
        opener.start()
        try:
            assert f.result(timeout=1e9) == "v"  # no overflow into an instant timeout
        finally:
            opener.join()
        assert f.result(timeout=0) == "v" and f.result(timeout=-1) == "v"
        assert f.exception(timeout=1e9) is None

    def test_pending_work_completes_after_the_pool_is_dropped(self):
        pool = self.construct(1)  # not make_pool: the test drops the last reference
        gate = self.event()
        futures = [pool.submit(tasks.wait_event, gate, "first")] + [pool.submit(tasks.square, i) for i in range(10)]
        del pool
        gc.collect()
        gate.set()
        assert [f.result(timeout=T) for f in futures] == ["first"] + [i * i for i in range(10)]

    # -- done callbacks -----------------------------------------------------

    def test_callback_may_add_callbacks_and_read_the_future(self):
        pool, gate, _ = self.blocked_pool()
        f = pool.submit(tasks.identity, 8)
        seen, finished = [], threading.Event()

        def first(fut):
            seen.append(("first", fut.result(timeout=0), fut.exception(timeout=0), fut.done()))
            fut.add_done_callback(second)  # already done: runs at once, in this thread

        def second(fut):
            seen.append(("second", fut.result(timeout=0)))
            finished.set()

        f.add_done_callback(first)
        gate.set()
        assert finished.wait(T)
        assert seen == [("first", 8, None, True), ("second", 8)]

    def test_callbacks_racing_with_completion_run_exactly_once(self):
        pool = self.make_pool(workers=2)
        n = 3000
        counts = [0] * n
        lock = threading.Lock()
        all_called = threading.Event()

        def callback(fut):
            with lock:
                counts[fut.result()] += 1
                if sum(counts) == n:
                    all_called.set()

        for i in range(n):
            pool.submit(tasks.identity, i).add_done_callback(callback)
        assert all_called.wait(T)
        pool.shutdown(wait=True)
        assert counts == [1] * n

    def test_done_callback_added_before_completion_runs_once(self):
        pool, gate, _ = self.blocked_pool()
        f = pool.submit(tasks.identity, "value")
        calls, called = [], threading.Event()

        def callback(fut):
            calls.append((fut, fut.done(), fut.result(timeout=0)))
            called.set()

        f.add_done_callback(callback)
        assert calls == []  # not done yet: the only worker is blocked
        gate.set()
        assert called.wait(T)
        pool.shutdown(wait=True)
        assert calls == [(f, True, "value")]
        assert calls[0][0] is f

    def test_done_callback_added_after_completion_runs_at_once_in_the_caller(self):
        pool = self.make_pool()
        f = pool.submit(tasks.identity, 1)
        f.result(timeout=T)
        calls = []
        f.add_done_callback(lambda fut: calls.append((fut, threading.get_ident())))
        assert calls == [(f, threading.get_ident())]
        pool.shutdown(wait=True)
        assert len(calls) == 1

    def test_done_callbacks_run_in_order_they_were_added(self):
        pool, gate, _ = self.blocked_pool()
        f = pool.submit(tasks.identity, 1)
        order, last = [], threading.Event()
        for i in range(5):
            f.add_done_callback(lambda fut, i=i: order.append(i))
        f.add_done_callback(lambda fut: last.set())
        gate.set()
        assert last.wait(T)
        assert order == [0, 1, 2, 3, 4]

    def test_done_callback_of_cancelled_future(self):
        pool, gate, _ = self.blocked_pool()
        f = pool.submit(tasks.identity, 1)
        calls = []
        f.add_done_callback(lambda fut: calls.append(fut.cancelled()))
        assert f.cancel()
        assert calls == [True]
        gate.set()
        pool.shutdown(wait=True)
        assert calls == [True]

    def test_done_callback_may_submit_more_work(self):
        pool, gate, _ = self.blocked_pool(workers=2)
        f = pool.submit(tasks.identity, 1)
        chained, submitted = [], threading.Event()

        def callback(fut):
            chained.append(pool.submit(tasks.square, fut.result() + 1))
            submitted.set()

        f.add_done_callback(callback)
        gate.set()
        assert submitted.wait(T)
        assert chained[0].result(timeout=T) == 4

    def test_exception_in_callback_is_logged_not_raised(self, caplog):
        caplog.set_level(logging.ERROR, logger="concurrent.futures")
        pool, gate, _ = self.blocked_pool()
        f = pool.submit(tasks.identity, 1)
        after = threading.Event()

        def bad_callback(fut):
            raise ZeroDivisionError("callback failed on purpose")

        f.add_done_callback(bad_callback)
        f.add_done_callback(lambda fut: after.set())  # later callbacks still run
        gate.set()
        assert after.wait(T)
        assert f.result(timeout=T) == 1
        # Added after completion: called at once, and still only logged.
        f.add_done_callback(bad_callback)
        records = [r for r in caplog.records if r.name == "concurrent.futures" and r.exc_info]
        assert len(records) == 2, caplog.text
        assert all(r.exc_info[0] is ZeroDivisionError for r in records)

    # -- concurrent.futures.wait / as_completed, mixed with stdlib futures --

    def test_wait_first_completed_with_a_stdlib_future(self):
        pool, gate, _ = self.blocked_pool()
        mine = pool.submit(tasks.identity, "mine")
        theirs = cf.Future()
        theirs.set_result("theirs")
        done, not_done = cf.wait([mine, theirs], timeout=T, return_when=cf.FIRST_COMPLETED)
        assert done == {theirs} and not_done == {mine}

        # Now the gilfree future completes while wait() is blocked on it.
        theirs2 = cf.Future()
        opener = threading.Timer(0.05, gate.set)
        opener.start()
        try:
            done, not_done = cf.wait([mine, theirs2], timeout=T, return_when=cf.FIRST_COMPLETED)
        finally:
            opener.join()
        assert done == {mine} and not_done == {theirs2}
        assert mine.result(timeout=0) == "mine"

    def test_wait_first_exception(self):
        pool = self.make_pool(workers=2)
        gate, hold = self.event(), self.event()
        ok = pool.submit(tasks.identity, 1)
        slow = pool.submit(tasks.wait_event, hold, "slow")
        bad = pool.submit(tasks.wait_then_raise, gate, "first exception")
        theirs = cf.Future()
        opener = threading.Timer(0.05, gate.set)
        opener.start()
        try:
            done, not_done = cf.wait([ok, slow, bad, theirs], timeout=T, return_when=cf.FIRST_EXCEPTION)
        finally:
            opener.join()
        assert bad in done and ok in done
        assert not_done == {slow, theirs}
        assert isinstance(bad.exception(timeout=0), ValueError)
        hold.set()

    def test_wait_all_completed_with_timeout(self):
        pool, gate, _ = self.blocked_pool()
        mine = pool.submit(tasks.identity, "mine")
        theirs = cf.Future()
        theirs.set_result(0)
        done, not_done = cf.wait([mine, theirs], timeout=0.05, return_when=cf.ALL_COMPLETED)
        assert done == {theirs} and not_done == {mine}
        gate.set()
        done, not_done = cf.wait([mine, theirs], timeout=T)
        assert done == {mine, theirs} and not not_done

    def test_as_completed_yields_each_future_once(self):
        pool = self.make_pool()
        gate = self.event()
        mine = [pool.submit(tasks.square, i) for i in range(20)]
        late = pool.submit(tasks.wait_event, gate, "late")
        theirs = cf.Future()
        everything = mine + [late, theirs]
        seen = []
        for f in cf.as_completed(everything, timeout=T):
            seen.append(f)
            if len(seen) == len(mine):
                # The rest can only finish now, while as_completed waits.
                gate.set()
                theirs.set_result("theirs")
        assert len(seen) == len(everything)
        assert set(seen) == set(everything)
        assert late.result(timeout=0) == "late"

    def test_as_completed_timeout(self):
        pool, gate, _ = self.blocked_pool()
        done = cf.Future()
        done.set_result(1)
        pending = pool.submit(tasks.identity, 2)
        it = cf.as_completed([pending, done], timeout=0.05)
        assert next(it) is done
        with pytest.raises(TimeoutError):
            next(it)
        gate.set()
        assert pending.result(timeout=T) == 2

    # -- the multiprocessing.AsyncResult side of gilfree.Future -------------

    @requires("gilfree_future")
    def test_future_has_async_result_methods(self):
        pool, gate, _ = self.blocked_pool()
        f = pool.submit(tasks.identity, "v")
        assert f.ready() is False
        with pytest.raises(ValueError):
            f.successful()
        with pytest.raises(multiprocessing.TimeoutError):
            f.get(timeout=0.05)
        f.wait(timeout=0.05)  # returns quietly even though it is not ready
        assert not f.ready()
        gate.set()
        f.wait(timeout=T)
        assert f.ready() and f.successful()
        assert f.get(timeout=T) == "v"

        bad = pool.submit(tasks.raise_value_error, "nope")
        bad.wait(timeout=T)
        assert bad.ready() and bad.successful() is False
        with pytest.raises(ValueError, match="nope"):
            bad.get(timeout=T)

    @requires("gilfree_future", "dual_timeout_error")
    def test_get_timeout_error_is_both_kinds(self):
        pool, gate, _ = self.blocked_pool()
        f = pool.submit(tasks.identity, "v")
        with pytest.raises(TimeoutError) as info:
            f.get(timeout=0.01)
        assert isinstance(info.value, multiprocessing.TimeoutError)
        gate.set()


cross(globals(), FuturesBehaviour)
