/* errors.c - the one place where runtime error codes become Python
 * exceptions, and exception fetching that works on 3.11 to 3.13. */
#include "state.h"

PyObject *gf_raise(int err, const char *what)
{
    PyObject *type;
    switch (err) {
    case GF_ENOMEM:
        return PyErr_NoMemory();
    case GF_EINVAL:
        type = PyExc_ValueError;
        break;
    case GF_ETIMEDOUT:
        type = PyExc_TimeoutError;
        break;
    case GF_ESHUTDOWN:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return NULL;
    case GF_ETHREAD:
        PyErr_Format(PyExc_RuntimeError,
                     "%s: can't start new thread (the system limit on "
                     "threads or memory was reached; use fewer workers)",
                     what);
        return NULL;
    default:
        type = PyExc_RuntimeError;
        break;
    }
    PyErr_Format(type, "%s: %s", what, gf_strerror(err));
    return NULL;
}

PyObject *gf_fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

void gf_restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyObject *type = Py_NewRef((PyObject *)Py_TYPE(exc));
    PyErr_Restore(type, exc, PyException_GetTraceback(exc));
#endif
}

char *gf_exception_text(const char *prefix)
{
    PyObject *exc = gf_fetch_exception();
    PyObject *s = exc ? PyObject_Str(exc) : NULL;
    const char *msg = s ? PyUnicode_AsUTF8(s) : NULL;
    const char *type = exc ? Py_TYPE(exc)->tp_name : "unknown error";
    PyErr_Clear();
    size_t n = strlen(prefix) + strlen(type) + (msg ? strlen(msg) : 0) + 8;
    char *text = malloc(n);
    if (text)
        snprintf(text, n, "%s%s: %s", prefix, type, msg ? msg : "?");
    Py_XDECREF(s);
    Py_XDECREF(exc);
    return text;
}
