/* gf_pool.h - native worker threads: an injector queue, per-worker
 * work-stealing deques, spin-then-park idling.
 *
 * Tasks are intrusive: embed a gf_task in your own struct and recover it
 * in the run function with GF_CONTAINER_OF.  The pool never allocates per
 * task and never looks inside one; it knows nothing of Python.
 *
 * Where a task runs:
 *   gf_pool_submit()   from any thread: into the injector (FIFO, mutex-
 *                      protected list).  An idle worker takes a small batch
 *                      at a time into its own deque, where others steal.
 *   gf_worker_push()   from a task running on worker w: onto w's own
 *                      Chase-Lev deque (LIFO for w, FIFO for thieves).
 *
 * Idle workers (the protocol of Go's scheduler, simplified): a worker that
 * finds no work becomes a *spinner* for a short while, then parks on the
 * pool's event count.  A submit wakes a sleeper only when nobody spins (a
 * spinner will find the task anyway), so a burst of submits costs one
 * futex wake, not one per task; a spinner that finds work and was the last
 * spinner wakes one more worker if work is left, so parallelism ramps up
 * one worker at a time.  Workers are started lazily, up to max_workers,
 * when work arrives and nobody is idle - the same policy as the stdlib's
 * ThreadPoolExecutor.
 *
 * Holds: a worker may keep one external resource between tasks (the
 * extension keeps the GIL of its interpreter so that consecutive Python
 * tasks run in one acquisition).  The pool calls the hold's release
 * function before the worker idles, before it exits, and whenever a task
 * calls gf_worker_release_hold() (a native task does, to run with no GIL).
 *
 * Lifecycle: create -> submit* -> shutdown (no new submits; queued work
 * still runs) -> join (waits for the workers to exit) -> destroy.
 */
#ifndef GF_POOL_H
#define GF_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GF_CONTAINER_OF(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

typedef struct gf_pool gf_pool;
typedef struct gf_worker gf_worker;
typedef struct gf_task gf_task;

typedef void (*gf_task_fn)(gf_task *task, gf_worker *worker);

struct gf_task {
    gf_task_fn run;   /* called once, on a worker; may free the task */
    gf_task *next;    /* pool-owned link while the task is queued */
};

typedef struct gf_pool_hooks {
    /* On the new worker thread, before its first task.  Non-zero means
     * "this worker cannot run tasks": it exits at once (on_stop is not
     * called) and the pool goes on with its other workers. */
    int (*on_start)(gf_worker *w, void *ctx);
    /* On the worker thread after its last task, after the hold is released. */
    void (*on_stop)(gf_worker *w, void *ctx);
    void *ctx;
} gf_pool_hooks;

typedef struct gf_pool_config {
    int max_workers;          /* >= 1 */
    const char *name_prefix;  /* OS thread names "<prefix>_<i>" (15 bytes
                                 max, truncated); NULL: "gf" */
    gf_pool_hooks hooks;
    bool eager;               /* start every worker now, not on demand */
} gf_pool_config;

/* 0, GF_EINVAL (max_workers < 1), GF_ENOMEM, or GF_ETHREAD (eager start
 * failed; nothing is left running). */
int gf_pool_create(const gf_pool_config *cfg, gf_pool **out);

/* Queue a task.  0, GF_ESHUTDOWN (after gf_pool_shutdown), or GF_ETHREAD
 * (no worker exists and none could be started).  On error the task was not
 * queued and its run function will never be called. */
int gf_pool_submit(gf_pool *p, gf_task *t);

/* From a task running on w: push onto w's deque.  0 or GF_ENOMEM (not
 * queued).  Allowed after shutdown: queued work always runs. */
int gf_worker_push(gf_worker *w, gf_task *t);

/* No new submits; workers run everything queued, then exit.  Idempotent,
 * never blocks. */
void gf_pool_shutdown(gf_pool *p);

/* Wait until every worker has exited (after gf_pool_shutdown), then reap
 * the threads.  timeout_ns < 0: no limit.  0, GF_ETIMEDOUT or GF_EINTR
 * (call again).  Must not be called from one of p's workers. */
int gf_pool_join(gf_pool *p, int64_t timeout_ns);

/* Take every queued task that no worker has started and hand it to fn
 * (which must dispose of it: the pool forgets it).  Safe while workers run;
 * each task goes either to a worker or to fn, never both.  Returns the
 * number of tasks drained. */
size_t gf_pool_drain(gf_pool *p, void (*fn)(gf_task *t, void *arg), void *arg);

/* In the child after fork(): the workers do not exist there.  Hand every
 * task that was queued or running at the fork to fn, then reset the pool
 * to a fresh, empty, running state whose workers start on demand.  The
 * dead threads' stacks are leaked (there is no way to free them). */
size_t gf_pool_after_fork_child(gf_pool *p,
                                void (*fn)(gf_task *t, void *arg), void *arg);

/* After gf_pool_join returned 0 (or after fork with no joinable threads). */
void gf_pool_destroy(gf_pool *p);

int gf_pool_max_workers(const gf_pool *p);
int gf_pool_started_workers(const gf_pool *p);
bool gf_pool_is_shutdown(const gf_pool *p);

/* ---- inside a task ---------------------------------------------------- */

/* The worker running on this thread, or NULL if this is not a pool thread. */
gf_worker *gf_worker_current(void);
gf_pool *gf_worker_pool(const gf_worker *w);
int gf_worker_index(const gf_worker *w);
void *gf_worker_data(const gf_worker *w);
void gf_worker_set_data(gf_worker *w, void *data);

/* From a task running on w: another task w may run next - from its deque,
 * the injector or another worker's deque - or NULL; never waits.  The
 * caller now owns the task: it runs it (or hands it back with
 * gf_worker_push).  The processes backend uses it to keep a worker
 * process's channel fed while the current call runs. */
gf_task *gf_worker_try_take(gf_worker *w);

/* Hold protocol (see the top of this file).  set_hold records that w now
 * holds `arg`, to be released with release(w, arg).  hold_arg returns the
 * current hold's arg or NULL. */
void gf_worker_set_hold(gf_worker *w, void (*release)(gf_worker *, void *),
                        void *arg);
void *gf_worker_hold_arg(const gf_worker *w);
void gf_worker_release_hold(gf_worker *w);

/* ---- data-parallel ranges --------------------------------------------- */

typedef void (*gf_range_fn)(void *arg, int64_t begin, int64_t end);

/* A parallel for over [begin, end) cut into chunks of `grain` indices.
 * Up to min(workers, chunks) runner tasks claim chunks with one fetch_add
 * each (a flat loop needs no recursive splitting: dynamic self-scheduling
 * balances the load and costs one atomic per chunk).  The caller owns the
 * struct and must gf_range_wait() for it before reusing or freeing it. */
typedef struct gf_range_job gf_range_job;

/* 0, GF_EINVAL (begin > end, grain < 1, fn NULL), GF_ENOMEM, GF_ESHUTDOWN,
 * GF_ETHREAD.  On error nothing runs and *out is NULL. */
int gf_range_start(gf_pool *p, gf_range_fn fn, void *arg, int64_t begin,
                   int64_t end, int64_t grain, gf_range_job **out);
/* 0 when every started chunk has finished, GF_ETIMEDOUT, GF_EINTR. */
int gf_range_wait(gf_range_job *job, int64_t timeout_ns);
/* What gf_range_wait waits on, for a caller that waits its own way
 * (gf_completion_sleep): done when every started chunk has finished. */
struct gf_completion *gf_range_finished(gf_range_job *job);
/* Chunks not yet claimed will not start; wait is still required. */
void gf_range_cancel(gf_range_job *job);
/* Number of indices whose chunk ran (== end - begin unless cancelled). */
int64_t gf_range_done(const gf_range_job *job);
/* Free a job after gf_range_wait returned 0. */
void gf_range_free(gf_range_job *job);

/* ---- the process-wide native pool ------------------------------------- */

/* The pool for C work that never touches Python (gilfree.native and the C
 * API capsule): one worker per online CPU, created on first use, lives
 * until the process exits; reset in a forked child.  0 or an error. */
int gf_native_pool(gf_pool **out);

/* Internal: CPUs this process may run on (affinity mask), at least 1. */
int gf__cpu_count(void);

#endif /* GF_POOL_H */
