"""Native tasks: C functions run on gilfree's native pool with no GIL at all.

The C signatures::

    int64_t task(void *arg);                              /* submit() */
    void    body(void *arg, int64_t begin, int64_t end);  /* parallel_for() */

``func`` may be a ctypes function (a ``CFUNCTYPE`` instance or a function of a
loaded library), a cffi function pointer, or an integer address. Do not pass
a ctypes callback that wraps a *Python* function: it would take the GIL on
every call (and only works in the main interpreter).

``arg`` may be ``None`` (NULL), an integer address, a ctypes object (passed by
address), or any contiguous buffer (``bytearray``, ``array.array``, numpy
arrays, ``memoryview``...): the C function gets a pointer to its first byte,
and the buffer is kept alive - and cannot be resized - until the call is done.

Why this is safe while Python keeps running (seed 000's closing question):
the native workers never touch a Python object. They see a function pointer
and plain bytes that Python is not allowed to move or free meanwhile, and the
result is turned into a Python ``int`` later, by a thread that holds the GIL.
"""

from __future__ import annotations

import struct
import sys
from typing import Any

from . import _core

__all__ = ["address", "submit", "parallel_for", "workers"]

_UINTPTR_MAX = 2 ** (8 * struct.calcsize("P")) - 1


def _ctypes() -> Any:
    """ctypes if it is loaded, else None. An object can only be a ctypes
    object if ctypes is loaded, and importing it ourselves would break
    gilfree in sub-interpreters of Python 3.12, where _ctypes cannot load."""
    return sys.modules.get("ctypes")


def _cffi_address(obj: Any) -> int | None:
    if type(obj).__module__ != "_cffi_backend":
        return None
    import cffi  # only reachable when cffi is installed

    ffi = cffi.FFI()
    if ffi.typeof(obj).kind not in ("function", "pointer"):
        raise TypeError(f"expected a cffi function pointer, not {ffi.typeof(obj).cname}")
    return int(ffi.cast("uintptr_t", obj))


def _check_address(value: int, what: str) -> int:
    if not 0 <= value <= _UINTPTR_MAX:
        raise ValueError(f"{what} address {value:#x} is out of range")
    return value


def address(func: Any) -> int:
    """The address of a C function given as ctypes, cffi, or an int."""
    if func is None:
        raise ValueError("func is None; pass a C function pointer (a ctypes "
                         "function, a cffi function pointer or an address)")
    if isinstance(func, bool):
        raise TypeError("expected a C function pointer, not bool")
    ctypes = _ctypes()
    if isinstance(func, int):
        value = func
    elif ctypes and isinstance(func, ctypes._CFuncPtr):
        value = ctypes.cast(func, ctypes.c_void_p).value or 0
    else:
        cffi_value = _cffi_address(func)
        if cffi_value is None:
            raise TypeError(
                "expected a C function pointer (a ctypes function, a cffi "
                f"function pointer or an int address), not {type(func).__name__}")
        value = cffi_value
    if value == 0:
        raise ValueError("func is a NULL pointer")
    return _check_address(value, "func")


def _argument(arg: Any) -> tuple[int, Any]:
    """(address, object to keep alive) for a task argument."""
    if arg is None:
        return 0, None
    if isinstance(arg, bool):
        raise TypeError("arg must be None, an address, a ctypes object or a buffer")
    if isinstance(arg, int):
        return _check_address(arg, "arg"), None
    ctypes = _ctypes()
    if ctypes and isinstance(arg, ctypes._Pointer):
        return ctypes.cast(arg, ctypes.c_void_p).value or 0, arg
    if ctypes and isinstance(arg, (ctypes._SimpleCData, ctypes.Structure,
                                   ctypes.Union, ctypes.Array)):
        return ctypes.addressof(arg), arg
    try:
        view = memoryview(arg)
    except TypeError:
        raise TypeError(
            "arg must be None, an int address, a ctypes object or an object "
            f"supporting the buffer protocol, not {type(arg).__name__}") from None
    # The memoryview holds the buffer export: the owner can be neither freed
    # nor resized while the task may use the pointer.
    return _core._buffer_address(view), view


def _normalize(func: Any, arg: Any) -> tuple[int, int, Any]:
    """(func address, arg address, object to keep alive) for ``submit``,
    whose C entry point takes plain int addresses itself and hands
    everything else here."""
    address_, keepalive = _argument(arg)
    return address(func), address_, keepalive


#: ``submit(func, arg=None) -> Future``: run ``int64_t func(void *arg)`` on a
#: native worker; a Future of its return value (a Python int). Implemented in
#: C (``_core.native_submit``) so that submitting costs no Python frame.
submit = _core.native_submit
_core._set_native_normalize(_normalize)


def parallel_for(func: Any, n: int, arg: Any = None, *,
                 chunksize: int | None = None) -> None:
    """Call ``void func(void *arg, int64_t begin, int64_t end)`` on disjoint
    chunks covering ``[0, n)``, on every native worker, and wait.

    The GIL is released while it waits. ``chunksize`` indices per call
    (default: about 8 chunks per worker). Ctrl-C stops handing out chunks,
    waits for the running ones, and raises ``KeyboardInterrupt``.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    if chunksize is not None and (isinstance(chunksize, bool)
                                  or not isinstance(chunksize, int)
                                  or chunksize < 1):
        raise ValueError(f"chunksize must be an int >= 1, not {chunksize!r}")
    address_, keepalive = _argument(arg)
    _core._native_parallel_for(address(func), n, address_, chunksize or 0)
    del keepalive  # the call is over: the buffer may go


def workers() -> int:
    """The number of native workers (one per CPU this process may use)."""
    return _core._native_workers()
