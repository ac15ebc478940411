/* check.h -- the tiny assertion layer shared by the C tests.
 *
 * CHECK records a failure and carries on so one run reports every broken
 * expectation; each test binary ends with "N passed, N failed" and exits
 * non-zero on any failure, which ctest reads. */
#ifndef RM_TEST_CHECK_H
#define RM_TEST_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rm_t_pass, rm_t_fail;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            rm_t_pass++;                                                                           \
        } else {                                                                                   \
            rm_t_fail++;                                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long _a = (long long)(a), _b = (long long)(b);                                        \
        if (_a == _b) {                                                                            \
            rm_t_pass++;                                                                           \
        } else {                                                                                   \
            rm_t_fail++;                                                                           \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n", __FILE__,          \
                    __LINE__, #a, _a, #b, _b);                                                     \
        }                                                                                          \
    } while (0)

/* Fatal variant for preconditions the rest of a test depends on. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);             \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* RM_TEST_ONLY=name runs just the tests whose name contains it, for
 * looping one test while chasing a rare failure. */
static inline int rm_t_selected(const char *name)
{
    const char *only = getenv("RM_TEST_ONLY");
    return !only || !*only || strstr(name, only) != NULL;
}

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        if (!rm_t_selected(#fn))                                                                   \
            break;                                                                                 \
        int _f = rm_t_fail;                                                                        \
        fn();                                                                                      \
        fprintf(stderr, "%-40s %s\n", #fn, rm_t_fail == _f ? "ok" : "FAILED");                     \
    } while (0)

static inline int rm_t_report(void)
{
    printf("%d passed, %d failed\n", rm_t_pass, rm_t_fail);
    return rm_t_fail ? 1 : 0;
}

#endif
