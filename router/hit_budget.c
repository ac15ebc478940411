/* hit_budget.c -- the router's side of the hit budget (common/budget.h):
 * its own shadow of the ideal and infinite caches, fed on the router
 * thread, and the budget as the views show it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "router_internal.h"
#include "util.h"

/* The ideal cache holds what the healthy nodes' pools hold together, in
 * the first such node's page size and eviction policy (a cluster has one
 * of each; tokens are summed should they differ). It is made once a node's
 * Stats tell them, and resized as nodes join, leave, fail or come back
 * (the rate never rises: shadow.h, rm_shadow_set_pool). */
void rt_budget_pools(rm_router *r)
{
    if (!r->cfg.hit_budget || r->budget_failed)
        return;
    uint64_t tokens = 0;
    uint32_t page = 0, policy = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        const rnode *n = r->nodes[i];
        if (n->removed || !n->healthy || !n->have_stats || !n->stats.page_tokens)
            continue;
        if (!page) {
            page = n->stats.page_tokens;
            policy = n->stats.eviction_policy;
        }
        tokens += n->stats.pool_pages * n->stats.page_tokens;
    }
    if (!page || tokens < page)
        return; /* nothing to size it by (yet): the last size stays */
    if (r->budget_on) {
        uint64_t pages = tokens / r->budget.cfg.page_tokens;
        if (pages && pages != r->budget.pool_pages)
            rm_shadow_set_pool(&r->budget, pages);
        return;
    }
    rm_evict_policy p = (rm_evict_policy)policy;
    if (!rm_shadow_models(p))
        rm_log(RM_LOG_WARN, "router",
               "hit budget: the nodes' eviction policy %u has no model in common/shadow.c; the "
               "ideal cache is estimated as LRU",
               policy);
    rm_shadow_config c;
    rm_shadow_config_router(&c, page, tokens / page, p);
    rm_shadow_result rc = rm_shadow_init(&r->budget, &c);
    if (rc != RM_SHADOW_OK) {
        r->budget_failed = 1;
        rm_log(RM_LOG_WARN, "router", "hit budget off: %s", rm_shadow_strerror(rc));
        return;
    }
    r->budget_on = 1;
    rm_log(RM_LOG_INFO, "router",
           "hit budget: ideal cache of %llu pages x %u tokens, sampling rates %.4g / %.4g, %zu "
           "bytes",
           (unsigned long long)c.pool_pages, page, rm_shadow_rate(&r->budget),
           rm_shadow_infinite_rate(&r->budget), rt_budget_bytes(r));
}

/* Each call is timed (two vDSO clock reads, ~50 ns), so the estimators'
 * cost is a figure of the running router. */
void rt_budget(rm_router *r, rt_budget_fn access, const char *ns, const uint32_t *tokens, size_t n)
{
    if (!r->budget_on)
        return;
    uint64_t t0 = rm_now_ns();
    access(&r->budget, ns, strlen(ns), tokens, n);
    r->budget_ns += rm_now_ns() - t0;
}

size_t rt_budget_bytes(const rm_router *r)
{
    return r->budget_on ? sizeof r->budget + rm_shadow_memory_bytes(&r->budget) : 0;
}

void rt_budget_view(const rm_router *r, double achieved, rt_budget_figures *out)
{
    memset(out, 0, sizeof *out);
    out->infinite = out->ideal = -1;
    if (r->budget_on) {
        const rm_shadow_counts *c = &r->budget.counts;
        double ideal = rm_shadow_hit_ratio(c, NULL, 0), inf = rm_shadow_infinite_hit_ratio(c, NULL);
        out->ideal = isnan(ideal) ? -1 : ideal;
        out->infinite = isnan(inf) ? -1 : inf;
        out->ideal_hit_tokens = isnan(ideal) ? 0 : ideal * (double)c->query_tokens;
        out->infinite_hit_tokens = isnan(inf) ? 0 : inf * (double)c->query_tokens;
        out->query_tokens = c->query_tokens;
        out->aligned_tokens = c->aligned_tokens;
    }
    rm_budget_node *nodes = rm_xcalloc(r->nnodes + 1, sizeof *nodes);
    size_t k = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        const rnode *n = r->nodes[i];
        if (n->removed || !n->have_stats)
            continue;
        const radixmesh_v1_NodeStats *s = &n->stats;
        size_t m = s->hit_budget_factors_count < s->hit_budget_hit_tokens_count
                       ? s->hit_budget_factors_count
                       : s->hit_budget_hit_tokens_count;
        nodes[k++] = (rm_budget_node){s->hit_budget_factors, s->hit_budget_hit_tokens, m,
                                      s->hit_budget_query_tokens};
    }
    rm_budget_curve(nodes, k, achieved, out->curve);
    free(nodes);
}
