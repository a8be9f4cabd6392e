/* gf_chan.h - a two-way channel between two processes in one shared-memory
 * segment: two single-producer single-consumer rings of variable-length
 * byte records, and a small control block.
 *
 * The process backend gives each worker process one channel: the parent
 * writes calls into ring GF_CHAN_DOWN and reads outcomes from GF_CHAN_UP;
 * the worker does the reverse.  Exactly one thread produces into a ring and
 * exactly one consumes from it at a time (the callers guarantee it), so a
 * ring needs no CAS: a producer position (`tail`) written only by the
 * producer and a consumer position (`head`) written only by the consumer,
 * both 64-bit byte counts that never wrap in practice.
 *
 * Records are contiguous in the ring, so a consumer reads one in place
 * (no copy out): [u32 length][u32 unused][payload, padded to 8 bytes].  A
 * record that would straddle the end of the ring is preceded by a pad
 * marker (length GF_CHAN_PAD) that sends the consumer back to offset 0;
 * hence a record, header included, takes at most half the ring
 * (gf_chan_max_record: half the ring less the 8-byte header).  Bigger
 * payloads are the caller's business (the extension puts them in a
 * gf_shm segment and sends its descriptor).
 *
 * Memory order: the producer writes the record, then stores tail with
 * release; the consumer loads tail with acquire before reading the record,
 * and stores head with release after it is done with the bytes; the
 * producer loads head with acquire before overwriting them.  Sleeping uses
 * one process-shared gf_event per ring for both directions of waiting (a
 * consumer waiting for data, a producer waiting for room): whoever moves a
 * position notifies it, which costs a fence and one load when nobody
 * sleeps (gf_event_notify).
 *
 * Closing: either side - or a third process that holds the mapping, such as
 * the one that reaped a dead worker - may close a ring.  A consumer then
 * gets the records already in it, then GF_EPIPE; a producer gets GF_EPIPE
 * at once.  Closing wakes every sleeper on that ring.
 *
 * Poking (gf_chan_poke) ends a wait without changing the ring: the waiting
 * reserve or peek returns GF_EINTR, and its caller re-checks whatever it
 * waits for besides the ring (gf_chan_ctl words) and calls again.  A poke
 * that finds a side not waiting is kept for that side's next call that
 * would wait, so a poke between the caller's check and its wait is not
 * lost; the price is at most one early GF_EINTR.
 *
 * The segment holds no pointers, only offsets, so each process maps it at
 * its own address.  It starts with a magic/version word that gf_chan_map
 * checks.  The segment is a memfd (close-on-exec, no name in /dev/shm):
 * nothing to unlink, and the kernel frees it when the last mapping and the
 * last descriptor are gone - even if every process using it crashed.
 */
#ifndef GF_CHAN_H
#define GF_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gf_atomic.h"

#define GF_CHAN_MAGIC 0x67664348u /* "gfCH" */
#define GF_CHAN_VERSION 1u
#define GF_CHAN_PAD 0xffffffffu

enum gf_chan_dir { GF_CHAN_DOWN = 0, GF_CHAN_UP = 1 };

/* Words the two sides share beside the rings; the channel itself never
 * reads them.  The process backend's use:
 *   pid          the worker's pid, stored by the worker once it runs
 *   running      sequence number of the call the worker is running (0: none)
 *   started_ns   gf_now_ns() when it started it (CLOCK_MONOTONIC is the
 *                same clock in every process)
 *   exit_status  the raw wait status, stored by whoever reaped the worker,
 *                before it closes both rings
 *   exited       1 once exit_status is valid
 *   ticket       the last call number claimed, by the worker to run it or
 *                by the parent to take it back (one CAS decides)
 *   sent         the last call number the parent has sent */
typedef struct gf_chan_ctl {
    _Atomic uint32_t pid;
    _Atomic uint32_t exited;
    _Atomic int32_t exit_status;
    _Atomic uint64_t running;
    _Atomic int64_t started_ns;
    _Atomic uint64_t ticket;
    _Atomic uint64_t sent;
} gf_chan_ctl;

typedef struct gf_chan gf_chan;  /* one process's mapping of a channel */

/* Create a channel in a new memfd segment (named `name` for /proc/<pid>/fd
 * only, NULL for a default; close-on-exec; its size sealed) whose rings
 * hold ring_bytes each (rounded up to a power of two, at least 4096, at
 * most 4 GiB).  *fd_out receives the segment's descriptor (hand it to the
 * other process, then close it).  0, GF_EINVAL, GF_ENOMEM, or GF_ESYS
 * (errno says why). */
int gf_chan_create(size_t ring_bytes, const char *name, int *fd_out,
                   gf_chan **out);

/* Map a channel made by gf_chan_create from its descriptor (which may be
 * closed afterwards).  0, GF_ECORRUPT (not a channel - wrong magic, layout
 * or size, or a segment whose size is not sealed - or another version),
 * GF_ENOMEM, or GF_ESYS. */
int gf_chan_map(int fd, gf_chan **out);

/* Unmap this process's view; the segment lives while another holds it. */
void gf_chan_unmap(gf_chan *c);

gf_chan_ctl *gf_chan_control(gf_chan *c);

/* The largest payload one record may carry. */
size_t gf_chan_max_record(const gf_chan *c);

/* ---- producer side of ring `dir` ------------------------------------------
 * Waiting: spin for up to spin_ns (gf_spin_step), then park, for at most
 * timeout_ns in all (< 0: no limit; 0: do not wait).  GF_EINTR: a signal
 * handler ran or someone called gf_chan_poke; call again. */

/* Room for a record of len bytes: 0 with *buf pointing at them, GF_EINVAL
 * (len > gf_chan_max_record), GF_EPIPE (the ring is closed), GF_EAGAIN
 * (full and timeout_ns == 0), GF_ETIMEDOUT, or GF_EINTR. */
int gf_chan_reserve(gf_chan *c, int dir, size_t len, int64_t spin_ns,
                    int64_t timeout_ns, void **buf);
/* Publish the reserved record; wakes a parked consumer. */
void gf_chan_commit(gf_chan *c, int dir);
/* Publish it without waking the consumer: it sees the record the next time
 * it looks (or when a later commit wakes it).  For a producer that knows
 * more records follow soon and wants one wake for the lot; it must not
 * leave a consumer it needs asleep for good (the consumer's own timeouts,
 * or a later gf_chan_commit, end the wait). */
void gf_chan_commit_quiet(gf_chan *c, int dir);
/* reserve + copy + commit. */
int gf_chan_send(gf_chan *c, int dir, const void *data, size_t len,
                 int64_t spin_ns, int64_t timeout_ns);

/* ---- consumer side of ring `dir` ------------------------------------------ */

/* The next record, in place: 0 with *data and *len (valid until
 * gf_chan_release), GF_EPIPE (closed and empty), GF_EAGAIN (empty and
 * timeout_ns == 0), GF_ETIMEDOUT, GF_EINTR, or GF_ECORRUPT (the next
 * record's length does not fit the ring: someone scribbled on the segment;
 * the ring is unusable).  Peeking again before release returns the same
 * record. */
int gf_chan_peek(gf_chan *c, int dir, int64_t spin_ns, int64_t timeout_ns,
                 const void **data, size_t *len);
/* Done with the peeked record: its room goes back to the producer. */
void gf_chan_release(gf_chan *c, int dir);

/* ---- either side, or a third process -------------------------------------- */

/* Close ring dir and wake everyone waiting on it.  Idempotent. */
void gf_chan_close(gf_chan *c, int dir);
bool gf_chan_is_closed(const gf_chan *c, int dir);

/* Wake whoever waits on ring dir without changing it (their wait returns
 * GF_EINTR and they re-check their own conditions, such as gf_chan_ctl
 * words); a side not waiting gets the GF_EINTR from its next wait (see
 * the top of this file). */
void gf_chan_poke(gf_chan *c, int dir);

#endif /* GF_CHAN_H */
