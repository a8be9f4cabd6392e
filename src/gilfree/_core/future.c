/* future.c - _core.FutureBase: concurrent.futures.Future's contract with
 * its state in C (see future.h for the threading rule).
 *
 * Besides the stdlib methods it has multiprocessing's AsyncResult methods
 * (get, wait, ready, successful), so that Pool.apply_async can return the
 * same object.
 */
#include "future.h"
#include "foreign.h"

#include <float.h>
#include <sched.h>

static const char *const state_names[] = {
    [FUT_PENDING] = "PENDING",
    [FUT_RUNNING] = "RUNNING",
    [FUT_CANCELLED] = "CANCELLED",
    [FUT_CANCELLED_AND_NOTIFIED] = "CANCELLED_AND_NOTIFIED",
    [FUT_FINISHED] = "FINISHED",
};

static inline int is_final(const FutureObject *f)
{
    return f->state >= FUT_CANCELLED;
}

static inline int is_cancelled(const FutureObject *f)
{
    return f->state == FUT_CANCELLED || f->state == FUT_CANCELLED_AND_NOTIFIED;
}

static inline void sync_foreign(FutureObject *f)
{
    if (f->foreign)
        gf_future_sync(f);
}

/* ---- creation and GC -------------------------------------------------- */

static void init_fields(FutureObject *f, module_state *st)
{
    gf_completion_init(&f->done);
    f->state = FUT_PENDING;
    f->st = st;
}

FutureObject *gf_future_new(module_state *st)
{
    PyTypeObject *type = st->future_type ? st->future_type
                                         : st->future_base_type;
    FutureObject *f = (FutureObject *)type->tp_alloc(type, 0);
    if (f)
        init_fields(f, st);
    return f;
}

static PyObject *future_tp_new(PyTypeObject *type, PyObject *args,
                               PyObject *kwds)
{
    (void)args;
    (void)kwds;
    module_state *st = state_of_type(type);
    if (!st)
        return NULL;
    FutureObject *f = (FutureObject *)type->tp_alloc(type, 0);
    if (f)
        init_fields(f, st);
    return (PyObject *)f;
}

/* Accept no arguments, and keep concurrent.futures.Future.__init__ (next in
 * the MRO) from running: it would try to assign our read-only fields. */
static int future_tp_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Future() takes no arguments");
        return -1;
    }
    return 0;
}

static void clear_call(FutureObject *f)
{
    Py_CLEAR(f->fn);
    Py_CLEAR(f->callargs);
    Py_CLEAR(f->kwnames);
}

static int future_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    FutureObject *f = (FutureObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(f->result);
    Py_VISIT(f->exception);
    Py_VISIT(f->callbacks);
    Py_VISIT(f->condition);
    Py_VISIT(f->waiters);
    Py_VISIT(f->fn);
    Py_VISIT(f->callargs);
    Py_VISIT(f->kwnames);
    return 0;
}

static int future_tp_clear(PyObject *self)
{
    FutureObject *f = (FutureObject *)self;
    Py_CLEAR(f->result);
    Py_CLEAR(f->exception);
    Py_CLEAR(f->callbacks);
    Py_CLEAR(f->condition);
    Py_CLEAR(f->waiters);
    clear_call(f);
    return 0;
}


static void future_tp_dealloc(PyObject *self)
{
    FutureObject *f = (FutureObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    /* A worker that finished this future let the GIL go before completing
     * `done` (pyworker.c): if it has not yet, it is a few instructions from
     * it and needs no GIL, so wait rather than free the word under it. */
    while (f->defer_done && !f->foreign && !gf_completion_is_done(&f->done))
        sched_yield();
    if (f->foreign)
        gf_foreign_forget(f);
    (void)future_tp_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* ---- final transitions ------------------------------------------------- */

static void log_callback_error(FutureObject *f)
{
    /* As concurrent.futures does: LOGGER.exception(...), which reads the
     * exception from sys.exc_info(), so make it the handled exception. */
    PyObject *exc = gf_fetch_exception();
    PyObject *saved = PyErr_GetHandledException();
    PyErr_SetHandledException(exc);
    PyObject *r = PyObject_CallMethod(f->st->cf_logger, "exception", "sO",
                                      "exception calling callback for %r",
                                      (PyObject *)f);
    if (!r)
        PyErr_WriteUnraisable((PyObject *)f);
    Py_XDECREF(r);
    PyErr_SetHandledException(saved);
    Py_XDECREF(saved);
    Py_XDECREF(exc);
}

static void invoke_callbacks(FutureObject *f)
{
    PyObject *callbacks = f->callbacks;
    f->callbacks = NULL;
    if (!callbacks)
        return;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(callbacks); i++) {
        PyObject *r = PyObject_CallOneArg(PyList_GET_ITEM(callbacks, i),
                                          (PyObject *)f);
        if (r)
            Py_DECREF(r);
        else
            log_callback_error(f);
    }
    Py_DECREF(callbacks);
}

/* Tell concurrent.futures.wait/as_completed waiters; `method` is one of
 * add_result / add_exception / add_cancelled. */
static void notify_waiters(FutureObject *f, const char *method)
{
    if (!f->waiters || PyList_GET_SIZE(f->waiters) == 0)
        return;
    PyObject *snapshot = PyList_GetSlice(f->waiters, 0, PY_SSIZE_T_MAX);
    if (!snapshot) {
        PyErr_WriteUnraisable((PyObject *)f);
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(snapshot); i++) {
        PyObject *r = PyObject_CallMethod(PyList_GET_ITEM(snapshot, i),
                                          method, "O", (PyObject *)f);
        if (r)
            Py_DECREF(r);
        else
            PyErr_WriteUnraisable((PyObject *)f);
    }
    Py_DECREF(snapshot);
}

static int lock_condition(FutureObject *f, PyObject **cond)
{
    *cond = f->condition;
    if (!*cond)
        return 0;
    Py_INCREF(*cond);
    PyObject *r = PyObject_CallMethod(*cond, "acquire", NULL);
    if (!r) {
        Py_CLEAR(*cond);
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static void unlock_condition(PyObject *cond)
{
    if (!cond)
        return;
    PyObject *r = PyObject_CallMethod(cond, "release", NULL);
    if (!r)
        PyErr_WriteUnraisable(cond);
    Py_XDECREF(r);
    Py_DECREF(cond);
}

/* Move to a final state with waiters notified, then complete `done` and
 * run the callbacks.  `method`: the waiter notification, or NULL for a
 * plain cancel (the stdlib notifies waiters of a cancel only later, in
 * set_running_or_notify_cancel). */
static int finish(FutureObject *f, int new_state, const char *method)
{
    PyObject *cond;
    if (lock_condition(f, &cond) < 0)
        return -1;
    f->state = (unsigned char)new_state;
    if (method)
        notify_waiters(f, method);
    unlock_condition(cond);
    if (!f->defer_done && !gf_completion_is_done(&f->done))
        gf_completion_complete(&f->done, false);
    invoke_callbacks(f);
    return 0;
}

static int reject_final(FutureObject *f)
{
    if (!is_final(f))
        return 0;
    PyErr_Format(f->st->invalid_state_error, "%s: %R",
                 state_names[f->state], (PyObject *)f);
    return -1;
}

int gf_future_set_result(FutureObject *f, PyObject *result)
{
    if (reject_final(f) < 0)
        return -1;
    Py_XSETREF(f->result, Py_NewRef(result));
    return finish(f, FUT_FINISHED, "add_result");
}

int gf_future_set_exception(FutureObject *f, PyObject *exc)
{
    if (reject_final(f) < 0)
        return -1;
    Py_XSETREF(f->exception, Py_NewRef(exc));
    return finish(f, FUT_FINISHED, "add_exception");
}

int gf_future_set_running(FutureObject *f)
{
    if (f->state == FUT_PENDING) {
        f->state = FUT_RUNNING;
        return 1;
    }
    if (f->state == FUT_CANCELLED) {
        PyObject *cond;
        if (lock_condition(f, &cond) < 0)
            return -1;
        f->state = FUT_CANCELLED_AND_NOTIFIED;
        notify_waiters(f, "add_cancelled");
        unlock_condition(cond);
        return 0;
    }
    PyErr_Format(PyExc_RuntimeError, "Future in unexpected state: %s",
                 state_names[f->state]);
    return -1;
}

void gf_future_cancel_and_notify(FutureObject *f)
{
    if (f->state == FUT_PENDING && finish(f, FUT_CANCELLED, NULL) < 0)
        PyErr_WriteUnraisable((PyObject *)f);
    if (f->state == FUT_CANCELLED && gf_future_set_running(f) < 0)
        PyErr_WriteUnraisable((PyObject *)f);
}

/* ---- waiting ------------------------------------------------------------ */

/* Parse an optional timeout (None or a non-negative number, as the stdlib
 * accepts; negative means "do not wait").  -1 on error. */
static int parse_timeout(PyObject *arg, double *timeout)
{
    *timeout = -1.0;
    if (!arg || arg == Py_None)
        return 0;
    double t = PyFloat_AsDouble(arg);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (t != t) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    *timeout = t < 0 ? 0.0 : t;
    return 0;
}

/* Wait until final.  0, 1 on timeout (nothing set), -1 on error. */
static int wait_final(FutureObject *f, double timeout)
{
    sync_foreign(f);
    if (is_final(f))
        return 0;
    /* Set under the GIL, read by the worker under the GIL: it then lets
     * the GIL go before completing `done`, so we wake to a free GIL. */
    f->watched = 1;
    int rc = gf_wait_completion(f->st, &f->done, timeout);
    f->watched = 0;
    sync_foreign(f);
    /* `done` is complete, but another thread may still be turning a
     * foreign payload into the outcome (foreign.c): it is a few steps
     * from final, and we hold no lock it could need. */
    while (rc == 0 && !is_final(f)) {
        Py_BEGIN_ALLOW_THREADS
        sched_yield();
        Py_END_ALLOW_THREADS
    }
    return rc;
}

/* Wait until final, up to the timeout given as a Python argument.  0 when
 * final; on timeout, 1 if timeout_type is NULL, else -1 with timeout_type
 * raised; -1 on any other error. */
static int wait_with_timeout(FutureObject *f, PyObject *timeout_arg,
                             PyObject *timeout_type)
{
    double timeout;
    if (parse_timeout(timeout_arg, &timeout) < 0)
        return -1;
    int rc = wait_final(f, timeout);
    if (rc > 0 && timeout_type) {
        PyErr_SetNone(timeout_type);
        return -1;
    }
    return rc;
}

static PyObject *get_outcome(FutureObject *f)
{
    if (is_cancelled(f)) {
        PyErr_SetNone(f->st->cancelled_error);
        return NULL;
    }
    if (f->exception) {
        /* Raise the very exception object: its __traceback__ still holds
         * the worker's frames, and the caller's frames are appended. */
        PyErr_SetObject((PyObject *)Py_TYPE(f->exception), f->exception);
        return NULL;
    }
    return Py_NewRef(f->result);
}

static PyObject *future_result(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:result", kwlist, &timeout))
        return NULL;
    FutureObject *f = (FutureObject *)self;
    if (wait_with_timeout(f, timeout, PyExc_TimeoutError) < 0)
        return NULL;
    return get_outcome(f);
}

static PyObject *future_get(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:get", kwlist, &timeout))
        return NULL;
    FutureObject *f = (FutureObject *)self;
    if (wait_with_timeout(f, timeout, f->st->mp_timeout_error) < 0)
        return NULL;
    return get_outcome(f);
}

static PyObject *future_exception(PyObject *self, PyObject *args,
                                  PyObject *kw)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:exception", kwlist,
                                     &timeout))
        return NULL;
    FutureObject *f = (FutureObject *)self;
    if (wait_with_timeout(f, timeout, PyExc_TimeoutError) < 0)
        return NULL;
    if (is_cancelled(f)) {
        PyErr_SetNone(f->st->cancelled_error);
        return NULL;
    }
    return Py_NewRef(f->exception ? f->exception : Py_None);
}

static PyObject *future_wait(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:wait", kwlist, &timeout))
        return NULL;
    if (wait_with_timeout((FutureObject *)self, timeout, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- queries and cancel --------------------------------------------------- */

static PyObject *future_done(PyObject *self, PyObject *unused)
{
    (void)unused;
    FutureObject *f = (FutureObject *)self;
    sync_foreign(f);
    return PyBool_FromLong(is_final(f));
}

static PyObject *future_cancelled(PyObject *self, PyObject *unused)
{
    (void)unused;
    FutureObject *f = (FutureObject *)self;
    sync_foreign(f);
    return PyBool_FromLong(is_cancelled(f));
}

static PyObject *future_running(PyObject *self, PyObject *unused)
{
    (void)unused;
    FutureObject *f = (FutureObject *)self;
    sync_foreign(f);
    return PyBool_FromLong(f->state == FUT_RUNNING);
}

static PyObject *future_successful(PyObject *self, PyObject *unused)
{
    (void)unused;
    FutureObject *f = (FutureObject *)self;
    sync_foreign(f);
    if (!is_final(f))
        return PyErr_Format(PyExc_ValueError, "%R not ready", self);
    return PyBool_FromLong(f->state == FUT_FINISHED && !f->exception);
}


static PyObject *future_cancel(PyObject *self, PyObject *unused)
{
    (void)unused;
    FutureObject *f = (FutureObject *)self;
    sync_foreign(f);
    if (f->state == FUT_FINISHED)
        Py_RETURN_FALSE;
    if (is_cancelled(f))
        Py_RETURN_TRUE;
    if (f->state == FUT_RUNNING && !f->foreign)
        Py_RETURN_FALSE;
    /* A foreign call may have been claimed by a worker without our GIL;
     * some backends can still stop it (a process pool made with
     * kill_on_cancel kills the worker process running it). */
    if (f->foreign && !gf_foreign_try_cancel(f)
        && !(f->foreign->ops->cancel_running
             && f->foreign->ops->cancel_running(f->foreign)))
        Py_RETURN_FALSE;
    if (finish(f, FUT_CANCELLED, NULL) < 0)
        return NULL;
    if (f->foreign) {
        /* No worker will run it, so nobody else completes or notifies. */
        gf_completion_complete(&f->done, false);
        if (gf_future_set_running(f) < 0)
            return NULL;
    }
    Py_RETURN_TRUE;
}


static PyObject *future_add_done_callback(PyObject *self, PyObject *fn)
{
    FutureObject *f = (FutureObject *)self;
    sync_foreign(f);
    if (!is_final(f) && f->foreign && gf_foreign_want_notify(f) < 0)
        return NULL;
    sync_foreign(f);
    if (is_final(f)) {
        PyObject *r = PyObject_CallOneArg(fn, self);
        if (r)
            Py_DECREF(r);
        else
            log_callback_error(f);
        Py_RETURN_NONE;
    }
    if (!f->callbacks && !(f->callbacks = PyList_New(0)))
        return NULL;
    if (PyList_Append(f->callbacks, fn) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *future_set_result(PyObject *self, PyObject *result)
{
    if (gf_future_set_result((FutureObject *)self, result) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *future_set_exception(PyObject *self, PyObject *exc)
{
    if (PyExceptionClass_Check(exc)) {
        PyErr_SetString(PyExc_TypeError,
                        "set_exception() needs an exception instance");
        return NULL;
    }
    if (gf_future_set_exception((FutureObject *)self, exc) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *future_set_running_or_notify_cancel(PyObject *self,
                                                     PyObject *unused)
{
    (void)unused;
    int rc = gf_future_set_running((FutureObject *)self);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

/* ---- attributes concurrent.futures.wait/as_completed read ---------------- */

/* A pure read, never a sync: concurrent.futures.wait and as_completed read
 * _state twice while holding every future's _condition, and count on it
 * not changing in between.  They take _condition first, whose getter syncs
 * a foreign future or has the bridge finish it under that lock later. */
static PyObject *future_get_state(PyObject *self, void *closure)
{
    (void)closure;
    FutureObject *f = (FutureObject *)self;
    return PyUnicode_FromString(state_names[f->state]);
}

static PyObject *future_get_condition(PyObject *self, void *closure)
{
    (void)closure;
    FutureObject *f = (FutureObject *)self;
    if (!f->condition && !(f->condition = PyObject_CallNoArgs(f->st->rlock_type)))
        return NULL;
    /* From now on completion must take this lock, and a foreign completion
     * must come back through a thread holding the GIL (foreign.h). */
    if (f->foreign && gf_foreign_want_notify(f) < 0)
        return NULL;
    return Py_NewRef(f->condition);
}

static PyObject *future_get_waiters(PyObject *self, void *closure)
{
    (void)closure;
    FutureObject *f = (FutureObject *)self;
    if (!f->waiters && !(f->waiters = PyList_New(0)))
        return NULL;
    return Py_NewRef(f->waiters);
}

static PyObject *future_repr(PyObject *self)
{
    FutureObject *f = (FutureObject *)self;
    sync_foreign(f);
    const char *name = Py_TYPE(self)->tp_name;
    const char *state = f->state == FUT_CANCELLED_AND_NOTIFIED
                            ? "cancelled"
                            : (const char *[]){"pending", "running",
                                               "cancelled", "cancelled",
                                               "finished"}[f->state];
    if (f->state == FUT_FINISHED) {
        PyObject *what = f->exception ? f->exception : f->result;
        return PyUnicode_FromFormat("<%s at %p state=%s %s %s>", name, self,
                                    state,
                                    f->exception ? "raised" : "returned",
                                    Py_TYPE(what)->tp_name);
    }
    return PyUnicode_FromFormat("<%s at %p state=%s>", name, self, state);
}

static PyMethodDef future_methods[] = {
    {"result", (PyCFunction)(void (*)(void))future_result,
     METH_VARARGS | METH_KEYWORDS,
     "result($self, /, timeout=None)\n--\n\n"
     "Return the call's result, waiting up to timeout seconds."},
    {"exception", (PyCFunction)(void (*)(void))future_exception,
     METH_VARARGS | METH_KEYWORDS,
     "exception($self, /, timeout=None)\n--\n\n"
     "Return the exception the call raised (None if it returned)."},
    {"done", future_done, METH_NOARGS,
     "done($self, /)\n--\n\nTrue if the call finished or was cancelled."},
    {"cancelled", future_cancelled, METH_NOARGS,
     "cancelled($self, /)\n--\n\nTrue if the call was cancelled."},
    {"running", future_running, METH_NOARGS,
     "running($self, /)\n--\n\nTrue if the call is running now."},
    {"cancel", future_cancel, METH_NOARGS,
     "cancel($self, /)\n--\n\n"
     "Cancel the call if it has not started; True if it is cancelled."},
    {"add_done_callback", future_add_done_callback, METH_O,
     "add_done_callback($self, fn, /)\n--\n\n"
     "Call fn(future) when the future is done (now, if it already is)."},
    {"set_result", future_set_result, METH_O,
     "set_result($self, result, /)\n--\n\nFor executors and tests."},
    {"set_exception", future_set_exception, METH_O,
     "set_exception($self, exception, /)\n--\n\nFor executors and tests."},
    {"set_running_or_notify_cancel", future_set_running_or_notify_cancel,
     METH_NOARGS,
     "set_running_or_notify_cancel($self, /)\n--\n\nFor executors and tests."},
    {"get", (PyCFunction)(void (*)(void))future_get,
     METH_VARARGS | METH_KEYWORDS,
     "get($self, /, timeout=None)\n--\n\n"
     "multiprocessing's AsyncResult.get: the result, or raise; on timeout "
     "raise gilfree.TimeoutError."},
    {"wait", (PyCFunction)(void (*)(void))future_wait,
     METH_VARARGS | METH_KEYWORDS,
     "wait($self, /, timeout=None)\n--\n\nWait until done or timed out."},
    {"ready", future_done, METH_NOARGS,
     "ready($self, /)\n--\n\nmultiprocessing's name for done()."},
    {"successful", future_successful, METH_NOARGS,
     "successful($self, /)\n--\n\n"
     "True if the call returned; ValueError if it is not done yet."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef future_getset[] = {
    {"_state", future_get_state, NULL, "state name (concurrent.futures)", NULL},
    {"_condition", future_get_condition, NULL, "lock for cf.wait", NULL},
    {"_waiters", future_get_waiters, NULL, "cf.wait waiters", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot future_slots[] = {
    {Py_tp_doc, "The C core of gilfree.Future."},
    {Py_tp_new, future_tp_new},
    {Py_tp_init, future_tp_init},
    {Py_tp_dealloc, future_tp_dealloc},
    {Py_tp_traverse, future_tp_traverse},
    {Py_tp_clear, future_tp_clear},
    {Py_tp_repr, future_repr},
    {Py_tp_methods, future_methods},
    {Py_tp_getset, future_getset},
    {0, NULL},
};

static PyType_Spec future_spec = {
    .name = "gilfree._core.FutureBase",
    .basicsize = sizeof(FutureObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = future_slots,
};

int gf_future_register(PyObject *module, module_state *st)
{
    st->future_base_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &future_spec, NULL);
    if (!st->future_base_type)
        return -1;
    return PyModule_AddType(module, st->future_base_type);
}
