/* proc.c - the processes backend's parent side (remote.h): each worker
 * thread of the core's gf_pool is the *proxy* of one worker process.  It
 * takes a call from the pool, writes its bytes into the process's channel,
 * waits for the outcome and stores it in the call - all without the GIL:
 * the main interpreter unpickles the outcome when somebody looks at the
 * future (foreign.h).  No Python thread shuffles bytes.
 *
 * Worker processes come from gilfree's zygote (_zygote.py): a clean Python
 * process, exec'd once, that forks a worker per request.  A proxy asks for
 * one over the zygote's socket, handing it the channel's memfd and one end
 * of a socket pair for descriptors; the zygote reaps its children and
 * records each one's wait status in its channel, then closes the channel,
 * which wakes the proxy (_proc_mark_exited).  The zygote exits when its
 * socket closes: when the last process pool is gone, or when the parent
 * dies - and its workers follow it (PR_SET_PDEATHSIG).
 *
 * Faults: a worker that dies fails the call it was running (its number is
 * in the channel's control block) with its exit code or signal; the proxy
 * starts a new process for the next call.  A call with a timeout that runs
 * too long gets its worker killed (pidfd, so never a recycled pid) and
 * fails with TimeoutError.
 */
#include "proc_wire.h"

#include "gf_park.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Spinning on the channel pays only with a core to spare for it: when
 * this process's CPUs outnumber the worker processes plus the caller
 * (core->spin, remote.c), proxies and workers spin this long before they
 * sleep on the futex; otherwise they sleep at once.  On 2 cores, spinning
 * there made round trips slower (25-45 us against 14-35 us), while the
 * pool's and the caller's own short spins still paid. */
#define SPIN_NS 50000
/* Calls kept in a process's ring at once, when calls are shorter than
 * PIPELINE_SHORT_NS. */
#define PIPELINE_MAX 16
#define PIPELINE_SHORT_NS 100000
/* A call that has run this long with calls queued behind it in its
 * process's ring gets them taken back (revoke), so that idle workers can
 * run them instead of waiting behind it. */
#define REVOKE_AFTER_NS 1000000
/* While it sleeps it wakes this often to check that the process lives
 * (the zygote may be gone, and with it the exit notice). */
#define LIVENESS_POLL_NS 100000000
/* How often a proxy looks whether a cancelled call its process has claimed
 * has started (to kill it) or finished (to drop its outcome). */
#define CANCEL_POLL_NS 1000000
/* A worker told to exit gets this long before it is killed. */
#define EXIT_GRACE_NS 5000000000LL

/* The zygote's socket, shared by the process pools of this interpreter:
 * one request at a time (the mutex), open while a pool uses it.  A pool
 * lets go when the last worker thread of a shut-down pool exits (or when
 * the pool is freed, if it never started one), from whichever thread that
 * is: so `refs` is atomic and the socket is closed by whoever drops it to
 * zero.  The struct itself is freed under the main GIL once closed and
 * unreferenced (a new zygote replaces it in st->zygote). */
typedef struct proc_zygote {
    int fd;
    pthread_mutex_t mu;
    _Atomic int refs;           /* pools holding it */
} proc_zygote;

typedef struct pworker pworker;

/* A process pool's state (core->impl). */
typedef struct proc_core {
    proc_zygote *zygote;
    _Atomic int live_workers;   /* worker threads started and not stopped */
    _Atomic int released;       /* its zygote reference was dropped */
    /* For cancel(), which wakes the proxies from the caller's thread: the
     * proxies by index, and their channels, which a proxy replaces only
     * with the mutex held (its own reads need no lock). */
    pthread_mutex_t mu;
    pworker **proxies;          /* max_workers slots */
    /* Its zygote is its own (start method "fork": forked from the caller
     * when the pool was made), not st->zygote; freed with the pool. */
    int own_zygote;
} proc_core;

static void zygote_unref(proc_zygote *z)
{
    /* acq_rel: the closer sees every request made under the other refs. */
    if (atomic_fetch_sub_explicit(&z->refs, 1, memory_order_acq_rel) == 1)
        close(z->fd);  /* the zygote sees end-of-file and exits */
}

static void release_zygote(proc_core *pc)
{
    if (!atomic_exchange_explicit(&pc->released, 1, memory_order_acq_rel))
        zygote_unref(pc->zygote);
}

/* Main GIL held: whether a process pool still holds a reference to z. */
static int zygote_in_use(module_state *st, proc_zygote *z)
{
    for (gf_core_life *l = st->remote_cores; l; l = l->next) {
        remote_core *c = (remote_core *)l;
        proc_core *pc = c->kind == REMOTE_PROCESSES ? c->impl : NULL;
        if (pc && pc->zygote == z
            && !atomic_load_explicit(&pc->released, memory_order_acquire))
            return 1;
    }
    return 0;
}

static void free_zygote(proc_zygote *z)
{
    pthread_mutex_destroy(&z->mu);
    free(z);
}

/* A worker thread's state: the process it is the proxy of. */
struct pworker {
    remote_core *core;
    proc_zygote *zygote;
    gf_chan *chan;              /* NULL: no process now */
    int sock;                   /* our end of the descriptor socket */
    int pidfd;                  /* -1 where pidfd_open is missing */
    pid_t pid;
    uint64_t seq;               /* the last call's number */
    int calls;                  /* answered by this process */
    int64_t recent_ns;          /* smoothed time per call (0: unknown) */
    int64_t spin_ns;            /* spin before sleeping for an outcome */
    int index;
    wire_slabs slabs;           /* shared with the process (proc.h) */
};

/* Set or clear the channel others may poke (proc_core.mu). */
static void publish_chan(pworker *pw, gf_chan *chan)
{
    proc_core *pc = pw->core->impl;
    pthread_mutex_lock(&pc->mu);
    pw->chan = chan;
    pthread_mutex_unlock(&pc->mu);
}

/* ---- the worker process's life ------------------------------------------- */

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* By pidfd where there is one: the pid could in principle be reused once
 * the zygote reaps the process; the pidfd names this process only.  The
 * plain kill() is the fallback for kernels without pidfds (the zygote
 * reaps only after a death, so the pid is still this process's then). */
static void kill_process(pworker *pw)
{
#ifdef SYS_pidfd_send_signal
    if (pw->pidfd >= 0
        && syscall(SYS_pidfd_send_signal, pw->pidfd, SIGKILL, NULL, 0) == 0)
        return;
#endif
    kill(pw->pid, SIGKILL);
}

/* Whether the process has exited, by its pidfd (readable once it has). */
static int process_gone(pworker *pw)
{
    if (pw->pidfd < 0)
        return kill(pw->pid, 0) != 0 && errno == ESRCH;
    struct pollfd p = {.fd = pw->pidfd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

/* Wait until the zygote has reaped the process (or, with no zygote, until
 * it is gone), killing it after `grace_ns`.  Returns its wait status, or
 * -1 when nobody could tell. */
static int wait_exit(pworker *pw, int64_t grace_ns)
{
    gf_chan_ctl *ctl = gf_chan_control(pw->chan);
    int64_t deadline = gf_now_ns() + grace_ns;
    int killed = 0;
    while (!atomic_load_explicit(&ctl->exited, memory_order_acquire)) {
        if (process_gone(pw)) {
            /* The zygote reaps it within microseconds if it is there. */
            (void)gf_futex_wait(&ctl->exited, 0, 20000000, true);
            if (!atomic_load_explicit(&ctl->exited, memory_order_acquire))
                return -1;
            break;
        }
        if (!killed && gf_now_ns() >= deadline) {
            kill_process(pw);
            killed = 1;
        }
        (void)gf_futex_wait(&ctl->exited, 0, 20000000, true);
    }
    return atomic_load_explicit(&ctl->exit_status, memory_order_relaxed);
}

static void forget_process(pworker *pw)
{
    gf_chan *chan = pw->chan;
    if (chan) {
        publish_chan(pw, NULL);
        gf_chan_unmap(chan);
    }
    if (pw->sock >= 0)
        close(pw->sock);
    if (pw->pidfd >= 0)
        close(pw->pidfd);
    /* A process that died may hold our slabs: new ones for the next. */
    wire_slabs_reset(&pw->slabs);
    pw->sock = pw->pidfd = -1;
    pw->pid = 0;
    pw->calls = 0;
    pw->seq = 0;  /* a new process's ticket starts at 0 */
}

/* Tell the process to finish, wait until it has, and forget it. */
static void retire(pworker *pw)
{
    msg_head h = {.type = MSG_EXIT};
    if (wire_send(pw->chan, GF_CHAN_DOWN, pw->sock, NULL, &h, NULL, 0, NULL, 0,
                  NULL, 0, 0, true) != 0)
        kill_process(pw);
    (void)wait_exit(pw, EXIT_GRACE_NS);
    forget_process(pw);
}

/* Ask the zygote for a process on channel fd, handing it the worker's end
 * of the descriptor socket.  0 with pw->pid, or -1 with a reason. */
static int fork_from_zygote(pworker *pw, int chan_fd, int worker_sock,
                            char **why)
{
    proc_zygote *z = pw->zygote;
    int32_t request[2] = {'S', pw->index}, reply = 0;
    int fds[2] = {chan_fd, worker_sock}, nfds = 0;
    size_t got = 0;
    pthread_mutex_lock(&z->mu);
    int err = gf_fd_send(z->fd, request, sizeof request, fds, 2);
    if (!err)
        do {
            err = gf_fd_recv(z->fd, &reply, sizeof reply, &got, NULL, 0,
                             &nfds, 30000000000LL);
        } while (err == GF_EINTR);
    pthread_mutex_unlock(&z->mu);
    if (!err && (got != sizeof reply || reply <= 0))
        err = GF_ESYS, errno = reply < 0 ? -reply : EPROTO;
    if (err) {
        char text[256];
        snprintf(text, sizeof text,
                 "could not start a worker process: gilfree's zygote %s (%s)",
                 err == GF_EPIPE ? "is gone" : "failed", strerror(errno));
        *why = gf_strdup(text);
        return -1;
    }
    pw->pid = reply;
    return 0;
}

/* The MSG_INIT payload: name, source, init blob. */
static int send_init(pworker *pw)
{
    remote_core *core = pw->core;
    char name[128];
    int n = snprintf(name, sizeof name, "%s_%d", core->name_prefix,
                     pw->index);
    uint32_t name_len = (uint32_t)(n < (int)sizeof name ? n
                                                        : (int)sizeof name - 1);
    uint32_t source_len = (uint32_t)strlen(core->source);
    size_t len = 8 + name_len + source_len + (size_t)core->init_len;
    char *payload = malloc(len);
    if (!payload)
        return GF_ENOMEM;
    char *p = payload;
    memcpy(p, &name_len, 4);
    memcpy(p + 4, name, name_len);
    p += 4 + name_len;
    memcpy(p, &source_len, 4);
    memcpy(p + 4, core->source, source_len);
    p += 4 + source_len;
    memcpy(p, core->init, (size_t)core->init_len);
    msg_head h = {.type = MSG_INIT, .seq = (uint64_t)pw->spin_ns};
    int err = wire_send(pw->chan, GF_CHAN_DOWN, pw->sock, NULL, &h, payload,
                        len, NULL, 0, NULL, 0, 0, true);
    free(payload);
    return err;
}

/* Start a worker process and wait until it is ready.  0, or -1 with a
 * malloc'd reason (the pool is then broken). */
static int spawn(pworker *pw, char **why)
{
    int chan_fd = -1, sv[2] = {-1, -1};
    gf_chan *chan = NULL;
    int err = gf_chan_create(PROC_RING_BYTES, "gilfree-worker", &chan_fd,
                             &chan);
    if (!err)
        publish_chan(pw, chan);
    if (!err && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        err = GF_ESYS;
    if (err) {
        char text[200];
        snprintf(text, sizeof text, "could not start a worker process: %s "
                 "(%s)", gf_strerror(err), strerror(errno));
        *why = gf_strdup(text);
        if (chan_fd >= 0)
            close(chan_fd);
        forget_process(pw);
        return -1;
    }
    pw->sock = sv[0];
    /* The setup record waits in the ring for the process to read it. */
    err = send_init(pw);
    int rc = err ? -1 : fork_from_zygote(pw, chan_fd, sv[1], why);
    close(chan_fd);
    close(sv[1]);
    if (err)
        *why = gf_strdup("could not send a worker process its setup");
    if (rc < 0 || err) {
        forget_process(pw);
        return -1;
    }
    pw->pidfd = pidfd_open_(pw->pid);
    wire_msg m;
    do {
        err = wire_recv(pw->chan, GF_CHAN_UP, pw->sock, NULL, 0,
                        LIVENESS_POLL_NS, &m);
    } while ((err == GF_ETIMEDOUT || err == GF_EINTR) && !process_gone(pw));
    if (!err && m.head.type == MSG_READY) {
        wire_done(pw->chan, GF_CHAN_UP, &m);
        return 0;
    }
    if (!err && m.head.type == MSG_BROKEN) {
        *why = malloc(m.head.body_len + 1);
        if (*why) {
            memcpy(*why, m.body, m.head.body_len);
            (*why)[m.head.body_len] = '\0';
        }
        wire_done(pw->chan, GF_CHAN_UP, &m);
    } else {
        if (!err)
            wire_done(pw->chan, GF_CHAN_UP, &m);
        *why = gf_strdup("a worker process died while it started (see its "
                         "output above)");
    }
    (void)wait_exit(pw, EXIT_GRACE_NS);
    forget_process(pw);
    return -1;
}

/* ---- the pool's hooks ------------------------------------------------------ */

static int on_start(gf_worker *w, void *ctx)
{
    remote_core *core = ctx;
    pworker *pw = calloc(1, sizeof *pw);
    if (!pw) {
        gf_remote_mark_broken(core, gf_strdup("out of memory starting a "
                                              "worker"));
        return -1;
    }
    proc_core *pc = core->impl;
    atomic_fetch_add_explicit(&pc->live_workers, 1, memory_order_relaxed);
    pw->core = core;
    pw->zygote = pc->zygote;
    pw->index = gf_worker_index(w);
    pw->sock = pw->pidfd = -1;
    pw->spin_ns = core->spin ? SPIN_NS : 0;
    gf_worker_set_data(w, pw);
    pthread_mutex_lock(&pc->mu);
    pc->proxies[pw->index] = pw;
    pthread_mutex_unlock(&pc->mu);
    return 0;  /* the process starts with the first call */
}

static void on_stop(gf_worker *w, void *ctx)
{
    remote_core *core = ctx;
    proc_core *pc = core->impl;
    pworker *pw = gf_worker_data(w);
    if (pw->chan)
        retire(pw);
    pthread_mutex_lock(&pc->mu);
    pc->proxies[pw->index] = NULL;
    pthread_mutex_unlock(&pc->mu);
    free(pw);
    /* Workers stop only at shutdown: the last one lets the zygote go, so
     * that a pool dropped with work pending frees it once the work is
     * done, without waiting for the next gilfree call to reap the pool. */
    if (atomic_fetch_sub_explicit(&pc->live_workers, 1, memory_order_acq_rel)
            == 1
        && gf_pool_is_shutdown(gf_worker_pool(w)))
        release_zygote(pc);
}

/* ---- one call ------------------------------------------------------------ */

static char *crash_text(pid_t pid, int status, int *code)
{
    char text[256];
    if (status == -1) {
        *code = 0;
        snprintf(text, sizeof text, "the worker process (pid %d) running this "
                 "task died; its exit status is unknown (gilfree's zygote "
                 "process is gone)", (int)pid);
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        *code = -sig;
        const char *name = sigabbrev_np(sig);
        snprintf(text, sizeof text, "the worker process (pid %d) running this "
                 "task was killed by signal %d (SIG%s); the pool replaced it",
                 (int)pid, sig, name ? name : "?");
    } else {
        *code = WEXITSTATUS(status);
        snprintf(text, sizeof text, "the worker process (pid %d) running this "
                 "task exited with code %d; the pool replaced it", (int)pid,
                 *code);
    }
    return gf_strdup(text);
}

/* The outcome record of call seq: take it into rc. */
static void take_outcome(remote_call *rc, wire_msg *m)
{
    size_t n = m->head.body_len;
    char *out = malloc(n ? n : 1);
    if (!out) {
        gf_remote_store_text(rc, STATUS_FAILED, NULL);
        return;
    }
    memcpy(out, m->body, n);
    if (m->head.type == MSG_FAILED) {
        char *text = realloc(out, n + 1);
        if (text)
            text[n] = '\0';
        gf_remote_store_text(rc, STATUS_FAILED, text ? text : out);
        return;
    }
    rc->status = STATUS_PICKLED;
    rc->out = out;
    rc->out_len = n;
    if (m->nbufs) {
        rc->out_bufs = malloc(sizeof(remote_buffer) * (size_t)m->nbufs);
        if (rc->out_bufs) {
            memcpy(rc->out_bufs, m->bufs, sizeof(remote_buffer)
                                              * (size_t)m->nbufs);
            rc->n_out_bufs = m->nbufs;
            m->nbufs = 0;  /* taken over */
        } else {
            free(out);
            rc->out = NULL;
            gf_remote_store_text(rc, STATUS_FAILED, NULL);
        }
    }
}

/* Send call rc as number seq.  0 or a GF_E* code. */
static int send_call(pworker *pw, remote_call *rc, uint64_t seq)
{
    remote_buffer bufs[GF_FDS_MAX];
    if (rc->n_in_bufs > GF_FDS_MAX - 1)
        return GF_EINVAL;
    for (int i = 0; i < rc->n_in_bufs; i++) {
        bufs[i].addr = rc->in_bufs[i].buf;
        bufs[i].len = (size_t)rc->in_bufs[i].len;
        bufs[i].slab = NULL;
    }
    msg_head h = {
        .type = rc->kind == KIND_CHUNK ? MSG_CHUNK : MSG_CALL,
        .flags = rc->fn_cached ? MSG_FN_CACHED : 0,
        .seq = seq,
        .fn_len = (uint64_t)(rc->kind == KIND_CHUNK ? 0 : rc->fn_len),
    };
    return wire_send(pw->chan, GF_CHAN_DOWN, pw->sock, &pw->slabs, &h,
                     rc->fn_data, (size_t)h.fn_len, rc->data, (size_t)rc->len,
                     bufs, rc->n_in_bufs, 0, true);
}

/* How long to sleep before looking again: until the call's deadline if it
 * has one and has started, else a liveness poll.  0: the deadline passed. */
static int64_t next_wait(pworker *pw, remote_call *rc, uint64_t seq)
{
    if (rc->timeout_ns < 0)
        return LIVENESS_POLL_NS;
    gf_chan_ctl *ctl = gf_chan_control(pw->chan);
    if (atomic_load_explicit(&ctl->running, memory_order_acquire) != seq)
        return LIVENESS_POLL_NS;
    int64_t left = atomic_load_explicit(&ctl->started_ns, memory_order_relaxed)
                   + rc->timeout_ns - gf_now_ns();
    if (left <= 0)
        return 0;
    return left < LIVENESS_POLL_NS ? left : LIVENESS_POLL_NS;
}

/* Calls in flight on one process, oldest first: the process answers them
 * in order. */
typedef struct inflight {
    gf_task *tasks[PIPELINE_MAX];
    uint64_t seqs[PIPELINE_MAX];
    int head, count;
} inflight;

static gf_task *inflight_at(inflight *q, int i)
{
    return q->tasks[(q->head + i) % PIPELINE_MAX];
}

enum head_end {
    HEAD_ANSWERED,    /* its outcome is in the call */
    HEAD_CRASHED,     /* its process died running it */
    HEAD_TIMED_OUT,   /* it ran past its timeout: its process was killed */
    HEAD_CANCELLED,   /* cancelled while it ran: its process was killed */
    HEAD_NOT_RUN,     /* its process died before it */
    HEAD_TAKEN_BACK,  /* cancels took back every call in flight */
};

/* A call sent to a process that will not run it (taken back, or the
 * process died before it) goes back to the pool, oldest first, where any
 * worker may take it, and may be cancelled again until one does.  After
 * shutdown the pool takes no submits: it goes on this worker's deque. */
static void give_back(gf_worker *w, gf_task *t)
{
    remote_call *rc = gf_remote_call_of(t);
    gf_foreign_unclaim(&rc->base);
    if (gf_pool_submit(gf_worker_pool(w), t) == 0 || gf_worker_push(w, t) == 0)
        return;
    if (gf_foreign_begin(&rc->base))  /* unless cancelled meanwhile */
        gf_remote_store_text(rc, STATUS_FAILED, NULL);
    gf_foreign_end(&rc->base);
}

/* Take back the calls after number `claimed`, the last one the process
 * took: one CAS moves the ticket from `claimed` past the newest call's,
 * the same CAS the process would need to start the next one, so each call
 * is either run by the process or taken back, never both.  They go back to
 * the pool.  0 if the process claimed another call first. */
static int take_back_after(pworker *pw, gf_worker *w, inflight *q,
                           uint64_t claimed)
{
    uint64_t newest = q->seqs[(q->head + q->count - 1) % PIPELINE_MAX];
    if (claimed >= newest)
        return 1;  /* nothing to take */
    if (!atomic_compare_exchange_strong_explicit(
            &gf_chan_control(pw->chan)->ticket, &claimed, newest,
            memory_order_acq_rel, memory_order_acquire))
        return 0;
    int keep = 0;
    while (keep < q->count && q->seqs[(q->head + keep) % PIPELINE_MAX]
                                  <= claimed)
        keep++;
    for (int i = keep; i < q->count; i++)
        give_back(w, inflight_at(q, i));
    q->count = keep;
    return 1;
}

/* Give the pool back the calls behind the head while it runs, when it has
 * run for REVOKE_AFTER_NS, so that idle workers run them instead.  Sleep no
 * longer than until then (*wait_ns). */
static void maybe_revoke(pworker *pw, gf_worker *w, inflight *q,
                         int64_t *wait_ns)
{
    gf_chan_ctl *ctl = gf_chan_control(pw->chan);
    uint64_t head_seq = q->seqs[q->head];
    if (q->count < 2
        || atomic_load_explicit(&ctl->running, memory_order_acquire)
               != head_seq)
        return;
    int64_t ran = gf_now_ns()
                  - atomic_load_explicit(&ctl->started_ns,
                                         memory_order_relaxed);
    if (ran < REVOKE_AFTER_NS) {
        if (*wait_ns > REVOKE_AFTER_NS - ran)
            *wait_ns = REVOKE_AFTER_NS - ran;
        return;
    }
    /* Fails if the head just finished and the next one started. */
    (void)take_back_after(pw, w, q, head_seq);
}

/* Calls cancelled while in flight (kill_on_cancel, cancel_running).  The
 * ones the process has not claimed are all taken back (a cancelled one is
 * then dropped by whichever worker begins it next).  A cancelled head that
 * the process runs, with nothing claimed behind it, is killed with the
 * process: HEAD_CANCELLED.  A cancelled head the process has finished
 * comes back as usual and is dropped.  HEAD_TAKEN_BACK: nothing left in
 * flight; HEAD_ANSWERED: go on waiting (no sooner than *wait_ns). */
static enum head_end handle_cancels(pworker *pw, gf_worker *w, inflight *q,
                                    int64_t *wait_ns)
{
    if (!pw->core->kill_on_cancel)
        return HEAD_ANSWERED;  /* claimed calls cannot be cancelled here */
    int any = 0;
    for (int i = 0; i < q->count && !any; i++)
        any = gf_foreign_cancelled(
            &gf_remote_call_of(inflight_at(q, i))->base);
    if (!any)
        return HEAD_ANSWERED;
    gf_chan_ctl *ctl = gf_chan_control(pw->chan);
    uint64_t claimed;
    do  /* the process may claim the next call meanwhile: look again */
        claimed = atomic_load_explicit(&ctl->ticket, memory_order_acquire);
    while (!take_back_after(pw, w, q, claimed));
    if (q->count == 0)
        return HEAD_TAKEN_BACK;
    uint64_t head_seq = q->seqs[q->head];
    if (!gf_foreign_cancelled(&gf_remote_call_of(inflight_at(q, 0))->base)
        || claimed != head_seq)
        return HEAD_ANSWERED;
    if (atomic_load_explicit(&ctl->running, memory_order_acquire) == head_seq)
        return HEAD_CANCELLED;
    /* Claimed but not started yet, or finished: look again soon. */
    if (*wait_ns > CANCEL_POLL_NS)
        *wait_ns = CANCEL_POLL_NS;
    return HEAD_ANSWERED;
}

/* Wait for the outcome of the oldest call in flight (the one the process
 * runs now or next), for the process's death, for the call's deadline, or
 * for a cancel.  On HEAD_ANSWERED the outcome is in the call; on
 * HEAD_TAKEN_BACK nothing is in flight any more; otherwise the process is
 * gone (killed at the deadline or for a cancel) and *status is its wait
 * status (-1: unknown).  HEAD_NOT_RUN: it died between calls, before this
 * one. */
static enum head_end wait_head(pworker *pw, gf_worker *w, inflight *q,
                               int *status)
{
    remote_call *rc = gf_remote_call_of(inflight_at(q, 0));
    uint64_t seq = q->seqs[q->head];
    int err = 0;
    for (;;) {
        int64_t wait_ns = next_wait(pw, rc, seq);
        /* With calls queued behind the head, the process publishes
         * outcomes without waking us (proc_worker.c): look every
         * millisecond, so that a finished head is seen, and the revoke
         * below can act, even if the call after it runs long. */
        if (q->count >= 2 && wait_ns > REVOKE_AFTER_NS)
            wait_ns = REVOKE_AFTER_NS;
        maybe_revoke(pw, w, q, &wait_ns);
        enum head_end cancel = handle_cancels(pw, w, q, &wait_ns);
        if (cancel == HEAD_TAKEN_BACK)
            return cancel;
        if (wait_ns == 0 || cancel == HEAD_CANCELLED) {
            kill_process(pw);
            *status = wait_exit(pw, EXIT_GRACE_NS);
            return wait_ns == 0 ? HEAD_TIMED_OUT : HEAD_CANCELLED;
        }
        wire_msg m;
        err = wire_recv(pw->chan, GF_CHAN_UP, pw->sock, &pw->slabs,
                        pw->spin_ns, wait_ns, &m);
        if (!err) {
            int ours = (m.head.type == MSG_RESULT
                        || m.head.type == MSG_FAILED) && m.head.seq == seq;
            if (ours)
                take_outcome(rc, &m);
            wire_done(pw->chan, GF_CHAN_UP, &m);
            if (ours)
                return HEAD_ANSWERED;
            continue;  /* not an outcome we wait for: stale, skip it */
        }
        if ((err == GF_ETIMEDOUT || err == GF_EINTR) && !process_gone(pw))
            continue;
        break;  /* closed (the zygote reaped it), broken, or gone */
    }
    /* Every outcome the process sent before it died has been read: the
     * control block says whether it had started this call. */
    uint64_t running = atomic_load_explicit(
        &gf_chan_control(pw->chan)->running, memory_order_acquire);
    *status = wait_exit(pw, 0);
    return running == seq ? HEAD_CRASHED : HEAD_NOT_RUN;
}

static void store_death(remote_call *rc, enum head_end how, pid_t pid,
                        int status)
{
    if (how == HEAD_CANCELLED)
        return;  /* nobody looks: the future is cancelled already */
    if (how == HEAD_TIMED_OUT) {
        char text[160];
        snprintf(text, sizeof text, "the task ran past its timeout of %.3g s; "
                 "its worker process (pid %d) was killed and replaced",
                 (double)rc->timeout_ns / 1e9, (int)pid);
        gf_remote_store_text(rc, STATUS_TIMEDOUT, gf_strdup(text));
    } else {
        rc->pid = (int)pid;
        gf_remote_store_text(rc, STATUS_CRASHED,
                             crash_text(pid, status, &rc->code));
    }
}

/* Send task t (claimed) and queue it; a call that cannot be sent is
 * answered at once.  -1: the channel is broken (t was not queued). */
static int launch(pworker *pw, inflight *q, gf_task *t)
{
    remote_call *rc = gf_remote_call_of(t);
    uint64_t seq = ++pw->seq;
    int err = send_call(pw, rc, seq);
    if (err == GF_EINVAL) {
        gf_remote_store_text(rc, STATUS_FAILED,
                             gf_strdup("a call may carry at most 63 "
                                       "out-of-band buffers"));
        gf_foreign_end(&rc->base);
        return 0;
    }
    if (err)
        return -1;
    /* release: a process that sees `sent` has the record (proc_worker.c:
     * its outcomes wake us only when few calls are left). */
    atomic_store_explicit(&gf_chan_control(pw->chan)->sent, seq,
                          memory_order_release);
    int slot = (q->head + q->count) % PIPELINE_MAX;
    q->tasks[slot] = t;
    q->seqs[slot] = seq;
    q->count++;
    return 0;
}

/* How many calls may be in flight: one while calls are long or their
 * length unknown (a queued call must not wait behind a long one while
 * another worker idles), PIPELINE_MAX once they are short, so that the
 * process never waits for the parent between calls. */
static int pipeline_depth(const pworker *pw)
{
    int depth = pw->recent_ns && pw->recent_ns < PIPELINE_SHORT_NS
                    ? PIPELINE_MAX : 1;
    int limit = pw->core->max_tasks_per_child;
    if (limit && depth > limit - pw->calls)
        depth = limit - pw->calls > 0 ? limit - pw->calls : 1;
    return depth;
}

/* Claim another queued call for this process; NULL when there is none
 * (or it was cancelled and answered). */
static gf_task *take_more(gf_worker *w)
{
    gf_task *t;
    while ((t = gf_worker_try_take(w)) != NULL) {
        remote_call *rc = gf_remote_call_of(t);
        if (gf_foreign_begin(&rc->base))
            return t;
        gf_foreign_end(&rc->base);  /* cancelled while queued */
    }
    return NULL;
}

/* The process died: the call it ran fails (unless it died between calls),
 * the ones behind it go back to this worker's queue for the next process. */
static void after_death(pworker *pw, gf_worker *w, inflight *q,
                        enum head_end how, int status)
{
    pid_t pid = pw->pid;
    forget_process(pw);
    if (how != HEAD_NOT_RUN) {
        remote_call *rc = gf_remote_call_of(inflight_at(q, 0));
        store_death(rc, how, pid, status);
        gf_foreign_end(&rc->base);
        q->head = (q->head + 1) % PIPELINE_MAX;
        q->count--;
    }
    for (int i = 0; i < q->count; i++)
        give_back(w, inflight_at(q, i));
    q->count = 0;
}

static void run_proc(gf_task *t, gf_worker *w)
{
    remote_call *rc = gf_remote_call_of(t);
    pworker *pw = gf_worker_data(w);
    remote_core *core = pw->core;
    /* Claimed already if it comes back after its process died. */
    if (!gf_foreign_begin(&rc->base)) {
        gf_foreign_end(&rc->base);
        return;
    }
    char *why = NULL;
    char *broken = atomic_load_explicit(&core->broken, memory_order_acquire);
    if (!broken && !pw->chan && spawn(pw, &why) < 0) {
        gf_remote_mark_broken(core, why);
        broken = atomic_load_explicit(&core->broken, memory_order_acquire);
    }
    if (broken) {
        gf_remote_store_text(rc, STATUS_BROKEN, gf_strdup(broken));
        gf_foreign_end(&rc->base);
        return;
    }
    inflight q = {.head = 0, .count = 0};
    if (launch(pw, &q, t) < 0) {
        after_death(pw, w, &q, HEAD_NOT_RUN, -1);
        return;
    }
    int64_t last_done = gf_now_ns();
    while (q.count) {
        gf_task *more;
        while (q.count < pipeline_depth(pw) && (more = take_more(w)))
            if (launch(pw, &q, more) < 0) {
                (void)gf_worker_push(w, more);
                break;
            }
        remote_call *head = gf_remote_call_of(inflight_at(&q, 0));
        int status;
        enum head_end how = wait_head(pw, w, &q, &status);
        if (how == HEAD_TAKEN_BACK)
            break;  /* q is empty; the process lives on */
        if (how != HEAD_ANSWERED) {
            after_death(pw, w, &q, how, status);
            return;
        }
        int64_t now = gf_now_ns();
        /* A call's length, roughly: since the previous answer (the calls
         * behind it were already in the ring), smoothed. */
        pw->recent_ns = (pw->recent_ns * 3 + (now - last_done)) / 4;
        last_done = now;
        pw->calls++;
        q.head = (q.head + 1) % PIPELINE_MAX;
        q.count--;
        gf_foreign_end(&head->base);
    }
    if (core->max_tasks_per_child && pw->calls >= core->max_tasks_per_child)
        retire(pw);
}

/* ---- the core ------------------------------------------------------------ */

static void free_core(remote_core *core)
{
    proc_core *pc = core->impl;
    if (!pc)
        return;
    release_zygote(pc);
    if (pc->own_zygote)
        free_zygote(pc->zygote);
    pthread_mutex_destroy(&pc->mu);
    free(pc->proxies);
    free(pc);
    core->impl = NULL;
}

/* A zygote of one pool's own, on a duplicate of `fd` (the caller keeps
 * and closes its own): NULL with an exception set. */
static proc_zygote *own_zygote(int fd)
{
    proc_zygote *z = calloc(1, sizeof *z);
    if (!z)
        return (proc_zygote *)PyErr_NoMemory();
    z->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (z->fd < 0) {
        free(z);
        return (proc_zygote *)PyErr_SetFromErrno(PyExc_OSError);
    }
    atomic_init(&z->refs, 0);  /* the pool takes the one reference */
    pthread_mutex_init(&z->mu, NULL);
    return z;
}

static int init_core(remote_core *core)
{
    proc_zygote *z = core->zygote_fd >= 0 ? own_zygote(core->zygote_fd)
                                          : core->st->zygote;
    if (core->zygote_fd >= 0 && !z)
        return -1;
    if (!z || (core->zygote_fd < 0
               && atomic_load_explicit(&z->refs, memory_order_acquire) == 0)) {
        PyErr_SetString(PyExc_RuntimeError, "no zygote process: create "
                        "process pools with gilfree.ProcessPoolExecutor");
        return -1;
    }
    proc_core *pc = calloc(1, sizeof *pc);
    pworker **proxies = calloc((size_t)core->max_workers, sizeof *proxies);
    if (!pc || !proxies) {
        free(pc);
        free(proxies);
        if (core->zygote_fd >= 0) {
            close(z->fd);
            free_zygote(z);
        }
        PyErr_NoMemory();
        return -1;
    }
    pc->proxies = proxies;
    pc->own_zygote = core->zygote_fd >= 0;
    pthread_mutex_init(&pc->mu, NULL);
    atomic_fetch_add_explicit(&z->refs, 1, memory_order_relaxed);
    pc->zygote = z;
    core->impl = pc;
    return 0;
}

/* In a forked child: the parent's processes, channels and zygote are not
 * ours.  Their mappings and descriptors stay (the dead proxies' state is
 * unreachable), and so does the zygote socket's descriptor: closing it
 * would be harmless to the parent, but a later zygote of the child could
 * then get the same number while this pool still held the old one. */
static void after_fork_child(remote_core *core)
{
    gf_remote_mark_broken(core, gf_strdup(
        "a process pool cannot be used in a child created by os.fork(); "
        "create a new pool in the child"));
}

/* cancel() of a call some proxy has sent to its process (kill_on_cancel):
 * mark it cancelled and wake the proxies, which are asleep on their
 * channels; the one holding it takes it back if its process has not
 * claimed it, or kills the process running it (handle_cancels).  Which
 * proxy holds it is theirs to know, and cancels are rare: wake them all. */
static int cancel_running(remote_core *core, remote_call *rc)
{
    if (!gf_foreign_cancel_claimed(&rc->base))
        return 0;  /* it finished first */
    proc_core *pc = core->impl;
    pthread_mutex_lock(&pc->mu);
    for (int i = 0; i < core->max_workers; i++)
        if (pc->proxies[i] && pc->proxies[i]->chan)
            gf_chan_poke(pc->proxies[i]->chan, GF_CHAN_UP);
    pthread_mutex_unlock(&pc->mu);
    return 1;
}

const remote_backend gf_proc_backend = {
    .noun = "process",
    .run = run_proc,
    .on_start = on_start,
    .on_stop = on_stop,
    .init_core = init_core,
    .after_fork_child = after_fork_child,
    .free_core = free_core,
    .cancel_running = cancel_running,
};

/* ---- the zygote's socket ------------------------------------------------- */

/* _proc_attach_zygote(fd, /): the socket of a zygote just started; owned
 * by C from now on (closed when the last pool using it is done).  The
 * attach itself holds one reference until _proc_detach_zygote. */
static PyObject *proc_attach_zygote(PyObject *module, PyObject *arg)
{
    module_state *st = state_of_module(module);
    int fd = (int)PyLong_AsLong(arg);
    if (PyErr_Occurred())
        return NULL;
    proc_zygote *old = st->zygote;
    if (old && atomic_load_explicit(&old->refs, memory_order_acquire) > 0) {
        PyErr_SetString(PyExc_RuntimeError, "a zygote is attached already");
        return NULL;
    }
    proc_zygote *z = calloc(1, sizeof *z);
    if (!z)
        return PyErr_NoMemory();
    z->fd = fd;
    atomic_init(&z->refs, 1);
    pthread_mutex_init(&z->mu, NULL);
    /* A closed zygote that some freed pool pointed to: nobody does now. */
    if (old && !zygote_in_use(st, old))
        free_zygote(old);
    st->zygote = z;
    Py_RETURN_NONE;
}

/* _proc_close_inherited(): in a child forked to be a pool's zygote (start
 * method "fork"), close the parent's gilfree descriptors: the other
 * zygotes' sockets and the proxies' descriptor sockets.  A copy here would
 * keep another zygote from seeing its pool let go (end-of-file), so it
 * would outlive its pool's shutdown. */
static PyObject *proc_close_inherited(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    for (gf_core_life *l = st->remote_cores; l; l = l->next) {
        remote_core *c = (remote_core *)l;
        proc_core *pc = c->kind == REMOTE_PROCESSES ? c->impl : NULL;
        if (!pc)
            continue;
        for (int i = 0; i < c->max_workers; i++)
            if (pc->proxies[i] && pc->proxies[i]->sock >= 0) {
                close(pc->proxies[i]->sock);
                pc->proxies[i]->sock = -1;
            }
        if (pc->own_zygote && pc->zygote->fd >= 0) {
            close(pc->zygote->fd);
            pc->zygote->fd = -1;
        }
    }
    if (st->zygote && st->zygote->fd >= 0) {
        close(st->zygote->fd);
        st->zygote->fd = -1;
    }
    Py_RETURN_NONE;
}

/* _proc_zygote_attached(): whether the zygote's socket is open (else the
 * last one, if any, has been told to exit). */
static PyObject *proc_zygote_attached(PyObject *module, PyObject *unused)
{
    (void)unused;
    proc_zygote *z = state_of_module(module)->zygote;
    return PyBool_FromLong(
        z && atomic_load_explicit(&z->refs, memory_order_acquire) > 0);
}

/* _proc_detach_zygote(): drop the attach's reference; the socket closes
 * now if no pool took one. */
static PyObject *proc_detach_zygote(PyObject *module, PyObject *unused)
{
    (void)unused;
    module_state *st = state_of_module(module);
    proc_zygote *z = st->zygote;
    if (z && atomic_load_explicit(&z->refs, memory_order_acquire) > 0)
        zygote_unref(z);
    Py_RETURN_NONE;
}

static PyMethodDef proc_functions[] = {
    {"_proc_attach_zygote", proc_attach_zygote, METH_O,
     "_proc_attach_zygote($module, fd, /)\n--\n\n"
     "Hand the socket of a new zygote process to the process pools."},
    {"_proc_close_inherited", proc_close_inherited, METH_NOARGS,
     "_proc_close_inherited($module, /)\n--\n\n"
     "In a forked zygote: close the parent's process-pool descriptors."},
    {"_proc_zygote_attached", proc_zygote_attached, METH_NOARGS,
     "_proc_zygote_attached($module, /)\n--\n\nWhether a zygote is attached."},
    {"_proc_detach_zygote", proc_detach_zygote, METH_NOARGS,
     "_proc_detach_zygote($module, /)\n--\n\n"
     "Close the zygote's socket if no pool uses it."},
    {NULL, NULL, 0, NULL},
};

int gf_proc_register(PyObject *module, module_state *st)
{
    (void)st;
    if (gf_proc_worker_register(module) < 0)
        return -1;
    return PyModule_AddFunctions(module, proc_functions);
}
