/* wait.c - blocking on a completion from Python, the CPython way. */
#include "state.h"

#include "gf_atomic.h"

/* A caller spins this long, with the GIL released, before it sleeps: it
 * covers a trivial task's round trip through a worker (a few us), so a
 * submit().result() loop is never put to sleep and woken by a syscall. */
#define CALLER_SPIN_NS 30000

static int spin(gf_completion *c, int64_t limit_ns)
{
    int64_t start = gf_now_ns(), now = start;
    while (!gf_completion_is_done(c)) {
        if ((now = gf_now_ns()) - start >= limit_ns)
            return 0;
        gf_spin_step(now - start);
    }
    return 1;
}

/* Python runs signal handlers in one thread: the main thread of the main
 * interpreter (st->signal_thread; 0 in a sub-interpreter).  A signal that
 * comes while that thread spins with the GIL released only runs the C
 * handler, which sets a flag: nothing would interrupt the sleep that
 * follows, and Ctrl-C would wait for the result.  So between its spin and
 * its sleep that thread takes the GIL back and looks at the flag (one GIL
 * round trip, on a wait that outlived the spin anyway); a signal after
 * the look interrupts the sleep itself (EINTR).  Other threads go from
 * spin to sleep without the GIL. */
static int handles_signals(module_state *st)
{
    return st->signal_thread != 0
           && st->signal_thread == PyThread_get_thread_ident();
}

static int sleep_until(gf_completion *c, int64_t deadline)
{
    int64_t left = deadline >= 0 ? deadline - gf_now_ns() : -1;
    if (deadline >= 0 && left <= 0)
        return GF_ETIMEDOUT;
    return gf_completion_sleep(c, left, false);
}

int gf_wait_completion(module_state *st, gf_completion *c, double timeout)
{
    if (gf_completion_is_done(c))
        return 0;
    if (timeout == 0.0)
        return 1;
    int64_t deadline = timeout < 0 ? -1
                                   : gf_now_ns() + (int64_t)(timeout * 1e9);
    int back_for_signals = handles_signals(st);
    int spun = 0;
    for (;;) {
        int64_t left = -1;
        if (deadline >= 0 && (left = deadline - gf_now_ns()) <= 0)
            return 1;
        int rc = GF_EAGAIN;
        Py_BEGIN_ALLOW_THREADS
        /* seq_cst pairs with the worker's load in pyworker.c: it tells a
         * worker about to take the GIL that the GIL is free now. */
        atomic_fetch_add(&st->waiting_callers, 1);
        if (!spun) {
            int64_t budget = left >= 0 && left < CALLER_SPIN_NS ? left
                                                               : CALLER_SPIN_NS;
            rc = spin(c, budget) ? 0 : GF_EAGAIN;
        }
        if (rc == GF_EAGAIN && (spun || !back_for_signals))
            rc = sleep_until(c, deadline);
        spun = 1;
        atomic_fetch_sub(&st->waiting_callers, 1);
        Py_END_ALLOW_THREADS
        if (rc == 0)
            return 0;
        if (rc == GF_EINTR || rc == GF_EAGAIN) {
            /* Run the signal handlers now (EAGAIN: the main thread's look
             * after its spin); KeyboardInterrupt & co. end the wait,
             * anything else goes back to sleep for the time left. */
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        if (rc != GF_ETIMEDOUT) {
            gf_raise(rc, "waiting for a result");
            return -1;
        }
    }
}

int gf_join_pool(gf_pool *pool, int block)
{
    if (!block)
        return gf_pool_join(pool, 0) == 0 ? 0 : 1;
    for (;;) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = gf_pool_join(pool, -1);
        Py_END_ALLOW_THREADS
        if (rc != GF_EINTR)
            return rc == 0 ? 0 : 1;
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}
