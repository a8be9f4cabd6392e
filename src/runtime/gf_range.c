/* gf_range.c - parallel for over an index range on a gf_pool.
 *
 * A job posts up to min(workers, chunks) runner tasks.  Each runner claims
 * the next chunk with one fetch_add on the shared cursor until the range is
 * exhausted or the job is cancelled (dynamic self-scheduling: a flat loop
 * needs no recursive splitting, and a slow chunk never holds up the rest).
 * The last runner to finish completes the job's completion.
 */
#include <stdlib.h>
#include <string.h>

#include "gf_atomic.h"
#include "gf_completion.h"
#include "gf_error.h"
#include "gf_pool.h"

typedef struct runner {
    gf_task task;
    struct gf_range_job *job;
} runner;

struct gf_range_job {
    gf_range_fn fn;
    void *arg;
    int64_t begin, end, grain;
    GF_CACHE_ALIGNED _Atomic int64_t cursor;    /* next unclaimed index */
    GF_CACHE_ALIGNED _Atomic int64_t done;      /* indices whose chunk ran */
    _Atomic int runners_left;
    _Atomic bool cancelled;
    gf_completion finished;
    int nrunners;
    runner runners[];
};

static void run_chunks(gf_task *task, gf_worker *w)
{
    gf_worker_release_hold(w);  /* native code runs with nothing held */
    gf_range_job *job = GF_CONTAINER_OF(task, runner, task)->job;
    int64_t ran = 0;
    while (!atomic_load_explicit(&job->cancelled, memory_order_relaxed)) {
        /* relaxed: the cursor only hands out disjoint chunks; the data the
         * chunks touch is published by the completion below. */
        int64_t lo = atomic_fetch_add_explicit(&job->cursor, job->grain,
                                               memory_order_relaxed);
        if (lo >= job->end)
            break;
        int64_t hi = job->end - lo < job->grain ? job->end : lo + job->grain;
        job->fn(job->arg, lo, hi);
        ran += hi - lo;
    }
    atomic_fetch_add_explicit(&job->done, ran, memory_order_relaxed);
    /* acq_rel: the last runner sees every other runner's writes (and the
     * `done` counts) before it completes, and complete() releases them to
     * the waiter. */
    if (atomic_fetch_sub_explicit(&job->runners_left, 1,
                                  memory_order_acq_rel) == 1)
        gf_completion_complete(&job->finished, false);
}

int gf_range_start(gf_pool *p, gf_range_fn fn, void *arg, int64_t begin,
                   int64_t end, int64_t grain, gf_range_job **out)
{
    *out = NULL;
    if (!fn || begin > end || grain < 1)
        return GF_EINVAL;
    int64_t chunks = (end - begin) / grain + ((end - begin) % grain != 0);
    int64_t n = gf_pool_max_workers(p);
    if (chunks < n)
        n = chunks;
    gf_range_job *job = malloc(sizeof *job + sizeof(runner) * (size_t)n);
    if (!job)
        return GF_ENOMEM;
    job->fn = fn;
    job->arg = arg;
    job->begin = begin;
    job->end = end;
    job->grain = grain;
    atomic_init(&job->cursor, begin);
    atomic_init(&job->done, 0);
    atomic_init(&job->cancelled, false);
    atomic_init(&job->runners_left, (int)n);
    gf_completion_init(&job->finished);
    job->nrunners = (int)n;
    if (n == 0)
        gf_completion_complete(&job->finished, false);

    for (int i = 0; i < n; i++) {
        job->runners[i].task.run = run_chunks;
        job->runners[i].job = job;
        int rc = gf_pool_submit(p, &job->runners[i].task);
        if (rc != 0) {
            if (i == 0) {
                free(job);
                return rc;
            }
            /* Some runners are queued: they will cover the whole range.
             * Account for the ones that never will run. */
            int missing = (int)n - i;
            if (atomic_fetch_sub_explicit(&job->runners_left, missing,
                                          memory_order_acq_rel) == missing)
                gf_completion_complete(&job->finished, false);
            break;
        }
    }
    *out = job;
    return 0;
}

int gf_range_wait(gf_range_job *job, int64_t timeout_ns)
{
    return gf_completion_wait(&job->finished, timeout_ns, false);
}

gf_completion *gf_range_finished(gf_range_job *job)
{
    return &job->finished;
}

void gf_range_cancel(gf_range_job *job)
{
    atomic_store_explicit(&job->cancelled, true, memory_order_relaxed);
}

int64_t gf_range_done(const gf_range_job *job)
{
    return atomic_load_explicit(&((gf_range_job *)job)->done,
                                memory_order_relaxed);
}

void gf_range_free(gf_range_job *job) { free(job); }
