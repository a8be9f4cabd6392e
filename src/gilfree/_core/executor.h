/* executor.h - the threads backend: an executor core is a gf_pool whose
 * workers own a thread state in one interpreter and hold its GIL only
 * while they run Python.
 *
 * Ownership: the Python-visible Executor object owns its core until
 * shutdown; a core that was shut down without waiting (or whose Executor
 * was collected) stays on the module state's list until its workers have
 * exited, then is reaped by whoever next holds the GIL there.
 */
#ifndef GF_CORE_EXECUTOR_H
#define GF_CORE_EXECUTOR_H

#include "life.h"

typedef struct executor_core {
    gf_core_life life;       /* first: pool, shutdown, st->cores (life.h) */
    PyInterpreterState *interp;
    module_state *st;
    PyObject *initializer;   /* NULL when none */
    PyObject *initargs;      /* tuple */
    PyObject *name_prefix;   /* str: threading names "<prefix>_<i>" */
    PyObject *broken;        /* NULL, or the BrokenThreadPool message */
    /* The Executor object whose core this is, or NULL once that object is
     * gone; reaping a core detaches it from its owner (borrowed pointer,
     * cleared from both sides under the GIL). */
    struct ExecutorObject *owner;
} executor_core;

/* pyworker.c: pool hooks for workers that run Python. */
extern const gf_pool_hooks gf_pyworker_hooks_template;
/* From a task on one of core's workers: make sure this worker holds its
 * interpreter's GIL (no-op if it already does). */
void gf_pyworker_enter(gf_worker *w);
/* From a task, with the GIL: the future's call is over (takes over the
 * queue's reference).  If a caller waits on it, let the GIL go first and
 * complete `done` after; otherwise offer the GIL to others if this worker
 * has held it for a while. */
void gf_pyworker_finish(gf_worker *w, PyObject *future);
/* From a task, with the GIL: offer the GIL to others if this worker has
 * held it for about a switch interval. */
void gf_pyworker_maybe_yield(gf_worker *w);

/* executor.c */
executor_core *gf_core_new(module_state *st, int max_workers,
                           PyObject *name_prefix, PyObject *initializer,
                           PyObject *initargs);
/* Queue a C task on the core; -1 with an exception set on failure (then
 * the task will never run). */
int gf_core_submit(executor_core *core, gf_task *t);
/* The initializer failed on a worker: mark the core broken and fail every
 * queued task. */
void gf_core_set_broken(executor_core *core, PyObject *message);
executor_core *gf_executor_core(PyObject *executor);  /* NULL + TypeError */

/* mapiter.c: what executor.c needs to cancel map runners it drains. */
int gf_mapiter_is_runner(gf_task *t);
void gf_mapiter_cancel_runner(gf_task *t, PyObject *reason);

#endif /* GF_CORE_EXECUTOR_H */
