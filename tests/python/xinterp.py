"""An Event and a list that work across interpreters (and processes).

The interpreters backend runs each task in another interpreter, where a
``threading.Event`` or a ``list`` of the test's cannot go: a task gets a
pickled copy. These two keep their state in a file instead, so a copy in a
worker and the original in the test see the same thing. They implement just
what ``tasks.py`` and the behaviour suites use; ``backends.py`` hands them
out through ``make_event``/``make_sink``.
"""

import atexit
import os
import pickle
import shutil
import struct
import tempfile
import time

_DIR = None


def _new_path(prefix):
    global _DIR
    if _DIR is None:
        _DIR = tempfile.mkdtemp(prefix="gilfree-xinterp-")
        atexit.register(shutil.rmtree, _DIR, True)
    fd, path = tempfile.mkstemp(prefix=prefix, dir=_DIR)
    os.close(fd)
    os.unlink(path)
    return path


class FileEvent:
    """``threading.Event``'s set/is_set/clear/wait: set means the file exists."""

    def __init__(self, path=None):
        self.path = path or _new_path("event-")

    def __reduce__(self):
        return (FileEvent, (self.path,))

    def set(self):
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))

    def is_set(self):
        return os.path.exists(self.path)

    def clear(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.0005)
        return True


class FileSink:
    """A list that tasks ``append`` to: each value is one pickled record,
    written with O_APPEND in a single write (so concurrent appends do not
    interleave)."""

    def __init__(self, path=None):
        self.path = path or _new_path("sink-")

    def __reduce__(self):
        return (FileSink, (self.path,))

    def append(self, value):
        data = pickle.dumps(value)
        fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        try:
            os.write(fd, struct.pack("<I", len(data)) + data)
        finally:
            os.close(fd)

    def _values(self):
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return []
        values, pos = [], 0
        while pos + 4 <= len(raw):
            (n,) = struct.unpack_from("<I", raw, pos)
            values.append(pickle.loads(raw[pos + 4:pos + 4 + n]))
            pos += 4 + n
        return values

    def __iter__(self):
        return iter(self._values())

    def __len__(self):
        return len(self._values())

    def __eq__(self, other):
        return self._values() == list(other)

    def __repr__(self):
        return f"FileSink({self._values()!r})"


class ThreadingShim:
    """``threading`` with ``Event`` replaced by FileEvent.

    The lifecycle scripts (test_lifecycle.py) make their gates with
    ``threading.Event()``; for a backend whose tasks run in other
    interpreters, the backend's ``imports`` binds the script's name
    ``threading`` to this, so the same script body gets gates that cross.
    Everything else is the real module.
    """

    Event = FileEvent

    def __getattr__(self, name):
        import threading

        return getattr(threading, name)
