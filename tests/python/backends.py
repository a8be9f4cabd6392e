"""The pools the behaviour suites run against, and the crossing of the two.

This follows CPython's ``Lib/test/test_concurrent_futures/util.py``
(``create_executor_tests``): a behaviour suite (futures, the map family,
shutdown, errors, asyncio, subprocess lifecycle, ...) is written once as a
plain class against ``self.make_pool(workers=..., **kw)``; a backend mixin
supplies the pool; ``cross(globals(), Behaviour)`` makes one ``Test*`` class
per (behaviour, backend) pair that speaks the behaviour's vocabulary.

Adding a backend is one mixin class and one line in ``BACKENDS``. For the
"interpreters" and "processes" backends to plug in unchanged, the suites keep
to three rules:

* every callable they submit is a module-level function in ``tasks.py`` (or a
  ``functools.partial`` of one), so it pickles by reference;
* every Event a task blocks on comes from ``self.event()`` and every list a
  task appends to from ``self.sink()``: the backend decides what crosses
  its boundary (``threading.Event`` and ``list`` for threads; a
  process-shared Event and a shared list for processes);
* anything only one kind of backend can do is a *feature* the test
  ``@requires``: a gilfree backend without it shows a visible skip naming the
  feature; a reference backend without it does not get the test at all.

Reference backends are the stdlib pools the contract copies
(``concurrent.futures.ThreadPoolExecutor`` and
``multiprocessing.pool.ThreadPool``). They are kept, marked ``reference``,
because they are cheap (a few seconds) and they keep the tests honest: a
behaviour test that fails on the stdlib's own pool is a wrong test, and a
test that passes there but fails on gilfree points at a real divergence.
Deselect them with ``-m 'not reference'``.
"""

import concurrent.futures as cf
import concurrent.futures.thread
import gc
import inspect
import multiprocessing.pool
import sys
import threading
import types

import pytest

# -- vocabularies -------------------------------------------------------------
CF = "concurrent.futures"  # submit / map / shutdown
MP = "multiprocessing"  # apply(_async) / map(_async) / starmap / imap / close / join / terminate

# -- features: what the contract promises every gilfree backend --------------
FEATURES = {
    "gilfree_future": "futures are gilfree.Future: awaitable, with get/wait/ready/successful",
    "dual_timeout_error": "get(timeout) raises an error that is both TimeoutError and multiprocessing.TimeoutError",
    "eager_type_check": "a non-callable fn is rejected with TypeError at submit/map/apply time",
    "thread_name_prefix": "thread_name_prefix names the worker threads",
    "os_thread_names": "worker threads carry <prefix>_<n> as their OS name",
    "broken_on_init_failure": "a failing initializer breaks the pool (BrokenThreadPool, or BrokenProcessPool for processes)",
    "exit_completes_work": "interpreter exit with a live pool completes the work already submitted",
    "fork_safe": "after os.fork() the child has a working pool",
    "terminate_cancels": "terminate() cancels pending work: its futures report cancelled",
    "exit_waits": "leaving the with-block waits for submitted work (shutdown, not terminate)",
    "maxtasksperchild": "the pool takes maxtasksperchild, like multiprocessing.Pool",
    "fork_keeps_running_tasks": "os.fork() does not wait for running tasks, which go on in the parent "
    "(interpreters: a fork waits for them, since no sub-interpreter may be alive at a fork)",
    "objects_by_reference": "tasks get the caller's objects, not copies (threads backends): the pool can keep them alive",
    "imap_cancels_on_drop": "dropping an imap iterator early cancels the calls not yet started",
    "ctrl_c_at_once": "Ctrl-C ends a wait on a result whenever it comes, also in the wait's first milliseconds "
    "(the stdlib's result() can miss one that lands about 1 ms in, and waits for the result: seen on 3.12 and 3.13)",
}

# -- variants: where the contract itself differs between backends -----------
VARIANTS = {
    "lazy_map": "cf map returns a lazy iterator (executors)",
    "list_map": "cf map returns a list (gilfree.Pool, multiprocessing style)",
}


def requires(*features):
    """Mark a behaviour test as needing ``features`` (names in FEATURES)."""
    unknown = set(features) - set(FEATURES)
    assert not unknown, f"unknown feature(s) {unknown}"

    def mark(fn):
        fn._gf_requires = frozenset(features)
        return fn

    return mark


def variant(name):
    """Mark a behaviour test as belonging to one contract variant (VARIANTS)."""
    assert name in VARIANTS, name

    def mark(fn):
        fn._gf_variant = name
        return fn

    return mark


def _gilfree():
    # Imported on first use, so that the reference backends run even where
    # gilfree does not import; a gilfree test then fails with the ImportError.
    import gilfree

    return gilfree


# -- backend mixins ----------------------------------------------------------


class BackendMixin:
    """What a backend supplies to the behaviour suites."""

    backend_name = ""  # used in the generated class names
    vocab = frozenset()  # CF and/or MP
    variants = frozenset()
    features = frozenset()
    reference = False
    imports = ""  # source that a subprocess runs before pool_expr
    #: What a pool whose initializer failed raises (BrokenInterpreterPool
    #: subclasses BrokenThreadPool, as in Python 3.14's).
    broken_error = cf.thread.BrokenThreadPool

    def construct(self, workers, **kw):
        """A new pool with ``workers`` workers (``**kw``: initializer, initargs, thread_name_prefix)."""
        raise NotImplementedError

    def pool_expr(self, workers):
        """Source of an expression that makes the same pool, for subprocess tests."""
        raise NotImplementedError

    # gilfree promises that a stopped pool holds no descriptor, so the fd leak
    # check runs on its pools as they are. Some stdlib pools close theirs only
    # when the pool object is collected; those set this.
    collect_after_stop = False

    def stop(self, pool):
        """Stop ``pool`` at teardown, whatever state the test left it in."""
        pool.shutdown(wait=True, cancel_futures=True)

    def future_types(self):
        return (cf.Future,)

    def make_event(self):
        return threading.Event()

    def make_sink(self):
        return []


GILFREE_FEATURES = frozenset(FEATURES)


class GilfreeExecutorMixin(BackendMixin):
    backend_name = "GilfreeExecutor"
    vocab = frozenset({CF})
    variants = frozenset({"lazy_map"})
    features = GILFREE_FEATURES
    imports = "import gilfree"

    def construct(self, workers, **kw):
        return _gilfree().ThreadPoolExecutor(max_workers=workers, **kw)

    def pool_expr(self, workers):
        return f"gilfree.ThreadPoolExecutor(max_workers={workers})"

    def future_types(self):
        return (cf.Future, _gilfree().Future)


class GilfreePoolThreadsMixin(BackendMixin):
    backend_name = "GilfreePoolThreads"
    vocab = frozenset({CF, MP})
    variants = frozenset({"list_map"})
    features = GILFREE_FEATURES
    imports = "import gilfree"
    pool_backend = "threads"

    def construct(self, workers, **kw):
        return _gilfree().Pool(workers=workers, backend=self.pool_backend, **kw)

    def pool_expr(self, workers):
        return f"gilfree.Pool(workers={workers}, backend={self.pool_backend!r})"

    def future_types(self):
        return (cf.Future, _gilfree().Future)


class StdlibExecutorMixin(BackendMixin):
    """Reference: the executor gilfree.ThreadPoolExecutor copies."""

    backend_name = "StdlibExecutor"
    vocab = frozenset({CF})
    variants = frozenset({"lazy_map"})
    features = frozenset({"thread_name_prefix", "broken_on_init_failure", "exit_completes_work", "objects_by_reference"})
    reference = True
    imports = "import concurrent.futures"

    def construct(self, workers, **kw):
        return cf.ThreadPoolExecutor(max_workers=workers, **kw)

    def pool_expr(self, workers):
        return f"concurrent.futures.ThreadPoolExecutor(max_workers={workers})"


class StdlibThreadPoolMixin(BackendMixin):
    """Reference: the pool whose vocabulary gilfree.Pool speaks."""

    backend_name = "StdlibThreadPool"
    vocab = frozenset({MP})
    variants = frozenset({"list_map"})
    features = frozenset()
    reference = True
    imports = "import multiprocessing.pool"
    collect_after_stop = True  # its change-notifier pipe closes when the pool is collected

    def construct(self, workers, **kw):
        return multiprocessing.pool.ThreadPool(processes=workers, **kw)

    def pool_expr(self, workers):
        return f"multiprocessing.pool.ThreadPool({workers})"

    def stop(self, pool):
        pool.terminate()
        pool.join()


# -- the interpreters backend (Python 3.12+) ----------------------------------
# Tasks run in other interpreters: they get pickled copies of what they are
# given, so the gates and sinks they share with the test live in files
# (xinterp.py), and the threads-only features are left out.
INTERPRETERS_FEATURES = GILFREE_FEATURES - {"objects_by_reference", "fork_keeps_running_tasks"}


class _InterpretersBackend:
    features = INTERPRETERS_FEATURES
    # Subprocess scripts (test_lifecycle.py) say threading.Event(): see
    # xinterp.ThreadingShim.
    imports = "import gilfree\nimport xinterp\nthreading = xinterp.ThreadingShim()"

    def make_event(self):
        from xinterp import FileEvent

        return FileEvent()

    def make_sink(self):
        from xinterp import FileSink

        return FileSink()


class GilfreeInterpreterExecutorMixin(_InterpretersBackend, GilfreeExecutorMixin):
    backend_name = "GilfreeInterpreterExecutor"

    def construct(self, workers, **kw):
        return _gilfree().InterpreterPoolExecutor(max_workers=workers, **kw)

    def pool_expr(self, workers):
        return f"gilfree.InterpreterPoolExecutor(max_workers={workers})"


class GilfreePoolInterpretersMixin(_InterpretersBackend, GilfreePoolThreadsMixin):
    backend_name = "GilfreePoolInterpreters"
    pool_backend = "interpreters"


def _interpreters_available():
    # 3.12+, and not a point release gilfree refuses (see _interpreters.py).
    return sys.version_info >= (3, 12) and _gilfree()._interpreters.available()


# -- the processes backend ------------------------------------------------------
# Tasks run in worker processes: like the interpreters backend they get
# pickled copies, and the gates and sinks live in files.  A forked child
# cannot use its parent's process pool (it can make its own), and there are
# no worker threads to name.
PROCESSES_FEATURES = INTERPRETERS_FEATURES - {"fork_safe", "thread_name_prefix", "os_thread_names"}


class _ProcessesBackend(_InterpretersBackend):
    features = PROCESSES_FEATURES

    @property
    def broken_error(self):
        return _gilfree().BrokenProcessPool


class GilfreeProcessExecutorMixin(_ProcessesBackend, GilfreeExecutorMixin):
    backend_name = "GilfreeProcessExecutor"

    def construct(self, workers, **kw):
        return _gilfree().ProcessPoolExecutor(max_workers=workers, **kw)

    def pool_expr(self, workers):
        return f"gilfree.ProcessPoolExecutor(max_workers={workers})"


class GilfreePoolProcessesMixin(_ProcessesBackend, GilfreePoolThreadsMixin):
    backend_name = "GilfreePoolProcesses"
    pool_backend = "processes"


# One line per backend.
BACKENDS = (
    GilfreeExecutorMixin,
    GilfreePoolThreadsMixin,
    StdlibExecutorMixin,
    StdlibThreadPoolMixin,
    GilfreeProcessExecutorMixin,
    GilfreePoolProcessesMixin,
) + ((GilfreeInterpreterExecutorMixin, GilfreePoolInterpretersMixin)
     if _interpreters_available() else ())

# Pool backends the contract names but this release does not implement yet.
# A backend moves from here to BACKENDS when it lands.
PLANNED_POOL_BACKENDS = ("ray",)


# -- the behaviour base ------------------------------------------------------


class PoolCase:
    """Base of every behaviour suite: pools and gates that clean up after themselves."""

    vocab = CF  # the vocabulary the suite speaks (CF, MP, or a tuple of both); set by each behaviour class

    @pytest.fixture(autouse=True)
    def _pool_resources(self, no_thread_leak):
        # Requests no_thread_leak so that the leak check runs after these
        # pools are stopped, not before.
        self._pools = []
        self._events = []
        yield
        for event in self._events:  # unblock whatever a failed test left waiting
            event.set()
        pools, self._pools = self._pools, []
        while pools:
            self.stop(pools.pop())
        if self.collect_after_stop:
            gc.collect()

    def make_pool(self, workers=2, **kw):
        pool = self.construct(workers, **kw)
        self._pools.append(pool)
        return pool

    def event(self):
        """An Event tasks can block on; opened at teardown whatever happens."""
        event = self.make_event()
        self._events.append(event)
        return event

    def sink(self):
        """A list tasks can append to (see tasks.record)."""
        return self.make_sink()

    def has(self, feature):
        return feature in self.features


# -- the crossing ------------------------------------------------------------


def _copy_function(fn):
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__dict__.update(fn.__dict__)
    copy.__dict__["pytestmark"] = list(getattr(fn, "pytestmark", []))
    copy.__qualname__ = fn.__qualname__
    copy.__doc__ = fn.__doc__
    return copy


def _strip(name, suffix):
    return name[: -len(suffix)] if name.endswith(suffix) else name


def cross(namespace, *behaviours, backends=BACKENDS):
    """Put a ``Test<Behaviour>On<Backend>`` class into ``namespace`` for each pair."""
    for behaviour in behaviours:
        spoken = {behaviour.vocab} if isinstance(behaviour.vocab, str) else set(behaviour.vocab)
        for mixin in backends:
            if not spoken <= mixin.vocab:
                continue
            name = f"Test{_strip(behaviour.__name__, 'Behaviour')}On{mixin.backend_name}"
            attrs = {"__module__": namespace["__name__"], "__qualname__": name}
            for attr, fn in inspect.getmembers(behaviour, inspect.isfunction):
                if not attr.startswith("test"):
                    continue
                wanted = getattr(fn, "_gf_variant", None)
                if wanted is not None and wanted not in mixin.variants:
                    attrs[attr] = None  # another contract: not collected here
                    continue
                missing = getattr(fn, "_gf_requires", frozenset()) - mixin.features
                if missing:
                    if mixin.reference:
                        attrs[attr] = None
                    else:
                        reason = f"{mixin.backend_name} lacks " + "; ".join(
                            f"{m} ({FEATURES[m]})" for m in sorted(missing)
                        )
                        attrs[attr] = pytest.mark.skip(reason=reason)(_copy_function(fn))
            cls = type(name, (behaviour, mixin), attrs)
            if mixin.reference:
                cls = pytest.mark.reference(cls)
            namespace[name] = cls

