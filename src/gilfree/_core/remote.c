/* remote.c - _core.RemoteExecutor: the executor core of the backends whose
 * workers run calls somewhere else (remote.h): the executor object and its
 * lifecycle, pickling calls, the outcome of a call, shutdown, exit and
 * fork.  The backends (interp.c, proc.c) provide the worker threads' side.
 *
 * The codec: each backend's Python module installs, with
 * _remote_set_codec(kind, codec), the tuple
 *     (dumps, fallback_dumps, loads, rebuild, failure)
 *   dumps(obj, 5)           bytes, or (bytes, [buffers]) with out-of-band
 *                           buffers (processes)
 *   fallback_dumps(obj, 5)  what plain pickle refuses (cloudpickle)
 *   loads(data[, buffers])  the inverse
 *   rebuild(encoded)        the exception a worker encoded
 *   failure(status, message, code)
 *                           the exception for a call that did not come
 *                           back pickled: status is "broken", "failed",
 *                           "crashed" or "timedout"
 * so exception classes and pickling policy stay in Python.  The processes
 * backend adds (plain_dumps, oob_bytes): the common call is pickled here,
 * in C (fast_dumps), and dumps is called only for the rest.
 */
#include "remote.h"

#include "executor.h"
#include "gf_shm.h"
#include "gf_slab.h"

#include "structmember.h"

#include <string.h>

typedef struct RemoteExecutorObject {
    PyObject_HEAD
    remote_core *core;          /* NULL after a waited-for shutdown */
    int max_workers;
    PyObject *weakreflist;
    /* The last function submitted and its pickle, when it pickles by
     * reference (a module-level function, a class, a builtin): pickling a
     * function costs more than its arguments, and a stream of submits
     * usually repeats one function. */
    PyObject *last_fn, *last_fn_bytes;
} RemoteExecutorObject;

enum codec_slot {
    C_DUMPS, C_FALLBACK, C_LOADS, C_REBUILD, C_FAILURE, C_N,
    /* processes only: pickle.dumps (None: always C_DUMPS) and the size
     * from which a buffer travels out of band; see fast_dumps */
    C_PLAIN = C_N, C_OOB_BYTES, C_N_PROCESSES,
};

static const char *const status_names[] = {
    [STATUS_NONE] = "failed",   [STATUS_PICKLED] = "pickled",
    [STATUS_BROKEN] = "broken", [STATUS_FAILED] = "failed",
    [STATUS_CRASHED] = "crashed", [STATUS_TIMEDOUT] = "timedout",
};

/* ---- for the backends ---------------------------------------------------- */

char *gf_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}

void gf_remote_mark_broken(remote_core *core, char *message)
{
    char *expected = NULL;
    if (!message)
        message = gf_strdup("the pool is broken (out of memory)");
    /* release: a reader of `broken` sees the whole message. */
    if (!atomic_compare_exchange_strong_explicit(
            &core->broken, &expected, message, memory_order_release,
            memory_order_relaxed))
        free(message);
}

void gf_remote_store_text(remote_call *rc, enum call_status status,
                          char *text)
{
    rc->status = (unsigned char)status;
    rc->out = text;
    rc->out_len = text ? strlen(text) : 0;
}

remote_call *gf_remote_call_of(gf_task *t)
{
    FutureObject *f = GF_CONTAINER_OF(t, FutureObject, task);
    return (remote_call *)f->foreign;
}

static PyObject *codec_of(module_state *st, enum remote_kind kind)
{
    PyObject *codec = st->remote_codec[kind];
    if (!codec)
        PyErr_SetString(PyExc_RuntimeError,
                        "gilfree's backend module is gone (interpreter "
                        "shutdown?)");
    return codec;
}

/* The codec's failure(status, message, code, pid) as the current
 * exception. */
static void raise_failure(module_state *st, enum remote_kind kind,
                          enum call_status status, const char *message,
                          int code, int pid)
{
    PyObject *codec = codec_of(st, kind);
    if (!codec)
        return;
    PyObject *exc = PyObject_CallFunction(
        PyTuple_GET_ITEM(codec, C_FAILURE), "ssii", status_names[status],
        message ? message : "out of memory in a worker", code, pid);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

/* ---- the worker's Python half --------------------------------------------- */

int gf_worker_setup(const char *source, const char *init, Py_ssize_t init_len,
                    const char *name, PyObject **ns_out, char **why,
                    int *initializer_failed)
{
    PyObject *ns = NULL, *code = NULL, *r = NULL, *blob = NULL, *pyname = NULL;
    *initializer_failed = 0;
    ns = PyDict_New();
    pyname = PyUnicode_FromString("_gilfree_worker");
    if (!ns || !pyname
        || PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) < 0
        || PyDict_SetItemString(ns, "__name__", pyname) < 0)
        goto error;
    Py_CLEAR(pyname);
    code = Py_CompileString(source, "<gilfree._worker>", Py_file_input);
    if (!code)
        goto error;
    r = PyEval_EvalCode(code, ns, ns);
    if (!r)
        goto error;
    Py_CLEAR(r);
    blob = PyMemoryView_FromMemory((char *)init, init_len, PyBUF_READ);
    pyname = PyUnicode_FromString(name);
    PyObject *setup = blob && pyname ? PyDict_GetItemString(ns, "setup")
                                     : NULL;
    if (!setup)
        goto error;
    r = PyObject_CallFunctionObjArgs(setup, blob, pyname, NULL);
    if (!r) {
        /* setup() raised: the initializer failed (it printed why). */
        PyErr_Clear();
        *initializer_failed = 1;
        goto fail;
    }
    Py_DECREF(r);
    Py_DECREF(code);
    Py_DECREF(blob);
    Py_DECREF(pyname);
    *ns_out = ns;
    return 0;
error:
    *why = gf_exception_text("could not set up a worker: ");
fail:
    Py_XDECREF(r);
    Py_XDECREF(code);
    Py_XDECREF(blob);
    Py_XDECREF(pyname);
    Py_XDECREF(ns);
    return -1;
}

/* Cut a view off from memory we do not own, if the call kept it. */
static void release_view(PyObject *view)
{
    if (view && Py_REFCNT(view) > 1) {
        PyObject *r = PyObject_CallMethod(view, "release", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    Py_XDECREF(view);
}

PyObject *gf_worker_call(PyObject *ns, int kind, const char *fn_data,
                         Py_ssize_t fn_len, int fn_cached, const char *data,
                         Py_ssize_t len, PyObject *buffers)
{
    /* The worker half is looked up per call, so a task that breaks it is
     * noticed (and the worker replaced by the caller). */
    PyObject *fn = PyDict_GetItemString(
        ns, kind == KIND_CHUNK ? "run_chunk" : "run");
    if (!fn) {
        PyErr_SetString(PyExc_RuntimeError, "the worker half is missing");
        return NULL;
    }
    PyObject *view = PyMemoryView_FromMemory((char *)data, len, PyBUF_READ);
    PyObject *fn_view = NULL, *r = NULL;
    if (view && kind == KIND_CHUNK) {
        PyObject *argv[2] = {view, buffers};
        r = PyObject_Vectorcall(fn, argv, buffers ? 2 : 1, NULL);
    } else if (view) {
        fn_view = PyMemoryView_FromMemory((char *)fn_data, fn_len, PyBUF_READ);
        if (fn_view) {
            PyObject *argv[4] = {fn_view, view,
                                 fn_cached ? Py_True : Py_False, buffers};
            r = PyObject_Vectorcall(fn, argv, buffers ? 4 : 3, NULL);
        }
    }
    release_view(view);
    release_view(fn_view);
    return r;
}

/* ---- _core.SharedBuffer: an outcome's out-of-band buffer ------------------ */

/* Exports a shared mapping that a worker filled; unmapped when the last
 * view of it is gone (a memoryview holds its exporter). */
typedef struct SharedBufferObject {
    PyObject_HEAD
    remote_buffer buf;
} SharedBufferObject;

void gf_remote_buffer_free(remote_buffer *buf)
{
    if (buf->slab) {
        gf_slab_release(buf->slab);
        gf_slab_unref(buf->slab);
    } else if (buf->addr) {
        gf_shm_unmap(buf->addr, buf->len);
    }
    buf->addr = NULL;
    buf->slab = NULL;
}

static int shbuf_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    SharedBufferObject *b = (SharedBufferObject *)self;
    return PyBuffer_FillInfo(view, self, b->buf.addr, (Py_ssize_t)b->buf.len,
                             0, flags);
}

static void shbuf_dealloc(PyObject *self)
{
    SharedBufferObject *b = (SharedBufferObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    gf_remote_buffer_free(&b->buf);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot shbuf_slots[] = {
    {Py_tp_doc, "A buffer in shared memory that a worker process wrote."},
    {Py_tp_dealloc, shbuf_dealloc},
    {Py_bf_getbuffer, shbuf_getbuffer},
    {0, NULL},
};

static PyType_Spec shbuf_spec = {
    .name = "gilfree._core.SharedBuffer",
    .basicsize = sizeof(SharedBufferObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = shbuf_slots,
};

PyObject *gf_shared_buffer_new(module_state *st, remote_buffer *buf)
{
    SharedBufferObject *b = PyObject_New(SharedBufferObject,
                                         st->shared_buffer_type);
    if (!b)
        return NULL;
    b->buf = *buf;
    buf->addr = NULL;  /* the object frees it now */
    buf->slab = NULL;
    return (PyObject *)b;
}

PyObject *gf_shared_buffer_list(module_state *st, remote_buffer *bufs, int n)
{
    PyObject *list = PyList_New(n);
    if (!list)
        return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *b = gf_shared_buffer_new(st, &bufs[i]);
        if (!b) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, b);
    }
    return list;
}

/* ---- main side: a call's outcome (main GIL held) ------------------------- */

static enum remote_kind kind_of_call(remote_call *rc);

static PyObject *remote_outcome(foreign_call *fc)
{
    remote_call *rc = (remote_call *)fc;
    module_state *st = fc->st;
    enum remote_kind kind = kind_of_call(rc);
    if (rc->status != STATUS_PICKLED) {
        raise_failure(st, kind, (enum call_status)rc->status,
                      rc->status == STATUS_NONE ? "the task has no outcome"
                                                : rc->out,
                      rc->code, rc->pid);
        return NULL;
    }
    PyObject *codec = codec_of(st, kind);
    if (!codec)
        return NULL;
    PyObject *view = PyMemoryView_FromMemory(rc->out, (Py_ssize_t)rc->out_len,
                                             PyBUF_READ);
    if (!view)
        return NULL;
    PyObject *t;
    if (rc->n_out_bufs) {
        PyObject *buffers = gf_shared_buffer_list(st, rc->out_bufs,
                                                 rc->n_out_bufs);
        PyObject *argv[2] = {view, buffers};
        PyObject *kw = buffers ? Py_BuildValue("(s)", "buffers") : NULL;
        t = kw ? PyObject_Vectorcall(PyTuple_GET_ITEM(codec, C_LOADS), argv,
                                     1, kw)
               : NULL;
        Py_XDECREF(kw);
        Py_XDECREF(buffers);
    } else {
        t = PyObject_CallOneArg(PyTuple_GET_ITEM(codec, C_LOADS), view);
    }
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
    PyObject *exc = PyObject_CallOneArg(PyTuple_GET_ITEM(codec, C_REBUILD),
                                        value);
    Py_DECREF(value);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static void remote_release(foreign_call *fc)
{
    remote_call *rc = (remote_call *)fc;
    free(rc->out);
    rc->out = NULL;
    for (int i = 0; i < rc->n_out_bufs; i++)
        gf_remote_buffer_free(&rc->out_bufs[i]);
    free(rc->out_bufs);
    rc->out_bufs = NULL;
    rc->n_out_bufs = 0;
    for (int i = 0; i < rc->n_in_bufs; i++)
        PyBuffer_Release(&rc->in_bufs[i]);
    PyMem_Free(rc->in_bufs);
    rc->in_bufs = NULL;
    rc->n_in_bufs = 0;
}

static int remote_cancel_running(foreign_call *fc)
{
    remote_call *rc = (remote_call *)fc;
    remote_core *core = rc->core;
    return core->kill_on_cancel && core->backend->cancel_running
           && core->backend->cancel_running(core, rc);
}

/* One ops table per kind, so the outcome knows its codec from the call. */
static const foreign_ops remote_ops[2] = {
    {.outcome = remote_outcome, .release = remote_release,
     .cancel_running = remote_cancel_running},
    {.outcome = remote_outcome, .release = remote_release,
     .cancel_running = remote_cancel_running},
};

static enum remote_kind kind_of_call(remote_call *rc)
{
    return rc->base.ops == &remote_ops[REMOTE_PROCESSES] ? REMOTE_PROCESSES
                                                        : REMOTE_INTERPRETERS;
}

/* Complete a queued call that no worker will run (drained), from the main
 * thread: cancelled (reason NULL) or broken with `reason`. */
static void complete_unrun(gf_task *t, const char *reason)
{
    FutureObject *f = GF_CONTAINER_OF(t, FutureObject, task);
    remote_call *rc = (remote_call *)f->foreign;
    if (!reason) {
        PyObject *r = PyObject_CallMethod((PyObject *)f, "cancel", NULL);
        if (!r)
            PyErr_WriteUnraisable((PyObject *)f);
        Py_XDECREF(r);
        /* Cancelled: end() buries it.  If cancel lost to nothing (it can
         * not: the task never started), fall through as broken. */
        if (atomic_load(&rc->base.flags) & 8u /* FC_CANCELLED */) {
            gf_foreign_end(&rc->base);
            return;
        }
        reason = "cancelled at shutdown";
    }
    if (gf_foreign_begin(&rc->base))
        gf_remote_store_text(rc, STATUS_BROKEN, gf_strdup(reason));
    gf_foreign_end(&rc->base);
}

static void cancel_drained(gf_task *t, void *arg)
{
    (void)arg;
    complete_unrun(t, NULL);
}

static void park_drained(gf_task *t, void *arg)
{
    remote_core *core = arg;
    t->next = NULL;
    *core->parked_tail = t;
    core->parked_tail = &t->next;
}

/* ---- the core's lifecycle ------------------------------------------------- */

static void free_core(remote_core *core)
{
    if (core->backend->free_core)
        core->backend->free_core(core);
    if (core->life.pool)
        gf_pool_destroy(core->life.pool);
    free(core->source);
    free(core->init);
    free(core->name_prefix);
    free(atomic_load(&core->broken));
    PyMem_RawFree(core);
}

static void detach_owner(gf_core_life *life)
{
    remote_core *core = (remote_core *)life;
    if (core->owner)
        core->owner->core = NULL;
    core->owner = NULL;
}

static void destroy(gf_core_life *life)
{
    free_core((remote_core *)life);
}

static const gf_core_life_ops remote_life_ops = {
    .detach_owner = detach_owner,
    .destroy = destroy,
    .cancel_drained = cancel_drained,
};

static int make_pool(remote_core *core)
{
    gf_pool_config cfg = {
        .max_workers = core->max_workers,
        .name_prefix = core->name_prefix,
        .hooks = {.on_start = core->backend->on_start,
                  .on_stop = core->backend->on_stop,
                  .ctx = core},
    };
    return gf_pool_create(&cfg, &core->life.pool);
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

static const remote_backend *backend_of(int kind)
{
    if (kind == REMOTE_INTERPRETERS && gf_interp_backend.run)
        return &gf_interp_backend;
    if (kind == REMOTE_PROCESSES)
        return &gf_proc_backend;
    PyErr_SetString(PyExc_ValueError, "no such backend on this Python");
    return NULL;
}

static PyObject *rexec_tp_new(PyTypeObject *type, PyObject *args,
                              PyObject *kwds)
{
    static char *kwlist[] = {"kind", "max_workers", "thread_name_prefix",
                             "init", "source", "max_tasks_per_child",
                             "kill_on_cancel", "zygote_fd", NULL};
    int kind, max_workers, max_tasks_per_child = 0, kill_on_cancel = 0;
    int zygote_fd = -1;
    const char *prefix;
    PyObject *init, *source;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iisOO|ipi:RemoteExecutor",
                                     kwlist, &kind, &max_workers, &prefix,
                                     &init, &source, &max_tasks_per_child,
                                     &kill_on_cancel, &zygote_fd))
        return NULL;
    if ((kill_on_cancel || zygote_fd >= 0) && kind != REMOTE_PROCESSES) {
        PyErr_SetString(PyExc_ValueError, "kill_on_cancel and zygote_fd need "
                        "worker processes");
        return NULL;
    }
    const remote_backend *backend = backend_of(kind);
    if (!backend)
        return NULL;
    if (max_workers <= 0) {
        PyErr_SetString(PyExc_ValueError, "max_workers must be greater than 0");
        return NULL;
    }
    module_state *st = state_of_type(type);
    if (!st)
        return NULL;
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_Format(PyExc_RuntimeError,
                     "a %s pool can only be created in the main interpreter",
                     backend->noun);
        return NULL;
    }
    gf_life_reap_finished(&st->remote_cores);
    remote_core *core = PyMem_RawCalloc(1, sizeof *core);
    if (!core)
        return PyErr_NoMemory();
    Py_ssize_t unused;
    core->life.ops = &remote_life_ops;
    core->backend = backend;
    core->kind = (enum remote_kind)kind;
    core->st = st;
    core->max_workers = max_workers;
    core->max_tasks_per_child = max_tasks_per_child > 0 ? max_tasks_per_child
                                                        : 0;
    core->kill_on_cancel = kill_on_cancel;
    core->zygote_fd = zygote_fd;
    core->spin = kind != REMOTE_PROCESSES
                 || gf__cpu_count() > max_workers + 1;
    core->parked_tail = &core->parked_head;
    core->name_prefix = gf_strdup(prefix);
    core->source = copy_buffer(source, &unused);
    core->init = copy_buffer(init, &core->init_len);
    if (backend->init_core && backend->init_core(core) < 0) {
        free_core(core);
        return NULL;
    }
    int rc = core->name_prefix && core->source && core->init
                 ? make_pool(core) : GF_ENOMEM;
    if (rc != 0) {
        free_core(core);
        if (!PyErr_Occurred())
            gf_raise(rc, "creating the pool");
        return NULL;
    }
    RemoteExecutorObject *self = (RemoteExecutorObject *)type->tp_alloc(type,
                                                                        0);
    if (!self) {
        gf_pool_shutdown(core->life.pool);
        (void)gf_pool_join(core->life.pool, -1);
        free_core(core);
        return NULL;
    }
    gf_life_link(&st->remote_cores, &core->life);
    core->owner = self;
    self->core = core;
    self->max_workers = max_workers;
    return (PyObject *)self;
}

static void rexec_tp_dealloc(PyObject *self)
{
    RemoteExecutorObject *ex = (RemoteExecutorObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (ex->weakreflist)
        PyObject_ClearWeakRefs(self);
    if (ex->core)
        gf_life_let_go(&ex->core->st->remote_cores, &ex->core->life);
    Py_CLEAR(ex->last_fn);
    Py_CLEAR(ex->last_fn_bytes);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int rexec_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    RemoteExecutorObject *ex = (RemoteExecutorObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(ex->last_fn);
    return 0;
}

static int rexec_tp_clear(PyObject *self)
{
    RemoteExecutorObject *ex = (RemoteExecutorObject *)self;
    Py_CLEAR(ex->last_fn);
    Py_CLEAR(ex->last_fn_bytes);
    return 0;
}

/* ---- submitting ------------------------------------------------------------ */

static remote_core *live_core(RemoteExecutorObject *ex)
{
    remote_core *core = ex->core;
    if (!core || core->life.shutdown) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return NULL;
    }
    char *broken = atomic_load_explicit(&core->broken, memory_order_acquire);
    if (broken) {
        raise_failure(core->st, core->kind, STATUS_BROKEN, broken, 0, 0);
        return NULL;
    }
    return codec_of(core->st, core->kind) ? core : NULL;
}

/* buffer_callback of fast_dumps, bound to (list, oob_bytes): a contiguous
 * buffer of at least oob_bytes goes out of band (into the list; None
 * answers "out of band"), anything else stays in the pickle. */
static PyObject *collect_buffer(PyObject *bound, PyObject *pb)
{
    Py_ssize_t threshold = PyLong_AsSsize_t(PyTuple_GET_ITEM(bound, 1));
    Py_buffer view;
    if (PyObject_GetBuffer(pb, &view, PyBUF_ANY_CONTIGUOUS) < 0) {
        PyErr_Clear();
        Py_RETURN_TRUE;
    }
    Py_ssize_t len = view.len;
    PyBuffer_Release(&view);
    if (len < threshold)
        Py_RETURN_TRUE;
    PyObject *raw = PyObject_CallMethod(pb, "raw", NULL);
    if (!raw) {
        PyErr_Clear();
        Py_RETURN_TRUE;
    }
    int rc = PyList_Append(PyTuple_GET_ITEM(bound, 0), raw);
    Py_DECREF(raw);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef collect_buffer_def = {
    "collect_buffer", collect_buffer, METH_O, NULL,
};

static int big_bytes(PyObject *o, Py_ssize_t threshold)
{
    return (PyBytes_CheckExact(o) && PyBytes_GET_SIZE(o) >= threshold)
           || (PyByteArray_CheckExact(o)
               && PyByteArray_GET_SIZE(o) >= threshold);
}

/* Whether a payload tuple holds a big bytes or bytearray two containers
 * down (a call's (args, kwargs)): those travel out of band only through
 * the codec's dumps, which wraps them (pickle never offers them to a
 * buffer_callback). */
static int holds_big_bytes(PyObject *payload, Py_ssize_t threshold)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(payload); i++) {
        PyObject *x = PyTuple_GET_ITEM(payload, i);
        if (big_bytes(x, threshold))
            return 1;
        if (PyTuple_CheckExact(x) || PyList_CheckExact(x)) {
            PyObject *seq = x;
            Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
            for (Py_ssize_t j = 0; j < n; j++)
                if (big_bytes(PySequence_Fast_GET_ITEM(seq, j), threshold))
                    return 1;
        } else if (PyDict_CheckExact(x)) {
            Py_ssize_t pos = 0;
            PyObject *key, *value;
            while (PyDict_Next(x, &pos, &key, &value))
                if (big_bytes(value, threshold))
                    return 1;
        }
    }
    return 0;
}

/* The processes backend's common case, without a Python frame:
 * pickle.dumps(payload, 5, buffer_callback=<collect_buffer>).  NULL with
 * no exception set when the codec's dumps must do it. */
static PyObject *fast_dumps(PyObject *codec, PyObject *payload,
                            PyObject *proto, PyObject **buffers)
{
    if (PyTuple_GET_SIZE(codec) != C_N_PROCESSES
        || PyTuple_GET_ITEM(codec, C_PLAIN) == Py_None
        || !PyTuple_CheckExact(payload))
        return NULL;
    PyObject *threshold = PyTuple_GET_ITEM(codec, C_OOB_BYTES);
    if (holds_big_bytes(payload, PyLong_AsSsize_t(threshold)))
        return NULL;
    PyObject *list = PyList_New(0);
    PyObject *bound = list ? PyTuple_Pack(2, list, threshold) : NULL;
    PyObject *callback = bound ? PyCFunction_New(&collect_buffer_def, bound)
                               : NULL;
    PyObject *kwnames = callback ? Py_BuildValue("(s)", "buffer_callback")
                                 : NULL;
    PyObject *b = NULL;
    if (kwnames) {
        PyObject *argv[3] = {payload, proto, callback};
        b = PyObject_Vectorcall(PyTuple_GET_ITEM(codec, C_PLAIN), argv, 2,
                                kwnames);
    }
    if (b && PyList_GET_SIZE(list))
        *buffers = Py_NewRef(list);
    Py_XDECREF(kwnames);
    Py_XDECREF(callback);
    Py_XDECREF(bound);
    Py_XDECREF(list);
    if (!b && !PyErr_Occurred())
        PyErr_NoMemory();
    return b;
}

/* The codec's dumps(payload, 5), or its fallback (cloudpickle) if that
 * fails; *buffers (processes) gets the out-of-band buffer list or NULL. */
static PyObject *dumps(remote_core *core, PyObject *payload, int *by_value,
                       PyObject **buffers)
{
    PyObject *codec = core->st->remote_codec[core->kind];  /* live_core */
    *by_value = 0;
    if (buffers)
        *buffers = NULL;
    PyObject *proto = PyLong_FromLong(5);
    if (!proto)
        return NULL;
    PyObject *argv[2] = {payload, proto};
    PyObject *b = buffers ? fast_dumps(codec, payload, proto, buffers) : NULL;
    if (!b && !PyErr_Occurred())
        b = PyObject_Vectorcall(PyTuple_GET_ITEM(codec, C_DUMPS), argv, 2,
                                NULL);
    if (!b) {
        PyObject *first = gf_fetch_exception();
        b = PyObject_Vectorcall(PyTuple_GET_ITEM(codec, C_FALLBACK), argv, 2,
                                NULL);
        if (!b) {
            /* Report the plain pickle error, with the fallback's as context. */
            PyObject *second = gf_fetch_exception();
            PyException_SetContext(first, second);
            gf_restore_exception(first);
        } else {
            Py_DECREF(first);
            *by_value = 1;
        }
    }
    Py_DECREF(proto);
    if (b && PyTuple_Check(b) && PyTuple_GET_SIZE(b) == 2 && buffers
        && PyList_Check(PyTuple_GET_ITEM(b, 1))) {
        *buffers = Py_NewRef(PyTuple_GET_ITEM(b, 1));
        Py_SETREF(b, Py_NewRef(PyTuple_GET_ITEM(b, 0)));
    }
    if (b && !PyBytes_Check(b)) {
        Py_SETREF(b, NULL);
        if (buffers)
            Py_CLEAR(*buffers);
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

/* Pin each out-of-band buffer for the worker thread to read without the
 * GIL (released with the call, remote_release). */
static int pin_buffers(remote_call *rc, PyObject *buffers)
{
    Py_ssize_t n = PyList_GET_SIZE(buffers);
    rc->in_bufs = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Py_buffer));
    if (!rc->in_bufs) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(buffers, i), &rc->in_bufs[i],
                               PyBUF_SIMPLE) < 0)
            return -1;
        rc->n_in_bufs = (int)i + 1;
    }
    return 0;
}

/* fn_bytes: NULL for a chunk; else the pickled fn (borrowed), and
 * fn_cached whether the worker may reuse its last unpickled copy. */
static PyObject *submit_payload(remote_core *core, PyObject *payload,
                                enum call_kind kind, PyObject *fn_bytes,
                                int fn_cached, int64_t timeout_ns)
{
    module_state *st = core->st;
    int by_value;
    PyObject *buffers = NULL;
    PyObject *bytes = dumps(core, payload, &by_value,
                            core->kind == REMOTE_PROCESSES ? &buffers : NULL);
    if (!bytes)
        return NULL;
    PyObject *keep = PyTuple_Pack(3, bytes, fn_bytes ? fn_bytes : Py_None,
                                  buffers ? buffers : Py_None);
    Py_DECREF(bytes);
    if (!keep) {
        Py_XDECREF(buffers);
        return NULL;
    }
    FutureObject *f = gf_foreign_new(st, sizeof(remote_call),
                                     &remote_ops[core->kind],
                                     core->backend->run, keep);
    Py_DECREF(keep);  /* the call's keepalive holds it */
    if (!f) {
        Py_XDECREF(buffers);
        return NULL;
    }
    remote_call *rc = (remote_call *)f->foreign;
    rc->core = core;
    rc->data = PyBytes_AS_STRING(bytes);
    rc->len = PyBytes_GET_SIZE(bytes);
    if (fn_bytes) {
        rc->fn_data = PyBytes_AS_STRING(fn_bytes);
        rc->fn_len = PyBytes_GET_SIZE(fn_bytes);
        rc->fn_cached = (unsigned char)fn_cached;
    }
    rc->kind = (unsigned char)kind;
    rc->timeout_ns = timeout_ns;
    int pinned = buffers ? pin_buffers(rc, buffers) : 0;
    Py_XDECREF(buffers);
    if (pinned < 0) {
        Py_DECREF(f);  /* never queued: the future's dealloc releases rc */
        return NULL;
    }
    Py_INCREF(f);      /* the queue's reference: see the graveyard, foreign.h */
    gf_foreign_queued(&rc->base);
    int err = gf_pool_submit(core->life.pool, &f->task);
    if (err != 0) {
        gf_foreign_unqueued(&rc->base);
        Py_DECREF(f);
        Py_DECREF(f);
        return gf_raise(err, "submitting a task");
    }
    return (PyObject *)f;
}

/* timeout: None or seconds (> 0) -> ns, or -1 (none); -2 on error. */
static int64_t timeout_ns_of(PyObject *timeout)
{
    if (timeout == Py_None)
        return -1;
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred())
        return -2;
    if (!(t > 0) || t > 1e9) {
        PyErr_SetString(PyExc_ValueError,
                        "a task timeout must be a positive number of seconds "
                        "or None");
        return -2;
    }
    return (int64_t)(t * 1e9);
}

/* submit(fn, *args, **kwargs) with `timeout_ns` for the run. */
static PyObject *submit_call(RemoteExecutorObject *ex, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames,
                             int64_t timeout_ns)
{
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
    remote_core *core = live_core(ex);
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
        PyObject *fnb = dumps(core, fn, &by_value, NULL);
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
                           cached, timeout_ns);
done:
    Py_DECREF(callargs);
    Py_XDECREF(kwargs);
    Py_XDECREF(payload);
    return f;
}

static PyObject *rexec_submit(PyObject *self, PyObject *const *args,
                              Py_ssize_t nargsf, PyObject *kwnames)
{
    return submit_call((RemoteExecutorObject *)self, args,
                       PyVectorcall_NARGS(nargsf), kwnames, -1);
}

/* _submit_timeout(timeout, fn, /, *args, **kwargs) */
static PyObject *rexec_submit_timeout(PyObject *self, PyObject *const *args,
                                      Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1)
        return PyErr_Format(PyExc_TypeError, "expected a timeout");
    int64_t timeout_ns = timeout_ns_of(args[0]);
    if (timeout_ns == -2)
        return NULL;
    return submit_call((RemoteExecutorObject *)self, args + 1, nargs - 1,
                       kwnames, timeout_ns);
}

/* _submit_chunk(fn, items, star, timeout=None, /): a Future of (values,
 * errors), see _worker.run_chunk. */
static PyObject *rexec_submit_chunk(PyObject *self, PyObject *const *args,
                                    Py_ssize_t nargs)
{
    if (nargs != 3 && nargs != 4)
        return PyErr_Format(PyExc_TypeError, "expected 3 or 4 arguments");
    int64_t timeout_ns = nargs == 4 ? timeout_ns_of(args[3]) : -1;
    if (timeout_ns == -2)
        return NULL;
    remote_core *core = live_core((RemoteExecutorObject *)self);
    if (!core)
        return NULL;
    PyObject *payload = PyTuple_Pack(3, args[0], args[1], args[2]);
    if (!payload)
        return NULL;
    PyObject *f = submit_payload(core, payload, KIND_CHUNK, NULL, 0,
                                 timeout_ns);
    Py_DECREF(payload);
    return f;
}

static PyObject *rexec_shutdown(PyObject *self, PyObject *args, PyObject *kwds)
{
    remote_core *core = ((RemoteExecutorObject *)self)->core;
    return gf_life_shutdown_method(core ? &core->st->remote_cores : NULL,
                                   core ? &core->life : NULL, args, kwds);
}

static PyObject *rexec_get_max_workers(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(((RemoteExecutorObject *)self)->max_workers);
}

static PyObject *rexec_get_started(PyObject *self, void *closure)
{
    (void)closure;
    RemoteExecutorObject *ex = (RemoteExecutorObject *)self;
    return PyLong_FromLong(ex->core ? gf_pool_started_workers(ex->core->life.pool)
                                    : 0);
}

static PyObject *rexec_get_shutdown(PyObject *self, void *closure)
{
    (void)closure;
    RemoteExecutorObject *ex = (RemoteExecutorObject *)self;
    return PyBool_FromLong(!ex->core || ex->core->life.shutdown);
}

static PyObject *rexec_get_broken(PyObject *self, void *closure)
{
    (void)closure;
    RemoteExecutorObject *ex = (RemoteExecutorObject *)self;
    char *b = ex->core ? atomic_load(&ex->core->broken) : NULL;
    if (!b)
        Py_RETURN_NONE;
    return PyUnicode_FromString(b);
}

static PyMethodDef rexec_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))rexec_submit,
     METH_FASTCALL | METH_KEYWORDS,
     "submit($self, fn, /, *args, **kwargs)\n--\n\n"
     "Pickle fn(*args, **kwargs), run it on a worker; a Future."},
    {"_submit_timeout", (PyCFunction)(void (*)(void))rexec_submit_timeout,
     METH_FASTCALL | METH_KEYWORDS,
     "_submit_timeout($self, timeout, fn, /, *args, **kwargs)\n--\n\n"
     "submit() whose run may last `timeout` seconds (None: no limit)."},
    {"_submit_chunk", (PyCFunction)(void (*)(void))rexec_submit_chunk,
     METH_FASTCALL,
     "_submit_chunk($self, fn, items, star, timeout=None, /)\n--\n\n"
     "Map fn over items in one worker; a Future of (values, errors)."},
    {"shutdown", (PyCFunction)(void (*)(void))rexec_shutdown,
     METH_VARARGS | METH_KEYWORDS,
     "shutdown($self, /, wait=True, *, cancel_futures=False)\n--\n\n"
     "Stop accepting work; with wait, return when every worker has "
     "exited."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef rexec_getset[] = {
    {"_max_workers", rexec_get_max_workers, NULL, "worker limit", NULL},
    {"_started_workers", rexec_get_started, NULL, "workers started", NULL},
    {"_shutdown", rexec_get_shutdown, NULL, "shut down?", NULL},
    {"_broken", rexec_get_broken, NULL, "why the pool broke, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef rexec_members[] = {
    {"__weaklistoffset__", T_PYSSIZET,
     offsetof(RemoteExecutorObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot rexec_slots[] = {
    {Py_tp_doc, "The C core of gilfree's interpreters and processes "
                "backends."},
    {Py_tp_new, rexec_tp_new},
    {Py_tp_init, gf_life_tp_init},
    {Py_tp_dealloc, rexec_tp_dealloc},
    {Py_tp_traverse, rexec_tp_traverse},
    {Py_tp_clear, rexec_tp_clear},
    {Py_tp_methods, rexec_methods},
    {Py_tp_getset, rexec_getset},
    {Py_tp_members, rexec_members},
    {0, NULL},
};

static PyType_Spec rexec_spec = {
    .name = "gilfree._core.RemoteExecutor",
    .basicsize = sizeof(RemoteExecutorObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = rexec_slots,
};

/* ---- interpreter exit and fork -------------------------------------------- */

/* threading's atexit (gilfree/_lifecycle.py), before _shutdown_all: wait
 * for the queued work, then stop every worker - 3.12 aborts and 3.13.0 may
 * crash if the process exits with live sub-interpreters (notes P7), and
 * worker processes must not outlive us. */
static PyObject *remote_shutdown_all(PyObject *module, PyObject *unused)
{
    (void)unused;
    if (gf_life_shutdown_all(&state_of_module(module)->remote_cores) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* os.register_at_fork(before=...): a fork must never see a live
 * sub-interpreter (notes P8: the child dies).  Queued tasks are parked,
 * the running ones finish, every worker ends its interpreter and exits;
 * the pool is then a fresh one whose workers start on demand. */
static PyObject *remote_before_fork(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    for (gf_core_life *l = st->remote_cores; l; l = l->next) {
        remote_core *c = (remote_core *)l;
        if (!c->backend->stop_for_fork
            || gf_pool_started_workers(c->life.pool) == 0)
            continue;
        gf_pool_drain(c->life.pool, park_drained, c);
        gf_pool_shutdown(c->life.pool);
        int rc;
        do {
            Py_BEGIN_ALLOW_THREADS
            rc = gf_pool_join(c->life.pool, -1);
            Py_END_ALLOW_THREADS
        } while (rc == GF_EINTR);
        gf_pool_destroy(c->life.pool);
        c->life.pool = NULL;
        rc = make_pool(c);
        if (rc != 0) {
            /* Keep a pool object: nothing can be queued on it any more. */
            c->life.shutdown = 1;
            gf_remote_mark_broken(c, gf_strdup("could not restart the pool "
                                               "after fork()"));
            return gf_raise(rc, "restarting a pool");
        }
        if (c->life.shutdown)
            gf_pool_shutdown(c->life.pool);
    }
    Py_RETURN_NONE;
}

/* after_in_parent: give the parked tasks to the new workers. */
static PyObject *remote_after_fork_parent(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    for (gf_core_life *l = st->remote_cores; l; l = l->next) {
        remote_core *c = (remote_core *)l;
        gf_task *t = c->parked_head;
        c->parked_head = NULL;
        c->parked_tail = &c->parked_head;
        while (t) {
            gf_task *next = t->next;
            if (c->life.shutdown || gf_pool_submit(c->life.pool, t) != 0)
                complete_unrun(t, "the pool could not restart after fork()");
            t = next;
        }
    }
    Py_RETURN_NONE;
}

static void forget_task(gf_task *t, void *arg)
{
    (void)t;
    (void)arg;  /* the parent's: its future fails by the fork generation */
}

/* after_in_child: the parked tasks belong to the parent (their futures
 * fail here through the fork generation, foreign.c); a backend whose
 * workers survive a fork in the parent forgets them here. */
static PyObject *remote_after_fork_child(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    for (gf_core_life *l = st->remote_cores; l; l = l->next) {
        remote_core *c = (remote_core *)l;
        c->parked_head = NULL;
        c->parked_tail = &c->parked_head;
        if (c->backend->after_fork_child) {
            gf_pool_after_fork_child(c->life.pool, forget_task, NULL);
            c->backend->after_fork_child(c);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *remote_set_codec(PyObject *module, PyObject *const *args,
                                  Py_ssize_t nargs)
{
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyTuple_Check(args[1])
        || (PyTuple_GET_SIZE(args[1]) != C_N
            && PyTuple_GET_SIZE(args[1]) != C_N_PROCESSES)
        || (PyTuple_GET_SIZE(args[1]) == C_N_PROCESSES
            && !PyLong_Check(PyTuple_GET_ITEM(args[1], C_OOB_BYTES)))) {
        PyErr_SetString(PyExc_TypeError,
                        "expected (kind, (dumps, fallback_dumps, loads, "
                        "rebuild, failure[, plain_dumps, oob_bytes]))");
        return NULL;
    }
    long kind = PyLong_AsLong(args[0]);
    if (kind != REMOTE_INTERPRETERS && kind != REMOTE_PROCESSES) {
        PyErr_SetString(PyExc_ValueError, "no such backend");
        return NULL;
    }
    module_state *st = state_of_module(module);
    Py_XSETREF(st->remote_codec[kind], Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyMethodDef remote_functions[] = {
    {"_remote_shutdown_all", remote_shutdown_all, METH_NOARGS,
     "_remote_shutdown_all($module, /)\n--\n\n"
     "Shut down every interpreter and process pool and wait for it."},
    {"_remote_before_fork", remote_before_fork, METH_NOARGS,
     "_remote_before_fork($module, /)\n--\n\nEnd every worker interpreter."},
    {"_remote_after_fork_parent", remote_after_fork_parent, METH_NOARGS,
     "_remote_after_fork_parent($module, /)\n--\n\nRequeue parked tasks."},
    {"_remote_after_fork_child", remote_after_fork_child, METH_NOARGS,
     "_remote_after_fork_child($module, /)\n--\n\n"
     "Forget the parent's parked tasks and workers."},
    {"_remote_set_codec", (PyCFunction)(void (*)(void))remote_set_codec,
     METH_FASTCALL,
     "_remote_set_codec($module, kind, codec, /)\n--\n\n"
     "(dumps, fallback_dumps, loads, rebuild, failure) for a backend."},
    {NULL, NULL, 0, NULL},
};

int gf_remote_register(PyObject *module, module_state *st)
{
    if (PyModule_AddIntConstant(module, "REMOTE_INTERPRETERS",
                                REMOTE_INTERPRETERS) < 0
        || PyModule_AddIntConstant(module, "REMOTE_PROCESSES",
                                   REMOTE_PROCESSES) < 0)
        return -1;
    st->remote_executor_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &rexec_spec, NULL);
    if (!st->remote_executor_type
        || PyModule_AddType(module, st->remote_executor_type) < 0)
        return -1;
    st->shared_buffer_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &shbuf_spec, NULL);
    if (!st->shared_buffer_type
        || PyModule_AddType(module, st->shared_buffer_type) < 0)
        return -1;
    return PyModule_AddFunctions(module, remote_functions);
}

