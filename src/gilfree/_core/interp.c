/* interp.c - the interpreters backend's workers (remote.h): each worker is
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
 *     a malloc'd buffer that the main interpreter unpickles (remote.c).
 * The Python half of the worker (unpickling with the __main__ fix-up,
 * calling, encoding failures, running map chunks) is _worker.py, shipped
 * as source text and run in each new interpreter.
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
#include "remote.h"

#include <pthread.h>
#include <string.h>

#if PY_VERSION_HEX >= 0x030C0000

/* Serialises interpreter creation process-wide (notes P9; pybind11 does the
 * same on 3.12).  Taken BEFORE the main GIL: see the top of this file. */
static pthread_mutex_t create_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct iworker {
    remote_core *core;
    PyGILState_STATE gilstate;  /* of main_ts */
    PyThreadState *main_ts;     /* this thread's main-interpreter state */
    PyThreadState *ts;          /* the sub-interpreter's; NULL when none */
    PyObject *ns;               /* _worker.py's globals, in ts's interp */
    int index;
} iworker;

static void release_own_gil(gf_worker *w, void *arg)
{
    (void)w;
    (void)arg;
    (void)PyEval_SaveThread();
}

/* With the new interpreter's GIL: run the worker half and its setup().
 * 0, or -1 with a malloc'd reason in *why (and no exception set). */
static int worker_setup(iworker *iw, char **why)
{
    remote_core *core = iw->core;
    char name[128];
    snprintf(name, sizeof name, "%s_%d", core->name_prefix, iw->index);
    int initializer_failed;
    if (gf_worker_setup(core->source, core->init, core->init_len, name,
                        &iw->ns, why, &initializer_failed) == 0)
        return 0;
    if (initializer_failed)
        *why = gf_strdup("A thread initializer failed, the thread pool is "
                         "not usable anymore");
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
    remote_core *core = ctx;
    iworker *iw = calloc(1, sizeof *iw);
    if (!iw) {
        gf_remote_mark_broken(core, gf_strdup("out of memory starting a "
                                              "worker"));
        return -1;  /* the pool goes on with its other workers */
    }
    iw->core = core;
    iw->index = gf_worker_index(w);
    gf_worker_set_data(w, iw);
    char *why = NULL;
    if (atomic_load_explicit(&core->broken, memory_order_acquire))
        return 0;  /* answers BrokenInterpreterPool, creates nothing */
    if (create_interp(iw, &why) < 0) {
        gf_remote_mark_broken(core, why);
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

static void run_interp(gf_task *t, gf_worker *w)
{
    remote_call *rc = gf_remote_call_of(t);
    iworker *iw = gf_worker_data(w);
    if (!gf_foreign_begin(&rc->base)) {
        gf_foreign_end(&rc->base);
        return;
    }
    char *broken = atomic_load_explicit(&iw->core->broken,
                                        memory_order_acquire);
    if (broken || !iw->ts) {
        gf_remote_store_text(rc, STATUS_BROKEN,
                             gf_strdup(broken ? broken : "the worker has no "
                                                         "interpreter"));
        gf_foreign_end(&rc->base);
        return;
    }
    if (gf_worker_hold_arg(w) != iw) {
        gf_worker_release_hold(w);
        PyEval_RestoreThread(iw->ts);
        gf_worker_set_hold(w, release_own_gil, iw);
    }
    PyObject *r = gf_worker_call(iw->ns, rc->kind, rc->fn_data, rc->fn_len,
                                 rc->fn_cached, rc->data, rc->len, NULL);
    int replace = 0;
    if (r && PyBytes_Check(r)) {
        size_t n = (size_t)PyBytes_GET_SIZE(r);
        char *out = malloc(n ? n : 1);
        if (out) {
            memcpy(out, PyBytes_AS_STRING(r), n);
            rc->status = STATUS_PICKLED;
            rc->out = out;
            rc->out_len = n;
        } else {
            gf_remote_store_text(rc, STATUS_FAILED, NULL);
        }
    } else {
        if (r)
            PyErr_SetString(PyExc_TypeError, "the worker half returned "
                                             "something other than bytes");
        gf_remote_store_text(rc, STATUS_FAILED,
                             gf_exception_text("the worker's interpreter "
                                               "stopped working (it is being "
                                               "replaced): "));
        replace = 1;
    }
    Py_XDECREF(r);
    gf_foreign_end(&rc->base);
    if (replace) {
        gf_worker_set_hold(w, NULL, NULL);
        end_interp(iw);
        char *why = NULL;
        if (create_interp(iw, &why) < 0)
            gf_remote_mark_broken(iw->core, why);
        else
            gf_worker_set_hold(w, release_own_gil, iw);
    }
}

const remote_backend gf_interp_backend = {
    .noun = "interpreter",
    .run = run_interp,
    .on_start = on_start,
    .on_stop = on_stop,
    .stop_for_fork = 1,
};

int gf_interp_register(PyObject *module, module_state *st)
{
    st->broken_interp_pool = PyErr_NewExceptionWithDoc(
        "gilfree.BrokenInterpreterPool",
        "An interpreter pool cannot run tasks any more (its initializer "
        "failed, or a worker interpreter could not be created).",
        st->broken_thread_pool, NULL);
    if (!st->broken_interp_pool)
        return -1;
    return PyModule_AddObjectRef(module, "BrokenInterpreterPool",
                                 st->broken_interp_pool);
}

#else /* Python 3.11: no PyInterpreterConfig; gilfree._interpreters says so */

const remote_backend gf_interp_backend = {.noun = "interpreter"};

int gf_interp_register(PyObject *module, module_state *st)
{
    (void)module;
    (void)st;
    return 0;
}

#endif
