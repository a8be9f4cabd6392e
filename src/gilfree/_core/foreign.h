/* foreign.h - futures finished by a thread that does not hold the GIL of
 * the future's interpreter: a native worker (no GIL at all), or a
 * sub-interpreter worker (a different GIL).
 *
 * Such a thread never touches the future's Python objects:
 *   - the queue's strong reference to the future is dropped later by a
 *     thread holding the right GIL: the worker pushes the finished call on
 *     the interpreter's *graveyard*, emptied by the next gilfree call there;
 *   - the Python state (the outcome object, callbacks) catches up lazily:
 *     any method that looks at the future first calls gf_future_sync(),
 *     which asks the call's ops->outcome() to build the result;
 *   - if someone must be told at completion (a done-callback, asyncio,
 *     concurrent.futures.wait), the future asks for it *before* completion
 *     (NOTIFY), and the worker then queues the finish on the interpreter's
 *     *bridge*: a one-worker threads-backend core with a thread state there.
 * The flags word decides, with one atomic RMW on each side, which of the
 * two (worker or Python side) does the follow-up: never both, never neither.
 *
 * Worker protocol, for the task run function of a foreign future:
 *
 *     foreign_call *fc = f->foreign;
 *     if (gf_foreign_begin(fc)) { ...run, store the payload... }
 *     gf_foreign_end(fc);      // last touch of fc and f
 */
#ifndef GF_CORE_FOREIGN_H
#define GF_CORE_FOREIGN_H

#include "future.h"

typedef struct foreign_call foreign_call;

typedef struct foreign_ops {
    /* With the future's GIL: the finished call's outcome as a new
     * reference, or NULL with an exception set, which becomes the
     * future's exception. */
    PyObject *(*outcome)(foreign_call *fc);
    /* With the future's GIL, when the future dies: free the payload. */
    void (*release)(foreign_call *fc);
    /* Optional, with the future's GIL: cancel() found the call claimed by
     * a worker.  Return 1 once gf_foreign_cancel_claimed() succeeded and
     * the worker was told to abandon the call (the future is then
     * cancelled at once), 0 to let cancel() fail as the stdlib's does. */
    int (*cancel_running)(foreign_call *fc);
} foreign_ops;

struct foreign_call {
    const foreign_ops *ops;
    _Atomic uint32_t flags;
    FutureObject *future;        /* borrowed: the queue's reference */
    module_state *st;
    unsigned fork_generation;    /* st->fork_generation at creation */
    PyObject *keepalive;         /* what the call's memory belongs to */
    gf_task finish_task;         /* queued on the bridge when NOTIFY */
    foreign_call *next_dead;     /* graveyard link */
};

/* A pending future whose foreign_call is `size` bytes (>= sizeof
 * (foreign_call): embed it first in your own struct), zero-filled, with
 * f->task.run = run.  Returns a new reference; the caller queues f->task
 * after taking the queue's reference (Py_INCREF) and calling
 * gf_foreign_queued(); if queueing fails, gf_foreign_unqueued() undoes it. */
FutureObject *gf_foreign_new(module_state *st, size_t size,
                             const foreign_ops *ops, gf_task_fn run,
                             PyObject *keepalive);
void gf_foreign_queued(foreign_call *fc);
void gf_foreign_unqueued(foreign_call *fc);

/* Worker side, no Python calls: begin returns 1 to run the call, 0 if it
 * was cancelled first; end is the last touch of fc and its future. */
int gf_foreign_begin(foreign_call *fc);
void gf_foreign_end(foreign_call *fc);
/* Undo a begin whose call did not start after all (it goes back to the
 * queue): it may be cancelled again until the next begin. */
void gf_foreign_unclaim(foreign_call *fc);
/* Whether the call was cancelled, before or after a worker claimed it: a
 * worker that sees it may abandon the call (its end then buries it). */
int gf_foreign_cancelled(foreign_call *fc);

/* Python side (GIL held): used by future.c. */
int gf_foreign_try_cancel(FutureObject *f);
/* For ops->cancel_running: mark a claimed call cancelled unless its worker
 * finished it first; 1 if marked. */
int gf_foreign_cancel_claimed(foreign_call *fc);
int gf_foreign_want_notify(FutureObject *f);
void gf_foreign_forget(FutureObject *f);

#endif /* GF_CORE_FOREIGN_H */
