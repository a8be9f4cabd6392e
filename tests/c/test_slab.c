/* test_slab.c - shared segments kept mapped and refilled (gf_slab.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gf_error.h"
#include "gf_shm.h"
#include "gf_slab.h"
#include "test.h"

TEST(slab_owner_and_peer_share_the_data)
{
    gf_slab *own, *peer;
    size_t cap = (2u << 20) + 100;
    ASSERT_OK(gf_slab_create(cap, &own));
    ASSERT_GE(gf_slab_cap(own), cap);
    ASSERT_EQ((uintptr_t)gf_slab_data(own) % 4096, 0);  /* page-aligned */
    ASSERT(gf_slab_idle(own));
    ASSERT_OK(gf_slab_map(gf_slab_fd(own), &peer));
    ASSERT_EQ(gf_slab_fd(peer), -1);
    ASSERT_EQ(gf_slab_cap(peer), gf_slab_cap(own));

    memset(gf_slab_data(own), 0x5a, cap);
    gf_slab_hold(own);                       /* the owner fills and sends */
    ASSERT(!gf_slab_idle(peer));             /* one word, seen by both */
    ASSERT_EQ(((unsigned char *)gf_slab_data(peer))[cap - 1], 0x5a);
    gf_slab_hold(peer);                      /* an in-place reply */
    gf_slab_release(peer);                   /* the reader's view is gone */
    ASSERT(!gf_slab_idle(own));
    gf_slab_release(own);                    /* and the reply's */
    ASSERT(gf_slab_idle(own));
    gf_slab_unref(peer);
    gf_slab_unref(own);
}

TEST(slab_contains_is_exact_at_the_edges)
{
    gf_slab *s;
    ASSERT_OK(gf_slab_create(8192, &s));
    char *d = gf_slab_data(s);
    size_t cap = gf_slab_cap(s);
    ASSERT(gf_slab_contains(s, d, cap));
    ASSERT(gf_slab_contains(s, d + cap, 0));
    ASSERT(gf_slab_contains(s, d + 10, cap - 10));
    ASSERT(!gf_slab_contains(s, d + 10, cap - 9));
    ASSERT(!gf_slab_contains(s, d - 1, 1));
    ASSERT(!gf_slab_contains(s, d + cap + 1, 0));
    ASSERT(!gf_slab_contains(s, d + 1, SIZE_MAX));
    gf_slab_unref(s);
}

TEST(slab_map_refuses_what_is_not_a_sealed_slab)
{
    int fd;
    ASSERT_OK(gf_shm_create(1u << 16, "gf-test-not-a-slab", &fd));
    gf_slab *s = NULL;
    ASSERT_RC(gf_slab_map(fd, &s), GF_ECORRUPT);  /* unsealed */
    ASSERT_OK(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW));
    ASSERT_RC(gf_slab_map(fd, &s), GF_ECORRUPT);  /* sealed, no magic */
    close(fd);
    int pipefd[2];
    ASSERT_OK(pipe(pipefd));
    ASSERT_RC(gf_slab_map(pipefd[0], &s), GF_ECORRUPT);  /* not a memfd */
    close(pipefd[0]);
    close(pipefd[1]);
    ASSERT_RC(gf_slab_create(SIZE_MAX - 10, &s), GF_EINVAL);
}

TEST(slab_take_fd_hands_the_descriptor_over)
{
    gf_slab *s, *peer;
    ASSERT_OK(gf_slab_create(4096, &s));
    int fd = gf_slab_take_fd(s);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(gf_slab_fd(s), -1);
    ASSERT_EQ(gf_slab_take_fd(s), -1);      /* once only */
    ASSERT_OK(gf_slab_map(fd, &peer));
    close(fd);
    ((char *)gf_slab_data(s))[7] = 42;
    ASSERT_EQ(((char *)gf_slab_data(peer))[7], 42);
    gf_slab_unref(s);       /* closes nothing: the descriptor was taken */
    ASSERT_EQ(((char *)gf_slab_data(peer))[7], 42);
    gf_slab_unref(peer);
}

TEST(slab_mapping_outlives_the_table_while_a_view_holds_it)
{
    gf_slab *s;
    ASSERT_OK(gf_slab_create(4096, &s));
    int fd = gf_slab_fd(s);
    gf_slab_ref(s);                  /* a view */
    gf_slab_unref(s);                /* the table lets go */
    memset(gf_slab_data(s), 1, 4096);  /* still mapped (ASan would see) */
    ASSERT(fcntl(fd, F_GETFD) >= 0);   /* and the descriptor still open */
    gf_slab_unref(s);                /* the view: unmapped, closed */
    ASSERT(fcntl(fd, F_GETFD) < 0 && errno == EBADF);
}

/* Two processes: the owner refills one slab only when it is idle; the
 * peer checks each fill is whole (never half old, half new) and releases.
 * A torn read would mean the owner wrote under a hold. */
TEST(slab_refill_only_when_idle_across_processes)
{
    gf_slab *own;
    size_t cap = 1u << 16;
    ASSERT_OK(gf_slab_create(cap, &own));
    int rounds = (int)gf_test_scaled(2000);
    _Atomic uint32_t *turn = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT(turn != MAP_FAILED);
    atomic_init(turn, 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        gf_slab *peer;
        if (gf_slab_map(gf_slab_fd(own), &peer) != 0)
            _exit(2);
        for (uint32_t r = 1; r <= (uint32_t)rounds; r++) {
            while (atomic_load_explicit(turn, memory_order_acquire) < r)
                ;
            const unsigned char *d = gf_slab_data(peer);
            for (size_t i = 0; i < cap; i += 512)
                if (d[i] != (unsigned char)r)
                    _exit(3);
            gf_slab_release(peer);
        }
        _exit(0);
    }
    for (uint32_t r = 1; r <= (uint32_t)rounds; r++) {
        while (!gf_slab_idle(own))
            ;
        memset(gf_slab_data(own), (int)(unsigned char)r, cap);
        gf_slab_hold(own);
        atomic_store_explicit(turn, r, memory_order_release);
    }
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT(gf_slab_idle(own));
    munmap((void *)turn, 4096);
    gf_slab_unref(own);
}

/* Views die in any thread: references and holds from many threads at once
 * (ThreadSanitizer checks the orderings). */
static gf_slab *shared_slab;

static void *hold_and_release(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++) {
        gf_slab_ref(shared_slab);
        gf_slab_hold(shared_slab);
        ((volatile char *)gf_slab_data(shared_slab))[i % 4096];
        gf_slab_release(shared_slab);
        gf_slab_unref(shared_slab);
    }
    return NULL;
}

TEST(slab_refs_and_holds_from_many_threads)
{
    ASSERT_OK(gf_slab_create(4096, &shared_slab));
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        ASSERT_OK(pthread_create(&t[i], NULL, hold_and_release, NULL));
    for (int i = 0; i < 4; i++)
        ASSERT_OK(pthread_join(t[i], NULL));
    ASSERT(gf_slab_idle(shared_slab));
    gf_slab_unref(shared_slab);
}

TEST(slab_copy_big_copies_exactly)
{
    size_t n = (1u << 20) + 13;
    unsigned char *a = malloc(n + 2), *b = malloc(n + 2);
    ASSERT(a && b);
    for (size_t i = 0; i < n + 2; i++)
        a[i] = (unsigned char)(i * 31), b[i] = 0xee;
    gf_copy_big(b + 1, a + 1, n);
    ASSERT_EQ(b[0], 0xee);
    ASSERT_EQ(b[n + 1], 0xee);
    ASSERT(memcmp(a + 1, b + 1, n) == 0);
    free(a);
    free(b);
}
