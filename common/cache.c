#include "cache.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "list.h"
#include "ptrtab.h"
#include "siphash.h"
#include "util.h"

void rm_cache_config_defaults(rm_cache_config *cfg)
{
    /* Unnamed fields are 0: metadata-only, no entry TTL, half the leases
     * per peer, no prefault. */
    *cfg = (rm_cache_config){.page_tokens = 16,
                             .pool_pages = 65536,
                             .policy = RM_EVICT_LRU,
                             .default_lease_ttl_ms = 30000,
                             .max_lease_ttl_ms = 600000,
                             .max_leases = 65536,
                             .max_namespaces = 1024};
}

const char *rm_cache_strerror(rm_cache_result r)
{
    switch (r) {
    case RM_CACHE_OK: return "ok";
    case RM_CACHE_BAD_CONFIG: return "bad cache configuration";
    case RM_CACHE_NO_MEMORY: return "cannot map the KV pool";
    case RM_CACHE_NO_RANDOMNESS: return "no randomness for the lease-id key";
    case RM_CACHE_UNKNOWN_LEASE: return "unknown lease";
    case RM_CACHE_LEASE_MISMATCH: return "the lease does not cover a prefix of these tokens";
    case RM_CACHE_PREFIX_SHORT: return "the cache holds fewer tokens than kv_start";
    case RM_CACHE_BAD_KV_START: return "kv_start is not page-aligned or past the sequence";
    case RM_CACHE_LEASE_LIMIT: return "lease limit reached";
    case RM_CACHE_PEER_LEASE_LIMIT: return "the caller's lease share is full";
    case RM_CACHE_NAMESPACE_LIMIT: return "namespace limit reached";
    case RM_CACHE_STORES_KV: return "the cache stores KV bytes: write them with the tokens";
    case RM_CACHE_METADATA_ONLY: return "the cache stores no KV bytes";
    case RM_CACHE_INCONSISTENT: return "cache invariant broken";
    case RM_CACHE_NRESULTS: break; /* the count, not a result */
    }
    return "unknown cache result";
}

/* ---- pool <-> tree glue ---------------------------------------------- */

static void free_to_pool(void *ctx, const uint32_t *pages, uint32_t n)
{
    rm_cache *c = ctx;
    if (rm_pool_free(&c->pool, pages, n) != 0)
        abort(); /* a tree page was not a used pool page: accounting bug */
    c->st.evicted_tokens_total += (uint64_t)n * c->cfg.page_tokens;
}

/* Takes `want` pages, evicting unreferenced leaves if the free list is
 * short. Returns how many were taken into out (possibly fewer). */
static uint32_t alloc_with_evict(rm_cache *c, uint32_t want, uint32_t *out)
{
    uint32_t got = rm_pool_alloc(&c->pool, want, out);
    if (got < want) {
        rm_radix_evict(&c->tree, want - got, free_to_pool, c);
        got += rm_pool_alloc(&c->pool, want - got, out + got);
    }
    return got;
}

/* Pages a sequence already holding have_pages may add, of need. */
static size_t seq_room(const rm_cache *c, size_t have_pages, size_t need)
{
    uint32_t pct = c->cfg.max_sequence_pct;
    if (pct == 0 || pct >= 100)
        return need;
    uint64_t cap = c->cfg.pool_pages * pct / 100;
    cap = cap ? cap : 1;
    uint64_t room = cap > have_pages ? cap - have_pages : 0;
    return need < room ? need : (size_t)room;
}

static uint32_t *scratch(rm_cache *c, size_t n)
{
    if (n > c->scratch_cap) {
        c->scratch_cap = n < 64 ? 64 : n;
        c->scratch = rm_xrealloc(c->scratch, c->scratch_cap * sizeof(uint32_t));
    }
    return c->scratch;
}

/* ---- leases: id table + expiry heap ---------------------------------- */

static uint64_t lease_id_of(const void *e)
{
    return ((const rm_lease *)e)->id;
}

static rm_lease *lease_find(const rm_cache *c, uint64_t id)
{
    if (id == 0)
        return NULL;
    const rm_ptrtab *t = &c->leases;
    for (size_t i = id & t->mask; t->slots[i]; i = (i + 1) & t->mask) {
        rm_lease *l = t->slots[i];
        if (l->id == id)
            return l;
    }
    return NULL;
}

static void lease_table_add(rm_cache *c, rm_lease *l)
{
    if (rm_ptrtab_add(&c->leases, l)) /* the heap holds as many as the table may */
        c->lease_heap = rm_xrealloc(c->lease_heap, sizeof *c->lease_heap * (c->leases.mask + 1));
}

static void lheap_set(rm_cache *c, size_t i, rm_lease *l)
{
    c->lease_heap[i] = l;
    l->heap_idx = (uint32_t)i;
}

static void lheap_fix(rm_cache *c, size_t i, size_t len)
{
    rm_lease *l = c->lease_heap[i];
    while (i > 0 && l->expires_ms < c->lease_heap[(i - 1) / 2]->expires_ms) {
        lheap_set(c, i, c->lease_heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t ch = 2 * i + 1;
        if (ch >= len)
            break;
        if (ch + 1 < len && c->lease_heap[ch + 1]->expires_ms < c->lease_heap[ch]->expires_ms)
            ch++;
        if (c->lease_heap[ch]->expires_ms >= l->expires_ms)
            break;
        lheap_set(c, i, c->lease_heap[ch]);
        i = ch;
    }
    lheap_set(c, i, l);
}

static void lease_drop(rm_cache *c, rm_lease *l)
{
    /* leases.n doubles as the heap length: remove from the heap first. */
    size_t last = c->leases.n - 1;
    size_t i = l->heap_idx;
    if (i != last) {
        lheap_set(c, i, c->lease_heap[last]);
        lheap_fix(c, i, last);
    }
    rm_ptrtab_del(&c->leases, l);
    /* Pins taken under this lease keep its end as their own bound. */
    for (rm_kv_pin *p = c->pins; p; p = p->next) {
        if (p->lease == l) {
            p->lease = NULL;
            p->expires_ms = l->expires_ms;
        }
    }
    if (l->owner)
        rm_peers_unref(&c->peers, l->owner);
    rm_radix_unlock(&c->tree, l->node);
    free(l);
}

static uint64_t new_lease_id(rm_cache *c)
{
    /* A keyed PRF of a counter: without the key, ids are indistinguishable
     * from random and no id says anything about another. A PRF is not a
     * permutation, so an id equal to a live one (odds 2^-64 per pair) or 0
     * is skipped. */
    uint64_t id;
    do {
        uint64_t seq = ++c->lease_seq;
        uint8_t b[8];
        for (int i = 0; i < 8; i++)
            b[i] = (uint8_t)(seq >> (8 * i));
        id = rm_siphash24(c->lease_key, b, sizeof b);
    } while (id == 0 || lease_find(c, id));
    return id;
}

/* The lease id names for who: one taken by an authenticated identity
 * exists for that identity only (others get NULL, as for an unknown id).
 * Leases of address-only or unknown callers are bearer capabilities. */
static rm_lease *lease_for(const rm_cache *c, const rm_cache_caller *who, uint64_t id)
{
    rm_lease *l = lease_find(c, id);
    if (l && l->owner && l->owner->authenticated &&
        !(who && who->authenticated && rm_peer_is(l->owner, who->id, who->len, 1)))
        return NULL;
    return l;
}

uint32_t rm_cache_peer_lease_limit(const rm_cache *c)
{
    uint32_t per = c->cfg.max_leases_per_peer ? c->cfg.max_leases_per_peer : c->cfg.max_leases / 2;
    return per ? per : 1;
}

const rm_cache_config *rm_cache_config_get(const rm_cache *c)
{
    return &c->cfg;
}

uint32_t rm_cache_page_tokens(const rm_cache *c)
{
    return c->cfg.page_tokens;
}

uint64_t rm_cache_kv_bytes_per_token(const rm_cache *c)
{
    return c->cfg.kv_bytes_per_token;
}

void rm_cache_set_limits(rm_cache *c, uint32_t max_leases, uint32_t default_lease_ttl_ms,
                         uint32_t max_lease_ttl_ms)
{
    c->cfg.max_leases = max_leases;
    c->cfg.default_lease_ttl_ms = default_lease_ttl_ms;
    c->cfg.max_lease_ttl_ms = max_lease_ttl_ms;
}

/* Root of namespace ns (NULL when absent and not created), creating it if
 * asked. At the namespace limit, empty namespaces are reclaimed first: no
 * caller holds an unlocked empty root at this point, so none is left
 * dangling. Counts refusals. */
static rm_cache_result ns_root(rm_cache *c, const char *ns, size_t ns_len, int create,
                               rm_radix_node **root)
{
    int rc = rm_radix_root(&c->tree, ns, ns_len, create, root);
    if (rc == -ENOSPC && rm_radix_reclaim(&c->tree) > 0)
        rc = rm_radix_root(&c->tree, ns, ns_len, create, root);
    if (rc == -ENOSPC) {
        c->st.namespace_refusals_total++;
        return RM_CACHE_NAMESPACE_LIMIT;
    }
    if (rc)
        *root = NULL; /* -ENOENT: absent, and not asked to create it */
    return RM_CACHE_OK;
}

static uint32_t clamp_ttl(const rm_cache *c, uint32_t ttl_ms)
{
    if (ttl_ms == 0)
        ttl_ms = c->cfg.default_lease_ttl_ms;
    return ttl_ms > c->cfg.max_lease_ttl_ms ? c->cfg.max_lease_ttl_ms : ttl_ms;
}

/* Points lease l at node (already locked by the caller's reference, which
 * the lease takes over) and restarts its TTL. */
static void lease_move(rm_cache *c, rm_lease *l, rm_radix_node *node, uint64_t now_ms)
{
    rm_radix_unlock(&c->tree, l->node);
    l->node = node;
    l->expires_ms = now_ms + l->ttl_ms;
    lheap_fix(c, l->heap_idx, c->leases.n);
}

/* ---- public API ------------------------------------------------------ */

rm_cache_result rm_cache_init(rm_cache *c, const rm_cache_config *cfg)
{
    memset(c, 0, sizeof *c);
    if (cfg->page_tokens == 0 || cfg->pool_pages == 0 || cfg->max_leases == 0 ||
        cfg->max_namespaces == 0 || cfg->default_lease_ttl_ms == 0 || cfg->max_lease_ttl_ms == 0 ||
        (unsigned)cfg->policy >= RM_EVICT_NPOLICIES)
        return RM_CACHE_BAD_CONFIG;
    if (cfg->kv_bytes_per_token > UINT64_MAX / cfg->page_tokens)
        return RM_CACHE_BAD_CONFIG;
    c->cfg = *cfg;
    int rc = rm_pool_init(&c->pool, cfg->pool_pages, cfg->kv_bytes_per_token * cfg->page_tokens,
                          cfg->prefault_kv);
    if (rc)
        return rc == -ENOMEM ? RM_CACHE_NO_MEMORY : RM_CACHE_BAD_CONFIG;
    if (rm_radix_init(&c->tree, cfg->page_tokens, cfg->policy, cfg->max_namespaces) != 0) {
        rm_pool_destroy(&c->pool);
        return RM_CACHE_BAD_CONFIG;
    }
    uint8_t peer_key[16];
    if (rm_siphash_key(c->lease_key) != 0 || rm_siphash_key(peer_key) != 0) {
        rm_radix_destroy(&c->tree);
        rm_pool_destroy(&c->pool);
        return RM_CACHE_NO_RANDOMNESS;
    }
    rm_peers_init(&c->peers, peer_key);
    rm_ptrtab_init(&c->leases, 64, lease_id_of);
    c->lease_heap = rm_xcalloc(c->leases.mask + 1, sizeof *c->lease_heap);
    return RM_CACHE_OK;
}

void rm_cache_destroy(rm_cache *c)
{
    for (size_t i = 0; c->leases.slots && i <= c->leases.mask; i++)
        free(c->leases.slots[i]);
    for (rm_kv_pin *p = c->pins; p; p = p->next) {
        free(p->pages);
        p->pages = NULL;
    }
    for (rm_kv_write *w = c->writes; w; w = w->next) {
        free(w->tokens);
        free(w->pages);
        w->tokens = NULL;
        w->pages = NULL;
    }
    rm_ptrtab_destroy(&c->leases);
    free(c->lease_heap);
    free(c->scratch);
    rm_peers_destroy(&c->peers);
    rm_radix_destroy(&c->tree);
    rm_pool_destroy(&c->pool);
    memset(c, 0, sizeof *c);
}

rm_cache_result rm_cache_match(rm_cache *c, const rm_cache_caller *who, const char *ns,
                               size_t ns_len, const uint32_t *tokens, size_t n, int lease,
                               uint32_t lease_ttl_ms, uint64_t now_ms, rm_match_result *out)
{
    out->matched_tokens = 0;
    out->lease_id = 0;
    if (lease && c->leases.n >= c->cfg.max_leases)
        return RM_CACHE_LEASE_LIMIT;
    if (lease && who) {
        const rm_peer *p = rm_peers_find(&c->peers, who->id, who->len, who->authenticated);
        if (p && p->leases >= rm_cache_peer_lease_limit(c)) {
            c->st.peer_lease_refusals_total++;
            return RM_CACHE_PEER_LEASE_LIMIT;
        }
    }
    rm_radix_node *root;
    rm_cache_result rc = ns_root(c, ns, ns_len, lease, &root);
    if (rc)
        return rc;
    c->st.match_requests_total++;
    c->st.query_tokens_total += n;
    if (!root)
        return RM_CACHE_OK; /* a namespace nobody inserted into: a miss */
    rm_radix_node *last;
    int flags = RM_MATCH_TOUCH | RM_MATCH_HIT | (lease ? RM_MATCH_SPLIT : 0);
    out->matched_tokens = rm_radix_match(&c->tree, root, tokens, n, flags, now_ms, &last);
    c->st.hit_tokens_total += out->matched_tokens;
    if (lease) {
        rm_lease *l = rm_xcalloc(1, sizeof *l);
        l->id = new_lease_id(c);
        l->node = last;
        l->ttl_ms = clamp_ttl(c, lease_ttl_ms);
        l->expires_ms = now_ms + l->ttl_ms;
        if (who)
            l->owner = rm_peers_ref(&c->peers, who->id, who->len, who->authenticated);
        rm_radix_lock(&c->tree, last);
        lease_table_add(c, l);
        lheap_set(c, c->leases.n - 1, l);
        lheap_fix(c, c->leases.n - 1, c->leases.n);
        out->lease_id = l->id;
    }
    return RM_CACHE_OK;
}

size_t rm_cache_peek(rm_cache *c, const char *ns, size_t ns_len, const uint32_t *tokens, size_t n)
{
    rm_radix_node *root, *last;
    if (rm_radix_root(&c->tree, ns, ns_len, 0, &root))
        return 0;
    return rm_radix_match(&c->tree, root, tokens, n, 0, 0, &last);
}

static int is_ancestor_or_self(const rm_radix_node *anc, const rm_radix_node *n)
{
    for (; n; n = n->parent)
        if (n == anc)
            return 1;
    return 0;
}

/* Where a writer (Insert, WriteKV) stands once writer_start has checked it. */
typedef struct writer_at {
    rm_lease *lease;            /* the lease named, NULL: none */
    rm_radix_node *root, *last; /* the namespace's root; where the cached prefix ends */
    size_t have;                /* tokens of the sequence already cached */
} writer_at;

/* What Insert and WriteKV do first: the lease named (if any) is who's, the
 * namespace has a root (created if need be), and the cached prefix of
 * tokens[0..aligned) extends the lease's. The match splits the edge where
 * the prefix ends when a lease will move there, or with split (a write
 * locks that node); otherwise only where the sequence diverges. */
static rm_cache_result writer_start(rm_cache *c, const rm_cache_caller *who, const char *ns,
                                    size_t ns_len, const uint32_t *tokens, size_t aligned,
                                    uint64_t lease_id, int split, uint64_t now_ms, writer_at *at)
{
    at->lease = NULL;
    if (lease_id && !(at->lease = lease_for(c, who, lease_id)))
        return RM_CACHE_UNKNOWN_LEASE;
    rm_cache_result rc = ns_root(c, ns, ns_len, 1, &at->root);
    if (rc)
        return rc;
    if (at->lease && at->lease->node->ns != at->root->ns)
        return RM_CACHE_LEASE_MISMATCH;
    int flags = RM_MATCH_TOUCH | (split || at->lease ? RM_MATCH_SPLIT : RM_MATCH_SPLIT_DIVERGE);
    at->have = rm_radix_match(&c->tree, at->root, tokens, aligned, flags, now_ms, &at->last);
    if (at->lease && !is_ancestor_or_self(at->lease->node, at->last))
        return RM_CACHE_LEASE_MISMATCH;
    return RM_CACHE_OK;
}

rm_cache_result rm_cache_insert(rm_cache *c, const rm_cache_caller *who, const char *ns,
                                size_t ns_len, const uint32_t *tokens, size_t n, uint64_t lease_id,
                                uint64_t now_ms, rm_insert_result *out)
{
    memset(out, 0, sizeof *out);
    uint32_t pt = c->cfg.page_tokens;
    size_t aligned = n / pt * pt;
    if (c->pool.data)
        return RM_CACHE_STORES_KV; /* pages would hold stale bytes: use WriteKV */
    writer_at at;
    rm_cache_result rc =
        writer_start(c, who, ns, ns_len, tokens, aligned, lease_id, 0, now_ms, &at);
    if (rc)
        return rc;
    c->st.insert_requests_total++;
    out->cached_tokens = at.have;
    size_t need = (aligned - at.have) / pt;
    if (need > 0) {
        /* Keep the matched prefix out of eviction's reach while making room. */
        rm_radix_lock(&c->tree, at.last);
        uint32_t *pages = scratch(c, need);
        size_t room = seq_room(c, at.have / pt, need);
        uint32_t got = room ? alloc_with_evict(c, (uint32_t)room, pages) : 0;
        rm_radix_node *leaf = at.last;
        if (got > 0 &&
            !(leaf = rm_radix_attach(&c->tree, at.last, tokens + at.have, pages, got, now_ms)))
            abort(); /* attach after a split match cannot collide */
        rm_radix_unlock(&c->tree, at.last);
        /* Not a page to be had (all pinned, the caller's own lease
         * perhaps): a cache drops what it cannot hold, it does not fail. */
        out->inserted_tokens = (size_t)got * pt;
        out->dropped_tokens = (need - got) * pt;
        c->st.inserted_tokens_total += out->inserted_tokens;
        c->st.dropped_tokens_total += out->dropped_tokens;
        at.last = leaf;
    }
    if (at.lease) {
        rm_radix_lock(&c->tree, at.last);
        lease_move(c, at.lease, at.last, now_ms);
    }
    return RM_CACHE_OK;
}

rm_cache_result rm_cache_release(rm_cache *c, const rm_cache_caller *who, uint64_t lease_id)
{
    rm_lease *l = lease_for(c, who, lease_id);
    if (!l)
        return RM_CACHE_UNKNOWN_LEASE;
    lease_drop(c, l);
    return RM_CACHE_OK;
}

uint32_t rm_cache_tick(rm_cache *c, uint64_t now_ms)
{
    uint32_t expired = 0;
    while (c->leases.n > 0 && c->lease_heap[0]->expires_ms <= now_ms) {
        lease_drop(c, c->lease_heap[0]);
        expired++;
    }
    c->st.expired_leases_total += expired;
    if (c->cfg.ttl_ms && now_ms > c->cfg.ttl_ms)
        rm_radix_expire(&c->tree, now_ms - c->cfg.ttl_ms, free_to_pool, c);
    /* Between calls no empty root is held unlocked: WriteKV streams lock
     * theirs through the anchor. */
    rm_radix_reclaim(&c->tree);
    return expired;
}

uint64_t rm_cache_next_expiry(const rm_cache *c, uint64_t now_ms)
{
    if (c->leases.n == 0)
        return UINT64_MAX;
    uint64_t at = c->lease_heap[0]->expires_ms;
    return at > now_ms ? at - now_ms : 0;
}

void rm_cache_stats_get(const rm_cache *c, rm_cache_stats *out)
{
    *out = c->st;
    out->pool_pages = c->pool.npages;
    out->free_pages = c->pool.nfree;
    out->evictable_pages = c->tree.evictable_pages;
    out->protected_pages = c->tree.protected_pages + c->pending_pages;
    out->active_leases = c->leases.n;
    out->tree_nodes = c->tree.nodes;
    out->namespaces = c->tree.nns;
    out->metadata_bytes =
        rm_radix_metadata_bytes(&c->tree) + rm_pool_metadata_bytes(&c->pool) +
        c->leases.n * sizeof(rm_lease) + (c->leases.mask + 1) * 2 * sizeof(rm_lease *) +
        c->peers.tab.n * sizeof(rm_peer) + (c->peers.tab.mask + 1) * sizeof(rm_peer *);
}

rm_cache_result rm_cache_check(const rm_cache *c, char *err, size_t errlen)
{
    size_t nheld = c->leases.n;
    for (rm_kv_pin *p = c->pins; p; p = p->next)
        nheld++;
    for (rm_kv_write *w = c->writes; w; w = w->next)
        nheld++;
    const rm_radix_node **held = rm_xmalloc(sizeof *held * (nheld + 1));
    size_t k = 0;
    for (size_t i = 0; i <= c->leases.mask; i++)
        if (c->leases.slots[i])
            held[k++] = ((const rm_lease *)c->leases.slots[i])->node;
    for (rm_kv_pin *p = c->pins; p; p = p->next)
        held[k++] = p->node;
    for (rm_kv_write *w = c->writes; w; w = w->next)
        held[k++] = w->anchor;
    uint8_t *seen = rm_xcalloc(c->pool.npages, 1);
    rm_cache_result rc = RM_CACHE_INCONSISTENT;
    if (rm_radix_check(&c->tree, held, k, seen, c->pool.npages, err, errlen) != 0)
        goto out;
    uint64_t pending = 0;
    for (rm_kv_write *w = c->writes; w; w = w->next) {
        for (uint32_t i = 0; i < w->npages; i++) {
            if (w->pages[i] >= c->pool.npages || seen[w->pages[i]]++) {
                snprintf(err, errlen, "a write's page is also in the tree or elsewhere");
                goto out;
            }
        }
        pending += w->npages;
    }
    if (pending != c->pending_pages) {
        snprintf(err, errlen, "pending pages %" PRIu64 " != %" PRIu64, pending, c->pending_pages);
        goto out;
    }
    for (uint32_t p = 0; p < c->pool.npages; p++) {
        int used = c->pool.state[p] == RM_PAGE_USED;
        if (used != (seen[p] != 0)) {
            snprintf(err, errlen, "page %u is %s in the pool but %s", p, used ? "used" : "free",
                     seen[p] ? "in the tree" : "owned by no one");
            goto out;
        }
    }
    uint64_t sum = (uint64_t)c->pool.nfree + c->tree.evictable_pages + c->tree.protected_pages +
                   c->pending_pages;
    if (sum != c->pool.npages) {
        snprintf(err, errlen,
                 "free %u + evictable %" PRIu64 " + protected %" PRIu64 " + pending %" PRIu64
                 " != pool %u",
                 c->pool.nfree, c->tree.evictable_pages, c->tree.protected_pages, c->pending_pages,
                 c->pool.npages);
        goto out;
    }
    for (size_t i = 0; i < c->leases.n; i++) {
        const rm_lease *l = c->lease_heap[i];
        if (l->heap_idx != i || lease_find(c, l->id) != l || l->id == 0 ||
            (i > 0 && l->expires_ms < c->lease_heap[(i - 1) / 2]->expires_ms)) {
            snprintf(err, errlen, "lease heap or table out of sync at %zu", i);
            goto out;
        }
        if (l->owner && rm_peers_find(&c->peers, l->owner->id, l->owner->len,
                                      l->owner->authenticated) != l->owner) {
            snprintf(err, errlen, "a lease's owner is not in the peer table");
            goto out;
        }
    }
    /* Each peer entry counts exactly the leases it owns, and holds one. */
    size_t npeers = 0;
    for (size_t s = 0; s <= c->peers.tab.mask; s++) {
        const rm_peer *p = c->peers.tab.slots[s];
        if (!p)
            continue;
        npeers++;
        uint32_t owned = 0;
        for (size_t i = 0; i < c->leases.n; i++)
            owned += c->lease_heap[i]->owner == p;
        if (owned != p->leases || owned == 0) {
            snprintf(err, errlen, "peer %.40s counts %u leases, owns %u", p->id, p->leases, owned);
            goto out;
        }
    }
    if (npeers != c->peers.tab.n) {
        snprintf(err, errlen, "peer table holds %zu entries, counts %zu", npeers, c->peers.tab.n);
        goto out;
    }
    for (rm_kv_pin *p = c->pins; p; p = p->next) {
        if (p->lease && lease_find(c, p->lease->id) != p->lease) {
            snprintf(err, errlen, "a pin names a lease that is gone");
            goto out;
        }
    }
    rc = RM_CACHE_OK;
out:
    free(seen);
    free(held);
    return rc;
}

/* ---- KV bytes -------------------------------------------------------- */

rm_cache_result rm_cache_pin_lease(rm_cache *c, const rm_cache_caller *who, uint64_t lease_id,
                                   rm_kv_pin *pin)
{
    memset(pin, 0, sizeof *pin);
    if (!c->pool.data)
        return RM_CACHE_METADATA_ONLY;
    rm_lease *l = lease_for(c, who, lease_id);
    if (!l)
        return RM_CACHE_UNKNOWN_LEASE;
    pin->lease = l;
    pin->expires_ms = l->expires_ms;
    pin->node = l->node;
    pin->npages = rm_radix_path_pages(&c->tree, l->node, NULL, 0);
    pin->pages = rm_xmalloc(sizeof(uint32_t) * (pin->npages + 1));
    rm_radix_path_pages(&c->tree, l->node, pin->pages, pin->npages);
    rm_radix_lock(&c->tree, pin->node);
    RM_LIST_ADD(c->pins, pin, prev, next);
    return RM_CACHE_OK;
}

void rm_cache_unpin(rm_cache *c, rm_kv_pin *pin)
{
    if (!pin->node)
        return;
    rm_radix_unlock(&c->tree, pin->node);
    RM_LIST_DEL(c->pins, pin, prev, next);
    free(pin->pages);
    memset(pin, 0, sizeof *pin);
}

uint64_t rm_cache_pin_expires(const rm_cache *c, const rm_kv_pin *pin)
{
    (void)c;
    return pin->lease ? pin->lease->expires_ms : pin->expires_ms;
}

const uint8_t *rm_cache_pin_kv(const rm_cache *c, const rm_kv_pin *pin, size_t token)
{
    uint32_t pt = c->cfg.page_tokens;
    return rm_pool_page_data(&c->pool, pin->pages[token / pt]) +
           (token % pt) * c->cfg.kv_bytes_per_token;
}

rm_cache_result rm_cache_write_begin(rm_cache *c, const rm_cache_caller *who, const char *ns,
                                     size_t ns_len, const uint32_t *tokens, size_t n,
                                     size_t kv_start, uint64_t lease_id, uint64_t now_ms,
                                     rm_kv_write *w)
{
    memset(w, 0, sizeof *w);
    uint32_t pt = c->cfg.page_tokens;
    size_t aligned = n / pt * pt;
    if (!c->pool.data)
        return RM_CACHE_METADATA_ONLY;
    if (kv_start % pt || kv_start > aligned)
        return RM_CACHE_BAD_KV_START;
    writer_at at;
    rm_cache_result rc =
        writer_start(c, who, ns, ns_len, tokens, aligned, lease_id, 1, now_ms, &at);
    if (rc)
        return rc;
    if (at.have < kv_start)
        return RM_CACHE_PREFIX_SHORT;
    rm_radix_lock(&c->tree, at.last);
    size_t need = (aligned - at.have) / pt;
    uint32_t *pages = rm_xmalloc(sizeof(uint32_t) * (need + 1));
    /* Fewer pages than needed, none at all included, is a write of what
     * fits: the rest of the bytes are read and dropped. */
    size_t room = seq_room(c, at.have / pt, need);
    uint32_t got = room ? alloc_with_evict(c, (uint32_t)room, pages) : 0;
    w->root = at.root;
    w->anchor = at.last;
    w->ntokens = aligned;
    w->tokens = rm_xmalloc(sizeof(uint32_t) * (aligned + 1));
    if (aligned) /* tokens may be NULL when there are none: memcpy from NULL is UB */
        memcpy(w->tokens, tokens, sizeof(uint32_t) * aligned);
    w->have_tokens = at.have;
    w->kv_start = kv_start;
    w->pages = pages;
    w->npages = got;
    w->wanted_pages = (uint32_t)need;
    w->lease_id = lease_id;
    c->pending_pages += got;
    RM_LIST_ADD(c->writes, w, prev, next);
    return RM_CACHE_OK;
}

uint8_t *rm_cache_write_dest(rm_cache *c, const rm_kv_write *w, size_t token)
{
    uint32_t pt = c->cfg.page_tokens;
    if (token < w->have_tokens || token >= w->ntokens)
        return NULL;
    size_t page = (token - w->have_tokens) / pt;
    if (page >= w->npages)
        return NULL;
    return rm_pool_page_data(&c->pool, w->pages[page]) + (token % pt) * c->cfg.kv_bytes_per_token;
}

static void write_unlink(rm_cache *c, rm_kv_write *w)
{
    RM_LIST_DEL(c->writes, w, prev, next);
    c->pending_pages -= w->npages;
    free(w->tokens);
    free(w->pages);
    w->tokens = NULL;
    w->pages = NULL;
    w->npages = 0;
}

rm_cache_result rm_cache_write_commit(rm_cache *c, rm_kv_write *w, uint64_t now_ms,
                                      rm_insert_result *out)
{
    uint32_t pt = c->cfg.page_tokens;
    memset(out, 0, sizeof *out);
    out->cached_tokens = w->have_tokens;
    /* Others may have cached more of this sequence while bytes streamed in;
     * the anchor lock guarantees at least have_tokens are still there. */
    uint32_t reserved = w->npages;
    size_t end = w->have_tokens + (size_t)reserved * pt;
    rm_radix_node *last;
    size_t now_have = rm_radix_match(&c->tree, w->root, w->tokens, end,
                                     RM_MATCH_TOUCH | RM_MATCH_SPLIT_DIVERGE, now_ms, &last);
    uint32_t dup = (uint32_t)((now_have - w->have_tokens) / pt);
    if (dup > 0 && rm_pool_free(&c->pool, w->pages, dup) != 0)
        abort();
    uint32_t fresh = reserved - dup;
    rm_radix_node *leaf = last;
    if (fresh > 0) {
        leaf = rm_radix_attach(&c->tree, last, w->tokens + now_have, w->pages + dup, fresh, now_ms);
        if (!leaf)
            abort();
    }
    /* The tree owns the fresh pages now and the duplicates are free. */
    c->pending_pages -= reserved;
    w->npages = 0;
    out->inserted_tokens = (size_t)fresh * pt;
    out->dropped_tokens = (size_t)(w->wanted_pages - reserved) * pt;
    c->st.insert_requests_total++;
    c->st.inserted_tokens_total += out->inserted_tokens;
    c->st.dropped_tokens_total += out->dropped_tokens;
    rm_cache_result rc = RM_CACHE_OK;
    if (w->lease_id) {
        rm_lease *l = lease_find(c, w->lease_id);
        if (l && l->node->ns == w->root->ns && is_ancestor_or_self(l->node, leaf)) {
            rm_radix_lock(&c->tree, leaf);
            lease_move(c, l, leaf, now_ms);
        } else {
            rc = RM_CACHE_UNKNOWN_LEASE;
        }
    }
    rm_radix_unlock(&c->tree, w->anchor);
    write_unlink(c, w);
    return rc;
}

void rm_cache_write_abort(rm_cache *c, rm_kv_write *w)
{
    if (!w->anchor)
        return;
    if (w->npages && rm_pool_free(&c->pool, w->pages, w->npages) != 0)
        abort();
    rm_radix_unlock(&c->tree, w->anchor);
    write_unlink(c, w);
    w->anchor = NULL;
}
