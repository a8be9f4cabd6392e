/* gf_mpmc.c - Vyukov's bounded MPMC ring (see gf_mpmc.h).
 *
 * D. Vyukov, "Bounded MPMC queue", 1024cores.net, 2010.  The memory
 * orders below follow his code: positions are claimed with relaxed CAS, a
 * slot's seq is read with acquire and written with release, and the value
 * travels under the slot's seq.
 *
 * One addition: closing.  close() sets GF_MPMC_CLOSED_BIT in enqueue_pos
 * with an atomic OR.  A producer's claim is a CAS on enqueue_pos whose
 * expected value never has the bit, so after the OR no push can succeed;
 * every push that did succeed claimed a position below the final,
 * now-frozen enqueue_pos.  A consumer that finds its slot empty and
 * enqueue_pos == (its position | bit) therefore knows the ring is both
 * closed and drained, with no push still in flight.  `lifecycle` mirrors
 * the state for validators; the bit is what the hot path reads.
 *
 * Everything is addressed relative to the ring itself (slot indices, no
 * pointers), so two processes may map the same ring at different addresses.
 */
#include "gf_mpmc.h"

#include <limits.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>

#include "gf_error.h"

/* Top bit of enqueue_pos: set once by close().  Positions count up by one
 * per push; 2^63 of them is ~290 years at a billion pushes a second. */
#define GF_MPMC_CLOSED_BIT (UINT64_C(1) << 63)

/* Failed try_* rounds before a blocking call sleeps.  Each round is a
 * `pause` (25-40 ns) plus two loads, so ~1-2 us: about a futex round trip,
 * and long enough to ride out a peer that is between claiming a slot and
 * publishing it. */
#define GF_MPMC_SPIN 48
/* Then this many sched_yield() rounds.  With more threads than cores the
 * peer we wait for is often runnable on our core; yielding to it instead
 * of sleeping made the 4P/4C stress test on 2 cores ~10x faster (a sleep
 * costs the sleeper a futex wait and every push or pop a futex wake until
 * the woken thread runs).  With idle cores a yield returns at once. */
#define GF_MPMC_YIELDS 2

size_t gf_mpmc_size(uint64_t capacity)
{
    if (capacity < 2 || (capacity & (capacity - 1)) != 0)
        return 0;
    /* Positions must stay below the closed bit with room for a lap. */
    if (capacity > (UINT64_C(1) << 62))
        return 0;
    if (capacity > (SIZE_MAX - offsetof(gf_mpmc, slots)) / sizeof(gf_mpmc_slot))
        return 0;
    return offsetof(gf_mpmc, slots) + (size_t)capacity * sizeof(gf_mpmc_slot);
}

int gf_mpmc_init(void *mem, uint64_t capacity, bool shared)
{
    if (mem == NULL || ((uintptr_t)mem & (GF_CACHELINE - 1)) != 0
        || gf_mpmc_size(capacity) == 0)
        return GF_EINVAL;
    gf_mpmc *q = mem;
    q->magic = GF_MPMC_MAGIC;
    q->version = GF_MPMC_VERSION;
    q->capacity = capacity;
    q->mask = capacity - 1;
    q->shared = shared;
    atomic_init(&q->enqueue_pos, 0);
    atomic_init(&q->dequeue_pos, 0);
    gf_event_init(&q->not_empty, shared);
    gf_event_init(&q->not_full, shared);
    for (uint64_t i = 0; i < capacity; i++) {
        atomic_init(&q->slots[i].seq, i);
        atomic_init(&q->slots[i].value, 0);
    }
    /* release: whoever attaches and reads LIVE with acquire sees the rest
     * of the header and the slots initialised. */
    atomic_store_explicit(&q->lifecycle, GF_MPMC_LIVE, memory_order_release);
    return 0;
}

static bool byte_is_bool(const bool *b)
{
    unsigned char byte;
    memcpy(&byte, b, 1);
    return byte <= 1;
}

int gf_mpmc_validate(const gf_mpmc *q, size_t size)
{
    if (q == NULL || size < offsetof(gf_mpmc, slots))
        return GF_ECORRUPT;
    /* acquire: pairs with init's release store, see there. */
    uint32_t life = atomic_load_explicit(&q->lifecycle, memory_order_acquire);
    if (q->magic != GF_MPMC_MAGIC || q->version != GF_MPMC_VERSION)
        return GF_ECORRUPT;
    size_t need = gf_mpmc_size(q->capacity);
    if (need == 0 || need > size || q->mask != q->capacity - 1)
        return GF_ECORRUPT;
    if (life != GF_MPMC_LIVE && life != GF_MPMC_CLOSED)
        return GF_ECORRUPT;
    /* The bools are read as bytes: loading a bool that holds neither 0 nor
     * 1 is undefined behaviour, and the ring's users load these. */
    if (!byte_is_bool(&q->shared) || !byte_is_bool(&q->not_empty.shared)
        || !byte_is_bool(&q->not_full.shared)
        || memcmp(&q->shared, &q->not_empty.shared, 1) != 0
        || memcmp(&q->shared, &q->not_full.shared, 1) != 0)
        return GF_ECORRUPT;
    /* dequeue_pos first: a consumer moved it to `head` only after the
     * push of position head - 1 was published, and enqueue_pos never goes
     * back, so the read of enqueue_pos below cannot be smaller.  (acquire
     * orders the two reads; the claim CASes are relaxed, as in Vyukov's
     * code, so this leans on the hardware's causality, which x86-64 and
     * ARMv8 give, rather than on C11 alone.) */
    uint64_t head = atomic_load_explicit(&q->dequeue_pos, memory_order_acquire);
    /* acquire: pairs with close()'s release OR, so a set bit implies we see
     * lifecycle == CLOSED below. */
    uint64_t tail = atomic_load_explicit(&q->enqueue_pos, memory_order_acquire);
    if ((tail & GF_MPMC_CLOSED_BIT)
        && atomic_load_explicit(&q->lifecycle, memory_order_relaxed)
               != GF_MPMC_CLOSED)
        return GF_ECORRUPT;
    if ((tail & ~GF_MPMC_CLOSED_BIT) < head)
        return GF_ECORRUPT;
    /* Slot i only ever holds seq = i + k*capacity (free) or that + 1
     * (full), so seq - i is 0 or 1 modulo the capacity; anything else is a
     * scribbled slot.  O(capacity), which is fine for an attach check. */
    for (uint64_t i = 0; i < q->capacity; i++) {
        uint64_t seq = atomic_load_explicit(&q->slots[i].seq,
                                            memory_order_relaxed);
        if (((seq - i) & q->mask) > 1)
            return GF_ECORRUPT;
    }
    return 0;
}

/* try_push found its slot full: report a close that raced with us. */
static int full(gf_mpmc *q)
{
    uint64_t tail = atomic_load_explicit(&q->enqueue_pos, memory_order_relaxed);
    return (tail & GF_MPMC_CLOSED_BIT) ? GF_ESHUTDOWN : GF_EAGAIN;
}

/* try_pop found slot `pos` not yet published: empty, or closed and
 * drained once enqueue_pos is frozen at exactly `pos` (see the top). */
static int empty(gf_mpmc *q, uint64_t pos)
{
    /* relaxed: a value with the bit is final, so no ordering can make it
     * stale; a value without it only makes us answer EAGAIN. */
    uint64_t tail = atomic_load_explicit(&q->enqueue_pos, memory_order_relaxed);
    if (tail == (pos | GF_MPMC_CLOSED_BIT))
        return GF_ESHUTDOWN;
    return GF_EAGAIN;
}

int gf_mpmc_try_push(gf_mpmc *q, uint64_t value)
{
    gf_mpmc_slot *slot;
    /* relaxed: the position is a guess; the slot's seq and the CAS decide. */
    uint64_t pos = atomic_load_explicit(&q->enqueue_pos, memory_order_relaxed);
    for (;;) {
        if (pos & GF_MPMC_CLOSED_BIT)
            return GF_ESHUTDOWN;
        slot = &q->slots[pos & q->mask];
        /* acquire: pairs with the consumer's release that freed this slot,
         * so its read of the old value is done before we overwrite it. */
        uint64_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - pos);
        if (dif == 0) {
            /* relaxed: claiming a position publishes nothing (the slot's
             * seq does); weak: a spurious failure just goes round again
             * with pos reloaded by the CAS. */
            if (atomic_compare_exchange_weak_explicit(
                    &q->enqueue_pos, &pos, pos + 1,
                    memory_order_relaxed, memory_order_relaxed))
                break;
        } else if (dif < 0) {
            /* The slot still holds the value from one lap ago: full. */
            return full(q);
        } else {
            /* Another producer claimed pos first: catch up. */
            pos = atomic_load_explicit(&q->enqueue_pos, memory_order_relaxed);
        }
    }
    atomic_store_explicit(&slot->value, value, memory_order_relaxed);
    /* release: a consumer that acquires seq == pos + 1 sees the value. */
    atomic_store_explicit(&slot->seq, pos + 1, memory_order_release);
    gf_event_notify(&q->not_empty, 1);
    return 0;
}

int gf_mpmc_try_pop(gf_mpmc *q, uint64_t *value)
{
    gf_mpmc_slot *slot;
    /* relaxed: a guess, as in try_push. */
    uint64_t pos = atomic_load_explicit(&q->dequeue_pos, memory_order_relaxed);
    for (;;) {
        slot = &q->slots[pos & q->mask];
        /* acquire: pairs with the producer's release of seq = pos + 1, so
         * the value it stored is visible. */
        uint64_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - (pos + 1));
        if (dif == 0) {
            /* relaxed + weak: as in try_push. */
            if (atomic_compare_exchange_weak_explicit(
                    &q->dequeue_pos, &pos, pos + 1,
                    memory_order_relaxed, memory_order_relaxed))
                break;
        } else if (dif < 0) {
            return empty(q, pos);
        } else {
            pos = atomic_load_explicit(&q->dequeue_pos, memory_order_relaxed);
        }
    }
    *value = atomic_load_explicit(&slot->value, memory_order_relaxed);
    /* release: the producer that acquires seq == pos + capacity (next lap)
     * finds our read of the value already done. */
    atomic_store_explicit(&slot->seq, pos + q->mask + 1, memory_order_release);
    gf_event_notify(&q->not_full, 1);
    return 0;
}

static int attempt(gf_mpmc *q, bool push, uint64_t *value)
{
    return push ? gf_mpmc_try_push(q, *value) : gf_mpmc_try_pop(q, value);
}

/* The blocking recipe shared by push and pop: try, spin on try, then
 * prepare / try again / sleep on the event until the deadline.  The try
 * after prepare is what makes the sleep safe (see gf_park.h). */
static int block(gf_mpmc *q, bool push, uint64_t *value, int64_t timeout_ns)
{
    gf_event *ev = push ? &q->not_full : &q->not_empty;
    int r = attempt(q, push, value);
    if (r != GF_EAGAIN)
        return r;
    if (timeout_ns == 0)
        return GF_ETIMEDOUT;
    int64_t deadline = timeout_ns > 0 ? gf_now_ns() + timeout_ns : -1;
    for (int i = 0; i < GF_MPMC_SPIN; i++) {
        gf_cpu_relax();
        if ((r = attempt(q, push, value)) != GF_EAGAIN)
            return r;
    }
    for (int i = 0; i < GF_MPMC_YIELDS; i++) {
        sched_yield();
        if ((r = attempt(q, push, value)) != GF_EAGAIN)
            return r;
    }
    for (;;) {
        uint32_t key = gf_event_prepare(ev);
        if ((r = attempt(q, push, value)) != GF_EAGAIN) {
            gf_event_cancel(ev);
            return r;
        }
        int64_t left = -1;
        if (deadline >= 0 && (left = deadline - gf_now_ns()) <= 0) {
            gf_event_cancel(ev);
            return GF_ETIMEDOUT;
        }
        if (gf_event_wait(ev, key, left) == GF_EINTR)
            return GF_EINTR;
        /* Woken, timed out or spurious: try again before looking at the
         * clock, so a wake-up meant for us is never wasted. */
    }
}

int gf_mpmc_push(gf_mpmc *q, uint64_t value, int64_t timeout_ns)
{
    return block(q, true, &value, timeout_ns);
}

int gf_mpmc_pop(gf_mpmc *q, uint64_t *value, int64_t timeout_ns)
{
    return block(q, false, value, timeout_ns);
}

void gf_mpmc_close(gf_mpmc *q)
{
    /* lifecycle first, relaxed: the release OR below publishes it, so a
     * validator that sees the bit also sees CLOSED. */
    atomic_store_explicit(&q->lifecycle, GF_MPMC_CLOSED, memory_order_relaxed);
    atomic_fetch_or_explicit(&q->enqueue_pos, GF_MPMC_CLOSED_BIT,
                             memory_order_release);
    /* Everyone asleep re-checks and sees the bit (notify's fence orders the
     * OR before its read of waiters). */
    gf_event_notify(&q->not_empty, INT_MAX);
    gf_event_notify(&q->not_full, INT_MAX);
}

uint64_t gf_mpmc_count(const gf_mpmc *q)
{
    /* dequeue_pos first so the difference is never negative; it may
     * exceed the capacity while producers race ahead, so clamp. */
    uint64_t head = atomic_load_explicit(&q->dequeue_pos, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&q->enqueue_pos, memory_order_relaxed)
                    & ~GF_MPMC_CLOSED_BIT;
    uint64_t n = tail - head;
    return n > q->capacity ? q->capacity : n;
}
