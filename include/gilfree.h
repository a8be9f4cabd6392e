/* gilfree.h - gilfree's C API: run C work on gilfree's native worker pool,
 * with no GIL, from any C extension.
 *
 *     #include <gilfree.h>        // compile with -I$(python -c "import
 *                                 //   gilfree; print(gilfree.get_include())")
 *     const gilfree_capi *gf = gilfree_import();   // with the GIL held
 *     if (!gf) return NULL;                         // ImportError is set
 *     gf->parallel_for(my_kernel, my_data, n, 0);   // GIL released!
 *
 * The pool is process-wide: every extension and every interpreter shares
 * it (one worker per CPU), so cores are not oversubscribed.  Its threads
 * never touch a Python object; neither may your functions.  That is the
 * whole safety argument: a background C queue may run while Python runs
 * as long as everything it touches is plain C memory that no Python code
 * frees or moves meanwhile (keep the owning Python object alive, e.g. a
 * buffer you hold a Py_buffer on, until the work is done).
 */
#ifndef GILFREE_H
#define GILFREE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GILFREE_CAPI_NAME "gilfree._core._C_API"
#define GILFREE_CAPI_VERSION 1

/* A task: runs once on a worker; its return value is the task's result. */
typedef int64_t (*gilfree_task_fn)(void *arg);
/* A range body: called with disjoint [begin, end) chunks of an index range. */
typedef void (*gilfree_range_fn)(void *arg, int64_t begin, int64_t end);
/* Called on the worker, after the task, with its result. */
typedef void (*gilfree_done_fn)(void *done_arg, int64_t result);

typedef struct gilfree_capi {
    /* GILFREE_CAPI_VERSION of the library; newer versions only append. */
    unsigned int version;

    /* Queue fn(arg) on the native pool; then, if done is not NULL, call
     * done(done_arg, result) on the same worker.  Callable from any thread,
     * with or without a GIL.  Returns 0, or a negative error code (see
     * strerror), in which case neither fn nor done will ever run. */
    int (*submit)(gilfree_task_fn fn, void *arg, gilfree_done_fn done,
                  void *done_arg);

    /* Run fn over [0, n) in chunks of `chunksize` indices (0: choose) on
     * every worker, and return when all chunks have run.  It blocks: call
     * it with the GIL released (Py_BEGIN_ALLOW_THREADS).  Returns 0 or a
     * negative error code (nothing ran). */
    int (*parallel_for)(gilfree_range_fn fn, void *arg, int64_t n,
                        int64_t chunksize);

    /* A static message for an error code. */
    const char *(*strerror)(int err);

    /* Number of workers in the native pool (starting it if needed), or a
     * negative error code. */
    int (*workers)(void);
} gilfree_capi;

#ifdef Py_PYTHON_H
/* Import the C API (call with the GIL held).  NULL with an exception set
 * if gilfree is not installed or is older than this header. */
static inline const gilfree_capi *gilfree_import(void)
{
    const gilfree_capi *api =
        (const gilfree_capi *)PyCapsule_Import(GILFREE_CAPI_NAME, 0);
    if (api && api->version < GILFREE_CAPI_VERSION) {
        PyErr_SetString(PyExc_ImportError,
                        "gilfree is older than the gilfree.h this extension "
                        "was built with; upgrade gilfree");
        return NULL;
    }
    return api;
}
#endif

#ifdef __cplusplus
}
#endif

#endif /* GILFREE_H */
