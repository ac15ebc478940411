#include "shadow_exact.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prefix_key.h"
#include "util.h"

int rm_shadow_exact_init(rm_shadow_exact *e, uint32_t page_tokens, rm_evict_policy policy,
                         const uint64_t *capacity, size_t n, int infinite)
{
    memset(e, 0, sizeof *e);
    if (page_tokens == 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (capacity[i] == 0)
            return -1;
    e->page_tokens = page_tokens;
    e->caches = rm_xcalloc(n ? n : 1, sizeof *e->caches);
    e->capacity = rm_xcalloc(n ? n : 1, sizeof *e->capacity);
    e->hit_tokens = rm_xcalloc(n ? n : 1, sizeof *e->hit_tokens);
    for (size_t i = 0; i < n; i++) {
        rm_cache_config cfg;
        rm_cache_config_defaults(&cfg);
        cfg.page_tokens = page_tokens;
        cfg.pool_pages = capacity[i];
        cfg.policy = policy;
        /* Only the result matters here, not which error it was (cache.h's
         * error convention is its own). */
        if (rm_cache_init(&e->caches[i], &cfg) != 0) {
            rm_shadow_exact_destroy(e);
            return -1;
        }
        e->capacity[i] = capacity[i];
        e->ncaches = i + 1;
    }
    e->infinite = infinite;
    if (infinite) {
        e->mask = 1023;
        e->keys = rm_xcalloc(e->mask + 1, sizeof *e->keys);
    }
    return 0;
}

void rm_shadow_exact_destroy(rm_shadow_exact *e)
{
    for (size_t i = 0; i < e->ncaches; i++)
        rm_cache_destroy(&e->caches[i]);
    free(e->caches);
    free(e->capacity);
    free(e->hit_tokens);
    free(e->keys);
    memset(e, 0, sizeof *e);
}

static void grow(rm_shadow_exact *e)
{
    size_t old_mask = e->mask;
    uint64_t *old = e->keys;
    e->mask = old_mask * 2 + 1;
    e->keys = rm_xcalloc(e->mask + 1, sizeof *e->keys);
    for (size_t i = 0; i <= old_mask; i++) {
        if (!old[i])
            continue;
        size_t j = rm_mix64(old[i]) & e->mask;
        while (e->keys[j])
            j = (j + 1) & e->mask;
        e->keys[j] = old[i];
    }
    free(old);
}

/* Adds key; returns 1 if it was there already. */
static int seen(rm_shadow_exact *e, uint64_t key)
{
    key = key ? key : 1;
    size_t i = rm_mix64(key) & e->mask;
    for (; e->keys[i]; i = (i + 1) & e->mask)
        if (e->keys[i] == key)
            return 1;
    e->keys[i] = key;
    if (++e->len * 2 > e->mask + 1)
        grow(e);
    return 0;
}

/* Pages of the request seen before, from the first on, up to the first
 * one never seen (every page is then added). */
static size_t infinite_access(rm_shadow_exact *e, const char *ns, size_t ns_len,
                              const uint32_t *tokens, size_t n)
{
    uint32_t pt = e->page_tokens;
    uint64_t h = rm_prefix_ns_hash(ns, ns_len);
    size_t hit = 0;
    int missed = 0;
    for (size_t p = 0; p + pt <= n; p += pt) {
        h = rm_prefix_chain(h, tokens + p, pt);
        if (seen(e, h) && !missed)
            hit++;
        else
            missed = 1;
    }
    return hit;
}

static void cycle(rm_shadow_exact *e, const char *ns, size_t ns_len, const uint32_t *tokens,
                  size_t n, int count)
{
    e->now++;
    for (size_t i = 0; i < e->ncaches; i++) {
        rm_match_result mr;
        rm_insert_result ir;
        memset(&mr, 0, sizeof mr);
        if (count &&
            rm_cache_match(&e->caches[i], NULL, ns, ns_len, tokens, n, 0, 0, e->now, &mr) == 0)
            e->hit_tokens[i] += mr.matched_tokens;
        /* A cache that cannot take the pages keeps what it has: the node
         * does the same, and the figure is what it would hit. */
        (void)rm_cache_insert(&e->caches[i], NULL, ns, ns_len, tokens, n, 0, e->now, &ir);
    }
    if (e->infinite) {
        size_t hit = infinite_access(e, ns, ns_len, tokens, n);
        if (count)
            e->inf_hit_tokens += hit * e->page_tokens;
    }
    if (count) {
        e->requests++;
        e->query_tokens += n;
    }
}

void rm_shadow_exact_match(rm_shadow_exact *e, const char *ns, size_t ns_len,
                           const uint32_t *tokens, size_t n)
{
    cycle(e, ns, ns_len, tokens, n, 1);
}

void rm_shadow_exact_insert(rm_shadow_exact *e, const char *ns, size_t ns_len,
                            const uint32_t *tokens, size_t n)
{
    cycle(e, ns, ns_len, tokens, n, 0);
}

double rm_shadow_exact_ratio(const rm_shadow_exact *e, size_t i)
{
    if (i >= e->ncaches || e->query_tokens == 0)
        return NAN;
    return (double)e->hit_tokens[i] / (double)e->query_tokens;
}

double rm_shadow_exact_infinite_ratio(const rm_shadow_exact *e)
{
    if (!e->infinite || e->query_tokens == 0)
        return NAN;
    return (double)e->inf_hit_tokens / (double)e->query_tokens;
}

size_t rm_shadow_exact_pages(const rm_shadow_exact *e)
{
    return e->len;
}
