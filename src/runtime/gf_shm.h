/* gf_shm.h - anonymous shared-memory segments and passing descriptors
 * between processes.
 *
 * A segment is a memfd: it has no name in /dev/shm, so there is nothing to
 * unlink and nothing to leak; the kernel frees it when the last descriptor
 * and the last mapping are gone, crashes included.  Only a process that is
 * handed the descriptor (over a Unix socket, SCM_RIGHTS) can map it.
 *
 * The process backend sends a large buffer (a pickle's out-of-band buffer,
 * or a message too big for a channel record) as one segment: the sender
 * writes the bytes once (gf_shm_from_bytes), passes the descriptor and
 * closes its own; the receiver maps it and reads the bytes in place.
 */
#ifndef GF_SHM_H
#define GF_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A new segment of `size` bytes (zero-filled), close-on-exec, named `name`
 * for /proc/<pid>/fd listings only (NULL for a default).  0 with *fd_out,
 * GF_EINVAL, or GF_ESYS (errno says why: EMFILE, ENOMEM, ...). */
int gf_shm_create(size_t size, const char *name, int *fd_out);

/* A new segment holding a copy of data[0..len) (written with pwrite, which
 * fills the pages as it allocates them: no zeroing pass, no page faults).
 * 0 with *fd_out, or GF_ESYS. */
int gf_shm_from_bytes(const void *data, size_t len, const char *name,
                      int *fd_out);

/* close() that keeps errno, for the clean-up on a failure path: the
 * caller reports the first failure, not the close after it. */
void gf_close_keep_errno(int fd);

/* The segment's size.  0 or GF_ESYS. */
int gf_shm_size(int fd, size_t *size);

/* A new segment (as gf_shm_create) whose size is then sealed for good
 * (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL): for segments that several
 * processes map at once, where one that shrank it would make every other
 * mapping fault (SIGBUS) on the lost pages.  0 with *fd_out, GF_EINVAL or
 * GF_ESYS. */
int gf_shm_create_sealed(size_t size, const char *name, int *fd_out);

/* The size of a segment whose size is sealed: GF_ECORRUPT if fd is not a
 * memfd or its size may still change (then it must not be mapped), GF_ESYS
 * (a bad descriptor). */
int gf_shm_sealed_size(int fd, size_t *size);

/* Map the whole segment shared, read-write or read-only; populate asks
 * the kernel to map every page now (MAP_POPULATE: one call instead of a
 * fault per page when all of it will be read).  A zero-size segment maps
 * to a non-NULL address that must not be dereferenced.  0 or GF_ESYS. */
int gf_shm_map(int fd, size_t size, bool writable, bool populate,
               void **addr_out);
void gf_shm_unmap(void *addr, size_t size);

/* ---- descriptors over a Unix socket -------------------------------------
 * Use a SOCK_SEQPACKET socket (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv)):
 * it keeps message boundaries, so one gf_fd_recv gets exactly one
 * gf_fd_send's message.  On a stream socket, messages sent back to back
 * may arrive merged or split. */

#define GF_FDS_MAX 64  /* descriptors per message */

/* Send one message of len bytes (1..4096) with nfds descriptors attached
 * (0..GF_FDS_MAX), retrying on EINTR.  0, GF_EINVAL, GF_EPIPE (the peer
 * is gone), or GF_ESYS. */
int gf_fd_send(int sock, const void *msg, size_t len, const int *fds,
               int nfds);

/* Receive one message into msg[0..cap) and up to max_fds descriptors
 * (made close-on-exec; max_fds is capped at GF_FDS_MAX), waiting at most
 * timeout_ns (< 0: no limit).
 * 0 with *len and *nfds, GF_EPIPE (end of file: the peer closed), GF_EINTR
 * (a signal handler ran; call again), GF_ETIMEDOUT, GF_ECORRUPT (the
 * message or its descriptors were cut short: any that arrived are
 * closed), or GF_ESYS. */
int gf_fd_recv(int sock, void *msg, size_t cap, size_t *len, int *fds,
               int max_fds, int *nfds, int64_t timeout_ns);

#endif /* GF_SHM_H */
