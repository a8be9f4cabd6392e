"""The processes backend's transport: what is too big for a channel record
travels in memfd segments, and arrives whole, as the same type; big
buffers travel in slabs (segments both sides keep and refill), which must
never change under a view that still uses them.

The behaviour suites (test_futures.py and the others, crossed with the
process mixins in backends.py) and the fault suite (test_process_faults.py)
cover the rest of the backend.
"""

import os
import pickle

import pytest

import tasks

MIB = 1 << 20


@pytest.fixture
def pool():
    import gilfree

    with gilfree.ProcessPoolExecutor(max_workers=2) as ex:
        yield ex


def _dev_shm():
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_big_bytes_arguments_arrive_whole_and_as_their_type(pool, kind):
    data = kind(bytes(range(256)) * (3 * MIB // 256))
    name, size, checksum, head = pool.submit(tasks.describe_buffer, data).result(timeout=60)
    view = memoryview(data)
    assert (name, size, checksum, head) == (kind.__name__, len(data), sum(view[::4096]),
                                            bytes(view[:4]))


def test_a_pickle_buffer_travels_out_of_band(pool):
    data = bytearray(b"\x05" * (2 * MIB))
    name, size, checksum, head = pool.submit(
        tasks.describe_buffer, pickle.PickleBuffer(data)).result(timeout=60)
    # the worker gets the shared mapping itself, not a copy made by pickle
    assert (name, size, checksum, head) == ("SharedBuffer", len(data), 5 * (len(data) // 4096),
                                            b"\x05" * 4)


def test_a_big_bytes_result_comes_back_whole(pool):
    out = pool.submit(tasks.make_bytes, 5 * MIB, 9).result(timeout=60)
    assert type(out) is bytes and len(out) == 5 * MIB and out[::MIB] == b"\x09" * 5


def test_pickles_bigger_than_a_channel_record_cross_both_ways(pool):
    # ~1.2 MB pickles: more than half of a 1 MiB ring, so the whole body
    # goes through a segment in each direction
    n = 300_000
    assert pool.submit(len, list(range(n))).result(timeout=60) == n
    assert pool.submit(tasks.make_list, n).result(timeout=60) == list(range(n))


def test_shared_memory_leaves_no_name_in_dev_shm(pool):
    before = _dev_shm()
    assert pool.submit(len, b"x" * (4 * MIB)).result(timeout=60) == 4 * MIB
    assert _dev_shm() - before == set()


def test_map_carries_big_items(pool):
    items = [bytes([i]) * (2 * MIB) for i in range(4)]
    assert list(pool.map(len, items)) == [2 * MIB] * 4


def test_a_package_run_with_dash_m_ships_calls_by_reference(run_python):
    # `python -m pool_package` imports the package, and gilfree with it,
    # before __main__ has a file: the choice between pickle and cloudpickle
    # must wait for the pool (it once did not, and shipped every call, big
    # buffers included, by value - `python -m gilfree bench` among them)
    import subprocess
    import sys

    from conftest import HERE
    from support import subprocess_env

    proc = subprocess.run([sys.executable, "-m", "pool_package"], capture_output=True,
                          text=True, timeout=120, env=subprocess_env(), cwd=HERE)
    assert proc.returncode == 0, proc.stderr
    assert "by value False" in proc.stdout, proc.stdout
    proc = run_python("import runpy; runpy.run_module('pool_package.__main__', "
                      "run_name='__main__')")
    assert proc.returncode == 0, proc.stderr
    assert "by value True" in proc.stdout, proc.stdout  # -c: no main script


def test_a_task_may_import_gilfree_in_its_worker(pool):
    # workers come from a zygote that loads gilfree._core without the
    # stdlib's futures vocabulary; importing gilfree completes it
    assert pool.submit(tasks.use_gilfree_threads, 6).result(timeout=60) == (36, True)


def _is_filled(buf, size, fill):
    view = memoryview(buf).cast("B")
    return view.nbytes == size and view[0] == fill and view[-1] == fill and \
        set(view[::4093]) == {fill}


@pytest.mark.parametrize("made_by", ["caller", "worker"])
def test_buffers_still_in_use_are_never_refilled(pool, made_by):
    """More results kept alive than there are slabs per side (4): each must
    keep its own bytes while later calls need memory for theirs."""
    kept = []
    for fill in range(1, 12):
        size = 2 * MIB + fill * 4096
        if made_by == "caller":
            data = bytearray([fill]) * size
            out = pool.submit(tasks.echo_buffer, pickle.PickleBuffer(data)).result(timeout=60)
        else:
            out = pool.submit(tasks.make_buffer, size, fill).result(timeout=60)
        kept.append((size, fill, out))
        if fill % 3 == 0:
            kept.pop(0)  # some go, so that their memory is reused
    for size, fill, out in kept:
        assert _is_filled(out, size, fill), (size, fill)


def test_a_result_sent_back_as_an_argument_arrives_whole(pool):
    data = bytearray(b"\x07") * (3 * MIB)
    first = pool.submit(tasks.echo_buffer, pickle.PickleBuffer(data)).result(timeout=60)
    again = pool.submit(tasks.echo_buffer, pickle.PickleBuffer(first)).result(timeout=60)
    name, size, checksum, head = pool.submit(
        tasks.describe_buffer, pickle.PickleBuffer(again)).result(timeout=60)
    assert (size, head) == (3 * MIB, b"\x07" * 4) and _is_filled(again, 3 * MIB, 7)
    assert _is_filled(first, 3 * MIB, 7)


def test_a_worker_that_dies_holding_a_buffer_leaves_transfers_intact():
    import gilfree

    with gilfree.ProcessPoolExecutor(max_workers=1) as ex:
        data = bytearray(b"\x01") * (2 * MIB)
        assert _is_filled(ex.submit(tasks.echo_buffer, pickle.PickleBuffer(data)).result(timeout=60),
                          2 * MIB, 1)
        with pytest.raises(gilfree.WorkerCrashedError):
            ex.submit(tasks.exit_holding, pickle.PickleBuffer(data), 3).result(timeout=60)
        for fill in (2, 3):
            data = bytearray([fill]) * (2 * MIB)
            out = ex.submit(tasks.echo_buffer, pickle.PickleBuffer(data)).result(timeout=60)
            assert _is_filled(out, 2 * MIB, fill)


def test_a_short_call_before_a_long_one_is_answered_while_the_long_one_runs():
    """Short calls are pipelined and their outcomes published without waking
    the proxy while more are queued (proc_worker.c): the outcomes of the
    ones before a long call must still arrive while it runs, and the short
    calls queued behind it must be taken back and run on the other worker."""
    import concurrent.futures

    import gilfree

    with gilfree.ProcessPoolExecutor(max_workers=2) as ex:
        for _ in range(3):  # calls are short: the proxies pipeline them
            [f.result(timeout=60) for f in [ex.submit(tasks.identity, i) for i in range(200)]]
        before = [ex.submit(tasks.identity, i) for i in range(20)]
        slow = ex.submit(tasks.sleep_then_return, 4.0, "slow")
        after = [ex.submit(tasks.identity, i) for i in range(20)]
        done, _ = concurrent.futures.wait(before + after, timeout=3.0)
        assert not slow.done(), "the long call ended before the short ones were checked"
        assert len(done) == 40, f"{40 - len(done)} short calls were held up by the long one"
        assert [f.result() for f in before + after] == list(range(20)) * 2
        assert slow.result(timeout=60) == "slow"
