"""Shutdown and worker lifecycle in-process: shutdown(), with-blocks, initializers, thread names."""

import gc
import threading
import uuid

import pytest

import tasks
from backends import CF, PoolCase, cross, requires
from support import T, leakable_threads, os_threads, thread_comm, wait_until

SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"


class ShutdownBehaviour(PoolCase):
    vocab = CF

    def start_every_worker(self, pool, n):
        """Make n workers busy at once, then let them go: afterwards each
        of the n has been started and has run a task."""
        started = [self.event() for _ in range(n)]
        gate = self.event()
        busy = [pool.submit(tasks.start_and_wait, s, gate) for s in started]
        assert all(s.wait(T) for s in started)
        gate.set()
        for f in busy:
            f.result(timeout=T)

    def test_shutdown_wait_true_waits_for_running_tasks(self):
        pool = self.make_pool(workers=2)
        started, gate = self.event(), self.event()
        running = pool.submit(tasks.start_and_wait, started, gate, "finished")
        queued = [pool.submit(tasks.wait_event, gate, i) for i in range(4)]
        assert started.wait(T)
        opener = threading.Timer(0.05, gate.set)
        opener.start()
        try:
            pool.shutdown(wait=True)
        finally:
            opener.join()
        # Everything submitted before shutdown ran to completion before it returned.
        assert running.done() and running.result(timeout=0) == "finished"
        assert all(f.done() for f in queued)
        assert [f.result(timeout=0) for f in queued] == [0, 1, 2, 3]

    def test_shutdown_cancel_futures_cancels_pending_only(self):
        pool = self.make_pool(workers=1)
        started, gate = self.event(), self.event()
        running = pool.submit(tasks.start_and_wait, started, gate, "running")
        assert started.wait(T)
        sink = self.sink()
        pending = [pool.submit(tasks.record, sink, i) for i in range(10)]
        pool.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in pending)
        assert not running.cancelled()
        gate.set()
        assert running.result(timeout=T) == "running"
        pool.shutdown(wait=True)
        assert list(sink) == []

    def test_shutdown_without_wait_still_runs_queued_work(self):
        pool = self.make_pool(workers=1)
        started, gate = self.event(), self.event()
        pool.submit(tasks.start_and_wait, started, gate)
        assert started.wait(T)
        queued = [pool.submit(tasks.square, i) for i in range(5)]
        pool.shutdown(wait=False)
        gate.set()
        assert [f.result(timeout=T) for f in queued] == [0, 1, 4, 9, 16]
        pool.shutdown(wait=True)

    def test_submit_after_shutdown_raises_runtime_error(self):
        pool = self.make_pool()
        assert pool.submit(tasks.identity, 1).result(timeout=T) == 1
        pool.shutdown()
        with pytest.raises(RuntimeError, match=SHUTDOWN_MESSAGE):
            pool.submit(tasks.identity, 1)
        with pytest.raises(RuntimeError, match=SHUTDOWN_MESSAGE):
            list(pool.map(tasks.identity, [1, 2]))

    def test_shutdown_twice_and_on_an_unused_pool(self):
        pool = self.make_pool()
        pool.shutdown()
        pool.shutdown()
        pool.shutdown(wait=False)
        other = self.make_pool()
        other.shutdown(wait=False, cancel_futures=True)
        other.shutdown(wait=True)

    def test_context_manager_shuts_down_and_waits(self):
        pool = self.make_pool(workers=2)
        gate = self.event()
        opener = threading.Timer(0.05, gate.set)
        with pool as entered:
            assert entered is pool
            futures = [pool.submit(tasks.wait_event, gate, i) for i in range(4)]
            opener.start()
        opener.join()
        assert [f.result(timeout=0) for f in futures] == [0, 1, 2, 3]
        with pytest.raises(RuntimeError, match=SHUTDOWN_MESSAGE):
            pool.submit(tasks.identity, 1)

    def test_context_manager_on_exception_still_shuts_down(self):
        pool = self.make_pool()
        with pytest.raises(KeyError):
            with pool:
                f = pool.submit(tasks.square, 4)
                raise KeyError("leaving the block")
        assert f.result(timeout=0) == 16
        with pytest.raises(RuntimeError, match=SHUTDOWN_MESSAGE):
            pool.submit(tasks.identity, 1)

    def test_shutdown_releases_the_worker_threads(self):
        before = leakable_threads()
        pool = self.make_pool(workers=3)
        # Three tasks that all run at once force three workers into existence.
        started = [self.event() for _ in range(3)]
        gate = self.event()
        futures = [pool.submit(tasks.start_and_wait, s, gate) for s in started]
        assert all(s.wait(T) for s in started)
        assert len(leakable_threads() - before) >= 3
        gate.set()
        pool.shutdown(wait=True)
        assert all(f.done() for f in futures)
        assert wait_until(lambda: not (leakable_threads() - before)), [thread_comm(t) for t in leakable_threads() - before]

    def test_dropping_the_last_reference_releases_the_workers(self):
        # The process-wide threads (native pool, bridge) may start on first
        # use, here or earlier: they are not this pool's workers.
        before = leakable_threads()
        pool = self.construct(3)  # not make_pool: that would keep a reference
        assert list(pool.map(tasks.square, range(50))) == [i * i for i in range(50)]
        del pool
        gc.collect()
        assert wait_until(lambda: not (leakable_threads() - before)), \
            [thread_comm(t) for t in leakable_threads() - before]

    # -- initializer ----------------------------------------------------------

    def test_initializer_runs_once_in_each_worker_with_initargs(self):
        token = uuid.uuid4().hex
        tasks.reset_init_state()
        pool = self.make_pool(workers=3, initializer=tasks.init_worker, initargs=(token,))
        self.start_every_worker(pool, 3)
        states = [f.result(timeout=T) for f in [pool.submit(tasks.init_state) for _ in range(200)]]
        pool.shutdown(wait=True)
        idents = {ident for ident, _, _ in states}
        assert 1 <= len(idents) <= 3
        # Every task ran on a worker whose initializer ran exactly once, with our args.
        assert {(count, tok) for _, count, tok in states} == {(1, token)}

    # -- thread names -------------------------------------------------------

    @requires("thread_name_prefix")
    def test_thread_name_prefix_is_visible_in_tasks(self):
        pool = self.make_pool(workers=2, thread_name_prefix="gfprefix")
        names = {f.result(timeout=T) for f in [pool.submit(tasks.thread_name) for _ in range(20)]}
        assert names and all(name.startswith("gfprefix") for name in names), names

    @requires("thread_name_prefix", "os_thread_names")
    def test_worker_os_thread_names(self):
        pool = self.make_pool(workers=2, thread_name_prefix="gfos")
        self.start_every_worker(pool, 2)
        tids = {f.result(timeout=T) for f in [pool.submit(tasks.native_thread_id) for _ in range(50)]}
        comms = {thread_comm(tid) for tid in tids}
        assert all(c.startswith("gfos_") and c[len("gfos_"):].isdigit() for c in comms), comms
        # Both workers are named, each with its own number.
        named = {thread_comm(t) for t in os_threads() if thread_comm(t).startswith("gfos_")}
        assert len(named) == 2, named

    @requires("thread_name_prefix", "os_thread_names")
    def test_long_thread_name_prefix(self):
        prefix = "a-very-long-thread-name-prefix"
        pool = self.make_pool(workers=1, thread_name_prefix=prefix)
        assert pool.submit(tasks.thread_name).result(timeout=T).startswith(prefix)
        comm = thread_comm(pool.submit(tasks.native_thread_id).result(timeout=T))
        # The OS keeps 15 bytes; the name must still have been set, from the prefix.
        assert len(comm) <= 15 and comm.startswith(prefix[:8]), comm


cross(globals(), ShutdownBehaviour)
