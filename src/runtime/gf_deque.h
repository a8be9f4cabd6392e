/* gf_deque.h - Chase-Lev work-stealing deque of pointers.
 *
 * D. Chase and Y. Lev, "Dynamic Circular Work-Stealing Deque", SPAA 2005;
 * memory orders from N. M. Le, A. Pop, A. Cohen, F. Zappa Nardelli,
 * "Correct and Efficient Work-Stealing for Weak Memory Models", PPoPP 2013.
 *
 * One owner thread pushes and pops at the bottom (LIFO); any thread may
 * steal from the top (FIFO).  The buffer grows when full; old buffers are
 * kept until gf_deque_destroy because a thief may still be reading one.
 *
 * Contract:
 *   gf_deque_push / gf_deque_pop : owner thread only.
 *   gf_deque_steal               : any thread (including the owner).
 *   Items are non-NULL pointers; NULL means "empty" (or "lost a race" for
 *   steal: see gf_deque_steal).
 */
#ifndef GF_DEQUE_H
#define GF_DEQUE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "gf_atomic.h"

typedef struct gf_deque_buf gf_deque_buf;

typedef struct gf_deque {
    /* written by thieves (CAS) and by the owner when popping the last item */
    GF_CACHE_ALIGNED _Atomic int64_t top;
    /* written by the owner only */
    GF_CACHE_ALIGNED _Atomic int64_t bottom;
    _Atomic(gf_deque_buf *) buf;
    gf_deque_buf *retired;   /* owner only: old buffers, freed at destroy */
} gf_deque;

/* initial_capacity: rounded up to a power of two (>= 16). 0 or GF_ENOMEM. */
int gf_deque_init(gf_deque *d, size_t initial_capacity);
void gf_deque_destroy(gf_deque *d);

/* Owner: push item (non-NULL).  0, or GF_ENOMEM if growing failed (the
 * item was not pushed). */
int gf_deque_push(gf_deque *d, void *item);

/* Owner: pop the most recently pushed item, or NULL if empty. */
void *gf_deque_pop(gf_deque *d);

/* Any thread: steal the oldest item.  Returns the item, or NULL if the
 * deque looked empty or the CAS lost to another thief or to the owner.
 * *retry (may be NULL) is set to 1 when NULL came from a lost race, so the
 * caller knows the deque may still hold work. */
void *gf_deque_steal(gf_deque *d, int *retry);

/* Approximate size (exact when quiescent); any thread. */
int64_t gf_deque_size(gf_deque *d);

#endif /* GF_DEQUE_H */
