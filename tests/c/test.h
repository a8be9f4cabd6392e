/* test.h - the C tests' assertion macros and helpers.
 *
 * A test is `TEST(area_behaviour) { ... }`, declared once in test_list.h.
 * A failed ASSERT prints file:line and what failed, then aborts: the runner
 * runs each test in its own process, so an abort fails just that test. */
#ifndef GF_TEST_H
#define GF_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gf_error.h"

#define TEST(name) void test_##name(void)

/* Print "file:line: fmt..." to stderr and abort.  Defined in runner.c. */
_Noreturn void gf_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define ASSERT(expr)                                                          \
    do {                                                                      \
        if (!(expr))                                                          \
            gf_test_fail(__FILE__, __LINE__, "assertion failed: %s", #expr);  \
    } while (0)

/* Compare two integers (any integer type, widened to long long). */
#define GF__ASSERT_CMP(a, op, b)                                              \
    do {                                                                      \
        long long a_ = (long long)(a), b_ = (long long)(b);                   \
        if (!(a_ op b_))                                                      \
            gf_test_fail(__FILE__, __LINE__,                                  \
                         "assertion failed: %s %s %s (%lld vs %lld)",         \
                         #a, #op, #b, a_, b_);                                \
    } while (0)

#define ASSERT_EQ(a, b) GF__ASSERT_CMP(a, ==, b)
#define ASSERT_NE(a, b) GF__ASSERT_CMP(a, !=, b)
#define ASSERT_LT(a, b) GF__ASSERT_CMP(a, <, b)
#define ASSERT_LE(a, b) GF__ASSERT_CMP(a, <=, b)
#define ASSERT_GT(a, b) GF__ASSERT_CMP(a, >, b)
#define ASSERT_GE(a, b) GF__ASSERT_CMP(a, >=, b)

/* A runtime call that must return `code` (0 or a GF_E*); names both. */
#define ASSERT_RC(expr, code)                                                 \
    do {                                                                      \
        int r_ = (expr), want_ = (code);                                      \
        if (r_ != want_)                                                      \
            gf_test_fail(__FILE__, __LINE__, "%s returned %d (%s), not %s",   \
                         #expr, r_, gf_err_name(r_), gf_err_name(want_));     \
    } while (0)
#define ASSERT_OK(expr) ASSERT_RC(expr, 0)

#define ASSERT_STR_EQ(a, b)                                                   \
    do {                                                                      \
        const char *a_ = (a), *b_ = (b);                                      \
        if (strcmp(a_, b_) != 0)                                              \
            gf_test_fail(__FILE__, __LINE__,                                  \
                         "assertion failed: %s == %s (\"%s\" vs \"%s\")",     \
                         #a, #b, a_, b_);                                     \
    } while (0)

/* GF_STRESS_SCALE (default 1.0) times n, at least 1: stress tests size
 * themselves with this so the sanitizer recipes can run them smaller. */
uint64_t gf_test_scaled(uint64_t n);

/* Seconds on the monotonic clock. */
double gf_test_now(void);

/* Sleep for ms milliseconds. */
void gf_test_sleep_ms(int ms);

/* Stress tests print their measurements with this ("# " prefix), so they
 * stand apart from the runner's ok/FAIL lines. */
#define TEST_REPORT(...)                                                      \
    do {                                                                      \
        printf("# " __VA_ARGS__);                                             \
        printf("\n");                                                         \
        fflush(stdout);                                                       \
    } while (0)

#endif /* GF_TEST_H */
