/* gf_mpmc.h - bounded multi-producer multi-consumer ring of 64-bit values.
 *
 * Dmitry Vyukov's bounded MPMC queue ("Bounded MPMC queue", 1024cores.net,
 * 2010): every slot carries a sequence number; a producer claims position
 * p by CAS on the enqueue counter when slot[p % cap].seq == p, writes the
 * value, then publishes with seq = p + 1 (release).  A consumer claims p
 * when seq == p + 1 and frees the slot with seq = p + cap.  No locks, one
 * CAS per operation, no ABA (the 64-bit counters never wrap in practice).
 *
 * The ring is one contiguous block: header followed by the slots, with no
 * pointers inside, only indices.  So it can be placed in shared memory and
 * mapped at different addresses by different processes.  The header keeps
 * a magic/version word and a lifecycle state so that a process attaching
 * to (or surviving a peer of) a shared ring can validate it first.
 *
 * Values are opaque uint64_t: an offset into a shared arena, an index, or a
 * pointer cast to uintptr_t for in-process use.
 *
 * Blocking variants sleep on the ring's two event counts (not_empty,
 * not_full) after a short spin; a non-blocking push/pop notifies the other
 * side only when someone sleeps there (one load otherwise).
 */
#ifndef GF_MPMC_H
#define GF_MPMC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gf_atomic.h"
#include "gf_park.h"

#define GF_MPMC_MAGIC 0x67664d50u /* "gfMP" */
#define GF_MPMC_VERSION 1u

enum gf_mpmc_lifecycle { GF_MPMC_LIVE = 1, GF_MPMC_CLOSED = 2 };

typedef struct gf_mpmc_slot {
    _Atomic uint64_t seq;
    _Atomic uint64_t value;  /* atomic only so sanitizers see the hand-off
                                through seq; accessed relaxed */
} gf_mpmc_slot;

typedef struct gf_mpmc {
    /* written once by gf_mpmc_init, read by everyone */
    uint32_t magic;
    uint32_t version;
    uint64_t capacity;   /* a power of two */
    uint64_t mask;       /* capacity - 1 */
    _Atomic uint32_t lifecycle;
    bool shared;
    /* written by producers */
    GF_CACHE_ALIGNED _Atomic uint64_t enqueue_pos;
    /* written by consumers */
    GF_CACHE_ALIGNED _Atomic uint64_t dequeue_pos;
    /* sleepers: consumers wait on not_empty, producers on not_full */
    GF_CACHE_ALIGNED gf_event not_empty;
    gf_event not_full;
    GF_CACHE_ALIGNED gf_mpmc_slot slots[];
} gf_mpmc;

/* Bytes needed for a ring of `capacity` slots (capacity: power of two
 * >= 2), or 0 if capacity is invalid. */
size_t gf_mpmc_size(uint64_t capacity);

/* Initialise a ring in `mem` (gf_mpmc_size(capacity) bytes, 64-byte
 * aligned).  shared: the ring lives in memory shared between processes.
 * Returns 0 or GF_EINVAL. */
int gf_mpmc_init(void *mem, uint64_t capacity, bool shared);

/* Check magic, version, capacity and lifecycle of a ring someone else
 * initialised; `size` is the mapping's length.  0 or GF_ECORRUPT. */
int gf_mpmc_validate(const gf_mpmc *q, size_t size);

/* Non-blocking.  0, or GF_EAGAIN (full / empty), or GF_ESHUTDOWN (push on
 * a closed ring; pop on a closed ring still drains what is left, then
 * returns GF_ESHUTDOWN instead of GF_EAGAIN). */
int gf_mpmc_try_push(gf_mpmc *q, uint64_t value);
int gf_mpmc_try_pop(gf_mpmc *q, uint64_t *value);

/* Blocking with a timeout (< 0: forever).  0, GF_ETIMEDOUT, GF_EINTR, or
 * GF_ESHUTDOWN as above. */
int gf_mpmc_push(gf_mpmc *q, uint64_t value, int64_t timeout_ns);
int gf_mpmc_pop(gf_mpmc *q, uint64_t *value, int64_t timeout_ns);

/* Close: pushes fail from now on, blocked pushers and poppers wake. */
void gf_mpmc_close(gf_mpmc *q);

/* Approximate number of values in the ring (exact when quiescent). */
uint64_t gf_mpmc_count(const gf_mpmc *q);

#endif /* GF_MPMC_H */
