/* future.h - the future object shared by every backend.
 *
 * _core.FutureBase is a C type; gilfree.Future is the Python class
 * `Future(FutureBase, concurrent.futures.Future)`.  The C base comes first
 * in the MRO, so every method and the private attributes that
 * concurrent.futures.wait/as_completed read (_state, _condition, _waiters)
 * are ours, while isinstance(f, concurrent.futures.Future) holds - which
 * asyncio.wrap_future and loop.run_in_executor require.
 *
 * Threading rule: every field is read and written with the GIL of the
 * future's interpreter held, except `done`, the completion word, which a
 * caller may wait on with the GIL released.  `done` is completed right
 * after the state becomes final (FINISHED or CANCELLED), under the GIL.
 * Foreign futures (foreign.h) are the one exception: their worker
 * completes `done` without this GIL, and the Python state catches up in
 * gf_future_sync() the next time someone with the GIL looks.
 */
#ifndef GF_CORE_FUTURE_H
#define GF_CORE_FUTURE_H

#include "state.h"

/* The states and their names, as in concurrent.futures._base. */
enum future_state {
    FUT_PENDING,
    FUT_RUNNING,
    FUT_CANCELLED,
    FUT_CANCELLED_AND_NOTIFIED,
    FUT_FINISHED,
};

struct executor_core;
struct foreign_call;

typedef struct FutureObject {
    PyObject_HEAD
    gf_completion done;
    unsigned char state;           /* enum future_state */
    unsigned char defer_done;      /* worker completes `done` itself, after
                                      letting the GIL go (pyworker.c) */
    unsigned char watched;         /* a caller waits on it right now */
    PyObject *result;
    PyObject *exception;
    PyObject *callbacks;           /* list, or NULL when none */
    PyObject *condition;           /* RLock, created on first access */
    PyObject *waiters;             /* list, created on first access */

    /* The call this future stands for, while it waits to run on an
     * executor (executor.c).  Cleared as soon as it has run. */
    gf_task task;
    PyObject *fn;
    PyObject *callargs;            /* tuple: positional args, then kw values */
    PyObject *kwnames;             /* tuple of keyword names, or NULL */
    Py_ssize_t nposargs;
    struct executor_core *core;    /* borrowed: a core outlives its tasks */

    struct foreign_call *foreign;  /* foreign.h; NULL for Python calls */
    module_state *st;              /* the state of the module that made it */
} FutureObject;

/* A new pending future of the registered gilfree.Future class. */
FutureObject *gf_future_new(module_state *st);

static inline int gf_future_check(module_state *st, PyObject *op)
{
    return PyObject_TypeCheck(op, st->future_base_type);
}

/* Final transitions.  Each notifies cf.wait waiters, completes `done` and
 * runs the done-callbacks.  They return 0, or -1 with InvalidStateError set
 * if the future was already final (set_result/set_exception). */
int gf_future_set_result(FutureObject *f, PyObject *result);
int gf_future_set_exception(FutureObject *f, PyObject *exc);
/* concurrent.futures' set_running_or_notify_cancel: 1 if the caller may
 * run the call (state is now RUNNING), 0 if it was cancelled (waiters are
 * now notified), -1 with an exception otherwise. */
int gf_future_set_running(FutureObject *f);
/* Cancel a future that never started: the stdlib's cancel() followed by
 * set_running_or_notify_cancel(), as shutdown(cancel_futures=True) does. */
void gf_future_cancel_and_notify(FutureObject *f);

/* Bring the Python state up to date with a foreign completion. */
void gf_future_sync(FutureObject *f);

#endif /* GF_CORE_FUTURE_H */
