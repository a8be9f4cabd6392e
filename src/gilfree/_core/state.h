/* state.h - per-interpreter module state of gilfree._core, and the
 * declarations the extension's files share.
 *
 * The extension is isolated (PEP 489 multi-phase init, PEP 630 module
 * state, heap types only, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED): nothing
 * below is a process global, every interpreter that imports gilfree._core
 * gets its own copy, and C memory that a worker thread may touch after the
 * interpreter is gone comes from PyMem_RawMalloc/malloc, never from the
 * interpreter's object allocator.
 */
#ifndef GF_CORE_STATE_H
#define GF_CORE_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>

#include "gf_completion.h"
#include "gf_error.h"
#include "gf_pool.h"

typedef struct module_state {
    PyTypeObject *future_base_type;  /* _core.FutureBase */
    PyTypeObject *future_type;       /* gilfree.Future (Python subclass) */
    PyTypeObject *executor_type;     /* _core.Executor */
    PyTypeObject *map_iter_type;     /* _core.MapIterator */

    PyObject *cancelled_error;       /* concurrent.futures.CancelledError */
    PyObject *invalid_state_error;   /* concurrent.futures.InvalidStateError */
    PyObject *mp_timeout_error;      /* gilfree.TimeoutError: the builtin's and
                                        multiprocessing's TimeoutError */
    PyObject *broken_thread_pool;    /* ...futures.thread.BrokenThreadPool */
    PyObject *cf_logger;             /* concurrent.futures' LOGGER */
    PyObject *rlock_type;            /* _thread.RLock */
    PyObject *worker_hooks;          /* (started(name), stopping()) or None */
    PyObject *native_normalize;      /* gilfree.native._normalize */

    /* Our callers that are waiting for a result with the GIL released: a
     * worker about to take the GIL spins briefly while this is 0 (the GIL
     * is busy) instead of sleeping in the GIL's condition variable.  See
     * pyworker.c. */
    _Atomic int waiting_callers;

    /* Foreign calls (foreign.h) whose future's reference must be dropped
     * by a thread holding this interpreter's GIL.  A Treiber stack pushed
     * by workers and emptied in one exchange by the GIL holder, so it has
     * no ABA problem. */
    _Atomic(struct foreign_call *) graveyard;
    /* Foreign calls submitted from here and not yet finished: the module
     * cannot go away while a worker may still push to the graveyard. */
    _Atomic uint32_t foreign_outstanding;
    /* The one-worker core that finishes foreign futures someone waits on. */
    struct executor_core *bridge;
    unsigned fork_generation;        /* bumped in a forked child */
    /* The thread that runs Python's signal handlers (the main thread) in
     * the main interpreter, 0 elsewhere: see wait.c. */
    unsigned long signal_thread;

    struct gf_core_life *cores;      /* every live executor core (life.h) */

    /* The interpreters and processes backends (remote.h). */
    PyTypeObject *remote_executor_type;  /* _core.RemoteExecutor */
    PyTypeObject *shared_buffer_type;    /* _core.SharedBuffer */
    PyObject *broken_interp_pool;    /* gilfree.BrokenInterpreterPool */
    PyObject *remote_codec[2];       /* per remote_kind, see remote.c */
    struct gf_core_life *remote_cores; /* every live remote pool (life.h) */
    struct proc_zygote *zygote;      /* the process pools' zygote (proc.c) */
    int executor_counter;            /* default thread name prefixes */
    int lean;                        /* the stdlib vocabulary is not
                                        imported yet (module.c) */
} module_state;

extern PyModuleDef gf_core_module;

static inline module_state *state_of_module(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* The state of the module that defined `type` (or a base of it). */
static inline module_state *state_of_type(PyTypeObject *type)
{
    PyObject *m = PyType_GetModuleByDef(type, &gf_core_module);
    return m ? state_of_module(m) : NULL;
}

/* errors.c: raise the Python exception for a runtime error code (< 0).
 * Always returns NULL so callers can `return gf_raise(rc, "...")`. */
PyObject *gf_raise(int err, const char *what);

/* Exceptions: fetch the current one as a single object, with its
 * traceback attached (PyErr_GetRaisedException from 3.12). */
PyObject *gf_fetch_exception(void);
/* Make exc (a new reference, stolen) the current exception. */
void gf_restore_exception(PyObject *exc);
/* The current exception as a malloc'd "<prefix>Type: message" C string
 * (NULL: out of memory); clears it. */
char *gf_exception_text(const char *prefix);

/* The CPython recipe for a blocking wait on a completion: try without
 * releasing the GIL, then release it, spin briefly, sleep, wake on signals
 * and run their handlers (also those of a signal that came during the
 * spin), recompute the time left from a monotonic deadline.  timeout < 0: none.  Returns 0 (done), 1 (timed out), or -1
 * with an exception set (a signal handler raised). */
int gf_wait_completion(module_state *st, gf_completion *c, double timeout);

/* Join the workers of a shut-down pool the same way: block with the GIL
 * released and run signal handlers on EINTR, or (block == 0) only check.
 * 0 when every worker has exited, 1 if some still run, -1 with an
 * exception set (a signal handler raised). */
int gf_join_pool(gf_pool *pool, int block);

/* Type registration (one function per file). */
int gf_future_register(PyObject *module, module_state *st);
int gf_executor_register(PyObject *module, module_state *st);
int gf_mapiter_register(PyObject *module, module_state *st);
int gf_native_register(PyObject *module, module_state *st);
int gf_demo_register(PyObject *module);
int gf_interp_register(PyObject *module, module_state *st);
int gf_remote_register(PyObject *module, module_state *st);
int gf_proc_register(PyObject *module, module_state *st);
void gf_foreign_drain_graveyard(module_state *st);
int gf_foreign_quiesce(module_state *st);
void gf_foreign_after_fork_child(module_state *st);

#endif /* GF_CORE_STATE_H */
