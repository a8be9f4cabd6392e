/* test_chan.c - the two-way shared-memory channel (gf_chan.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gf_chan.h"
#include "gf_shm.h"
#include "test.h"

#define MS (INT64_C(1000000))
#define SLACK_S 1.0   /* see test_park.c */
/* "Forever" for waits that a bug would otherwise turn into a hang: long
 * past the runner's timeout would be pointless, so a bit under it. */
#define LONG_WAIT (30000 * MS)

/* splitmix64's finaliser: record sizes and contents from a sequence
 * number, so either side can recompute what the other should have sent. */
static uint64_t mix(uint64_t x)
{
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* Record seq's bytes: its own number up front (when it fits), then a
 * pattern salted by the number, so a record delivered twice, skipped or
 * torn does not compare equal. */
static void fill(void *buf, size_t len, uint64_t seq)
{
    uint8_t *p = buf;
    uint8_t salt = (uint8_t)(mix(seq) >> 56);
    size_t i = 0;
    if (len >= sizeof(seq)) {
        memcpy(p, &seq, sizeof(seq));
        i = sizeof(seq);
    }
    for (; i < len; i++)
        p[i] = (uint8_t)(salt + i * 7 + (i >> 8));
}

static bool holds(const void *data, size_t len, uint64_t seq)
{
    uint8_t want[4096];
    ASSERT(len <= sizeof(want));
    fill(want, len, seq);
    return memcmp(data, want, len) == 0;
}

static gf_chan *chan_new(size_t ring_bytes, int *fd_out)
{
    gf_chan *c = NULL;
    int fd = -1;
    ASSERT_OK(gf_chan_create(ring_bytes, "gf-test-chan", &fd, &c));
    ASSERT(c != NULL && fd >= 0);
    if (fd_out != NULL)
        *fd_out = fd;
    else
        close(fd);
    return c;
}

/* Peek the next record of ring dir at once and check it is seq's. */
static void expect_record(gf_chan *c, int dir, size_t len, uint64_t seq)
{
    const void *data;
    size_t got;
    ASSERT_OK(gf_chan_peek(c, dir, 0, 0, &data, &got));
    ASSERT_EQ(got, len);
    ASSERT(holds(data, len, seq));
    ASSERT_EQ((uintptr_t)data % 8, 0);
    gf_chan_release(c, dir);
}

static void send_record(gf_chan *c, int dir, size_t len, uint64_t seq)
{
    uint8_t buf[4096];
    ASSERT(len <= sizeof(buf));
    fill(buf, len, seq);
    ASSERT_OK(gf_chan_send(c, dir, buf, len, 0, 0));
}

TEST(chan_create_rounds_ring_size)
{
    static const struct {
        size_t asked, ring;
    } cases[] = {{0, 4096}, {1000, 4096}, {4096, 4096}, {4097, 8192},
                 {100000, 131072}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int fd;
        gf_chan *c = chan_new(cases[i].asked, &fd);
        ASSERT_EQ(gf_chan_max_record(c), cases[i].ring / 2 - 8);
        size_t size;
        ASSERT_OK(gf_shm_size(fd, &size));
        ASSERT_EQ(size, 4096 + 2 * cases[i].ring);
        ASSERT(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        /* Sealed: nobody can pull pages from under a mapping. */
        ASSERT_EQ(ftruncate(fd, 4096), -1);
        ASSERT_EQ(errno, EPERM);
        ASSERT(!gf_chan_is_closed(c, GF_CHAN_DOWN));
        ASSERT(!gf_chan_is_closed(c, GF_CHAN_UP));
        gf_chan_ctl *ctl = gf_chan_control(c);
        ASSERT_EQ(atomic_load(&ctl->pid), 0);
        ASSERT_EQ(atomic_load(&ctl->running), 0);
        gf_chan_unmap(c);
        close(fd);
    }
    gf_chan *c = NULL;
    int fd = -1;
    ASSERT_RC(gf_chan_create((size_t)1 << 40, NULL, &fd, &c), GF_EINVAL);
    ASSERT(c == NULL && fd == -1);
    ASSERT_OK(gf_chan_create(4096, NULL, &fd, &c));   /* a default name */
    gf_chan_unmap(c);
    close(fd);
}

TEST(chan_fifo_varied_sizes)
{
    gf_chan *c = chan_new(64 * 1024, NULL);
    size_t max = gf_chan_max_record(c);
    ASSERT_EQ(max, 32 * 1024 - 8);
    const size_t sizes[] = {0, 1, 7, 8, 9, 15, 16, 100, 0, 1000, 4000, max};
    enum { NSIZES = sizeof(sizes) / sizeof(sizes[0]) };
    uint8_t *big = malloc(max);
    ASSERT(big != NULL);
    for (int round = 0; round < 3; round++) {
        /* All of them queued at once, in both directions... */
        for (int dir = 0; dir < 2; dir++)
            for (uint64_t i = 0; i < NSIZES; i++) {
                fill(big, sizes[i], i + 100 * (uint64_t)dir);
                ASSERT_OK(gf_chan_send(c, dir, big, sizes[i], 0, 0));
            }
        for (int dir = 0; dir < 2; dir++)
            for (uint64_t i = 0; i < NSIZES; i++) {
                const void *data;
                size_t len;
                ASSERT_OK(gf_chan_peek(c, dir, 0, 0, &data, &len));
                ASSERT_EQ(len, sizes[i]);
                fill(big, len, i + 100 * (uint64_t)dir);
                ASSERT(memcmp(data, big, len) == 0);
                gf_chan_release(c, dir);
            }
        /* ...then one at a time. */
        for (uint64_t i = 0; i < NSIZES; i++) {
            void *buf;
            ASSERT_OK(gf_chan_reserve(c, GF_CHAN_UP, sizes[i], 0, 0, &buf));
            fill(buf, sizes[i], i);
            gf_chan_commit(c, GF_CHAN_UP);
            const void *data;
            size_t len;
            ASSERT_OK(gf_chan_peek(c, GF_CHAN_UP, 0, 0, &data, &len));
            ASSERT_EQ(len, sizes[i]);
            fill(big, len, i);
            ASSERT(memcmp(data, big, len) == 0);
            gf_chan_release(c, GF_CHAN_UP);
        }
    }
    const void *data;
    size_t len;
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_DOWN, 0, 0, &data, &len), GF_EAGAIN);
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_UP, 0, 0, &data, &len), GF_EAGAIN);
    free(big);
    gf_chan_unmap(c);
}

/* A small ring kept part full with records of shifting sizes: most laps
 * end in a pad marker.  The records' addresses show the layout: each one
 * starts where the previous ended, or at offset 0 after a wrap. */
static size_t wrap_len(uint64_t seq, size_t max)
{
    return seq % 97 == 0 ? max : (size_t)(mix(seq) % (max / 2));
}

TEST(chan_wraps_with_pad_many_times)
{
    enum { RING = 4096 };
    gf_chan *c = chan_new(RING, NULL);
    size_t max = gf_chan_max_record(c);
    uint64_t n = gf_test_scaled(200000);
    uint64_t sent = 0, got = 0, pads = 0, exact = 0;
    const uint8_t *ring = NULL;
    size_t prev_end = 0;
    while (got < n) {
        /* Produce until full, then consume two: the ring hovers near
         * full, so reserve meets every offset. */
        size_t len = wrap_len(sent, max);
        uint8_t buf[4096];
        fill(buf, len, sent);
        int rc = gf_chan_send(c, GF_CHAN_DOWN, buf, len, 0, 0);
        if (rc == 0) {
            sent++;
            continue;
        }
        ASSERT_RC(rc, GF_EAGAIN);
        for (int k = 0; k < 2 && got < sent; k++) {
            const void *data;
            size_t n;
            ASSERT_OK(gf_chan_peek(c, GF_CHAN_DOWN, 0, 0, &data, &n));
            const uint8_t *rec = (const uint8_t *)data - 8;
            if (ring == NULL)
                ring = rec;               /* the first record is at 0 */
            size_t off = (size_t)(rec - ring);
            ASSERT_LT(off, RING);
            if (off != prev_end % RING) {
                ASSERT_EQ(off, 0);        /* the only other place */
                pads++;
            } else if (off == 0 && prev_end == RING) {
                exact++;
            }
            ASSERT_EQ(n, wrap_len(got, max));
            ASSERT(holds(data, n, got));
            prev_end = off + 8 + ((n + 7) & ~(size_t)7);
            ASSERT_LE(prev_end, RING);
            gf_chan_release(c, GF_CHAN_DOWN);
            got++;
        }
    }
    ASSERT_GT(pads, n / 20);      /* about one record in seven */
    TEST_REPORT("chan wrap: %llu records, %llu pad markers, %llu exact fits",
                (unsigned long long)got, (unsigned long long)pads,
                (unsigned long long)exact);
    gf_chan_unmap(c);
}

TEST(chan_max_record_enforced)
{
    gf_chan *c = chan_new(4096, NULL);
    size_t max = gf_chan_max_record(c);
    ASSERT_EQ(max, 2040);
    void *buf = NULL;
    uint8_t data[4096] = {0};
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, max + 1, 0, 0, &buf),
              GF_EINVAL);
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, SIZE_MAX, 0, -1, &buf),
              GF_EINVAL);
    ASSERT_RC(gf_chan_send(c, GF_CHAN_UP, data, max + 1, 0, -1), GF_EINVAL);
    ASSERT(buf == NULL);
    /* An empty ring takes a max-size record at every offset, pad or not. */
    for (uint64_t k = 0; k < 600; k++) {
        send_record(c, GF_CHAN_DOWN, (size_t)(k % 300), k);
        expect_record(c, GF_CHAN_DOWN, (size_t)(k % 300), k);
        send_record(c, GF_CHAN_DOWN, max, k);
        expect_record(c, GF_CHAN_DOWN, max, k);
    }
    gf_chan_unmap(c);
}

TEST(chan_full_returns_again_then_times_out)
{
    gf_chan *c = chan_new(4096, NULL);
    /* A 1000-byte payload takes 1008 bytes with its header: four fit in
     * 4096, and the 64 bytes left would still take a payload of 56. */
    for (uint64_t i = 0; i < 4; i++)
        send_record(c, GF_CHAN_DOWN, 1000, i);
    void *buf;
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, 1000, 0, 0, &buf), GF_EAGAIN);
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, 1000, MS, 0, &buf), GF_EAGAIN);
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, 57, 0, 0, &buf), GF_EAGAIN);
    /* A reservation that is never committed leaves no trace. */
    ASSERT_OK(gf_chan_reserve(c, GF_CHAN_DOWN, 56, 0, 0, &buf));
    double t0 = gf_test_now();
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, 1000, 0, 20 * MS, &buf),
              GF_ETIMEDOUT);
    double took = gf_test_now() - t0;
    ASSERT(took >= 0.020 && took < 0.020 + SLACK_S);
    /* Spinning longer than the timeout still ends at the timeout. */
    t0 = gf_test_now();
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, 57, 1000 * MS, 20 * MS, &buf),
              GF_ETIMEDOUT);
    took = gf_test_now() - t0;
    ASSERT(took >= 0.020 && took < 0.020 + SLACK_S);
    /* The other ring is independent. */
    send_record(c, GF_CHAN_UP, 1000, 9);
    expect_record(c, GF_CHAN_UP, 1000, 9);
    /* One out, one in. */
    expect_record(c, GF_CHAN_DOWN, 1000, 0);
    send_record(c, GF_CHAN_DOWN, 1000, 4);
    for (uint64_t i = 1; i <= 4; i++)
        expect_record(c, GF_CHAN_DOWN, 1000, i);
    gf_chan_unmap(c);
}

TEST(chan_empty_returns_again_then_times_out)
{
    gf_chan *c = chan_new(4096, NULL);
    const void *data = (const void *)&data;
    size_t len = 12345;
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_UP, 0, 0, &data, &len), GF_EAGAIN);
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_UP, 1000 * MS, 0, &data, &len),
              GF_EAGAIN);
    double t0 = gf_test_now();
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_UP, 0, 20 * MS, &data, &len),
              GF_ETIMEDOUT);
    double took = gf_test_now() - t0;
    ASSERT(took >= 0.020 && took < 0.020 + SLACK_S);
    t0 = gf_test_now();
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_UP, 5 * MS, 20 * MS, &data, &len),
              GF_ETIMEDOUT);
    took = gf_test_now() - t0;
    ASSERT(took >= 0.020 && took < 0.020 + SLACK_S);
    ASSERT(data == (const void *)&data);   /* untouched on failure */
    ASSERT_EQ(len, 12345);
    send_record(c, GF_CHAN_UP, 3, 1);
    expect_record(c, GF_CHAN_UP, 3, 1);
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_UP, 0, 0, &data, &len), GF_EAGAIN);
    gf_chan_unmap(c);
}

TEST(chan_peek_twice_same_record)
{
    gf_chan *c = chan_new(4096, NULL);
    send_record(c, GF_CHAN_DOWN, 40, 1);
    send_record(c, GF_CHAN_DOWN, 0, 2);
    const void *d1, *d2;
    size_t l1, l2;
    ASSERT_OK(gf_chan_peek(c, GF_CHAN_DOWN, 0, 0, &d1, &l1));
    ASSERT_OK(gf_chan_peek(c, GF_CHAN_DOWN, 0, -1, &d2, &l2));
    ASSERT(d1 == d2);
    ASSERT_EQ(l1, 40);
    ASSERT_EQ(l2, 40);
    ASSERT(holds(d2, 40, 1));
    gf_chan_release(c, GF_CHAN_DOWN);
    ASSERT_OK(gf_chan_peek(c, GF_CHAN_DOWN, 0, 0, &d1, &l1));
    ASSERT_OK(gf_chan_peek(c, GF_CHAN_DOWN, 0, 0, &d2, &l2));
    ASSERT(d1 == d2);
    ASSERT_EQ(l1, 0);
    ASSERT_EQ(l2, 0);
    gf_chan_release(c, GF_CHAN_DOWN);
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_DOWN, 0, 0, &d1, &l1), GF_EAGAIN);
    gf_chan_unmap(c);
}

TEST(chan_close_drains_then_epipe)
{
    gf_chan *c = chan_new(4096, NULL);
    for (uint64_t i = 0; i < 3; i++)
        send_record(c, GF_CHAN_DOWN, 10 * i, i);
    gf_chan_close(c, GF_CHAN_DOWN);
    gf_chan_close(c, GF_CHAN_DOWN);                 /* idempotent */
    ASSERT(gf_chan_is_closed(c, GF_CHAN_DOWN));
    ASSERT(!gf_chan_is_closed(c, GF_CHAN_UP));
    /* The producer: EPIPE at once, though there is room. */
    void *buf;
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, 1, 0, 0, &buf), GF_EPIPE);
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, 1, 0, -1, &buf), GF_EPIPE);
    ASSERT_RC(gf_chan_send(c, GF_CHAN_DOWN, "x", 1, 0, -1), GF_EPIPE);
    /* The consumer: what was there, then EPIPE, with any timeout. */
    for (uint64_t i = 0; i < 3; i++)
        expect_record(c, GF_CHAN_DOWN, 10 * i, i);
    const void *data;
    size_t len;
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_DOWN, 0, 0, &data, &len), GF_EPIPE);
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_DOWN, MS, -1, &data, &len), GF_EPIPE);
    /* The other ring carries on. */
    send_record(c, GF_CHAN_UP, 5, 7);
    expect_record(c, GF_CHAN_UP, 5, 7);

    /* A full ring that is closed says EPIPE to its producer, not EAGAIN. */
    for (uint64_t i = 0; i < 4; i++)
        send_record(c, GF_CHAN_UP, 1000, i);
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_UP, 1000, 0, 0, &buf), GF_EAGAIN);
    gf_chan_close(c, GF_CHAN_UP);
    ASSERT_RC(gf_chan_send(c, GF_CHAN_UP, "x", 1, 0, 0), GF_EPIPE);
    for (uint64_t i = 0; i < 4; i++)
        expect_record(c, GF_CHAN_UP, 1000, i);
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_UP, 0, -1, &data, &len), GF_EPIPE);
    gf_chan_unmap(c);
}

/* A thread that waits on one side of a ring and records how it ended. */
struct waiter {
    gf_chan *c;
    int dir;
    bool producer;
    int64_t timeout_ns;
    _Atomic int rc;
    _Atomic int started;
    double took;
};

static void *wait_on_ring(void *arg)
{
    struct waiter *w = arg;
    double t0 = gf_test_now();
    atomic_store(&w->started, 1);
    int rc;
    if (w->producer) {
        void *buf;
        rc = gf_chan_reserve(w->c, w->dir, 1000, 0, w->timeout_ns, &buf);
    } else {
        const void *data;
        size_t len;
        rc = gf_chan_peek(w->c, w->dir, 0, w->timeout_ns, &data, &len);
    }
    w->took = gf_test_now() - t0;
    atomic_store(&w->rc, rc);
    return NULL;
}

static void start_waiter(pthread_t *th, struct waiter *w)
{
    atomic_init(&w->rc, 1);
    atomic_init(&w->started, 0);
    ASSERT_EQ(pthread_create(th, NULL, wait_on_ring, w), 0);
    while (!atomic_load(&w->started))
        gf_test_sleep_ms(1);
    /* With spin_ns == 0 it parks at once; give it time to get there (not
     * required: the wake-up must work either way). */
    gf_test_sleep_ms(50);
}

TEST(chan_close_wakes_parked_consumer_and_producer)
{
    gf_chan *c = chan_new(4096, NULL);
    for (uint64_t i = 0; i < 4; i++)                /* UP is full */
        send_record(c, GF_CHAN_UP, 1000, i);
    struct waiter consumer = {.c = c, .dir = GF_CHAN_DOWN,
                              .timeout_ns = LONG_WAIT};
    struct waiter producer = {.c = c, .dir = GF_CHAN_UP, .producer = true,
                              .timeout_ns = LONG_WAIT};
    pthread_t tc, tp;
    start_waiter(&tc, &consumer);
    start_waiter(&tp, &producer);
    ASSERT_EQ(atomic_load(&consumer.rc), 1);          /* still waiting */
    ASSERT_EQ(atomic_load(&producer.rc), 1);
    gf_chan_close(c, GF_CHAN_DOWN);
    gf_chan_close(c, GF_CHAN_UP);
    ASSERT_EQ(pthread_join(tc, NULL), 0);
    ASSERT_EQ(pthread_join(tp, NULL), 0);
    ASSERT_RC(atomic_load(&consumer.rc), GF_EPIPE);
    ASSERT_RC(atomic_load(&producer.rc), GF_EPIPE);
    ASSERT(consumer.took < SLACK_S + 1.0 && producer.took < SLACK_S + 1.0);
    gf_chan_unmap(c);
}

/* A worker-style loop: wait for a record, and on every GF_EINTR check a
 * control word the waker set first. */
struct poked_loop {
    gf_chan *c;
    _Atomic int rc;
    _Atomic int wakes;
};

static void *wait_until_exited(void *arg)
{
    struct poked_loop *p = arg;
    gf_chan_ctl *ctl = gf_chan_control(p->c);
    const void *data;
    size_t len;
    int rc;
    while ((rc = gf_chan_peek(p->c, GF_CHAN_DOWN, 0, LONG_WAIT, &data,
                              &len)) == GF_EINTR) {
        atomic_fetch_add(&p->wakes, 1);
        if (atomic_load_explicit(&ctl->exited, memory_order_relaxed))
            break;
    }
    atomic_store(&p->rc, rc);
    return NULL;
}

TEST(chan_commit_quiet_leaves_the_consumer_parked)
{
    gf_chan *c = chan_new(4096, NULL);
    /* A quiet commit publishes without waking: the parked consumer finds
     * the record only when its own wait ends. */
    struct waiter quiet = {.c = c, .dir = GF_CHAN_DOWN, .timeout_ns = 300 * MS};
    pthread_t t;
    start_waiter(&t, &quiet);
    void *buf;
    ASSERT_OK(gf_chan_reserve(c, GF_CHAN_DOWN, 8, 0, 0, &buf));
    memset(buf, 7, 8);
    gf_chan_commit_quiet(c, GF_CHAN_DOWN);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_OK(atomic_load(&quiet.rc));
    ASSERT(quiet.took >= 0.300);
    gf_chan_release(c, GF_CHAN_DOWN);
    /* A plain commit after quiet ones wakes it at once, and it sees them
     * all. */
    struct waiter loud = {.c = c, .dir = GF_CHAN_DOWN, .timeout_ns = LONG_WAIT};
    start_waiter(&t, &loud);
    ASSERT_OK(gf_chan_reserve(c, GF_CHAN_DOWN, 8, 0, 0, &buf));
    memset(buf, 8, 8);
    gf_chan_commit_quiet(c, GF_CHAN_DOWN);
    ASSERT_OK(gf_chan_reserve(c, GF_CHAN_DOWN, 8, 0, 0, &buf));
    memset(buf, 9, 8);
    gf_chan_commit(c, GF_CHAN_DOWN);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_OK(atomic_load(&loud.rc));
    ASSERT(loud.took < SLACK_S + 1.0);
    const void *data;
    size_t len;
    for (int i = 8; i <= 9; i++) {
        ASSERT_OK(gf_chan_peek(c, GF_CHAN_DOWN, 0, 0, &data, &len));
        ASSERT_EQ(len, 8);
        ASSERT_EQ(((const unsigned char *)data)[7], i);
        gf_chan_release(c, GF_CHAN_DOWN);
    }
    gf_chan_unmap(c);
}

TEST(chan_poke_wakes_waiter)
{
    gf_chan *c = chan_new(4096, NULL);
    /* A parked consumer and a parked producer: poke ends both waits
     * with GF_EINTR and leaves the rings as they were. */
    for (uint64_t i = 0; i < 4; i++)
        send_record(c, GF_CHAN_UP, 1000, i);
    struct waiter consumer = {.c = c, .dir = GF_CHAN_DOWN,
                              .timeout_ns = LONG_WAIT};
    struct waiter producer = {.c = c, .dir = GF_CHAN_UP, .producer = true,
                              .timeout_ns = LONG_WAIT};
    pthread_t tc, tp;
    start_waiter(&tc, &consumer);
    start_waiter(&tp, &producer);
    gf_chan_poke(c, GF_CHAN_DOWN);
    ASSERT_EQ(pthread_join(tc, NULL), 0);
    ASSERT_RC(atomic_load(&consumer.rc), GF_EINTR);
    ASSERT_EQ(atomic_load(&producer.rc), 1);   /* UP was not poked */
    gf_chan_poke(c, GF_CHAN_UP);
    ASSERT_EQ(pthread_join(tp, NULL), 0);
    ASSERT_RC(atomic_load(&producer.rc), GF_EINTR);
    ASSERT(consumer.took < SLACK_S + 1.0 && producer.took < SLACK_S + 1.0);
    for (uint64_t i = 0; i < 4; i++)
        expect_record(c, GF_CHAN_UP, 1000, i);

    /* The consumer of DOWN took its poke; DOWN's producer, which never
     * waited, still holds one: its next wait ends at once, the one after
     * that times out. */
    for (uint64_t i = 0; i < 4; i++)
        send_record(c, GF_CHAN_DOWN, 1000, i);
    void *buf;
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, 1000, 0, 0, &buf), GF_EAGAIN);
    double t0 = gf_test_now();
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, 1000, 0, LONG_WAIT, &buf),
              GF_EINTR);
    ASSERT(gf_test_now() - t0 < SLACK_S);
    ASSERT_RC(gf_chan_reserve(c, GF_CHAN_DOWN, 1000, 0, 20 * MS, &buf),
              GF_ETIMEDOUT);
    for (uint64_t i = 0; i < 4; i++)
        expect_record(c, GF_CHAN_DOWN, 1000, i);

    /* A poke with nobody waiting is kept for the next wait; a call that
     * finds a record (or does not wait) leaves it there. */
    gf_chan_poke(c, GF_CHAN_DOWN);
    const void *data;
    size_t len;
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_DOWN, 0, 0, &data, &len), GF_EAGAIN);
    send_record(c, GF_CHAN_DOWN, 3, 5);
    expect_record(c, GF_CHAN_DOWN, 3, 5);
    t0 = gf_test_now();
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_DOWN, MS, LONG_WAIT, &data, &len),
              GF_EINTR);
    ASSERT(gf_test_now() - t0 < SLACK_S);
    t0 = gf_test_now();
    ASSERT_RC(gf_chan_peek(c, GF_CHAN_DOWN, MS, 20 * MS, &data, &len),
              GF_ETIMEDOUT);
    ASSERT(gf_test_now() - t0 >= 0.020);

    /* The intended use: set a control word, then poke; the waiter sees
     * the word on its GF_EINTR and returns. */
    struct poked_loop p = {.c = c};
    atomic_init(&p.rc, 1);
    atomic_init(&p.wakes, 0);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, wait_until_exited, &p), 0);
    gf_test_sleep_ms(20);
    atomic_store_explicit(&gf_chan_control(c)->exited, 1,
                          memory_order_relaxed);
    gf_chan_poke(c, GF_CHAN_DOWN);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_RC(atomic_load(&p.rc), GF_EINTR);
    ASSERT_EQ(atomic_load(&p.wakes), 1);
    gf_chan_unmap(c);
}

TEST(chan_peek_detects_scribbled_length)
{
    gf_chan *c = chan_new(4096, NULL);
    send_record(c, GF_CHAN_DOWN, 16, 1);
    const void *data;
    size_t len;
    ASSERT_OK(gf_chan_peek(c, GF_CHAN_DOWN, 0, 0, &data, &len));
    /* The length word sits 8 bytes before the payload (gf_chan.h). */
    uint8_t *word = (uint8_t *)data - 8;
    uint32_t saved, bad[] = {4096, 2041, 24, UINT32_MAX - 1};
    memcpy(&saved, word, 4);
    ASSERT_EQ(saved, 16);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(word, &bad[i], 4);
        ASSERT_RC(gf_chan_peek(c, GF_CHAN_DOWN, 0, 0, &data, &len),
                  GF_ECORRUPT);
    }
    memcpy(word, &saved, 4);
    expect_record(c, GF_CHAN_DOWN, 16, 1);
    gf_chan_unmap(c);
}

/* A sealed memfd of `size` bytes, so that gf_chan_map looks past the seal
 * check at the contents. */
static int sealed_segment(size_t size)
{
    int fd = memfd_create("gf-test-sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ASSERT(fd >= 0);
    ASSERT_EQ(ftruncate(fd, (off_t)size), 0);
    ASSERT_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    return fd;
}

TEST(chan_map_rejects_non_channel)
{
    gf_chan *c = (gf_chan *)&c;
    int fd;
    /* Zeros: no magic. */
    fd = sealed_segment(4096 + 2 * 4096);
    ASSERT_RC(gf_chan_map(fd, &c), GF_ECORRUPT);
    close(fd);
    /* Smaller than the header. */
    fd = sealed_segment(16);
    ASSERT_RC(gf_chan_map(fd, &c), GF_ECORRUPT);
    close(fd);
    /* A plain gf_shm segment: its size is not sealed. */
    ASSERT_OK(gf_shm_create(3 * 4096, NULL, &fd));
    ASSERT_RC(gf_chan_map(fd, &c), GF_ECORRUPT);
    close(fd);
    /* Not a memfd at all. */
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    ASSERT_RC(gf_chan_map(pipefd[0], &c), GF_ECORRUPT);
    close(pipefd[0]);
    close(pipefd[1]);
    ASSERT_RC(gf_chan_map(-1, &c), GF_ESYS);
    ASSERT(c == (gf_chan *)&c);             /* untouched on failure */

    /* A real channel with its magic, then its version, scribbled. */
    gf_chan *real = chan_new(4096, &fd);
    size_t size;
    ASSERT_OK(gf_shm_size(fd, &size));
    uint32_t *words;
    ASSERT_OK(gf_shm_map(fd, size, true, false, (void **)&words));
    ASSERT_EQ(words[0], GF_CHAN_MAGIC);
    ASSERT_EQ(words[1], GF_CHAN_VERSION);
    words[0] = 0x12345678;
    ASSERT_RC(gf_chan_map(fd, &c), GF_ECORRUPT);
    words[0] = GF_CHAN_MAGIC;
    words[1] = GF_CHAN_VERSION + 1;
    ASSERT_RC(gf_chan_map(fd, &c), GF_ECORRUPT);
    words[1] = GF_CHAN_VERSION;
    ASSERT_OK(gf_chan_map(fd, &c));
    gf_chan_unmap(c);
    /* Arbitrary garbage over the header. */
    memset(words, 0xA5, 4096);
    ASSERT_RC(gf_chan_map(fd, &c), GF_ECORRUPT);
    gf_shm_unmap(words, size);
    gf_chan_unmap(real);
    close(fd);
}

TEST(chan_control_shared_across_mappings)
{
    int fd;
    gf_chan *a = chan_new(8192, &fd), *b;
    ASSERT_OK(gf_chan_map(fd, &b));
    gf_chan_ctl *ca = gf_chan_control(a), *cb = gf_chan_control(b);
    ASSERT(ca != cb);                       /* two addresses, one page */
    atomic_store(&ca->running, 42);
    ASSERT_EQ(atomic_load(&cb->running), 42);
    ASSERT_EQ(gf_chan_max_record(b), gf_chan_max_record(a));
    /* Records and closes cross the mappings too. */
    send_record(a, GF_CHAN_DOWN, 77, 3);
    expect_record(b, GF_CHAN_DOWN, 77, 3);
    gf_chan_close(b, GF_CHAN_UP);
    ASSERT(gf_chan_is_closed(a, GF_CHAN_UP));
    gf_chan_unmap(b);

    /* A child maps the descriptor at its own address and writes the
     * worker's words; the parent reads them after reaping it. */
    int64_t before = gf_now_ns();
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        gf_chan *mine;
        if (gf_chan_map(fd, &mine) != 0)
            _exit(10);
        gf_chan_ctl *ctl = gf_chan_control(mine);
        atomic_store(&ctl->pid, (uint32_t)getpid());
        atomic_store(&ctl->started_ns, gf_now_ns());
        atomic_store(&ctl->running, 43);
        _exit(gf_chan_send(mine, GF_CHAN_DOWN, "hi", 2, 0, 0) == 0 ? 0 : 11);
    }
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_EQ(atomic_load(&ca->pid), (uint32_t)pid);
    ASSERT_EQ(atomic_load(&ca->running), 43);
    int64_t started = atomic_load(&ca->started_ns);
    ASSERT(started >= before && started <= gf_now_ns());
    const void *data;
    size_t len;
    ASSERT_OK(gf_chan_peek(a, GF_CHAN_DOWN, 0, 0, &data, &len));
    ASSERT_EQ(len, 2);
    ASSERT(memcmp(data, "hi", 2) == 0);
    gf_chan_release(a, GF_CHAN_DOWN);
    gf_chan_unmap(a);
    close(fd);
}

/* --- chan_stress_processes -----------------------------------------------
 * The parent's sender thread sends N records of 0..3000 bytes down (sizes
 * and bytes from the sequence number, alternating send and
 * reserve/commit); a forked child maps the channel from the descriptor,
 * checks every byte of every record in order, and echoes up a record with
 * the sequence number, a checksum of what it read and 0..399 bytes of
 * filler; the parent's receiver thread checks those, concurrently.  Both
 * rings wrap thousands of times.  The child exits 0 only if everything it
 * saw was right. */

enum { STRESS_RING = 64 * 1024, STRESS_MAX = 3000, STRESS_FILLER = 400 };
#define STRESS_SPIN_NS (50 * 1000)

struct echo {
    uint64_t seq, sum;
};

static size_t down_len(uint64_t seq)
{
    return (size_t)(mix(seq) % (STRESS_MAX + 1));
}

static size_t filler_len(uint64_t seq)
{
    return (size_t)(mix(~seq) % STRESS_FILLER);
}

/* Word-at-a-time FNV-style hash: cheap next to the byte checks. */
static uint64_t checksum(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t h = UINT64_C(0xcbf29ce484222325) ^ len, w;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * UINT64_C(0x100000001b3);
    }
    for (; i < len; i++)
        h = (h ^ p[i]) * UINT64_C(0x100000001b3);
    return h;
}

static int stress_child(int fd, gf_chan *inherited, uint64_t n)
{
    gf_chan *c;
    if (gf_chan_map(fd, &c) != 0)
        return 10;
    gf_chan_unmap(inherited);        /* from here on, only our own view */
    close(fd);
    atomic_store(&gf_chan_control(c)->pid, (uint32_t)getpid());
    uint8_t want[STRESS_MAX];
    for (uint64_t i = 0; i < n; i++) {
        const void *data;
        size_t len;
        if (gf_chan_peek(c, GF_CHAN_DOWN, STRESS_SPIN_NS, LONG_WAIT, &data,
                         &len) != 0)
            return 11;
        if (len != down_len(i))
            return 12;
        fill(want, len, i);
        if (memcmp(data, want, len) != 0)
            return 13;
        struct echo e = {i, checksum(data, len)};
        gf_chan_release(c, GF_CHAN_DOWN);
        size_t f = filler_len(i);
        void *buf;
        if (gf_chan_reserve(c, GF_CHAN_UP, sizeof(e) + f, STRESS_SPIN_NS,
                            LONG_WAIT, &buf) != 0)
            return 14;
        memcpy(buf, &e, sizeof(e));
        fill((uint8_t *)buf + sizeof(e), f, ~i);
        gf_chan_commit(c, GF_CHAN_UP);
    }
    const void *data;
    size_t len;
    if (gf_chan_peek(c, GF_CHAN_DOWN, 0, LONG_WAIT, &data, &len) != GF_EPIPE)
        return 15;
    gf_chan_close(c, GF_CHAN_UP);
    gf_chan_unmap(c);
    return 0;
}

struct stress {
    gf_chan *c;
    uint64_t n;
    uint64_t bytes_down, bytes_up;
};

static void *stress_sender(void *arg)
{
    struct stress *s = arg;
    uint8_t buf[STRESS_MAX];
    for (uint64_t i = 0; i < s->n; i++) {
        size_t len = down_len(i);
        if (i % 2) {
            fill(buf, len, i);
            ASSERT_OK(gf_chan_send(s->c, GF_CHAN_DOWN, buf, len,
                                   STRESS_SPIN_NS, LONG_WAIT));
        } else {
            void *dst;
            ASSERT_OK(gf_chan_reserve(s->c, GF_CHAN_DOWN, len,
                                      STRESS_SPIN_NS, LONG_WAIT, &dst));
            fill(dst, len, i);
            gf_chan_commit(s->c, GF_CHAN_DOWN);
        }
        s->bytes_down += len;
    }
    gf_chan_close(s->c, GF_CHAN_DOWN);
    return NULL;
}

static void *stress_receiver(void *arg)
{
    struct stress *s = arg;
    uint8_t want[STRESS_MAX];
    const void *data;
    size_t len;
    for (uint64_t i = 0; i < s->n; i++) {
        ASSERT_OK(gf_chan_peek(s->c, GF_CHAN_UP, STRESS_SPIN_NS, LONG_WAIT,
                               &data, &len));
        ASSERT_EQ(len, sizeof(struct echo) + filler_len(i));
        struct echo e;
        memcpy(&e, data, sizeof(e));
        ASSERT_EQ(e.seq, i);
        fill(want, down_len(i), i);
        ASSERT_EQ(e.sum, checksum(want, down_len(i)));
        ASSERT(holds((const uint8_t *)data + sizeof(e), filler_len(i), ~i));
        gf_chan_release(s->c, GF_CHAN_UP);
        s->bytes_up += len;
    }
    /* The child closes UP once DOWN said EPIPE: nothing more comes. */
    ASSERT_RC(gf_chan_peek(s->c, GF_CHAN_UP, 0, LONG_WAIT, &data, &len),
              GF_EPIPE);
    return NULL;
}

TEST(chan_stress_processes)
{
    int fd;
    static struct stress s;
    s.c = chan_new(STRESS_RING, &fd);
    s.n = gf_test_scaled(200000);
    double t0 = gf_test_now();
    pid_t pid = fork();           /* before the threads: the child has one */
    ASSERT(pid >= 0);
    if (pid == 0)
        _exit(stress_child(fd, s.c, s.n));
    pthread_t ts, tr;
    ASSERT_EQ(pthread_create(&tr, NULL, stress_receiver, &s), 0);
    ASSERT_EQ(pthread_create(&ts, NULL, stress_sender, &s), 0);
    ASSERT_EQ(pthread_join(ts, NULL), 0);
    ASSERT_EQ(pthread_join(tr, NULL), 0);
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    double took = gf_test_now() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        gf_test_fail(__FILE__, __LINE__, "child failed: wait status %#x",
                     status);
    ASSERT_EQ(atomic_load(&gf_chan_control(s.c)->pid), (uint32_t)pid);
    TEST_REPORT("chan across processes (ring %d KiB, 0..%d B records down, "
                "echoes up): %llu records in %.2f s = %.0f records/s, "
                "%.0f MB/s down + %.0f MB/s up",
                STRESS_RING / 1024, STRESS_MAX, (unsigned long long)s.n, took,
                (double)s.n / took, (double)s.bytes_down / took / 1e6,
                (double)s.bytes_up / took / 1e6);
    gf_chan_unmap(s.c);
    close(fd);
}

/* --- chan_peer_killed_reaper_closes --------------------------------------
 * The child echoes K records, then is killed (SIGKILL) while it holds the
 * next.  The parent's sender fills DOWN and blocks; its receiver drains
 * the K echoes and blocks.  The main thread plays the reaper: it reaps
 * the child with waitpid, maps the channel itself, stores the wait status
 * and closes both rings.  Both blocked threads must get GF_EPIPE (the
 * receiver only after the K echoes), not hang. */

enum { KILL_AFTER = 1000 };

static int killed_child(int fd, gf_chan *inherited)
{
    gf_chan *c;
    if (gf_chan_map(fd, &c) != 0)
        return 10;
    gf_chan_unmap(inherited);
    for (uint64_t i = 0;; i++) {
        const void *data;
        size_t len;
        if (gf_chan_peek(c, GF_CHAN_DOWN, STRESS_SPIN_NS, LONG_WAIT, &data,
                         &len) != 0)
            return 11;
        if (i == KILL_AFTER)
            raise(SIGKILL);              /* mid-stream, record in hand */
        if (len != down_len(i) || !holds(data, len, i))
            return 12;
        gf_chan_release(c, GF_CHAN_DOWN);
        if (gf_chan_send(c, GF_CHAN_UP, &i, sizeof(i), STRESS_SPIN_NS,
                         LONG_WAIT) != 0)
            return 13;
    }
}

struct orphan {
    gf_chan *c;
    _Atomic int rc;
    uint64_t count;
};

static void *send_until_closed(void *arg)
{
    struct orphan *o = arg;
    uint8_t buf[STRESS_MAX];
    int rc;
    for (;; o->count++) {
        size_t len = down_len(o->count);
        fill(buf, len, o->count);
        rc = gf_chan_send(o->c, GF_CHAN_DOWN, buf, len, STRESS_SPIN_NS, -1);
        if (rc != 0)
            break;
    }
    atomic_store(&o->rc, rc);
    return NULL;
}

static void *receive_until_closed(void *arg)
{
    struct orphan *o = arg;
    const void *data;
    size_t len;
    int rc;
    while ((rc = gf_chan_peek(o->c, GF_CHAN_UP, STRESS_SPIN_NS, -1, &data,
                              &len)) == 0) {
        uint64_t seq;
        ASSERT_EQ(len, sizeof(seq));
        memcpy(&seq, data, sizeof(seq));
        ASSERT_EQ(seq, o->count);
        o->count++;
        gf_chan_release(o->c, GF_CHAN_UP);
    }
    /* The reaper stored the status before closing: visible now. */
    gf_chan_ctl *ctl = gf_chan_control(o->c);
    ASSERT_EQ(atomic_load(&ctl->exited), 1);
    int status = atomic_load(&ctl->exit_status);
    ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    atomic_store(&o->rc, rc);
    return NULL;
}

TEST(chan_peer_killed_reaper_closes)
{
    int fd;
    gf_chan *c = chan_new(16 * 1024, &fd);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0)
        _exit(killed_child(fd, c));
    struct orphan out = {.c = c}, in = {.c = c};
    atomic_init(&out.rc, 1);
    atomic_init(&in.rc, 1);
    pthread_t ts, tr;
    ASSERT_EQ(pthread_create(&ts, NULL, send_until_closed, &out), 0);
    ASSERT_EQ(pthread_create(&tr, NULL, receive_until_closed, &in), 0);

    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFSIGNALED(status));
    ASSERT_EQ(WTERMSIG(status), SIGKILL);
    gf_test_sleep_ms(50);          /* both threads are asleep by now */
    ASSERT_EQ(atomic_load(&out.rc), 1);
    ASSERT_EQ(atomic_load(&in.rc), 1);

    double t0 = gf_test_now();
    gf_chan *reaper;
    ASSERT_OK(gf_chan_map(fd, &reaper));
    gf_chan_ctl *ctl = gf_chan_control(reaper);
    atomic_store_explicit(&ctl->exit_status, status, memory_order_relaxed);
    atomic_store_explicit(&ctl->exited, 1, memory_order_relaxed);
    gf_chan_close(reaper, GF_CHAN_DOWN);
    gf_chan_close(reaper, GF_CHAN_UP);
    ASSERT_EQ(pthread_join(ts, NULL), 0);
    ASSERT_EQ(pthread_join(tr, NULL), 0);
    ASSERT(gf_test_now() - t0 < SLACK_S);
    ASSERT_RC(atomic_load(&out.rc), GF_EPIPE);
    ASSERT_RC(atomic_load(&in.rc), GF_EPIPE);
    ASSERT_EQ(in.count, KILL_AFTER);      /* every echo, then EPIPE */
    ASSERT_GT(out.count, KILL_AFTER);     /* it got ahead, then blocked */
    gf_chan_unmap(reaper);
    gf_chan_unmap(c);
    close(fd);
}
