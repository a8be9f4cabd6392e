"""The Python half of an interpreters-backend worker.

This file is never imported: gilfree._interpreters reads it as text, and
each worker runs it in its own fresh sub-interpreter (see _core/interp.c),
where importing the gilfree package would cost start-up time for nothing.
It may therefore import only the standard library.

Protocol (bytes in, bytes out; nothing else crosses interpreters):

* ``setup(init, name)``: ``init`` unpickles to ``(sys_path, main_file,
  initializer_blob)``; sets ``sys.path``, remembers ``__main__.__file__``,
  runs the initializer (``initializer_blob`` unpickles to ``(fn, args)``).
  If the initializer raises, its traceback is printed and setup re-raises:
  the pool is then broken.
* ``run(fn_data, data, cached)``: ``fn_data`` unpickles to ``fn`` (if
  ``cached``, it pickled by reference, so the last one unpickled from the
  same bytes is reused), ``data`` to ``(args, kwargs)``; returns
  ``dumps((True, result))`` or ``dumps((False, encoded_exception))``.
* ``run_chunk(data)``: ``data`` unpickles to ``(fn, items, star)``; returns
  ``dumps((True, (values, errors)))``, where ``errors`` is None or a list of
  ``(index, encoded_exception)`` (``values[index]`` is then None).

An encoded exception is ``(pickled_exception or None, traceback_text,
"Type: message")``: the exception is pickled on its own so that one that
will not pickle (or unpickle) still reaches the caller as a clear error.
"""

import pickle
import sys

_loads = pickle.loads
_dumps = pickle.dumps
_main_file = None
_main_tried = False


def _graft_main():
    """Run the main script as ``__mp_main__`` once and graft its names onto
    this interpreter's ``__main__``, so that functions and classes defined
    in the caller's script unpickle here (what 3.14's InterpreterPoolExecutor
    and multiprocessing's spawn do).  The script's top level runs again in
    this worker, once, with ``__name__ == "__mp_main__"``."""
    global _main_tried
    if _main_tried or not _main_file:
        return False
    _main_tried = True
    import runpy
    import types

    namespace = runpy.run_path(_main_file, run_name="__mp_main__")
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(namespace)
    sys.modules["__mp_main__"] = module
    main = sys.modules["__main__"]
    for key, value in namespace.items():
        if not key.startswith("__"):
            setattr(main, key, value)
    return True


def _load(data):
    try:
        return _loads(data)
    except AttributeError as e:
        if "__main__" not in str(e) and "__mp_main__" not in str(e):
            raise
        if not _graft_main():
            raise
        return _loads(data)


def _encode(exc):
    import traceback

    try:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # a broken __str__, say
        tb = f"{type(exc).__qualname__} (no traceback: it could not be formatted)\n"
    try:
        desc = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    except BaseException:
        desc = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        blob = _dumps(exc, 5)
    except BaseException:
        blob = None
    return (blob, tb, desc)


def _fail(exc):
    return _dumps((False, _encode(exc)), 5)


def setup(init, name):
    global _main_file
    path, main_file, initializer = _loads(init)
    sys.path[:] = path
    _main_file = main_file
    if name:
        import threading

        threading.current_thread().name = name
    if initializer is not None:
        try:
            fn, args = _load(initializer)
            fn(*args)
        except BaseException:
            import traceback

            print("Exception in initializer:", file=sys.stderr)
            traceback.print_exc()
            raise


def teardown():
    """Before the interpreter ends: forget the _DummyThread that setup()
    named, whose __del__ would otherwise run during the interpreter's
    teardown and complain (3.13)."""
    threading = sys.modules.get("threading")
    if threading is not None:
        info = getattr(threading, "_thread_local_info", None)  # 3.13+
        if getattr(info, "_track_dummy_thread_ref", None) is not None:
            del info._track_dummy_thread_ref  # its __del__ runs now, safely
        with threading._active_limbo_lock:
            threading._active.pop(threading.get_ident(), None)


_fn_key = None  # the pickle of the last function that pickled by reference
_fn = None


def run(fn_data, data, cached):
    global _fn_key, _fn
    try:
        if not cached:
            fn = _load(fn_data)
        elif fn_data == _fn_key:
            fn = _fn
        else:
            fn = _fn = _load(fn_data)
            _fn_key = bytes(fn_data)
        args, kwargs = _load(data)
        result = fn(*args, **kwargs) if kwargs else fn(*args)
        return _dumps((True, result), 5)
    except BaseException as e:
        return _fail(e)


def run_chunk(data):
    try:
        fn, items, star = _load(data)
    except BaseException as e:
        return _fail(e)
    values = []
    append = values.append
    errors = None
    for x in items:
        try:
            append(fn(*x) if star else fn(x))
        except BaseException as e:
            if errors is None:
                errors = []
            errors.append((len(values), _encode(e)))
            append(None)
    try:
        return _dumps((True, (values, errors)), 5)
    except BaseException as e:
        return _fail(e)
