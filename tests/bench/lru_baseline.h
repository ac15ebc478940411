/* lru_baseline.h -- the baseline of the routing benchmarks: one LRU cache
 * (the node's cache code, in process) replaying a trace in order.
 *
 * Being the node's rm_cache, it evicts as a node does: least recently used
 * *leaves* of the radix tree first, so a prefix stays while any cached
 * sequence extends it (a block-level LRU that touches a chain root-first
 * would evict the root first and keep unreachable blocks). Checked by
 * tests/unit/test_lru_baseline.c. */
#ifndef RM_LRU_BASELINE_H
#define RM_LRU_BASELINE_H

#include <stdio.h>
#include <stdlib.h>

#include "cache.h"
#include "trace.h"

/* Token hit rate of one cache made with cfg, replaying w in order. */
static double single_cache_hit(const rm_trace *w, const rm_cache_config *cfg)
{
    rm_cache c;
    if (rm_cache_init(&c, cfg) != RM_CACHE_OK) {
        fprintf(stderr, "cannot make a %llu-page cache\n", (unsigned long long)cfg->pool_pages);
        exit(1);
    }
    uint64_t q = 0, h = 0;
    for (size_t i = 0; i < w->n; i++) {
        rm_match_result mr;
        rm_insert_result ir;
        rm_cache_match(&c, NULL, "m", 1, w->req[i].tokens, w->req[i].n, 0, 0, i, &mr);
        rm_cache_insert(&c, NULL, "m", 1, w->req[i].tokens, w->req[i].n, 0, i, &ir);
        q += w->req[i].n;
        h += mr.matched_tokens;
    }
    rm_cache_destroy(&c);
    return (double)h / (double)q;
}

/* Token hit rate of one LRU cache of `pages` pages of page_tokens tokens. */
static double single_lru_hit(const rm_trace *w, uint32_t page_tokens, uint64_t pages)
{
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = page_tokens;
    cfg.pool_pages = pages;
    cfg.policy = RM_EVICT_LRU;
    return single_cache_hit(w, &cfg);
}

#endif
