/* gf_atomic.h - small shared helpers for lock-free code: cache-line
 * alignment, the spin-wait hint, and the monotonic clock. Header-only. */
#ifndef GF_ATOMIC_H
#define GF_ATOMIC_H

#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* 64 bytes on every x86-64 and most arm64 parts; two fields written by
 * different threads are kept this far apart so they never share a line. */
#define GF_CACHELINE 64
#define GF_CACHE_ALIGNED _Alignas(GF_CACHELINE)

/* Tell the core we are spinning: on x86 `pause` frees the sibling
 * hyper-thread and avoids a memory-order mis-speculation penalty on exit. */
static inline void gf_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* One step of a spin-wait that has been going for spent_ns: a burst of
 * pause instructions at first; after GF_SPIN_YIELD_NS, sched_yield(), so
 * that on an oversubscribed machine the thread we wait for gets the core
 * (with nobody else runnable, sched_yield returns at once). */
#define GF_SPIN_YIELD_NS 5000
static inline void gf_spin_step(int64_t spent_ns)
{
    if (spent_ns < GF_SPIN_YIELD_NS) {
        for (int i = 0; i < 64; i++)
            gf_cpu_relax();
    } else {
        sched_yield();
    }
}

/* Nanoseconds on CLOCK_MONOTONIC (a vDSO call, about 20 ns). */
static inline int64_t gf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif /* GF_ATOMIC_H */
