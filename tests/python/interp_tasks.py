"""Tasks for test_interpreters.py: module level, so they pickle by reference,
and importing this module in a worker interpreter imports nothing else."""

import sys


def import_and_use(name):
    """Import ``name`` in the worker (first import there) and touch it."""
    module = __import__(name)
    if name == "datetime":
        return module.date(2024, 1, 2).isoformat()
    if name == "decimal":
        return str(module.Decimal(1) / module.Decimal(8))
    if name == "hashlib":
        return module.sha256(b"x", usedforsecurity=False).hexdigest()[:8]
    return module.__name__


def meet(mine, other, timeout=30.0):
    """Set my event, then wait for the other's: two of these finish only
    if they run at the same time."""
    mine.set()
    if not other.wait(timeout):
        raise RuntimeError("the other task never ran alongside this one")
    return "met"


def break_worker():
    """Make the worker half of this interpreter unusable (its run function
    is looked up per task), as a stand-in for an interpreter that broke."""
    sys._getframe(1).f_globals["run"] = None
    return "broken"


def interpreter_id():
    """An id of the interpreter running this task (its sys module's id)."""
    return id(sys)


class Unpicklable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = __import__("threading").Lock()


def raise_unpicklable(message):
    raise Unpicklable(message)


def make_adder(k):
    return lambda x: x + k
