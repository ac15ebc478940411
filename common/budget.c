/* budget.c -- the cluster's memory curve from the nodes' estimates
 * (budget.h). */
#include "budget.h"

#include <math.h>

const double rm_budget_factors[RM_BUDGET_POINTS] = {0.25, 0.5, 1, 2, 4};

double rm_budget_rate(double hit_tokens, uint64_t query_tokens)
{
    if (!query_tokens || isnan(hit_tokens) || hit_tokens > (double)query_tokens)
        return -1;
    return hit_tokens / (double)query_tokens;
}

void rm_budget_curve(const rm_budget_node *nodes, size_t n, double achieved,
                     rm_budget_point out[RM_BUDGET_POINTS])
{
    for (size_t k = 0; k < RM_BUDGET_POINTS; k++) {
        double f = rm_budget_factors[k], hit = 0;
        uint64_t query = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < nodes[i].n; j++)
                if (fabs(nodes[i].factors[j] - f) < 1e-9) {
                    hit += nodes[i].hit_tokens[j];
                    query += nodes[i].query_tokens;
                    break;
                }
        out[k] = (rm_budget_point){f, rm_budget_rate(hit, query), hit, query};
        if (f == 1 && achieved >= 0)
            out[k].hit_rate = achieved;
    }
}
