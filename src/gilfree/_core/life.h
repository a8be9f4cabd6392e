/* life.h - the life every executor core shares, whatever runs its tasks
 * (executor.c: threads; remote.c: sub-interpreters and processes).
 *
 * A core is on its interpreter's list of its kind from creation, so that
 * interpreter exit and fork() find it.  shutdown() stops its pool taking
 * work (and, with cancel_futures, cancels what is queued); once the pool's
 * workers have all exited the core is reaped: taken off the list, its
 * executor object told (which then raises "cannot schedule new futures
 * after shutdown"), and freed.  An executor object that dies first lets
 * its core finish the queued work in the background, to be reaped later.
 * At interpreter exit every core is shut down and joined; at module free
 * the ones left are stopped without joining.
 *
 * Each core type embeds a gf_core_life as its first member and provides
 * the ops.  Everything here runs with the main GIL held.
 */
#ifndef GF_CORE_LIFE_H
#define GF_CORE_LIFE_H

#include "state.h"

typedef struct gf_core_life gf_core_life;

typedef struct gf_core_life_ops {
    /* The core and its executor object forget each other (the core is
     * reaped, or the object freed): each holds a borrowed pointer to the
     * other. */
    void (*detach_owner)(gf_core_life *life);
    /* Free the core: its workers have all exited. */
    void (*destroy)(gf_core_life *life);
    /* Dispose of a queued task that shutdown(cancel_futures=True) drained. */
    void (*cancel_drained)(gf_task *t, void *arg);
} gf_core_life_ops;

struct gf_core_life {
    const gf_core_life_ops *ops;
    module_state *st;
    gf_pool *pool;
    int shutdown;               /* no new work accepted */
    gf_core_life *next;         /* its interpreter's list of this kind */
};

/* Put a new core (its pool made) at the head of `list`. */
void gf_life_link(gf_core_life **list, gf_core_life *life);

/* Stop taking work; cancel_futures: cancel what is queued too. */
void gf_life_begin_shutdown(gf_core_life *life, int cancel_futures);

/* Join the workers of a shut-down core and reap it.  block: wait for them
 * (GIL released) or only reap if they have all exited.  1 if reaped, 0 if
 * still running, -1 with an exception (interrupted while blocking). */
int gf_life_reap(gf_core_life **list, gf_core_life *life, int block);

/* Reap every shut-down core of `list` whose workers have exited. */
void gf_life_reap_finished(gf_core_life **list);

/* An executor object's shutdown(wait=True, *, cancel_futures=False);
 * life may be NULL (reaped already). */
PyObject *gf_life_shutdown_method(gf_core_life **list, gf_core_life *life,
                                  PyObject *args, PyObject *kwds);

/* An executor object is being freed: its core goes on with the queued
 * work and is reaped once its workers exit. */
void gf_life_let_go(gf_core_life **list, gf_core_life *life);

/* Interpreter exit: shut down and join every core of `list`.  0, or -1
 * with an exception (interrupted). */
int gf_life_shutdown_all(gf_core_life **list);

/* Module free: cores still here were never shut down (the atexit hook did
 * not run).  Stop them without joining - a worker that needs the GIL now
 * would be ended by CPython's finalisation - and leave their memory to
 * the OS. */
void gf_life_abandon_all(gf_core_life **list);

/* An executor type's tp_init: the arguments were taken by tp_new; this
 * keeps Executor.__init__ of a Python base later in the MRO from seeing
 * them. */
int gf_life_tp_init(PyObject *self, PyObject *args, PyObject *kwds);

#endif /* GF_CORE_LIFE_H */
