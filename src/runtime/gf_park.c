/* gf_park.c - futex wait/wake and the event count (see gf_park.h).
 *
 * Linux only: futex(2) through syscall(), since glibc has no wrapper.  A
 * private futex (FUTEX_PRIVATE_FLAG) is keyed by (mm, address) and skips
 * the page-table walk; a shared one is keyed by the physical page, which
 * is what a word in a MAP_SHARED mapping needs when the processes map it
 * at different addresses. */
#include "gf_park.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "gf_error.h"

static int futex_op(bool shared, int op)
{
    return shared ? op : (op | FUTEX_PRIVATE_FLAG);
}

int gf_futex_wait(_Atomic uint32_t *word, uint32_t expected,
                  int64_t timeout_ns, bool shared)
{
    /* FUTEX_WAIT takes a *relative* timeout (measured on CLOCK_MONOTONIC),
     * so callers that loop recompute it from their own deadline. */
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    long r = syscall(SYS_futex, (uint32_t *)word, futex_op(shared, FUTEX_WAIT),
                     expected, tsp, NULL, 0);
    if (r == 0)
        return 0;
    switch (errno) {
    case EAGAIN:     /* *word != expected on entry: the caller re-checks */
        return 0;
    case EINTR:
        return GF_EINTR;
    case ETIMEDOUT:
        return GF_ETIMEDOUT;
    default:         /* EFAULT/EINVAL/ENOSYS: a bad word, not a wake-up */
        return GF_EINVAL;
    }
}

int gf_futex_wake(_Atomic uint32_t *word, int n, bool shared)
{
    long r = syscall(SYS_futex, (uint32_t *)word, futex_op(shared, FUTEX_WAKE),
                     n, NULL, NULL, 0);
    /* Only EFAULT/EINVAL can fail here (a bad word); nobody was woken. */
    return r < 0 ? 0 : (int)r;
}

/* ------------------------------------------------------------------------
 * Event count.
 *
 * Why no wake-up is lost (W = waiter, N = notifier):
 *
 *   W1 waiters += 1 (seq_cst)        N1 caller stores the condition
 *   FW seq_cst fence                 FN seq_cst fence
 *   W2 key = seq (seq_cst)           N3 load waiters
 *   W3 caller re-checks condition    N4 if waiters: seq += 1 (release)
 *   W4 futex_wait(seq, key)          N5             futex_wake(seq)
 *
 * FW and FN are ordered in the single total order S.  If FN comes first,
 * W3 sees N1 and W never sleeps.  Otherwise N3 sees W1, so N4 runs; and W2
 * read seq before N4 (had it read N4's value, N4 release / W2 acquire would
 * make N1 visible to W3).  So W's key is stale once N4 lands: futex_wait
 * either returns at once or is asleep when N5 wakes it.
 * ---------------------------------------------------------------------- */

void gf_event_init(gf_event *ev, bool shared)
{
    atomic_init(&ev->seq, 0);
    atomic_init(&ev->waiters, 0);
    ev->shared = shared;
}

uint32_t gf_event_prepare(gf_event *ev)
{
    /* seq_cst: W1 must be in the total order so a notifier whose fence
     * follows ours sees this waiter. */
    atomic_fetch_add_explicit(&ev->waiters, 1, memory_order_seq_cst);
    /* seq_cst fence: C11 only guarantees the store-buffering outcome (we
     * see the condition or the notifier sees us) between two fences when
     * the caller's re-check is a mere acquire load; on x86 the locked add
     * above already is a full barrier, and this is the slow path anyway. */
    atomic_thread_fence(memory_order_seq_cst);
    /* seq_cst (an acquire would do): if we read a notifier's bump, we must
     * also see the condition that notifier published before bumping. */
    return atomic_load_explicit(&ev->seq, memory_order_seq_cst);
}

void gf_event_cancel(gf_event *ev)
{
    /* relaxed: a notifier that reads the decrement skips the wake, which is
     * right, since we are awake; our next prepare re-announces us. */
    atomic_fetch_sub_explicit(&ev->waiters, 1, memory_order_relaxed);
}

int gf_event_wait(gf_event *ev, uint32_t key, int64_t timeout_ns)
{
    int r = gf_futex_wait(&ev->seq, key, timeout_ns, ev->shared);
    /* relaxed: same reason as cancel, the caller re-checks and prepares
     * again before it can sleep again. */
    atomic_fetch_sub_explicit(&ev->waiters, 1, memory_order_relaxed);
    return r == GF_EINVAL ? 0 : r;
}

void gf_event_notify(gf_event *ev, int n)
{
    /* seq_cst fence (FN): orders the caller's store of the condition before
     * our read of waiters in the total order; see the table above. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&ev->waiters, memory_order_relaxed) == 0)
        return;
    /* release: a waiter whose prepare reads this new seq must also see the
     * condition the caller stored before calling us. */
    atomic_fetch_add_explicit(&ev->seq, 1, memory_order_release);
    gf_futex_wake(&ev->seq, n, ev->shared);
}
