/* budget.h -- the cluster's hit budget: where hits are lost, and what
 * more memory would buy (issue 16; router/README.md, "Hit budget").
 *
 *   infinite  an unbounded cache over the requests this router routed:
 *             every repeated page hits (the reuse in the traffic)
 *   ideal     one cache with the healthy nodes' summed pools, same traffic
 *   achieved  the cluster's hit rate (the nodes' own counters)
 *   delivered the workers' own prefix-cache rate (gateway mode)
 *   memory curve: the cluster's hit rate with every node's pool scaled by
 *             0.25, 0.5, 1, 2, 4 and routing as it is
 *
 * The router estimates infinite and ideal with its own shadow
 * (common/shadow.h, rm_shadow_config_router); each node its memory curve
 * (rm_shadow_config_node, reported in NodeStats.hit_budget_*). What is
 * here combines the nodes' figures: a pure rule (tests/unit/test_budget.c)
 * that the router applies to the nodes' cumulative figures and `radixmesh
 * replay` to their differences over its run. The router's own shadow is
 * router/hit_budget.c. Every figure is cumulative since its daemon
 * started. */
#ifndef RM_BUDGET_H
#define RM_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#define RM_BUDGET_POINTS 5

/* The memory factors of the curve: 0.25, 0.5, 1, 2, 4. */
extern const double rm_budget_factors[RM_BUDGET_POINTS];

/* One node's estimates: hit_tokens[i] at pool x factors[i] (estimated hit
 * tokens of its query_tokens), as its Stats report them; n 0 when its
 * estimator is off. */
typedef struct rm_budget_node {
    const double *factors, *hit_tokens;
    size_t n;
    uint64_t query_tokens;
} rm_budget_node;

typedef struct rm_budget_point {
    double memory;
    double hit_rate;   /* -1: no data */
    double hit_tokens; /* estimated, summed over the nodes reporting this factor */
    uint64_t query_tokens;
} rm_budget_point;

/* The cluster's memory curve: at each of rm_budget_factors, the estimated
 * hit tokens of the nodes that report that factor over their query tokens
 * (each node's estimate weighted by its own traffic: routing as it is).
 * At factor 1 hit_rate is `achieved` (the cluster's real rate; the
 * estimate stays in hit_tokens) when achieved >= 0. */
void rm_budget_curve(const rm_budget_node *nodes, size_t n, double achieved,
                     rm_budget_point out[RM_BUDGET_POINTS]);

/* hit / query as a rate; -1 (no estimate) without query tokens, with a
 * NaN estimate, or with one past 1: the estimators scale sampled hits up
 * by their sampling rate, and a window too small for its samples can come
 * out above its query tokens (146% was printed for a one-request replay). */
double rm_budget_rate(double hit_tokens, uint64_t query_tokens);

#endif
