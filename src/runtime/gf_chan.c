/* gf_chan.c - two SPSC byte rings and a control block in one memfd
 * segment (see gf_chan.h).
 *
 * Segment layout (offsets from the start; each process maps it at its own
 * address, so nothing in it is a pointer):
 *
 *   0                 chan_hdr: magic, version, sizes, ring offsets,
 *                     gf_chan_ctl, then per ring its positions, closed
 *                     flag, poke flags and event (struct chan_ring)
 *   ring_off[DOWN]    ring DOWN's bytes (ring_bytes, a power of two)
 *   ring_off[UP]      ring UP's bytes
 *
 * The rings start on a page boundary; the segment is 4096 + 2 * ring_bytes.
 *
 * Positions are byte counts that only grow; a position's offset in its
 * ring is pos & (ring_bytes - 1).  A record is
 *
 *   +0  u32 length (or GF_CHAN_PAD)
 *   +4  u32 unused (zero)
 *   +8  payload, padded to a multiple of 8
 *
 * so every record starts 8-aligned and a pad marker always fits before the
 * end of the ring.  The producer writes the pad marker (if any) and the
 * record header in reserve, and commit reads them back to find the new
 * tail; the consumer does the same in peek and release.  So the per-
 * process view keeps no state, and the side that produces into a ring may
 * change hands (callers serialise it) without telling anyone.
 *
 * Each side also keeps the other side's position as it last read it
 * (head_seen, tail_seen) on its own cache line: a producer with room
 * according to its stale copy never touches the consumer's line, and vice
 * versa; the copy is refreshed only when it says "full" (or "empty").  A
 * stale copy is always safe: head and tail only grow, so it understates
 * the room or the records available, never overstates them.
 *
 * The consumer trusts nothing it reads from the ring: a record's length is
 * checked against the ring before the bytes are handed out, so a segment
 * scribbled on by a buggy peer gives GF_ECORRUPT rather than a read past
 * the mapping.
 */
#include "gf_chan.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gf_error.h"
#include "gf_park.h"
#include "gf_shm.h"

/* The smallest ring: one page.  The largest: 4 GiB, so that a record's
 * length (at most half the ring) fits the u32 length word with room left
 * for GF_CHAN_PAD. */
#define GF_CHAN_RING_MIN UINT64_C(4096)
#define GF_CHAN_RING_MAX (UINT64_C(1) << 32)
/* The rings' bytes start here: a page, so they are page-aligned. */
#define GF_CHAN_DATA_OFF UINT64_C(4096)
#define GF_CHAN_REC_HDR 8

enum { PRODUCER = 0, CONSUMER = 1 };

/* One ring's shared words.  Padding groups them by who writes them. */
typedef struct chan_ring {
    /* written by the producer: its position, and head as it last read it */
    GF_CACHE_ALIGNED _Atomic uint64_t tail;
    uint64_t head_seen;
    /* written by the consumer: its position, and tail as it last read it */
    GF_CACHE_ALIGNED _Atomic uint64_t head;
    uint64_t tail_seen;
    /* read on every operation, written only by close, poke and sleepers:
     * kept apart so that the positions' traffic does not evict it. */
    GF_CACHE_ALIGNED gf_event ev;
    _Atomic uint32_t closed;
    _Atomic uint32_t poked[2];   /* [PRODUCER], [CONSUMER] */
} chan_ring;

typedef struct chan_hdr {
    /* written once by create, read by map */
    _Atomic uint32_t magic;      /* stored last: see init_segment */
    uint32_t version;
    uint64_t size;               /* the whole segment, in bytes */
    uint64_t ring_bytes;
    uint64_t ring_off[2];        /* [GF_CHAN_DOWN], [GF_CHAN_UP] */
    /* the two sides' words (gf_chan.h) */
    GF_CACHE_ALIGNED gf_chan_ctl ctl;
    chan_ring ring[2];
} chan_hdr;

_Static_assert(sizeof(chan_hdr) <= GF_CHAN_DATA_OFF,
               "the header must fit before the rings");

/* One process's view: read-only after map, so both sides' threads may
 * share its cache lines. */
struct gf_chan {
    void *base;
    size_t size;
    chan_hdr *hdr;
    struct chan_view {
        chan_ring *r;
        unsigned char *bytes;
    } ring[2];
    uint64_t mask;               /* ring_bytes - 1 */
    size_t max_record;
};

static uint32_t get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static void put32(unsigned char *p, uint32_t v)
{
    memcpy(p, &v, sizeof(v));
}

/* Ring bytes taken by a record with len bytes of payload. */
static uint64_t rec_size(uint64_t len)
{
    return GF_CHAN_REC_HDR + ((len + 7) & ~UINT64_C(7));
}

/* Where position pos falls in its ring.  Positions are multiples of 8;
 * clearing the low bits anyway keeps a scribbled one from putting a length
 * word across the ring's end (the consumer then reports the damage). */
static uint64_t offset_of(const gf_chan *c, uint64_t pos)
{
    return pos & c->mask & ~UINT64_C(7);
}

static int64_t add_sat(int64_t a, int64_t b)
{
    return b > INT64_MAX - a ? INT64_MAX : a + b;
}

static struct chan_view *view_of(gf_chan *c, int dir)
{
    assert(dir == GF_CHAN_DOWN || dir == GF_CHAN_UP);
    return &c->ring[dir];
}

/* ---- create / map ------------------------------------------------------- */

static void init_segment(chan_hdr *h, uint64_t size, uint64_t ring_bytes)
{
    h->version = GF_CHAN_VERSION;
    h->size = size;
    h->ring_bytes = ring_bytes;
    h->ring_off[GF_CHAN_DOWN] = GF_CHAN_DATA_OFF;
    h->ring_off[GF_CHAN_UP] = GF_CHAN_DATA_OFF + ring_bytes;
    atomic_init(&h->ctl.pid, 0);
    atomic_init(&h->ctl.exited, 0);
    atomic_init(&h->ctl.exit_status, 0);
    atomic_init(&h->ctl.running, 0);
    atomic_init(&h->ctl.started_ns, 0);
    for (int d = 0; d < 2; d++) {
        chan_ring *r = &h->ring[d];
        atomic_init(&r->tail, 0);
        r->head_seen = 0;
        atomic_init(&r->head, 0);
        r->tail_seen = 0;
        gf_event_init(&r->ev, true);
        atomic_init(&r->closed, 0);
        atomic_init(&r->poked[PRODUCER], 0);
        atomic_init(&r->poked[CONSUMER], 0);
    }
    /* release: a mapper that reads the magic with acquire sees the header
     * complete.  (The descriptor reaches other processes through a socket
     * or fork, which orders this anyway; the magic being last also makes a
     * half-built segment read as "not a channel".) */
    atomic_store_explicit(&h->magic, GF_CHAN_MAGIC, memory_order_release);
}

static bool ring_fits(const chan_hdr *h, int d, uint64_t size)
{
    uint64_t off = h->ring_off[d];
    return off % GF_CACHELINE == 0 && off >= sizeof(chan_hdr)
           && off <= size && h->ring_bytes <= size - off;
}

/* Check a mapped segment and build the view.  0, GF_ECORRUPT or
 * GF_ENOMEM. */
static int attach(void *base, size_t size, gf_chan **out)
{
    if (size < sizeof(chan_hdr))
        return GF_ECORRUPT;
    chan_hdr *h = base;
    /* acquire: pairs with init_segment's release. */
    if (atomic_load_explicit(&h->magic, memory_order_acquire) != GF_CHAN_MAGIC
        || h->version != GF_CHAN_VERSION || h->size != size)
        return GF_ECORRUPT;
    uint64_t s = h->ring_bytes;
    if (s < GF_CHAN_RING_MIN || s > GF_CHAN_RING_MAX || (s & (s - 1)) != 0)
        return GF_ECORRUPT;
    uint64_t down = h->ring_off[GF_CHAN_DOWN], up = h->ring_off[GF_CHAN_UP];
    if (!ring_fits(h, GF_CHAN_DOWN, size) || !ring_fits(h, GF_CHAN_UP, size)
        || (down < up ? up - down : down - up) < s)
        return GF_ECORRUPT;
    /* The events' bools are read as bytes: a bool holding neither 0 nor 1
     * is undefined behaviour to load, and these must say "shared". */
    for (int d = 0; d < 2; d++) {
        unsigned char byte;
        memcpy(&byte, &h->ring[d].ev.shared, 1);
        if (byte != 1)
            return GF_ECORRUPT;
    }

    gf_chan *c = malloc(sizeof(*c));
    if (c == NULL)
        return GF_ENOMEM;
    c->base = base;
    c->size = size;
    c->hdr = h;
    for (int d = 0; d < 2; d++) {
        c->ring[d].r = &h->ring[d];
        c->ring[d].bytes = (unsigned char *)base + h->ring_off[d];
    }
    c->mask = s - 1;
    c->max_record = (size_t)(s / 2 - GF_CHAN_REC_HDR);
    *out = c;
    return 0;
}

int gf_chan_create(size_t ring_bytes, const char *name, int *fd_out,
                   gf_chan **out)
{
    if (ring_bytes > GF_CHAN_RING_MAX)
        return GF_EINVAL;
    uint64_t s = GF_CHAN_RING_MIN;
    while (s < ring_bytes)
        s <<= 1;
    uint64_t size = GF_CHAN_DATA_OFF + 2 * s;
    if (size > SIZE_MAX)
        return GF_EINVAL;

    /* Sealed: attach checks the layout against the size, which must not
     * change after (gf_chan_map insists on the seal). */
    int fd, rc = gf_shm_create_sealed(
        (size_t)size, name != NULL ? name : "gilfree-chan", &fd);
    if (rc != 0)
        return rc;
    void *base;
    if ((rc = gf_shm_map(fd, (size_t)size, true, false, &base)) != 0)
        goto close_fd;
    init_segment(base, size, s);
    if ((rc = attach(base, (size_t)size, out)) != 0)
        goto unmap;
    *fd_out = fd;
    return 0;

unmap:
    gf_shm_unmap(base, (size_t)size);
close_fd:
    gf_close_keep_errno(fd);
    return rc;
}

int gf_chan_map(int fd, gf_chan **out)
{
    /* Not sealed: not made by gf_chan_create, and not safe to map. */
    size_t size;
    int rc = gf_shm_sealed_size(fd, &size);
    if (rc != 0)
        return rc;
    void *base;
    if ((rc = gf_shm_map(fd, size, true, false, &base)) != 0)
        return rc;
    if ((rc = attach(base, size, out)) != 0)
        gf_shm_unmap(base, size);
    return rc;
}

void gf_chan_unmap(gf_chan *c)
{
    if (c == NULL)
        return;
    gf_shm_unmap(c->base, c->size);
    free(c);
}

gf_chan_ctl *gf_chan_control(gf_chan *c)
{
    return &c->hdr->ctl;
}

size_t gf_chan_max_record(const gf_chan *c)
{
    return c->max_record;
}

/* ---- the two sides' single attempts ------------------------------------- */

/* Room for len bytes now?  0 with *buf, GF_EPIPE or GF_EAGAIN. */
static int try_reserve(gf_chan *c, struct chan_view *v, size_t len,
                       void **buf)
{
    chan_ring *r = v->r;
    /* relaxed: a producer learns nothing from a close but "stop". */
    if (atomic_load_explicit(&r->closed, memory_order_relaxed))
        return GF_EPIPE;
    /* relaxed: only this side writes tail. */
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t ring = c->mask + 1, off = offset_of(c, tail);
    uint64_t need = rec_size(len);
    /* A record that would cross the end starts at offset 0 instead, and
     * the bytes up to the end are given up to a pad marker. */
    uint64_t skip = off + need > ring ? ring - off : 0;
    uint64_t end = tail + skip + need;
    if (end - r->head_seen > ring) {
        /* acquire: pairs with release's store of head, so the consumer's
         * reads of the bytes we are about to overwrite are done. */
        r->head_seen = atomic_load_explicit(&r->head, memory_order_acquire);
        if (end - r->head_seen > ring)
            return GF_EAGAIN;
    }
    if (skip != 0) {
        put32(v->bytes + off, GF_CHAN_PAD);
        off = 0;
    }
    put32(v->bytes + off, (uint32_t)len);
    put32(v->bytes + off + 4, 0);
    *buf = v->bytes + off + GF_CHAN_REC_HDR;
    return 0;
}

/* A record now?  0 with *data and *len, GF_EPIPE, GF_EAGAIN or GF_ECORRUPT. */
static int try_peek(gf_chan *c, struct chan_view *v, const void **data,
                    size_t *len)
{
    chan_ring *r = v->r;
    /* relaxed: only this side writes head. */
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (head == r->tail_seen) {
        /* closed before tail, both acquire: a producer that committed and
         * then closed stored tail before closed, so if we see the close we
         * also see its last records, and report EPIPE only once they are
         * consumed. */
        uint32_t closed = atomic_load_explicit(&r->closed,
                                               memory_order_acquire);
        /* acquire: pairs with commit's release, so the record bytes up to
         * tail are visible. */
        r->tail_seen = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (head == r->tail_seen)
            return closed ? GF_EPIPE : GF_EAGAIN;
    }
    uint64_t ring = c->mask + 1, off = offset_of(c, head), start = head;
    uint32_t n = get32(v->bytes + off);
    if (n == GF_CHAN_PAD) {
        start += ring - off;
        off = 0;
        n = get32(v->bytes);
    }
    /* The record must lie inside the ring and inside what was published;
     * anything else was scribbled, not written by a producer (a producer
     * that dies mid-record never published it). */
    if (n > c->max_record || off + rec_size(n) > ring
        || start + rec_size(n) - head > r->tail_seen - head)
        return GF_ECORRUPT;
    *data = v->bytes + off + GF_CHAN_REC_HDR;
    *len = n;
    return 0;
}

/* ---- waiting --------------------------------------------------------------
 * One gf_event per ring serves both sides: a ring has one producer and one
 * consumer, so at most two threads sleep on it, and whoever moves a
 * position (or closes, or pokes) wakes all of them; a wake-up meant for
 * one side can never be taken by the other.
 *
 * A poke sets a flag per side and notifies.  A waiter takes its side's
 * flag when it finds nothing to do, and returns GF_EINTR: because the flag
 * stays set until taken, a poke that lands between the caller's own check
 * of its conditions and the wait still ends that wait (the event's
 * protocol covers the flag as it covers the positions).
 *
 * A process killed while asleep here leaves its count in ev.waiters, so
 * every later notify on that ring makes a futex_wake system call that
 * wakes nobody: slower, never wrong, and the reaper closes the ring
 * anyway. */

static bool take_poke(_Atomic uint32_t *flag)
{
    /* A plain load first: in the spin loop, an exchange would write the
     * shared line on every step.  acquire on the exchange: pairs with the
     * poker's release, so the caller sees what was stored before the poke
     * (gf_chan_ctl words). */
    return atomic_load_explicit(flag, memory_order_relaxed) != 0
           && atomic_exchange_explicit(flag, 0, memory_order_acquire) != 0;
}

struct op {
    size_t len;          /* producer: the record's length */
    void **buf;
    const void **data;   /* consumer */
    size_t *data_len;
};

static int attempt(gf_chan *c, struct chan_view *v, int side, struct op *op)
{
    return side == PRODUCER ? try_reserve(c, v, op->len, op->buf)
                            : try_peek(c, v, op->data, op->data_len);
}

/* Try; spin with gf_spin_step until spin_ns; then prepare / try again /
 * sleep on the event until the deadline.  The try after prepare is what
 * makes the sleep safe (gf_park.h). */
static int block(gf_chan *c, struct chan_view *v, int side, struct op *op,
                 int64_t spin_ns, int64_t timeout_ns)
{
    int rc = attempt(c, v, side, op);
    if (rc != GF_EAGAIN || timeout_ns == 0)
        return rc;
    chan_ring *r = v->r;
    _Atomic uint32_t *poked = &r->poked[side];
    int64_t start = gf_now_ns(), now = start;
    int64_t deadline = timeout_ns < 0 ? INT64_MAX : add_sat(start, timeout_ns);
    int64_t spin_end = spin_ns > 0 ? add_sat(start, spin_ns) : start;
    if (spin_end > deadline)
        spin_end = deadline;
    while (now < spin_end) {
        gf_spin_step(now - start);
        if ((rc = attempt(c, v, side, op)) != GF_EAGAIN)
            return rc;
        if (take_poke(poked))
            return GF_EINTR;
        now = gf_now_ns();
    }
    for (;;) {
        uint32_t key = gf_event_prepare(&r->ev);
        if ((rc = attempt(c, v, side, op)) != GF_EAGAIN) {
            gf_event_cancel(&r->ev);
            return rc;
        }
        if (take_poke(poked)) {
            gf_event_cancel(&r->ev);
            return GF_EINTR;
        }
        int64_t left = -1;
        if (timeout_ns > 0 && (left = deadline - gf_now_ns()) <= 0) {
            gf_event_cancel(&r->ev);
            return GF_ETIMEDOUT;
        }
        if (gf_event_wait(&r->ev, key, left) == GF_EINTR)
            return GF_EINTR;
        /* Woken, timed out or spurious: try again before looking at the
         * clock, so a wake-up meant for us is never wasted. */
    }
}

/* ---- producer side ------------------------------------------------------ */

int gf_chan_reserve(gf_chan *c, int dir, size_t len, int64_t spin_ns,
                    int64_t timeout_ns, void **buf)
{
    if (len > c->max_record)
        return GF_EINVAL;
    struct op op = {.len = len, .buf = buf};
    return block(c, view_of(c, dir), PRODUCER, &op, spin_ns, timeout_ns);
}

void gf_chan_commit(gf_chan *c, int dir)
{
    gf_chan_commit_quiet(c, dir);
    gf_event_notify(&view_of(c, dir)->r->ev, INT_MAX);
}

/* The position after the record at pos: a pad marker there means the
 * record starts at offset 0 (reserve wrote it, peek stepped over it). */
static uint64_t record_end(gf_chan *c, struct chan_view *v, uint64_t pos)
{
    uint64_t off = offset_of(c, pos);
    uint32_t n = get32(v->bytes + off);
    if (n == GF_CHAN_PAD) {
        pos += c->mask + 1 - off;
        n = get32(v->bytes);
    }
    return pos + rec_size(n);
}

void gf_chan_commit_quiet(gf_chan *c, int dir)
{
    struct chan_view *v = view_of(c, dir);
    chan_ring *r = v->r;
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    /* release: the consumer that acquires the new tail sees the record. */
    atomic_store_explicit(&r->tail, record_end(c, v, tail),
                          memory_order_release);
}

int gf_chan_send(gf_chan *c, int dir, const void *data, size_t len,
                 int64_t spin_ns, int64_t timeout_ns)
{
    void *buf;
    int rc = gf_chan_reserve(c, dir, len, spin_ns, timeout_ns, &buf);
    if (rc != 0)
        return rc;
    if (len > 0)    /* data may be NULL for an empty record */
        memcpy(buf, data, len);
    gf_chan_commit(c, dir);
    return 0;
}

/* ---- consumer side ------------------------------------------------------ */

int gf_chan_peek(gf_chan *c, int dir, int64_t spin_ns, int64_t timeout_ns,
                 const void **data, size_t *len)
{
    struct op op = {.data = data, .data_len = len};
    return block(c, view_of(c, dir), CONSUMER, &op, spin_ns, timeout_ns);
}

void gf_chan_release(gf_chan *c, int dir)
{
    struct chan_view *v = view_of(c, dir);
    chan_ring *r = v->r;
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    /* release: our reads of the record happen before a producer that
     * acquires this head overwrites it. */
    atomic_store_explicit(&r->head, record_end(c, v, head),
                          memory_order_release);
    gf_event_notify(&r->ev, INT_MAX);
}

/* ---- either side -------------------------------------------------------- */

void gf_chan_close(gf_chan *c, int dir)
{
    chan_ring *r = view_of(c, dir)->r;
    /* release: see try_peek, a consumer that reads the flag with acquire
     * sees every record committed before the close. */
    atomic_store_explicit(&r->closed, 1, memory_order_release);
    gf_event_notify(&r->ev, INT_MAX);
}

bool gf_chan_is_closed(const gf_chan *c, int dir)
{
    assert(dir == GF_CHAN_DOWN || dir == GF_CHAN_UP);
    /* acquire: pairs with close's release, so a caller that sees the close
     * also sees what the closer stored before it (a reaper's gf_chan_ctl
     * words). */
    return atomic_load_explicit(&c->ring[dir].r->closed,
                                memory_order_acquire) != 0;
}

void gf_chan_poke(gf_chan *c, int dir)
{
    chan_ring *r = view_of(c, dir)->r;
    /* release: pairs with take_poke's acquire (see there). */
    atomic_store_explicit(&r->poked[PRODUCER], 1, memory_order_release);
    atomic_store_explicit(&r->poked[CONSUMER], 1, memory_order_release);
    gf_event_notify(&r->ev, INT_MAX);
}
