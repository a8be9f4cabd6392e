/* proc_wire.h - one processes-backend record (proc.h) on the wire: the
 * channel record, and the descriptors beside it for what travels in shared
 * memory.  No Python here. */
#ifndef GF_CORE_PROC_WIRE_H
#define GF_CORE_PROC_WIRE_H

#include "gf_chan.h"
#include "gf_shm.h"
#include "proc.h"
#include "remote.h"

/* Slabs per side of one connection (proc.h): the ones this side owns and
 * fills, and its mappings of the other side's, by number. */
#define WIRE_SLABS 4

typedef struct wire_slabs {
    struct gf_slab *own[WIRE_SLABS];
    struct gf_slab *peer[WIRE_SLABS];
} wire_slabs;

/* Drop every slab of the table (views of them keep their mappings): the
 * connection is over, or its peer died holding some. */
void wire_slabs_reset(wire_slabs *t);

/* A received record.  `body` points into the ring (inline) or into
 * body_map; bufs are the out-of-band buffers, read-write: whoever takes
 * one over sets its addr to NULL (gf_shared_buffer_new does). */
typedef struct wire_msg {
    msg_head head;
    const char *body;
    void *body_map;
    size_t body_map_len;
    remote_buffer bufs[GF_FDS_MAX];
    int nbufs;
} wire_msg;

/* Send h with payload p1 then p2 (either may be empty) and nbufs buffers
 * (only their addr and len are read), waking the receiver if `wake` (else
 * it finds the record when it next looks: gf_chan_commit_quiet).  The payload goes inline when it
 * fits a record, else in a segment.  A buffer in a slab both sides map
 * goes as a reference; another goes into one of our slabs (`slabs`, which
 * may be NULL) if one is idle or can be made within the budget, else into
 * a segment of its own.  Waits for room with no time limit (the peer
 * closing the ring ends the wait with GF_EPIPE).  Fills in h's body_len,
 * nfds, inline_len, nbufs and MSG_BODY_IN_SHM.  0 or a GF_E* code. */
int wire_send(gf_chan *c, int dir, int sock, wire_slabs *slabs, msg_head *h,
              const void *p1, size_t n1, const void *p2, size_t n2,
              const remote_buffer *bufs, int nbufs, int64_t spin_ns,
              bool wake);

/* The next record of ring dir, its descriptors taken and mapped and its
 * buffers resolved (against `slabs`; NULL: a slab buffer is corrupt).  0
 * (then call wire_done), or GF_EPIPE / GF_ETIMEDOUT / GF_EINTR / GF_EAGAIN
 * from the wait, or GF_ECORRUPT / GF_ESYS (the record was consumed). */
int wire_recv(gf_chan *c, int dir, int sock, wire_slabs *slabs,
              int64_t spin_ns, int64_t timeout_ns, wire_msg *m);

/* Give the record's room back; unmap the body and the buffers not taken. */
void wire_done(gf_chan *c, int dir, wire_msg *m);

void wire_free_buffers(remote_buffer *bufs, int n);

#endif /* GF_CORE_PROC_WIRE_H */
