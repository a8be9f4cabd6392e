/* foreign.c - futures finished by a thread that does not hold their
 * interpreter's GIL.  The protocol is described in foreign.h. */
#include "foreign.h"

#include "executor.h"
#include "gf_park.h"

enum {
    FC_CLAIMED = 1u,    /* a worker took it: cancel is too late, unless
                           the backend can stop it (ops->cancel_running) */
    FC_DONE = 2u,       /* payload stored */
    FC_NOTIFY = 4u,     /* Python side wants the finish on the bridge */
    FC_CANCELLED = 8u,  /* cancelled before the worker finished it */
    FC_SYNCING = 16u,   /* a thread is turning the payload into the outcome */
};

/* ---- worker side (no Python) -------------------------------------------- */

static void bury(foreign_call *fc)
{
    module_state *st = fc->st;
    foreign_call *head = atomic_load_explicit(&st->graveyard,
                                              memory_order_relaxed);
    do {
        fc->next_dead = head;
        /* release: the drainer sees next_dead and everything before it */
    } while (!atomic_compare_exchange_weak_explicit(
        &st->graveyard, &head, fc, memory_order_release,
        memory_order_relaxed));
}

static void leave(module_state *st)
{
    /* release: whoever waits for 0 (exit, teardown) sees our writes. */
    if (atomic_fetch_sub_explicit(&st->foreign_outstanding, 1,
                                  memory_order_release) == 1)
        gf_futex_wake(&st->foreign_outstanding, INT32_MAX, false);
}

int gf_foreign_begin(foreign_call *fc)
{
    uint32_t old = atomic_fetch_or_explicit(&fc->flags, FC_CLAIMED,
                                            memory_order_acquire);
    return !(old & FC_CANCELLED);
}

void gf_foreign_unclaim(foreign_call *fc)
{
    /* Only the claimer clears CLAIMED, and an RMW on one bit keeps any
     * CANCELLED set meanwhile (gf_foreign_cancel_claimed): the next begin
     * then sees it. */
    atomic_fetch_and_explicit(&fc->flags, ~(uint32_t)FC_CLAIMED,
                              memory_order_release);
}

int gf_foreign_cancelled(foreign_call *fc)
{
    return (atomic_load_explicit(&fc->flags, memory_order_relaxed)
            & FC_CANCELLED) != 0;
}

void gf_foreign_end(foreign_call *fc)
{
    module_state *st = fc->st;
    FutureObject *f = fc->future;
    /* acq_rel: releases the payload to the Python side; acquires the
     * bridge pointer that was stored before NOTIFY was set.  One RMW
     * decides against a concurrent gf_foreign_cancel_claimed: whichever
     * of DONE and CANCELLED comes first wins. */
    uint32_t old = atomic_fetch_or_explicit(&fc->flags, FC_DONE,
                                            memory_order_acq_rel);
    if (old & FC_CANCELLED) {  /* the Python side finished the future */
        bury(fc);
        leave(st);
        return;
    }
    gf_completion_complete(&f->done, false);
    if (!(old & FC_NOTIFY)
        || gf_pool_submit(st->bridge->life.pool, &fc->finish_task) != 0)
        bury(fc);
    leave(st);
}

/* On the bridge, with the GIL: bring the future up to date (which runs its
 * callbacks and wakes its waiters) and drop the queue's reference. */
static void run_finish(gf_task *t, gf_worker *w)
{
    gf_pyworker_enter(w);
    foreign_call *fc = GF_CONTAINER_OF(t, foreign_call, finish_task);
    FutureObject *f = fc->future;
    gf_future_sync(f);
    Py_DECREF(f);
    gf_pyworker_maybe_yield(w);
}

/* ---- Python side (GIL held) -------------------------------------------- */

FutureObject *gf_foreign_new(module_state *st, size_t size,
                             const foreign_ops *ops, gf_task_fn run,
                             PyObject *keepalive)
{
    gf_foreign_drain_graveyard(st);
    foreign_call *fc = PyMem_RawCalloc(1, size);
    if (!fc) {
        PyErr_NoMemory();
        return NULL;
    }
    FutureObject *f = gf_future_new(st);
    if (!f) {
        PyMem_RawFree(fc);
        return NULL;
    }
    fc->ops = ops;
    fc->future = f;
    fc->st = st;
    fc->fork_generation = st->fork_generation;
    fc->keepalive = Py_XNewRef(keepalive);
    fc->finish_task.run = run_finish;
    f->foreign = fc;
    f->defer_done = 1;  /* the worker completes `done`, without the GIL */
    f->task.run = run;
    return f;
}

void gf_foreign_queued(foreign_call *fc)
{
    atomic_fetch_add_explicit(&fc->st->foreign_outstanding, 1,
                              memory_order_relaxed);
}

void gf_foreign_unqueued(foreign_call *fc)
{
    atomic_fetch_sub_explicit(&fc->st->foreign_outstanding, 1,
                              memory_order_relaxed);
}

void gf_foreign_drain_graveyard(module_state *st)
{
    if (!atomic_load_explicit(&st->graveyard, memory_order_relaxed))
        return;
    foreign_call *fc = atomic_exchange_explicit(&st->graveyard, NULL,
                                                memory_order_acquire);
    while (fc) {
        foreign_call *next = fc->next_dead;
        Py_DECREF(fc->future);  /* may free fc (gf_foreign_forget) */
        fc = next;
    }
}

static void fail_forked(FutureObject *f)
{
    PyObject *exc = PyObject_CallFunction(
        f->st->broken_thread_pool, "s",
        "this task was queued or running in the parent when the process "
        "forked; its worker does not exist in the child");
    if (!exc || gf_future_set_exception(f, exc) < 0)
        PyErr_WriteUnraisable((PyObject *)f);
    Py_XDECREF(exc);
    gf_completion_complete(&f->done, false);
}

void gf_future_sync(FutureObject *f)
{
    foreign_call *fc = f->foreign;
    if (f->state >= FUT_CANCELLED)
        return;
    uint32_t flags = atomic_load_explicit(&fc->flags, memory_order_acquire);
    if (flags & FC_DONE) {
        /* Making the outcome and setting it may let the GIL go (Python code
         * in ops->outcome, the condition's lock in finish()), and another
         * thread (the bridge, a waiter) may sync the same future meanwhile:
         * only one may set it.  The other must not wait here - it may hold
         * the very condition lock the first is about to take (cf.wait reads
         * _state under it) - so it sees the future as not final yet, and
         * the first one's finish() notifies it as usual. */
        uint32_t old = atomic_fetch_or_explicit(&fc->flags, FC_SYNCING,
                                                memory_order_relaxed);
        if (old & FC_SYNCING)
            return;
        PyObject *r = fc->ops->outcome(fc);
        int rc;
        if (r) {
            rc = gf_future_set_result(f, r);
            Py_DECREF(r);
        } else {
            PyObject *exc = gf_fetch_exception();
            rc = gf_future_set_exception(f, exc);
            Py_XDECREF(exc);
        }
        if (rc < 0)
            PyErr_WriteUnraisable((PyObject *)f);
    } else if (fc->fork_generation != fc->st->fork_generation) {
        fail_forked(f);
    } else if ((flags & FC_CLAIMED) && f->state == FUT_PENDING) {
        f->state = FUT_RUNNING;
    }
}

/* Set CANCELLED unless one of `unless` is set first: 1 if it was set. */
static int cancel_unless(foreign_call *fc, uint32_t unless)
{
    uint32_t flags = atomic_load_explicit(&fc->flags, memory_order_relaxed);
    do {
        if (flags & unless)
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(
        &fc->flags, &flags, flags | FC_CANCELLED, memory_order_relaxed,
        memory_order_relaxed));
    return 1;
}

int gf_foreign_cancel_claimed(foreign_call *fc)
{
    return cancel_unless(fc, FC_DONE | FC_CANCELLED);
}

int gf_foreign_try_cancel(FutureObject *f)
{
    return cancel_unless(f->foreign, FC_CLAIMED | FC_DONE);
}

static executor_core *bridge(module_state *st)
{
    if (!st->bridge) {
        PyObject *prefix = PyUnicode_FromString("gilfree-bridge");
        PyObject *noargs = PyTuple_New(0);
        if (prefix && noargs)
            st->bridge = gf_core_new(st, 1, prefix, NULL, noargs);
        Py_XDECREF(prefix);
        Py_XDECREF(noargs);
    }
    return st->bridge;
}

int gf_foreign_want_notify(FutureObject *f)
{
    foreign_call *fc = f->foreign;
    if (atomic_load_explicit(&fc->flags, memory_order_relaxed) & FC_NOTIFY)
        return 0;
    if (!bridge(fc->st))
        return -1;
    /* acq_rel: publishes the bridge to the worker; if the worker was first
     * (DONE already set) we see its payload and sync ourselves. */
    uint32_t old = atomic_fetch_or_explicit(&fc->flags, FC_NOTIFY,
                                            memory_order_acq_rel);
    if (old & FC_DONE)
        gf_future_sync(f);
    return 0;
}

void gf_foreign_forget(FutureObject *f)
{
    foreign_call *fc = f->foreign;
    f->foreign = NULL;
    if (fc->ops->release)
        fc->ops->release(fc);
    Py_XDECREF(fc->keepalive);
    PyMem_RawFree(fc);
}

int gf_foreign_quiesce(module_state *st)
{
    for (;;) {
        uint32_t n = atomic_load_explicit(&st->foreign_outstanding,
                                          memory_order_acquire);
        if (n == 0)
            break;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = gf_futex_wait(&st->foreign_outstanding, n, -1, false);
        Py_END_ALLOW_THREADS
        if (rc == GF_EINTR && PyErr_CheckSignals() < 0)
            return -1;
    }
    gf_foreign_drain_graveyard(st);
    return 0;
}

void gf_foreign_after_fork_child(module_state *st)
{
    /* The parent's workers and their bookkeeping are gone; the futures
     * they held are leaked here and fail when looked at. */
    st->fork_generation++;
    atomic_store_explicit(&st->foreign_outstanding, 0, memory_order_relaxed);
    atomic_store_explicit(&st->graveyard, NULL, memory_order_relaxed);
}
