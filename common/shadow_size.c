/* shadow_size.c -- how big each miniature cache is: entries per factor at a
 * sampling threshold, their bytes, and the largest threshold whose caches
 * fit the estimator's budget (shadow.h, "sizing"). Pure. */
#include "shadow.h"
#include "shadow_internal.h"

size_t rm_shadow_table_slots(uint64_t cap)
{
    size_t n = 4;
    while (n < 2 * cap)
        n *= 2;
    return n;
}

size_t rm_shadow_cache_bytes(uint64_t cap, int recency)
{
    size_t entry =
        recency ? sizeof(rm_shadow_lnode) : sizeof(rm_shadow_entry) + sizeof(rm_shadow_slot);
    return (size_t)cap * entry + rm_shadow_table_slots(cap) * sizeof(uint32_t);
}

uint64_t rm_shadow_cap_at(double factor, uint64_t pool, uint64_t threshold)
{
    double c = factor * (double)pool * ((double)threshold / (double)RATE_ONE) + 0.5;
    if (c < 1)
        return 1;
    return c > (double)(UINT32_MAX / 4) ? UINT32_MAX / 4 : (uint64_t)c;
}

static size_t footprint(const rm_shadow_config *cfg, uint64_t pool, uint64_t threshold)
{
    size_t b = 0;
    for (uint32_t i = 0; i < cfg->nfactors; i++)
        b += rm_shadow_cache_bytes(rm_shadow_cap_at(cfg->factors[i], pool, threshold),
                                   !cfg->policy.priority);
    return b;
}

/* The rate cap as a threshold: max_rate, raised to min_sample / pool so
 * the factor-1 cache keeps min_sample entries, at most 1. */
uint64_t rm_shadow_rate_limit(const rm_shadow_config *cfg, uint64_t pool)
{
    double r = cfg->max_rate;
    if (pool && (double)cfg->min_sample / (double)pool > r)
        r = (double)cfg->min_sample / (double)pool;
    if (r >= 1)
        return RATE_ONE;
    uint64_t t = (uint64_t)(r * (double)RATE_ONE);
    return t ? t : 1;
}

/* The largest threshold in [1, limit] whose caches fit the budget, or 0. */
uint64_t rm_shadow_choose_threshold(const rm_shadow_config *cfg, uint64_t pool, uint64_t limit)
{
    if (footprint(cfg, pool, 1) > cfg->budget_bytes)
        return 0;
    uint64_t lo = 1, hi = limit;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo + 1) / 2;
        if (footprint(cfg, pool, mid) <= cfg->budget_bytes)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}
