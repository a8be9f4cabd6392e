/* test_shm.c - memfd segments and descriptor passing (gf_shm.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gf_shm.h"
#include "test.h"

#define MS (INT64_C(1000000))
#define SLACK_S 1.0   /* see test_park.c */

/* Byte i of test segment `tag`: distinct per segment and per offset. */
static uint8_t pattern(int tag, size_t i)
{
    return (uint8_t)(tag * 29 + i * 7 + (i >> 9));
}

static void *patterned(int tag, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    ASSERT(p != NULL);
    for (size_t i = 0; i < len; i++)
        p[i] = pattern(tag, i);
    return p;
}

/* Does fd hold exactly `len` bytes of pattern `tag`?  (Used in children
 * too, so it answers rather than asserts.) */
static bool holds_pattern(int fd, int tag, size_t len)
{
    size_t size;
    void *addr;
    if (gf_shm_size(fd, &size) != 0 || size != len
        || gf_shm_map(fd, size, false, true, &addr) != 0 || addr == NULL)
        return false;
    const uint8_t *p = addr;
    bool ok = true;
    for (size_t i = 0; i < len && ok; i++)
        ok = p[i] == pattern(tag, i);
    gf_shm_unmap(addr, size);
    return ok;
}

static bool is_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    return flags >= 0 && (flags & FD_CLOEXEC) != 0;
}

/* Open descriptors in this process (the directory's own included, which
 * is the same for every call). */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ASSERT(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void seqpacket_pair(int sv[2])
{
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

TEST(shm_create_map_size)
{
    enum { SIZE = 10000 };
    int fd;
    ASSERT_OK(gf_shm_create(SIZE, "gf-test-shm", &fd));
    ASSERT(is_cloexec(fd));
    char link[64], target[256];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    ASSERT(n > 0);
    target[n] = '\0';
    ASSERT(strstr(target, "memfd:gf-test-shm") != NULL);

    size_t size = 0;
    ASSERT_OK(gf_shm_size(fd, &size));
    ASSERT_EQ(size, SIZE);
    uint8_t *w, *r;
    ASSERT_OK(gf_shm_map(fd, size, true, false, (void **)&w));
    ASSERT_OK(gf_shm_map(fd, size, false, true, (void **)&r));
    ASSERT(w != r);
    for (size_t i = 0; i < SIZE; i++)
        ASSERT_EQ(r[i], 0);                    /* zero-filled */
    for (size_t i = 0; i < SIZE; i++)
        w[i] = pattern(1, i);
    for (size_t i = 0; i < SIZE; i++)          /* one segment, two views */
        ASSERT_EQ(r[i], pattern(1, i));
    gf_shm_unmap(w, size);
    gf_shm_unmap(r, size);
    ASSERT(holds_pattern(fd, 1, SIZE));
    close(fd);

    /* Empty: a usable non-NULL address, and nothing to unmap. */
    ASSERT_OK(gf_shm_create(0, NULL, &fd));
    ASSERT_OK(gf_shm_size(fd, &size));
    ASSERT_EQ(size, 0);
    void *addr = NULL;
    ASSERT_OK(gf_shm_map(fd, 0, true, true, &addr));
    ASSERT(addr != NULL);
    gf_shm_unmap(addr, 0);
    close(fd);

    /* System call failures say GF_ESYS and leave errno. */
    ASSERT_RC(gf_shm_size(-1, &size), GF_ESYS);
    ASSERT_EQ(errno, EBADF);
    ASSERT_RC(gf_shm_map(-1, 4096, false, false, &addr), GF_ESYS);
    ASSERT_EQ(errno, EBADF);
    char long_name[300];
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    ASSERT_RC(gf_shm_create(16, long_name, &fd), GF_ESYS);
    ASSERT_EQ(errno, EINVAL);
}

TEST(shm_from_bytes_across_fork)
{
    /* Megabytes, and not a multiple of the page size, so the last page is
     * partly written. */
    size_t len = (3u << 20) + 123;
    void *data = patterned(2, len);
    int fd;
    ASSERT_OK(gf_shm_from_bytes(data, len, "gf-test-bytes", &fd));
    free(data);
    ASSERT(is_cloexec(fd));
    size_t size;
    ASSERT_OK(gf_shm_size(fd, &size));
    ASSERT_EQ(size, len);

    /* The child maps the inherited descriptor at its own address. */
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0)
        _exit(holds_pattern(fd, 2, len) ? 0 : 1);
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    close(fd);

    ASSERT_OK(gf_shm_from_bytes(NULL, 0, "gf-test-empty", &fd));
    ASSERT_OK(gf_shm_size(fd, &size));
    ASSERT_EQ(size, 0);
    close(fd);
}

/* The child makes three segments, sends them with one message, closes its
 * own descriptors and exits; the parent receives and reads them. */
static const size_t passed_len[3] = {5, 70000, 1u << 20};

static int send_three(int sock)
{
    int fds[3];
    for (int i = 0; i < 3; i++) {
        void *data = patterned(10 + i, passed_len[i]);
        int rc = gf_shm_from_bytes(data, passed_len[i], "gf-test-pass",
                                   &fds[i]);
        free(data);
        if (rc != 0)
            return 1;
    }
    if (gf_fd_send(sock, "three", 5, fds, 3) != 0)
        return 2;
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    return 0;
}

TEST(shm_fd_passing_cloexec)
{
    int sv[2];
    seqpacket_pair(sv);
    int before = count_fds();
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        close(sv[1]);
        _exit(send_three(sv[0]));
    }
    char msg[4096];
    size_t len = 0;
    int fds[8], nfds = -1;
    ASSERT_OK(gf_fd_recv(sv[1], msg, sizeof(msg), &len, fds, 8, &nfds,
                         10000 * MS));
    ASSERT_EQ(len, 5);
    ASSERT(memcmp(msg, "three", 5) == 0);
    ASSERT_EQ(nfds, 3);
    ASSERT_EQ(count_fds(), before + 3);
    for (int i = 0; i < 3; i++) {
        ASSERT(is_cloexec(fds[i]));
        ASSERT(holds_pattern(fds[i], 10 + i, passed_len[i]));
        close(fds[i]);
    }
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);

    /* The child is gone and its end with it: end of file. */
    close(sv[0]);
    ASSERT_RC(gf_fd_recv(sv[1], msg, sizeof(msg), &len, fds, 8, &nfds, -1),
              GF_EPIPE);
    close(sv[1]);
}

TEST(shm_fd_passing_limits)
{
    int sv[2];
    seqpacket_pair(sv);
    char msg[4097] = {0};
    int seg, fds[GF_FDS_MAX + 1];
    ASSERT_OK(gf_shm_create(4096, "gf-test-many", &seg));
    for (int i = 0; i <= GF_FDS_MAX; i++)
        fds[i] = seg;
    ASSERT_RC(gf_fd_send(sv[0], msg, 0, NULL, 0), GF_EINVAL);
    ASSERT_RC(gf_fd_send(sv[0], msg, 4097, NULL, 0), GF_EINVAL);
    ASSERT_RC(gf_fd_send(sv[0], NULL, 1, NULL, 0), GF_EINVAL);
    ASSERT_RC(gf_fd_send(sv[0], msg, 1, fds, -1), GF_EINVAL);
    ASSERT_RC(gf_fd_send(sv[0], msg, 1, fds, GF_FDS_MAX + 1), GF_EINVAL);
    ASSERT_RC(gf_fd_send(sv[0], msg, 1, NULL, 1), GF_EINVAL);

    /* The limits themselves pass: 4096 bytes and GF_FDS_MAX descriptors
     * (the same one many times over: each arrives as its own). */
    int before = count_fds();
    memset(msg, 'm', 4096);
    ASSERT_OK(gf_fd_send(sv[0], msg, 4096, fds, GF_FDS_MAX));
    char got[4096];
    size_t len;
    int rfds[GF_FDS_MAX], nfds;
    ASSERT_OK(gf_fd_recv(sv[1], got, sizeof(got), &len, rfds, GF_FDS_MAX,
                         &nfds, 1000 * MS));
    ASSERT_EQ(len, 4096);
    ASSERT(memcmp(got, msg, 4096) == 0);
    ASSERT_EQ(nfds, GF_FDS_MAX);
    ASSERT_EQ(count_fds(), before + GF_FDS_MAX);
    for (int i = 0; i < nfds; i++) {
        ASSERT(is_cloexec(rfds[i]));
        ASSERT_NE(rfds[i], seg);
        close(rfds[i]);
    }
    ASSERT_EQ(count_fds(), before);

    /* A message without descriptors. */
    ASSERT_OK(gf_fd_send(sv[0], "x", 1, NULL, 0));
    ASSERT_OK(gf_fd_recv(sv[1], got, sizeof(got), &len, rfds, GF_FDS_MAX,
                         &nfds, 0));
    ASSERT_EQ(len, 1);
    ASSERT_EQ(nfds, 0);
    close(seg);
    close(sv[0]);
    close(sv[1]);
}

TEST(shm_recv_times_out)
{
    int sv[2];
    seqpacket_pair(sv);
    char msg[16];
    size_t len = 99;
    int fds[1], nfds = 99;
    ASSERT_RC(gf_fd_recv(sv[1], msg, sizeof(msg), &len, fds, 1, &nfds, 0),
              GF_ETIMEDOUT);
    double t0 = gf_test_now();
    ASSERT_RC(gf_fd_recv(sv[1], msg, sizeof(msg), &len, fds, 1, &nfds,
                         20 * MS), GF_ETIMEDOUT);
    double took = gf_test_now() - t0;
    ASSERT(took >= 0.020 && took < 0.020 + SLACK_S);
    ASSERT_EQ(len, 99);                    /* untouched on failure */
    ASSERT_EQ(nfds, 99);
    close(sv[0]);
    close(sv[1]);
}

TEST(shm_peer_closed_returns_epipe)
{
    int sv[2];
    seqpacket_pair(sv);
    char msg[16];
    size_t len;
    int fds[1], nfds;
    /* What was sent before the close is still delivered, then EOF. */
    ASSERT_OK(gf_fd_send(sv[0], "last", 4, NULL, 0));
    close(sv[0]);
    ASSERT_OK(gf_fd_recv(sv[1], msg, sizeof(msg), &len, fds, 1, &nfds, -1));
    ASSERT_EQ(len, 4);
    ASSERT_RC(gf_fd_recv(sv[1], msg, sizeof(msg), &len, fds, 1, &nfds, -1),
              GF_EPIPE);
    ASSERT_RC(gf_fd_recv(sv[1], msg, sizeof(msg), &len, fds, 1, &nfds, 0),
              GF_EPIPE);
    /* Sending to a closed peer: GF_EPIPE, and no SIGPIPE kills us. */
    ASSERT_RC(gf_fd_send(sv[1], "x", 1, NULL, 0), GF_EPIPE);
    close(sv[1]);
}

/* Send nsent copies of a descriptor, receive with room for max_fds and
 * cap message bytes: GF_ECORRUPT, and every descriptor that arrived is
 * closed again. */
static void expect_cut(int nsent, int max_fds, size_t cap)
{
    int sv[2];
    seqpacket_pair(sv);
    int seg;
    ASSERT_OK(gf_shm_create(4096, "gf-test-cut", &seg));
    int sent[8];
    ASSERT(nsent <= 8);
    for (int i = 0; i < nsent; i++)
        sent[i] = seg;
    int before = count_fds();
    ASSERT_OK(gf_fd_send(sv[0], "hello", 5, sent, nsent));
    char msg[16];
    size_t len = 99;
    int fds[8] = {-1, -1, -1, -1, -1, -1, -1, -1}, nfds = 99;
    ASSERT_RC(gf_fd_recv(sv[1], msg, cap, &len, fds, max_fds, &nfds,
                         1000 * MS), GF_ECORRUPT);
    ASSERT_EQ(count_fds(), before);
    ASSERT_EQ(len, 99);
    ASSERT_EQ(nfds, 99);
    /* The socket still works: the next message is whole. */
    ASSERT_OK(gf_fd_send(sv[0], "next", 4, NULL, 0));
    ASSERT_OK(gf_fd_recv(sv[1], msg, sizeof(msg), &len, fds, max_fds, &nfds,
                         1000 * MS));
    ASSERT_EQ(len, 4);
    ASSERT_EQ(nfds, 0);
    close(seg);
    close(sv[0]);
    close(sv[1]);
}

TEST(shm_recv_too_many_fds_leaks_none)
{
    expect_cut(5, 2, 16);    /* two arrive, three are dropped */
    expect_cut(1, 0, 16);    /* no room at all */
    expect_cut(2, 1, 16);    /* odd max: CMSG_SPACE's padding holds two */
    expect_cut(3, 3, 2);     /* all descriptors fit, the message does not */
}

static void on_signal(int sig)
{
    (void)sig;
}

struct kicker {
    pthread_t target;
};

static void *kick_later(void *arg)
{
    struct kicker *k = arg;
    gf_test_sleep_ms(50);
    pthread_kill(k->target, SIGUSR1);
    return NULL;
}

TEST(shm_recv_signal_returns_eintr)
{
    /* A handler without SA_RESTART; poll is never restarted anyway. */
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
    int sv[2];
    seqpacket_pair(sv);
    struct kicker k = {pthread_self()};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, kick_later, &k), 0);
    char msg[16];
    size_t len;
    int fds[1], nfds;
    double t0 = gf_test_now();
    ASSERT_RC(gf_fd_recv(sv[1], msg, sizeof(msg), &len, fds, 1, &nfds,
                         10000 * MS), GF_EINTR);
    ASSERT(gf_test_now() - t0 < SLACK_S + 1.0);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_EQ(sigaction(SIGUSR1, &old, NULL), 0);
    close(sv[0]);
    close(sv[1]);
}

TEST(shm_sealed_size_cannot_change)
{
    int fd;
    size_t size = 0;
    ASSERT_OK(gf_shm_create_sealed(3 * 4096, "gf-test-sealed", &fd));
    ASSERT(is_cloexec(fd));
    ASSERT_OK(gf_shm_sealed_size(fd, &size));
    ASSERT_EQ(size, 3 * 4096);
    ASSERT(ftruncate(fd, 4096) != 0 && errno == EPERM);       /* shrink */
    ASSERT(ftruncate(fd, 8 * 4096) != 0 && errno == EPERM);   /* grow */
    close(fd);
    /* A plain segment's size may still change; a pipe is no segment. */
    ASSERT_OK(gf_shm_create(4096, NULL, &fd));
    ASSERT_RC(gf_shm_sealed_size(fd, &size), GF_ECORRUPT);
    close(fd);
    int pipefd[2];
    ASSERT_OK(pipe(pipefd));
    ASSERT_RC(gf_shm_sealed_size(pipefd[0], &size), GF_ECORRUPT);
    close(pipefd[0]);
    close(pipefd[1]);
    ASSERT_RC(gf_shm_sealed_size(-1, &size), GF_ESYS);
}
