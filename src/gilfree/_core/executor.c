/* executor.c - _core.Executor, the threads backend behind
 * gilfree.ThreadPoolExecutor and Pool(backend="threads").
 *
 * submit() builds the call into the future itself (one allocation), gives
 * the queue a reference, and hands the embedded gf_task to the runtime.
 * A worker runs it holding the GIL (pyworker.c), sets the outcome and drops
 * the queue's reference.  Cores are kept on a per-interpreter list so that
 * interpreter exit and fork() can find every live one (see
 * _shutdown_all and _after_fork_child at the bottom).
 */
#include "executor.h"
#include "future.h"

#include "structmember.h"

typedef struct ExecutorObject {
    PyObject_HEAD
    executor_core *core;     /* NULL once the core is reaped */
    int max_workers;
    PyObject *weakreflist;
} ExecutorObject;

/* ---- cores ---------------------------------------------------------------- */

static const gf_core_life_ops executor_life_ops;  /* below */

executor_core *gf_core_new(module_state *st, int max_workers,
                           PyObject *name_prefix, PyObject *initializer,
                           PyObject *initargs)
{
    executor_core *core = PyMem_RawCalloc(1, sizeof *core);
    if (!core) {
        PyErr_NoMemory();
        return NULL;
    }
    core->interp = PyInterpreterState_Get();
    core->st = st;
    core->name_prefix = Py_NewRef(name_prefix);
    core->initializer = Py_XNewRef(initializer);
    core->initargs = Py_NewRef(initargs);

    PyObject *ascii = PyUnicode_AsUTF8String(name_prefix);
    gf_pool_config cfg = {
        .max_workers = max_workers,
        .name_prefix = ascii ? PyBytes_AS_STRING(ascii) : "gilfree",
        .hooks = gf_pyworker_hooks_template,
    };
    PyErr_Clear();
    cfg.hooks.ctx = core;
    int rc = gf_pool_create(&cfg, &core->life.pool);
    Py_XDECREF(ascii);
    if (rc != 0) {
        Py_DECREF(core->name_prefix);
        Py_XDECREF(core->initializer);
        Py_DECREF(core->initargs);
        PyMem_RawFree(core);
        gf_raise(rc, "creating the worker pool");
        return NULL;
    }
    core->life.ops = &executor_life_ops;
    gf_life_link(&st->cores, &core->life);
    return core;
}

int gf_core_submit(executor_core *core, gf_task *t)
{
    if (core->broken) {
        PyErr_SetObject(core->st->broken_thread_pool, core->broken);
        return -1;
    }
    if (core->life.shutdown) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return -1;
    }
    int rc = gf_pool_submit(core->life.pool, t);
    if (rc != 0) {
        gf_raise(rc, "submitting a task");
        return -1;
    }
    return 0;
}

/* Fail or cancel a task that was queued but never started.  `reason`:
 * NULL to cancel (shutdown(cancel_futures=True)), else the exception
 * object to fail it with.  Runs with the GIL. */
static void dispose_task(gf_task *t, PyObject *reason)
{
    if (gf_mapiter_is_runner(t)) {
        gf_mapiter_cancel_runner(t, reason);
        return;
    }
    FutureObject *f = GF_CONTAINER_OF(t, FutureObject, task);
    Py_CLEAR(f->fn);
    Py_CLEAR(f->callargs);
    Py_CLEAR(f->kwnames);
    if (!reason)
        gf_future_cancel_and_notify(f);
    else if (f->state < FUT_CANCELLED && gf_future_set_exception(f, reason) < 0)
        PyErr_WriteUnraisable((PyObject *)f);
    Py_DECREF(f);
}

static void cancel_drained(gf_task *t, void *arg)
{
    (void)arg;
    dispose_task(t, NULL);
}

static void fail_drained(gf_task *t, void *arg)
{
    dispose_task(t, (PyObject *)arg);
}

void gf_core_set_broken(executor_core *core, PyObject *message)
{
    if (!core->broken)
        core->broken = Py_NewRef(message);
    PyObject *exc = PyObject_CallOneArg(core->st->broken_thread_pool, message);
    if (!exc) {
        PyErr_WriteUnraisable(NULL);
        return;
    }
    gf_pool_drain(core->life.pool, fail_drained, exc);
    Py_DECREF(exc);
}

/* ---- the core's life (life.h) ------------------------------------------------ */

static void detach_owner(gf_core_life *life)
{
    executor_core *core = (executor_core *)life;
    if (core->owner)
        core->owner->core = NULL;
    core->owner = NULL;
}

static void destroy(gf_core_life *life)
{
    executor_core *core = (executor_core *)life;
    module_state *st = core->st;
    if (st->bridge == core)
        st->bridge = NULL;
    gf_pool_destroy(core->life.pool);
    Py_CLEAR(core->name_prefix);
    Py_CLEAR(core->initializer);
    Py_CLEAR(core->initargs);
    Py_CLEAR(core->broken);
    PyMem_RawFree(core);
}

static const gf_core_life_ops executor_life_ops = {
    .detach_owner = detach_owner,
    .destroy = destroy,
    .cancel_drained = cancel_drained,
};

/* ---- the Python type -------------------------------------------------------- */

static PyObject *executor_tp_new(PyTypeObject *type, PyObject *args,
                                 PyObject *kwds)
{
    static char *kwlist[] = {"max_workers", "thread_name_prefix",
                             "initializer", "initargs", NULL};
    int max_workers;
    PyObject *prefix, *initializer = Py_None, *initargs = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iU|OO!:Executor", kwlist,
                                     &max_workers, &prefix, &initializer,
                                     &PyTuple_Type, &initargs))
        return NULL;
    if (max_workers <= 0) {
        PyErr_SetString(PyExc_ValueError, "max_workers must be greater than 0");
        return NULL;
    }
    if (initializer != Py_None && !PyCallable_Check(initializer)) {
        PyErr_SetString(PyExc_TypeError, "initializer must be a callable");
        return NULL;
    }
    module_state *st = state_of_type(type);
    if (!st)
        return NULL;
    gf_life_reap_finished(&st->cores);
    ExecutorObject *self = (ExecutorObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    PyObject *empty = initargs ? NULL : PyTuple_New(0);
    self->core = gf_core_new(st, max_workers, prefix,
                             initializer == Py_None ? NULL : initializer,
                             initargs ? initargs : empty);
    Py_XDECREF(empty);
    if (!self->core) {
        Py_DECREF(self);
        return NULL;
    }
    self->core->owner = self;
    self->max_workers = max_workers;
    return (PyObject *)self;
}

static void executor_tp_dealloc(PyObject *self)
{
    ExecutorObject *ex = (ExecutorObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (ex->weakreflist)
        PyObject_ClearWeakRefs(self);
    if (ex->core)
        gf_life_let_go(&ex->core->st->cores, &ex->core->life);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int executor_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

executor_core *gf_executor_core(PyObject *executor)
{
    PyTypeObject *type = Py_TYPE(executor);
    module_state *st = state_of_type(type);
    if (!st || !PyObject_TypeCheck(executor, st->executor_type)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "expected a gilfree executor, not %.200s",
                     type->tp_name);
        return NULL;
    }
    ExecutorObject *ex = (ExecutorObject *)executor;
    if (!ex->core) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return NULL;
    }
    return ex->core;
}

/* The task run function for submit(): one Python call. */
static void run_call(gf_task *t, gf_worker *w)
{
    gf_pyworker_enter(w);
    FutureObject *f = GF_CONTAINER_OF(t, FutureObject, task);
    executor_core *core = f->core;
    if (core->broken) {
        PyObject *exc = PyObject_CallOneArg(core->st->broken_thread_pool,
                                            core->broken);
        if (!exc || gf_future_set_exception(f, exc) < 0)
            PyErr_WriteUnraisable((PyObject *)f);
        Py_XDECREF(exc);
        Py_CLEAR(f->fn);
        Py_CLEAR(f->callargs);
        Py_CLEAR(f->kwnames);
        gf_pyworker_finish(w, (PyObject *)f);
        return;
    }
    int run = gf_future_set_running(f);
    PyObject *result = NULL, *exc = NULL;
    if (run == 1) {
        result = PyObject_Vectorcall(f->fn, &PyTuple_GET_ITEM(f->callargs, 0),
                                     (size_t)f->nposargs, f->kwnames);
        if (!result)
            exc = gf_fetch_exception();
    } else if (run < 0) {
        PyErr_WriteUnraisable((PyObject *)f);
    }
    Py_CLEAR(f->fn);
    Py_CLEAR(f->callargs);
    Py_CLEAR(f->kwnames);
    if (run == 1) {
        /* A caller waits on it: complete `done` after the GIL hand-off
         * (pyworker.c). */
        f->defer_done = f->watched;
        int rc = result ? gf_future_set_result(f, result)
                        : gf_future_set_exception(f, exc);
        if (rc < 0) {
            PyErr_WriteUnraisable((PyObject *)f);
            f->defer_done = 0;
        }
        Py_XDECREF(result);
        Py_XDECREF(exc);
    }
    gf_pyworker_finish(w, (PyObject *)f);
}

static PyObject *executor_submit(PyObject *self, PyObject *const *args,
                                 Py_ssize_t nargsf, PyObject *kwnames)
{
    ExecutorObject *ex = (ExecutorObject *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "submit() missing 1 required positional argument: "
                        "'fn'");
        return NULL;
    }
    PyObject *fn = args[0];
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError,
                     "submit() needs a callable, not %.200s",
                     Py_TYPE(fn)->tp_name);
        return NULL;
    }
    if (!ex->core) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return NULL;
    }
    module_state *st = ex->core->st;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *callargs = PyTuple_New(nargs - 1 + nkw);
    if (!callargs)
        return NULL;
    for (Py_ssize_t i = 1; i < nargs + nkw; i++)
        PyTuple_SET_ITEM(callargs, i - 1, Py_NewRef(args[i]));
    FutureObject *f = gf_future_new(st);
    if (!f) {
        Py_DECREF(callargs);
        return NULL;
    }
    f->fn = Py_NewRef(fn);
    f->callargs = callargs;
    f->kwnames = nkw ? Py_NewRef(kwnames) : NULL;
    f->nposargs = nargs - 1;
    f->core = ex->core;
    f->task.run = run_call;
    Py_INCREF(f);  /* the queue's reference, dropped by the worker */
    if (gf_core_submit(ex->core, &f->task) < 0) {
        Py_DECREF(f);
        Py_DECREF(f);
        return NULL;
    }
    return (PyObject *)f;
}

static PyObject *executor_shutdown(PyObject *self, PyObject *args,
                                   PyObject *kwds)
{
    executor_core *core = ((ExecutorObject *)self)->core;
    return gf_life_shutdown_method(core ? &core->st->cores : NULL,
                                   core ? &core->life : NULL, args, kwds);
}

static PyObject *executor_get_max_workers(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(((ExecutorObject *)self)->max_workers);
}

static PyObject *executor_get_started(PyObject *self, void *closure)
{
    (void)closure;
    ExecutorObject *ex = (ExecutorObject *)self;
    return PyLong_FromLong(ex->core ? gf_pool_started_workers(ex->core->life.pool)
                                    : 0);
}

static PyObject *executor_get_shutdown(PyObject *self, void *closure)
{
    (void)closure;
    ExecutorObject *ex = (ExecutorObject *)self;
    return PyBool_FromLong(!ex->core || ex->core->life.shutdown);
}

PyObject *gf_mapiter_new(PyObject *executor, PyObject *const *args,
                         Py_ssize_t nargs, PyObject *kwnames);

static PyMethodDef executor_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))executor_submit,
     METH_FASTCALL | METH_KEYWORDS,
     "submit($self, fn, /, *args, **kwargs)\n--\n\n"
     "Schedule fn(*args, **kwargs) on a worker; return a Future."},
    {"_map", (PyCFunction)(void (*)(void))gf_mapiter_new,
     METH_FASTCALL | METH_KEYWORDS,
     "_map($self, fn, items, /, *, chunksize=0, ordered=True, star=False, "
     "timeout=None, window=0)\n--\n\n"
     "Run fn over items; an iterator of results (see mapiter.c)."},
    {"shutdown", (PyCFunction)(void (*)(void))executor_shutdown,
     METH_VARARGS | METH_KEYWORDS,
     "shutdown($self, /, wait=True, *, cancel_futures=False)\n--\n\n"
     "Stop accepting work; with wait, return when every worker has "
     "exited."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef executor_getset[] = {
    {"_max_workers", executor_get_max_workers, NULL, "worker limit", NULL},
    {"_started_workers", executor_get_started, NULL, "threads started", NULL},
    {"_shutdown", executor_get_shutdown, NULL, "shut down?", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef executor_members[] = {
    {"__weaklistoffset__", T_PYSSIZET,
     offsetof(ExecutorObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot executor_slots[] = {
    {Py_tp_doc, "The C core of gilfree's threads backend."},
    {Py_tp_new, executor_tp_new},
    {Py_tp_init, gf_life_tp_init},
    {Py_tp_dealloc, executor_tp_dealloc},
    {Py_tp_traverse, executor_tp_traverse},
    {Py_tp_methods, executor_methods},
    {Py_tp_getset, executor_getset},
    {Py_tp_members, executor_members},
    {0, NULL},
};

static PyType_Spec executor_spec = {
    .name = "gilfree._core.Executor",
    .basicsize = sizeof(ExecutorObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = executor_slots,
};

/* ---- interpreter exit and fork --------------------------------------------- */

/* Registered with threading's atexit by gilfree/__init__.py: like the
 * stdlib's executors, wait for every queued task, then join the workers -
 * before the interpreter is finalised, since a worker that tried to take
 * the GIL after that would be killed by CPython mid-task. */
static PyObject *shutdown_all(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    /* Native calls first: their completions may still need the bridge. */
    if (gf_foreign_quiesce(st) < 0)
        return NULL;
    if (gf_life_shutdown_all(&st->cores) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* os.register_at_fork(after_in_child=...): the workers do not exist in
 * the child.  Every task that was queued or running fails with
 * BrokenThreadPool instead of hanging, and each pool starts new workers
 * on demand.  The thread that forked is the child's main thread. */
static PyObject *after_fork_child(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    if (st->signal_thread)
        st->signal_thread = PyThread_get_thread_ident();
    PyObject *exc = PyObject_CallFunction(
        st->broken_thread_pool, "s",
        "this task was queued or running in the parent when the process "
        "forked; worker threads do not survive fork(), so it cannot finish "
        "here (submit it again in the child)");
    if (!exc)
        return NULL;
    for (gf_core_life *c = st->cores; c; c = c->next)
        gf_pool_after_fork_child(c->pool, fail_drained, exc);
    gf_foreign_after_fork_child(st);
    Py_DECREF(exc);
    Py_RETURN_NONE;
}

static PyMethodDef lifecycle_functions[] = {
    {"_shutdown_all", shutdown_all, METH_NOARGS,
     "_shutdown_all($module, /)\n--\n\nShut down and join every executor."},
    {"_after_fork_child", after_fork_child, METH_NOARGS,
     "_after_fork_child($module, /)\n--\n\nReset every executor in a child."},
    {NULL, NULL, 0, NULL},
};

int gf_executor_register(PyObject *module, module_state *st)
{
    st->executor_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &executor_spec, NULL);
    if (!st->executor_type || PyModule_AddType(module, st->executor_type) < 0)
        return -1;
    return PyModule_AddFunctions(module, lifecycle_functions);
}
