/* proc_wire.c - sending and receiving the processes backend's records
 * (proc.h) over a channel and its descriptor socket.  Plain C, no Python:
 * both the parent's worker threads (no GIL) and the worker processes
 * (GIL released while they wait) call it. */
#include "proc_wire.h"

#include "gf_atomic.h"
#include "gf_shm.h"
#include "gf_slab.h"

#include <string.h>
#include <unistd.h>

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* ---- slabs ---------------------------------------------------------------- */

/* Bytes this process keeps in slabs of its own, across its connections:
 * a slab stays for reuse until its connection ends, so without a cap a
 * pool that once sent a few huge buffers would keep their memory. */
#define SLAB_BUDGET ((size_t)512 << 20)
/* New slabs are this much at least, and a multiple of it, so that buffers
 * of slightly different sizes reuse one slab. */
#define SLAB_GRAIN ((size_t)2 << 20)

static _Atomic size_t own_slab_bytes;

static void drop_own(wire_slabs *t, int k)
{
    atomic_fetch_sub_explicit(&own_slab_bytes, gf_slab_cap(t->own[k]),
                              memory_order_relaxed);
    gf_slab_unref(t->own[k]);
    t->own[k] = NULL;
}

void wire_slabs_reset(wire_slabs *t)
{
    for (int k = 0; k < WIRE_SLABS; k++) {
        if (t->own[k])
            drop_own(t, k);
        if (t->peer[k])
            gf_slab_unref(t->peer[k]);
        t->peer[k] = NULL;
    }
}

/* An idle slab of ours with room for len bytes (the smallest), else a new
 * one in a free slot or in place of an idle slab that is too small, if
 * the budget allows; -1: a segment of its own then. */
static int pick_own(wire_slabs *t, size_t len)
{
    int best = -1, slot = -1;
    for (int k = 0; k < WIRE_SLABS; k++) {
        gf_slab *s = t->own[k];
        if (!s) {
            if (slot < 0 || t->own[slot])
                slot = k;
        } else if (gf_slab_idle(s)) {
            if (gf_slab_cap(s) >= len) {
                if (best < 0 || gf_slab_cap(s) < gf_slab_cap(t->own[best]))
                    best = k;
            } else if (slot < 0) {
                slot = k;
            }
        }
    }
    if (best >= 0)
        return best;
    if (slot < 0 || len > SIZE_MAX - SLAB_GRAIN)
        return -1;
    size_t cap = (len + SLAB_GRAIN - 1) / SLAB_GRAIN * SLAB_GRAIN;
    size_t freed = t->own[slot] ? gf_slab_cap(t->own[slot]) : 0;
    if (atomic_load_explicit(&own_slab_bytes, memory_order_relaxed) - freed
            + cap > SLAB_BUDGET)
        return -1;
    gf_slab *s;
    if (gf_slab_create(cap, &s) != 0)
        return -1;  /* a segment of its own will say why, if it fails too */
    if (t->own[slot])
        drop_own(t, slot);
    atomic_fetch_add_explicit(&own_slab_bytes, cap, memory_order_relaxed);
    t->own[slot] = s;
    return slot;
}

/* The slab of `table` that holds [p, p + len), or -1. */
static int find_slab(gf_slab *const *table, const void *p, size_t len)
{
    for (int k = 0; k < WIRE_SLABS; k++)
        if (table[k] && gf_slab_contains(table[k], p, len))
            return k;
    return -1;
}

/* Place buffer b for sending: *ref says where; a descriptor to send with
 * it (a new segment, or a slab's first trip) goes to *fd, else *fd is -1.
 * 0 or a GF_E* code (nothing held then). */
static int place_buffer(wire_slabs *t, const remote_buffer *b, buf_ref *ref,
                        int *fd)
{
    int k;
    *fd = -1;
    ref->len = b->len;
    ref->offset = 0;
    if (t && (k = find_slab(t->peer, b->addr, b->len)) >= 0) {
        /* A view of the peer's slab (an in-place reply): back it goes. */
        gf_slab_hold(t->peer[k]);
        ref->kind = BUF_YOUR_SLAB;
        ref->slab = (uint32_t)k;
        ref->offset = (uint64_t)((const char *)b->addr
                                 - (const char *)gf_slab_data(t->peer[k]));
        return 0;
    }
    if (t && ((k = find_slab(t->own, b->addr, b->len)) >= 0
              || (k = pick_own(t, b->len)) >= 0)) {
        gf_slab *s = t->own[k];
        if (gf_slab_contains(s, b->addr, b->len)) {
            /* a view of our own slab, held by whoever has it: no copy */
            ref->offset = (uint64_t)((const char *)b->addr
                                     - (const char *)gf_slab_data(s));
        } else {
            gf_copy_big(gf_slab_data(s), b->addr, b->len);
        }
        /* The descriptor travels once, with the slab's first buffer; the
         * send closes it (if the send fails the connection is over). */
        *fd = gf_slab_take_fd(s);
        /* The record's commit publishes the data (and this hold) to the
         * peer. */
        gf_slab_hold(s);
        ref->kind = *fd >= 0 ? BUF_SLAB_NEW : BUF_SLAB;
        ref->slab = (uint32_t)k;
        return 0;
    }
    ref->kind = BUF_SEGMENT;
    ref->slab = 0;
    return gf_shm_from_bytes(b->addr, b->len, "gilfree-buf", fd);
}

/* Undo place_buffer's hold (the record was not sent). */
static void unplace(wire_slabs *t, const buf_ref *ref)
{
    if (ref->kind == BUF_YOUR_SLAB)
        gf_slab_release(t->peer[ref->slab]);
    else if (ref->kind != BUF_SEGMENT)
        gf_slab_release(t->own[ref->slab]);
}

/* ---- records ----------------------------------------------------------- */

int wire_send(gf_chan *c, int dir, int sock, wire_slabs *slabs, msg_head *h,
              const void *p1, size_t n1, const void *p2, size_t n2,
              const remote_buffer *bufs, int nbufs, int64_t spin_ns,
              bool wake)
{
    int fds[GF_FDS_MAX];
    buf_ref refs[GF_FDS_MAX];
    int nfds = 0, placed = 0, err = 0;
    size_t body = n1 + n2;
    size_t refs_len = (size_t)nbufs * sizeof(buf_ref);
    int in_shm = sizeof *h + refs_len + body > gf_chan_max_record(c);
    if (nbufs + in_shm > GF_FDS_MAX)
        return GF_EINVAL;
    if (in_shm) {
        /* One segment for the whole payload: written in two pieces. */
        err = gf_shm_create(body, "gilfree-msg", &fds[nfds]);
        void *addr = NULL;
        if (!err) {
            nfds++;
            err = gf_shm_map(fds[0], body, true, false, &addr);
        }
        if (!err) {
            if (n1)
                memcpy(addr, p1, n1);
            if (n2)
                memcpy((char *)addr + n1, p2, n2);
            gf_shm_unmap(addr, body);
        }
    }
    for (; !err && placed < nbufs; placed++) {
        int fd;
        err = place_buffer(slabs, &bufs[placed], &refs[placed], &fd);
        if (err)
            break;
        if (fd >= 0)
            fds[nfds++] = fd;
    }
    if (!err && nfds) {
        /* Descriptors go first: the record that names them may be read
         * the moment it is committed. */
        char tag = 'f';
        err = gf_fd_send(sock, &tag, 1, fds, nfds);
    }
    close_all(fds, nfds);  /* in flight, the socket holds them */
    h->flags = in_shm ? (h->flags | MSG_BODY_IN_SHM) : (h->flags
                                                         & ~MSG_BODY_IN_SHM);
    h->body_len = body;
    h->nfds = (uint32_t)nfds;
    h->nbufs = (uint32_t)nbufs;
    h->inline_len = in_shm ? 0 : (uint32_t)body;
    void *rec = NULL;
    if (!err)
        do  /* a poke (meant for the consumer) or a signal: wait on */
            err = gf_chan_reserve(c, dir, sizeof *h + refs_len + h->inline_len,
                                  spin_ns, -1, &rec);
        while (err == GF_EINTR);
    if (err) {
        for (int i = 0; i < placed; i++)
            unplace(slabs, &refs[i]);
        return err;
    }
    char *p = rec;
    memcpy(p, h, sizeof *h);
    memcpy(p + sizeof *h, refs, refs_len);
    p += sizeof *h + refs_len;
    if (!in_shm) {
        if (n1)
            memcpy(p, p1, n1);
        if (n2)
            memcpy(p + n1, p2, n2);
    }
    if (wake)
        gf_chan_commit(c, dir);
    else
        gf_chan_commit_quiet(c, dir);
    return 0;
}

/* The received buffer refs[i], its descriptor (if any) next in fds. */
static int resolve_buffer(wire_slabs *t, const buf_ref *ref, const int *fds,
                          int nfds, int *next_fd, remote_buffer *out)
{
    int err;
    gf_slab *s;
    out->slab = NULL;
    if (ref->kind == BUF_SEGMENT) {
        size_t size;
        if (*next_fd >= nfds)
            return GF_ECORRUPT;
        int fd = fds[(*next_fd)++];
        if ((err = gf_shm_size(fd, &size)) != 0)
            return err;
        if (size != ref->len)
            return GF_ECORRUPT;
        out->len = size;
        return gf_shm_map(fd, size, true, false, &out->addr);
    }
    if (!t || ref->slab >= WIRE_SLABS)
        return GF_ECORRUPT;
    if (ref->kind == BUF_SLAB_NEW) {
        if (*next_fd >= nfds)
            return GF_ECORRUPT;
        if ((err = gf_slab_map(fds[(*next_fd)++], &s)) != 0)
            return err;
        if (t->peer[ref->slab])
            gf_slab_unref(t->peer[ref->slab]);
        t->peer[ref->slab] = s;
    } else if (ref->kind == BUF_SLAB) {
        s = t->peer[ref->slab];
    } else if (ref->kind == BUF_YOUR_SLAB) {
        s = t->own[ref->slab];
    } else {
        return GF_ECORRUPT;
    }
    if (!s || ref->offset > gf_slab_cap(s)
        || !gf_slab_contains(s, (char *)gf_slab_data(s) + ref->offset,
                             ref->len))
        return GF_ECORRUPT;
    gf_slab_ref(s);  /* the hold came with the record */
    out->slab = s;
    out->addr = (char *)gf_slab_data(s) + ref->offset;
    out->len = ref->len;
    return 0;
}

/* Map the body (if the record says it is in a segment), then resolve the
 * buffers; close every descriptor received. */
static int take_buffers(wire_msg *m, wire_slabs *t, const buf_ref *refs,
                        int *fds, int nfds)
{
    int err = 0, next_fd = 0;
    if (m->head.flags & MSG_BODY_IN_SHM) {
        size_t size;
        if (nfds < 1)
            err = GF_ECORRUPT;
        else
            err = gf_shm_size(fds[next_fd++], &size);
        if (!err && size != m->head.body_len)
            err = GF_ECORRUPT;
        if (!err)
            err = gf_shm_map(fds[0], size, false, true, &m->body_map);
        if (!err) {
            m->body_map_len = size;
            m->body = m->body_map;
        }
    }
    for (uint32_t i = 0; !err && i < m->head.nbufs; i++) {
        buf_ref ref;
        memcpy(&ref, &refs[i], sizeof ref);  /* refs sit in the ring */
        err = resolve_buffer(t, &ref, fds, nfds, &next_fd,
                             &m->bufs[m->nbufs]);
        if (!err)
            m->nbufs++;
    }
    if (!err && next_fd != nfds)
        err = GF_ECORRUPT;
    close_all(fds, nfds);
    return err;
}

int wire_recv(gf_chan *c, int dir, int sock, wire_slabs *slabs,
              int64_t spin_ns, int64_t timeout_ns, wire_msg *m)
{
    const void *data;
    size_t len;
    memset(m, 0, sizeof *m);
    int err = gf_chan_peek(c, dir, spin_ns, timeout_ns, &data, &len);
    if (err)
        return err;
    if (len < sizeof m->head) {
        gf_chan_release(c, dir);
        return GF_ECORRUPT;
    }
    memcpy(&m->head, data, sizeof m->head);
    size_t refs_len = (size_t)m->head.nbufs * sizeof(buf_ref);
    if (m->head.nfds > GF_FDS_MAX || m->head.nbufs > GF_FDS_MAX
        || len - sizeof m->head != refs_len + m->head.inline_len) {
        gf_chan_release(c, dir);
        return GF_ECORRUPT;
    }
    const buf_ref *refs = (const buf_ref *)((const char *)data
                                            + sizeof m->head);
    m->body = (const char *)data + sizeof m->head + refs_len;
    int fds[GF_FDS_MAX], nfds = 0;
    if (m->head.nfds) {
        char tag;
        size_t got;
        do {
            err = gf_fd_recv(sock, &tag, 1, &got, fds, GF_FDS_MAX, &nfds, -1);
        } while (err == GF_EINTR);
        if (!err && (uint32_t)nfds != m->head.nfds) {
            close_all(fds, nfds);
            err = GF_ECORRUPT;
        }
        if (err) {
            wire_done(c, dir, m);
            return err;
        }
    }
    if (m->head.nfds || m->head.nbufs) {
        err = take_buffers(m, slabs, refs, fds, nfds);
        if (err) {
            wire_done(c, dir, m);
            return err;
        }
    }
    return 0;
}

void wire_done(gf_chan *c, int dir, wire_msg *m)
{
    gf_chan_release(c, dir);
    if (m->body_map)
        gf_shm_unmap(m->body_map, m->body_map_len);
    m->body_map = NULL;
    wire_free_buffers(m->bufs, m->nbufs);
    m->nbufs = 0;
}

void wire_free_buffers(remote_buffer *bufs, int n)
{
    for (int i = 0; i < n; i++)
        gf_remote_buffer_free(&bufs[i]);
}
