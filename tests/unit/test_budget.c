/* Unit tests for the cluster's memory curve (common/budget.h): each
 * node's estimate weighted by its own traffic, factor 1 the achieved rate,
 * nodes without estimators left out, no data as -1. */
#include <math.h>

#include "check.h"
#include "budget.h"

static const double five[] = {0.25, 0.5, 1, 2, 4};

static int near(double a, double b)
{
    return fabs(a - b) < 1e-12;
}

static void test_weighted_by_traffic(void)
{
    /* A busy node at 0.5 and a quiet one at 0.9 (at 2x): the cluster's 2x
     * is their hit tokens over their query tokens, not the mean rate. */
    const double a[] = {100, 200, 300, 500, 600}, b[] = {10, 20, 30, 90, 95};
    rm_budget_node n[] = {{five, a, 5, 1000}, {five, b, 5, 100}};
    rm_budget_point p[RM_BUDGET_POINTS];
    rm_budget_curve(n, 2, 0.3, p);
    for (int k = 0; k < RM_BUDGET_POINTS; k++) {
        CHECK(p[k].memory == five[k]);
        CHECK(p[k].query_tokens == 1100);
        CHECK(near(p[k].hit_tokens, a[k] + b[k]));
    }
    CHECK(near(p[3].hit_rate, 590.0 / 1100));
    CHECK(near(p[0].hit_rate, 110.0 / 1100));
    CHECK(near(p[4].hit_rate, 695.0 / 1100));
    /* Factor 1 is the cluster's own rate; the estimate stays beside it. */
    CHECK(p[2].hit_rate == 0.3);
    CHECK(near(p[2].hit_tokens, 330));
    /* Without an achieved rate, factor 1 is the estimate too. */
    rm_budget_curve(n, 2, -1, p);
    CHECK(near(p[2].hit_rate, 330.0 / 1100));
}

static void test_nodes_without_estimates(void)
{
    const double a[] = {100, 200, 300, 500, 600};
    /* Off (no factors), and one reporting only 1x and 2x (another factor
     * list): each point counts the nodes that report it. */
    const double two[] = {1, 2}, c[] = {40, 80};
    rm_budget_node n[] = {{five, a, 5, 1000}, {NULL, NULL, 0, 5000}, {two, c, 2, 100}};
    rm_budget_point p[RM_BUDGET_POINTS];
    rm_budget_curve(n, 3, -1, p);
    CHECK(p[0].query_tokens == 1000 && near(p[0].hit_rate, 0.1));
    CHECK(p[3].query_tokens == 1100 && near(p[3].hit_rate, 580.0 / 1100));
    /* No node reports anything: -1, except the achieved rate at 1. */
    rm_budget_curve(n + 1, 1, 0.25, p);
    for (int k = 0; k < RM_BUDGET_POINTS; k++)
        CHECK(p[k].hit_rate == (k == 2 ? 0.25 : -1));
    rm_budget_curve(NULL, 0, -1, p);
    CHECK(p[2].hit_rate == -1 && p[2].query_tokens == 0);
}

static void test_rate(void)
{
    CHECK(rm_budget_rate(5, 10) == 0.5);
    CHECK(rm_budget_rate(5, 0) == -1);
    CHECK(rm_budget_rate(NAN, 10) == -1);
    CHECK(rm_budget_rate(10, 10) == 1);
    CHECK(rm_budget_rate(14.63, 10) == -1); /* a scaled-up sample past its window */
}

int main(void)
{
    RUN(test_weighted_by_traffic);
    RUN(test_nodes_without_estimates);
    RUN(test_rate);
    return rm_t_report();
}
