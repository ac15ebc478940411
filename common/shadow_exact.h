/* shadow_exact.h -- the exact figures shadow.h estimates, offline: what
 * caches of given capacities, and an unbounded cache, hit on a request
 * stream. For tests of the estimates and for `radixmesh replay`'s
 * end-of-run budget (offline-exact where it can).
 *
 * Bounded caches are the node's own cache code (cache.h: the radix tree,
 * leaf-first eviction, the same policy), metadata-only, one per capacity,
 * driven through its public Match/Insert with no leases, so they hit
 * exactly what a node with that pool would. The unbounded cache is the set
 * of every page seen: a page (page_tokens tokens at a page-aligned offset,
 * with everything before it and its namespace) hits iff an earlier request
 * carried it. Its pages are identified by prefix_key.h's block chain at
 * page granularity (64-bit: equal hashes are equal prefixes up to
 * collisions), a different hash from shadow.c's, so the two check each
 * other. Its memory grows with the distinct pages of the trace (8 bytes
 * each, table at most half full): an offline tool, not for daemons.
 *
 * For `radixmesh replay`'s end-of-run budget (phase B): one
 * rm_shadow_exact per node, with capacities factor x that node's pool, fed
 * the requests the cluster sent there (MatchReply.node_id), gives the
 * exact memory curve under the routing as it was (sum the hit tokens over
 * nodes); one with the summed pools and the unbounded cache, fed every
 * request, gives the exact ideal and infinite. Cost: each cache is a node
 * of that size in memory (about 5 B of metadata per cached token).
 *
 * Windows: every figure is cumulative since init, as in shadow.h.
 * Not thread-safe. */
#ifndef RM_SHADOW_EXACT_H
#define RM_SHADOW_EXACT_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"

typedef struct rm_shadow_exact {
    uint32_t page_tokens;
    size_t ncaches;
    rm_cache *caches;
    uint64_t *capacity;   /* pages, per cache */
    uint64_t *hit_tokens; /* per cache */
    int infinite;
    uint64_t *keys; /* the unbounded cache's pages; 0: empty */
    size_t mask, len;
    uint64_t inf_hit_tokens;
    uint64_t requests, query_tokens;
    uint64_t now; /* the caches' clock: one tick per call */
} rm_shadow_exact;

/* Caches of capacity[0..n) pages (each > 0) with the node's eviction
 * policy, and with infinite the unbounded one. Returns 0, or -1 when
 * page_tokens is 0, a capacity is 0 or a cache cannot be made. */
int rm_shadow_exact_init(rm_shadow_exact *e, uint32_t page_tokens, rm_evict_policy policy,
                         const uint64_t *capacity, size_t n, int infinite);
void rm_shadow_exact_destroy(rm_shadow_exact *e);

/* A Match of tokens[0..n) in namespace ns followed by an Insert of them, in
 * every cache (rm_shadow_match's counterpart). */
void rm_shadow_exact_match(rm_shadow_exact *e, const char *ns, size_t ns_len,
                           const uint32_t *tokens, size_t n);

/* An Insert alone (rm_shadow_insert's counterpart). */
void rm_shadow_exact_insert(rm_shadow_exact *e, const char *ns, size_t ns_len,
                            const uint32_t *tokens, size_t n);

/* Token hit ratio of cache i / of the unbounded cache since init; NaN
 * before any query token. */
double rm_shadow_exact_ratio(const rm_shadow_exact *e, size_t i);
double rm_shadow_exact_infinite_ratio(const rm_shadow_exact *e);

/* Distinct pages seen (the unbounded cache's size; 0 without it). */
size_t rm_shadow_exact_pages(const rm_shadow_exact *e);

#endif
