/* route_key.c -- the routing key of a request and the cluster-hot
 * prefixes (the rules of route_key.h), and the hot set recomputed from the
 * nodes' Stats. */
#include "route_key.h"

#include <stdlib.h>
#include <string.h>

#include "hotset.h"
#include "log.h"
#include "prefix_key.h"
#include "router_internal.h"
#include "util.h"

/* ---- the rules (pure) ------------------------------------------------------ */

int rm_route_is_hot(const uint64_t *hot, size_t nhot, uint64_t h)
{
    size_t lo = 0, hi = nhot;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (hot[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < nhot && hot[lo] == h;
}

uint64_t rm_route_key(const rm_router_config *cfg, const uint64_t *hot, size_t nhot, const char *ns,
                      const uint32_t *tokens, size_t n, uint32_t *key_tokens)
{
    uint64_t h = rm_prefix_ns_hash(ns, strlen(ns));
    if (cfg->key_mode == RM_KEY_FIXED) {
        size_t len = n < cfg->fixed_key_tokens ? n : cfg->fixed_key_tokens;
        *key_tokens = (uint32_t)len;
        return rm_hash_u32s(tokens, len, h);
    }
    size_t B = cfg->key_block_tokens, m = n / B;
    size_t deep = cfg->max_key_blocks ? cfg->max_key_blocks : rm_hotset_depth((uint32_t)B);
    if (m > deep)
        m = deep;
    if (m > RM_HOT_MAX_BLOCKS)
        m = RM_HOT_MAX_BLOCKS;
    if (m == 0) { /* shorter than a block: nothing worth affinity, spread */
        *key_tokens = (uint32_t)n;
        return rm_hash_u32s(tokens, n, h ^ 0x5bd1e995ULL);
    }
    if (nhot == 0) { /* the common case: the first block is the key */
        *key_tokens = (uint32_t)B;
        return rm_prefix_chain(h, tokens, B);
    }
    /* Key = the first block past the deepest hot prefix of this request.
     * Hot prefixes are shared by a large share of all traffic (summed over
     * the nodes' sketches), so keying on them would pin that share to one
     * node; the block after them tells conversations and documents apart
     * while every turn of one conversation still shares it. One pass, one
     * hash per block: linear in the prompt however deep. */
    size_t deepest = 0;
    uint64_t hb = h, after = 0; /* after: the block past the deepest hot one */
    for (size_t b = 1; b <= m; b++) {
        hb = rm_prefix_chain(hb, tokens + (b - 1) * B, B);
        if (b == deepest + 1)
            after = hb;
        if (rm_route_is_hot(hot, nhot, hb))
            deepest = b;
    }
    if (deepest < m) {
        *key_tokens = (uint32_t)((deepest + 1) * B);
        return after;
    }
    /* All of it is hot prefix (plus a partial block): spread by the rest. */
    *key_tokens = (uint32_t)n;
    return rm_hash_u32s(tokens + m * B, n - m * B, hb ^ 0x5bd1e995ULL);
}

static int by_hash(const void *a, const void *b)
{
    const radixmesh_v1_HotPrefix *x = a, *y = b;
    return x->hash < y->hash ? -1 : x->hash > y->hash;
}

double rm_route_branching(const radixmesh_v1_HotPrefix *e, size_t n)
{
    double best = -1, all_leads = 0, other = 0;
    for (size_t i = 0; i < n; i++) {
        other += e[i].other_requests;
        all_leads += e[i].lead_requests;
        double via = 0;
        for (size_t j = 0; j < n; j++)
            if (e[j].lead == e[i].lead)
                via += e[j].lead_requests;
        best = via > best ? via : best;
    }
    return other + all_leads - (best > 0 ? best : 0);
}

double rm_route_hot_share(double configured, uint32_t healthy)
{
    if (configured > 0)
        return configured;
    double share = healthy ? 0.5 / healthy : 1.0;
    return share < 0.02 ? 0.02 : share;
}

size_t rm_route_hot_set(radixmesh_v1_HotPrefix *all, size_t k, double total, double share,
                        uint64_t *out)
{
    qsort(all, k, sizeof *all, by_hash);
    size_t nhot = 0;
    for (size_t i = 0; i < k;) {
        size_t j = i;
        double sum = 0;
        while (j < k && all[j].hash == all[i].hash)
            sum += all[j++].requests;
        if (total > 0 && sum >= share * total &&
            rm_route_branching(all + i, j - i) >= RM_ROUTE_HOT_BRANCH * sum)
            out[nhot++] = all[i].hash;
        i = j;
    }
    return nhot;
}

/* ---- the router's key and hot set ------------------------------------------ */

uint64_t rm_router_key(const rm_router *r, const char *ns, const uint32_t *tokens, size_t n,
                       uint32_t *key_tokens)
{
    return rm_route_key(&r->cfg, r->hot, r->nhot, ns, tokens, n, key_tokens);
}

/* Recomputes the hot set from every healthy node's last Stats (the rule:
 * rm_route_hot_set). Every router replica reads the same node statistics,
 * so replicas agree on the set. */
void rt_recompute_hot(rm_router *r)
{
    double total = 0;
    size_t nent = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (!n->have_stats || n->removed || !n->healthy)
            continue;
        if (n->stats.hot_block_tokens != r->cfg.key_block_tokens) {
            if (!n->block_warned)
                rm_log(RM_LOG_WARN, "router",
                       "node %s tracks %u-token blocks, router keys on %u: its hot prefixes "
                       "are ignored (set --hot-block-tokens = --key-block-tokens)",
                       n->id, n->stats.hot_block_tokens, r->cfg.key_block_tokens);
            n->block_warned = 1;
            continue;
        }
        total += n->stats.hot_window_requests;
        nent += n->stats.hot_prefixes_count;
    }
    double share = rm_route_hot_share(r->cfg.hot_share, r->healthy);
    r->hot_share_now = share;
    radixmesh_v1_HotPrefix *all = rm_xmalloc(sizeof *all * (nent + 1));
    size_t k = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (!n->have_stats || n->removed || !n->healthy ||
            n->stats.hot_block_tokens != r->cfg.key_block_tokens)
            continue;
        for (pb_size_t j = 0; j < n->stats.hot_prefixes_count; j++)
            all[k++] = n->stats.hot_prefixes[j];
    }
    r->hot = rm_xrealloc(r->hot, sizeof *r->hot * (k + 1));
    r->nhot = rm_route_hot_set(all, k, total, share, r->hot);
    free(all);
}
