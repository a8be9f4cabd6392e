/* proc_wire.c - sending and receiving the processes backend's records
 * (proc.h) over a channel and its descriptor socket.  Plain C, no Python:
 * both the parent's worker threads (no GIL) and the worker processes
 * (GIL released while they wait) call it. */
#include "proc_wire.h"

#include "gf_shm.h"

#include <string.h>
#include <unistd.h>

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

int wire_send(gf_chan *c, int dir, int sock, msg_head *h, const void *p1,
              size_t n1, const void *p2, size_t n2, const remote_buffer *bufs,
              int nbufs, int64_t spin_ns)
{
    int fds[GF_FDS_MAX];
    int nfds = 0, err = 0;
    size_t body = n1 + n2;
    int in_shm = sizeof *h + body > gf_chan_max_record(c);
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
    for (int i = 0; !err && i < nbufs; i++) {
        err = gf_shm_from_bytes(bufs[i].addr, bufs[i].len, "gilfree-buf",
                                &fds[nfds]);
        if (!err)
            nfds++;
    }
    if (!err && nfds) {
        /* Descriptors go first: the record that names them may be read
         * the moment it is committed. */
        char tag = 'f';
        err = gf_fd_send(sock, &tag, 1, fds, nfds);
    }
    close_all(fds, nfds);  /* in flight, the socket holds them */
    if (err)
        return err;
    h->flags = in_shm ? (h->flags | MSG_BODY_IN_SHM) : (h->flags
                                                         & ~MSG_BODY_IN_SHM);
    h->body_len = body;
    h->nfds = (uint32_t)nfds;
    h->inline_len = in_shm ? 0 : (uint32_t)body;
    void *rec;
    do  /* a poke (meant for the consumer) or a signal: wait on */
        err = gf_chan_reserve(c, dir, sizeof *h + h->inline_len, spin_ns, -1,
                              &rec);
    while (err == GF_EINTR);
    if (err)
        return err;
    memcpy(rec, h, sizeof *h);
    if (!in_shm) {
        if (n1)
            memcpy((char *)rec + sizeof *h, p1, n1);
        if (n2)
            memcpy((char *)rec + sizeof *h + n1, p2, n2);
    }
    gf_chan_commit(c, dir);
    return 0;
}

/* Map every received descriptor (then close it): the body first if the
 * record says so, then the buffers. */
static int map_segments(wire_msg *m, int *fds, int nfds)
{
    int err = 0, i = 0;
    if (m->head.flags & MSG_BODY_IN_SHM) {
        size_t size;
        err = gf_shm_size(fds[0], &size);
        if (!err && size != m->head.body_len)
            err = GF_ECORRUPT;
        if (!err)
            err = gf_shm_map(fds[0], size, false, true, &m->body_map);
        if (!err) {
            m->body_map_len = size;
            m->body = m->body_map;
        }
        i = 1;
    }
    for (; !err && i < nfds; i++) {
        size_t size;
        void *addr;
        err = gf_shm_size(fds[i], &size);
        if (!err)
            err = gf_shm_map(fds[i], size, true, false, &addr);
        if (!err) {
            m->bufs[m->nbufs].addr = addr;
            m->bufs[m->nbufs].len = size;
            m->nbufs++;
        }
    }
    close_all(fds, nfds);
    return err;
}

int wire_recv(gf_chan *c, int dir, int sock, int64_t spin_ns,
              int64_t timeout_ns, wire_msg *m)
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
    m->body = (const char *)data + sizeof m->head;
    if (m->head.inline_len != len - sizeof m->head
        || m->head.nfds > GF_FDS_MAX) {
        gf_chan_release(c, dir);
        return GF_ECORRUPT;
    }
    if (m->head.nfds) {
        int fds[GF_FDS_MAX], nfds = 0;
        char tag;
        size_t got;
        do {
            err = gf_fd_recv(sock, &tag, 1, &got, fds, GF_FDS_MAX, &nfds, -1);
        } while (err == GF_EINTR);
        if (!err && (uint32_t)nfds != m->head.nfds) {
            close_all(fds, nfds);
            err = GF_ECORRUPT;
        }
        if (!err)
            err = map_segments(m, fds, nfds);
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
    for (int i = 0; i < n; i++) {
        if (bufs[i].addr)
            gf_shm_unmap(bufs[i].addr, bufs[i].len);
        bufs[i].addr = NULL;
    }
}
