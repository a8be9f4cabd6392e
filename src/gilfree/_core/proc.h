/* proc.h - the processes backend's wire format, shared by the parent's
 * worker threads (proc.c) and the worker processes (proc_worker.c).
 *
 * Each worker process has one gf_chan with its parent's worker thread (its
 * "proxy") and one Unix socket beside it, which carries only descriptors
 * (SCM_RIGHTS): gf_shm segments for what does not fit in a channel record.
 * A record is a msg_head, `nbufs` buf_refs (the out-of-band pickle
 * buffers), then `inline_len` bytes of payload; when nfds > 0 the receiver
 * first takes that many descriptors off the socket, in order: the payload
 * itself if MSG_BODY_IN_SHM (then inline_len is 0), then one for each
 * buf_ref of kind BUF_SEGMENT or BUF_SLAB_NEW, in the refs' order.
 *
 * A buffer travels in a segment of its own, or in a slab (gf_slab.h): one
 * of a handful of segments per side that both processes keep mapped and
 * its owner refills, so that after the first time a big buffer costs one
 * copy, not a new segment's page faults.  A buffer that already lies in a
 * slab both sides map (the result is a view of the call's argument, or an
 * argument is a view of an earlier result) travels as a reference, with
 * no copy at all.
 *
 * Down (parent -> worker):
 *   MSG_INIT   payload: u32 name_len, name, u32 source_len, source, init;
 *              seq: how long the worker spins for the next call (ns)
 *   MSG_CALL   payload: fn pickle (fn_len bytes), then the call's pickle
 *   MSG_CHUNK  payload: the chunk's pickle
 *   MSG_EXIT   no payload: finish and exit 0
 * Up (worker -> parent):
 *   MSG_READY    the worker ran setup(); it takes calls now
 *   MSG_BROKEN   setup failed; payload: the reason (text); the worker exits
 *   MSG_RESULT   payload: the pickled outcome of call `seq`
 *   MSG_FAILED   the worker half itself failed on call `seq`; payload:
 *                the reason (text)
 * Calls are answered in order, one at a time.
 */
#ifndef GF_CORE_PROC_H
#define GF_CORE_PROC_H

#include <stdint.h>

enum msg_type {
    MSG_INIT = 1, MSG_CALL, MSG_CHUNK, MSG_EXIT,
    MSG_READY, MSG_BROKEN, MSG_RESULT, MSG_FAILED,
};

enum msg_flags {
    MSG_FN_CACHED = 1u,     /* MSG_CALL: fn pickled by reference, reusable */
    MSG_BODY_IN_SHM = 2u,   /* the payload is the first descriptor */
};

typedef struct msg_head {
    uint32_t type;
    uint32_t flags;
    uint64_t seq;
    uint64_t fn_len;        /* MSG_CALL */
    uint64_t body_len;      /* payload bytes, inline or in the segment */
    uint32_t nfds;
    uint32_t inline_len;
    uint32_t nbufs;         /* buf_refs after the head */
    uint32_t reserved;
} msg_head;

enum buf_kind {
    BUF_SEGMENT = 1,   /* a segment of its own: the next descriptor */
    BUF_SLAB_NEW,      /* the sender's slab `slab`, sent for the first time
                          (it replaces the receiver's mapping of that
                          number): the next descriptor */
    BUF_SLAB,          /* the sender's slab `slab`, mapped already */
    BUF_YOUR_SLAB,     /* the receiver's own slab `slab` */
};

/* Where one out-of-band buffer is: `len` bytes at `offset` of the slab's
 * data (offset 0 for a segment).  Whoever receives a slab buffer takes
 * over one hold on the slab (gf_slab.h), released when its view dies. */
typedef struct buf_ref {
    uint32_t kind;
    uint32_t slab;
    uint64_t offset;
    uint64_t len;
} buf_ref;

/* Rings of 1 MiB each: a pickle up to half of that travels inline. */
#define PROC_RING_BYTES (1u << 20)

/* proc_worker.c: the worker processes' and the zygote's module functions. */
struct _object;
int gf_proc_worker_register(struct _object *module);

#endif /* GF_CORE_PROC_H */
