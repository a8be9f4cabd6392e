/* gf_completion.c - one-shot completion: spin briefly, then sleep on the
 * state word (see the state table in gf_completion.h).
 *
 * A waiter only sleeps after it moved the word from 0 to 1 (or saw 1), so
 * the completer, whose exchange to 2 returns the previous value, knows
 * whether a futex wake is needed.  Both are read-modify-writes on the same
 * word, so they are totally ordered by that word's modification order: no
 * seq_cst is needed for the "did anybody sleep" question. */
#include "gf_completion.h"

#include <limits.h>
#include <sched.h>

#include "gf_atomic.h"
#include "gf_error.h"
#include "gf_park.h"

/* Spin iterations before sleeping.  One `pause` costs ~25 ns on Zen 3 and
 * ~40 ns on Skylake-class Intel (140 cycles), so 64 of them is 1.5-2.5 us:
 * about the cost of a futex sleep + wake round trip, which is the point
 * where spinning longer stops paying for itself. */
#define GF_COMPLETION_SPIN 64
/* Then give the CPU away this many times before sleeping: on a loaded
 * machine the completer may be runnable on our core. */
#define GF_COMPLETION_YIELDS 2

void gf_completion_init(gf_completion *c)
{
    atomic_init(&c->state, GF_COMPLETION_PENDING);
}

void gf_completion_complete(gf_completion *c, bool shared)
{
    /* release: publishes everything written before complete() to a waiter
     * that reads 2 with acquire. */
    uint32_t old = atomic_exchange_explicit(&c->state, GF_COMPLETION_DONE,
                                            memory_order_release);
    /* A waiter that sees 2 may free the word before this wake runs; that
     * is harmless: the wake only hashes the address (or fails with EFAULT
     * for a shared futex), and a reused word at worst gets a spurious
     * wake-up, which every futex user must tolerate. */
    if (old == GF_COMPLETION_SLEEPERS)
        gf_futex_wake(&c->state, INT_MAX, shared);
}

int gf_completion_wait(gf_completion *c, int64_t timeout_ns, bool shared)
{
    if (gf_completion_is_done(c))
        return 0;
    if (timeout_ns == 0)    /* a poll: no spinning, no sleeping */
        return GF_ETIMEDOUT;
    /* The timeout counts the spin too: callers ask for wall time. */
    int64_t start = gf_now_ns();
    for (int i = 0; i < GF_COMPLETION_SPIN; i++) {
        gf_cpu_relax();
        if (gf_completion_is_done(c))
            return 0;
    }
    for (int i = 0; i < GF_COMPLETION_YIELDS; i++) {
        sched_yield();
        if (gf_completion_is_done(c))
            return 0;
    }
    if (timeout_ns > 0 && (timeout_ns -= gf_now_ns() - start) <= 0)
        return GF_ETIMEDOUT;
    return gf_completion_sleep(c, timeout_ns, shared);
}

int gf_completion_sleep(gf_completion *c, int64_t timeout_ns, bool shared)
{
    int64_t deadline = timeout_ns >= 0 ? gf_now_ns() + timeout_ns : -1;
    for (;;) {
        uint32_t s = GF_COMPLETION_PENDING;
        /* Announce a sleeper.  acquire on failure: the value we fail on may
         * be 2, and then we return having read the completer's writes.
         * (0 -> 1 publishes nothing, but C11 forbids a failure order
         * stronger than the success order, so success is acquire too.) */
        if (!atomic_compare_exchange_strong_explicit(
                &c->state, &s, GF_COMPLETION_SLEEPERS,
                memory_order_acquire, memory_order_acquire)) {
            if (s == GF_COMPLETION_DONE)
                return 0;
            /* s == 1: another waiter already announced; sleep on 1 too. */
        }
        int64_t left = -1;
        if (deadline >= 0) {
            left = deadline - gf_now_ns();
            if (left <= 0)
                return GF_ETIMEDOUT;
        }
        int r = gf_futex_wait(&c->state, GF_COMPLETION_SLEEPERS, left, shared);
        if (gf_completion_is_done(c))
            return 0;
        if (r == GF_EINTR)
            return GF_EINTR;
        /* Woken, timed out or spurious: loop, which re-reads the state and
         * recomputes the time left from the deadline. */
    }
}
