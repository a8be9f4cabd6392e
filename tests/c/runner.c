/* runner.c - runs the C tests listed in test_list.h.
 *
 *   runner              every test, each in its own child process (fork +
 *                       exec of this binary with the test's name) under a
 *                       timeout; one line per test, then "N passed, N failed"
 *   runner PREFIX*      the same, for the tests whose names start with PREFIX
 *   runner NAME         one test, in this process (for gdb, rr, ...)
 *   runner --list       the names
 *
 * GF_TEST_TIMEOUT_SCALE multiplies the per-test timeout (60 s), e.g. for
 * TSan; GF_STRESS_SCALE sizes the stress tests (see test.h).  A child runs
 * in its own process group, so a timeout kills whatever it forked too.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "test_list.h"

#define GF_TEST_TIMEOUT_S 60.0

#define X(name) TEST(name);
TEST_LIST(X)
#undef X

static const struct {
    const char *name;
    void (*fn)(void);
} tests[] = {
#define X(name) {#name, test_##name},
    TEST_LIST(X)
#undef X
};

#define NTESTS (sizeof(tests) / sizeof(tests[0]))

_Noreturn void gf_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

static double env_double(const char *name, double dflt)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0')
        return dflt;
    char *end;
    double v = strtod(s, &end);
    if (*end != '\0' || !(v > 0)) {
        fprintf(stderr, "runner: ignoring %s=%s (want a positive number)\n",
                name, s);
        return dflt;
    }
    return v;
}

uint64_t gf_test_scaled(uint64_t n)
{
    double v = (double)n * env_double("GF_STRESS_SCALE", 1.0);
    return v < 1 ? 1 : (uint64_t)v;
}

double gf_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void gf_test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Run tests[i] in a child; print its line; return true if it passed. */
static bool run_child(size_t i, double timeout_s)
{
    fflush(stdout);
    fflush(stderr);
    double start = gf_test_now();
    pid_t pid = fork();
    if (pid < 0) {
        perror("runner: fork");
        return false;
    }
    if (pid == 0) {
        setpgid(0, 0);
        char *argv[] = {(char *)"runner", (char *)tests[i].name, NULL};
        execv("/proc/self/exe", argv);
        perror("runner: exec");
        _exit(127);
    }
    setpgid(pid, pid);   /* also here: whichever runs first wins the race */

    int status = 0;
    bool timed_out = false;
    for (int nap_us = 50;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            perror("runner: waitpid");
            return false;
        }
        if (gf_test_now() - start > timeout_s) {
            timed_out = true;
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        /* Back off to 10 ms: quick tests are reaped quickly, long ones
         * cost the runner nothing. */
        struct timespec ts = {0, nap_us * 1000L};
        nanosleep(&ts, NULL);
        if (nap_us < 10000)
            nap_us *= 2;
    }
    /* Anything the test forked and left behind goes with it. */
    kill(-pid, SIGKILL);

    double took = gf_test_now() - start;
    if (timed_out) {
        printf("TIMEOUT %-45s %7.2f s\n", tests[i].name, took);
        return false;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("ok      %-45s %7.2f s\n", tests[i].name, took);
        return true;
    }
    if (WIFSIGNALED(status))
        printf("FAIL    %-45s %7.2f s  (signal %d, %s)\n", tests[i].name,
               took, WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        printf("FAIL    %-45s %7.2f s  (exit status %d)\n", tests[i].name,
               took, WEXITSTATUS(status));
    return false;
}

static int run_all(const char *prefix)
{
    double timeout_s = GF_TEST_TIMEOUT_S
                       * env_double("GF_TEST_TIMEOUT_SCALE", 1.0);
    size_t plen = strlen(prefix);
    int passed = 0, failed = 0;
    for (size_t i = 0; i < NTESTS; i++) {
        if (strncmp(tests[i].name, prefix, plen) != 0)
            continue;
        if (run_child(i, timeout_s))
            passed++;
        else
            failed++;
    }
    if (passed + failed == 0) {
        fprintf(stderr, "runner: no test matches '%s*'\n", prefix);
        return 2;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 1)
        return run_all("");
    if (argc != 2) {
        fprintf(stderr, "usage: %s [NAME | PREFIX* | --list]\n", argv[0]);
        return 2;
    }
    const char *arg = argv[1];
    if (strcmp(arg, "--list") == 0) {
        for (size_t i = 0; i < NTESTS; i++)
            puts(tests[i].name);
        return 0;
    }
    size_t len = strlen(arg);
    if (len > 0 && arg[len - 1] == '*') {
        char prefix[256];
        snprintf(prefix, sizeof(prefix), "%.*s", (int)(len - 1), arg);
        return run_all(prefix);
    }
    for (size_t i = 0; i < NTESTS; i++) {
        if (strcmp(tests[i].name, arg) == 0) {
            /* Line-buffered, so measurements and an ASSERT's message come
             * out in order even when stdout is a pipe. */
            setvbuf(stdout, NULL, _IOLBF, 0);
            tests[i].fn();
            return 0;
        }
    }
    fprintf(stderr, "runner: no test named '%s' (try --list)\n", arg);
    return 2;
}
