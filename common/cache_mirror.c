/* cache_mirror.c -- the cache as the mirror of an inference engine's own
 * prefix cache (node/KV_EVENTS.md): hits counted as the engine counts
 * them, pages and namespaces the engine dropped taken out (not evictions),
 * the pool grown to the engine's size. The contract is in cache.h. */
#include <errno.h>
#include <stdlib.h>

#include "cache.h"

size_t rm_cache_match_engine(rm_cache *c, const char *ns, size_t ns_len, const uint32_t *tokens,
                             size_t n, uint64_t now_ms)
{
    rm_radix_node *root, *last;
    c->st.match_requests_total++;
    c->st.query_tokens_total += n;
    if (n == 0 || rm_radix_root(&c->tree, ns, ns_len, 0, &root))
        return 0;
    size_t hit =
        rm_radix_match(&c->tree, root, tokens, n - 1, RM_MATCH_TOUCH | RM_MATCH_HIT, now_ms, &last);
    c->st.hit_tokens_total += hit;
    return hit;
}

/* Pages the owner took out of the tree (an engine dropped them): back to
 * the pool, but not evictions -- the cache did not choose them. */
static void free_removed(void *ctx, const uint32_t *pages, uint32_t n)
{
    rm_cache *c = ctx;
    if (rm_pool_free(&c->pool, pages, n) != 0)
        abort(); /* a tree page was not a used pool page: accounting bug */
}

uint64_t rm_cache_remove_page(rm_cache *c, const char *ns, size_t ns_len, const uint32_t *tokens,
                              size_t n, int *busy)
{
    uint32_t pt = c->cfg.page_tokens;
    rm_radix_node *root, *last;
    *busy = 0;
    if (n < pt || n % pt || rm_radix_root(&c->tree, ns, ns_len, 0, &root) ||
        rm_radix_match(&c->tree, root, tokens, n, 0, 0, &last) < n)
        return 0;
    /* Split where the page begins, so that a node starts with it. */
    rm_radix_match(&c->tree, root, tokens, n - pt, RM_MATCH_SPLIT, 0, &last);
    rm_radix_node *top = rm_radix_child(&c->tree, last, tokens + n - pt);
    if (!top)
        abort(); /* matched a moment ago */
    *busy = top->lock_ref != 0;
    return rm_radix_remove_subtree(&c->tree, top, free_removed, c);
}

uint64_t rm_cache_clear_namespace(rm_cache *c, const char *ns, size_t ns_len, int *busy)
{
    rm_radix_node *root;
    *busy = 0;
    if (rm_radix_root(&c->tree, ns, ns_len, 0, &root))
        return 0;
    *busy = root->lock_ref != 0;
    return rm_radix_remove_subtree(&c->tree, root, free_removed, c);
}

rm_cache_result rm_cache_grow_pool(rm_cache *c, uint64_t pool_pages)
{
    if (pool_pages <= c->pool.npages)
        return RM_CACHE_OK;
    int rc = rm_pool_grow(&c->pool, pool_pages);
    if (rc)
        return rc == -ENOMEM ? RM_CACHE_NO_MEMORY : RM_CACHE_BAD_CONFIG;
    c->cfg.pool_pages = pool_pages;
    return RM_CACHE_OK;
}
