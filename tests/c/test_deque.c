/* test_deque.c - the Chase-Lev work-stealing deque (gf_deque.h). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#include "gf_deque.h"
#include "test.h"

#define ITEM(i) ((void *)(uintptr_t)(i))
#define NUM(p) ((uintptr_t)(p))

TEST(deque_empty_returns_null)
{
    gf_deque d;
    ASSERT_OK(gf_deque_init(&d, 0));
    int retry = 7;
    ASSERT(gf_deque_pop(&d) == NULL);
    ASSERT(gf_deque_steal(&d, &retry) == NULL);
    ASSERT_EQ(retry, 0);
    ASSERT(gf_deque_steal(&d, NULL) == NULL);
    ASSERT_EQ(gf_deque_size(&d), 0);
    /* Popping an empty deque must leave it usable (bottom restored). */
    ASSERT_OK(gf_deque_push(&d, ITEM(1)));
    ASSERT_EQ(gf_deque_size(&d), 1);
    ASSERT_EQ(NUM(gf_deque_pop(&d)), 1);
    ASSERT(gf_deque_pop(&d) == NULL);
    ASSERT(gf_deque_pop(&d) == NULL);
    ASSERT_EQ(gf_deque_size(&d), 0);
    gf_deque_destroy(&d);

    ASSERT_RC(gf_deque_init(&d, SIZE_MAX), GF_ENOMEM);
}

TEST(deque_push_pop_lifo)
{
    gf_deque d;
    ASSERT_OK(gf_deque_init(&d, 16));
    for (uintptr_t i = 1; i <= 10; i++)
        ASSERT_OK(gf_deque_push(&d, ITEM(i)));
    ASSERT_EQ(gf_deque_size(&d), 10);
    for (uintptr_t i = 10; i >= 1; i--)
        ASSERT_EQ(NUM(gf_deque_pop(&d)), i);
    ASSERT(gf_deque_pop(&d) == NULL);
    gf_deque_destroy(&d);
}

TEST(deque_steal_fifo)
{
    gf_deque d;
    ASSERT_OK(gf_deque_init(&d, 16));
    int retry;
    for (uintptr_t i = 1; i <= 10; i++)
        ASSERT_OK(gf_deque_push(&d, ITEM(i)));
    for (uintptr_t i = 1; i <= 10; i++) {
        ASSERT_EQ(NUM(gf_deque_steal(&d, &retry)), i);
        ASSERT_EQ(retry, 0);
    }
    ASSERT(gf_deque_steal(&d, &retry) == NULL);
    ASSERT_EQ(retry, 0);
    /* Both ends at once: oldest from the top, newest from the bottom. */
    for (uintptr_t i = 1; i <= 5; i++)
        ASSERT_OK(gf_deque_push(&d, ITEM(i)));
    ASSERT_EQ(NUM(gf_deque_steal(&d, NULL)), 1);
    ASSERT_EQ(NUM(gf_deque_pop(&d)), 5);
    ASSERT_EQ(NUM(gf_deque_steal(&d, NULL)), 2);
    ASSERT_EQ(NUM(gf_deque_pop(&d)), 4);
    ASSERT_EQ(NUM(gf_deque_pop(&d)), 3);      /* the last item, no thief */
    ASSERT(gf_deque_pop(&d) == NULL);
    ASSERT(gf_deque_steal(&d, NULL) == NULL);
    gf_deque_destroy(&d);
}

TEST(deque_grows)
{
    enum { N = 10000 };
    gf_deque d;
    ASSERT_OK(gf_deque_init(&d, 0));          /* 16 slots */
    /* Move the window first, so growth copies a range that wraps. */
    for (uintptr_t i = 1; i <= 13; i++)
        ASSERT_OK(gf_deque_push(&d, ITEM(i)));
    for (uintptr_t i = 1; i <= 13; i++)
        ASSERT_EQ(NUM(gf_deque_steal(&d, NULL)), i);
    for (uintptr_t i = 1; i <= N; i++)        /* ten doublings */
        ASSERT_OK(gf_deque_push(&d, ITEM(i)));
    ASSERT_EQ(gf_deque_size(&d), N);
    for (uintptr_t i = 1; i <= 100; i++)
        ASSERT_EQ(NUM(gf_deque_steal(&d, NULL)), i);
    for (uintptr_t i = N; i > 100; i--)
        ASSERT_EQ(NUM(gf_deque_pop(&d)), i);
    ASSERT(gf_deque_pop(&d) == NULL);
    gf_deque_destroy(&d);                     /* ASan: retired buffers freed */
}

/* --- stress: one owner, three thieves -------------------------------------
 * Items are slots of an array; the owner writes a payload into a slot
 * (plain memory) before pushing it, and whoever takes it checks the
 * payload (so TSan checks the owner -> thief hand-off) and counts the
 * slot in `taken`, which must be exactly 1 everywhere at the end of a
 * round.  Each round runs on a fresh deque of 16 slots, so it grows under
 * the thieves' feet, and reuses the arrays with new payloads. */

enum { THIEVES = 3 };

struct item {
    uint64_t payload;
};

struct deque_stress {
    gf_deque d;
    struct item *items;
    _Atomic uint8_t *taken;
    uint64_t cap;            /* array length */
    uint64_t n;              /* items this round */
    uint64_t base;           /* payload of items[i] is (base + i) * 3 + 1 */
    _Atomic int done;
    _Atomic uint64_t stolen, lost_races;
};

static void take(struct deque_stress *s, void *p)
{
    struct item *it = p;
    uint64_t i = (uint64_t)(it - s->items);
    ASSERT_LT(i, s->n);
    ASSERT_EQ(it->payload, (s->base + i) * 3 + 1);
    uint8_t before = atomic_fetch_add_explicit(&s->taken[i], 1,
                                               memory_order_relaxed);
    if (before != 0)
        gf_test_fail(__FILE__, __LINE__, "item %llu taken twice",
                     (unsigned long long)(s->base + i));
}

static void *thief(void *arg)
{
    struct deque_stress *s = arg;
    uint64_t stolen = 0, lost = 0, idle = 0;
    for (;;) {
        int retry;
        void *p = gf_deque_steal(&s->d, &retry);
        if (p != NULL) {
            take(s, p);
            stolen++;
            continue;
        }
        if (retry) {
            lost++;
            continue;
        }
        /* Looked empty.  The owner sets done only after its own pop found
         * the deque empty, with nothing more to push. */
        if (atomic_load_explicit(&s->done, memory_order_acquire))
            break;
        if (++idle % 64 == 0)
            sched_yield();
        else
            gf_cpu_relax();
    }
    atomic_fetch_add(&s->stolen, stolen);
    atomic_fetch_add(&s->lost_races, lost);
    return NULL;
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void stress_setup(struct deque_stress *s, uint64_t cap)
{
    s->cap = cap;
    s->items = calloc(cap, sizeof(*s->items));
    s->taken = calloc(cap, sizeof(*s->taken));
    ASSERT(s->items != NULL && s->taken != NULL);
    atomic_init(&s->stolen, 0);
    atomic_init(&s->lost_races, 0);
}

static void stress_teardown(struct deque_stress *s)
{
    free(s->items);
    free((void *)s->taken);
}

/* Before the thieves exist (thread creation orders these writes before
 * anything they do). */
static void round_start(struct deque_stress *s, pthread_t *th, uint64_t base,
                        uint64_t n)
{
    ASSERT_LE(n, s->cap);
    s->base = base;
    s->n = n;
    for (uint64_t i = 0; i < n; i++)
        atomic_store_explicit(&s->taken[i], 0, memory_order_relaxed);
    ASSERT_OK(gf_deque_init(&s->d, 0));
    atomic_store(&s->done, 0);
    for (int i = 0; i < THIEVES; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, thief, s), 0);
}

static void round_end(struct deque_stress *s, pthread_t *th)
{
    ASSERT(gf_deque_pop(&s->d) == NULL);      /* the owner drained it */
    atomic_store_explicit(&s->done, 1, memory_order_release);
    for (int i = 0; i < THIEVES; i++)
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
    ASSERT_EQ(gf_deque_size(&s->d), 0);
    gf_deque_destroy(&s->d);
    for (uint64_t i = 0; i < s->n; i++)
        if (atomic_load_explicit(&s->taken[i], memory_order_relaxed) != 1)
            gf_test_fail(__FILE__, __LINE__, "item %llu taken %d times",
                         (unsigned long long)(s->base + i),
                         (int)s->taken[i]);
}

TEST(deque_steal_races_pop)
{
    /* The owner pushes bursts (mostly short, now and then long enough to
     * grow the buffer a few times) and pops a random part of each burst
     * back; thieves steal throughout. */
    enum { ROUND_ITEMS = 1 << 20 };
    static struct deque_stress s;
    uint64_t total = gf_test_scaled(16000000);
    stress_setup(&s, total < ROUND_ITEMS ? total : ROUND_ITEMS);
    uint64_t rng = 0x9E3779B97F4A7C15u, popped = 0, rounds = 0;
    double t0 = gf_test_now();
    for (uint64_t base = 0; base < total; base += s.cap, rounds++) {
        pthread_t th[THIEVES];
        uint64_t n = total - base < s.cap ? total - base : s.cap, next = 0;
        round_start(&s, th, base, n);
        while (next < n) {
            uint64_t x = xorshift(&rng);
            uint64_t burst = x % 256 == 0 ? 1 + x % 4096 : 1 + x % 48;
            for (uint64_t k = 0; k < burst && next < n; k++, next++) {
                s.items[next].payload = (base + next) * 3 + 1;
                ASSERT_OK(gf_deque_push(&s.d, &s.items[next]));
            }
            for (uint64_t k = (x >> 32) % (burst + 1); k > 0; k--) {
                void *p = gf_deque_pop(&s.d);
                if (p == NULL)
                    break;               /* empty, or a thief won the last */
                take(&s, p);
                popped++;
            }
        }
        void *p;
        while ((p = gf_deque_pop(&s.d)) != NULL) {
            take(&s, p);
            popped++;
        }
        round_end(&s, th);
    }
    double took = gf_test_now() - t0;
    uint64_t stolen = atomic_load(&s.stolen);
    ASSERT_EQ(popped + stolen, total);
    TEST_REPORT("deque 1 owner + %d thieves: %llu items in %llu rounds, "
                "%.2f s = %.2f M items/s; owner popped %llu, thieves stole "
                "%llu, steals lost to a race %llu", THIEVES,
                (unsigned long long)total, (unsigned long long)rounds, took,
                (double)total / took / 1e6, (unsigned long long)popped,
                (unsigned long long)stolen,
                (unsigned long long)atomic_load(&s.lost_races));
    stress_teardown(&s);
}

TEST(deque_last_item_races)
{
    /* One item at a time: the owner pushes it, waits 0-1.5 us (random),
     * and pops it back while the thieves go for the same item, so most
     * rounds are the pop-vs-steal race on the last element. */
    static struct deque_stress s;
    uint64_t n = gf_test_scaled(400000), owner_won = 0, rng = 12345;
    stress_setup(&s, n);
    pthread_t th[THIEVES];
    double t0 = gf_test_now();
    round_start(&s, th, 0, n);
    for (uint64_t i = 0; i < n; i++) {
        s.items[i].payload = i * 3 + 1;
        ASSERT_OK(gf_deque_push(&s.d, &s.items[i]));
        for (uint64_t k = xorshift(&rng) % 64; k > 0; k--)
            gf_cpu_relax();
        void *p = gf_deque_pop(&s.d);
        if (p != NULL) {
            ASSERT(p == &s.items[i]);
            take(&s, p);
            owner_won++;
        }
        ASSERT_EQ(gf_deque_size(&s.d), 0);
    }
    round_end(&s, th);
    double took = gf_test_now() - t0;
    uint64_t stolen = atomic_load(&s.stolen);
    ASSERT_EQ(owner_won + stolen, n);
    TEST_REPORT("deque last-item races: %llu rounds in %.2f s; owner won "
                "%llu, thieves won %llu, steals that lost a race %llu",
                (unsigned long long)n, took, (unsigned long long)owner_won,
                (unsigned long long)stolen,
                (unsigned long long)atomic_load(&s.lost_races));
    stress_teardown(&s);
}
