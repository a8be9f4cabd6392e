"""The map family: concurrent.futures map, and multiprocessing map/starmap/imap."""

import functools
import itertools
import threading
import time
import traceback
from collections import Counter

import pytest

import tasks
from backends import CF, MP, PoolCase, cross, requires, variant
from support import T

N_LARGE = 100_000


class CfMapBehaviour(PoolCase):
    """``map(fn, *iterables, timeout=None, chunksize=...)`` as concurrent.futures spells it."""

    vocab = CF

    @pytest.mark.parametrize("n", [0, 1, 2, 100])
    def test_map_results_in_order(self, n):
        pool = self.make_pool()
        assert list(pool.map(tasks.square, range(n))) == [i * i for i in range(n)]

    def test_map_keeps_order_when_items_finish_out_of_order(self):
        pool = self.make_pool(workers=2)
        delays = [0.05, 0.0, 0.03, 0.0, 0.01, 0.0]
        values = list(range(len(delays)))
        assert list(pool.map(tasks.sleep_then_return, delays, values)) == values

    def test_map_over_several_iterables_stops_at_the_shortest(self):
        pool = self.make_pool()
        assert list(pool.map(tasks.add, [1, 2, 3], [10, 20, 30, 40])) == [11, 22, 33]
        assert list(pool.map(tasks.add, [], [1])) == []

    def test_map_over_a_generator(self):
        pool = self.make_pool()
        assert list(pool.map(tasks.square, (i for i in range(50)))) == [i * i for i in range(50)]

    @pytest.mark.parametrize("chunksize", [1, 3, 1000])
    def test_map_chunksize_does_not_change_results(self, chunksize):
        pool = self.make_pool()
        assert list(pool.map(tasks.square, range(257), chunksize=chunksize)) == [i * i for i in range(257)]

    def test_map_large_input(self):
        pool = self.make_pool()
        n = 20_000
        assert sum(pool.map(tasks.square, range(n), chunksize=500)) == sum(i * i for i in range(n))

    def test_map_timeout_raises_timeout_error(self):
        pool = self.make_pool(workers=1)
        gate = self.event()
        with pytest.raises(TimeoutError):
            # Lazy maps raise while iterating, list maps while mapping.
            list(pool.map(tasks.wait_event, [gate, gate], timeout=0.05))
        gate.set()
        assert list(pool.map(tasks.square, [3], timeout=T)) == [9]

    def test_map_raises_the_first_failing_item_by_position(self):
        pool = self.make_pool(workers=2)
        # Item 7 fails at once, item 3 only later: position wins, not time.
        fn = functools.partial(tasks.fail_in, bad={3: 0.05, 7: 0.0})
        with pytest.raises(ValueError, match="boom at 3") as info:
            list(pool.map(fn, range(10), timeout=T))
        exc = info.value
        assert "fail_in" in "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def test_map_after_failure_pool_still_works(self):
        pool = self.make_pool()
        with pytest.raises(ValueError):
            list(pool.map(functools.partial(tasks.fail_at, k=0), range(5)))
        assert list(pool.map(tasks.square, range(5))) == [0, 1, 4, 9, 16]

    def test_input_that_raises_is_reported_at_call_time(self):
        pool = self.make_pool()
        with pytest.raises(KeyError, match="bad input"):
            pool.map(tasks.square, failing_input(3))  # the input is read eagerly
        assert list(pool.map(tasks.square, range(3))) == [0, 1, 4]

    @variant("lazy_map")
    def test_map_is_lazy_and_raises_at_the_failing_position(self):
        pool = self.make_pool()
        it = pool.map(functools.partial(tasks.fail_at, k=5), range(10))  # does not raise
        assert iter(it) is it
        assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
        with pytest.raises(ValueError, match="boom at 5"):
            next(it)

    @variant("lazy_map")
    def test_map_timeout_cancels_the_items_not_yet_started(self):
        pool = self.make_pool(workers=1)
        # Start the worker first: the timeout below must expire while item 0
        # runs, not while a worker (or its sub-interpreter) is being created.
        assert pool.submit(tasks.identity, 1).result(timeout=T) == 1
        gate, sink = self.event(), self.sink()
        it = pool.map(functools.partial(tasks.wait_then_record, gate, sink), range(5), timeout=0.3)
        with pytest.raises(TimeoutError):
            next(it)
        gate.set()
        pool.shutdown(wait=True)
        assert list(sink) == [0]  # only the item that was already running

    @variant("lazy_map")
    def test_map_consumes_its_input_at_call_time(self):
        pool = self.make_pool()
        taken = []
        items = (taken.append(i) or i for i in range(10))
        it = pool.map(tasks.square, items)
        assert taken == list(range(10))  # before anything is read from the iterator
        assert list(it) == [i * i for i in range(10)]

    @variant("list_map")
    def test_map_returns_a_list_and_raises_at_call_time(self):
        pool = self.make_pool()
        result = pool.map(tasks.square, range(4))
        assert type(result) is list and result == [0, 1, 4, 9]
        with pytest.raises(ValueError, match="boom at 2"):
            pool.map(functools.partial(tasks.fail_at, k=2), range(4))


def gen(n):
    yield from range(n)


def failing_input(n):
    yield from range(n)
    raise KeyError("bad input")


INPUTS = {
    "empty": lambda: [],
    "one": lambda: [5],
    "list100": lambda: list(range(100)),
    "generator100": lambda: gen(100),
}


class MpMapBehaviour(PoolCase):
    """map / map_async / starmap / starmap_async / imap / imap_unordered, multiprocessing style."""

    vocab = MP

    @pytest.mark.parametrize("chunksize", [None, 1, 7, 1000])
    @pytest.mark.parametrize("kind", sorted(INPUTS))
    def test_map_and_map_async(self, kind, chunksize):
        pool = self.make_pool()
        expected = [i * i for i in INPUTS[kind]()]
        assert pool.map(tasks.square, INPUTS[kind](), chunksize) == expected
        assert pool.map_async(tasks.square, INPUTS[kind](), chunksize).get(timeout=T) == expected

    @pytest.mark.parametrize("chunksize", [None, 1, 7])
    def test_starmap_and_starmap_async(self, chunksize):
        pool = self.make_pool()
        pairs = [(i, 10 * i) for i in range(30)]
        expected = [11 * i for i in range(30)]
        assert pool.starmap(tasks.add, pairs, chunksize) == expected
        assert pool.starmap(tasks.add, iter(pairs), chunksize) == expected
        assert pool.starmap_async(tasks.add, pairs, chunksize).get(timeout=T) == expected
        assert pool.starmap(tasks.add, []) == []

    @pytest.mark.parametrize("chunksize", [1, 7, 1000])
    @pytest.mark.parametrize("kind", sorted(INPUTS))
    def test_imap_in_order_and_imap_unordered_same_multiset(self, kind, chunksize):
        pool = self.make_pool()
        expected = [i * i for i in INPUTS[kind]()]
        assert list(pool.imap(tasks.square, INPUTS[kind](), chunksize)) == expected
        assert Counter(pool.imap_unordered(tasks.square, INPUTS[kind](), chunksize)) == Counter(expected)

    def test_imap_default_chunksize_and_duplicates(self):
        pool = self.make_pool()
        items = [3, 1, 3, 3, 2, 1] * 10
        assert list(pool.imap(tasks.identity, items)) == items
        assert Counter(pool.imap_unordered(tasks.identity, items)) == Counter(items)

    def test_imap_keeps_order_when_items_finish_out_of_order(self):
        pool = self.make_pool(workers=2)
        delays = [0.05, 0.0, 0.03, 0.0, 0.01, 0.0]
        got = list(pool.imap(functools.partial(tasks.sleep_then_return, value="x"), delays))
        assert got == ["x"] * len(delays)
        order = list(pool.imap(tasks.identity, range(50)))
        assert order == list(range(50))

    def test_large_inputs_summed(self):
        pool = self.make_pool()
        expected = sum(i * i for i in range(N_LARGE))
        assert sum(pool.map(tasks.square, range(N_LARGE), 1000)) == expected
        assert sum(pool.imap(tasks.square, range(N_LARGE), 1000)) == expected
        assert sum(pool.imap_unordered(tasks.square, range(N_LARGE), 1000)) == expected

    @pytest.mark.parametrize("chunksize", [None, 1, 4])
    def test_exception_in_the_middle_of_map(self, chunksize):
        pool = self.make_pool()
        fn = functools.partial(tasks.fail_at, k=13)
        with pytest.raises(ValueError, match="boom at 13"):
            pool.map(fn, range(40), chunksize)
        with pytest.raises(ValueError, match="boom at 13"):
            pool.map_async(fn, range(40), chunksize).get(timeout=T)
        with pytest.raises(ValueError, match="boom at 13"):
            pool.starmap(tasks.fail_at, [(i, 13) for i in range(40)], chunksize)
        assert pool.map(tasks.square, range(3)) == [0, 1, 4]  # the pool goes on

    @pytest.mark.parametrize("chunksize", [1, 4])
    def test_imap_raises_at_the_failing_position(self, chunksize):
        pool = self.make_pool()
        k = 13
        it = pool.imap(functools.partial(tasks.fail_at, k=k), range(40), chunksize)
        got = []
        with pytest.raises(ValueError, match="boom at 13"):
            for value in it:
                got.append(value)
        # Every item of the chunks before k's chunk was delivered, in order;
        # with chunksize 1 that is every item before k.
        assert got == [i * i for i in range(len(got))]
        assert (k // chunksize) * chunksize <= len(got) <= k

    def test_input_that_raises(self):
        pool = self.make_pool()
        with pytest.raises(KeyError, match="bad input"):
            pool.map(tasks.square, failing_input(5))
        with pytest.raises(KeyError, match="bad input"):
            pool.starmap(tasks.add, ((i, i) for i in failing_input(5)))
        got = []
        with pytest.raises(KeyError, match="bad input"):
            for value in pool.imap(tasks.square, failing_input(5)):
                got.append(value)
        assert got == [i * i for i in range(len(got))]
        with pytest.raises(KeyError, match="bad input"):
            list(pool.imap_unordered(tasks.square, failing_input(5)))
        assert pool.map(tasks.square, range(3)) == [0, 1, 4]  # no hang, the pool goes on

    def test_imap_unordered_raises(self):
        pool = self.make_pool()
        with pytest.raises(ValueError, match="boom at 3"):
            list(pool.imap_unordered(functools.partial(tasks.fail_at, k=3), range(10)))

    def test_map_async_callback_and_error_callback(self):
        pool = self.make_pool()
        called, results, errors = threading.Event(), [], []

        def on_result(value):
            results.append(value)
            called.set()

        r = pool.map_async(tasks.square, range(5), callback=on_result, error_callback=errors.append)
        assert r.get(timeout=T) == [0, 1, 4, 9, 16]
        assert called.wait(T)
        assert results == [[0, 1, 4, 9, 16]] and errors == []

        failed = threading.Event()

        def on_error(exc):
            errors.append(exc)
            failed.set()

        r = pool.map_async(functools.partial(tasks.fail_at, k=2), range(5), callback=results.append,
                           error_callback=on_error)
        with pytest.raises(ValueError):
            r.get(timeout=T)
        assert failed.wait(T)
        assert len(errors) == 1 and isinstance(errors[0], ValueError) and len(results) == 1

    def test_imap_goes_on_past_a_failed_item(self):
        pool = self.make_pool()
        it = pool.imap(functools.partial(tasks.fail_at, k=3), range(8))
        got = []
        for _ in range(8):
            try:
                got.append(next(it))
            except ValueError as e:
                got.append(str(e))
        assert got == [0, 1, 4, "boom at 3", 16, 25, 36, 49]
        assert list(it) == []

    @requires("imap_cancels_on_drop")
    def test_imap_dropped_early_cancels_the_items_not_yet_started(self):
        pool = self.make_pool(workers=1)
        assert pool.apply(tasks.identity, (1,)) == 1  # the worker is up
        gate, sink = self.event(), self.sink()
        it = pool.imap(functools.partial(tasks.wait_then_record, gate, sink), range(6))
        # Item 0 now waits for the gate; a process worker has given back the
        # calls pipelined behind it (after 1 ms), so all of them can be cancelled.
        time.sleep(0.2)
        del it
        gate.set()
        pool.shutdown(wait=True)
        assert list(sink) == [0]  # only the item that was already running

    def test_imap_is_iterable_once_more_after_partial_reads(self):
        pool = self.make_pool()
        it = pool.imap(tasks.square, range(10))
        assert list(itertools.islice(it, 3)) == [0, 1, 4]
        assert list(it) == [i * i for i in range(3, 10)]


cross(globals(), CfMapBehaviour, MpMapBehaviour)
