/* proc.c - the processes backend (being written). */
#include "remote.h"

const remote_backend gf_proc_backend = {.noun = "process"};

int gf_proc_register(PyObject *module, module_state *st)
{
    (void)module;
    (void)st;
    return 0;
}
