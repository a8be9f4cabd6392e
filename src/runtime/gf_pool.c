/* gf_pool.c - native worker threads with an injector queue, work-stealing
 * deques and spin-then-park idling.  See gf_pool.h for the model.
 *
 * Lock order: spawn_mu is never held while inj_mu is taken, and no lock
 * is held while a task runs or a hook is called.
 */
#include "gf_pool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <unistd.h>

#include "gf_atomic.h"
#include "gf_deque.h"
#include "gf_error.h"
#include "gf_park.h"

/* How long an idle worker keeps looking for work before it parks.  It
 * covers the gap between one task and the next in a submit -> result
 * loop (a few microseconds) so such a loop never pays a futex wake-up
 * (5-50 us on a busy VM), and is short enough that an idle pool costs no
 * measurable CPU. */
#define SPIN_NS 50000

/* At most this many tasks move from the injector to a worker's deque per
 * lock acquisition: enough to amortise the lock, few enough that thieves
 * still find work spread out. */
#define INJECTOR_BATCH_MAX 32

#define DEQUE_INITIAL_CAPACITY 256

struct gf_worker {
    gf_deque deque;            /* first: its fields are cache-aligned */
    gf_pool *pool;
    int index;
    bool joinable;             /* a thread was created for this slot */
    pthread_t thread;
    _Atomic(gf_task *) current;
    void *data;
    void (*hold_release)(gf_worker *, void *);
    void *hold_arg;
    uint64_t rng;              /* xorshift state for victim selection */
};

struct gf_pool {
    int max_workers;
    char name_prefix[12];
    gf_pool_hooks hooks;
    gf_worker *workers;        /* [max_workers], all deques initialised */

    pthread_mutex_t spawn_mu;  /* serialises thread creation */
    _Atomic int started;       /* slots with a thread created */
    _Atomic int alive;         /* threads that have not exited yet */
    gf_event exited;           /* notified when alive drops to 0 */

    GF_CACHE_ALIGNED pthread_mutex_t inj_mu;
    gf_task *inj_head;
    gf_task *inj_tail;
    _Atomic size_t inj_count;  /* read without the lock to skip it */
    _Atomic bool shutdown;     /* written under inj_mu */

    GF_CACHE_ALIGNED _Atomic int nspinning;
    int max_spinning;          /* half the CPUs: spinners never crowd out
                                  the threads that make work */
    gf_event idle;             /* parked workers sleep here */
};

static _Thread_local gf_worker *tls_worker;

int gf__cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---- small helpers ---------------------------------------------------- */

static uint64_t next_random(gf_worker *w)
{
    uint64_t x = w->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return w->rng = x;
}

static void injector_push_locked(gf_pool *p, gf_task *t)
{
    t->next = NULL;
    if (p->inj_tail)
        p->inj_tail->next = t;
    else
        p->inj_head = t;
    p->inj_tail = t;
}

static gf_task *injector_pop_locked(gf_pool *p)
{
    gf_task *t = p->inj_head;
    if (t) {
        p->inj_head = t->next;
        if (!p->inj_head)
            p->inj_tail = NULL;
        t->next = NULL;
    }
    return t;
}

/* ---- starting workers ------------------------------------------------- */

static void *worker_main(void *arg);

/* Start one more worker if the pool is below max_workers.  0 if a worker
 * was started or none was needed, GF_ETHREAD if pthread_create failed. */
static int spawn(gf_pool *p)
{
    int rc = 0;
    pthread_mutex_lock(&p->spawn_mu);
    int n = atomic_load_explicit(&p->started, memory_order_relaxed);
    if (n < p->max_workers && !atomic_load(&p->shutdown)) {
        gf_worker *w = &p->workers[n];
        /* Workers block every asynchronous signal so that the kernel
         * delivers SIGINT & co. to a thread that can act on it (Python's
         * main thread), and interrupts its futex waits. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        atomic_fetch_add(&p->alive, 1);
        if (pthread_create(&w->thread, NULL, worker_main, w) == 0) {
            w->joinable = true;
            /* release: a thief that reads `started` sees an initialised
             * slot (its deque was initialised at create anyway). */
            atomic_store_explicit(&p->started, n + 1, memory_order_release);
        } else {
            atomic_fetch_sub(&p->alive, 1);
            rc = GF_ETHREAD;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    pthread_mutex_unlock(&p->spawn_mu);
    return rc;
}

/* Make sure someone will look at newly queued work: a spinner will; else
 * wake a sleeper; else start a worker.  Called after the work is stored. */
static void wake_one(gf_pool *p)
{
    /* Dekker pair with idle(): we stored the work, then read nspinning and
     * the sleeper count; idle() announces itself as a sleeper, stops
     * spinning, then re-reads the queues.  With seq_cst on both sides one
     * of us sees the other's store, so no work is stranded. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&p->nspinning, memory_order_seq_cst) > 0)
        return;
    if (atomic_load_explicit(&p->idle.waiters, memory_order_seq_cst) > 0) {
        gf_event_notify(&p->idle, 1);
        return;
    }
    if (atomic_load_explicit(&p->started, memory_order_relaxed)
        < p->max_workers)
        (void)spawn(p);  /* failure is fine: a live worker will run it */
}

/* ---- finding work ----------------------------------------------------- */

static gf_task *take_from_injector(gf_worker *w)
{
    gf_pool *p = w->pool;
    /* seq_cst: this is the re-check half of the Dekker pair in wake_one. */
    if (atomic_load_explicit(&p->inj_count, memory_order_seq_cst) == 0)
        return NULL;

    gf_task *batch[INJECTOR_BATCH_MAX];
    size_t taken = 0;
    pthread_mutex_lock(&p->inj_mu);
    size_t count = atomic_load_explicit(&p->inj_count, memory_order_relaxed);
    int workers = atomic_load_explicit(&p->started, memory_order_relaxed);
    size_t share = count / (size_t)(workers > 0 ? workers : 1) + 1;
    if (share > INJECTOR_BATCH_MAX)
        share = INJECTOR_BATCH_MAX;
    gf_task *t;
    while (taken < share && (t = injector_pop_locked(p)) != NULL)
        batch[taken++] = t;
    atomic_store_explicit(&p->inj_count, count - taken, memory_order_relaxed);
    pthread_mutex_unlock(&p->inj_mu);
    if (taken == 0)
        return NULL;

    /* Run batch[0] now; push the rest newest-first, so that this worker
     * pops them in submission order and thieves take the newest. */
    for (size_t i = taken - 1; i > 0; i--) {
        if (gf_deque_push(&w->deque, batch[i]) != 0) {
            /* Out of memory growing the deque: give the rest back. */
            pthread_mutex_lock(&p->inj_mu);
            for (size_t j = 1; j <= i; j++)
                injector_push_locked(p, batch[j]);
            atomic_fetch_add_explicit(&p->inj_count, i, memory_order_relaxed);
            pthread_mutex_unlock(&p->inj_mu);
            break;
        }
    }
    if (taken > 1)
        wake_one(p);  /* there is work to steal */
    return batch[0];
}

static gf_task *steal(gf_worker *w)
{
    gf_pool *p = w->pool;
    int n = atomic_load_explicit(&p->started, memory_order_acquire);
    if (n <= 1)
        return NULL;
    int start = (int)(next_random(w) % (uint64_t)n);
    for (int i = 0; i < n; i++) {
        gf_worker *victim = &p->workers[(start + i) % n];
        if (victim == w)
            continue;
        int retry;
        do {
            retry = 0;
            gf_task *t = gf_deque_steal(&victim->deque, &retry);
            if (t)
                return t;
        } while (retry);
    }
    return NULL;
}

static gf_task *find_work(gf_worker *w)
{
    gf_task *t = gf_deque_pop(&w->deque);
    if (!t)
        t = take_from_injector(w);
    if (!t)
        t = steal(w);
    return t;
}

gf_task *gf_worker_try_take(gf_worker *w)
{
    return find_work(w);
}

/* Is queued work left anywhere: the injector, our deque, or another
 * worker's (a worker busy with one long task leaves its deque to thieves:
 * a spinner that took other work, or stole from it only one task, must
 * not leave the rest unclaimed).  Asked only by a worker that just
 * stopped looking for work, so the scan of every deque is off the path of
 * a worker running its own deque. */
static bool work_left(gf_pool *p, gf_worker *self)
{
    /* seq_cst fence: the other half of wake_one's Dekker pair.  A pusher
     * stores the work, then (fence) reads nspinning; we decremented
     * nspinning, then (fence) read the queues: one of us sees the other. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&p->inj_count, memory_order_relaxed) > 0
        || gf_deque_size(&self->deque) > 0)
        return true;
    int n = atomic_load_explicit(&p->started, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (gf_deque_size(&p->workers[i].deque) > 0)
            return true;
    return false;
}

static void stop_spinning(gf_worker *w)
{
    gf_pool *p = w->pool;
    /* The last spinner to find work wakes one more worker if work is left:
     * submitters skipped the wake-up while somebody was spinning. */
    if (atomic_fetch_sub_explicit(&p->nspinning, 1, memory_order_seq_cst) == 1
        && work_left(p, w))
        wake_one(p);
}

/* No work was found: spin, then park, until there is work (returned) or
 * the pool is shut down and drained (NULL).  The caller has already
 * counted this worker in nspinning; `spinners` is the count before it. */
static gf_task *idle(gf_worker *w, int spinners)
{
    gf_pool *p = w->pool;
    gf_worker_release_hold(w);
    for (;;) {
        /* Enough others spin already: go straight to the final check and
         * park (still counted as a spinner until then, see wake_one). */
        int64_t start = gf_now_ns();
        int64_t deadline = spinners < p->max_spinning ? start + SPIN_NS : 0;
        for (;;) {
            gf_task *t = find_work(w);
            if (t) {
                stop_spinning(w);
                return t;
            }
            if (atomic_load_explicit(&p->shutdown, memory_order_acquire)) {
                atomic_fetch_sub_explicit(&p->nspinning, 1,
                                          memory_order_seq_cst);
                return NULL;
            }
            int64_t now = gf_now_ns();
            if (now > deadline)
                break;
            gf_spin_step(now - start);
        }

        /* Announce the sleep before we stop spinning (see wake_one), then
         * look once more: work queued in between is found here. */
        uint32_t key = gf_event_prepare(&p->idle);
        atomic_fetch_sub_explicit(&p->nspinning, 1, memory_order_seq_cst);
        gf_task *t = find_work(w);
        if (t) {
            gf_event_cancel(&p->idle);
            /* We stopped spinning before we found it: as stop_spinning. */
            if (work_left(p, w))
                wake_one(p);
            return t;
        }
        if (atomic_load_explicit(&p->shutdown, memory_order_acquire)) {
            gf_event_cancel(&p->idle);
            return NULL;
        }
        (void)gf_event_wait(&p->idle, key, -1);
        spinners = atomic_fetch_add_explicit(&p->nspinning, 1,
                                             memory_order_seq_cst);
    }
}

/* The next task, local work first.  Before looking at shared queues the
 * worker counts itself as a spinner: a submit racing with the end of the
 * task just run then sees somebody looking for work and neither wakes nor
 * starts another worker (one atomic, paid only when local work runs out). */
static gf_task *next_task(gf_worker *w)
{
    gf_task *t = gf_deque_pop(&w->deque);
    if (t)
        return t;
    int spinners = atomic_fetch_add_explicit(&w->pool->nspinning, 1,
                                             memory_order_seq_cst);
    t = take_from_injector(w);
    if (!t)
        t = steal(w);
    if (t) {
        stop_spinning(w);
        return t;
    }
    return idle(w, spinners);
}

static void *worker_main(void *arg)
{
    gf_worker *w = arg;
    gf_pool *p = w->pool;
    tls_worker = w;

    char name[16];
    snprintf(name, sizeof name, "%s_%d", p->name_prefix, w->index);
    pthread_setname_np(pthread_self(), name);

    if (!p->hooks.on_start || p->hooks.on_start(w, p->hooks.ctx) == 0) {
        gf_task *t;
        while ((t = next_task(w)) != NULL) {
            /* relaxed: only read by gf_pool_after_fork_child, in a child
             * whose only thread forked while holding a lock (the GIL, for
             * the extension) that also covers this store. */
            atomic_store_explicit(&w->current, t, memory_order_relaxed);
            t->run(t, w);
            atomic_store_explicit(&w->current, NULL, memory_order_relaxed);
        }
        gf_worker_release_hold(w);
        if (p->hooks.on_stop)
            p->hooks.on_stop(w, p->hooks.ctx);
    }
    tls_worker = NULL;
    /* acq_rel: the joiner that sees 0 also sees everything we wrote. */
    if (atomic_fetch_sub_explicit(&p->alive, 1, memory_order_acq_rel) == 1)
        gf_event_notify(&p->exited, INT32_MAX);
    return NULL;
}

/* ---- public API ------------------------------------------------------- */

static int workers_init(gf_pool *p)
{
    for (int i = 0; i < p->max_workers; i++) {
        gf_worker *w = &p->workers[i];
        memset(w, 0, sizeof *w);
        if (gf_deque_init(&w->deque, DEQUE_INITIAL_CAPACITY) != 0) {
            while (i-- > 0)
                gf_deque_destroy(&p->workers[i].deque);
            return GF_ENOMEM;
        }
        w->pool = p;
        w->index = i;
        w->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
    }
    return 0;
}

static void pool_state_init(gf_pool *p)
{
    pthread_mutex_init(&p->spawn_mu, NULL);
    pthread_mutex_init(&p->inj_mu, NULL);
    p->inj_head = p->inj_tail = NULL;
    atomic_init(&p->inj_count, 0);
    atomic_init(&p->shutdown, false);
    atomic_init(&p->started, 0);
    atomic_init(&p->alive, 0);
    atomic_init(&p->nspinning, 0);
    gf_event_init(&p->exited, false);
    gf_event_init(&p->idle, false);
}

int gf_pool_create(const gf_pool_config *cfg, gf_pool **out)
{
    *out = NULL;
    if (!cfg || cfg->max_workers < 1)
        return GF_EINVAL;
    gf_pool *p = aligned_alloc(GF_CACHELINE, sizeof *p);
    if (!p)
        return GF_ENOMEM;
    memset(p, 0, sizeof *p);
    p->max_workers = cfg->max_workers;
    snprintf(p->name_prefix, sizeof p->name_prefix, "%s",
             cfg->name_prefix ? cfg->name_prefix : "gf");
    p->hooks = cfg->hooks;
    p->max_spinning = gf__cpu_count() / 2 > 1 ? gf__cpu_count() / 2 : 1;
    size_t bytes = sizeof(gf_worker) * (size_t)cfg->max_workers;
    bytes = (bytes + GF_CACHELINE - 1) / GF_CACHELINE * GF_CACHELINE;
    p->workers = aligned_alloc(GF_CACHELINE, bytes);
    if (!p->workers) {
        free(p);
        return GF_ENOMEM;
    }
    if (workers_init(p) != 0) {
        free(p->workers);
        free(p);
        return GF_ENOMEM;
    }
    pool_state_init(p);
    if (cfg->eager) {
        for (int i = 0; i < p->max_workers; i++) {
            if (spawn(p) != 0) {
                gf_pool_shutdown(p);
                (void)gf_pool_join(p, -1);
                gf_pool_destroy(p);
                return GF_ETHREAD;
            }
        }
    }
    *out = p;
    return 0;
}

int gf_pool_submit(gf_pool *p, gf_task *t)
{
    /* With no worker yet, start one first: if that fails the task is not
     * queued, so the caller keeps ownership and can report the error. */
    if (atomic_load_explicit(&p->started, memory_order_acquire) == 0) {
        int rc = spawn(p);
        if (rc != 0)
            return rc;
        if (atomic_load_explicit(&p->started, memory_order_acquire) == 0)
            return GF_ESHUTDOWN;  /* spawn refused: shut down meanwhile */
    }
    pthread_mutex_lock(&p->inj_mu);
    if (atomic_load_explicit(&p->shutdown, memory_order_relaxed)) {
        pthread_mutex_unlock(&p->inj_mu);
        return GF_ESHUTDOWN;
    }
    injector_push_locked(p, t);
    atomic_fetch_add_explicit(&p->inj_count, 1, memory_order_relaxed);
    pthread_mutex_unlock(&p->inj_mu);
    wake_one(p);
    return 0;
}

int gf_worker_push(gf_worker *w, gf_task *t)
{
    int rc = gf_deque_push(&w->deque, t);
    if (rc == 0)
        wake_one(w->pool);
    return rc;
}

void gf_pool_shutdown(gf_pool *p)
{
    pthread_mutex_lock(&p->inj_mu);
    atomic_store_explicit(&p->shutdown, true, memory_order_seq_cst);
    pthread_mutex_unlock(&p->inj_mu);
    gf_event_notify(&p->idle, INT32_MAX);
}

int gf_pool_join(gf_pool *p, int64_t timeout_ns)
{
    int64_t deadline = timeout_ns < 0 ? -1 : gf_now_ns() + timeout_ns;
    for (;;) {
        uint32_t key = gf_event_prepare(&p->exited);
        if (atomic_load_explicit(&p->alive, memory_order_acquire) == 0) {
            gf_event_cancel(&p->exited);
            break;
        }
        int64_t left = -1;
        if (deadline >= 0 && (left = deadline - gf_now_ns()) <= 0) {
            gf_event_cancel(&p->exited);
            return GF_ETIMEDOUT;
        }
        int rc = gf_event_wait(&p->exited, key, left);
        if (rc == GF_EINTR)
            return rc;
    }
    pthread_mutex_lock(&p->spawn_mu);
    int n = atomic_load_explicit(&p->started, memory_order_relaxed);
    for (int i = 0; i < n; i++) {
        gf_worker *w = &p->workers[i];
        if (w->joinable) {
            pthread_join(w->thread, NULL);
            w->joinable = false;
        }
    }
    pthread_mutex_unlock(&p->spawn_mu);
    return 0;
}

size_t gf_pool_drain(gf_pool *p, void (*fn)(gf_task *, void *), void *arg)
{
    size_t drained = 0;
    for (;;) {
        pthread_mutex_lock(&p->inj_mu);
        gf_task *t = injector_pop_locked(p);
        if (t)
            atomic_fetch_sub_explicit(&p->inj_count, 1, memory_order_relaxed);
        pthread_mutex_unlock(&p->inj_mu);
        if (!t)
            break;
        fn(t, arg);
        drained++;
    }
    int n = atomic_load_explicit(&p->started, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        gf_task *t;
        int retry;
        do {
            retry = 0;
            while ((t = gf_deque_steal(&p->workers[i].deque, &retry))) {
                fn(t, arg);
                drained++;
            }
        } while (retry);
    }
    return drained;
}

size_t gf_pool_after_fork_child(gf_pool *p, void (*fn)(gf_task *, void *),
                                void *arg)
{
    /* Only this thread exists now; the locks may have been held by threads
     * that are gone, so re-create them instead of taking them. */
    pthread_mutex_init(&p->inj_mu, NULL);
    size_t n = 0;
    gf_task *t;
    while ((t = injector_pop_locked(p)) != NULL) {
        if (fn)
            fn(t, arg);
        n++;
    }
    for (int i = 0; i < p->max_workers; i++) {
        gf_worker *w = &p->workers[i];
        while ((t = gf_deque_steal(&w->deque, NULL)) != NULL) {
            if (fn)
                fn(t, arg);
            n++;
        }
        t = atomic_load_explicit(&w->current, memory_order_relaxed);
        if (t) {
            if (fn)
                fn(t, arg);
            n++;
        }
        /* A dead owner may have left its deque mid-operation: rebuild. */
        gf_deque_destroy(&w->deque);
    }
    pool_state_init(p);
    if (workers_init(p) != 0)
        atomic_store(&p->shutdown, true);  /* submits report ESHUTDOWN */
    return n;
}

void gf_pool_destroy(gf_pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->max_workers; i++)
        gf_deque_destroy(&p->workers[i].deque);
    pthread_mutex_destroy(&p->inj_mu);
    pthread_mutex_destroy(&p->spawn_mu);
    free(p->workers);
    free(p);
}

int gf_pool_max_workers(const gf_pool *p) { return p->max_workers; }

int gf_pool_started_workers(const gf_pool *p)
{
    return atomic_load_explicit(&((gf_pool *)p)->started, memory_order_acquire);
}

bool gf_pool_is_shutdown(const gf_pool *p)
{
    return atomic_load_explicit(&((gf_pool *)p)->shutdown,
                                memory_order_acquire);
}

gf_worker *gf_worker_current(void) { return tls_worker; }
gf_pool *gf_worker_pool(const gf_worker *w) { return w->pool; }
int gf_worker_index(const gf_worker *w) { return w->index; }
void *gf_worker_data(const gf_worker *w) { return w->data; }
void gf_worker_set_data(gf_worker *w, void *data) { w->data = data; }

void gf_worker_set_hold(gf_worker *w, void (*release)(gf_worker *, void *),
                        void *arg)
{
    w->hold_release = release;
    w->hold_arg = arg;
}

void *gf_worker_hold_arg(const gf_worker *w) { return w->hold_arg; }

void gf_worker_release_hold(gf_worker *w)
{
    void (*release)(gf_worker *, void *) = w->hold_release;
    void *arg = w->hold_arg;
    w->hold_release = NULL;
    w->hold_arg = NULL;
    if (release)
        release(w, arg);
}
