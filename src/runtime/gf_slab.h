/* gf_slab.h - shared-memory segments that two processes keep mapped and
 * refill, for the big buffers that cross between them again and again.
 *
 * Why: a buffer sent in a fresh segment costs several times the copy
 * itself.  Every page of a new segment is allocated and zeroed when first
 * written (2-3 us per 4 KiB page on a typical VM: 50-75 ms for 100 MB,
 * against 7-12 ms for the copy), the reader takes a fault per page it
 * maps, and the last unmap frees it all again.  A slab pays that once:
 * after its first use a transfer is one copy into pages that both sides
 * have mapped.
 *
 * Ownership.  One process creates a slab (its owner) and is the only one
 * that fills it; the other (the peer) gets the descriptor once, maps the
 * slab and keeps the mapping.  Either side may hand a view of the data on
 * (the peer may send a view of the owner's slab back: an in-place reply).
 *
 * Holds.  A word in the slab's shared header counts holds.  The owner
 * takes one when it fills the slab for a message; whoever ends up with a
 * view of the data takes that hold over and releases it when the view is
 * gone; sending a view back takes another.  The owner refills a slab only
 * when it is idle (no holds), so nobody ever sees data change under a
 * view.  The release is a release store and the idle check an acquire
 * load: a reader's last access happens before the owner's next write.
 * A process that dies never releases its holds: its peer drops the slab
 * (and makes a new one) instead of waiting for it to be idle.
 *
 * References.  Independently of holds, each process counts its own users
 * of its mapping (a table, each view): the last gf_slab_unref unmaps it.
 * Both counts are atomic: views die in whichever thread drops them.
 *
 * The segment is a sealed memfd (its size cannot change, so no side can
 * make the other's mapping fault), its data page-aligned after one header
 * page.  No Python here.
 */
#ifndef GF_SLAB_H
#define GF_SLAB_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gf_slab gf_slab;

/* A new slab with room for `cap` bytes, mapped read-write; its descriptor
 * is kept until taken (gf_slab_take_fd) or the last unref.  0 with *out
 * (one reference, no holds), GF_EINVAL, GF_ENOMEM or GF_ESYS. */
int gf_slab_create(size_t cap, gf_slab **out);

/* Map a peer's slab from its descriptor (which stays the caller's to
 * close).  0 with *out (one reference), GF_ECORRUPT (not a sealed slab),
 * GF_ENOMEM or GF_ESYS. */
int gf_slab_map(int fd, gf_slab **out);

/* The owner's descriptor, to send to the peer; -1 on a mapped one (or
 * once taken). */
int gf_slab_fd(const gf_slab *s);
/* Take the descriptor over (the caller closes it); -1 if it was taken
 * before (or the slab is a peer's).  Once the peer has mapped the slab
 * nobody needs it, and an open one would outlive the connection for as
 * long as some view keeps the mapping. */
int gf_slab_take_fd(gf_slab *s);
void *gf_slab_data(const gf_slab *s);
size_t gf_slab_cap(const gf_slab *s);
/* Whether [p, p + len) lies in the slab's data. */
bool gf_slab_contains(const gf_slab *s, const void *p, size_t len);

/* Holds, shared by both processes. */
bool gf_slab_idle(gf_slab *s);
void gf_slab_hold(gf_slab *s);
void gf_slab_release(gf_slab *s);

/* This process's references to the mapping. */
void gf_slab_ref(gf_slab *s);
void gf_slab_unref(gf_slab *s);

/* Copy n bytes, for the big copies into slabs: `rep movsb` where the CPU
 * says it is fast (ERMS), which writes around the cache and is up to
 * 1.6x faster than memcpy for 100 MB; memcpy elsewhere. */
void gf_copy_big(void *dst, const void *src, size_t n);

#endif /* GF_SLAB_H */
