/* remote.h - the executor core shared by the backends whose workers do
 * not run in the caller's interpreter: `interpreters` (a sub-interpreter
 * per worker thread, interp.c) and `processes` (a worker process per
 * worker thread, proc.c).
 *
 * Both speak the same protocol: submit() pickles the call in the main
 * interpreter; the call's bytes travel to the worker; the worker sends
 * back the pickled (ok, value | encoded exception) tuple, which the main
 * interpreter unpickles when someone looks at the future (foreign.h: these
 * futures are finished by threads that do not hold the main GIL).  What
 * differs is how a worker thread gets the bytes to the code that runs
 * them, and that is all a backend provides: a remote_backend.
 *
 * One C type, _core.RemoteExecutor, serves both; the Python classes
 * (InterpreterPoolExecutor, ProcessPoolExecutor) pick the backend when
 * they construct it.
 */
#ifndef GF_CORE_REMOTE_H
#define GF_CORE_REMOTE_H

#include "foreign.h"
#include "life.h"

enum remote_kind { REMOTE_INTERPRETERS = 0, REMOTE_PROCESSES = 1 };

enum call_kind { KIND_CALL, KIND_CHUNK };

/* How a call ended; the outcome (main GIL) turns it into a value or an
 * exception.  Every status but PICKLED carries a C-string message in out
 * (NULL: out of memory), which the codec's `failure` hook makes into the
 * backend's exception. */
enum call_status {
    STATUS_NONE,      /* the worker never stored an outcome */
    STATUS_PICKLED,   /* out/out_len: the pickled (ok, ...) tuple */
    STATUS_BROKEN,    /* the pool cannot run tasks (initializer failed...) */
    STATUS_FAILED,    /* this worker could not run it (and is replaced) */
    STATUS_CRASHED,   /* the worker process died running it; code = the
                         exit status as multiprocessing's exitcode */
    STATUS_TIMEDOUT,  /* it ran past its timeout; the worker was replaced */
};

struct gf_slab;

/* An out-of-band buffer of an outcome: a shared mapping the outcome hands
 * to a _core.SharedBuffer (which frees it when the last view is gone). */
typedef struct remote_buffer {
    void *addr;
    size_t len;
    /* NULL: addr is a mapping of its own.  Else addr lies in this slab,
     * and the buffer holds one reference and one hold on it. */
    struct gf_slab *slab;
} remote_buffer;

/* Let go of a buffer's memory (unmap, or drop its slab reference and
 * hold); addr becomes NULL.  No Python: any thread. */
void gf_remote_buffer_free(remote_buffer *buf);

typedef struct remote_call {
    foreign_call base;          /* first: foreign.c allocates us */
    struct remote_core *core;   /* alive while the call is unfinished */
    const char *data;           /* the pickled task: the keepalive's bytes */
    Py_ssize_t len;
    const char *fn_data;        /* KIND_CALL: the pickled fn, also kept */
    Py_ssize_t fn_len;          /* alive by the keepalive */
    unsigned char fn_cached;    /* fn pickles by reference: the worker may
                                   reuse what it unpickled last time */
    unsigned char kind;         /* enum call_kind */
    unsigned char status;       /* enum call_status, written by the worker */
    int64_t timeout_ns;         /* < 0: none; from the start of the run */
    /* The call's out-of-band buffers (processes): pinned views, released
     * with the keepalive. */
    Py_buffer *in_bufs;
    int n_in_bufs;
    /* The outcome, written by the worker thread. */
    char *out;                  /* malloc'd, see status */
    size_t out_len;
    int code;                   /* STATUS_CRASHED: exitcode */
    int pid;                    /* STATUS_CRASHED: the worker process */
    remote_buffer *out_bufs;    /* malloc'd array, see remote_buffer */
    int n_out_bufs;
} remote_call;

typedef struct remote_core remote_core;

/* What a backend provides.  The hooks run on the core's worker threads,
 * which hold no GIL between tasks (see gf_pool.h for the hooks). */
typedef struct remote_backend {
    const char *noun;   /* "interpreter" or "process", for messages */
    gf_task_fn run;     /* runs one remote_call's future task */
    int (*on_start)(gf_worker *w, void *core);
    void (*on_stop)(gf_worker *w, void *core);
    /* Main GIL held.  A fork must never see this backend's workers
     * (sub-interpreters): stop them before, start them again after. */
    int stop_for_fork;
    /* Main GIL held, when a core is created: 0, or -1 with an exception. */
    int (*init_core)(remote_core *core);
    /* Main GIL held, in a forked child: forget the parent's workers. */
    void (*after_fork_child)(remote_core *core);
    /* Main GIL held, once the core's workers have all exited. */
    void (*free_core)(remote_core *core);
    /* Optional, main GIL held: cancel() of a call a worker has claimed, on
     * a core made with kill_on_cancel (foreign_ops.cancel_running). */
    int (*cancel_running)(remote_core *core, remote_call *rc);
} remote_backend;

/* Lives in C memory: a worker may read it after the executor object died
 * (the core is freed only once every worker has exited). */
struct remote_core {
    gf_core_life life;          /* first: pool, shutdown, st->remote_cores */
    const remote_backend *backend;
    enum remote_kind kind;
    module_state *st;
    int max_workers;
    int max_tasks_per_child;    /* 0: no limit */
    int kill_on_cancel;         /* cancel() may stop a running call */
    int zygote_fd;              /* processes: the socket of a zygote of
                                   this pool's own (duplicated), or -1 */
    /* Whether a proxy and its worker process spin before they sleep on
     * their channel (proc.c, SPIN_NS). */
    int spin;
    char *source;               /* _worker.py, the worker's Python half */
    char *init;                 /* pickled (sys.path, __main__ file, ...) */
    Py_ssize_t init_len;
    char *name_prefix;          /* names "<prefix>_<i>" */
    _Atomic(char *) broken;     /* NULL or the reason the pool broke */
    void *impl;                 /* the backend's own state */
    /* The executor object that points here (borrowed), cleared by either
     * side when it lets go: a core reaped at exit must not leave the
     * object a dangling pointer. */
    struct RemoteExecutorObject *owner;
    /* tasks taken out of the queue before a fork, given back after it */
    gf_task *parked_head, **parked_tail;
};

/* ---- for the backends ---------------------------------------------------- */

extern const remote_backend gf_interp_backend;   /* NULL-run on 3.11 */
extern const remote_backend gf_proc_backend;

char *gf_strdup(const char *s);                  /* malloc'd or NULL */
/* The pool cannot run tasks any more (first reason wins; `message` is
 * taken over, NULL means "out of memory"). */
void gf_remote_mark_broken(remote_core *core, char *message);
/* Store a C-string outcome; `text` is taken over (NULL: out of memory). */
void gf_remote_store_text(remote_call *rc, enum call_status status,
                          char *text);
/* The remote_call of a queued future task. */
remote_call *gf_remote_call_of(gf_task *t);

/* A _core.SharedBuffer taking over buf's mapping (buf->addr becomes NULL);
 * a list of them for n buffers.  New references, or NULL with an
 * exception set. */
PyObject *gf_shared_buffer_new(module_state *st, remote_buffer *buf);
PyObject *gf_shared_buffer_list(module_state *st, remote_buffer *bufs, int n);

/* ---- the worker's Python half (_worker.py), in the worker's interpreter -- */

/* Run the worker source in a fresh namespace and call its
 * setup(init, name).  0 with *ns, or -1 with no exception set and either
 * *initializer_failed = 1 (the user's initializer raised and printed its
 * traceback) or a malloc'd reason in *why. */
int gf_worker_setup(const char *source, const char *init, Py_ssize_t init_len,
                    const char *name, PyObject **ns, char **why,
                    int *initializer_failed);

/* Run one call with the worker half: run(fn_data, data, cached[, buffers])
 * or run_chunk(data[, buffers]), the data read in place through memoryviews
 * that are released before returning.  The result as the worker half made
 * it (bytes, or (bytes, [buffers]) for processes), or NULL with an
 * exception set. */
PyObject *gf_worker_call(PyObject *ns, int kind, const char *fn_data,
                         Py_ssize_t fn_len, int fn_cached, const char *data,
                         Py_ssize_t len, PyObject *buffers);

#endif /* GF_CORE_REMOTE_H */
