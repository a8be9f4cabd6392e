/* test_pool.c - the worker pool, parallel ranges and the native pool
 * (gf_pool.h). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gf_atomic.h"
#include "gf_completion.h"
#include "gf_pool.h"
#include "test.h"

#define SECONDS(s) ((int64_t)((s) * 1e9))

/* A task that counts its runs in a shared array and, when the last of a
 * batch runs, completes the batch's completion. */
typedef struct counted {
    gf_task task;
    size_t index;
    struct batch *batch;
} counted;

typedef struct batch {
    _Atomic uint32_t *runs;       /* per task */
    _Atomic size_t left;
    gf_completion all_ran;
    counted *tasks;
    size_t n;
} batch;

static void run_counted(gf_task *t, gf_worker *w)
{
    (void)w;
    counted *c = GF_CONTAINER_OF(t, counted, task);
    atomic_fetch_add(&c->batch->runs[c->index], 1);
    if (atomic_fetch_sub(&c->batch->left, 1) == 1)
        gf_completion_complete(&c->batch->all_ran, false);
}

static void batch_init(batch *b, size_t n)
{
    b->n = n;
    b->runs = calloc(n, sizeof *b->runs);
    b->tasks = calloc(n, sizeof *b->tasks);
    ASSERT(b->runs && b->tasks);
    atomic_init(&b->left, n);
    gf_completion_init(&b->all_ran);
    for (size_t i = 0; i < n; i++)
        b->tasks[i] = (counted){.task.run = run_counted, .index = i, .batch = b};
}

static void batch_check_once(batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        ASSERT_EQ(atomic_load(&b->runs[i]), 1);
    free(b->runs);
    free(b->tasks);
}

static gf_pool *new_pool(int workers)
{
    gf_pool_config cfg = {.max_workers = workers, .name_prefix = "test"};
    gf_pool *p;
    ASSERT_OK(gf_pool_create(&cfg, &p));
    return p;
}

static void stop_pool(gf_pool *p)
{
    gf_pool_shutdown(p);
    ASSERT_OK(gf_pool_join(p, SECONDS(30)));
    gf_pool_destroy(p);
}

TEST(pool_create_rejects_zero_workers)
{
    gf_pool_config cfg = {.max_workers = 0};
    gf_pool *p = (gf_pool *)1;
    ASSERT_RC(gf_pool_create(&cfg, &p), GF_EINVAL);
    ASSERT(p == NULL);
}

typedef struct submitter_arg {
    gf_pool *pool;
    batch *b;
    size_t from, to;
} submitter_arg;

static void *submitter(void *arg)
{
    submitter_arg *a = arg;
    for (size_t i = a->from; i < a->to; i++)
        ASSERT_OK(gf_pool_submit(a->pool, &a->b->tasks[i].task));
    return NULL;
}

/* Every task submitted from several threads runs exactly once. */
TEST(pool_runs_every_task_once)
{
    size_t n = gf_test_scaled(400000);
    gf_pool *p = new_pool(4);
    batch b;
    batch_init(&b, n);
    pthread_t th[2];
    submitter_arg args[2] = {{p, &b, 0, n / 2}, {p, &b, n / 2, n}};
    double t0 = gf_test_now();
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, submitter, &args[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ASSERT_OK(gf_completion_wait(&b.all_ran, SECONDS(60), false));
    double took = gf_test_now() - t0;
    TEST_REPORT("%zu tasks, 2 submitters, 4 workers: %.0f ns/task", n,
                took * 1e9 / (double)n);
    stop_pool(p);
    batch_check_once(&b);
}

/* Workers start on demand: tasks submitted one at a time, each waited
 * for, need one worker - or two, when a submit lands in the instant
 * between a task's completion and its worker's return to idle (the
 * stdlib's executor has the same window) - never one per task. */
TEST(pool_starts_workers_lazily)
{
    gf_pool *p = new_pool(8);
    ASSERT_EQ(gf_pool_started_workers(p), 0);
    for (int i = 0; i < 50; i++) {
        batch b;
        batch_init(&b, 1);
        ASSERT_OK(gf_pool_submit(p, &b.tasks[0].task));
        ASSERT_OK(gf_completion_wait(&b.all_ran, SECONDS(30), false));
        batch_check_once(&b);
    }
    ASSERT_GE(gf_pool_started_workers(p), 1);
    ASSERT_LE(gf_pool_started_workers(p), 2);
    stop_pool(p);
}

/* Bursts separated by pauses long enough for every worker to park: each
 * burst must wake somebody (no lost wake-up), or the wait times out. */
TEST(pool_no_lost_wakeup)
{
    gf_pool *p = new_pool(3);
    int rounds = (int)gf_test_scaled(200);
    for (int r = 0; r < rounds; r++) {
        batch b;
        batch_init(&b, 1 + (size_t)(r % 5));
        for (size_t i = 0; i < b.n; i++)
            ASSERT_OK(gf_pool_submit(p, &b.tasks[i].task));
        ASSERT_OK(gf_completion_wait(&b.all_ran, SECONDS(30), false));
        batch_check_once(&b);
        if (r % 10 == 0)
            gf_test_sleep_ms(2);  /* past the spin: the workers park */
    }
    stop_pool(p);
}

/* Tasks that each wait until all of them run at once.  With as many tasks
 * as workers, one left in the deque of a worker that runs another never
 * starts unless somebody is woken for it. */
typedef struct meeting {
    _Atomic int arrived, left, stranded;
    int n;
    gf_completion all_left;
} meeting;

typedef struct attendee {
    gf_task task;
    meeting *m;
} attendee;

static void run_attendee(gf_task *t, gf_worker *w)
{
    (void)w;
    meeting *m = GF_CONTAINER_OF(t, attendee, task)->m;
    atomic_fetch_add(&m->arrived, 1);
    double t0 = gf_test_now();
    while (atomic_load(&m->arrived) < m->n) {
        if (gf_test_now() - t0 > 5.0) {
            atomic_store(&m->stranded, 1);
            break;
        }
        sched_yield();
    }
    if (atomic_fetch_sub(&m->left, 1) == 1)
        gf_completion_complete(&m->all_left, false);
}

/* A fresh pool's first worker may take the whole injector in one batch
 * into its deque and run one task; the others take work by stealing or
 * from the injector, and whoever stops looking last must wake a worker
 * for what is left in the busy worker's deque (a process pool of 3 once
 * in ~200 starts ran two of its three blocking tasks, for good). */
TEST(pool_wakes_for_work_left_in_a_busy_deque)
{
    enum { N = 3 };
    int rounds = (int)gf_test_scaled(300);
    for (int r = 0; r < rounds; r++) {
        gf_pool *p = new_pool(N);
        meeting m = {.n = N, .left = N};
        gf_completion_init(&m.all_left);
        attendee a[N];
        for (int i = 0; i < N; i++) {
            a[i] = (attendee){.task.run = run_attendee, .m = &m};
            ASSERT_OK(gf_pool_submit(p, &a[i].task));
        }
        ASSERT_OK(gf_completion_wait(&m.all_left, SECONDS(30), false));
        int stranded = atomic_load(&m.stranded);
        ASSERT_EQ(stranded, 0);
        stop_pool(p);
    }
}

/* A task tree: each node pushes its two children onto its worker's own
 * deque, so the work spreads by stealing. */
typedef struct node {
    gf_task task;
    int depth;
    _Atomic long *count;
    _Atomic int *seen_workers;
    gf_completion *done;
    _Atomic long *left;
} node;

static void run_node(gf_task *t, gf_worker *w)
{
    node *n = GF_CONTAINER_OF(t, node, task);
    atomic_fetch_or(n->seen_workers, 1 << gf_worker_index(w));
    atomic_fetch_add(n->count, 1);
    if (n->depth > 0) {
        for (int i = 0; i < 2; i++) {
            node *child = malloc(sizeof *child);
            ASSERT(child);
            *child = *n;
            child->depth = n->depth - 1;
            atomic_fetch_add(n->left, 1);
            ASSERT_OK(gf_worker_push(w, &child->task));
        }
    }
    if (atomic_fetch_sub(n->left, 1) == 1)
        gf_completion_complete(n->done, false);
    free(n);
}

TEST(pool_worker_push_spreads_by_stealing)
{
    gf_pool *p = new_pool(4);
    _Atomic long count = 0, left = 1;
    _Atomic int seen = 0;
    gf_completion done = GF_COMPLETION_INIT;
    int depth = 16;
    node *root = malloc(sizeof *root);
    ASSERT(root);
    *root = (node){.task.run = run_node, .depth = depth, .count = &count,
                   .seen_workers = &seen, .done = &done, .left = &left};
    ASSERT_OK(gf_pool_submit(p, &root->task));
    ASSERT_OK(gf_completion_wait(&done, SECONDS(60), false));
    ASSERT_EQ(atomic_load(&count), (2L << depth) - 1);
    TEST_REPORT("tree of %ld tasks ran on workers mask %#x", atomic_load(&count),
                atomic_load(&seen));
    stop_pool(p);
}

/* A task that blocks its worker until released. */
typedef struct gate {
    gf_task task;
    gf_completion entered, release;
} gate;

static void run_gate(gf_task *t, gf_worker *w)
{
    (void)w;
    gate *g = GF_CONTAINER_OF(t, gate, task);
    gf_completion_complete(&g->entered, false);
    ASSERT_OK(gf_completion_wait(&g->release, SECONDS(60), false));
}

/* Occupy p's only worker with g, and queue n counted tasks behind it. */
static void block_worker_then_queue(gf_pool *p, gate *g, batch *b, size_t n)
{
    *g = (gate){.task.run = run_gate};
    gf_completion_init(&g->entered);
    gf_completion_init(&g->release);
    ASSERT_OK(gf_pool_submit(p, &g->task));
    ASSERT_OK(gf_completion_wait(&g->entered, SECONDS(30), false));
    batch_init(b, n);
    for (size_t i = 0; i < b->n; i++)
        ASSERT_OK(gf_pool_submit(p, &b->tasks[i].task));
}

static void count_drained(gf_task *t, void *arg)
{
    counted *c = GF_CONTAINER_OF(t, counted, task);
    (void)c;
    atomic_fetch_add((_Atomic size_t *)arg, 1);
}

/* drain() takes exactly the tasks no worker started; shutdown lets the
 * rest run; each task goes one way, never both. */
TEST(pool_drain_takes_unstarted_tasks)
{
    gf_pool *p = new_pool(1);
    gate g;
    batch b;
    block_worker_then_queue(p, &g, &b, 100);
    _Atomic size_t drained = 0;
    ASSERT_EQ(gf_pool_drain(p, count_drained, (void *)&drained), 100);
    gf_completion_complete(&g.release, false);
    stop_pool(p);
    for (size_t i = 0; i < b.n; i++)
        ASSERT_EQ(atomic_load(&b.runs[i]), 0);
    ASSERT_EQ(atomic_load(&drained), 100);
    free(b.runs);
    free(b.tasks);
}

/* A task that, once released, takes every queued task with try_take and
 * runs it itself, as the processes backend's proxies do. */
typedef struct taker {
    gate g;
    size_t taken;
    int64_t last_take_ns;   /* how long the final, empty try_take took */
} taker;

static void run_taker(gf_task *t, gf_worker *w)
{
    taker *k = GF_CONTAINER_OF(t, taker, g.task);
    run_gate(t, w);
    gf_task *more;
    while ((more = gf_worker_try_take(w)) != NULL) {
        k->taken++;
        more->run(more, w);
    }
    int64_t start = gf_now_ns();
    ASSERT(gf_worker_try_take(w) == NULL);
    k->last_take_ns = gf_now_ns() - start;
}

/* try_take hands a running task the queued ones, each once, and returns
 * NULL at once when there is none (it never parks). */
TEST(pool_try_take_claims_queued_work)
{
    gf_pool *p = new_pool(1);
    taker k = {.g.task.run = run_taker};
    gf_completion_init(&k.g.entered);
    gf_completion_init(&k.g.release);
    ASSERT_OK(gf_pool_submit(p, &k.g.task));
    ASSERT_OK(gf_completion_wait(&k.g.entered, SECONDS(30), false));
    batch b;
    batch_init(&b, 1000);
    for (size_t i = 0; i < b.n; i++)
        ASSERT_OK(gf_pool_submit(p, &b.tasks[i].task));
    gf_completion_complete(&k.g.release, false);
    ASSERT_OK(gf_completion_wait(&b.all_ran, SECONDS(60), false));
    stop_pool(p);
    ASSERT_EQ(k.taken, 1000);  /* the only worker took them all itself */
    ASSERT_LT(k.last_take_ns, SECONDS(1));
    batch_check_once(&b);
}

/* After shutdown, submit fails and queued work still runs. */
TEST(pool_shutdown_runs_queued_work)
{
    gf_pool *p = new_pool(2);
    batch b;
    batch_init(&b, 10000);
    for (size_t i = 0; i < b.n; i++)
        ASSERT_OK(gf_pool_submit(p, &b.tasks[i].task));
    gf_pool_shutdown(p);
    counted extra = {.task.run = run_counted};
    ASSERT_RC(gf_pool_submit(p, &extra.task), GF_ESHUTDOWN);
    ASSERT_OK(gf_pool_join(p, SECONDS(60)));
    gf_pool_destroy(p);
    batch_check_once(&b);
}

/* The hold is released before the worker idles, and on_start/on_stop run
 * once per worker, on that worker. */
typedef struct hooks_seen {
    _Atomic int started, stopped, released;
} hooks_seen;

static int hook_start(gf_worker *w, void *ctx)
{
    gf_worker_set_data(w, ctx);
    atomic_fetch_add(&((hooks_seen *)ctx)->started, 1);
    return 0;
}

static void hook_stop(gf_worker *w, void *ctx)
{
    ASSERT(gf_worker_hold_arg(w) == NULL);
    ASSERT(gf_worker_current() == w);
    atomic_fetch_add(&((hooks_seen *)ctx)->stopped, 1);
}

static void release_hold(gf_worker *w, void *arg)
{
    (void)arg;
    atomic_fetch_add(&((hooks_seen *)gf_worker_data(w))->released, 1);
}

typedef struct holder {
    gf_task task;
    gf_completion ran;
} holder;

static void run_holder(gf_task *t, gf_worker *w)
{
    holder *h = GF_CONTAINER_OF(t, holder, task);
    gf_worker_set_hold(w, release_hold, h);
    ASSERT(gf_worker_hold_arg(w) == h);
    gf_completion_complete(&h->ran, false);
}

TEST(pool_hooks_and_hold_release)
{
    hooks_seen seen = {0};
    gf_pool_config cfg = {
        .max_workers = 2,
        .hooks = {.on_start = hook_start, .on_stop = hook_stop, .ctx = &seen},
    };
    gf_pool *p;
    ASSERT_OK(gf_pool_create(&cfg, &p));
    holder h = {.task.run = run_holder};
    gf_completion_init(&h.ran);
    ASSERT_OK(gf_pool_submit(p, &h.task));
    ASSERT_OK(gf_completion_wait(&h.ran, SECONDS(30), false));
    /* With nothing else queued, the worker idles and must let go. */
    double t0 = gf_test_now();
    while (atomic_load(&seen.released) == 0 && gf_test_now() - t0 < 10)
        gf_test_sleep_ms(1);
    ASSERT_EQ(atomic_load(&seen.released), 1);
    stop_pool(p);
    ASSERT_EQ(atomic_load(&seen.started), atomic_load(&seen.stopped));
    ASSERT_GE(atomic_load(&seen.started), 1);
}

static int refuse_start(gf_worker *w, void *ctx)
{
    (void)w;
    (void)ctx;
    return -1;
}

/* A worker whose on_start fails exits; the pool can still be joined. */
TEST(pool_failed_start_exits_cleanly)
{
    gf_pool_config cfg = {.max_workers = 1, .hooks.on_start = refuse_start};
    gf_pool *p;
    ASSERT_OK(gf_pool_create(&cfg, &p));
    batch b;
    batch_init(&b, 3);
    for (size_t i = 0; i < b.n; i++)
        ASSERT_OK(gf_pool_submit(p, &b.tasks[i].task));
    gf_pool_shutdown(p);
    ASSERT_OK(gf_pool_join(p, SECONDS(30)));
    _Atomic size_t drained = 0;
    ASSERT_EQ(gf_pool_drain(p, count_drained, (void *)&drained), 3);
    gf_pool_destroy(p);
    free(b.runs);
    free(b.tasks);
}

/* In a forked child, tasks queued at the fork are handed back and the pool
 * works again with fresh workers. */
TEST(pool_after_fork_child_resets)
{
    gf_pool *p = new_pool(1);
    gate g;
    batch queued;
    block_worker_then_queue(p, &g, &queued, 5);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        _Atomic size_t handed = 0;
        /* the 5 queued ones plus the gate, which was running */
        size_t n = gf_pool_after_fork_child(p, count_drained, (void *)&handed);
        if (n != 6)
            _exit(10);
#if defined(__SANITIZE_THREAD__)
        /* TSan cannot start threads in a child forked from a threaded
         * parent; the fresh workers are tested in the other builds. */
        _exit(0);
#endif
        batch b;
        batch_init(&b, 1000);
        for (size_t i = 0; i < b.n; i++)
            if (gf_pool_submit(p, &b.tasks[i].task) != 0)
                _exit(11);
        if (gf_completion_wait(&b.all_ran, SECONDS(30), false) != 0)
            _exit(12);
        gf_pool_shutdown(p);
        _exit(gf_pool_join(p, SECONDS(30)) == 0 ? 0 : 13);
    }
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    gf_completion_complete(&g.release, false);
    ASSERT_OK(gf_completion_wait(&queued.all_ran, SECONDS(30), false));
    stop_pool(p);
    batch_check_once(&queued);
}

/* ---- ranges --------------------------------------------------------------- */

typedef struct marks {
    _Atomic uint8_t *hit;
    _Atomic long calls;
} marks;

static void mark_range(void *arg, int64_t begin, int64_t end)
{
    marks *m = arg;
    atomic_fetch_add(&m->calls, 1);
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&m->hit[i], 1);
}

TEST(range_covers_each_index_once)
{
    gf_pool *p = new_pool(4);
    int64_t sizes[] = {0, 1, 7, 1000, (int64_t)gf_test_scaled(1000003)};
    int64_t grains[] = {1, 3, 1000, 1 << 20};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        for (size_t g = 0; g < sizeof grains / sizeof *grains; g++) {
            int64_t n = sizes[s];
            if (grains[g] == 1 && n > 100000)
                continue;  /* a million single-index chunks: too slow */
            marks m = {.hit = calloc((size_t)n + 1, 1)};
            ASSERT(m.hit);
            gf_range_job *job;
            ASSERT_OK(gf_range_start(p, mark_range, &m, 0, n, grains[g], &job));
            if (g % 2)  /* as a caller that spins its own way does */
                ASSERT_OK(gf_completion_sleep(gf_range_finished(job),
                                              SECONDS(60), false));
            else
                ASSERT_OK(gf_range_wait(job, SECONDS(60)));
            ASSERT_EQ(gf_range_done(job), n);
            gf_range_free(job);
            for (int64_t i = 0; i < n; i++)
                ASSERT_EQ(atomic_load(&m.hit[i]), 1);
            ASSERT_EQ(atomic_load(&m.calls),
                      (n + grains[g] - 1) / grains[g]);
            free((void *)m.hit);
        }
    }
    stop_pool(p);
}

TEST(range_rejects_bad_arguments)
{
    gf_pool *p = new_pool(1);
    gf_range_job *job = (gf_range_job *)1;
    ASSERT_RC(gf_range_start(p, mark_range, NULL, 5, 4, 1, &job), GF_EINVAL);
    ASSERT(job == NULL);
    ASSERT_RC(gf_range_start(p, mark_range, NULL, 0, 4, 0, &job), GF_EINVAL);
    ASSERT_RC(gf_range_start(p, NULL, NULL, 0, 4, 1, &job), GF_EINVAL);
    stop_pool(p);
}

static void slow_range(void *arg, int64_t begin, int64_t end)
{
    (void)begin;
    (void)end;
    atomic_fetch_add((_Atomic long *)arg, 1);
    gf_test_sleep_ms(1);
}

TEST(range_cancel_stops_claiming)
{
    gf_pool *p = new_pool(2);
    _Atomic long calls = 0;
    gf_range_job *job;
    ASSERT_OK(gf_range_start(p, slow_range, (void *)&calls, 0, 100000, 1, &job));
    gf_test_sleep_ms(20);
    gf_range_cancel(job);
    ASSERT_OK(gf_range_wait(job, SECONDS(30)));
    ASSERT_LT(gf_range_done(job), 100000);
    ASSERT_EQ(gf_range_done(job), atomic_load(&calls));
    gf_range_free(job);
    stop_pool(p);
}

static void empty_range(void *arg, int64_t begin, int64_t end)
{
    (void)arg;
    (void)begin;
    (void)end;
}

TEST(range_dispatch_cost)
{
    gf_pool *p = new_pool(2);
    int64_t n = (int64_t)gf_test_scaled(2000000);
    gf_range_job *job;
    double t0 = gf_test_now();
    ASSERT_OK(gf_range_start(p, empty_range, NULL, 0, n, 1, &job));
    ASSERT_OK(gf_range_wait(job, SECONDS(60)));
    double took = gf_test_now() - t0;
    ASSERT_EQ(gf_range_done(job), n);
    gf_range_free(job);
    TEST_REPORT("%lld empty chunks on 2 workers: %.1f ns/chunk", (long long)n,
                took * 1e9 / (double)n);
    stop_pool(p);
}

TEST(native_pool_is_one_shared_pool)
{
    gf_pool *a, *b;
    ASSERT_OK(gf_native_pool(&a));
    ASSERT_OK(gf_native_pool(&b));
    ASSERT(a == b);
    ASSERT_GE(gf_pool_max_workers(a), 1);
    batch bt;
    batch_init(&bt, 1000);
    for (size_t i = 0; i < bt.n; i++)
        ASSERT_OK(gf_pool_submit(a, &bt.tasks[i].task));
    ASSERT_OK(gf_completion_wait(&bt.all_ran, SECONDS(30), false));
    batch_check_once(&bt);
}
