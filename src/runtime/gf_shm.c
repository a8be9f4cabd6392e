/* gf_shm.c - memfd segments and SCM_RIGHTS descriptor passing (see
 * gf_shm.h).
 *
 * Every failing system call leaves errno as the kernel set it and the
 * function returns GF_ESYS; cleanup on those paths saves and restores
 * errno, so the caller reads the first failure, not a close() after it. */
#include "gf_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gf_atomic.h"
#include "gf_error.h"

#define GF_SHM_DEFAULT_NAME "gilfree-shm"

/* Largest message gf_fd_send takes (gf_shm.h): one page, far below any
 * socket buffer, so a SOCK_SEQPACKET send never fails for size. */
#define GF_FD_MSG_MAX 4096

/* What a zero-size segment maps to: mmap refuses length 0, and callers
 * want a non-NULL address for an empty buffer.  Never dereferenced. */
static const char empty_mapping;

void gf_close_keep_errno(int fd)
{
    int saved = errno;
    close(fd);
    errno = saved;
}

static int open_memfd(const char *name, int *fd_out)
{
    if (name == NULL)
        name = GF_SHM_DEFAULT_NAME;
    /* MFD_ALLOW_SEALING seals nothing by itself; it lets an owner fix the
     * size once the segment is laid out (gf_chan does, F_SEAL_SHRINK), so
     * that no peer can shrink it under another's mapping, which would then
     * fault with SIGBUS. */
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return GF_ESYS;
    *fd_out = fd;
    return 0;
}

int gf_shm_create(size_t size, const char *name, int *fd_out)
{
    if (size > (size_t)INT64_MAX)    /* off_t is 64-bit under _GNU_SOURCE */
        return GF_EINVAL;
    int fd, rc = open_memfd(name, &fd);
    if (rc != 0)
        return rc;
    /* ftruncate only sets the size: tmpfs allocates (zeroed) pages on
     * first touch, so an untouched segment costs nothing. */
    if (ftruncate(fd, (off_t)size) != 0) {
        gf_close_keep_errno(fd);
        return GF_ESYS;
    }
    *fd_out = fd;
    return 0;
}

int gf_shm_create_sealed(size_t size, const char *name, int *fd_out)
{
    int fd, rc = gf_shm_create(size, name, &fd);
    if (rc != 0)
        return rc;
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
        != 0) {
        gf_close_keep_errno(fd);
        return GF_ESYS;
    }
    *fd_out = fd;
    return 0;
}

int gf_shm_sealed_size(int fd, size_t *size)
{
    /* F_GET_SEALS fails with EINVAL on anything but a memfd. */
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        return errno == EBADF ? GF_ESYS : GF_ECORRUPT;
    if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW))
        != (F_SEAL_SHRINK | F_SEAL_GROW))
        return GF_ECORRUPT;
    return gf_shm_size(fd, size);
}

int gf_shm_from_bytes(const void *data, size_t len, const char *name,
                      int *fd_out)
{
    int fd, rc = open_memfd(name, &fd);
    if (rc != 0)
        return rc;
    /* No ftruncate first: pwrite grows the file as it goes, and the
     * kernel caps one write at about 2 GiB, hence the loop. */
    const char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, p + done, len - done, (off_t)done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            gf_close_keep_errno(fd);
            return GF_ESYS;
        }
        done += (size_t)n;
    }
    *fd_out = fd;
    return 0;
}

int gf_shm_size(int fd, size_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return GF_ESYS;
    *size = (size_t)st.st_size;
    return 0;
}

int gf_shm_map(int fd, size_t size, bool writable, bool populate,
               void **addr_out)
{
    if (size == 0) {
        *addr_out = (void *)&empty_mapping;
        return 0;
    }
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
    void *addr = mmap(NULL, size, prot, flags, fd, 0);
    if (addr == MAP_FAILED)
        return GF_ESYS;
    *addr_out = addr;
    return 0;
}

void gf_shm_unmap(void *addr, size_t size)
{
    if (size != 0)
        munmap(addr, size);
}

/* ---- descriptors over a Unix socket ---------------------------------------
 * The control buffer is a union with struct cmsghdr so that it is aligned
 * as CMSG_FIRSTHDR expects. */

typedef union fd_control {
    char buf[CMSG_SPACE(sizeof(int) * GF_FDS_MAX)];
    struct cmsghdr align;
} fd_control;

int gf_fd_send(int sock, const void *msg, size_t len, const int *fds,
               int nfds)
{
    if (msg == NULL || len == 0 || len > GF_FD_MSG_MAX || nfds < 0
        || nfds > GF_FDS_MAX || (nfds > 0 && fds == NULL))
        return GF_EINVAL;
    fd_control ctl;
    struct iovec iov = {(void *)msg, len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&ctl, 0, sizeof(ctl));   /* CMSG_SPACE's padding included */
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
    }
    size_t sent = 0;
    while (sent < len) {
        /* MSG_NOSIGNAL: a vanished peer is an EPIPE return, not a SIGPIPE
         * that kills the process. */
        ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EPIPE || errno == ECONNRESET)
                return GF_EPIPE;
            return GF_ESYS;
        }
        /* A SOCK_SEQPACKET socket sends all or nothing; a stream socket
         * may stop short when its buffer fills or a signal lands.  The
         * descriptors went with the first part, so the rest goes without
         * them. */
        sent += (size_t)n;
        iov.iov_base = (char *)msg + sent;
        iov.iov_len = len - sent;
        mh.msg_control = NULL;
        mh.msg_controllen = 0;
    }
    return 0;
}

/* Wait until sock is readable or the deadline (< 0: none) passes.
 * 0, GF_ETIMEDOUT, GF_EINTR or GF_ESYS. */
static int wait_readable(int sock, int64_t deadline)
{
    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    struct timespec ts, *tsp = NULL;
    if (deadline >= 0) {
        int64_t left = deadline - gf_now_ns();
        if (left < 0)
            left = 0;
        ts.tv_sec = (time_t)(left / 1000000000);
        ts.tv_nsec = (long)(left % 1000000000);
        tsp = &ts;
    }
    /* ppoll rather than poll for its nanosecond timeout: poll's
     * milliseconds would need rounding up to never return early. */
    int r = ppoll(&pfd, 1, tsp, NULL);
    if (r < 0)
        return errno == EINTR ? GF_EINTR : GF_ESYS;
    /* POLLHUP/POLLERR also end the wait: recvmsg then reports EOF or the
     * error. */
    return r == 0 ? GF_ETIMEDOUT : 0;
}

/* Collect the SCM_RIGHTS descriptors of a received message into fds.
 * Returns how many there were; more than max is possible only from a
 * control block the kernel should not have built, and the caller closes
 * them all. */
static int take_fds(struct msghdr *mh, int *fds, int max)
{
    int n = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm != NULL;
         cm = CMSG_NXTHDR(mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (n < max)
                fds[n] = fd;
            else
                close(fd);
            n++;
        }
    }
    return n;
}

int gf_fd_recv(int sock, void *msg, size_t cap, size_t *len, int *fds,
               int max_fds, int *nfds, int64_t timeout_ns)
{
    if (max_fds < 0)
        max_fds = 0;
    if (max_fds > GF_FDS_MAX)
        max_fds = GF_FDS_MAX;
    int64_t deadline = timeout_ns < 0 ? -1 : gf_now_ns() + timeout_ns;
    fd_control ctl;
    ssize_t n;
    struct msghdr mh;
    for (;;) {
        int rc = wait_readable(sock, deadline);
        if (rc != 0)
            return rc;
        struct iovec iov = {msg, cap};
        mh = (struct msghdr){.msg_iov = &iov, .msg_iovlen = 1};
        if (max_fds > 0) {
            mh.msg_control = ctl.buf;
            /* CMSG_LEN, not CMSG_SPACE: the kernel fits as many
             * descriptors as the length allows, and CMSG_SPACE's padding
             * would make room for one more than max_fds when it is odd. */
            mh.msg_controllen = CMSG_LEN(sizeof(int) * (size_t)max_fds);
        }
        /* MSG_CMSG_CLOEXEC: the descriptors are close-on-exec from the
         * moment they exist, with no window for a fork + exec elsewhere in
         * the process to inherit them.  MSG_DONTWAIT: another reader may
         * have taken the message poll saw; then we poll again. */
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n >= 0)
            break;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            continue;
        if (errno == EINTR)
            return GF_EINTR;
        if (errno == ECONNRESET)
            return GF_EPIPE;
        return GF_ESYS;
    }
    int got = take_fds(&mh, fds, max_fds);
    /* MSG_CTRUNC: descriptors did not fit (the kernel closed those);
     * MSG_TRUNC: the message was longer than cap (the rest is gone).
     * Either way the message is not what was sent, so none of it is kept:
     * the descriptors that did arrive are closed. */
    bool cut = (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0 || got > max_fds;
    if (cut || n == 0) {
        for (int i = 0; i < got && i < max_fds; i++)
            close(fds[i]);
        /* n == 0 is end of file: gf_fd_send never sends an empty message. */
        return cut ? GF_ECORRUPT : GF_EPIPE;
    }
    *len = (size_t)n;
    *nfds = got;
    return 0;
}
