"""asyncio: awaiting pool futures, run_in_executor, gather, cancellation."""

import asyncio
import traceback

import pytest

import tasks
from backends import CF, PoolCase, cross
from support import T


class AsyncioBehaviour(PoolCase):
    vocab = CF

    def awaitable(self, future):
        """What a coroutine awaits: gilfree futures as they are, stdlib ones wrapped."""
        if self.has("gilfree_future"):
            return future
        return asyncio.wrap_future(future)

    def run(self, coro):
        return asyncio.run(asyncio.wait_for(coro, T))

    def test_await_a_submitted_future(self):
        pool = self.make_pool()

        async def main():
            return await self.awaitable(pool.submit(tasks.square, 12))

        assert self.run(main()) == 144

    def test_await_an_already_finished_future(self):
        pool = self.make_pool()
        f = pool.submit(tasks.identity, "done already")
        f.result(timeout=T)

        async def main():
            return await self.awaitable(f)

        assert self.run(main()) == "done already"

    def test_run_in_executor(self):
        pool = self.make_pool()

        async def main():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(pool, tasks.add, 40, 2)

        assert self.run(main()) == 42

    def test_gather_many(self):
        pool = self.make_pool()
        n = 500

        async def main():
            loop = asyncio.get_running_loop()
            direct = [self.awaitable(pool.submit(tasks.square, i)) for i in range(n)]
            via_loop = [loop.run_in_executor(pool, tasks.square, i) for i in range(n)]
            return await asyncio.gather(*direct, *via_loop)

        assert self.run(main()) == [i * i for i in range(n)] * 2

    def test_one_future_awaited_twice(self):
        pool, gate = self.make_pool(workers=1), self.event()
        f = pool.submit(tasks.wait_event, gate, "shared")

        async def main():
            both = asyncio.gather(self.awaitable(f), self.awaitable(f))
            await asyncio.sleep(0)
            gate.set()
            return await both

        assert self.run(main()) == ["shared", "shared"]

    def test_exception_propagates_through_await(self):
        pool = self.make_pool()

        async def main():
            await self.awaitable(pool.submit(tasks.raise_value_error, "through await"))

        with pytest.raises(ValueError, match="through await") as info:
            self.run(main())
        exc = info.value
        assert "raise_value_error" in "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def test_cancelling_the_awaiting_task_leaves_the_pool_usable(self):
        pool = self.make_pool(workers=1)
        started, gate = self.event(), self.event()

        async def main():
            loop = asyncio.get_running_loop()
            blocked = pool.submit(tasks.start_and_wait, started, gate, "blocked")
            waiter = asyncio.ensure_future(self.awaitable(blocked))
            assert await loop.run_in_executor(None, started.wait, T)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            # The running task goes on; the pool still serves awaits.
            gate.set()
            assert await self.awaitable(pool.submit(tasks.square, 3)) == 9
            return blocked.result(timeout=T)

        assert self.run(main()) == "blocked"

    def test_await_of_a_future_cancelled_by_shutdown(self):
        pool = self.make_pool(workers=1)
        started, gate = self.event(), self.event()
        pool.submit(tasks.start_and_wait, started, gate)
        assert started.wait(T)
        pending = pool.submit(tasks.identity, "never")

        async def main():
            waiter = asyncio.ensure_future(self.awaitable(pending))
            await asyncio.sleep(0)
            pool.shutdown(wait=False, cancel_futures=True)
            with pytest.raises(asyncio.CancelledError):
                await waiter

        self.run(main())
        assert pending.cancelled()
        gate.set()

    def test_cancelling_an_await_on_a_pending_task(self):
        pool = self.make_pool(workers=1)
        started, gate = self.event(), self.event()
        pool.submit(tasks.start_and_wait, started, gate)
        assert started.wait(T)
        sink = self.sink()
        pending = pool.submit(tasks.record, sink, "pending")

        async def main():
            waiter = asyncio.ensure_future(self.awaitable(pending))
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter

        self.run(main())
        gate.set()
        # Whether the pending task was cancelled with the await or ran, its
        # future settles and the pool shuts down cleanly.
        pool.shutdown(wait=True)
        assert pending.done()
        assert pending.cancelled() or list(sink) == ["pending"]


cross(globals(), AsyncioBehaviour)
