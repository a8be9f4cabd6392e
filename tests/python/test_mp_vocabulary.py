"""multiprocessing.Pool's vocabulary: apply, AsyncResult, close/join/terminate."""

import concurrent.futures as cf
import multiprocessing
import threading
import traceback
import uuid

import pytest

import tasks
from backends import CF, MP, PoolCase, cross, requires
from support import T


class ApplyBehaviour(PoolCase):
    vocab = MP

    def blocked_pool(self):
        pool = self.make_pool(workers=1)
        started, gate = self.event(), self.event()
        blocker = pool.apply_async(tasks.start_and_wait, (started, gate, "blocker"))
        assert started.wait(T)
        return pool, gate, blocker

    def test_apply(self):
        pool = self.make_pool()
        assert pool.apply(tasks.add, (2, 3)) == 5
        assert pool.apply(tasks.echo, (1,), {"k": "v"}) == ((1,), {"k": "v"})
        assert pool.apply(tasks.echo) == ((), {})

    def test_apply_raises_the_task_exception(self):
        pool = self.make_pool()
        with pytest.raises(ValueError, match="applied"):
            pool.apply(tasks.raise_value_error, ("applied",))

    def test_apply_async_get_wait_ready_successful(self):
        pool = self.make_pool()
        r = pool.apply_async(tasks.add, (20, 22))
        assert r.get(timeout=T) == 42
        r.wait(timeout=T)
        assert r.ready() is True
        assert r.successful() is True

    def test_pending_result_not_ready(self):
        pool, gate, blocker = self.blocked_pool()
        r = pool.apply_async(tasks.identity, ("later",))
        assert r.ready() is False
        with pytest.raises(ValueError):
            r.successful()
        r.wait(timeout=0.05)  # a wait that times out returns quietly
        assert r.ready() is False
        gate.set()
        assert r.get(timeout=T) == "later"
        assert blocker.get(timeout=T) == "blocker"

    def test_get_timeout_raises_multiprocessing_timeout_error(self):
        pool, gate, _ = self.blocked_pool()
        r = pool.apply_async(tasks.identity, (1,))
        with pytest.raises(multiprocessing.TimeoutError):
            r.get(timeout=0.05)
        gate.set()
        assert r.get(timeout=T) == 1

    @requires("dual_timeout_error")
    def test_get_timeout_is_also_the_builtin_timeout_error(self):
        pool, gate, _ = self.blocked_pool()
        r = pool.apply_async(tasks.identity, (1,))
        with pytest.raises(TimeoutError):
            r.get(timeout=0.05)
        gate.set()

    def test_apply_async_exception(self):
        pool = self.make_pool()
        r = pool.apply_async(tasks.raise_value_error, ("async failure",))
        r.wait(timeout=T)
        assert r.ready() and r.successful() is False
        with pytest.raises(ValueError, match="async failure") as info:
            r.get(timeout=T)
        exc = info.value
        assert "raise_value_error" in "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def test_apply_async_callback(self):
        pool = self.make_pool()
        got, called = [], threading.Event()

        def callback(value):
            got.append(value)
            called.set()

        r = pool.apply_async(tasks.square, (9,), callback=callback, error_callback=got.append)
        assert r.get(timeout=T) == 81
        assert called.wait(T)  # callbacks may run just after get() returns
        pool.close()
        pool.join()
        assert got == [81]

    def test_apply_async_error_callback(self):
        pool = self.make_pool()
        got, called = [], threading.Event()

        def error_callback(exc):
            got.append(exc)
            called.set()

        r = pool.apply_async(tasks.raise_value_error, ("for the callback",), callback=got.append,
                             error_callback=error_callback)
        with pytest.raises(ValueError):
            r.get(timeout=T)
        assert called.wait(T)
        pool.close()
        pool.join()
        assert len(got) == 1 and isinstance(got[0], ValueError) and str(got[0]) == "for the callback"

    def test_initializer_runs_in_each_worker_with_initargs(self):
        token = uuid.uuid4().hex
        tasks.reset_init_state()
        pool = self.make_pool(workers=2, initializer=tasks.init_worker, initargs=(token,))
        states = pool.map(tasks.init_state, range(200), 1)
        assert 1 <= len({ident for ident, _, _ in states}) <= 2
        assert {(count, tok) for _, count, tok in states} == {(1, token)}

    @requires("maxtasksperchild")
    def test_maxtasksperchild_is_accepted(self):
        pool = self.make_pool(workers=2, maxtasksperchild=3)
        assert pool.map(tasks.square, range(50), 1) == [i * i for i in range(50)]
        assert pool.apply(tasks.add, (1, 2)) == 3

    def test_many_apply_async(self):
        pool = self.make_pool()
        results = [pool.apply_async(tasks.square, (i,)) for i in range(5000)]
        assert [r.get(timeout=T) for r in results] == [i * i for i in range(5000)]


class CloseJoinTerminateBehaviour(PoolCase):
    vocab = MP

    def test_join_while_running_raises(self):
        pool = self.make_pool()
        with pytest.raises(ValueError, match="Pool is still running"):
            pool.join()

    def test_close_then_join_finishes_submitted_work(self):
        pool = self.make_pool(workers=2)
        gate = self.event()
        results = [pool.apply_async(tasks.wait_event, (gate, i)) for i in range(6)]
        pool.close()
        opener = threading.Timer(0.05, gate.set)
        opener.start()
        try:
            pool.join()
        finally:
            opener.join()
        assert all(r.ready() for r in results)
        assert [r.get(timeout=0) for r in results] == list(range(6))

    @pytest.mark.parametrize("stop", ["close", "terminate"])
    @pytest.mark.parametrize(
        "call",
        ["apply", "apply_async", "map", "map_async", "starmap", "starmap_async", "imap", "imap_unordered"],
    )
    def test_no_new_work_after_close_or_terminate(self, stop, call):
        pool = self.make_pool()
        getattr(pool, stop)()
        args = {
            "apply": (tasks.identity, (1,)),
            "apply_async": (tasks.identity, (1,)),
            "map": (tasks.identity, [1]),
            "map_async": (tasks.identity, [1]),
            "starmap": (tasks.add, [(1, 2)]),
            "starmap_async": (tasks.add, [(1, 2)]),
            "imap": (tasks.identity, [1]),
            "imap_unordered": (tasks.identity, [1]),
        }[call]
        with pytest.raises(ValueError, match="Pool not running"):
            result = getattr(pool, call)(*args)
            if call.startswith("imap"):
                list(result)
        pool.join()

    def test_close_and_terminate_twice_are_harmless(self):
        pool = self.make_pool()
        assert pool.apply(tasks.identity, (1,)) == 1
        pool.close()
        pool.close()
        pool.terminate()
        pool.terminate()
        pool.join()
        pool.join()

    def test_terminate_idle_pool_then_join(self):
        pool = self.make_pool()
        assert pool.map(tasks.square, range(10)) == [i * i for i in range(10)]
        pool.terminate()
        pool.join()

    @requires("terminate_cancels")
    def test_terminate_cancels_pending_work(self):
        pool = self.make_pool(workers=1)
        started, gate = self.event(), self.event()
        running = pool.apply_async(tasks.start_and_wait, (started, gate, "running"))
        assert started.wait(T)
        sink = self.sink()
        pending = [pool.apply_async(tasks.record, (sink, i)) for i in range(5)]
        stopper = threading.Thread(target=pool.terminate)
        stopper.start()
        try:
            for r in pending:
                r.wait(timeout=T)
                assert r.ready() and not r.successful()
                assert r.cancelled()
        finally:
            gate.set()
            stopper.join(T)
        assert not stopper.is_alive()
        pool.join()
        assert list(sink) == []  # no pending task ran
        assert running.ready()

    def test_context_manager_returns_the_pool(self):
        pool = self.make_pool()
        with pool as entered:
            assert entered is pool
            assert pool.apply(tasks.identity, ("in",)) == "in"
        with pytest.raises(ValueError, match="Pool not running"):
            pool.apply_async(tasks.identity, (1,))

    @requires("exit_waits")
    def test_leaving_the_with_block_waits_for_submitted_work(self):
        pool = self.make_pool(workers=1)
        gate = self.event()
        opener = threading.Timer(0.05, gate.set)
        with pool:
            results = [pool.apply_async(tasks.wait_event, (gate, i)) for i in range(3)]
            opener.start()
        opener.join()
        assert [r.get(timeout=0) for r in results] == [0, 1, 2]


class BothVocabulariesBehaviour(PoolCase):
    """A pool that speaks both vocabularies: how they meet."""

    vocab = (CF, MP)

    @pytest.mark.parametrize("stop", ["close", "shutdown", "terminate"])
    def test_after_stopping_each_vocabulary_refuses_in_its_own_words(self, stop):
        pool = self.make_pool()
        getattr(pool, stop)()
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            pool.submit(tasks.identity, 1)
        # map belongs to both vocabularies: it answers in the words of the
        # call that stopped the pool (multiprocessing's after close/terminate).
        if stop == "shutdown":
            with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
                pool.map(tasks.identity, [1], timeout=T)
        else:
            with pytest.raises(ValueError, match="Pool not running"):
                pool.map(tasks.identity, [1], timeout=T)
        with pytest.raises(ValueError, match="Pool not running"):
            pool.apply_async(tasks.identity, (1,))
        with pytest.raises(ValueError, match="Pool not running"):
            list(pool.imap(tasks.identity, [1]))
        if stop != "shutdown":
            pool.join()

    def test_async_results_are_futures(self):
        pool = self.make_pool()
        applied = pool.apply_async(tasks.square, (3,))
        mapped = pool.map_async(tasks.square, range(4))
        starred = pool.starmap_async(tasks.add, [(1, 2)])
        submitted = pool.submit(tasks.square, 5)
        everything = [applied, mapped, starred, submitted]
        for r in everything:
            for cls in self.future_types():
                assert isinstance(r, cls)
        done, not_done = cf.wait(everything, timeout=T)
        assert not not_done
        assert [r.result() for r in everything] == [9, [0, 1, 4, 9], [3], 25]
        assert [r.get(timeout=0) for r in everything] == [9, [0, 1, 4, 9], [3], 25]

    def test_map_accepts_both_signatures(self):
        pool = self.make_pool()
        assert pool.map(tasks.square, range(5), 2) == [0, 1, 4, 9, 16]  # multiprocessing: chunksize third
        assert pool.map(tasks.add, range(3), range(3), timeout=T) == [0, 2, 4]  # concurrent.futures


cross(globals(), ApplyBehaviour, CloseJoinTerminateBehaviour, BothVocabulariesBehaviour)
