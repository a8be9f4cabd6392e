/* gf_slab.c - shared segments kept mapped and refilled (see gf_slab.h).
 *
 * Layout: one header page (magic, then the holds word on a cache line of
 * its own), then the data, page-aligned.  The segment is sealed against
 * shrinking and growing before the owner maps it; gf_slab_map insists on
 * the seal, so neither side can make the other's mapping fault. */
#include "gf_slab.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gf_atomic.h"
#include "gf_error.h"
#include "gf_shm.h"

#define SLAB_MAGIC 0x62616c73666700ull  /* "gfslab" */
#define SLAB_HEADER 4096u

typedef struct slab_header {
    _Atomic uint64_t magic;      /* stored last by the owner */
    GF_CACHE_ALIGNED _Atomic uint32_t holds;
} slab_header;

_Static_assert(sizeof(slab_header) <= SLAB_HEADER, "header page overflow");

struct gf_slab {
    slab_header *hdr;            /* the mapping starts here */
    size_t size;                 /* of the mapping: header + cap */
    int fd;                      /* the owner's; -1 on a peer's mapping */
    _Atomic int refs;            /* this process's users of the mapping */
};

static int wrap(int fd, size_t size, gf_slab **out)
{
    gf_slab *s = malloc(sizeof *s);
    if (s == NULL)
        return GF_ENOMEM;
    void *base;
    int rc = gf_shm_map(fd, size, true, false, &base);
    if (rc != 0) {
        free(s);
        return rc;
    }
    s->hdr = base;
    s->size = size;
    s->fd = -1;
    atomic_init(&s->refs, 1);
    *out = s;
    return 0;
}

int gf_slab_create(size_t cap, gf_slab **out)
{
    if (cap > SIZE_MAX - SLAB_HEADER)
        return GF_EINVAL;
    size_t size = SLAB_HEADER + cap;
    int fd, rc = gf_shm_create_sealed(size, "gilfree-slab", &fd);
    if (rc != 0)
        return rc;
    if ((rc = wrap(fd, size, out)) == 0) {
        gf_slab *s = *out;
        s->fd = fd;
        atomic_store_explicit(&s->hdr->holds, 0, memory_order_relaxed);
        /* release: a peer that reads the magic with acquire sees the
         * header set up (the descriptor's trip through a socket orders it
         * anyway; a half-made slab must not look like one). */
        atomic_store_explicit(&s->hdr->magic, SLAB_MAGIC,
                              memory_order_release);
        return 0;
    }
    gf_close_keep_errno(fd);
    return rc;
}

int gf_slab_map(int fd, gf_slab **out)
{
    size_t size;
    int rc = gf_shm_sealed_size(fd, &size);
    if (rc != 0)
        return rc;
    if (size < SLAB_HEADER)
        return GF_ECORRUPT;
    if ((rc = wrap(fd, size, out)) != 0)
        return rc;
    if (atomic_load_explicit(&(*out)->hdr->magic, memory_order_acquire)
        != SLAB_MAGIC) {
        gf_slab_unref(*out);
        return GF_ECORRUPT;
    }
    return 0;
}

int gf_slab_fd(const gf_slab *s) { return s->fd; }

int gf_slab_take_fd(gf_slab *s)
{
    int fd = s->fd;
    s->fd = -1;
    return fd;
}

void *gf_slab_data(const gf_slab *s)
{
    return (char *)s->hdr + SLAB_HEADER;
}

size_t gf_slab_cap(const gf_slab *s) { return s->size - SLAB_HEADER; }

bool gf_slab_contains(const gf_slab *s, const void *p, size_t len)
{
    uintptr_t start = (uintptr_t)gf_slab_data(s), at = (uintptr_t)p;
    return at >= start && at - start <= gf_slab_cap(s)
           && len <= gf_slab_cap(s) - (at - start);
}

bool gf_slab_idle(gf_slab *s)
{
    /* acquire: pairs with the release in gf_slab_release, so every read
     * of the last holder happened before the owner writes again. */
    return atomic_load_explicit(&s->hdr->holds, memory_order_acquire) == 0;
}

void gf_slab_hold(gf_slab *s)
{
    /* relaxed: a hold is taken by someone who already has one (the owner
     * filling an idle slab excepted, whose message publishes it). */
    atomic_fetch_add_explicit(&s->hdr->holds, 1, memory_order_relaxed);
}

void gf_slab_release(gf_slab *s)
{
    atomic_fetch_sub_explicit(&s->hdr->holds, 1, memory_order_release);
}

void gf_slab_ref(gf_slab *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void gf_slab_unref(gf_slab *s)
{
    /* acq_rel: the last one sees every other user's accesses done. */
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    gf_shm_unmap(s->hdr, s->size);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) \
    && !defined(__SANITIZE_THREAD__)
#include <cpuid.h>

static bool has_erms(void)
{
    unsigned a, b, c, d;
    /* CPUID leaf 7, EBX bit 9: Enhanced REP MOVSB/STOSB. */
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 9));
}
#endif

void gf_copy_big(void *dst, const void *src, size_t n)
{
    /* Not under the sanitizers: they check memcpy's bounds, not asm's. */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) \
    && !defined(__SANITIZE_THREAD__)
    static _Atomic int erms = -1;   /* -1: not asked yet */
    int fast = atomic_load_explicit(&erms, memory_order_relaxed);
    if (fast < 0) {
        fast = has_erms();
        atomic_store_explicit(&erms, fast, memory_order_relaxed);
    }
    if (fast) {
        __asm__ __volatile__("rep movsb"
                             : "+D"(dst), "+S"(src), "+c"(n)
                             :
                             : "memory");
        return;
    }
#endif
    memcpy(dst, src, n);
}
