/* mapiter.c - the map family of the threads backend: map, imap,
 * imap_unordered, starmap, map_async.
 *
 * A map job holds the inputs, one result slot per input, and a claim
 * cursor.  It posts up to max_workers *runner* tasks; a runner takes the
 * GIL once and claims chunk after chunk until nothing is left to claim.
 * The chunk size is either the user's or adapted from the measured time
 * per item (about TARGET_CHUNK_NS of work per claim, and never more than a
 * fair share of what is left, so the tail stays balanced).
 *
 * Results are drained by the consumer itself - the thread iterating, or for
 * map_async the runner that finishes the last item - so no manager thread
 * is woken per result.  Everything in a job is protected by the GIL except
 * `progress`, the futex word a consumer sleeps on with the GIL released;
 * a runner bumps it after a chunk, and only if the consumer said it sleeps.
 *
 * Lifetime: the job is reference-counted (under the GIL) by its iterator
 * and by each runner task, so it outlives whichever finishes last.
 */
#include "executor.h"
#include "future.h"

#include "gf_atomic.h"
#include "gf_park.h"

/* Aim for this much work per claimed chunk: enough to make the claim
 * (a few dozen ns) negligible, small enough to balance the tail. */
#define TARGET_CHUNK_NS 100000.0

typedef struct map_job {
    int refcnt;
    executor_core *core;
    PyObject *fn;
    PyObject *source;            /* iterator of inputs; NULL once exhausted */
    PyObject *seq;               /* a tuple the inputs are borrowed from, when
                                    the items came as a list or tuple */
    PyObject *future;            /* map_async: completed with the list */
    int star;                    /* call fn(*item) */
    int ordered;
    int stop_on_error;           /* concurrent.futures semantics */
    Py_ssize_t window;           /* max inputs in flight; 0: take all now */
    Py_ssize_t chunksize;        /* 0: adaptive */
    int max_runners, runners;
    int cancelled;
    PyObject *error;             /* job-level failure (cancel, broken pool) */
    double ns_per_item;          /* moving average, 0 until measured */

    Py_ssize_t cap, nitems, claimed, ndone, yielded;
    PyObject **inputs;
    PyObject **results;          /* result or exception; NULL: not ready */
    unsigned char *failed;
    Py_ssize_t *order;           /* completion order, for unordered */

    _Atomic uint32_t progress;
    _Atomic uint32_t consumer_sleeps;
} map_job;

typedef struct runner {
    gf_task task;
    map_job *job;
} runner;

typedef struct {
    PyObject_HEAD
    map_job *job;
    int64_t deadline;            /* ns, or -1 */
    int finished;
} MapIterObject;

/* ---- the job ------------------------------------------------------------- */

static void job_decref(map_job *job)
{
    if (--job->refcnt > 0)
        return;
    for (Py_ssize_t i = 0; i < job->nitems; i++) {
        if (!job->seq)
            Py_XDECREF(job->inputs[i]);
        Py_XDECREF(job->results[i]);
    }
    if (!job->seq)
        PyMem_Free(job->inputs);
    Py_XDECREF(job->seq);
    PyMem_Free(job->results);
    PyMem_Free(job->failed);
    PyMem_Free(job->order);
    Py_XDECREF(job->fn);
    Py_XDECREF(job->source);
    Py_XDECREF(job->future);
    Py_XDECREF(job->error);
    PyMem_Free(job);
}

static int grow(map_job *job, Py_ssize_t need)
{
    if (need <= job->cap)
        return 0;
    Py_ssize_t cap = job->cap ? job->cap : 64;
    while (cap < need)
        cap *= 2;
    PyObject **in = job->seq ? job->inputs
                             : PyMem_Realloc(job->inputs,
                                             sizeof(PyObject *) * cap);
    if (in)
        job->inputs = in;
    PyObject **out = PyMem_Realloc(job->results, sizeof(PyObject *) * cap);
    if (out)
        job->results = out;
    unsigned char *failed = PyMem_Realloc(job->failed, cap);
    if (failed)
        job->failed = failed;
    Py_ssize_t *order = PyMem_Realloc(job->order, sizeof(Py_ssize_t) * cap);
    if (order)
        job->order = order;
    if (!in || !out || !failed || !order) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = job->cap; i < cap; i++) {
        if (!job->seq)
            job->inputs[i] = NULL;
        job->results[i] = NULL;
        job->failed[i] = 0;
    }
    job->cap = cap;
    return 0;
}

static void wake_consumer(map_job *job)
{
    if (!atomic_load_explicit(&job->consumer_sleeps, memory_order_relaxed))
        return;
    /* release: orders nothing the consumer reads without the GIL; the
     * results themselves are published by the GIL hand-over. */
    atomic_fetch_add_explicit(&job->progress, 1, memory_order_release);
    gf_futex_wake(&job->progress, INT32_MAX, false);
}

static void fail_job(map_job *job, PyObject *error)
{
    job->cancelled = 1;
    if (!job->error)
        job->error = Py_NewRef(error);
    wake_consumer(job);
}

static int all_done(map_job *job)
{
    return !job->source && job->ndone == job->nitems;
}

/* map_async: the runner that produced the last result completes the
 * future with the list (or the first failure, in input order). */
static void complete_future(map_job *job)
{
    FutureObject *f = (FutureObject *)job->future;
    if (!f || f->state >= FUT_CANCELLED)
        return;
    int rc;
    if (job->error) {
        rc = gf_future_set_exception(f, job->error);
    } else {
        Py_ssize_t bad = -1;
        for (Py_ssize_t i = 0; i < job->nitems && bad < 0; i++)
            if (job->failed[i])
                bad = i;
        if (bad >= 0) {
            rc = gf_future_set_exception(f, job->results[bad]);
        } else {
            PyObject *list = PyList_New(job->nitems);
            if (!list) {
                PyObject *exc = gf_fetch_exception();
                rc = gf_future_set_exception(f, exc);
                Py_XDECREF(exc);
            } else {
                for (Py_ssize_t i = 0; i < job->nitems; i++) {
                    PyList_SET_ITEM(list, i, job->results[i]);
                    job->results[i] = NULL;
                }
                rc = gf_future_set_result(f, list);
                Py_DECREF(list);
            }
        }
    }
    if (rc < 0)
        PyErr_WriteUnraisable(job->future);
}

static Py_ssize_t next_grain(map_job *job)
{
    if (job->chunksize > 0)
        return job->chunksize;
    if (job->ns_per_item <= 0)
        return 1;
    Py_ssize_t left = job->nitems - job->claimed;
    double want = TARGET_CHUNK_NS / job->ns_per_item;
    Py_ssize_t fair = left / (2 * job->max_runners);
    Py_ssize_t grain = want < (double)fair ? (Py_ssize_t)want : fair;
    return grain < 1 ? 1 : grain;
}

static void run_item(map_job *job, Py_ssize_t i)
{
    /* A borrowed input lives in job->seq until the job ends; an owned one
     * is dropped as soon as it has been used. */
    PyObject *item = job->inputs[i];
    if (!job->seq)
        job->inputs[i] = NULL;
    PyObject *r;
    if (job->star) {
        PyObject *args = PySequence_Tuple(item);
        r = args ? PyObject_Call(job->fn, args, NULL) : NULL;
        Py_XDECREF(args);
    } else {
        r = PyObject_CallOneArg(job->fn, item);
    }
    if (!job->seq)
        Py_DECREF(item);
    if (!r) {
        r = gf_fetch_exception();
        job->failed[i] = 1;
        if (job->stop_on_error || job->future)
            job->cancelled = 1;  /* nobody will want the rest */
    }
    job->results[i] = r;
    if (!job->ordered)
        job->order[job->ndone] = i;
    job->ndone++;
}

static void run_runner(gf_task *t, gf_worker *w)
{
    gf_pyworker_enter(w);
    runner *r = GF_CONTAINER_OF(t, runner, task);
    map_job *job = r->job;
    while (!job->cancelled && job->claimed < job->nitems) {
        if (job->future && ((FutureObject *)job->future)->state >= FUT_CANCELLED) {
            job->cancelled = 1;  /* map_async's future was cancelled */
            break;
        }
        if (job->core->broken) {
            PyObject *exc = PyObject_CallOneArg(
                job->core->st->broken_thread_pool, job->core->broken);
            if (exc) {
                fail_job(job, exc);
                Py_DECREF(exc);
            } else {
                PyErr_WriteUnraisable(NULL);
            }
            break;
        }
        Py_ssize_t lo = job->claimed, hi = lo + next_grain(job);
        if (hi > job->nitems)
            hi = job->nitems;
        job->claimed = hi;
        int64_t t0 = gf_now_ns();
        for (Py_ssize_t i = lo; i < hi; i++)
            run_item(job, i);
        double per_item = (double)(gf_now_ns() - t0) / (double)(hi - lo);
        job->ns_per_item = job->ns_per_item <= 0
                               ? per_item
                               : 0.5 * job->ns_per_item + 0.5 * per_item;
        wake_consumer(job);
    }
    job->runners--;
    if (job->cancelled && job->claimed < job->nitems && !job->error
        && job->future) {
        /* stopped early on a failure: the unclaimed items never run */
        job->claimed = job->nitems;
    }
    if (job->future && job->runners == 0
        && (all_done(job) || job->cancelled))
        complete_future(job);
    wake_consumer(job);
    job_decref(job);
    PyMem_Free(r);
    gf_pyworker_maybe_yield(w);
}

int gf_mapiter_is_runner(gf_task *t) { return t->run == run_runner; }

void gf_mapiter_cancel_runner(gf_task *t, PyObject *reason)
{
    runner *r = GF_CONTAINER_OF(t, runner, task);
    map_job *job = r->job;
    job->runners--;
    PyObject *exc = reason ? Py_NewRef(reason)
                           : PyObject_CallNoArgs(job->core->st->cancelled_error);
    if (exc) {
        if (job->runners == 0 && job->claimed < job->nitems)
            fail_job(job, exc);
        Py_DECREF(exc);
    } else {
        PyErr_WriteUnraisable(NULL);
    }
    if (job->future && job->runners == 0) {
        if (!reason && !job->error)
            gf_future_cancel_and_notify((FutureObject *)job->future);
        else
            complete_future(job);
    }
    job_decref(job);
    PyMem_Free(r);
}

/* Post runners until there is one per worker or per unclaimed chunk. */
static int ensure_runners(map_job *job)
{
    Py_ssize_t unclaimed = job->nitems - job->claimed;
    Py_ssize_t per = job->chunksize > 0 ? job->chunksize : 1;
    while (job->runners < job->max_runners
           && unclaimed > (Py_ssize_t)job->runners * per) {
        runner *r = PyMem_Malloc(sizeof *r);
        if (!r) {
            PyErr_NoMemory();
            return -1;
        }
        r->task.run = run_runner;
        r->job = job;
        job->refcnt++;
        job->runners++;
        if (gf_core_submit(job->core, &r->task) < 0) {
            job->runners--;
            job->refcnt--;
            PyMem_Free(r);
            return -1;
        }
    }
    return 0;
}

/* Pull inputs until `window` are in flight (all of them if window is 0),
 * then make sure runners are on them. */
static int refill(map_job *job)
{
    while (job->source
           && (job->window == 0 || job->nitems - job->yielded < job->window)) {
        PyObject *item = PyIter_Next(job->source);
        if (!item) {
            if (PyErr_Occurred())
                return -1;
            Py_CLEAR(job->source);
            break;
        }
        if (grow(job, job->nitems + 1) < 0) {
            Py_DECREF(item);
            return -1;
        }
        job->inputs[job->nitems++] = item;
    }
    return ensure_runners(job);
}

/* ---- the iterator ---------------------------------------------------------- */

/* Sleep with the GIL released until a runner reports progress, the
 * deadline passes (1) or a signal handler raises (-1). */
static int wait_progress(map_job *job, int64_t deadline)
{
    module_state *st = job->core->st;
    uint32_t seen = atomic_load_explicit(&job->progress, memory_order_acquire);
    atomic_store_explicit(&job->consumer_sleeps, 1, memory_order_relaxed);
    int64_t left = deadline < 0 ? -1 : deadline - gf_now_ns();
    int rc = 0;
    if (deadline >= 0 && left <= 0) {
        rc = GF_ETIMEDOUT;
    } else {
        Py_BEGIN_ALLOW_THREADS
        atomic_fetch_add(&st->waiting_callers, 1);
        rc = gf_futex_wait(&job->progress, seen, left, false);
        atomic_fetch_sub(&st->waiting_callers, 1);
        Py_END_ALLOW_THREADS
    }
    atomic_store_explicit(&job->consumer_sleeps, 0, memory_order_relaxed);
    if (rc == GF_EINTR)
        return PyErr_CheckSignals() < 0 ? -1 : 0;
    if (rc == GF_ETIMEDOUT && deadline >= 0 && gf_now_ns() >= deadline)
        return 1;
    return 0;
}

static PyObject *take(MapIterObject *it, Py_ssize_t i)
{
    map_job *job = it->job;
    PyObject *r = job->results[i];
    job->results[i] = NULL;
    job->yielded++;
    if (!job->failed[i])
        return r;
    if (job->stop_on_error) {
        it->finished = 1;
        job->cancelled = 1;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(r), r);
    Py_DECREF(r);
    return NULL;
}

static PyObject *mapiter_next(PyObject *self)
{
    MapIterObject *it = (MapIterObject *)self;
    map_job *job = it->job;
    if (it->finished || !job)
        return NULL;
    for (;;) {
        if (refill(job) < 0) {
            it->finished = 1;
            job->cancelled = 1;
            return NULL;
        }
        if (job->ordered) {
            if (job->yielded < job->nitems && job->results[job->yielded])
                return take(it, job->yielded);
        } else if (job->yielded < job->ndone) {
            return take(it, job->order[job->yielded]);
        }
        if (job->error) {
            it->finished = 1;
            PyErr_SetObject((PyObject *)Py_TYPE(job->error), job->error);
            return NULL;
        }
        if (!job->source && job->yielded == job->nitems) {
            it->finished = 1;
            return NULL;
        }
        int rc = wait_progress(job, it->deadline);
        if (rc != 0) {
            if (rc > 0)
                PyErr_SetNone(PyExc_TimeoutError);
            it->finished = 1;
            job->cancelled = 1;
            return NULL;
        }
    }
}

static void mapiter_dealloc(PyObject *self)
{
    MapIterObject *it = (MapIterObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (it->job) {
        /* Nobody will read the results: runners stop claiming - unless
         * they go to a future (map_async), which lives on its own. */
        if (!it->job->future)
            it->job->cancelled = 1;
        job_decref(it->job);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* _map(fn, items, /, *, chunksize=0, ordered=True, star=False,
 *      timeout=None, window=0, stop_on_error=True, future=None) */
PyObject *gf_mapiter_new(PyObject *executor, PyObject *const *args,
                         Py_ssize_t nargsf, PyObject *kwnames)
{
    static const char *const names[] = {"chunksize", "ordered", "star",
                                        "timeout", "window",
                                        "stop_on_error", "future"};
    enum { N_OPTS = 7 };
    PyObject *opts[N_OPTS] = {NULL};
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError,
                            "_map() takes 2 positional arguments (%zd given)",
                            nargs);
    for (Py_ssize_t k = 0; kwnames && k < PyTuple_GET_SIZE(kwnames); k++) {
        const char *key = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
        int found = 0;
        for (int j = 0; key && j < N_OPTS; j++) {
            if (strcmp(key, names[j]) == 0) {
                opts[j] = args[nargs + k];
                found = 1;
            }
        }
        if (!found)
            return PyErr_Format(PyExc_TypeError,
                                "_map() got an unexpected keyword argument");
    }
    executor_core *core = gf_executor_core(executor);
    if (!core)
        return NULL;
    PyObject *fn = args[0];
    if (!PyCallable_Check(fn))
        return PyErr_Format(PyExc_TypeError, "map() needs a callable, not %.200s",
                            Py_TYPE(fn)->tp_name);
    Py_ssize_t chunksize = opts[0] && opts[0] != Py_None
                               ? PyLong_AsSsize_t(opts[0]) : 0;
    Py_ssize_t window = opts[4] ? PyLong_AsSsize_t(opts[4]) : 0;
    if (PyErr_Occurred())
        return NULL;
    if (chunksize < 0 || window < 0)
        return PyErr_Format(PyExc_ValueError, "chunksize must be >= 1");
    double timeout = -1;
    if (opts[3] && opts[3] != Py_None) {
        timeout = PyFloat_AsDouble(opts[3]);
        if (timeout == -1 && PyErr_Occurred())
            return NULL;
        if (timeout < 0)
            timeout = 0;
    }
    module_state *st = core->st;
    if (opts[6] && opts[6] != Py_None && !gf_future_check(st, opts[6]))
        return PyErr_Format(PyExc_TypeError, "future must be a gilfree.Future");

    /* A list or tuple taken whole is borrowed from, not iterated: a tuple
     * as it is (immutable), a list as a tuple snapshot, so that changing
     * the list after the call changes nothing, as with the stdlib. */
    PyObject *items = args[1], *seq = NULL, *source = NULL;
    if (window == 0 && PyTuple_CheckExact(items))
        seq = Py_NewRef(items);
    else if (window == 0 && PyList_CheckExact(items))
        seq = PyList_AsTuple(items);
    else
        source = PyObject_GetIter(items);
    if (!seq && !source)
        return NULL;
    map_job *job = PyMem_Calloc(1, sizeof *job);
    if (!job) {
        Py_XDECREF(seq);
        Py_XDECREF(source);
        return PyErr_NoMemory();
    }
    job->refcnt = 1;
    job->core = core;
    job->fn = Py_NewRef(fn);
    job->source = source;
    job->seq = seq;
    if (seq) {
        job->inputs = &PyTuple_GET_ITEM(seq, 0);
        if (grow(job, PyTuple_GET_SIZE(seq)) < 0) {
            job_decref(job);
            return NULL;
        }
        job->nitems = PyTuple_GET_SIZE(seq);
    }
    job->future = opts[6] && opts[6] != Py_None ? Py_NewRef(opts[6]) : NULL;
    job->star = opts[2] ? PyObject_IsTrue(opts[2]) : 0;
    job->ordered = opts[1] ? PyObject_IsTrue(opts[1]) : 1;
    job->stop_on_error = opts[5] ? PyObject_IsTrue(opts[5]) : 1;
    job->chunksize = chunksize;
    job->window = window;
    job->max_runners = gf_pool_max_workers(core->life.pool);

    MapIterObject *it = PyObject_New(MapIterObject, st->map_iter_type);
    if (!it) {
        job_decref(job);
        return NULL;
    }
    it->job = job;
    it->finished = 0;
    it->deadline = timeout < 0 ? -1 : gf_now_ns() + (int64_t)(timeout * 1e9);
    /* Take the inputs now (all of them unless windowed), as the stdlib's
     * map does, so errors in the iterable surface at the call. */
    if (refill(job) < 0) {
        Py_DECREF(it);
        return NULL;
    }
    if (job->future && job->nitems == 0 && !job->source)
        complete_future(job);
    return (PyObject *)it;
}

static PyType_Slot mapiter_slots[] = {
    {Py_tp_doc, "Results of a gilfree map, as they become ready."},
    {Py_tp_dealloc, mapiter_dealloc},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, mapiter_next},
    {0, NULL},
};

static PyType_Spec mapiter_spec = {
    .name = "gilfree._core.MapIterator",
    .basicsize = sizeof(MapIterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = mapiter_slots,
};

int gf_mapiter_register(PyObject *module, module_state *st)
{
    st->map_iter_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &mapiter_spec, NULL);
    return st->map_iter_type ? 0 : -1;
}
