/* proc_worker.c - the worker process's side of the processes backend, and
 * the zygote's one C duty.
 *
 * A worker process is forked by gilfree's zygote (_zygote.py) and calls
 * _proc_worker_main(chan_fd, sock_fd) on its main thread, which holds the
 * GIL except while it waits for the next record.  It reads its setup from
 * the first record, answers MSG_READY, then runs calls one at a time with
 * the same Python half as the interpreters backend (_worker.py) until
 * MSG_EXIT or until the parent's end of the channel closes.
 *
 * Before each call it stores the call's sequence number and start time in
 * the channel's control block: if the process dies, the parent knows which
 * call it was running; if the call has a timeout, the parent knows when it
 * started.
 */
#include "proc_wire.h"

#include "gf_park.h"

#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static int send_text(gf_chan *c, int sock, uint32_t type, uint64_t seq,
                     const char *text)
{
    msg_head h = {.type = type, .seq = seq};
    if (!text)
        text = "out of memory in a worker process";
    return wire_send(c, GF_CHAN_UP, sock, NULL, &h, text, strlen(text), NULL,
                     0, NULL, 0, 0, true);
}

/* The record's next length-prefixed piece, or NULL if it is cut short. */
static const char *take_piece(const char **p, const char *end, uint32_t *n)
{
    if (end - *p < 4)
        return NULL;
    memcpy(n, *p, 4);
    *p += 4;
    if ((size_t)(end - *p) < *n)
        return NULL;
    const char *piece = *p;
    *p += *n;
    return piece;
}

/* MSG_INIT -> the worker half's namespace and how long to spin for the
 * next call (the parent decides: proc.c, SPIN_NS), or NULL after telling
 * the parent why (MSG_BROKEN). */
static PyObject *setup(gf_chan *c, int sock, int64_t *spin_ns)
{
    wire_msg m;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = wire_recv(c, GF_CHAN_DOWN, sock, NULL, 0, -1, &m);
    Py_END_ALLOW_THREADS
    if (err)
        return NULL;  /* the parent is gone */
    *spin_ns = (int64_t)m.head.seq;
    const char *p = m.body, *end = m.body + m.head.body_len;
    uint32_t name_len, source_len;
    const char *name = take_piece(&p, end, &name_len);
    const char *source = name ? take_piece(&p, end, &source_len) : NULL;
    char *name_z = NULL, *source_z = NULL, *why = NULL;
    PyObject *ns = NULL;
    if (m.head.type != MSG_INIT || !source) {
        why = gf_strdup("corrupt setup record");
        goto done;
    }
    name_z = PyMem_RawMalloc(name_len + 1);
    source_z = PyMem_RawMalloc(source_len + 1);
    if (!name_z || !source_z)
        goto done;
    memcpy(name_z, name, name_len);
    name_z[name_len] = '\0';
    memcpy(source_z, source, source_len);
    source_z[source_len] = '\0';
    int initializer_failed;
    if (gf_worker_setup(source_z, p, end - p, name_z, &ns, &why,
                        &initializer_failed) < 0 && initializer_failed)
        why = gf_strdup("A process initializer failed, the process pool is "
                        "not usable anymore");
done:
    wire_done(c, GF_CHAN_DOWN, &m);
    PyMem_RawFree(name_z);
    PyMem_RawFree(source_z);
    int sent = ns ? send_text(c, sock, MSG_READY, 0, "")
                  : send_text(c, sock, MSG_BROKEN, 0, why);
    free(why);
    if (sent != 0)
        Py_CLEAR(ns);
    return ns;
}

/* An outcome wakes the proxy only when at most this many calls it sent
 * are left to run: with more queued, the proxy would wake to find the next
 * outcome not ready yet and sleep again - a futex round trip per call,
 * most of a short call's cost.  The outcome is published all the same,
 * and a later one (the last calls always wake) wakes the proxy for the
 * lot; the proxy also looks every millisecond while calls are queued
 * (proc.c, wait_head). */
#define WAKE_WHEN_LEFT 4

/* Pin what the worker half returned - bytes, or (bytes, [buffers]) - and
 * send it up as call seq's outcome. */
static int send_outcome(gf_chan *c, int sock, wire_slabs *slabs,
                        uint64_t seq, PyObject *r)
{
    PyObject *body = r, *list = NULL;
    if (PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2) {
        body = PyTuple_GET_ITEM(r, 0);
        list = PyTuple_GET_ITEM(r, 1);
    }
    if (!PyBytes_Check(body) || (list && !PyList_Check(list))
        || (list && PyList_GET_SIZE(list) >= GF_FDS_MAX)) {
        PyErr_SetString(PyExc_TypeError, "the worker half returned an "
                                         "unexpected outcome");
        return -1;
    }
    int n = list ? (int)PyList_GET_SIZE(list) : 0;
    Py_buffer views[GF_FDS_MAX];
    remote_buffer bufs[GF_FDS_MAX];
    int pinned = 0, err = 0;
    for (; pinned < n; pinned++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(list, pinned), &views[pinned],
                               PyBUF_SIMPLE) < 0)
            break;
        bufs[pinned].addr = views[pinned].buf;
        bufs[pinned].len = (size_t)views[pinned].len;
        bufs[pinned].slab = NULL;
    }
    if (pinned == n) {
        msg_head h = {.type = MSG_RESULT, .seq = seq};
        /* acquire: pairs with the proxy's release of `sent` (launch). */
        uint64_t sent = atomic_load_explicit(&gf_chan_control(c)->sent,
                                             memory_order_acquire);
        bool wake = sent <= seq + WAKE_WHEN_LEFT;
        Py_BEGIN_ALLOW_THREADS
        err = wire_send(c, GF_CHAN_UP, sock, slabs, &h, PyBytes_AS_STRING(body),
                        (size_t)PyBytes_GET_SIZE(body), NULL, 0, bufs, n, 0,
                        wake);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < pinned; i++)
        PyBuffer_Release(&views[i]);
    if (pinned < n)
        return -1;
    if (err)
        gf_raise(err, "sending an outcome to the parent");
    return err ? -1 : 0;
}

/* Run one MSG_CALL / MSG_CHUNK and answer it - unless the parent took it
 * back (proc.c, revoke): the ticket CAS decides which side has it.  -1:
 * the channel broke. */
static int serve(module_state *st, gf_chan *c, int sock, wire_slabs *slabs,
                 PyObject *ns, wire_msg *m)
{
    gf_chan_ctl *ctl = gf_chan_control(c);
    uint64_t expected = m->head.seq - 1;
    if (!atomic_compare_exchange_strong_explicit(
            &ctl->ticket, &expected, m->head.seq, memory_order_acq_rel,
            memory_order_acquire)) {
        wire_done(c, GF_CHAN_DOWN, m);  /* taken back: another worker runs it */
        return 0;
    }
    PyObject *buffers = NULL;
    if (m->nbufs && !(buffers = gf_shared_buffer_list(st, m->bufs, m->nbufs)))
        PyErr_Clear();
    atomic_store_explicit(&ctl->started_ns, gf_now_ns(), memory_order_relaxed);
    /* release: a parent that sees `running` sees started_ns too. */
    atomic_store_explicit(&ctl->running, m->head.seq, memory_order_release);
    int kind = m->head.type == MSG_CHUNK ? KIND_CHUNK : KIND_CALL;
    size_t fn_len = kind == KIND_CALL ? m->head.fn_len : 0;
    PyObject *r = NULL;
    if (fn_len <= m->head.body_len && (buffers || !m->nbufs))
        r = gf_worker_call(ns, kind, m->body, (Py_ssize_t)fn_len,
                           (m->head.flags & MSG_FN_CACHED) != 0,
                           m->body + fn_len,
                           (Py_ssize_t)(m->head.body_len - fn_len), buffers);
    else if (!PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "corrupt call record");
    Py_XDECREF(buffers);
    uint64_t seq = m->head.seq;
    wire_done(c, GF_CHAN_DOWN, m);
    int rc = r ? send_outcome(c, sock, slabs, seq, r) : -1;
    Py_XDECREF(r);
    if (rc < 0) {
        char *why = gf_exception_text("the worker process could not run or "
                                      "answer this call: ");
        rc = send_text(c, sock, MSG_FAILED, seq, why) == 0 ? 0 : -1;
        free(why);
    }
    atomic_store_explicit(&ctl->running, 0, memory_order_relaxed);
    return rc;
}

/* _proc_worker_main(chan_fd, sock_fd, zygote_pid, /) -> exit status */
static PyObject *proc_worker_main(PyObject *module, PyObject *const *args,
                                  Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError,
                            "expected (chan_fd, sock_fd, zygote_pid)");
    int chan_fd = (int)PyLong_AsLong(args[0]);
    int sock = (int)PyLong_AsLong(args[1]);
    pid_t zygote = (pid_t)PyLong_AsLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    /* Die with the zygote (which dies with the parent); if it is gone
     * already, the parent is too. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != zygote)
        return PyLong_FromLong(1);
    module_state *st = state_of_module(module);
    gf_chan *c;
    int err = gf_chan_map(chan_fd, &c);
    close(chan_fd);
    if (err)
        return gf_raise(err, "mapping the worker's channel");
    atomic_store_explicit(&gf_chan_control(c)->pid, (uint32_t)getpid(),
                          memory_order_relaxed);
    int64_t spin_ns = 0;
    wire_slabs slabs = {0};
    PyObject *ns = setup(c, sock, &spin_ns);
    int status = ns ? 0 : 1;
    while (ns) {
        wire_msg m;
        Py_BEGIN_ALLOW_THREADS
        err = wire_recv(c, GF_CHAN_DOWN, sock, &slabs, spin_ns, -1, &m);
        Py_END_ALLOW_THREADS
        if (err == GF_EINTR) {
            if (PyErr_CheckSignals() < 0)
                PyErr_Clear();  /* SIGINT is ignored here; others: go on */
            continue;
        }
        if (err)
            break;  /* the parent closed the channel, or it broke */
        if (m.head.type == MSG_EXIT) {
            wire_done(c, GF_CHAN_DOWN, &m);
            break;
        }
        if (serve(st, c, sock, &slabs, ns, &m) < 0)
            break;
    }
    Py_XDECREF(ns);
    wire_slabs_reset(&slabs);
    gf_chan_close(c, GF_CHAN_UP);
    gf_chan_unmap(c);
    close(sock);
    return PyLong_FromLong(status);
}

/* _proc_mark_exited(chan_fd, wait_status, /): the zygote reaped a worker:
 * record how it ended and close its channel, which wakes its proxy. */
static PyObject *proc_mark_exited(PyObject *module, PyObject *const *args,
                                  Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "expected (chan_fd, status)");
    int fd = (int)PyLong_AsLong(args[0]);
    int status = (int)PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    gf_chan *c;
    int err = gf_chan_map(fd, &c);
    if (err)
        return gf_raise(err, "mapping a worker's channel");
    gf_chan_ctl *ctl = gf_chan_control(c);
    atomic_store_explicit(&ctl->exit_status, status, memory_order_relaxed);
    /* release: the proxy that reads exited == 1 sees the status. */
    atomic_store_explicit(&ctl->exited, 1, memory_order_release);
    gf_futex_wake(&ctl->exited, INT32_MAX, true);
    gf_chan_close(c, GF_CHAN_UP);
    gf_chan_close(c, GF_CHAN_DOWN);
    gf_chan_unmap(c);
    Py_RETURN_NONE;
}

static PyMethodDef proc_worker_functions[] = {
    {"_proc_worker_main", (PyCFunction)(void (*)(void))proc_worker_main,
     METH_FASTCALL,
     "_proc_worker_main($module, chan_fd, sock_fd, zygote_pid, /)\n--\n\n"
     "Serve calls in a worker process; the exit status when done."},
    {"_proc_mark_exited", (PyCFunction)(void (*)(void))proc_mark_exited,
     METH_FASTCALL,
     "_proc_mark_exited($module, chan_fd, wait_status, /)\n--\n\n"
     "Record a reaped worker's wait status and close its channel."},
    {NULL, NULL, 0, NULL},
};

int gf_proc_worker_register(PyObject *module)
{
    return PyModule_AddFunctions(module, proc_worker_functions);
}
