/* life.c - the life every executor core shares (see life.h). */
#include "life.h"

void gf_life_link(gf_core_life **list, gf_core_life *life)
{
    life->next = *list;
    *list = life;
}

void gf_life_begin_shutdown(gf_core_life *life, int cancel_futures)
{
    life->shutdown = 1;
    if (cancel_futures)
        gf_pool_drain(life->pool, life->ops->cancel_drained, NULL);
    gf_pool_shutdown(life->pool);
}

int gf_life_reap(gf_core_life **list, gf_core_life *life, int block)
{
    int rc = gf_join_pool(life->pool, block);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    for (gf_core_life **pp = list; *pp; pp = &(*pp)->next) {
        if (*pp == life) {
            *pp = life->next;
            break;
        }
    }
    life->ops->detach_owner(life);
    life->ops->destroy(life);
    return 1;
}

void gf_life_reap_finished(gf_core_life **list)
{
    gf_core_life *life = *list;
    while (life) {
        gf_core_life *next = life->next;
        if (life->shutdown)
            (void)gf_life_reap(list, life, 0);
        life = next;
    }
}

PyObject *gf_life_shutdown_method(gf_core_life **list, gf_core_life *life,
                                  PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"wait", "cancel_futures", NULL};
    int wait = 1, cancel_futures = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p$p:shutdown", kwlist,
                                     &wait, &cancel_futures))
        return NULL;
    if (!life)
        Py_RETURN_NONE;
    gf_worker *self = gf_worker_current();
    if (self && gf_worker_pool(self) == life->pool)
        wait = 0;  /* a worker cannot wait for itself to exit */
    gf_life_begin_shutdown(life, cancel_futures);
    if (wait && gf_life_reap(list, life, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

void gf_life_let_go(gf_core_life **list, gf_core_life *life)
{
    /* Like the stdlib: a collected executor lets queued work finish in
     * the background; the core is reaped once its workers exit. */
    life->ops->detach_owner(life);
    if (!life->shutdown)
        gf_life_begin_shutdown(life, 0);
    gf_life_reap_finished(list);
}

int gf_life_shutdown_all(gf_core_life **list)
{
    for (gf_core_life *life = *list; life; life = life->next)
        if (!life->shutdown)
            gf_life_begin_shutdown(life, 0);
    while (*list)
        if (gf_life_reap(list, *list, 1) < 0)
            return -1;
    return 0;
}

void gf_life_abandon_all(gf_core_life **list)
{
    for (gf_core_life *life = *list; life; life = life->next)
        gf_pool_shutdown(life->pool);
    *list = NULL;
}

int gf_life_tp_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    (void)args;
    (void)kwds;
    return 0;
}
