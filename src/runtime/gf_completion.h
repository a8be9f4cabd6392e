/* gf_completion.h - a one-shot completion many threads can wait on.
 *
 * One 32-bit word, so it can be embedded anywhere (a future, a job, shared
 * memory).  States:
 *
 *   value | meaning
 *   ------+-----------------------------------------------
 *     0   | pending, nobody asleep on it
 *     1   | pending, at least one waiter is (or may be) in futex_wait
 *     2   | done (terminal)
 *
 * complete() is an exchange to 2 with release order: everything the
 * completer wrote before it is visible to a waiter whose load of 2 is an
 * acquire.  It issues the futex wake syscall only if the old value was 1,
 * so completing something nobody sleeps on costs one atomic.
 */
#ifndef GF_COMPLETION_H
#define GF_COMPLETION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum { GF_COMPLETION_PENDING = 0, GF_COMPLETION_SLEEPERS = 1,
       GF_COMPLETION_DONE = 2 };

typedef struct gf_completion {
    _Atomic uint32_t state;
} gf_completion;

#define GF_COMPLETION_INIT {0}

void gf_completion_init(gf_completion *c);

/* Acquire load: true once complete() has been called. */
static inline bool gf_completion_is_done(gf_completion *c)
{
    return atomic_load_explicit(&c->state, memory_order_acquire)
           == GF_COMPLETION_DONE;
}

/* Mark done and wake every waiter.  Must be called at most once. */
void gf_completion_complete(gf_completion *c, bool shared);

/* Wait until done: spin briefly, then sleep.  timeout_ns < 0 waits
 * forever.  Returns 0 (done), GF_ETIMEDOUT, or GF_EINTR (a signal arrived:
 * the caller handles it and calls again with the time left). */
int gf_completion_wait(gf_completion *c, int64_t timeout_ns, bool shared);

/* The sleep of gf_completion_wait without its spin, same arguments and
 * results, for a caller that spins its own way and has something to do
 * between spinning and sleeping (a Python caller checks for signals). */
int gf_completion_sleep(gf_completion *c, int64_t timeout_ns, bool shared);

#endif /* GF_COMPLETION_H */
