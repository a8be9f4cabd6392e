/* native.c - C function pointers run on the process-wide native pool with
 * no GIL at all (gilfree.native), and the C API capsule for other
 * extensions.  A native future is a foreign future (foreign.h): its worker
 * never touches a Python object, and the int64 result becomes a Python int
 * when a thread holding the GIL looks at the future.
 */
#include "executor.h"
#include "foreign.h"

#include "gilfree.h"

typedef struct native_call {
    foreign_call base;           /* first: foreign.c allocates us */
    gilfree_task_fn fn;
    void *arg;
    int64_t result;
} native_call;

static PyObject *native_outcome(foreign_call *fc)
{
    return PyLong_FromLongLong(((native_call *)fc)->result);
}

static const foreign_ops native_ops = {.outcome = native_outcome};

static void run_native(gf_task *t, gf_worker *w)
{
    gf_worker_release_hold(w);
    FutureObject *f = GF_CONTAINER_OF(t, FutureObject, task);
    native_call *nc = (native_call *)f->foreign;
    if (gf_foreign_begin(&nc->base))
        nc->result = nc->fn(nc->arg);
    gf_foreign_end(&nc->base);
}

static int native_pool(gf_pool **pool)
{
    int rc = gf_native_pool(pool);
    if (rc != 0)
        gf_raise(rc, "starting the native pool");
    return rc;
}

static void *as_pointer(PyObject *value, const char *what, int allow_null)
{
    void *p = PyLong_AsVoidPtr(value);
    if (!p && !PyErr_Occurred() && !allow_null)
        PyErr_Format(PyExc_ValueError, "%s is a NULL pointer", what);
    return p;
}

static PyObject *submit_call(module_state *st, PyObject *func,
                             PyObject *arg_address, PyObject *keepalive);

/* _native_submit(fn, arg, keepalive, /) -> Future: addresses already
 * checked by gilfree.native. */
static PyObject *native_submit(PyObject *module, PyObject *const *args,
                               Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "expected 3 arguments");
    return submit_call(state_of_module(module), args[0], args[1], args[2]);
}

/* An address given as a plain int: a positive one that fits a pointer (the
 * arg may be 0).  Anything else is left to the Python normaliser. */
static int is_plain_address(PyObject *value, int allow_zero)
{
    if (!PyLong_CheckExact(value))
        return 0;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    return !overflow && (v > 0 || (allow_zero && v == 0));
}

/* submit(func, arg=None) -> Future, gilfree.native.submit itself: plain
 * int addresses are taken here; ctypes and cffi objects and buffers go
 * through gilfree.native._normalize (registered at import), which checks
 * them and returns (func address, arg address, object to keep alive). */
static PyObject *native_submit_public(PyObject *module, PyObject *const *args,
                                      Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const usage = "submit(func, arg=None)";
    PyObject *func = nargs > 0 ? args[0] : NULL;
    PyObject *arg = nargs > 1 ? args[1] : Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        if (PyUnicode_CompareWithASCIIString(name, "func") == 0 && !func)
            func = args[nargs + k];
        else if (PyUnicode_CompareWithASCIIString(name, "arg") == 0 && nargs < 2)
            arg = args[nargs + k];
        else
            return PyErr_Format(PyExc_TypeError,
                                "%s got an unexpected keyword argument %R",
                                usage, name);
    }
    if (!func || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "%s takes 1 or 2 arguments", usage);
    module_state *st = state_of_module(module);
    if (is_plain_address(func, 0) && (arg == Py_None || is_plain_address(arg, 1))) {
        PyObject *zero = arg == Py_None ? PyLong_FromLong(0) : Py_NewRef(arg);
        PyObject *f = zero ? submit_call(st, func, zero, Py_None) : NULL;
        Py_XDECREF(zero);
        return f;
    }
    if (!st->native_normalize)
        return PyErr_Format(PyExc_RuntimeError, "gilfree.native is not imported");
    PyObject *parts = PyObject_CallFunctionObjArgs(st->native_normalize, func,
                                                   arg, NULL);
    if (!parts)
        return NULL;
    PyObject *f = NULL;
    if (PyTuple_Check(parts) && PyTuple_GET_SIZE(parts) == 3)
        f = submit_call(st, PyTuple_GET_ITEM(parts, 0),
                        PyTuple_GET_ITEM(parts, 1), PyTuple_GET_ITEM(parts, 2));
    else
        PyErr_SetString(PyExc_TypeError, "_normalize must return a 3-tuple");
    Py_DECREF(parts);
    return f;
}

static PyObject *set_native_normalize(PyObject *module, PyObject *fn)
{
    module_state *st = state_of_module(module);
    Py_XSETREF(st->native_normalize, Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyObject *submit_call(module_state *st, PyObject *func,
                             PyObject *arg_address, PyObject *keepalive)
{
    gilfree_task_fn fn = (gilfree_task_fn)as_pointer(func, "func", 0);
    if (!fn)
        return NULL;
    void *arg = as_pointer(arg_address, "arg", 1);
    if (PyErr_Occurred())
        return NULL;
    gf_pool *pool;
    if (native_pool(&pool) != 0)
        return NULL;
    FutureObject *f = gf_foreign_new(st, sizeof(native_call), &native_ops,
                                     run_native,
                                     keepalive == Py_None ? NULL : keepalive);
    if (!f)
        return NULL;
    native_call *nc = (native_call *)f->foreign;
    nc->fn = fn;
    nc->arg = arg;
    Py_INCREF(f);  /* the queue's reference: see the graveyard, foreign.h */
    gf_foreign_queued(&nc->base);
    int rc = gf_pool_submit(pool, &f->task);
    if (rc != 0) {
        gf_foreign_unqueued(&nc->base);
        Py_DECREF(f);
        Py_DECREF(f);
        return gf_raise(rc, "submitting a native task");
    }
    return (PyObject *)f;
}

/* _buffer_address(obj, /) -> int: where a contiguous buffer starts. */
static PyObject *buffer_address(PyObject *module, PyObject *obj)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_ANY_CONTIGUOUS) < 0)
        return NULL;
    PyObject *r = PyLong_FromVoidPtr(view.buf);
    PyBuffer_Release(&view);
    return r;
}

/* _native_parallel_for(fn, n, arg, chunksize, /) -> None */
static PyObject *native_parallel_for(PyObject *module, PyObject *const *args,
                                     Py_ssize_t nargs)
{
    if (nargs != 4)
        return PyErr_Format(PyExc_TypeError, "expected 4 arguments");
    gf_range_fn fn = (gf_range_fn)as_pointer(args[0], "func", 0);
    if (!fn)
        return NULL;
    long long n = PyLong_AsLongLong(args[1]);
    void *arg = as_pointer(args[2], "arg", 1);
    long long chunk = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    if (n < 0)
        return PyErr_Format(PyExc_ValueError, "n must be >= 0, not %lld", n);
    if (chunk < 0)
        return PyErr_Format(PyExc_ValueError,
                            "chunksize must be >= 1, not %lld", chunk);
    gf_pool *pool;
    if (native_pool(&pool) != 0)
        return NULL;
    if (chunk == 0) {
        /* about 8 chunks per worker: small enough to balance uneven
         * chunks, large enough that claiming costs nothing */
        long long per = n / (8LL * gf_pool_max_workers(pool));
        chunk = per > 0 ? per : 1;
    }
    gf_range_job *job;
    int rc = gf_range_start(pool, fn, arg, 0, n, chunk, &job);
    if (rc != 0)
        return gf_raise(rc, "starting parallel_for");
    int interrupted = gf_wait_completion(state_of_module(module),
                                         gf_range_finished(job), -1.0) < 0;
    if (interrupted) {
        /* Stop handing out chunks; the ones running must finish before
         * their memory may be released. */
        gf_range_cancel(job);
        Py_BEGIN_ALLOW_THREADS
        while (gf_range_wait(job, -1) == GF_EINTR)
            ;
        Py_END_ALLOW_THREADS
    }
    gf_range_free(job);
    if (interrupted)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *native_workers(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    gf_pool *pool;
    if (native_pool(&pool) != 0)
        return NULL;
    return PyLong_FromLong(gf_pool_max_workers(pool));
}

/* ---- the C API capsule --------------------------------------------------- */

typedef struct capi_task {
    gf_task task;
    gilfree_task_fn fn;
    void *arg;
    gilfree_done_fn done;
    void *done_arg;
} capi_task;

static void run_capi_task(gf_task *t, gf_worker *w)
{
    gf_worker_release_hold(w);
    capi_task *ct = GF_CONTAINER_OF(t, capi_task, task);
    int64_t r = ct->fn(ct->arg);
    if (ct->done)
        ct->done(ct->done_arg, r);
    free(ct);
}

static int capi_submit(gilfree_task_fn fn, void *arg, gilfree_done_fn done,
                       void *done_arg)
{
    if (!fn)
        return GF_EINVAL;
    gf_pool *pool;
    int rc = gf_native_pool(&pool);
    if (rc != 0)
        return rc;
    capi_task *ct = malloc(sizeof *ct);
    if (!ct)
        return GF_ENOMEM;
    *ct = (capi_task){.task.run = run_capi_task, .fn = fn, .arg = arg,
                      .done = done, .done_arg = done_arg};
    rc = gf_pool_submit(pool, &ct->task);
    if (rc != 0)
        free(ct);
    return rc;
}

static int capi_parallel_for(gilfree_range_fn fn, void *arg, int64_t n,
                             int64_t chunksize)
{
    if (!fn || n < 0 || chunksize < 0)
        return GF_EINVAL;
    gf_pool *pool;
    int rc = gf_native_pool(&pool);
    if (rc != 0)
        return rc;
    if (chunksize == 0) {
        int64_t per = n / (8 * (int64_t)gf_pool_max_workers(pool));
        chunksize = per > 0 ? per : 1;
    }
    gf_range_job *job;
    if ((rc = gf_range_start(pool, fn, arg, 0, n, chunksize, &job)) != 0)
        return rc;
    while (gf_range_wait(job, -1) == GF_EINTR)
        ;
    gf_range_free(job);
    return 0;
}

static int capi_workers(void)
{
    gf_pool *pool;
    int rc = gf_native_pool(&pool);
    return rc != 0 ? rc : gf_pool_max_workers(pool);
}

static const gilfree_capi capi = {
    .version = GILFREE_CAPI_VERSION,
    .submit = capi_submit,
    .parallel_for = capi_parallel_for,
    .strerror = gf_strerror,
    .workers = capi_workers,
};

static PyMethodDef native_functions[] = {
    {"_native_submit", (PyCFunction)(void (*)(void))native_submit,
     METH_FASTCALL,
     "_native_submit($module, fn, arg, keepalive, /)\n--\n\n"
     "Queue int64_t fn(void *arg) on the native pool; return a Future."},
    {"native_submit", (PyCFunction)(void (*)(void))native_submit_public,
     METH_FASTCALL | METH_KEYWORDS,
     "submit($module, /, func, arg=None)\n--\n\n"
     "Run int64_t func(void *arg) on a native worker with no GIL; a Future\n"
     "of its return value (a Python int).  func: a ctypes or cffi function\n"
     "pointer or an int address; arg: None, an int address, a ctypes object\n"
     "or a contiguous buffer (kept alive and pinned until the call is done)."},
    {"_set_native_normalize", set_native_normalize, METH_O,
     "_set_native_normalize($module, fn, /)\n--\n\n"
     "fn(func, arg) -> (func address, arg address, keepalive)."},
    {"_native_parallel_for", (PyCFunction)(void (*)(void))native_parallel_for,
     METH_FASTCALL,
     "_native_parallel_for($module, fn, n, arg, chunksize, /)\n--\n\n"
     "Run void fn(void *arg, int64_t begin, int64_t end) over [0, n)."},
    {"_buffer_address", buffer_address, METH_O,
     "_buffer_address($module, obj, /)\n--\n\n"
     "Address of the first byte of a contiguous buffer."},
    {"_native_workers", native_workers, METH_NOARGS,
     "_native_workers($module, /)\n--\n\nWorkers in the native pool."},
    {NULL, NULL, 0, NULL},
};

int gf_native_register(PyObject *module, module_state *st)
{
    (void)st;
    if (PyModule_AddFunctions(module, native_functions) < 0)
        return -1;
    PyObject *capsule = PyCapsule_New((void *)&capi, GILFREE_CAPI_NAME, NULL);
    if (!capsule)
        return -1;
    int rc = PyModule_AddObjectRef(module, "_C_API", capsule);
    Py_DECREF(capsule);
    return rc;
}
