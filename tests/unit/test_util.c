/* Unit tests of util.c's rm_xgrow: the first size, doubling, no move while
 * there is room, every element kept, and an abort (not a short buffer) when
 * the size would overflow. */
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "util.h"

static void test_grows_from_first_by_doubling(void)
{
    uint64_t *v = NULL;
    size_t n = 0, cap = 0, grew = 0, last_cap = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        v = rm_xgrow(v, n, &cap, sizeof *v, 16);
        if (cap != last_cap) {
            /* 16, 32, 64, ...: grown only when full, to twice. */
            CHECK_EQ(n, last_cap);
            CHECK_EQ(cap, last_cap ? last_cap * 2 : 16);
            last_cap = cap;
            grew++;
        }
        v[n++] = i * 7;
    }
    CHECK_EQ(cap, 1024);
    CHECK_EQ(grew, 7); /* 16 .. 1024 */
    int intact = 1;
    for (uint64_t i = 0; i < n; i++)
        intact &= v[i] == i * 7;
    CHECK(intact);
    free(v);
}

static void test_room_left_keeps_the_array(void)
{
    size_t cap = 8;
    int *v = rm_xmalloc(cap * sizeof *v);
    CHECK(rm_xgrow(v, 7, &cap, sizeof *v, 4) == v);
    CHECK_EQ(cap, 8);
    free(v);
}

/* Reachable at the child's abort, so checkers report no leak there. */
static char *volatile overflow_victim;

/* A doubled size past SIZE_MAX must abort, not wrap to a small buffer. */
static void test_overflow_aborts(void)
{
    fflush(stderr);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        /* Wants cap * 2 * 8 bytes, which wraps to 16: a realloc that
         * would succeed, so only the check can abort here. */
        size_t cap = SIZE_MAX / 16 + 1;
        overflow_victim = rm_xmalloc(1);
        overflow_victim = rm_xgrow(overflow_victim, cap, &cap, 8, 1);
        free(overflow_victim);
        _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
}

int main(void)
{
    RUN(test_grows_from_first_by_doubling);
    RUN(test_room_left_keeps_the_array);
    RUN(test_overflow_aborts);
    return rm_t_report();
}
