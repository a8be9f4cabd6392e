/* proc_wire.h - one processes-backend record (proc.h) on the wire: the
 * channel record, and the descriptors beside it for what travels in shared
 * memory.  No Python here. */
#ifndef GF_CORE_PROC_WIRE_H
#define GF_CORE_PROC_WIRE_H

#include "gf_chan.h"
#include "gf_shm.h"
#include "proc.h"
#include "remote.h"

/* A received record.  `body` points into the ring (inline) or into
 * body_map; bufs are the out-of-band buffers, mapped read-write: whoever
 * takes one over sets its addr to NULL. */
typedef struct wire_msg {
    msg_head head;
    const char *body;
    void *body_map;
    size_t body_map_len;
    remote_buffer bufs[GF_FDS_MAX];
    int nbufs;
} wire_msg;

/* Send h with payload p1 then p2 (either may be empty) and nbufs buffers.
 * The payload goes inline when it fits a record, else in a segment; each
 * buffer goes in its own segment.  Waits for room with no time limit (the
 * peer closing the ring ends the wait with GF_EPIPE).  Fills in h's
 * body_len, nfds, inline_len and MSG_BODY_IN_SHM.  0 or a GF_E* code. */
int wire_send(gf_chan *c, int dir, int sock, msg_head *h, const void *p1,
              size_t n1, const void *p2, size_t n2, const remote_buffer *bufs,
              int nbufs, int64_t spin_ns);

/* The next record of ring dir, its descriptors taken and mapped.  0 (then
 * call wire_done), or GF_EPIPE / GF_ETIMEDOUT / GF_EINTR / GF_EAGAIN from
 * the wait, or GF_ECORRUPT / GF_ESYS (the record was consumed). */
int wire_recv(gf_chan *c, int dir, int sock, int64_t spin_ns,
              int64_t timeout_ns, wire_msg *m);

/* Give the record's room back; unmap the body and the buffers not taken. */
void wire_done(gf_chan *c, int dir, wire_msg *m);

void wire_free_buffers(remote_buffer *bufs, int n);

#endif /* GF_CORE_PROC_WIRE_H */
