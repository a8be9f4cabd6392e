/* module.c - gilfree._core: multi-phase init, module state, and the hooks
 * the Python layer registers at import.
 *
 * Declared Py_MOD_PER_INTERPRETER_GIL_SUPPORTED: it imports in an own-GIL
 * sub-interpreter because it has no static Python objects, only heap
 * types and per-interpreter state, and parses arguments without
 * Argument Clinic's lazily created static parsers (gh-119213).
 */
#include "executor.h"
#include "future.h"

#include "gf_park.h"

#include <stdlib.h>

static PyObject *import_attr(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (!m)
        return NULL;
    PyObject *attr = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return attr;
}

/* gilfree.TimeoutError: raised by AsyncResult-style get(); both the
 * builtin TimeoutError (which concurrent.futures raises) and
 * multiprocessing.TimeoutError catch it. */
static PyObject *make_timeout_error(void)
{
    PyObject *mp = import_attr("multiprocessing", "TimeoutError");
    if (!mp)
        return NULL;
    PyObject *bases = PyTuple_Pack(2, PyExc_TimeoutError, mp);
    Py_DECREF(mp);
    if (!bases)
        return NULL;
    PyObject *type = PyErr_NewExceptionWithDoc(
        "gilfree.TimeoutError",
        "The wait timed out (a builtin TimeoutError and a "
        "multiprocessing.TimeoutError).",
        bases, NULL);
    Py_DECREF(bases);
    return type;
}

/* threading.main_thread().ident in the main interpreter, the only thread
 * that runs signal handlers (see wait.c); 0 in a sub-interpreter. */
static int find_signal_thread(module_state *st)
{
    st->signal_thread = 0;
    if (PyInterpreterState_Get() != PyInterpreterState_Main())
        return 0;
    PyObject *main_thread = import_attr("threading", "main_thread");
    PyObject *thread = main_thread ? PyObject_CallNoArgs(main_thread) : NULL;
    PyObject *ident = thread ? PyObject_GetAttrString(thread, "ident") : NULL;
    if (ident)
        st->signal_thread = PyLong_AsUnsignedLong(ident);
    Py_XDECREF(main_thread);
    Py_XDECREF(thread);
    Py_XDECREF(ident);
    return PyErr_Occurred() ? -1 : 0;
}

/* The stdlib's futures vocabulary, which futures and executors need:
 * concurrent.futures (and logging with it) and multiprocessing, about 30 ms
 * to import.  A worker process of the processes backend needs none of it
 * unless a task imports gilfree, so the zygote loads the module "lean"
 * (GILFREE_LEAN_CORE=1) and gilfree/__init__.py completes it (_complete). */
static int import_vocabulary(PyObject *module, module_state *st)
{
    if (!(st->cancelled_error = import_attr("concurrent.futures",
                                            "CancelledError"))
        || !(st->invalid_state_error = import_attr("concurrent.futures",
                                                   "InvalidStateError"))
        || !(st->broken_thread_pool = import_attr("concurrent.futures.thread",
                                                  "BrokenThreadPool"))
        || !(st->cf_logger = import_attr("concurrent.futures._base", "LOGGER"))
        || !(st->rlock_type = import_attr("_thread", "RLock"))
        || !(st->mp_timeout_error = make_timeout_error())
        || find_signal_thread(st) < 0)
        return -1;
    /* After broken_thread_pool: BrokenInterpreterPool subclasses it. */
    if (gf_interp_register(module, st) < 0)
        return -1;
    st->lean = 0;
    return PyModule_AddObjectRef(module, "TimeoutError", st->mp_timeout_error);
}

static PyObject *complete(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    if (st->lean && import_vocabulary(module, st) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *register_future_class(PyObject *module, PyObject *cls)
{
    module_state *st = state_of_module(module);
    if (!PyType_Check(cls)
        || !PyType_IsSubtype((PyTypeObject *)cls, st->future_base_type)) {
        PyErr_SetString(PyExc_TypeError, "expected a FutureBase subclass");
        return NULL;
    }
    Py_XSETREF(st->future_type, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

static PyObject *set_worker_hooks(PyObject *module, PyObject *args)
{
    PyObject *started, *stopping;
    if (!PyArg_ParseTuple(args, "OO:_set_worker_hooks", &started, &stopping))
        return NULL;
    module_state *st = state_of_module(module);
    Py_XSETREF(st->worker_hooks, PyTuple_Pack(2, started, stopping));
    if (!st->worker_hooks)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *next_executor_number(PyObject *module, PyObject *unused)
{
    (void)unused;
    return PyLong_FromLong(state_of_module(module)->executor_counter++);
}

static PyMethodDef module_functions[] = {
    {"_register_future_class", register_future_class, METH_O,
     "_register_future_class($module, cls, /)\n--\n\n"
     "The class (a FutureBase subclass) of the futures we create."},
    {"_set_worker_hooks", set_worker_hooks, METH_VARARGS,
     "_set_worker_hooks($module, started, stopping, /)\n--\n\n"
     "Called on each worker: started(name) first, stopping() last."},
    {"_next_executor_number", next_executor_number, METH_NOARGS,
     "_next_executor_number($module, /)\n--\n\nFor default thread names."},
    {"_complete", complete, METH_NOARGS,
     "_complete($module, /)\n--\n\n"
     "Import the stdlib parts a module loaded lean left out (no-op else)."},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module)
{
    module_state *st = state_of_module(module);
    if (gf_future_register(module, st) < 0
        || gf_executor_register(module, st) < 0
        || gf_mapiter_register(module, st) < 0
        || gf_native_register(module, st) < 0
        || gf_demo_register(module) < 0
        || gf_remote_register(module, st) < 0
        || gf_proc_register(module, st) < 0)
        return -1;
    const char *lean = getenv("GILFREE_LEAN_CORE");
    st->lean = 1;
    if (!(lean && lean[0] == '1') && import_vocabulary(module, st) < 0)
        return -1;
    return PyModule_AddStringConstant(module, "GIL_FREE_ABI", "1");
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = state_of_module(module);
    Py_VISIT(st->future_base_type);
    Py_VISIT(st->future_type);
    Py_VISIT(st->executor_type);
    Py_VISIT(st->map_iter_type);
    Py_VISIT(st->cancelled_error);
    Py_VISIT(st->invalid_state_error);
    Py_VISIT(st->mp_timeout_error);
    Py_VISIT(st->broken_thread_pool);
    Py_VISIT(st->cf_logger);
    Py_VISIT(st->rlock_type);
    Py_VISIT(st->worker_hooks);
    Py_VISIT(st->native_normalize);
    Py_VISIT(st->remote_executor_type);
    Py_VISIT(st->shared_buffer_type);
    Py_VISIT(st->broken_interp_pool);
    Py_VISIT(st->remote_codec[0]);
    Py_VISIT(st->remote_codec[1]);
    return 0;
}

static int module_clear(PyObject *module)
{
    module_state *st = state_of_module(module);
    Py_CLEAR(st->future_base_type);
    Py_CLEAR(st->future_type);
    Py_CLEAR(st->executor_type);
    Py_CLEAR(st->map_iter_type);
    Py_CLEAR(st->cancelled_error);
    Py_CLEAR(st->invalid_state_error);
    Py_CLEAR(st->mp_timeout_error);
    Py_CLEAR(st->broken_thread_pool);
    Py_CLEAR(st->cf_logger);
    Py_CLEAR(st->rlock_type);
    Py_CLEAR(st->worker_hooks);
    Py_CLEAR(st->native_normalize);
    Py_CLEAR(st->remote_executor_type);
    Py_CLEAR(st->shared_buffer_type);
    Py_CLEAR(st->broken_interp_pool);
    Py_CLEAR(st->remote_codec[0]);
    Py_CLEAR(st->remote_codec[1]);
    return 0;
}

static void module_free(void *module)
{
    module_state *st = state_of_module(module);
    /* Foreign workers may still push to our graveyard: wait for them.  They
     * never need our GIL, so waiting while holding it cannot deadlock. */
    uint32_t n;
    while ((n = atomic_load_explicit(&st->foreign_outstanding,
                                     memory_order_acquire)) != 0)
        (void)gf_futex_wait(&st->foreign_outstanding, n, -1, false);
    gf_foreign_drain_graveyard(st);
    /* Cores the atexit hook did not shut down (see life.h). */
    gf_life_abandon_all(&st->cores);
    gf_life_abandon_all(&st->remote_cores);
    (void)module_clear(module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

PyModuleDef gf_core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gilfree._core",
    .m_doc = "gilfree's C engine: executors, futures, native tasks.",
    .m_size = sizeof(module_state),
    .m_methods = module_functions,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&gf_core_module);
}
