/* gf_error.c - messages and names for the GF_E* codes.
 *
 * Both functions are generated from GF_ERRNO_MAP in gf_error.h, so adding a
 * code there is the only edit needed; the switch cannot fall out of step. */
#include "gf_error.h"

const char *gf_strerror(int err)
{
    switch (err) {
    case GF_OK:
        return "success";
#define GF__STRERROR_CASE(name, value, msg) case GF_##name: return msg;
    GF_ERRNO_MAP(GF__STRERROR_CASE)
#undef GF__STRERROR_CASE
    default:
        return "unknown error";
    }
}

const char *gf_err_name(int err)
{
    switch (err) {
    case GF_OK:
        return "OK";
#define GF__ERR_NAME_CASE(name, value, msg) case GF_##name: return #name;
    GF_ERRNO_MAP(GF__ERR_NAME_CASE)
#undef GF__ERR_NAME_CASE
    default:
        return "UNKNOWN";
    }
}
