/* test_completion.c - the one-shot completion (gf_completion.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gf_completion.h"
#include "test.h"

#define MS (INT64_C(1000000))
#define SLACK_S 1.0   /* see test_park.c */

TEST(completion_done_returns_at_once)
{
    gf_completion c = GF_COMPLETION_INIT;
    ASSERT(!gf_completion_is_done(&c));
    gf_completion_complete(&c, false);
    ASSERT(gf_completion_is_done(&c));
    double t0 = gf_test_now();
    ASSERT_OK(gf_completion_wait(&c, -1, false));
    ASSERT_OK(gf_completion_wait(&c, 0, false));
    ASSERT_OK(gf_completion_wait(&c, 10000 * MS, true));
    ASSERT(gf_test_now() - t0 < SLACK_S);
}

TEST(completion_wait_times_out)
{
    gf_completion c;
    gf_completion_init(&c);
    double t0 = gf_test_now();
    ASSERT_RC(gf_completion_wait(&c, 0, false), GF_ETIMEDOUT);
    ASSERT_EQ(atomic_load(&c.state), GF_COMPLETION_PENDING);  /* a poll */
    ASSERT_RC(gf_completion_wait(&c, 50 * MS, false), GF_ETIMEDOUT);
    double took = gf_test_now() - t0;
    ASSERT(took >= 0.050 && took < 0.050 + SLACK_S);
    /* The timed-out waiter announced itself; complete still works. */
    ASSERT_EQ(atomic_load(&c.state), GF_COMPLETION_SLEEPERS);
    gf_completion_complete(&c, false);
    ASSERT_OK(gf_completion_wait(&c, 0, false));
}

/* gf_completion_sleep: the same contract without the spin. */
static void *sleeper(void *arg)
{
    ASSERT_OK(gf_completion_sleep(arg, -1, false));
    return NULL;
}

TEST(completion_sleep_without_spin)
{
    gf_completion c = GF_COMPLETION_INIT;
    ASSERT_RC(gf_completion_sleep(&c, 0, false), GF_ETIMEDOUT);
    double t0 = gf_test_now();
    ASSERT_RC(gf_completion_sleep(&c, 30 * MS, false), GF_ETIMEDOUT);
    double took = gf_test_now() - t0;
    ASSERT(took >= 0.030 && took < 0.030 + SLACK_S);

    /* A sleeper on a fresh word announces itself without spinning first,
     * then wakes at complete(). */
    gf_completion_init(&c);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, sleeper, &c), 0);
    t0 = gf_test_now();
    while (atomic_load(&c.state) != GF_COMPLETION_SLEEPERS) {
        ASSERT(gf_test_now() - t0 < 5.0);
        gf_test_sleep_ms(1);
    }
    gf_completion_complete(&c, false);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_OK(gf_completion_sleep(&c, 0, false));
    ASSERT_OK(gf_completion_sleep(&c, -1, false));
}

static void *waiter(void *arg)
{
    ASSERT_OK(gf_completion_wait(arg, -1, false));
    return NULL;
}

TEST(completion_many_waiters_wake)
{
    enum { N = 16 };
    gf_completion c = GF_COMPLETION_INIT;
    pthread_t th[N];
    for (int i = 0; i < N; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, waiter, &c), 0);
    /* Wait until someone sleeps, then give the rest time to join them, so
     * complete() takes the wake-all path. */
    double t0 = gf_test_now();
    while (atomic_load(&c.state) != GF_COMPLETION_SLEEPERS) {
        ASSERT(gf_test_now() - t0 < 5.0);
        gf_test_sleep_ms(1);
    }
    gf_test_sleep_ms(20);
    gf_completion_complete(&c, false);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
}

struct publish {
    gf_completion done;
    int data[256];          /* plain memory, published by complete() */
};

static void *publish_reader(void *arg)
{
    struct publish *p = arg;
    ASSERT_OK(gf_completion_wait(&p->done, -1, false));
    for (int i = 0; i < 256; i++)
        ASSERT_EQ(p->data[i], i * i);
    return NULL;
}

TEST(completion_publishes_data)
{
    enum { N = 4, ROUNDS = 200 };
    for (int r = 0; r < ROUNDS; r++) {
        struct publish p = {GF_COMPLETION_INIT, {0}};
        pthread_t th[N];
        for (int i = 0; i < N; i++)
            ASSERT_EQ(pthread_create(&th[i], NULL, publish_reader, &p), 0);
        for (int i = 0; i < 256; i++)
            p.data[i] = i * i;
        gf_completion_complete(&p.done, false);
        for (int i = 0; i < N; i++)
            ASSERT_EQ(pthread_join(th[i], NULL), 0);
    }
}

TEST(completion_across_processes)
{
    /* shared=true: the child sleeps on the physical page, not on its own
     * (mm, address) futex key, so the parent's wake reaches it. */
    struct publish *p = mmap(NULL, sizeof(*p), PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT(p != MAP_FAILED);
    gf_completion_init(&p->done);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        int rc = gf_completion_wait(&p->done, 10000 * MS, true);
        _exit(rc == 0 && p->data[7] == 49 ? 0 : 1);
    }
    gf_test_sleep_ms(20);    /* let the child fall asleep (not required) */
    for (int i = 0; i < 256; i++)
        p->data[i] = i * i;
    gf_completion_complete(&p->done, true);
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    munmap(p, sizeof(*p));
}

/* --- completion_stress_eight_waiters ------------------------------------
 * One completer, eight waiters, many rounds.  After each round the last
 * waiter through completes an ack the completer waits for, so at the next
 * round's complete() the waiters are caught at every stage: spinning,
 * announcing, asleep, or not there yet. */

enum { STRESS_WAITERS = 8 };

struct stress {
    uint64_t rounds;
    gf_completion *go, *ack;
    _Atomic uint32_t *arrived;
    uint64_t *data;
};

static void *stress_waiter(void *arg)
{
    struct stress *s = arg;
    for (uint64_t r = 0; r < s->rounds; r++) {
        ASSERT_OK(gf_completion_wait(&s->go[r], 10000 * MS, false));
        ASSERT_EQ(s->data[r], r + 11);
        if (atomic_fetch_add(&s->arrived[r], 1) == STRESS_WAITERS - 1)
            gf_completion_complete(&s->ack[r], false);
    }
    return NULL;
}

TEST(completion_stress_eight_waiters)
{
    struct stress s;
    s.rounds = gf_test_scaled(20000);
    s.go = calloc(s.rounds, sizeof(*s.go));
    s.ack = calloc(s.rounds, sizeof(*s.ack));
    s.arrived = calloc(s.rounds, sizeof(*s.arrived));
    s.data = calloc(s.rounds, sizeof(*s.data));
    ASSERT(s.go && s.ack && s.arrived && s.data);

    pthread_t th[STRESS_WAITERS];
    double t0 = gf_test_now();
    for (int i = 0; i < STRESS_WAITERS; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, stress_waiter, &s), 0);
    uint64_t slept = 0;
    for (uint64_t r = 0; r < s.rounds; r++) {
        s.data[r] = r + 11;
        slept += atomic_load(&s.go[r].state) == GF_COMPLETION_SLEEPERS;
        gf_completion_complete(&s.go[r], false);
        ASSERT_OK(gf_completion_wait(&s.ack[r], 10000 * MS, false));
    }
    for (int i = 0; i < STRESS_WAITERS; i++)
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
    double took = gf_test_now() - t0;
    TEST_REPORT("completion 1 -> %d waiters: %llu rounds in %.2f s "
                "(%.1f us/round), %llu rounds woke sleepers",
                STRESS_WAITERS, (unsigned long long)s.rounds, took,
                took * 1e6 / (double)s.rounds, (unsigned long long)slept);
    free(s.go);
    free(s.ack);
    free((void *)s.arrived);
    free(s.data);
}
