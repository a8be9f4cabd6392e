/* gf_native_pool.c - the process-wide pool for C work that never touches
 * Python (gilfree.native and the C API capsule).
 *
 * Created on first use with one worker per CPU this process may run on,
 * and never destroyed: its workers park on a futex when idle and vanish
 * with the process.  After fork() the child starts a fresh pool on first
 * use (the parent's workers do not exist there); the parent's pool struct
 * is leaked in the child, deliberately, since tasks queued at the fork
 * belong to the parent.
 */
#include <pthread.h>
#include "gf_error.h"
#include "gf_pool.h"

static pthread_mutex_t native_mu = PTHREAD_MUTEX_INITIALIZER;
static gf_pool *native;            /* guarded by native_mu */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void forget_in_child(void)
{
    /* Only the forking thread exists: the mutex may be held by a thread
     * that is gone, so re-create it rather than unlock it. */
    pthread_mutex_init(&native_mu, NULL);
    native = NULL;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, forget_in_child);
}

int gf_native_pool(gf_pool **out)
{
    pthread_once(&atfork_once, register_atfork);
    int rc = 0;
    pthread_mutex_lock(&native_mu);
    if (!native) {
        gf_pool_config cfg = {
            .max_workers = gf__cpu_count(),
            .name_prefix = "gf-native",
        };
        rc = gf_pool_create(&cfg, &native);
    }
    *out = native;
    pthread_mutex_unlock(&native_mu);
    return rc;
}
