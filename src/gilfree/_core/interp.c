/* interp.c - _core.InterpExecutor, the interpreters backend: each worker is
 * a runtime thread that creates, owns and ends a sub-interpreter with its
 * own GIL (PEP 684), and runs pure-Python tasks there in parallel with the
 * main interpreter and with the other workers.
 *
 * Nothing Python crosses an interpreter boundary; bytes do:
 *   - submit() pickles (fn, args, kwargs) in the main interpreter; the
 *     bytes object is the foreign call's keepalive, and the worker reads
 *     its raw memory through a memoryview made in *its* interpreter
 *     (PyMemoryView_FromMemory): no copy, no main-interpreter object used;
 *   - the worker pickles (ok, value | encoded exception) and copies it into
 *     a malloc'd buffer that the main interpreter unpickles in ops->outcome
 *     (foreign.h: the main interpreter's futures are foreign futures here).
 * The Python half of the worker (unpickling with the __main__ fix-up,
 * calling, encoding failures, running map chunks) is _interp_worker.py,
 * shipped as source text and run in each new interpreter.
 *
 * Lock order (shared/notes/subinterpreters.md, section 1): the process-wide
 * creation mutex, THEN the main GIL.  A worker takes both only to create
 * its interpreter; Py_NewInterpreterFromConfig leaves it holding the new
 * interpreter's GIL and not the main one.  The main thread never takes the
 * creation mutex, and waits for workers with the main GIL released.
 *
 * Worker states: a worker whose interpreter could not be created, or whose
 * initializer failed, marks the core broken and answers every task with
 * BrokenInterpreterPool.  A worker whose interpreter stops working (the
 * worker half raised instead of returning bytes) fails that task, ends the
 * interpreter and creates a fresh one on the same thread.
 */
#include "executor.h"
#include "foreign.h"

#include <pthread.h>
#include <string.h>

#if PY_VERSION_HEX >= 0x030C0000

/* ---- the call ------------------------------------------------------------ */

enum call_kind { KIND_CALL, KIND_CHUNK };

enum call_status {
    STATUS_NONE,      /* the worker never stored an outcome */
    STATUS_PICKLED,   /* out/out_len: the pickled (ok, ...) tuple */
    STATUS_BROKEN,    /* out: the BrokenInterpreterPool message (C string) */
    STATUS_FAILED,    /* out: why the worker could not run it (C string) */
};

typedef struct interp_call {
    foreign_call base;          /* first: foreign.c allocates us */
    const char *data;           /* the pickled task: the keepalive's bytes */
    Py_ssize_t len;
    const char *fn_data;        /* KIND_CALL: the pickled fn, also kept */
    Py_ssize_t fn_len;          /* alive by the keepalive */
    unsigned char fn_cached;    /* fn pickles by reference: the worker may
                                   reuse what it unpickled last time */
    unsigned char kind;         /* enum call_kind */
    unsigned char status;       /* enum call_status, written by the worker */
    char *out;                  /* malloc'd, see status */
    size_t out_len;
} interp_call;

/* ---- the executor core --------------------------------------------------- */

/* Lives in C memory: a worker may read it after the executor object died
 * (the core is freed only once every worker has exited). */
typedef struct interp_core {
    gf_pool *pool;
    module_state *st;
    int max_workers;
    char *source;               /* _interp_worker.py */
    char *init;                 /* pickled (sys.path, __main__ file, ...) */
    Py_ssize_t init_len;
    char *name_prefix;          /* threading names "<prefix>_<i>" */
    _Atomic(char *) broken;     /* NULL or the BrokenInterpreterPool message */
    int shutdown;
    struct interp_core *next;   /* st->interp_cores */
    /* The executor object that points here (borrowed), cleared by either
     * side when it lets go: a core reaped at exit must not leave the
     * object a dangling pointer. */
    struct InterpExecutorObject *owner;
    /* tasks taken out of the queue before a fork, given back after it */
    gf_task *parked_head, **parked_tail;
} interp_core;

typedef struct InterpExecutorObject {
    PyObject_HEAD
    interp_core *core;          /* NULL after a waited-for shutdown */
    int max_workers;
    PyObject *weakreflist;
    /* The last function submitted and its pickle, when it pickles by
     * reference (a module-level function, a class, a builtin): pickling a
     * function costs more than its arguments, and a stream of submits
     * usually repeats one function. */
    PyObject *last_fn, *last_fn_bytes;
} InterpExecutorObject;

/* ---- worker side --------------------------------------------------------- */

/* Serialises interpreter creation process-wide (notes P9; pybind11 does the
 * same on 3.12).  Taken BEFORE the main GIL: see the top of this file. */
static pthread_mutex_t create_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct iworker {
    interp_core *core;
    PyGILState_STATE gilstate;  /* of main_ts */
    PyThreadState *main_ts;     /* this thread's main-interpreter state */
    PyThreadState *ts;          /* the sub-interpreter's; NULL when none */
    PyObject *ns;               /* _interp_worker's globals, in ts's interp */
    int index;
} iworker;

static char *strdup_or_null(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}

/* The current exception (in whatever interpreter we are in) as a malloc'd
 * "Type: message" string; clears it. */
static char *exception_text(const char *prefix)
{
    PyObject *exc = PyErr_GetRaisedException();
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

static void mark_broken(interp_core *core, char *message)
{
    char *expected = NULL;
    if (!message)
        message = strdup_or_null("the interpreter pool is broken");
    /* release: a reader of `broken` sees the whole message. */
    if (!atomic_compare_exchange_strong_explicit(
            &core->broken, &expected, message, memory_order_release,
            memory_order_relaxed))
        free(message);
}

static void release_own_gil(gf_worker *w, void *arg)
{
    (void)w;
    (void)arg;
    (void)PyEval_SaveThread();
}

/* With the new interpreter's GIL: run _interp_worker.py and its setup().
 * 0, or -1 with a malloc'd reason in *why (and no exception set). */
static int worker_setup(iworker *iw, char **why)
{
    interp_core *core = iw->core;
    PyObject *ns = NULL, *code = NULL, *r = NULL, *blob = NULL, *name = NULL;
    ns = PyDict_New();
    name = PyUnicode_FromString("_gilfree_worker");
    if (!ns || !name
        || PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) < 0
        || PyDict_SetItemString(ns, "__name__", name) < 0)
        goto error;
    Py_CLEAR(name);
    code = Py_CompileString(core->source, "<gilfree._interp_worker>",
                            Py_file_input);
    if (!code)
        goto error;
    r = PyEval_EvalCode(code, ns, ns);
    if (!r)
        goto error;
    Py_CLEAR(r);
    blob = PyMemoryView_FromMemory(core->init, core->init_len, PyBUF_READ);
    name = PyUnicode_FromFormat("%s_%d", core->name_prefix, iw->index);
    PyObject *setup = blob && name ? PyDict_GetItemString(ns, "setup") : NULL;
    if (!setup)
        goto error;
    r = PyObject_CallFunctionObjArgs(setup, blob, name, NULL);
    if (!r) {
        /* setup() raised: the initializer failed (it printed why). */
        PyErr_Clear();
        *why = strdup_or_null("A thread initializer failed, the thread pool "
                              "is not usable anymore");
        goto fail;
    }
    Py_DECREF(r);
    Py_DECREF(code);
    Py_DECREF(blob);
    Py_DECREF(name);
    iw->ns = ns;
    return 0;
error:
    *why = exception_text("could not set up a worker interpreter: ");
fail:
    Py_XDECREF(r);
    Py_XDECREF(code);
    Py_XDECREF(blob);
    Py_XDECREF(name);
    Py_XDECREF(ns);
    return -1;
}

/* No GIL held on entry.  Creates the sub-interpreter; on success returns 0
 * holding its GIL, else -1 holding no GIL with *why set. */
static int create_interp(iworker *iw, char **why)
{
    pthread_mutex_lock(&create_mu);           /* lock order: this first, */
    if (!iw->main_ts) {
        iw->gilstate = PyGILState_Ensure();   /* then the main GIL */
        iw->main_ts = PyThreadState_Get();
    } else {
        PyEval_RestoreThread(iw->main_ts);
    }
    PyInterpreterConfig cfg = {
        .use_main_obmalloc = 0,     /* required for an own GIL (not checked
                                       by 3.12.1/3.13.0: we keep it so) */
        .allow_fork = 0,
        .allow_exec = 0,
        .allow_threads = 1,
        .allow_daemon_threads = 0,
        .check_multi_interp_extensions = 1,  /* required by the above */
        .gil = PyInterpreterConfig_OWN_GIL,
    };
    PyThreadState *ts = NULL;
    PyStatus status = Py_NewInterpreterFromConfig(&ts, &cfg);
    if (PyStatus_Exception(status) || !ts) {
        /* The main thread state is current again, with the main GIL. */
        const char *msg = status.err_msg ? status.err_msg : "unknown error";
        size_t n = strlen(msg) + 64;
        *why = malloc(n);
        if (*why)
            snprintf(*why, n, "could not create a sub-interpreter: %s", msg);
        (void)PyEval_SaveThread();
        pthread_mutex_unlock(&create_mu);
        return -1;
    }
    pthread_mutex_unlock(&create_mu);
    iw->ts = ts;                              /* we hold its GIL now */
    if (worker_setup(iw, why) < 0) {
        Py_EndInterpreter(ts);                /* no thread state after */
        iw->ts = NULL;
        return -1;
    }
    return 0;
}

/* Holding the sub-interpreter's GIL: end it.  No GIL held after. */
static void end_interp(iworker *iw)
{
    PyObject *teardown = iw->ns ? PyDict_GetItemString(iw->ns, "teardown")
                                : NULL;
    PyObject *r = teardown ? PyObject_CallNoArgs(teardown) : NULL;
    if (!r)
        PyErr_Clear();
    Py_XDECREF(r);
    Py_CLEAR(iw->ns);
    Py_EndInterpreter(iw->ts);
    iw->ts = NULL;
}

static int on_start(gf_worker *w, void *ctx)
{
    interp_core *core = ctx;
    iworker *iw = calloc(1, sizeof *iw);
    if (!iw) {
        mark_broken(core, strdup_or_null("out of memory starting a worker"));
        return -1;  /* the pool goes on with its other workers */
    }
    iw->core = core;
    iw->index = gf_worker_index(w);
    gf_worker_set_data(w, iw);
    char *why = NULL;
    if (atomic_load_explicit(&core->broken, memory_order_acquire))
        return 0;  /* answers BrokenInterpreterPool, creates nothing */
    if (create_interp(iw, &why) < 0) {
        mark_broken(core, why);
        return 0;
    }
    gf_worker_set_hold(w, release_own_gil, iw);
    return 0;
}

static void on_stop(gf_worker *w, void *ctx)
{
    (void)ctx;
    iworker *iw = gf_worker_data(w);
    if (iw->ts) {
        PyEval_RestoreThread(iw->ts);
        end_interp(iw);
    }
    if (iw->main_ts) {
        PyEval_RestoreThread(iw->main_ts);
        PyGILState_Release(iw->gilstate);
    }
    free(iw);
}

/* Store a C-string outcome; `text` is taken over (NULL: out of memory). */
static void store_text(interp_call *ic, enum call_status status, char *text)
{
    ic->status = (unsigned char)status;
    ic->out = text;
    ic->out_len = text ? strlen(text) : 0;
}

static void run_interp(gf_task *t, gf_worker *w)
{
    FutureObject *f = GF_CONTAINER_OF(t, FutureObject, task);
    interp_call *ic = (interp_call *)f->foreign;
    iworker *iw = gf_worker_data(w);
    if (!gf_foreign_begin(&ic->base)) {
        gf_foreign_end(&ic->base);
        return;
    }
    char *broken = atomic_load_explicit(&iw->core->broken,
                                        memory_order_acquire);
    if (broken || !iw->ts) {
        store_text(ic, STATUS_BROKEN,
                   strdup_or_null(broken ? broken : "the worker has no "
                                                    "interpreter"));
        gf_foreign_end(&ic->base);
        return;
    }
    if (gf_worker_hold_arg(w) != iw) {
        gf_worker_release_hold(w);
        PyEval_RestoreThread(iw->ts);
        gf_worker_set_hold(w, release_own_gil, iw);
    }
    /* The worker half is looked up per call, so a task that breaks it is
     * noticed here (and the interpreter replaced below). */
    PyObject *fn = PyDict_GetItemString(
        iw->ns, ic->kind == KIND_CHUNK ? "run_chunk" : "run");
    PyObject *view = PyMemoryView_FromMemory((char *)ic->data, ic->len,
                                             PyBUF_READ);
    PyObject *r = NULL;
    if (fn && view && ic->kind == KIND_CHUNK) {
        r = PyObject_CallOneArg(fn, view);
    } else if (fn && view) {
        PyObject *fn_view = PyMemoryView_FromMemory((char *)ic->fn_data,
                                                    ic->fn_len, PyBUF_READ);
        if (fn_view) {
            PyObject *argv[3] = {fn_view, view,
                                 ic->fn_cached ? Py_True : Py_False};
            r = PyObject_Vectorcall(fn, argv, 3, NULL);
            Py_DECREF(fn_view);
        }
    }
    if (view && Py_REFCNT(view) > 1) {
        /* Somebody kept the view: cut it off from memory we do not own. */
        PyObject *rr = PyObject_CallMethod(view, "release", NULL);
        Py_XDECREF(rr);
        PyErr_Clear();
    }
    Py_XDECREF(view);
    int replace = 0;
    if (r && PyBytes_Check(r)) {
        size_t n = (size_t)PyBytes_GET_SIZE(r);
        char *out = malloc(n ? n : 1);
        if (out) {
            memcpy(out, PyBytes_AS_STRING(r), n);
            ic->status = STATUS_PICKLED;
            ic->out = out;
            ic->out_len = n;
        } else {
            store_text(ic, STATUS_FAILED, NULL);
        }
    } else {
        if (!r && !PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "the worker half is missing");
        else if (r)
            PyErr_SetString(PyExc_TypeError, "the worker half returned "
                                             "something other than bytes");
        store_text(ic, STATUS_FAILED,
                   exception_text("the worker's interpreter stopped working "
                                  "(it is being replaced): "));
        replace = 1;
    }
    Py_XDECREF(r);
    gf_foreign_end(&ic->base);
    if (replace) {
        gf_worker_set_hold(w, NULL, NULL);
        end_interp(iw);
        char *why = NULL;
        if (create_interp(iw, &why) < 0)
            mark_broken(iw->core, why);
        else
            gf_worker_set_hold(w, release_own_gil, iw);
    }
}

/* ---- main side (main GIL held) -------------------------------------------- */

static PyObject *interp_outcome(foreign_call *fc)
{
    interp_call *ic = (interp_call *)fc;
    module_state *st = fc->st;
    switch (ic->status) {
    case STATUS_PICKLED:
        break;
    case STATUS_BROKEN:
        PyErr_SetString(st->broken_interp_pool,
                        ic->out ? ic->out : "the interpreter pool is broken");
        return NULL;
    case STATUS_FAILED:
        PyErr_SetString(PyExc_RuntimeError,
                        ic->out ? ic->out : "out of memory in a worker");
        return NULL;
    default:
        PyErr_SetString(PyExc_RuntimeError, "the task has no outcome");
        return NULL;
    }
    if (!st->interp_codec) {
        PyErr_SetString(PyExc_RuntimeError, "gilfree._interpreters is gone");
        return NULL;
    }
    /* interp_codec = (dumps, fallback_dumps, loads, rebuild) */
    PyObject *view = PyMemoryView_FromMemory(ic->out, (Py_ssize_t)ic->out_len,
                                             PyBUF_READ);
    if (!view)
        return NULL;
    PyObject *t = PyObject_CallOneArg(PyTuple_GET_ITEM(st->interp_codec, 2),
                                      view);
    Py_DECREF(view);
    if (!t)
        return NULL;
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2) {
        Py_DECREF(t);
        PyErr_SetString(PyExc_RuntimeError, "malformed outcome from a worker");
        return NULL;
    }
    PyObject *value = Py_NewRef(PyTuple_GET_ITEM(t, 1));
    int ok = PyTuple_GET_ITEM(t, 0) == Py_True;
    Py_DECREF(t);
    if (ok)
        return value;
    PyObject *exc = PyObject_CallOneArg(PyTuple_GET_ITEM(st->interp_codec, 3),
                                        value);
    Py_DECREF(value);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static void interp_release(foreign_call *fc)
{
    interp_call *ic = (interp_call *)fc;
    free(ic->out);
    ic->out = NULL;
}

static const foreign_ops interp_ops = {
    .outcome = interp_outcome,
    .release = interp_release,
};

/* Complete a queued call that no worker will run (drained), from the main
 * thread: cancelled (reason NULL) or broken with `reason`. */
static void complete_unrun(gf_task *t, const char *reason)
{
    FutureObject *f = GF_CONTAINER_OF(t, FutureObject, task);
    interp_call *ic = (interp_call *)f->foreign;
    if (!reason) {
        PyObject *r = PyObject_CallMethod((PyObject *)f, "cancel", NULL);
        if (!r)
            PyErr_WriteUnraisable((PyObject *)f);
        Py_XDECREF(r);
        /* Cancelled: end() buries it.  If cancel lost to nothing (it can
         * not: the task never started), fall through as broken. */
        if (atomic_load(&ic->base.flags) & 8u /* FC_CANCELLED */) {
            gf_foreign_end(&ic->base);
            return;
        }
        reason = "cancelled at shutdown";
    }
    if (gf_foreign_begin(&ic->base))
        store_text(ic, STATUS_BROKEN, strdup_or_null(reason));
    gf_foreign_end(&ic->base);
}

static void cancel_drained(gf_task *t, void *arg)
{
    (void)arg;
    complete_unrun(t, NULL);
}

static void park_drained(gf_task *t, void *arg)
{
    interp_core *core = arg;
    t->next = NULL;
    *core->parked_tail = t;
    core->parked_tail = &t->next;
}

static int reap(interp_core *core, int block)
{
    int rc = gf_join_pool(core->pool, block);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    module_state *st = core->st;
    if (core->owner)
        core->owner->core = NULL;
    for (interp_core **pp = &st->interp_cores; *pp; pp = &(*pp)->next) {
        if (*pp == core) {
            *pp = core->next;
            break;
        }
    }
    gf_pool_destroy(core->pool);
    free(core->source);
    free(core->init);
    free(core->name_prefix);
    free(atomic_load(&core->broken));
    PyMem_RawFree(core);
    return 1;
}

static void reap_finished(module_state *st)
{
    interp_core *core = st->interp_cores;
    while (core) {
        interp_core *next = core->next;
        if (core->shutdown)
            (void)reap(core, 0);
        core = next;
    }
}

static void begin_shutdown(interp_core *core, int cancel_futures)
{
    core->shutdown = 1;
    if (cancel_futures)
        gf_pool_drain(core->pool, cancel_drained, NULL);
    gf_pool_shutdown(core->pool);
}

static int make_pool(interp_core *core)
{
    gf_pool_config cfg = {
        .max_workers = core->max_workers,
        .name_prefix = core->name_prefix,
        .hooks = {.on_start = on_start, .on_stop = on_stop, .ctx = core},
    };
    return gf_pool_create(&cfg, &core->pool);
}

static char *copy_buffer(PyObject *obj, Py_ssize_t *len)
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    char *copy = malloc(view.len + 1);
    if (copy) {
        memcpy(copy, view.buf, view.len);
        copy[view.len] = '\0';
        *len = view.len;
    } else {
        PyErr_NoMemory();
    }
    PyBuffer_Release(&view);
    return copy;
}

static PyObject *iexec_tp_new(PyTypeObject *type, PyObject *args,
                              PyObject *kwds)
{
    static char *kwlist[] = {"max_workers", "thread_name_prefix", "init",
                             "source", NULL};
    int max_workers;
    const char *prefix;
    PyObject *init, *source;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "isOO:InterpExecutor",
                                     kwlist, &max_workers, &prefix, &init,
                                     &source))
        return NULL;
    if (max_workers <= 0) {
        PyErr_SetString(PyExc_ValueError, "max_workers must be greater than 0");
        return NULL;
    }
    module_state *st = state_of_type(type);
    if (!st)
        return NULL;
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "an interpreter pool can only be created in the main "
                        "interpreter");
        return NULL;
    }
    reap_finished(st);
    interp_core *core = PyMem_RawCalloc(1, sizeof *core);
    if (!core)
        return PyErr_NoMemory();
    Py_ssize_t unused;
    core->st = st;
    core->max_workers = max_workers;
    core->parked_tail = &core->parked_head;
    core->name_prefix = strdup_or_null(prefix);
    core->source = copy_buffer(source, &unused);
    core->init = copy_buffer(init, &core->init_len);
    int rc = core->name_prefix && core->source && core->init
                 ? make_pool(core) : GF_ENOMEM;
    if (rc != 0) {
        free(core->name_prefix);
        free(core->source);
        free(core->init);
        PyMem_RawFree(core);
        if (!PyErr_Occurred())
            gf_raise(rc, "creating the interpreter pool");
        return NULL;
    }
    InterpExecutorObject *self = (InterpExecutorObject *)type->tp_alloc(type,
                                                                        0);
    if (!self) {
        gf_pool_shutdown(core->pool);
        (void)gf_pool_join(core->pool, -1);
        gf_pool_destroy(core->pool);
        free(core->name_prefix);
        free(core->source);
        free(core->init);
        PyMem_RawFree(core);
        return NULL;
    }
    core->next = st->interp_cores;
    st->interp_cores = core;
    core->owner = self;
    self->core = core;
    self->max_workers = max_workers;
    return (PyObject *)self;
}

static int iexec_tp_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    (void)args;
    (void)kwds;
    return 0;
}

static void iexec_tp_dealloc(PyObject *self)
{
    InterpExecutorObject *ex = (InterpExecutorObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (ex->weakreflist)
        PyObject_ClearWeakRefs(self);
    if (ex->core) {
        /* Queued work finishes in the background; the atexit hook (or the
         * next executor made here) joins the workers. */
        if (!ex->core->shutdown)
            begin_shutdown(ex->core, 0);
        module_state *st = ex->core->st;
        ex->core->owner = NULL;
        ex->core = NULL;
        reap_finished(st);
    }
    Py_CLEAR(ex->last_fn);
    Py_CLEAR(ex->last_fn_bytes);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int iexec_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    InterpExecutorObject *ex = (InterpExecutorObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(ex->last_fn);
    return 0;
}

static int iexec_tp_clear(PyObject *self)
{
    InterpExecutorObject *ex = (InterpExecutorObject *)self;
    Py_CLEAR(ex->last_fn);
    Py_CLEAR(ex->last_fn_bytes);
    return 0;
}

static interp_core *live_core(InterpExecutorObject *ex)
{
    interp_core *core = ex->core;
    if (!core || core->shutdown) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return NULL;
    }
    char *broken = atomic_load_explicit(&core->broken, memory_order_acquire);
    if (broken) {
        PyErr_SetString(core->st->broken_interp_pool, broken);
        return NULL;
    }
    if (!core->st->interp_codec) {
        PyErr_SetString(PyExc_RuntimeError, "gilfree._interpreters is gone");
        return NULL;
    }
    return core;
}

/* pickle.dumps(payload, 5), or the fallback (cloudpickle) if that fails. */
static PyObject *dumps(module_state *st, PyObject *payload, int *by_value)
{
    if (by_value)
        *by_value = 0;
    PyObject *proto = PyLong_FromLong(5);
    if (!proto)
        return NULL;
    PyObject *argv[2] = {payload, proto};
    PyObject *b = PyObject_Vectorcall(PyTuple_GET_ITEM(st->interp_codec, 0),
                                      argv, 2, NULL);
    if (!b) {
        PyObject *first = PyErr_GetRaisedException();
        b = PyObject_Vectorcall(PyTuple_GET_ITEM(st->interp_codec, 1), argv, 2,
                                NULL);
        if (!b) {
            /* Report the plain pickle error, with the fallback's as context. */
            PyObject *second = PyErr_GetRaisedException();
            PyException_SetContext(first, second);
            PyErr_SetRaisedException(first);
        } else {
            Py_DECREF(first);
            if (by_value)
                *by_value = 1;
        }
    }
    Py_DECREF(proto);
    if (b && !PyBytes_Check(b)) {
        Py_SETREF(b, NULL);
        PyErr_SetString(PyExc_TypeError, "dumps did not return bytes");
    }
    return b;
}

/* Whether plain pickle ships fn by reference (a name to import), so that
 * one pickle of it stands for every later submit of the same object. */
static int by_reference(PyObject *fn)
{
    if (PyFunction_Check(fn) || PyType_Check(fn))
        return 1;
    if (PyCFunction_Check(fn)) {
        PyObject *self = PyCFunction_GET_SELF(fn);
        return !self || PyModule_Check(self);
    }
    return 0;
}

/* fn_bytes: NULL for a chunk; else the pickled fn (borrowed), and
 * fn_cached whether the worker may reuse its last unpickled copy. */
static PyObject *submit_payload(interp_core *core, PyObject *payload,
                                enum call_kind kind, PyObject *fn_bytes,
                                int fn_cached)
{
    module_state *st = core->st;
    PyObject *bytes = dumps(st, payload, NULL);
    if (!bytes)
        return NULL;
    PyObject *keep = fn_bytes ? PyTuple_Pack(2, bytes, fn_bytes)
                              : Py_NewRef(bytes);
    Py_DECREF(bytes);
    if (!keep)
        return NULL;
    FutureObject *f = gf_foreign_new(st, sizeof(interp_call), &interp_ops,
                                     run_interp, keep);
    Py_DECREF(keep);  /* the call's keepalive holds it */
    if (!f)
        return NULL;
    interp_call *ic = (interp_call *)f->foreign;
    ic->data = PyBytes_AS_STRING(bytes);
    ic->len = PyBytes_GET_SIZE(bytes);
    if (fn_bytes) {
        ic->fn_data = PyBytes_AS_STRING(fn_bytes);
        ic->fn_len = PyBytes_GET_SIZE(fn_bytes);
        ic->fn_cached = (unsigned char)fn_cached;
    }
    ic->kind = (unsigned char)kind;
    Py_INCREF(f);      /* the queue's reference: see the graveyard, foreign.h */
    gf_foreign_queued(&ic->base);
    int rc = gf_pool_submit(core->pool, &f->task);
    if (rc != 0) {
        gf_foreign_unqueued(&ic->base);
        Py_DECREF(f);
        Py_DECREF(f);
        return gf_raise(rc, "submitting a task");
    }
    return (PyObject *)f;
}

static PyObject *iexec_submit(PyObject *self, PyObject *const *args,
                              Py_ssize_t nargsf, PyObject *kwnames)
{
    InterpExecutorObject *ex = (InterpExecutorObject *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "submit() missing 1 required positional argument: "
                        "'fn'");
        return NULL;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "submit() needs a callable, not %.200s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    interp_core *core = live_core(ex);
    if (!core)
        return NULL;
    PyObject *callargs = PyTuple_New(nargs - 1);
    PyObject *kwargs = NULL, *payload = NULL, *f = NULL;
    if (!callargs)
        return NULL;
    for (Py_ssize_t i = 1; i < nargs; i++)
        PyTuple_SET_ITEM(callargs, i - 1, Py_NewRef(args[i]));
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nkw) {
        if (!(kwargs = PyDict_New()))
            goto done;
        for (Py_ssize_t i = 0; i < nkw; i++)
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i),
                               args[nargs + i]) < 0)
                goto done;
    }
    PyObject *fn = args[0];
    int cached = ex->last_fn == fn;
    if (!cached) {
        int by_value;
        PyObject *fnb = dumps(core->st, fn, &by_value);
        if (!fnb)
            goto done;
        Py_CLEAR(ex->last_fn);
        Py_XSETREF(ex->last_fn_bytes, fnb);
        if (!by_value && by_reference(fn)) {
            ex->last_fn = Py_NewRef(fn);
            cached = 1;
        }
    }
    payload = PyTuple_Pack(2, callargs, kwargs ? kwargs : Py_None);
    if (payload)
        f = submit_payload(core, payload, KIND_CALL, ex->last_fn_bytes,
                           cached);
done:
    Py_DECREF(callargs);
    Py_XDECREF(kwargs);
    Py_XDECREF(payload);
    return f;
}

/* _submit_chunk(fn, items, star, /): a Future of (values, errors), see
 * _interp_worker.run_chunk. */
static PyObject *iexec_submit_chunk(PyObject *self, PyObject *const *args,
                                    Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "expected 3 arguments");
    interp_core *core = live_core((InterpExecutorObject *)self);
    if (!core)
        return NULL;
    PyObject *payload = PyTuple_Pack(3, args[0], args[1], args[2]);
    if (!payload)
        return NULL;
    PyObject *f = submit_payload(core, payload, KIND_CHUNK, NULL, 0);
    Py_DECREF(payload);
    return f;
}

static PyObject *iexec_shutdown(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"wait", "cancel_futures", NULL};
    int wait = 1, cancel_futures = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p$p:shutdown", kwlist,
                                     &wait, &cancel_futures))
        return NULL;
    InterpExecutorObject *ex = (InterpExecutorObject *)self;
    interp_core *core = ex->core;
    if (!core)
        Py_RETURN_NONE;
    begin_shutdown(core, cancel_futures);
    if (!wait)
        Py_RETURN_NONE;
    int rc = reap(core, 1);
    if (rc < 0)
        return NULL;
    ex->core = NULL;
    Py_RETURN_NONE;
}

static PyObject *iexec_get_max_workers(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(((InterpExecutorObject *)self)->max_workers);
}

static PyObject *iexec_get_started(PyObject *self, void *closure)
{
    (void)closure;
    InterpExecutorObject *ex = (InterpExecutorObject *)self;
    return PyLong_FromLong(ex->core ? gf_pool_started_workers(ex->core->pool)
                                    : 0);
}

static PyObject *iexec_get_shutdown(PyObject *self, void *closure)
{
    (void)closure;
    InterpExecutorObject *ex = (InterpExecutorObject *)self;
    return PyBool_FromLong(!ex->core || ex->core->shutdown);
}

static PyObject *iexec_get_broken(PyObject *self, void *closure)
{
    (void)closure;
    InterpExecutorObject *ex = (InterpExecutorObject *)self;
    char *b = ex->core ? atomic_load(&ex->core->broken) : NULL;
    if (!b)
        Py_RETURN_NONE;
    return PyUnicode_FromString(b);
}

static PyMethodDef iexec_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))iexec_submit,
     METH_FASTCALL | METH_KEYWORDS,
     "submit($self, fn, /, *args, **kwargs)\n--\n\n"
     "Pickle fn(*args, **kwargs), run it in a worker interpreter; a Future."},
    {"_submit_chunk", (PyCFunction)(void (*)(void))iexec_submit_chunk,
     METH_FASTCALL,
     "_submit_chunk($self, fn, items, star, /)\n--\n\n"
     "Map fn over items in one worker; a Future of (values, errors)."},
    {"shutdown", (PyCFunction)(void (*)(void))iexec_shutdown,
     METH_VARARGS | METH_KEYWORDS,
     "shutdown($self, /, wait=True, *, cancel_futures=False)\n--\n\n"
     "Stop accepting work; with wait, return when every worker has ended "
     "its interpreter and exited."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef iexec_getset[] = {
    {"_max_workers", iexec_get_max_workers, NULL, "worker limit", NULL},
    {"_started_workers", iexec_get_started, NULL, "threads started", NULL},
    {"_shutdown", iexec_get_shutdown, NULL, "shut down?", NULL},
    {"_broken", iexec_get_broken, NULL, "why the pool broke, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef iexec_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET,
     offsetof(InterpExecutorObject, weakreflist), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot iexec_slots[] = {
    {Py_tp_doc, "The C core of gilfree's interpreters backend."},
    {Py_tp_new, iexec_tp_new},
    {Py_tp_init, iexec_tp_init},
    {Py_tp_dealloc, iexec_tp_dealloc},
    {Py_tp_traverse, iexec_tp_traverse},
    {Py_tp_clear, iexec_tp_clear},
    {Py_tp_methods, iexec_methods},
    {Py_tp_getset, iexec_getset},
    {Py_tp_members, iexec_members},
    {0, NULL},
};

static PyType_Spec iexec_spec = {
    .name = "gilfree._core.InterpExecutor",
    .basicsize = sizeof(InterpExecutorObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = iexec_slots,
};

/* ---- interpreter exit and fork -------------------------------------------- */

/* threading's atexit (gilfree/_lifecycle.py), before _shutdown_all: wait
 * for the queued work, then end every worker interpreter - 3.12 aborts
 * and 3.13.0 may crash if the process exits with live sub-interpreters
 * (notes P7). */
static PyObject *interp_shutdown_all(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    for (interp_core *c = st->interp_cores; c; c = c->next)
        if (!c->shutdown)
            begin_shutdown(c, 0);
    while (st->interp_cores)
        if (reap(st->interp_cores, 1) < 0)
            return NULL;
    Py_RETURN_NONE;
}

/* os.register_at_fork(before=...): a fork must never see a live
 * sub-interpreter (notes P8: the child dies).  Queued tasks are parked,
 * the running ones finish, every worker ends its interpreter and exits;
 * the pool is then a fresh one whose workers start on demand. */
static PyObject *interp_before_fork(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    for (interp_core *c = st->interp_cores; c; c = c->next) {
        if (gf_pool_started_workers(c->pool) == 0)
            continue;
        gf_pool_drain(c->pool, park_drained, c);
        gf_pool_shutdown(c->pool);
        int rc;
        do {
            Py_BEGIN_ALLOW_THREADS
            rc = gf_pool_join(c->pool, -1);
            Py_END_ALLOW_THREADS
        } while (rc == GF_EINTR);
        gf_pool_destroy(c->pool);
        c->pool = NULL;
        rc = make_pool(c);
        if (rc != 0) {
            /* Keep a pool object: nothing can be queued on it any more. */
            c->shutdown = 1;
            mark_broken(c, strdup_or_null("could not restart the interpreter "
                                          "pool after fork()"));
            return gf_raise(rc, "restarting an interpreter pool");
        }
        if (c->shutdown)
            gf_pool_shutdown(c->pool);
    }
    Py_RETURN_NONE;
}

/* after_in_parent: give the parked tasks to the new workers. */
static PyObject *interp_after_fork_parent(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    for (interp_core *c = st->interp_cores; c; c = c->next) {
        gf_task *t = c->parked_head;
        c->parked_head = NULL;
        c->parked_tail = &c->parked_head;
        while (t) {
            gf_task *next = t->next;
            if (c->shutdown || gf_pool_submit(c->pool, t) != 0)
                complete_unrun(t, "the interpreter pool could not restart "
                                  "after fork()");
            t = next;
        }
    }
    Py_RETURN_NONE;
}

/* after_in_child: the parked tasks belong to the parent (their futures
 * fail here through the fork generation, foreign.c). */
static PyObject *interp_after_fork_child(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    for (interp_core *c = st->interp_cores; c; c = c->next) {
        c->parked_head = NULL;
        c->parked_tail = &c->parked_head;
    }
    Py_RETURN_NONE;
}

static PyObject *interp_set_codec(PyObject *module, PyObject *codec)
{
    if (!PyTuple_Check(codec) || PyTuple_GET_SIZE(codec) != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "expected (dumps, fallback_dumps, loads, rebuild)");
        return NULL;
    }
    module_state *st = state_of_module(module);
    Py_XSETREF(st->interp_codec, Py_NewRef(codec));
    Py_RETURN_NONE;
}

static PyMethodDef interp_functions[] = {
    {"_interp_shutdown_all", interp_shutdown_all, METH_NOARGS,
     "_interp_shutdown_all($module, /)\n--\n\n"
     "Shut down every interpreter pool and end its interpreters."},
    {"_interp_before_fork", interp_before_fork, METH_NOARGS,
     "_interp_before_fork($module, /)\n--\n\nEnd every worker interpreter."},
    {"_interp_after_fork_parent", interp_after_fork_parent, METH_NOARGS,
     "_interp_after_fork_parent($module, /)\n--\n\nRequeue parked tasks."},
    {"_interp_after_fork_child", interp_after_fork_child, METH_NOARGS,
     "_interp_after_fork_child($module, /)\n--\n\nForget parked tasks."},
    {"_interp_set_codec", interp_set_codec, METH_O,
     "_interp_set_codec($module, codec, /)\n--\n\n"
     "(dumps, fallback_dumps, loads, rebuild) for the interpreter pools."},
    {NULL, NULL, 0, NULL},
};

int gf_interp_register(PyObject *module, module_state *st)
{
    st->broken_interp_pool = PyErr_NewExceptionWithDoc(
        "gilfree.BrokenInterpreterPool",
        "An interpreter pool cannot run tasks any more (its initializer "
        "failed, or a worker interpreter could not be created).",
        st->broken_thread_pool, NULL);
    if (!st->broken_interp_pool
        || PyModule_AddObjectRef(module, "BrokenInterpreterPool",
                                 st->broken_interp_pool) < 0)
        return -1;
    st->interp_executor_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &iexec_spec, NULL);
    if (!st->interp_executor_type
        || PyModule_AddType(module, st->interp_executor_type) < 0)
        return -1;
    return PyModule_AddFunctions(module, interp_functions);
}

/* module_free: cores still here were never shut down (atexit did not run):
 * stop them without joining and leave their memory to the OS. */
void gf_interp_module_free(module_state *st)
{
    for (interp_core *c = st->interp_cores; c; c = c->next)
        gf_pool_shutdown(c->pool);
    st->interp_cores = NULL;
}

#else /* Python 3.11: no PyInterpreterConfig; gilfree._interpreters says so */

int gf_interp_register(PyObject *module, module_state *st)
{
    (void)module;
    (void)st;
    return 0;
}

void gf_interp_module_free(module_state *st)
{
    (void)st;
}

#endif
