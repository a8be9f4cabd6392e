/* native.c - C function pointers run on the process-wide native pool with
 * no GIL at all (gilfree.native), and the C API capsule for other
 * extensions.
 *
 * A native worker never touches a Python object.  For a native future that
 * means:
 *   - the queue's strong reference to the future is dropped later by a
 *     thread holding the GIL: the worker pushes the finished call on the
 *     interpreter's *graveyard*, emptied by the next gilfree call there;
 *   - the Python state (result object, callbacks) catches up lazily: any
 *     method that looks at the future first calls gf_future_sync();
 *   - if someone must be told at completion (a done-callback, asyncio,
 *     concurrent.futures.wait), the future asks for it *before* completion
 *     (NOTIFY), and the worker then queues the finish on the interpreter's
 *     *bridge*: a one-worker threads-backend core that does own a thread
 *     state there.
 * The flags word decides, with one atomic RMW on each side, which of the
 * two (the worker, or the Python side) does the follow-up: never both,
 * never neither.
 */
#include "executor.h"
#include "future.h"

#include "gf_atomic.h"
#include "gf_park.h"
#include "gilfree.h"

enum {
    NC_CLAIMED = 1u,    /* a worker took it: cancel is too late */
    NC_DONE = 2u,       /* result stored */
    NC_NOTIFY = 4u,     /* Python side wants the finish on the bridge */
    NC_CANCELLED = 8u,  /* cancelled before a worker took it */
};

typedef struct native_call {
    gilfree_task_fn fn;
    void *arg;
    int64_t result;
    _Atomic uint32_t flags;
    FutureObject *future;        /* borrowed: the queue's reference */
    unsigned fork_generation;    /* st->fork_generation at submit */
    module_state *st;
    PyObject *keepalive;         /* the argument's owner (GIL only) */
    gf_task finish_task;         /* queued on the bridge when NOTIFY */
    struct native_call *next_dead;
} native_call;

/* ---- worker side (no GIL) ------------------------------------------------ */

static void bury(native_call *nc)
{
    module_state *st = nc->st;
    native_call *head = atomic_load_explicit(&st->graveyard,
                                             memory_order_relaxed);
    do {
        nc->next_dead = head;
        /* release: the drainer sees next_dead and everything before it */
    } while (!atomic_compare_exchange_weak_explicit(
        &st->graveyard, &head, nc, memory_order_release,
        memory_order_relaxed));
}

static void leave(module_state *st)
{
    /* release: whoever waits for 0 (module teardown) sees our writes. */
    if (atomic_fetch_sub_explicit(&st->native_outstanding, 1,
                                  memory_order_release) == 1)
        gf_futex_wake(&st->native_outstanding, INT32_MAX, false);
}

static void run_native(gf_task *t, gf_worker *w)
{
    gf_worker_release_hold(w);
    FutureObject *f = GF_CONTAINER_OF(t, FutureObject, task);
    native_call *nc = f->native;
    module_state *st = nc->st;
    uint32_t old = atomic_fetch_or_explicit(&nc->flags, NC_CLAIMED,
                                            memory_order_acquire);
    if (!(old & NC_CANCELLED)) {
        nc->result = nc->fn(nc->arg);
        /* acq_rel: releases `result` to the Python side; acquires the
         * bridge pointer stored before NOTIFY was set. */
        old = atomic_fetch_or_explicit(&nc->flags, NC_DONE,
                                       memory_order_acq_rel);
        gf_completion_complete(&f->done, false);
        if ((old & NC_NOTIFY)
            && gf_pool_submit(st->native_bridge->pool, &nc->finish_task) == 0) {
            leave(st);
            return;
        }
    }
    bury(nc);
    leave(st);
}

/* On the bridge, with the GIL: bring the future up to date (which runs its
 * callbacks and wakes its waiters) and drop the queue's reference. */
static void run_finish(gf_task *t, gf_worker *w)
{
    gf_pyworker_enter(w);
    native_call *nc = GF_CONTAINER_OF(t, native_call, finish_task);
    FutureObject *f = nc->future;
    gf_future_sync(f);
    Py_DECREF(f);
    gf_pyworker_maybe_yield(w);
}

/* ---- Python side (GIL held) ---------------------------------------------- */

void gf_native_drain_graveyard(module_state *st)
{
    if (!atomic_load_explicit(&st->graveyard, memory_order_relaxed))
        return;
    native_call *nc = atomic_exchange_explicit(&st->graveyard, NULL,
                                               memory_order_acquire);
    while (nc) {
        native_call *next = nc->next_dead;
        Py_DECREF(nc->future);  /* may free nc (gf_native_forget) */
        nc = next;
    }
}

void gf_future_sync(FutureObject *f)
{
    native_call *nc = f->native;
    if (f->state >= FUT_CANCELLED)
        return;
    uint32_t flags = atomic_load_explicit(&nc->flags, memory_order_acquire);
    if (flags & NC_DONE) {
        PyObject *r = PyLong_FromLongLong(nc->result);
        if (!r || gf_future_set_result(f, r) < 0)
            PyErr_WriteUnraisable((PyObject *)f);
        Py_XDECREF(r);
    } else if (nc->fork_generation != nc->st->fork_generation) {
        /* Submitted before a fork(): its worker is in the parent. */
        PyObject *exc = PyObject_CallFunction(
            nc->st->broken_thread_pool, "s",
            "this native task was queued or running in the parent when the "
            "process forked; it cannot finish in the child");
        if (!exc || gf_future_set_exception(f, exc) < 0)
            PyErr_WriteUnraisable((PyObject *)f);
        Py_XDECREF(exc);
        gf_completion_complete(&f->done, false);
    } else if ((flags & NC_CLAIMED) && f->state == FUT_PENDING) {
        f->state = FUT_RUNNING;
    }
}

void gf_native_after_fork_child(module_state *st)
{
    /* The parent's native workers and their bookkeeping are gone; the
     * futures they held are leaked here and fail when looked at. */
    st->fork_generation++;
    atomic_store_explicit(&st->native_outstanding, 0, memory_order_relaxed);
    atomic_store_explicit(&st->graveyard, NULL, memory_order_relaxed);
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

int gf_native_try_cancel(FutureObject *f)
{
    native_call *nc = f->native;
    uint32_t flags = atomic_load_explicit(&nc->flags, memory_order_relaxed);
    do {
        if (flags & (NC_CLAIMED | NC_DONE))
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(
        &nc->flags, &flags, flags | NC_CANCELLED, memory_order_relaxed,
        memory_order_relaxed));
    return 1;
}

static executor_core *bridge(module_state *st)
{
    if (!st->native_bridge) {
        PyObject *prefix = PyUnicode_FromString("gilfree-bridge");
        PyObject *noargs = PyTuple_New(0);
        if (prefix && noargs)
            st->native_bridge = gf_core_new(st, 1, prefix, NULL, noargs);
        Py_XDECREF(prefix);
        Py_XDECREF(noargs);
    }
    return st->native_bridge;
}

int gf_native_want_notify(FutureObject *f)
{
    native_call *nc = f->native;
    if (atomic_load_explicit(&nc->flags, memory_order_relaxed) & NC_NOTIFY)
        return 0;
    if (!bridge(nc->st))
        return -1;
    /* acq_rel: publishes the bridge to the worker; if the worker was first
     * (DONE already set) we see its result and sync ourselves. */
    uint32_t old = atomic_fetch_or_explicit(&nc->flags, NC_NOTIFY,
                                            memory_order_acq_rel);
    if (old & NC_DONE)
        gf_future_sync(f);
    return 0;
}

void gf_native_forget(FutureObject *f)
{
    native_call *nc = f->native;
    f->native = NULL;
    Py_XDECREF(nc->keepalive);
    PyMem_RawFree(nc);
}

/* Wait, GIL released, until no native call of this interpreter is in
 * flight, then drop what they left in the graveyard.  Native calls never
 * need the GIL, so this cannot deadlock. */
int gf_native_quiesce(module_state *st)
{
    for (;;) {
        uint32_t n = atomic_load_explicit(&st->native_outstanding,
                                          memory_order_acquire);
        if (n == 0)
            break;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = gf_futex_wait(&st->native_outstanding, n, -1, false);
        Py_END_ALLOW_THREADS
        if (rc == GF_EINTR && PyErr_CheckSignals() < 0)
            return -1;
    }
    gf_native_drain_graveyard(st);
    return 0;
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

/* _native_submit(fn, arg, keepalive, /) -> Future */
static PyObject *native_submit(PyObject *module, PyObject *const *args,
                               Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "expected 3 arguments");
    module_state *st = state_of_module(module);
    gf_native_drain_graveyard(st);
    gilfree_task_fn fn = (gilfree_task_fn)as_pointer(args[0], "func", 0);
    if (!fn)
        return NULL;
    void *arg = as_pointer(args[1], "arg", 1);
    if (PyErr_Occurred())
        return NULL;
    gf_pool *pool;
    if (native_pool(&pool) != 0)
        return NULL;
    native_call *nc = PyMem_RawCalloc(1, sizeof *nc);
    if (!nc)
        return PyErr_NoMemory();
    FutureObject *f = gf_future_new(st);
    if (!f) {
        PyMem_RawFree(nc);
        return NULL;
    }
    nc->fn = fn;
    nc->arg = arg;
    nc->future = f;
    nc->st = st;
    nc->fork_generation = st->fork_generation;
    nc->keepalive = args[2] == Py_None ? NULL : Py_NewRef(args[2]);
    nc->finish_task.run = run_finish;
    f->native = nc;
    f->defer_done = 1;  /* the worker completes `done`, without the GIL */
    f->task.run = run_native;
    Py_INCREF(f);  /* the queue's reference: see the graveyard above */
    atomic_fetch_add_explicit(&st->native_outstanding, 1, memory_order_relaxed);
    int rc = gf_pool_submit(pool, &f->task);
    if (rc != 0) {
        atomic_fetch_sub_explicit(&st->native_outstanding, 1,
                                  memory_order_relaxed);
        Py_DECREF(f);
        Py_DECREF(f);
        return gf_raise(rc, "submitting a native task");
    }
    return (PyObject *)f;
}

/* _native_parallel_for(fn, n, arg, chunksize, /) -> None */
static PyObject *native_parallel_for(PyObject *module, PyObject *const *args,
                                     Py_ssize_t nargs)
{
    (void)module;
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
    int interrupted = 0;
    do {
        Py_BEGIN_ALLOW_THREADS
        rc = gf_range_wait(job, -1);
        Py_END_ALLOW_THREADS
        if (rc == GF_EINTR && PyErr_CheckSignals() < 0) {
            /* Stop handing out chunks; the ones running must finish
             * before their memory may be released. */
            interrupted = 1;
            gf_range_cancel(job);
            Py_BEGIN_ALLOW_THREADS
            while (gf_range_wait(job, -1) == GF_EINTR)
                ;
            Py_END_ALLOW_THREADS
            rc = 0;
        }
    } while (rc == GF_EINTR);
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
