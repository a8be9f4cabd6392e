"""The callables the behaviour suites submit.

Every task is a module-level function here (or a ``functools.partial`` of
one), never a lambda or a closure in a test: the "interpreters" and
"processes" backends ship callables to other interpreters or processes by
reference (``tasks.square``), so the same behaviour tests can run on them
unchanged. Tasks that block take their gate (an Event) as an argument, and
the backend decides what kind of Event that is (see ``backends.py``).

Tasks wait with a generous timeout and raise if it expires, so that a test
bug surfaces as a failure, not a hang.
"""

import os
import pickle
import threading
import time

# How long a blocking task waits for its gate; subprocess tests lower it.
WAIT_S = 60.0


def identity(x):
    return x


def square(x):
    return x * x


def add(a, b):
    return a + b


def echo(*args, **kwargs):
    """Return exactly what the call received."""
    return args, kwargs


class Payload:
    """A weak-referenceable object, to see whether a pool keeps one alive."""


class PayloadError(Exception):
    """An exception carrying a Payload, to see whether a pool keeps it alive."""


def make_payload(_arg=None):
    return Payload()


def raise_payload_error(payload):
    raise PayloadError(payload)


def raise_value_error(message):
    raise ValueError(message)


def raise_system_exit(code):
    raise SystemExit(code)


def fail_at(x, k):
    """``x * x``, except that item ``k`` raises ``ValueError('boom at k')``."""
    if x == k:
        raise ValueError(f"boom at {x}")
    return x * x


def fail_in(x, bad):
    """``x * x``, except that items in ``bad`` raise after ``bad[x]`` seconds.

    The delay lets a test make a later item fail first in time.
    """
    if x in bad:
        time.sleep(bad[x])
        raise ValueError(f"boom at {x}")
    return x * x


def sleep_then_return(seconds, value):
    time.sleep(seconds)
    return value


def wait_event(event, value=None):
    """Block until ``event`` is set, then return ``value``."""
    if not event.wait(WAIT_S):
        raise RuntimeError("tasks.wait_event: the gate was never opened")
    return value


def start_and_wait(started, gate, value=None):
    """Announce that the task is running, then block on ``gate``."""
    started.set()
    return wait_event(gate, value)


def barrier_wait(barrier):
    """Pass only once ``barrier.parties`` tasks are running at the same time."""
    return barrier.wait(WAIT_S)


def wait_then_raise(event, message):
    wait_event(event)
    raise ValueError(message)


def wait_then_record(event, sink, value):
    wait_event(event)
    return record(sink, value)


def submit_and_wait(pool_id, value):
    """From inside a task, submit to the same pool and wait for the result."""
    return POOLS[pool_id].submit(square, value).result(timeout=WAIT_S)


# Pools a task can reach by id (submit_and_wait): a pool object itself is
# not something every backend can ship to a worker.
POOLS = {}


def record(sink, value):
    """Append ``value`` to ``sink`` (a list shared with the test) and return it."""
    sink.append(value)
    return value


def thread_name():
    return threading.current_thread().name


def native_thread_id():
    return threading.get_native_id()


def write_stdout(text):
    """Write straight to fd 1: unbuffered, so it survives interpreter exit."""
    os.write(1, text.encode())
    return text


def sleep_then_write(seconds, text):
    time.sleep(seconds)
    return write_stdout(text)


def start_sleep_then_write(started, seconds, text):
    started.set()
    return sleep_then_write(seconds, text)


# -- worker initialisation ---------------------------------------------------
# init_worker records, per worker thread, how often it ran and with what
# arguments; init_state reports what the current worker recorded.

_init_lock = threading.Lock()
_init_calls = {}


def init_worker(token):
    with _init_lock:
        count, _ = _init_calls.get(threading.get_ident(), (0, None))
        _init_calls[threading.get_ident()] = (count + 1, token)


def init_state(_item=None):
    """(thread ident, how often init_worker ran on this thread, its token)."""
    with _init_lock:
        count, token = _init_calls.get(threading.get_ident(), (0, None))
    return threading.get_ident(), count, token


def reset_init_state():
    with _init_lock:
        _init_calls.clear()


def init_fail():
    raise RuntimeError("initializer failed on purpose")


def wait_for_child(pid, timeout=30.0):
    """In a test script that forked: wait for the child and print its exit
    code; if it hangs, kill it, say so and exit 1 (a hung child must fail
    the test, not hang the run)."""
    import signal
    import sys

    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("child exit code", os.waitstatus_to_exitcode(status))
            return
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print("CHILD HUNG")
            sys.exit(1)
        time.sleep(0.01)


def describe_buffer(buf):
    """What a worker received: its type name, size and a checksum."""
    view = memoryview(buf).cast("B")
    return type(buf).__name__, view.nbytes, sum(view[::4096]), bytes(view[:4])


def make_bytes(size, fill):
    return bytes([fill]) * size


def echo_buffer(buf):
    """Send an out-of-band buffer back as it came: the same memory (the
    processes backend replies in place, without a copy)."""
    return pickle.PickleBuffer(buf)


def make_buffer(size, fill):
    """A big buffer made in the worker, sent back out of band."""
    return pickle.PickleBuffer(bytearray([fill]) * size)


def exit_holding(buf, code):
    """Die while holding a buffer the caller sent."""
    memoryview(buf)[0]
    os._exit(code)


def make_list(n):
    return list(range(n))


def use_gilfree_threads(x):
    """Import gilfree in a worker and run a threads pool there."""
    import gilfree

    with gilfree.ThreadPoolExecutor(1) as ex:
        value = ex.submit(square, x).result(timeout=30)
    return value, issubclass(gilfree.TimeoutError, TimeoutError)
