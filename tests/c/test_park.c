/* test_park.c - futex wait/wake and the event count (gf_park.h). */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>

#include "gf_completion.h"
#include "gf_atomic.h"
#include "gf_park.h"
#include "test.h"

#define MS (INT64_C(1000000))

/* The slowest a sleep may overshoot on a loaded 2-core machine or under a
 * sanitizer before we call it wrong. */
#define SLACK_S 1.0

TEST(park_futex_times_out)
{
    for (int shared = 0; shared <= 1; shared++) {
        _Atomic uint32_t w = 0;
        double t0 = gf_test_now();
        ASSERT_RC(gf_futex_wait(&w, 0, 0, shared), GF_ETIMEDOUT);
        ASSERT_RC(gf_futex_wait(&w, 0, 50 * MS, shared), GF_ETIMEDOUT);
        double took = gf_test_now() - t0;
        ASSERT(took >= 0.050);
        ASSERT(took < 0.050 + SLACK_S);
    }
}

TEST(park_futex_value_changed_returns_at_once)
{
    _Atomic uint32_t w = 1;
    double t0 = gf_test_now();
    ASSERT_OK(gf_futex_wait(&w, 0, 10000 * MS, false));
    ASSERT_OK(gf_futex_wait(&w, 0, -1, true));
    ASSERT(gf_test_now() - t0 < SLACK_S);
    ASSERT_EQ(gf_futex_wake(&w, INT_MAX, false), 0);   /* nobody asleep */
}

static void *futex_sleeper(void *arg)
{
    _Atomic uint32_t *w = arg;
    while (atomic_load(w) == 0)
        gf_futex_wait(w, 0, -1, false);
    return NULL;
}

TEST(park_futex_wakes_sleeper)
{
    _Atomic uint32_t w = 0;
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, futex_sleeper, &w), 0);
    gf_test_sleep_ms(20);          /* let it fall asleep (not required) */
    atomic_store(&w, 1);
    int woke = gf_futex_wake(&w, INT_MAX, false);
    ASSERT(woke == 0 || woke == 1);
    ASSERT_EQ(pthread_join(th, NULL), 0);
}

static void on_usr1(int sig) { (void)sig; }

struct eintr_ctx {
    _Atomic uint32_t word;
    _Atomic int result;
    _Atomic int done;
};

static void *eintr_sleeper(void *arg)
{
    struct eintr_ctx *c = arg;
    atomic_store(&c->result, gf_futex_wait(&c->word, 0, 10000 * MS, false));
    atomic_store(&c->done, 1);
    return NULL;
}

TEST(park_futex_signal_returns_eintr)
{
    /* No SA_RESTART: and futex waits are never restarted anyway. */
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);

    struct eintr_ctx c = {0, 1, 0};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, eintr_sleeper, &c), 0);
    /* Keep signalling: one that lands before the thread is in futex_wait
     * is simply handled, the next one interrupts the wait. */
    double t0 = gf_test_now();
    while (!atomic_load(&c.done)) {
        ASSERT(gf_test_now() - t0 < 5.0);
        pthread_kill(th, SIGUSR1);
        gf_test_sleep_ms(5);
    }
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_RC(atomic_load(&c.result), GF_EINTR);
}

TEST(park_event_prepare_cancel)
{
    gf_event ev;
    gf_event_init(&ev, false);
    ASSERT_EQ(atomic_load(&ev.waiters), 0);

    uint32_t key = gf_event_prepare(&ev);
    ASSERT_EQ(key, atomic_load(&ev.seq));
    ASSERT_EQ(atomic_load(&ev.waiters), 1);
    gf_event_cancel(&ev);
    ASSERT_EQ(atomic_load(&ev.waiters), 0);

    /* Nobody prepared: notify is a no-op and leaves seq alone. */
    gf_event_notify(&ev, INT_MAX);
    ASSERT_EQ(atomic_load(&ev.seq), key);

    /* Notified between prepare and wait: wait returns at once. */
    key = gf_event_prepare(&ev);
    gf_event_notify(&ev, 1);
    ASSERT_EQ(atomic_load(&ev.seq), key + 1);
    double t0 = gf_test_now();
    ASSERT_OK(gf_event_wait(&ev, key, 10000 * MS));
    ASSERT(gf_test_now() - t0 < SLACK_S);
    ASSERT_EQ(atomic_load(&ev.waiters), 0);
}

TEST(park_event_wait_times_out)
{
    gf_event ev;
    gf_event_init(&ev, true);
    uint32_t key = gf_event_prepare(&ev);
    double t0 = gf_test_now();
    ASSERT_RC(gf_event_wait(&ev, key, 30 * MS), GF_ETIMEDOUT);
    double took = gf_test_now() - t0;
    ASSERT(took >= 0.030 && took < 0.030 + SLACK_S);
    ASSERT_EQ(atomic_load(&ev.waiters), 0);
}

/* --- park_no_lost_wakeup ------------------------------------------------
 * Three phases, 200k rounds each (times GF_STRESS_SCALE):
 *   1. a store/prepare race: both threads leave a barrier together, one
 *      publishes and notifies while the other prepares to sleep;
 *   2. an event ping-pong: two threads hand a turn back and forth,
 *      sleeping on one event count without spinning, so nearly every
 *      hand-off goes through prepare / re-check / wait;
 *   3. the same hand-off through a pair of one-shot completions per round.
 * A lost wake-up shows as a wait that times out (10 s, where a hand-off
 * takes microseconds) and fails the test by name and round. */

#define HANDOFF_TIMEOUT (10000 * MS)

struct pingpong {
    gf_event ev;
    _Atomic uint32_t turn;
    uint64_t rounds;
    gf_completion *ping, *pong;
    uint64_t *data;         /* plain: published by the completions */
    _Atomic uint64_t slept; /* completes that found a sleeper */
};

struct player {
    struct pingpong *pp;
    uint32_t me;
};

static void *event_player(void *arg)
{
    struct pingpong *pp = ((struct player *)arg)->pp;
    uint32_t me = ((struct player *)arg)->me;
    for (uint64_t r = 0; r < pp->rounds; r++) {
        while (atomic_load_explicit(&pp->turn, memory_order_acquire)
               != me) {
            uint32_t key = gf_event_prepare(&pp->ev);
            if (atomic_load_explicit(&pp->turn, memory_order_acquire)
                == me) {
                gf_event_cancel(&pp->ev);
                break;
            }
            int rc = gf_event_wait(&pp->ev, key, HANDOFF_TIMEOUT);
            if (rc == GF_ETIMEDOUT)
                gf_test_fail(__FILE__, __LINE__,
                             "lost wake-up: thread %u, round %llu", me,
                             (unsigned long long)r);
        }
        atomic_store_explicit(&pp->turn, !me, memory_order_release);
        gf_event_notify(&pp->ev, 1);
    }
    return NULL;
}

/* Before completing c: in one round of 16, wait (up to ~1 ms) until the
 * other side has announced itself asleep, so those rounds take the futex
 * path; in the others, now and then dawdle 0-10 us to move the race. */
static void dawdle(uint64_t *rng, gf_completion *c, struct pingpong *pp)
{
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    if (*rng % 16 == 0) {
        for (int i = 0; i < 1000; i++) {
            if (atomic_load(&c->state) == GF_COMPLETION_SLEEPERS)
                break;
            sched_yield();
        }
    } else if (*rng % 16 == 1) {
        for (uint64_t k = (*rng >> 8) % 400; k > 0; k--)
            gf_cpu_relax();
    }
    if (atomic_load(&c->state) == GF_COMPLETION_SLEEPERS)
        atomic_fetch_add(&pp->slept, 1);
}

static void *completion_pinger(void *arg)
{
    struct pingpong *pp = arg;
    uint64_t rng = 88172645463325252u;
    for (uint64_t r = 0; r < pp->rounds; r++) {
        pp->data[r] = r * 3 + 1;
        dawdle(&rng, &pp->ping[r], pp);
        gf_completion_complete(&pp->ping[r], false);
        ASSERT_OK(gf_completion_wait(&pp->pong[r], HANDOFF_TIMEOUT, false));
    }
    return NULL;
}

static void *completion_ponger(void *arg)
{
    struct pingpong *pp = arg;
    uint64_t rng = 2463534242u;
    for (uint64_t r = 0; r < pp->rounds; r++) {
        ASSERT_OK(gf_completion_wait(&pp->ping[r], HANDOFF_TIMEOUT, false));
        ASSERT_EQ(pp->data[r], r * 3 + 1);
        dawdle(&rng, &pp->pong[r], pp);
        gf_completion_complete(&pp->pong[r], false);
    }
    return NULL;
}

/* Both threads meet at a spinning barrier, then at once one stores the
 * condition and notifies while the other checks, prepares, re-checks and
 * sleeps: the store -> load window that the fences in prepare and notify
 * close (with notify's fence removed, x86 lost a wake-up here within a few
 * hundred rounds in every trial). */
struct race {
    gf_event ev;
    _Atomic uint32_t cond;
    _Atomic uint64_t arrived;
    uint64_t rounds;
    _Atomic uint64_t slept;
};

static void barrier(struct race *rc, uint64_t r)
{
    atomic_fetch_add(&rc->arrived, 1);
    for (int i = 1; atomic_load(&rc->arrived) < 2 * (r + 1); i++)
        if (i % 128 == 0)
            sched_yield();       /* the machine may have fewer free cores */
        else
            gf_cpu_relax();
}

static void *race_notifier(void *arg)
{
    struct race *rc = arg;
    uint64_t rng = 0x2545F4914F6CDD1Du;
    for (uint64_t r = 0; r < rc->rounds; r++) {
        barrier(rc, r);
        /* 0-15 pauses: sweep the store across the waiter's prepare. */
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        for (uint64_t k = rng % 16; k > 0; k--)
            gf_cpu_relax();
        atomic_store_explicit(&rc->cond, (uint32_t)r + 1, memory_order_release);
        gf_event_notify(&rc->ev, 1);
    }
    return NULL;
}

static void *race_waiter(void *arg)
{
    struct race *rc = arg;
    uint64_t slept = 0;
    for (uint64_t r = 0; r < rc->rounds; r++) {
        uint32_t want = (uint32_t)r + 1;
        barrier(rc, r);
        while (atomic_load_explicit(&rc->cond, memory_order_acquire) != want) {
            uint32_t key = gf_event_prepare(&rc->ev);
            if (atomic_load_explicit(&rc->cond, memory_order_acquire) == want) {
                gf_event_cancel(&rc->ev);
                break;
            }
            slept++;
            if (gf_event_wait(&rc->ev, key, HANDOFF_TIMEOUT) == GF_ETIMEDOUT)
                gf_test_fail(__FILE__, __LINE__,
                             "lost wake-up in round %llu",
                             (unsigned long long)r);
        }
    }
    atomic_store(&rc->slept, slept);
    return NULL;
}

TEST(park_no_lost_wakeup)
{
    static struct race rc;
    rc.rounds = gf_test_scaled(200000);
    gf_event_init(&rc.ev, false);
    pthread_t a, b;
    double t0 = gf_test_now();
    ASSERT_EQ(pthread_create(&a, NULL, race_notifier, &rc), 0);
    ASSERT_EQ(pthread_create(&b, NULL, race_waiter, &rc), 0);
    ASSERT_EQ(pthread_join(a, NULL), 0);
    ASSERT_EQ(pthread_join(b, NULL), 0);
    double took = gf_test_now() - t0;
    TEST_REPORT("event store/prepare race: %llu rounds in %.2f s, "
                "%llu waits", (unsigned long long)rc.rounds, took,
                (unsigned long long)atomic_load(&rc.slept));

    static struct pingpong pp;
    pp.rounds = gf_test_scaled(200000);
    gf_event_init(&pp.ev, false);
    atomic_init(&pp.turn, 0);

    struct player arg_a = {&pp, 0}, arg_b = {&pp, 1};
    t0 = gf_test_now();
    ASSERT_EQ(pthread_create(&a, NULL, event_player, &arg_a), 0);
    ASSERT_EQ(pthread_create(&b, NULL, event_player, &arg_b), 0);
    ASSERT_EQ(pthread_join(a, NULL), 0);
    ASSERT_EQ(pthread_join(b, NULL), 0);
    took = gf_test_now() - t0;
    ASSERT_EQ(atomic_load(&pp.ev.waiters), 0);
    TEST_REPORT("event ping-pong: %llu rounds in %.2f s, %.2f us per hand-off",
                (unsigned long long)pp.rounds, took,
                took * 1e6 / (2.0 * (double)pp.rounds));

    pp.ping = calloc(pp.rounds, sizeof(*pp.ping));
    pp.pong = calloc(pp.rounds, sizeof(*pp.pong));
    pp.data = calloc(pp.rounds, sizeof(*pp.data));
    ASSERT(pp.ping && pp.pong && pp.data);
    for (uint64_t r = 0; r < pp.rounds; r++) {
        gf_completion_init(&pp.ping[r]);
        gf_completion_init(&pp.pong[r]);
    }
    t0 = gf_test_now();
    ASSERT_EQ(pthread_create(&a, NULL, completion_pinger, &pp), 0);
    ASSERT_EQ(pthread_create(&b, NULL, completion_ponger, &pp), 0);
    ASSERT_EQ(pthread_join(a, NULL), 0);
    ASSERT_EQ(pthread_join(b, NULL), 0);
    took = gf_test_now() - t0;
    TEST_REPORT("completion ping-pong: %llu rounds in %.2f s, "
                "%.2f us per hand-off, %llu hand-offs woke a sleeper",
                (unsigned long long)pp.rounds, took,
                took * 1e6 / (2.0 * (double)pp.rounds),
                (unsigned long long)atomic_load(&pp.slept));
    free(pp.ping);
    free(pp.pong);
    free(pp.data);
}
