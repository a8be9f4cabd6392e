/* gf_error.h - the runtime's one error currency.
 *
 * Every runtime function that can fail returns an int: 0 on success or one
 * of the negative GF_E* codes below.  The list is an X-macro so that the
 * enum, gf_strerror() and gf_err_name() can never drift apart.  The
 * extension module maps these codes to Python exceptions in exactly one
 * place (_core/errors.c).
 */
#ifndef GF_ERROR_H
#define GF_ERROR_H

/* X(name, value, message) */
#define GF_ERRNO_MAP(X)                                                       \
    X(ENOMEM,    -1, "out of memory")                                         \
    X(EINVAL,    -2, "invalid argument")                                      \
    X(EAGAIN,    -3, "try again: the queue is full or empty")                 \
    X(ETIMEDOUT, -4, "timed out")                                             \
    X(EINTR,     -5, "interrupted by a signal")                               \
    X(ESHUTDOWN, -6, "the pool is shut down")                                 \
    X(ETHREAD,   -7, "could not start a thread")                              \
    X(ECORRUPT,  -8, "shared structure failed validation")                    \
    X(EPIPE,     -9, "closed: the other side is gone")                        \
    X(ESYS,     -10, "a system call failed (see errno)")

enum gf_errno {
    GF_OK = 0,
#define GF__ERRNO_ENUM(name, value, msg) GF_##name = (value),
    GF_ERRNO_MAP(GF__ERRNO_ENUM)
#undef GF__ERRNO_ENUM
};

/* A static, human-readable message for err ("unknown error" if not a GF_E*). */
const char *gf_strerror(int err);

/* The code's name without the prefix ("ETIMEDOUT"), or "UNKNOWN". */
const char *gf_err_name(int err);

#endif /* GF_ERROR_H */
