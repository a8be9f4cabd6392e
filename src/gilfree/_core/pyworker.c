/* pyworker.c - what a runtime worker does to run Python.
 *
 * GIL rules:
 *  - a worker creates its own PyThreadState in the executor's interpreter
 *    (PyThreadState_New), and takes that interpreter's GIL with
 *    PyEval_RestoreThread; it never uses PyGILState_*, which always means
 *    the main interpreter;
 *  - once it has the GIL it keeps it across consecutive Python tasks (the
 *    pool's "hold"), and lets it go when it runs out of work, before a
 *    native task, or after holding it for a switch interval;
 *  - it touches no Python object without the GIL.
 *
 * The hand-off: when a caller waits on a future with the GIL released
 * (wait.c), the worker that finishes it lets the GIL go *before* it
 * completes the future's `done` word, so the caller wakes to a free GIL
 * instead of queueing in the GIL's condition variable.  And a worker about
 * to take the GIL while no caller of ours is waiting (so somebody is
 * probably running Python) spins for a moment for one to start waiting:
 * a submit() followed by result() then takes one GIL hand-over, not two
 * futex sleeps.
 */
#include "executor.h"
#include "future.h"

#include "gf_atomic.h"

/* How long a worker waits for a caller to release the GIL before it
 * queues for the GIL the ordinary way. */
#define GIL_SPIN_NS 20000

/* Hold the GIL at most about one switch interval (CPython's default is
 * 5 ms) before offering it to others; checked every YIELD_CHECK tasks. */
#define HOLD_NS 5000000
#define YIELD_CHECK 16

typedef struct pyworker {
    PyThreadState *tstate;
    executor_core *core;
    int64_t held_since;
    unsigned tasks_since_check;
} pyworker;

static void release_gil(gf_worker *w, void *arg)
{
    (void)w;
    (void)arg;
    (void)PyEval_SaveThread();
}

static void take_gil(gf_worker *w, pyworker *pw)
{
    module_state *st = pw->core->st;
    int64_t start = gf_now_ns(), now = start;
    while (atomic_load(&st->waiting_callers) == 0
           && (now = gf_now_ns()) - start < GIL_SPIN_NS)
        gf_spin_step(now - start);
    PyEval_RestoreThread(pw->tstate);
    gf_worker_set_hold(w, release_gil, pw);
    pw->held_since = gf_now_ns();
    pw->tasks_since_check = 0;
}

void gf_pyworker_enter(gf_worker *w)
{
    pyworker *pw = gf_worker_data(w);
    if (gf_worker_hold_arg(w) == pw)
        return;
    gf_worker_release_hold(w);
    take_gil(w, pw);
}

void gf_pyworker_finish(gf_worker *w, PyObject *future)
{
    FutureObject *f = (FutureObject *)future;
    if (!f->defer_done) {
        Py_DECREF(future);
        gf_pyworker_maybe_yield(w);
        return;
    }
    /* A caller waits on it, so it holds a reference and ours is not the
     * last: drop it now, let the GIL go, then complete.  Should the caller
     * give up in between (a timeout) and drop the future, its dealloc waits
     * for this completion (future.c). */
    Py_DECREF(future);
    gf_worker_release_hold(w);
    gf_completion_complete(&f->done, false);
}

void gf_pyworker_maybe_yield(gf_worker *w)
{
    pyworker *pw = gf_worker_data(w);
    if (++pw->tasks_since_check < YIELD_CHECK)
        return;
    pw->tasks_since_check = 0;
    int64_t now = gf_now_ns();
    if (now - pw->held_since < HOLD_NS)
        return;
    /* Dropping and retaking lets a thread that asked for the GIL (it sets
     * a drop request after one switch interval) run first. */
    (void)PyEval_SaveThread();
    PyEval_RestoreThread(pw->tstate);
    pw->held_since = gf_now_ns();
}

static void call_worker_hook(module_state *st, int index, PyObject *arg)
{
    if (!st->worker_hooks || st->worker_hooks == Py_None)
        return;
    PyObject *r = arg ? PyObject_CallOneArg(
                            PyTuple_GET_ITEM(st->worker_hooks, index), arg)
                      : PyObject_CallNoArgs(
                            PyTuple_GET_ITEM(st->worker_hooks, index));
    if (!r)
        PyErr_WriteUnraisable(PyTuple_GET_ITEM(st->worker_hooks, index));
    Py_XDECREF(r);
}

static void drop_thread_state(pyworker *pw)
{
    call_worker_hook(pw->core->st, 1, NULL);
    PyThreadState_Clear(pw->tstate);
    PyThreadState_DeleteCurrent();  /* releases the GIL */
    free(pw);
}

static int on_start(gf_worker *w, void *ctx)
{
    executor_core *core = ctx;
    pyworker *pw = calloc(1, sizeof *pw);
    if (!pw)
        return -1;
    pw->core = core;
    /* PyThreadState_New does not need the GIL; RestoreThread takes it. */
    pw->tstate = PyThreadState_New(core->interp);
    if (!pw->tstate) {
        free(pw);
        return -1;
    }
    PyEval_RestoreThread(pw->tstate);
    pw->held_since = gf_now_ns();
    gf_worker_set_data(w, pw);

    PyObject *name = PyUnicode_FromFormat("%U_%d", core->name_prefix,
                                          gf_worker_index(w));
    if (name) {
        call_worker_hook(core->st, 0, name);
        Py_DECREF(name);
    } else {
        PyErr_WriteUnraisable(NULL);
    }

    if (core->initializer && !core->broken) {
        PyObject *r = PyObject_Call(core->initializer, core->initargs, NULL);
        if (!r) {
            /* As the stdlib: log it, break the pool, and this worker ends. */
            PyObject *exc = gf_fetch_exception();
            PyObject *saved = PyErr_GetHandledException();
            PyErr_SetHandledException(exc);
            PyObject *lr = PyObject_CallMethod(core->st->cf_logger,
                                               "critical", "s",
                                               "Exception in initializer:");
            PyErr_SetHandledException(saved);
            Py_XDECREF(saved);
            if (!lr)
                PyErr_WriteUnraisable(NULL);
            Py_XDECREF(lr);
            Py_XDECREF(exc);
            PyObject *msg = PyUnicode_FromString(
                "A thread initializer failed, the thread pool is not usable "
                "anymore");
            if (msg) {
                gf_core_set_broken(core, msg);
                Py_DECREF(msg);
            } else {
                PyErr_WriteUnraisable(NULL);
            }
            gf_worker_set_data(w, NULL);
            drop_thread_state(pw);
            return -1;
        }
        Py_DECREF(r);
    }
    /* Keep the GIL: the task that woke this worker is Python, usually. */
    gf_worker_set_hold(w, release_gil, pw);
    return 0;
}

static void on_stop(gf_worker *w, void *ctx)
{
    (void)ctx;
    pyworker *pw = gf_worker_data(w);
    PyEval_RestoreThread(pw->tstate);
    drop_thread_state(pw);
}

const gf_pool_hooks gf_pyworker_hooks_template = {
    .on_start = on_start,
    .on_stop = on_stop,
};
