"""The Python half of a worker of the interpreters and processes backends.

Workers never import it: gilfree reads it as text and each worker runs it
in a fresh namespace (see _core/remote.c), in its own sub-interpreter or
its own process, where importing the gilfree package would cost start-up
time for nothing.  It may therefore import only the standard library.
(The processes backend's parent imports it, for ``dumps_out``.)

Protocol (bytes in, bytes out; nothing else crosses interpreters):

* ``setup(init, name)``: ``init`` unpickles to ``(sys_path, main_file,
  initializer_blob, oob)``; sets ``sys.path``, remembers
  ``__main__.__file__``, runs the initializer (``initializer_blob``
  unpickles to ``(fn, args)``); ``oob`` > 0 (processes) makes outcomes go
  through ``dumps_out`` with that threshold.
  If the initializer raises, its traceback is printed and setup re-raises:
  the pool is then broken.
* ``run(fn_data, data, cached[, buffers])``: ``fn_data`` unpickles to
  ``fn`` (if ``cached``, it pickled by reference, so the last one unpickled
  from the same bytes is reused), ``data`` (with its out-of-band
  ``buffers``) to ``(args, kwargs)``; returns ``dumps((True, result))`` or
  ``dumps((False, encoded_exception))``.
* ``run_chunk(data[, buffers])``: ``data`` unpickles to ``(fn, items,
  star)``; returns ``dumps((True, (values, errors)))``, where ``errors`` is
  None or a list of ``(index, encoded_exception)`` (``values[index]`` is
  then None).

With ``oob``, "dumps" returns ``(bytes, [buffers])`` when some buffer of at
least ``oob`` bytes travels out of band (the process backend puts each in
shared memory instead of copying it through the channel).

An encoded exception is ``(pickled_exception or None, traceback_text,
"Type: message")``: the exception is pickled on its own so that one that
will not pickle (or unpickle) still reaches the caller as a clear error.
"""

# pickle's C half, not pickle: the same loads, dumps and PickleBuffer
# (pickle re-exports them), without the pure-Python pickler and the re and
# struct it imports - milliseconds of every sub-interpreter's start and of
# a process pool's cold start (the zygote loads it for its workers).
import _pickle
import sys

_loads = _pickle.loads
_dumps = _pickle.dumps
_main_file = None
_main_tried = False
_oob = 0


class _OutOfBand:
    """Stands for a big ``bytes`` or ``bytearray`` while pickling, so that it
    travels out of band: pickle writes those two types in band, and never
    asks ``reducer_override`` about them."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        return type(self.data), (_pickle.PickleBuffer(self.data),)


def _big(x, threshold):
    kind = type(x)
    return (kind is bytes or kind is bytearray) and len(x) >= threshold


def _holds_big(obj, threshold):
    """Whether obj or what it holds, two containers down (a call's
    ``(args, kwargs)``), is a big bytes or bytearray.  On every submit, so
    it is written for speed: one type check per item."""
    kind = type(obj)
    if kind is tuple or kind is list:
        items = obj
    elif kind is dict:
        items = obj.values()
    else:
        return _big(obj, threshold)
    for x in items:
        kind = type(x)
        if kind is tuple or kind is list:
            for y in x:
                if _big(y, threshold):
                    return True
        elif kind is dict:
            for y in x.values():
                if _big(y, threshold):
                    return True
        elif (kind is bytes or kind is bytearray) and len(x) >= threshold:
            return True
    return False


def _wrap_big(obj, threshold, depth=2):
    """obj with every big bytes or bytearray in it, two containers down,
    wrapped in _OutOfBand."""
    kind = type(obj)
    if _big(obj, threshold):
        return _OutOfBand(obj)
    if not depth or kind not in (tuple, list, dict):
        return obj
    if kind is dict:
        return {k: _wrap_big(v, threshold, depth - 1) for k, v in obj.items()}
    return kind(_wrap_big(x, threshold, depth - 1) for x in obj)


def dumps_out(obj, threshold):
    """``pickle.dumps(obj, 5)``, or ``(data, [buffers])`` with every buffer
    of at least ``threshold`` bytes out of band: what pickle protocol 5
    sends out of band (numpy arrays, PickleBuffer), and big bytes and
    bytearrays in a call's arguments or in a result, up to two containers
    deep.  The common case (nothing big) costs one plain C pickling and a
    type check per argument."""
    if _holds_big(obj, threshold):
        obj = _wrap_big(obj, threshold)
    buffers = []

    def keep(pb):
        try:
            raw = pb.raw()
        except BufferError:  # not contiguous: in band
            return True
        if raw.nbytes < threshold:
            return True
        buffers.append(raw)
        return False

    data = _dumps(obj, 5, buffer_callback=keep)
    return (data, buffers) if buffers else data


def _dumps_outcome(obj):
    return dumps_out(obj, _oob) if _oob else _dumps(obj, 5)


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


def _load(data, buffers=None):
    try:
        return _loads(data, buffers=buffers)
    except AttributeError as e:
        if "__main__" not in str(e) and "__mp_main__" not in str(e):
            raise
        if not _graft_main():
            raise
        return _loads(data, buffers=buffers)


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


def _answer(result):
    try:
        return _dumps_outcome((True, result))
    except BaseException as e:  # the result does not pickle
        return _fail(e)


def setup(init, name):
    global _main_file, _oob
    path, main_file, initializer, _oob = _loads(init)
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


def run(fn_data, data, cached, buffers=None):
    global _fn_key, _fn
    try:
        if not cached:
            fn = _load(fn_data)
        elif fn_data == _fn_key:
            fn = _fn
        else:
            fn = _fn = _load(fn_data)
            _fn_key = bytes(fn_data)
        args, kwargs = _load(data, buffers)
        result = fn(*args, **kwargs) if kwargs else fn(*args)
    except BaseException as e:
        return _fail(e)
    return _answer(result)


def run_chunk(data, buffers=None):
    try:
        fn, items, star = _load(data, buffers)
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
    return _answer((values, errors))
