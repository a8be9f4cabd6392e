/* demo.c - seed 000's experiment: the same C busy loop, once keeping the
 * GIL and once releasing it, plus native-signature functions for
 * gilfree.native's demos and benchmarks. */
#include "state.h"

#include <stdint.h>

/* A loop the compiler can neither vectorise nor delete: a 64-bit LCG
 * (Knuth's MMIX constants) folded into a checksum. */
static uint64_t busy(uint64_t seed, int64_t iterations)
{
    uint64_t x = seed, acc = 0;
    for (int64_t i = 0; i < iterations; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        acc ^= x >> 29;
    }
    return acc;
}

static int parse_iterations(PyObject *arg, long long *n)
{
    *n = PyLong_AsLongLong(arg);
    if (*n == -1 && PyErr_Occurred())
        return -1;
    if (*n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        return -1;
    }
    return 0;
}

static PyObject *busy_loop_holding_gil(PyObject *module, PyObject *arg)
{
    (void)module;
    long long n;
    if (parse_iterations(arg, &n) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(busy(1, n));
}

static PyObject *busy_loop_releasing_gil(PyObject *module, PyObject *arg)
{
    (void)module;
    long long n;
    if (parse_iterations(arg, &n) < 0)
        return NULL;
    uint64_t r;
    Py_BEGIN_ALLOW_THREADS
    r = busy(1, n);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLongLong(r);
}

/* void (*)(void *arg, int64_t begin, int64_t end): `*(int64_t *)arg`
 * iterations of busy work per index (1000 if arg is NULL). */
static void native_busy_range(void *arg, int64_t begin, int64_t end)
{
    int64_t per = arg ? *(const int64_t *)arg : 1000;
    uint64_t acc = 0;
    for (int64_t i = begin; i < end; i++)
        acc += busy((uint64_t)i, per);
    /* Keep the result "used" so the loop is not optimised away. */
    __asm__ __volatile__("" ::"r"(acc));
}

static void native_empty_range(void *arg, int64_t begin, int64_t end)
{
    (void)arg;
    (void)begin;
    (void)end;
}

/* int64_t (*)(void *arg): returns arg as an integer. */
static int64_t native_empty_task(void *arg) { return (int64_t)(intptr_t)arg; }

static PyMethodDef demo_functions[] = {
    {"busy_loop_holding_gil", busy_loop_holding_gil, METH_O,
     "busy_loop_holding_gil($module, n, /)\n--\n\n"
     "n iterations of a C loop that keeps the GIL; returns a checksum."},
    {"busy_loop_releasing_gil", busy_loop_releasing_gil, METH_O,
     "busy_loop_releasing_gil($module, n, /)\n--\n\n"
     "The same loop with the GIL released; the same checksum."},
    {NULL, NULL, 0, NULL},
};

static int add_address(PyObject *module, const char *name, void (*fn)(void))
{
    PyObject *v = PyLong_FromVoidPtr((void *)fn);
    if (!v)
        return -1;
    int rc = PyModule_AddObjectRef(module, name, v);
    Py_DECREF(v);
    return rc;
}

int gf_demo_register(PyObject *module)
{
    if (PyModule_AddFunctions(module, demo_functions) < 0)
        return -1;
    if (add_address(module, "NATIVE_BUSY_RANGE",
                    (void (*)(void))native_busy_range) < 0
        || add_address(module, "NATIVE_EMPTY_RANGE",
                       (void (*)(void))native_empty_range) < 0
        || add_address(module, "NATIVE_EMPTY_TASK",
                       (void (*)(void))native_empty_task) < 0)
        return -1;
    return 0;
}
