/* Unit tests for the deadline of the router's calls to nodes made for a
 * client (router/node_calls.c): the router's own --call-timeout-ms, or
 * the client's remaining time less a margin to carry the answer back. */
#include <stdint.h>

#include "check.h"
#include "router_internal.h"

static void test_no_client_deadline_keeps_the_call_timeout(void)
{
    int cut = -1;
    CHECK_EQ(rt_call_timeout_ms(1000, INT64_MAX, &cut), 1000);
    CHECK_EQ(cut, 0);
}

static void test_a_later_client_deadline_keeps_the_call_timeout(void)
{
    int cut = -1;
    CHECK_EQ(rt_call_timeout_ms(1000, 60000, &cut), 1000);
    CHECK_EQ(cut, 0);
    CHECK_EQ(rt_call_timeout_ms(1000, 1000 + RT_DEADLINE_MARGIN_MS, &cut), 1000);
    CHECK_EQ(cut, 0);
}

static void test_a_sooner_client_deadline_cuts_the_call(void)
{
    int cut = 0;
    CHECK_EQ(rt_call_timeout_ms(1000, 300, &cut), 300 - RT_DEADLINE_MARGIN_MS);
    CHECK_EQ(cut, 1);
    CHECK_EQ(rt_call_timeout_ms(1000, 999 + RT_DEADLINE_MARGIN_MS, &cut), 999);
    CHECK_EQ(cut, 1);
}

static void test_a_passed_client_deadline_leaves_no_call(void)
{
    int cut = 0;
    CHECK_EQ(rt_call_timeout_ms(1000, RT_DEADLINE_MARGIN_MS, &cut), 0);
    CHECK_EQ(cut, 1);
    CHECK_EQ(rt_call_timeout_ms(1000, 0, &cut), 0);
    CHECK_EQ(rt_call_timeout_ms(1000, -5000, &cut), 0);
    CHECK_EQ(rt_call_timeout_ms(1000, INT64_MIN + 1, &cut), 0);
}

int main(void)
{
    RUN(test_no_client_deadline_keeps_the_call_timeout);
    RUN(test_a_later_client_deadline_keeps_the_call_timeout);
    RUN(test_a_sooner_client_deadline_cuts_the_call);
    RUN(test_a_passed_client_deadline_leaves_no_call);
    return rm_t_report();
}
