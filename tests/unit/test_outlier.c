/* Unit tests for router/outlier.c, the ejection rule: consecutive failures,
 * stalls not counted, the ejected share bounded, panic below the healthy
 * threshold -- and the two cluster stories it exists for: a router that
 * stalls keeps every node, a dead node still leaves. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "outlier.h"

static rm_outlier_config defaults(void)
{
    rm_outlier_config c;
    rm_outlier_config_defaults(&c);
    return c;
}

static void test_defaults(void)
{
    rm_outlier_config c = defaults();
    CHECK_EQ(c.eject_after, 3);
    CHECK(c.max_ejected_share == 0.5);
    CHECK(c.panic_threshold == 0.5);
}

static void test_classify(void)
{
    CHECK_EQ(rm_outlier_classify(0, 0, 0), RM_OUTLIER_ANSWERED);
    CHECK_EQ(rm_outlier_classify(0, 1, 0), RM_OUTLIER_ANSWERED); /* an answer is an answer */
    CHECK_EQ(rm_outlier_classify(0, 0, 1), RM_OUTLIER_ANSWERED);
    CHECK_EQ(rm_outlier_classify(1, 0, 0), RM_OUTLIER_FAILED);
    CHECK_EQ(rm_outlier_classify(1, 1, 0), RM_OUTLIER_IGNORED);
    /* Cut short by its client's deadline: the node had less than its time. */
    CHECK_EQ(rm_outlier_classify(1, 0, 1), RM_OUTLIER_IGNORED);
}

static void test_ejects_after_consecutive_failures_only(void)
{
    rm_outlier_config c = defaults();
    rm_outlier_node n = {0};
    /* Two failures, an answer, two failures: never three in a row. */
    for (int round = 0; round < 5; round++) {
        CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_FAILED, 4, 0), RM_OUTLIER_SAME);
        CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_FAILED, 4, 0), RM_OUTLIER_SAME);
        CHECK(rm_outlier_healthy(&c, &n));
        CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_ANSWERED, 4, 0), RM_OUTLIER_SAME);
        CHECK_EQ(n.failures, 0);
    }
    CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_FAILED, 4, 0), RM_OUTLIER_SAME);
    CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_FAILED, 4, 0), RM_OUTLIER_SAME);
    CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_FAILED, 4, 0), RM_OUTLIER_EJECT);
    CHECK(n.ejected && !rm_outlier_healthy(&c, &n) && !rm_outlier_routable(&n, 0));
    /* Further failures change nothing; the first answer restores it. */
    CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_FAILED, 4, 1), RM_OUTLIER_SAME);
    CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_ANSWERED, 4, 1), RM_OUTLIER_RESTORE);
    CHECK(!n.ejected && n.failures == 0 && rm_outlier_healthy(&c, &n));
    /* eject_after 1: the old rule, one failure is enough. */
    c.eject_after = 1;
    CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_FAILED, 4, 0), RM_OUTLIER_EJECT);
}

static void test_stalled_failures_neither_count_nor_reset(void)
{
    rm_outlier_config c = defaults();
    rm_outlier_node n = {0};
    for (int i = 0; i < 100; i++)
        CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_IGNORED, 4, 0), RM_OUTLIER_SAME);
    CHECK_EQ(n.failures, 0);
    CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_FAILED, 4, 0), RM_OUTLIER_SAME);
    CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_FAILED, 4, 0), RM_OUTLIER_SAME);
    CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_IGNORED, 4, 0), RM_OUTLIER_SAME);
    CHECK_EQ(n.failures, 2); /* a stall in between does not forgive either */
    CHECK_EQ(rm_outlier_record(&c, &n, RM_OUTLIER_FAILED, 4, 0), RM_OUTLIER_EJECT);
}

static void test_ejected_share_is_bounded(void)
{
    rm_outlier_config c = defaults();
    /* Half of 4 is 2; of 5, 2; of 3, 1; and one may always be ejected. */
    CHECK(rm_outlier_may_eject(&c, 4, 1) && !rm_outlier_may_eject(&c, 4, 2));
    CHECK(rm_outlier_may_eject(&c, 5, 1) && !rm_outlier_may_eject(&c, 5, 2));
    CHECK(rm_outlier_may_eject(&c, 3, 0) && !rm_outlier_may_eject(&c, 3, 1));
    CHECK(rm_outlier_may_eject(&c, 1, 0) && !rm_outlier_may_eject(&c, 1, 1));
    c.max_ejected_share = 0;
    CHECK(rm_outlier_may_eject(&c, 10, 0) && !rm_outlier_may_eject(&c, 10, 1));
    c.max_ejected_share = 1;
    CHECK(rm_outlier_may_eject(&c, 10, 9) && !rm_outlier_may_eject(&c, 10, 10));

    /* Four nodes fail: two leave, the other two are kept (not healthy). */
    c = defaults();
    rm_outlier_node n[4];
    memset(n, 0, sizeof n);
    uint32_t ejected = 0;
    rm_outlier_change last[4];
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 4; i++) {
            last[i] = rm_outlier_record(&c, &n[i], RM_OUTLIER_FAILED, 4, ejected);
            ejected += last[i] == RM_OUTLIER_EJECT;
        }
    CHECK_EQ(ejected, 2);
    CHECK(last[0] == RM_OUTLIER_EJECT && last[1] == RM_OUTLIER_EJECT);
    CHECK(last[2] == RM_OUTLIER_KEPT && last[3] == RM_OUTLIER_KEPT);
    CHECK(!n[2].ejected && !rm_outlier_healthy(&c, &n[2]) && rm_outlier_routable(&n[2], 0));
    /* One comes back: the next failure of a kept node ejects it. */
    CHECK_EQ(rm_outlier_record(&c, &n[0], RM_OUTLIER_ANSWERED, 4, 2), RM_OUTLIER_RESTORE);
    CHECK_EQ(rm_outlier_record(&c, &n[2], RM_OUTLIER_FAILED, 4, 1), RM_OUTLIER_EJECT);
}

static void test_panic_threshold(void)
{
    rm_outlier_config c = defaults();
    CHECK(!rm_outlier_panic(&c, 0, 0)); /* no members: nothing to route to */
    CHECK(!rm_outlier_panic(&c, 2, 4)); /* half healthy is not below half */
    CHECK(rm_outlier_panic(&c, 1, 4));
    CHECK(rm_outlier_panic(&c, 0, 1)); /* a lone ejected node still routes */
    CHECK(!rm_outlier_panic(&c, 1, 1));
    c.panic_threshold = 0; /* off */
    CHECK(!rm_outlier_panic(&c, 0, 4));
    rm_outlier_node ej = {3, 1};
    CHECK(!rm_outlier_routable(&ej, 0) && rm_outlier_routable(&ej, 1));
}

/* The cluster as the router runs it: per round every member gets one health
 * check; returns how many are ejected at the end. fail(i, round) says
 * whether member i's check failed, stalled(round) whether the router's
 * loop stalled while that round's checks were out. */
static uint32_t simulate(int members, int rounds, int (*fail)(int, int), int (*stalled)(int))
{
    rm_outlier_config c = defaults();
    rm_outlier_node n[16];
    memset(n, 0, sizeof n);
    uint32_t ejected = 0;
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < members; i++) {
            rm_outlier_outcome o = rm_outlier_classify(fail(i, r), stalled(r), 0);
            rm_outlier_change ch = rm_outlier_record(&c, &n[i], o, (uint32_t)members, ejected);
            ejected += ch == RM_OUTLIER_EJECT;
            ejected -= ch == RM_OUTLIER_RESTORE;
        }
    return ejected;
}

/* A router stopped for 2.5 s every few rounds: every check out during a
 * stop times out, and every node answers the checks in between. */
static int fail_in_stops(int i, int r)
{
    (void)i;
    return r % 4 == 1;
}
static int stops(int r)
{
    return r % 4 == 1;
}
static int never(int r)
{
    (void)r;
    return 0;
}
static int node3_dead(int i, int r)
{
    (void)r;
    return i == 3;
}
static int all_dead(int i, int r)
{
    (void)i, (void)r;
    return 1;
}
/* A starved router: checks time out in runs of two (the router's lag was
 * under the stall threshold); never three in a row. */
static int runs_of_two(int i, int r)
{
    return (r + i) % 3 != 0;
}

static void test_cluster_stories(void)
{
    CHECK_EQ(simulate(4, 40, fail_in_stops, stops), 0); /* the router stalled */
    CHECK_EQ(simulate(4, 40, fail_in_stops, never), 0); /* one failure per stop: not 3 */
    CHECK_EQ(simulate(4, 40, runs_of_two, never), 0);   /* never 3 in a row */
    CHECK_EQ(simulate(4, 3, node3_dead, never), 1);     /* dead: out after 3 checks */
    CHECK_EQ(simulate(4, 2, node3_dead, never), 0);     /* ... not before */
    CHECK_EQ(simulate(4, 40, all_dead, never), 2);      /* at most half */
    CHECK_EQ(simulate(4, 40, node3_dead, stops), 1);    /* stalls do not save the dead */
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_classify);
    RUN(test_ejects_after_consecutive_failures_only);
    RUN(test_stalled_failures_neither_count_nor_reset);
    RUN(test_ejected_share_is_bounded);
    RUN(test_panic_threshold);
    RUN(test_cluster_stories);
    return rm_t_report();
}
