/* gf_park.h - sleeping and waking threads on a 32-bit word (Linux futex).
 *
 * Two layers:
 *
 *   gf_futex_wait / gf_futex_wake   the raw syscall, private or
 *                                   process-shared (for words that live in
 *                                   shared memory between processes).
 *
 *   gf_event                        an event count: the standard way to
 *                                   sleep on "some condition over other
 *                                   memory" with no lost wake-up.
 *
 * Event count protocol (waiter side):
 *
 *     uint32_t key = gf_event_prepare(&ev);      // announce: I may sleep
 *     if (condition_now_true()) { gf_event_cancel(&ev); ... }
 *     else gf_event_wait(&ev, key, timeout_ns);  // sleeps unless notified
 *                                                // since prepare
 * Notifier side: make the condition true, then gf_event_notify(&ev, n).
 *
 * prepare() increments `waiters` and reads `seq` with seq_cst; notify()
 * issues a seq_cst fence after the caller's store and reads `waiters`.  By
 * the seq_cst total order either the notifier sees the waiter (and bumps
 * seq, so the futex wait returns at once) or the waiter's re-check sees the
 * condition.  That is the whole no-lost-wake-up argument; the stress test
 * park_no_lost_wakeup hammers it.
 *
 * All structures here are plain words: they may live in shared memory, in
 * which case pass shared=true so the kernel keys the futex by physical page
 * rather than by (mm, address).
 */
#ifndef GF_PARK_H
#define GF_PARK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Sleep while *word == expected, at most timeout_ns (< 0: no limit).
 * Returns 0 when woken or when *word != expected on entry (the caller
 * re-checks its condition either way), GF_ETIMEDOUT, or GF_EINTR if a
 * signal handler ran (futex waits are never restarted).  Spurious returns
 * are allowed. */
int gf_futex_wait(_Atomic uint32_t *word, uint32_t expected,
                  int64_t timeout_ns, bool shared);

/* Wake up to n sleepers on word (INT32_MAX: all).  Returns how many woke. */
int gf_futex_wake(_Atomic uint32_t *word, int n, bool shared);

typedef struct gf_event {
    _Atomic uint32_t seq;      /* bumped by every notify that found waiters */
    _Atomic uint32_t waiters;  /* threads between prepare and wait/cancel */
    bool shared;               /* process-shared futex */
} gf_event;

void gf_event_init(gf_event *ev, bool shared);
uint32_t gf_event_prepare(gf_event *ev);
void gf_event_cancel(gf_event *ev);
/* Returns 0 (notified or spurious: re-check), GF_ETIMEDOUT or GF_EINTR. */
int gf_event_wait(gf_event *ev, uint32_t key, int64_t timeout_ns);
/* Wake up to n waiters if there are any; cheap (one load) when there are
 * none.  Call after the store that makes the waiters' condition true. */
void gf_event_notify(gf_event *ev, int n);

#endif /* GF_PARK_H */
