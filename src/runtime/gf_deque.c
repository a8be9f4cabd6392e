/* gf_deque.c - Chase-Lev work-stealing deque (see gf_deque.h).
 *
 * D. Chase and Y. Lev, "Dynamic Circular Work-Stealing Deque", SPAA 2005.
 * N. M. Le, A. Pop, A. Cohen, F. Zappa Nardelli, "Correct and Efficient
 * Work-Stealing for Weak Memory Models", PPoPP 2013: push, take (our pop)
 * and steal below follow its C11 listing line by line, with one
 * deliberate change.
 *
 * The change, for ThreadSanitizer: TSan does not model standalone fences,
 * so the paper's "release fence; relaxed store of bottom" in push becomes a
 * release store of bottom, and steal loads bottom with acquire (as the
 * paper does).  That is the same ordering (stronger, if anything), and TSan
 * sees the hand-off of an item from owner to thief.  The two seq_cst fences
 * in take and steal stay: they are what orders a store of one variable
 * before a load of the other (bottom then top in take, top then bottom in
 * steal), which no acquire/release pairing provides.
 *
 * take's relaxed stores of bottom stay in the release sequence of the last
 * push's release store (same thread: C11 5.1.2.4p10), so a thief that
 * reads one still synchronizes with that push.
 *
 * top and bottom are signed: take computes bottom - 1 on an empty deque,
 * and with the paper's size_t that wraps and looks non-empty.
 */
#include "gf_deque.h"

#include <stdlib.h>

#include "gf_error.h"

struct gf_deque_buf {
    int64_t mask;                /* capacity - 1, capacity a power of two */
    gf_deque_buf *next;          /* link in the owner's retired list */
    _Atomic(void *) slots[];
};

#define GF_DEQUE_MIN_CAPACITY 16
/* Keeps capacity * sizeof(void *) and 2 * capacity far from overflow. */
#define GF_DEQUE_MAX_CAPACITY (INT64_C(1) << 40)

static gf_deque_buf *buf_new(int64_t capacity)
{
    /* calloc, not malloc: a thief with a stale top may read a slot the
     * owner never copied before its CAS fails; let it read zeroes. */
    gf_deque_buf *a = calloc(1, sizeof(*a)
                                + (size_t)capacity * sizeof(a->slots[0]));
    if (a != NULL)
        a->mask = capacity - 1;
    return a;
}

int gf_deque_init(gf_deque *d, size_t initial_capacity)
{
    int64_t cap = GF_DEQUE_MIN_CAPACITY;
    if (initial_capacity > (size_t)GF_DEQUE_MAX_CAPACITY)
        return GF_ENOMEM;
    while ((size_t)cap < initial_capacity)
        cap <<= 1;
    gf_deque_buf *a = buf_new(cap);
    if (a == NULL)
        return GF_ENOMEM;
    atomic_init(&d->top, 0);
    atomic_init(&d->bottom, 0);
    atomic_init(&d->buf, a);
    d->retired = NULL;
    return 0;
}

void gf_deque_destroy(gf_deque *d)
{
    free(atomic_load_explicit(&d->buf, memory_order_relaxed));
    atomic_store_explicit(&d->buf, NULL, memory_order_relaxed);
    while (d->retired != NULL) {
        gf_deque_buf *next = d->retired->next;
        free(d->retired);
        d->retired = next;
    }
}

/* Owner: copy the live range [t, b) into a buffer twice the size and
 * publish it.  The old buffer is retired, not freed: a thief may have
 * loaded it and still be reading a slot. */
static gf_deque_buf *grow(gf_deque *d, gf_deque_buf *a, int64_t t, int64_t b)
{
    int64_t cap = (a->mask + 1) * 2;
    if (cap > GF_DEQUE_MAX_CAPACITY)
        return NULL;
    gf_deque_buf *n = buf_new(cap);
    if (n == NULL)
        return NULL;
    for (int64_t i = t; i < b; i++)
        atomic_store_explicit(&n->slots[i & n->mask],
                              atomic_load_explicit(&a->slots[i & a->mask],
                                                   memory_order_relaxed),
                              memory_order_relaxed);
    /* release: a thief that loads the new buffer with acquire sees the
     * copies above. */
    atomic_store_explicit(&d->buf, n, memory_order_release);
    a->next = d->retired;
    d->retired = a;
    return n;
}

int gf_deque_push(gf_deque *d, void *item)
{
    /* relaxed: the owner is the only writer of bottom. */
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    /* acquire: pairs with the seq_cst CAS that last advanced top, so a
     * thief's read of slot t - 1 is done before we may reuse that slot. */
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    /* relaxed: the owner is the only writer of buf. */
    gf_deque_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    if (b - t > a->mask) {
        a = grow(d, a, t, b);
        if (a == NULL)
            return GF_ENOMEM;
    }
    atomic_store_explicit(&a->slots[b & a->mask], item, memory_order_relaxed);
    /* release (the paper: release fence + relaxed store; see the top): a
     * thief that acquires this bottom sees the item, the buffer, and what
     * the owner wrote into the item before pushing it. */
    atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
    return 0;
}

void *gf_deque_pop(gf_deque *d)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    gf_deque_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    /* relaxed: the fence below does the ordering. */
    atomic_store_explicit(&d->bottom, b, memory_order_relaxed);
    /* seq_cst: our store of bottom must come before our load of top in the
     * total order (store -> load), against steal's load of top before its
     * load of bottom, so a thief and the owner never both take item b. */
    atomic_thread_fence(memory_order_seq_cst);
    int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
    void *x = NULL;
    if (t <= b) {
        /* Non-empty. */
        x = atomic_load_explicit(&a->slots[b & a->mask], memory_order_relaxed);
        if (t == b) {
            /* The last item: race the thieves for it through top.
             * seq_cst: this CAS and the thieves' CAS on top are ordered
             * with the fences above and in steal (the paper's choice);
             * strong: a spurious failure would drop an item we own. */
            if (!atomic_compare_exchange_strong_explicit(
                    &d->top, &t, t + 1,
                    memory_order_seq_cst, memory_order_relaxed))
                x = NULL;   /* a thief took it */
            atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
        }
    } else {
        /* Empty: undo the decrement. */
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
    }
    return x;
}

void *gf_deque_steal(gf_deque *d, int *retry)
{
    if (retry != NULL)
        *retry = 0;
    /* acquire: pairs with the seq_cst CAS that last advanced top. */
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    /* seq_cst: our load of top must come before our load of bottom in the
     * total order, against take's store of bottom before its load of top. */
    atomic_thread_fence(memory_order_seq_cst);
    /* acquire (see the top): pairs with push's release store of bottom. */
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_acquire);
    if (t >= b)
        return NULL;
    /* acquire (the paper: consume): the buffer's copied slots are visible. */
    gf_deque_buf *a = atomic_load_explicit(&d->buf, memory_order_acquire);
    void *x = atomic_load_explicit(&a->slots[t & a->mask], memory_order_relaxed);
    /* seq_cst: claims item t against other thieves and take's last-item
     * CAS, in the total order with the fences (the paper's choice); strong,
     * because a spurious failure would report a race that did not happen. */
    if (!atomic_compare_exchange_strong_explicit(
            &d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed)) {
        if (retry != NULL)
            *retry = 1;
        return NULL;
    }
    return x;
}

int64_t gf_deque_size(gf_deque *d)
{
    /* Clamped: during a pop bottom may sit one below top for a moment. */
    int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    return b > t ? b - t : 0;
}
