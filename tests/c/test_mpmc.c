/* test_mpmc.c - the bounded MPMC ring (gf_mpmc.h). */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gf_mpmc.h"
#include "test.h"

#define MS (INT64_C(1000000))
#define SLACK_S 1.0   /* see test_park.c */

static gf_mpmc *ring_new(uint64_t capacity)
{
    size_t size = gf_mpmc_size(capacity);
    ASSERT(size > 0);
    /* aligned_alloc wants a size that is a multiple of the alignment. */
    void *mem = aligned_alloc(GF_CACHELINE, (size + GF_CACHELINE - 1)
                                            & ~(size_t)(GF_CACHELINE - 1));
    ASSERT(mem != NULL);
    ASSERT_OK(gf_mpmc_init(mem, capacity, false));
    ASSERT_OK(gf_mpmc_validate(mem, size));
    return mem;
}

static size_t page_round(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) & ~(page - 1);
}

TEST(mpmc_size_rejects_bad_capacity)
{
    ASSERT_EQ(gf_mpmc_size(0), 0);
    ASSERT_EQ(gf_mpmc_size(1), 0);
    ASSERT_EQ(gf_mpmc_size(3), 0);
    ASSERT_EQ(gf_mpmc_size(1000), 0);
    ASSERT_EQ(gf_mpmc_size(UINT64_C(1) << 63), 0);
    ASSERT_EQ(gf_mpmc_size(2), offsetof(gf_mpmc, slots) + 2 * sizeof(gf_mpmc_slot));
    ASSERT_GT(gf_mpmc_size(1024), gf_mpmc_size(512));

    static _Alignas(64) unsigned char mem[8192];
    ASSERT_RC(gf_mpmc_init(mem, 3, false), GF_EINVAL);
    ASSERT_RC(gf_mpmc_init(mem + 8, 4, false), GF_EINVAL);   /* unaligned */
    ASSERT_RC(gf_mpmc_init(NULL, 4, false), GF_EINVAL);
    ASSERT_OK(gf_mpmc_init(mem, 4, false));
}

TEST(mpmc_fifo_single_thread)
{
    gf_mpmc *q = ring_new(8);
    uint64_t v;
    /* Several laps, so every slot's seq wraps more than once. */
    for (uint64_t lap = 0; lap < 5; lap++) {
        for (uint64_t i = 0; i < 8; i++) {
            ASSERT_OK(gf_mpmc_try_push(q, lap * 100 + i));
            ASSERT_EQ(gf_mpmc_count(q), i + 1);
        }
        for (uint64_t i = 0; i < 8; i++) {
            ASSERT_OK(gf_mpmc_pop(q, &v, -1));
            ASSERT_EQ(v, lap * 100 + i);
        }
        ASSERT_EQ(gf_mpmc_count(q), 0);
    }
    free(q);
}

TEST(mpmc_full_returns_again)
{
    gf_mpmc *q = ring_new(16);
    for (uint64_t i = 0; i < 16; i++)
        ASSERT_OK(gf_mpmc_try_push(q, i));
    ASSERT_RC(gf_mpmc_try_push(q, 99), GF_EAGAIN);
    ASSERT_RC(gf_mpmc_try_push(q, 99), GF_EAGAIN);   /* and again */
    ASSERT_RC(gf_mpmc_push(q, 99, 0), GF_ETIMEDOUT);
    double t0 = gf_test_now();
    ASSERT_RC(gf_mpmc_push(q, 99, 20 * MS), GF_ETIMEDOUT);
    double took = gf_test_now() - t0;
    ASSERT(took >= 0.020 && took < 0.020 + SLACK_S);
    ASSERT_EQ(gf_mpmc_count(q), 16);

    uint64_t v;
    ASSERT_OK(gf_mpmc_try_pop(q, &v));
    ASSERT_EQ(v, 0);
    ASSERT_OK(gf_mpmc_try_push(q, 16));
    ASSERT_RC(gf_mpmc_try_push(q, 17), GF_EAGAIN);
    for (uint64_t i = 1; i <= 16; i++) {
        ASSERT_OK(gf_mpmc_try_pop(q, &v));
        ASSERT_EQ(v, i);
    }
    free(q);
}

TEST(mpmc_empty_returns_again)
{
    gf_mpmc *q = ring_new(4);
    uint64_t v = 12345;
    ASSERT_RC(gf_mpmc_try_pop(q, &v), GF_EAGAIN);
    ASSERT_RC(gf_mpmc_pop(q, &v, 0), GF_ETIMEDOUT);
    double t0 = gf_test_now();
    ASSERT_RC(gf_mpmc_pop(q, &v, 20 * MS), GF_ETIMEDOUT);
    double took = gf_test_now() - t0;
    ASSERT(took >= 0.020 && took < 0.020 + SLACK_S);
    ASSERT_EQ(v, 12345);                  /* untouched on failure */
    ASSERT_OK(gf_mpmc_push(q, 7, 0));
    ASSERT_OK(gf_mpmc_try_pop(q, &v));
    ASSERT_EQ(v, 7);
    ASSERT_RC(gf_mpmc_try_pop(q, &v), GF_EAGAIN);
    /* The sleeper counts went back to zero. */
    ASSERT_EQ(atomic_load(&q->not_empty.waiters), 0);
    ASSERT_EQ(atomic_load(&q->not_full.waiters), 0);
    free(q);
}

TEST(mpmc_close_drains_then_shuts_down)
{
    gf_mpmc *q = ring_new(4);
    uint64_t v;
    ASSERT_OK(gf_mpmc_try_push(q, 1));
    ASSERT_OK(gf_mpmc_try_push(q, 2));
    gf_mpmc_close(q);
    ASSERT_EQ(atomic_load(&q->lifecycle), GF_MPMC_CLOSED);
    ASSERT_OK(gf_mpmc_validate(q, gf_mpmc_size(4)));
    ASSERT_RC(gf_mpmc_try_push(q, 3), GF_ESHUTDOWN);
    ASSERT_RC(gf_mpmc_push(q, 3, -1), GF_ESHUTDOWN);
    ASSERT_EQ(gf_mpmc_count(q), 2);
    ASSERT_OK(gf_mpmc_try_pop(q, &v));
    ASSERT_EQ(v, 1);
    ASSERT_OK(gf_mpmc_pop(q, &v, -1));
    ASSERT_EQ(v, 2);
    ASSERT_RC(gf_mpmc_try_pop(q, &v), GF_ESHUTDOWN);
    ASSERT_RC(gf_mpmc_pop(q, &v, -1), GF_ESHUTDOWN);
    ASSERT_EQ(gf_mpmc_count(q), 0);

    /* A full ring that is closed says SHUTDOWN to pushers, not AGAIN. */
    gf_mpmc *full = ring_new(2);
    ASSERT_OK(gf_mpmc_try_push(full, 1));
    ASSERT_OK(gf_mpmc_try_push(full, 2));
    gf_mpmc_close(full);
    ASSERT_RC(gf_mpmc_try_push(full, 3), GF_ESHUTDOWN);
    free(full);
    free(q);
}

struct blocked {
    gf_mpmc *q;
    _Atomic int rc;
};

static void *blocked_pop(void *arg)
{
    struct blocked *b = arg;
    uint64_t v;
    atomic_store(&b->rc, gf_mpmc_pop(b->q, &v, 10000 * MS));
    return NULL;
}

static void *blocked_push(void *arg)
{
    struct blocked *b = arg;
    atomic_store(&b->rc, gf_mpmc_push(b->q, 42, 10000 * MS));
    return NULL;
}

TEST(mpmc_close_wakes_blocked)
{
    enum { N = 3 };
    gf_mpmc *empty = ring_new(2), *full = ring_new(2);
    ASSERT_OK(gf_mpmc_try_push(full, 1));
    ASSERT_OK(gf_mpmc_try_push(full, 2));
    struct blocked pops[N], pushes[N];
    pthread_t tp[N], tq[N];
    for (int i = 0; i < N; i++) {
        pops[i] = (struct blocked){empty, 1};
        pushes[i] = (struct blocked){full, 1};
        ASSERT_EQ(pthread_create(&tp[i], NULL, blocked_pop, &pops[i]), 0);
        ASSERT_EQ(pthread_create(&tq[i], NULL, blocked_push, &pushes[i]), 0);
    }
    /* Let them fall asleep (not required: close must work either way). */
    double t0 = gf_test_now();
    while (atomic_load(&empty->not_empty.waiters) < N
           || atomic_load(&full->not_full.waiters) < N) {
        ASSERT(gf_test_now() - t0 < 5.0);
        gf_test_sleep_ms(1);
    }
    gf_mpmc_close(empty);
    gf_mpmc_close(full);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(pthread_join(tp[i], NULL), 0);
        ASSERT_EQ(pthread_join(tq[i], NULL), 0);
        ASSERT_RC(atomic_load(&pops[i].rc), GF_ESHUTDOWN);
        ASSERT_RC(atomic_load(&pushes[i].rc), GF_ESHUTDOWN);
    }
    ASSERT(gf_test_now() - t0 < SLACK_S + 1.0);   /* nobody sat out 10 s */
    free(empty);
    free(full);
}

TEST(mpmc_validate_detects_corruption)
{
    enum { CAP = 64 };
    size_t size = gf_mpmc_size(CAP);
    gf_mpmc *q = ring_new(CAP);
    ASSERT_OK(gf_mpmc_try_push(q, 1));
    ASSERT_OK(gf_mpmc_validate(q, size));
    ASSERT_OK(gf_mpmc_validate(q, size + 4096));   /* page-rounded mapping */
    ASSERT_RC(gf_mpmc_validate(NULL, size), GF_ECORRUPT);
    ASSERT_RC(gf_mpmc_validate(q, size - 1), GF_ECORRUPT);
    ASSERT_RC(gf_mpmc_validate(q, 8), GF_ECORRUPT);

    /* Scribble one field at a time; each must be caught, and the ring is
     * fine again once the field is restored. */
#define CORRUPT(field, bad)                                                   \
    do {                                                                      \
        __typeof__(q->field) saved_ = q->field;                               \
        q->field = (bad);                                                     \
        ASSERT_RC(gf_mpmc_validate(q, size), GF_ECORRUPT);                    \
        q->field = saved_;                                                    \
        ASSERT_OK(gf_mpmc_validate(q, size));                                 \
    } while (0)
    CORRUPT(magic, 0xdeadbeef);
    CORRUPT(version, GF_MPMC_VERSION + 1);
    CORRUPT(capacity, 63);                /* not a power of two */
    CORRUPT(capacity, 128);               /* bigger than the mapping */
    CORRUPT(capacity, 0);
    CORRUPT(mask, 31);                    /* disagrees with capacity */
#undef CORRUPT
    atomic_store(&q->lifecycle, 0);       /* never initialised */
    ASSERT_RC(gf_mpmc_validate(q, size), GF_ECORRUPT);
    atomic_store(&q->lifecycle, 99);
    ASSERT_RC(gf_mpmc_validate(q, size), GF_ECORRUPT);
    atomic_store(&q->lifecycle, GF_MPMC_LIVE);
    ASSERT_OK(gf_mpmc_validate(q, size));

    /* A bool that is neither 0 nor 1, or events that disagree with the
     * ring about being process-shared. */
    unsigned char *shared_byte = (unsigned char *)&q->shared;
    *shared_byte = 7;
    ASSERT_RC(gf_mpmc_validate(q, size), GF_ECORRUPT);
    *shared_byte = 0;
    q->not_full.shared = true;
    ASSERT_RC(gf_mpmc_validate(q, size), GF_ECORRUPT);
    q->not_full.shared = false;
    ASSERT_OK(gf_mpmc_validate(q, size));

    /* dequeue ahead of enqueue: impossible in a healthy ring. */
    atomic_store(&q->dequeue_pos, 5);
    ASSERT_RC(gf_mpmc_validate(q, size), GF_ECORRUPT);
    atomic_store(&q->dequeue_pos, 0);

    /* A slot whose seq is neither "free" nor "full" for its index. */
    uint64_t seq = atomic_load(&q->slots[10].seq);
    atomic_store(&q->slots[10].seq, seq + 7);
    ASSERT_RC(gf_mpmc_validate(q, size), GF_ECORRUPT);
    atomic_store(&q->slots[10].seq, seq);

    /* Arbitrary garbage. */
    memset(q, 0xA5, size);
    ASSERT_RC(gf_mpmc_validate(q, size), GF_ECORRUPT);
    free(q);
}

TEST(mpmc_works_at_another_address)
{
    /* Push through a ring, copy the whole block elsewhere, wipe the
     * original, and carry on with the copy: nothing inside may point into
     * the block's old address. */
    enum { CAP = 64 };
    size_t size = gf_mpmc_size(CAP);
    gf_mpmc *a = ring_new(CAP);
    uint64_t v;
    for (uint64_t i = 0; i < 40; i++)
        ASSERT_OK(gf_mpmc_try_push(a, 1000 + i));
    for (uint64_t i = 0; i < 30; i++) {
        ASSERT_OK(gf_mpmc_try_pop(a, &v));
        ASSERT_EQ(v, 1000 + i);
    }
    gf_mpmc *b = aligned_alloc(GF_CACHELINE, size);
    ASSERT(b != NULL);
    memcpy(b, a, size);
    memset(a, 0xEE, size);
    free(a);

    ASSERT_OK(gf_mpmc_validate(b, size));
    ASSERT_EQ(gf_mpmc_count(b), 10);
    for (uint64_t i = 30; i < 40; i++) {
        ASSERT_OK(gf_mpmc_try_pop(b, &v));
        ASSERT_EQ(v, 1000 + i);
    }
    ASSERT_RC(gf_mpmc_try_pop(b, &v), GF_EAGAIN);
    /* A full lap at the new address, crossing the wrap point. */
    for (uint64_t i = 0; i < CAP; i++)
        ASSERT_OK(gf_mpmc_try_push(b, i));
    ASSERT_RC(gf_mpmc_try_push(b, 0), GF_EAGAIN);
    for (uint64_t i = 0; i < CAP; i++) {
        ASSERT_OK(gf_mpmc_try_pop(b, &v));
        ASSERT_EQ(v, i);
    }
    free(b);
}

/* Two mappings of one memfd in one process: different addresses, same
 * physical pages.  Private futexes on the two addresses would never meet;
 * shared ones must. */

struct two_maps {
    gf_mpmc *view;
    uint64_t got;
    _Atomic int rc;
};

static void *pop_via_second_map(void *arg)
{
    struct two_maps *t = arg;
    atomic_store(&t->rc, gf_mpmc_pop(t->view, &t->got, 10000 * MS));
    return NULL;
}

TEST(mpmc_two_mappings_share_one_ring)
{
    enum { CAP = 256 };
    size_t size = gf_mpmc_size(CAP), len = page_round(size);
    int fd = memfd_create("gf-test-mpmc", MFD_CLOEXEC);
    ASSERT(fd >= 0);
    ASSERT_EQ(ftruncate(fd, (off_t)len), 0);
    gf_mpmc *m1 = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    gf_mpmc *m2 = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT(m1 != MAP_FAILED && m2 != MAP_FAILED && m1 != m2);

    ASSERT_OK(gf_mpmc_init(m1, CAP, true));
    ASSERT_OK(gf_mpmc_validate(m2, len));
    uint64_t v;
    for (uint64_t i = 0; i < 3 * CAP; i++) {      /* three laps */
        ASSERT_OK(gf_mpmc_try_push(i % 2 ? m1 : m2, i));
        ASSERT_OK(gf_mpmc_try_pop(i % 3 ? m2 : m1, &v));
        ASSERT_EQ(v, i);
    }

    /* A consumer asleep on view 2 is woken by a push through view 1. */
    struct two_maps t = {m2, 0, 1};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, pop_via_second_map, &t), 0);
    double t0 = gf_test_now();
    while (atomic_load(&m1->not_empty.waiters) == 0) {
        ASSERT(gf_test_now() - t0 < 5.0);
        gf_test_sleep_ms(1);
    }
    gf_test_sleep_ms(10);
    ASSERT_OK(gf_mpmc_try_push(m1, 777));
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_RC(atomic_load(&t.rc), 0);
    ASSERT_EQ(t.got, 777);
    ASSERT(gf_test_now() - t0 < SLACK_S + 1.0);

    gf_mpmc_close(m1);
    ASSERT_RC(gf_mpmc_try_push(m2, 1), GF_ESHUTDOWN);
    munmap(m1, len);
    munmap(m2, len);
    close(fd);
}

/* --- mpmc_stress_threads -------------------------------------------------
 * 4 producers and 4 consumers move distinct values 0..N-1 through a
 * 1024-slot ring, so it is full and empty many times over.  Producer p
 * sends the values == p (mod 4).  Half the threads use the blocking calls,
 * half spin on try_* with a yield.  At the end every value must have been
 * seen exactly once.  Before pushing v a producer writes payload[v] (plain
 * memory) and the consumer checks it: the ring must publish it, and TSan
 * watches that it does. */

enum { STRESS_P = 4, STRESS_C = 4, STRESS_CAP = 1024 };

struct mpmc_stress {
    gf_mpmc *q;
    uint64_t n;
    _Atomic uint8_t *seen;
    uint8_t *payload;
    _Atomic uint64_t popped;
    _Atomic uint64_t push_again, pop_again;
};

struct mpmc_worker {
    struct mpmc_stress *s;
    int id;
};

static void *stress_producer(void *arg)
{
    struct mpmc_worker *w = arg;
    struct mpmc_stress *s = w->s;
    bool blocking = w->id % 2 == 0;
    uint64_t again = 0;
    for (uint64_t v = (uint64_t)w->id; v < s->n; v += STRESS_P) {
        s->payload[v] = (uint8_t)(v * 7 + 3);
        if (blocking) {
            ASSERT_OK(gf_mpmc_push(s->q, v, -1));
            continue;
        }
        int rc;
        while ((rc = gf_mpmc_try_push(s->q, v)) == GF_EAGAIN) {
            if (++again % 16 == 0)
                sched_yield();
            else
                gf_cpu_relax();
        }
        ASSERT_OK(rc);
    }
    atomic_fetch_add(&s->push_again, again);
    return NULL;
}

static void *stress_consumer(void *arg)
{
    struct mpmc_worker *w = arg;
    struct mpmc_stress *s = w->s;
    bool blocking = w->id % 2 == 0;
    uint64_t v, n = 0, again = 0;
    int rc;
    for (;;) {
        if (blocking) {
            rc = gf_mpmc_pop(s->q, &v, -1);
        } else {
            while ((rc = gf_mpmc_try_pop(s->q, &v)) == GF_EAGAIN) {
                if (++again % 16 == 0)
                    sched_yield();
                else
                    gf_cpu_relax();
            }
        }
        if (rc == GF_ESHUTDOWN)
            break;
        ASSERT_OK(rc);
        ASSERT_LT(v, s->n);
        ASSERT_EQ(s->payload[v], (uint8_t)(v * 7 + 3));
        ASSERT_EQ(atomic_fetch_add_explicit(&s->seen[v], 1,
                                            memory_order_relaxed), 0);
        n++;
    }
    atomic_fetch_add(&s->popped, n);
    atomic_fetch_add(&s->pop_again, again);
    return NULL;
}

TEST(mpmc_stress_threads)
{
    static struct mpmc_stress s;
    s.n = gf_test_scaled(10000000);
    s.q = ring_new(STRESS_CAP);
    s.seen = calloc(s.n, sizeof(*s.seen));
    s.payload = calloc(s.n, sizeof(*s.payload));
    ASSERT(s.seen != NULL && s.payload != NULL);

    pthread_t tp[STRESS_P], tc[STRESS_C];
    struct mpmc_worker wp[STRESS_P], wc[STRESS_C];
    double t0 = gf_test_now();
    for (int i = 0; i < STRESS_C; i++) {
        wc[i] = (struct mpmc_worker){&s, i};
        ASSERT_EQ(pthread_create(&tc[i], NULL, stress_consumer, &wc[i]), 0);
    }
    for (int i = 0; i < STRESS_P; i++) {
        wp[i] = (struct mpmc_worker){&s, i};
        ASSERT_EQ(pthread_create(&tp[i], NULL, stress_producer, &wp[i]), 0);
    }
    for (int i = 0; i < STRESS_P; i++)
        ASSERT_EQ(pthread_join(tp[i], NULL), 0);
    gf_mpmc_close(s.q);        /* consumers drain, then see SHUTDOWN */
    for (int i = 0; i < STRESS_C; i++)
        ASSERT_EQ(pthread_join(tc[i], NULL), 0);
    double took = gf_test_now() - t0;

    ASSERT_EQ(atomic_load(&s.popped), s.n);
    for (uint64_t v = 0; v < s.n; v++)
        if (atomic_load_explicit(&s.seen[v], memory_order_relaxed) != 1)
            gf_test_fail(__FILE__, __LINE__, "value %llu seen %d times",
                         (unsigned long long)v, (int)s.seen[v]);
    ASSERT_EQ(gf_mpmc_count(s.q), 0);
    ASSERT_OK(gf_mpmc_validate(s.q, gf_mpmc_size(STRESS_CAP)));
    TEST_REPORT("mpmc %dP/%dC cap %d: %llu items in %.2f s = %.2f M items/s "
                "(try_push EAGAIN %llu, try_pop EAGAIN %llu)",
                STRESS_P, STRESS_C, STRESS_CAP, (unsigned long long)s.n, took,
                (double)s.n / took / 1e6,
                (unsigned long long)atomic_load(&s.push_again),
                (unsigned long long)atomic_load(&s.pop_again));
    free((void *)s.seen);
    free(s.payload);
    free(s.q);
}

/* --- mpmc_stress_processes -----------------------------------------------
 * The parent produces 1..N into a ring in a MAP_SHARED memfd; a forked
 * child maps the memfd again (so at another address), drops the inherited
 * mapping, and consumes.  One producer, one consumer: the values must
 * arrive in order.  The child reports count and sum in a second shared
 * page and says yes or no with its exit status. */

struct proc_result {
    uint64_t count, sum;
};

static int consume_in_child(int fd, size_t len, gf_mpmc *inherited,
                            struct proc_result *res)
{
    gf_mpmc *q = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (q == MAP_FAILED || q == inherited)
        return 10;
    munmap(inherited, len);
    if (gf_mpmc_validate(q, len) != 0)
        return 11;
    uint64_t v, expect = 1, sum = 0;
    int rc;
    while ((rc = gf_mpmc_pop(q, &v, 10000 * MS)) == 0) {
        if (v != expect)
            return 12;
        expect++;
        sum += v;
    }
    if (rc != GF_ESHUTDOWN)
        return 13;
    res->count = expect - 1;
    res->sum = sum;
    return 0;
}

TEST(mpmc_stress_processes)
{
    enum { CAP = 1024 };
    uint64_t n = gf_test_scaled(10000000);
    size_t len = page_round(gf_mpmc_size(CAP));
    int fd = memfd_create("gf-test-mpmc-proc", MFD_CLOEXEC);
    ASSERT(fd >= 0);
    ASSERT_EQ(ftruncate(fd, (off_t)len), 0);
    gf_mpmc *q = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    struct proc_result *res = mmap(NULL, sizeof(*res), PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT(q != MAP_FAILED && res != MAP_FAILED);
    ASSERT_OK(gf_mpmc_init(q, CAP, true));

    double t0 = gf_test_now();
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0)
        _exit(consume_in_child(fd, len, q, res));

    for (uint64_t v = 1; v <= n; v++) {
        int rc = v % 2 ? gf_mpmc_push(q, v, 10000 * MS)
                       : gf_mpmc_try_push(q, v);
        while (rc == GF_EAGAIN)
            rc = gf_mpmc_push(q, v, 10000 * MS);
        ASSERT_OK(rc);
    }
    gf_mpmc_close(q);
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    double took = gf_test_now() - t0;
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_EQ(res->count, n);
    ASSERT_EQ(res->sum, n * (n + 1) / 2);
    TEST_REPORT("mpmc across processes (1P/1C, cap %d): %llu items in %.2f s "
                "= %.2f M items/s", CAP, (unsigned long long)n, took,
                (double)n / took / 1e6);
    munmap(res, sizeof(*res));
    munmap(q, len);
    close(fd);
}
