/* test_error.c - gf_strerror / gf_err_name from the GF_ERRNO_MAP list. */
#include <string.h>

#include "gf_error.h"
#include "test.h"

TEST(error_names)
{
    ASSERT_STR_EQ(gf_err_name(GF_OK), "OK");
    ASSERT_STR_EQ(gf_err_name(GF_ENOMEM), "ENOMEM");
    ASSERT_STR_EQ(gf_err_name(GF_ETIMEDOUT), "ETIMEDOUT");
    ASSERT_STR_EQ(gf_err_name(GF_ECORRUPT), "ECORRUPT");
    ASSERT_STR_EQ(gf_err_name(GF_EPIPE), "EPIPE");
    ASSERT_STR_EQ(gf_err_name(GF_ESYS), "ESYS");
    ASSERT_STR_EQ(gf_err_name(1), "UNKNOWN");
    ASSERT_STR_EQ(gf_err_name(-1000), "UNKNOWN");
    /* Every code in the map: negative, its name round-trips. */
#define CHECK(name, value, msg)                                               \
    ASSERT_LT(GF_##name, 0);                                                  \
    ASSERT_EQ(GF_##name, value);                                              \
    ASSERT_STR_EQ(gf_err_name(GF_##name), #name);
    GF_ERRNO_MAP(CHECK)
#undef CHECK
}

TEST(error_messages)
{
    ASSERT_STR_EQ(gf_strerror(GF_ETIMEDOUT), "timed out");
    ASSERT_STR_EQ(gf_strerror(GF_EAGAIN),
                  "try again: the queue is full or empty");
    ASSERT_STR_EQ(gf_strerror(GF_EPIPE), "closed: the other side is gone");
    ASSERT_STR_EQ(gf_strerror(GF_ESYS), "a system call failed (see errno)");
    ASSERT_STR_EQ(gf_strerror(12345), "unknown error");
    ASSERT_STR_EQ(gf_strerror(GF_OK), "success");
    /* Messages come from the map and are pairwise distinct. */
    static const int codes[] = {
#define CODE(name, value, msg) GF_##name,
        GF_ERRNO_MAP(CODE)
#undef CODE
    };
    size_t n = sizeof(codes) / sizeof(codes[0]);
    for (size_t i = 0; i < n; i++) {
        ASSERT(strcmp(gf_strerror(codes[i]), "unknown error") != 0);
        for (size_t j = i + 1; j < n; j++) {
            ASSERT_NE(codes[i], codes[j]);
            ASSERT(strcmp(gf_strerror(codes[i]), gf_strerror(codes[j])) != 0);
        }
    }
}
