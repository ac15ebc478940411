/* shadow.h -- what other cache sizes would hit on the same traffic: sampled
 * miniature caches (SHARDS / "mini-sim", Waldspurger et al., FAST'15 and
 * ATC'17) and a sampled unbounded cache, fed the requests one owner sees.
 *
 * Who uses it (issue 16):
 *   node    the hit rate its own traffic would get with 0.25x, 0.5x, 2x and
 *           4x its pool, and 1x (a check of the estimate against the
 *           node's real rate): rm_shadow_config_node;
 *   router  "ideal", one cache with the cluster's total memory (the sum of
 *           the nodes' pools) over the requests it routes, and "infinite",
 *           an unbounded cache where every repeated page hits:
 *           rm_shadow_config_router. With several router replicas each
 *           reports the figures of its own traffic.
 * The exact figures (the node's cache code itself at each size, and the
 * set of every page seen) are in shadow_exact.h, for tests and offline
 * tools.
 *
 * API, called by the owner thread:
 *   rm_shadow_config_node / _router, then rm_shadow_init   at start
 *   rm_shadow_match(s, ns, tokens, n)   per Match (node) / routed request
 *   rm_shadow_insert(...)               optional: an Insert of tokens the
 *                                       Match did not carry (a reply)
 *   rm_shadow_set_pool(s, pages)        the pools changed (router: nodes
 *                                       joined or left)
 *   s->counts (rm_shadow_counts)        cumulative counters, to export
 *   rm_shadow_hit_ratio(now, then, i)   factor i's estimate over a window
 *   rm_shadow_infinite_hit_ratio(...)   the unbounded cache's
 *   rm_shadow_hit_tokens(now, then, i)  estimated hit tokens, to sum over
 *                                       nodes (the cluster's memory curve)
 *   rm_shadow_memory_bytes / _rate      what it costs
 *
 * Pages and sampling. A page is what the node caches: page_tokens tokens
 * at a page-aligned offset, identified by its namespace and every token up
 * to its end. Two requests share a page iff they share the namespace and
 * the prefix through that page, so namespaces never share pages. The
 * identity is a chain: from the namespace's hash (rm_prefix_ns_hash, as
 * prefix_key.h does), every RM_SHADOW_GROUP_TOKENS tokens (whole pages; one
 * page when pages are larger) a one-multiply step folds in the NH sum of
 * the group's tokens (nh.h: UMAC's, vectorised); within a group, a page's
 * identity is the chain before the group plus the NH sum of the group's
 * tokens through the page's end. A page is sampled iff 32 bits of a hash
 * of its identity are below a threshold T, i.e. at rate R = T / 2^32: it
 * is sampled in every request that carries it or in none, and pages that
 * differ anywhere in their prefix are sampled independently (spatial
 * sampling, as SHARDS samples keys). Every token is read once (the NH sum);
 * only sampled pages cost more.
 *
 * Collisions: two different pages get the same key with probability about
 * 2^-32 when they share everything before their group (siblings) and about
 * 2^-64 otherwise; a collision is one false hit in an estimate. The keys
 * are fixed (results are deterministic), so a client that wanted to could
 * craft colliding pages and skew its node's estimate -- nothing more.
 *
 * The miniature caches. For each factor f, a cache of f x pool x R
 * entries (rounded, at least 1) runs over the sampled pages only, with the
 * node's semantics (radix.h, cache.h):
 *   - a page is a hit iff it is cached (the node's tree is prefix-closed,
 *     and the order below keeps the sampled caches so);
 *   - an access (rm_shadow_match) is a Match followed by an Insert of the
 *     same tokens: each page is looked up, then cached;
 *   - eviction is leaf-first. A parent is touched whenever its child is,
 *     so within one access the deeper page counts as touched first: entries
 *     are ordered by (priority, access number, -depth). Touching a chain
 *     root-first and evicting the least recent would evict roots first and
 *     keep unreachable pages (test_shadow.c has a trace where they differ);
 *   - the node evicts a leaf *edge* whole: the pages one Insert attached,
 *     less what later requests split off. So the victim goes together with
 *     the pages inserted by the same access and last touched by the same
 *     access, which come next in that order (an entry keeps 16 bits of the
 *     access that inserted it). Evicting single pages instead overestimates
 *     small caches by up to 0.07 on these workloads;
 *   - while an access runs, the pages it has looked up are out of
 *     eviction's reach (the node locks the matched prefix, and the pages it
 *     inserts are not in its tree until attached); a page that finds
 *     nothing else to evict is dropped with everything deeper in that
 *     request, as the node caches the prefix that fits;
 *   - the policy is a priority function (rm_shadow_policy): the lowest
 *     priority goes first, ties to the least recently touched. NULL is
 *     recency alone (the node's LRU), kept in a list: O(1) per sampled page
 *     and cache. Otherwise a 4-ary heap, O(log n): rm_shadow_policy_of
 *     (RM_EVICT_LFU) is the node's LFU (hits, then recency), and the
 *     inflation argument (the last victim's priority) allows LFU-DA or
 *     GDSF-style aging.
 *
 * The estimate. The node counts query tokens and hits in whole pages, so
 * with the cumulative counters of rm_shadow_counts
 *
 *   hit ratio = (sampled hit pages / sampled pages)
 *               x (page-aligned tokens / query tokens)
 *
 * where the last two are counted exactly: partial tails count as the node
 * counts them (never a hit). Sampled counts are weighted 1/R (R at the time
 * of the access), so they stay comparable when R falls. (SHARDS-adj, which
 * counts sampled misses against the exact page count, did worse on the
 * Mooncake trace here: errors of -0.02 against under 0.01.)
 *
 * The rate, memory and CPU. Per token the cost is the NH sum (~0.25
 * ns/token with AVX2); per sampled page, a lookup and a list or heap
 * update in each cache (~40 ns per cache with LRU). R is therefore
 *
 *   R = min(1, what memory allows,
 *           max(max_rate, min_sample / pool_pages))
 *
 * by default max_rate = 1/32 (CPU: with it, the node's estimator costs
 * ~0.1 of what the node spends decoding, matching and inserting the same
 * requests; BENCHMARKS.md) and min_sample = 1,024 entries at factor 1, so
 * pools under 32,768 pages are sampled faster (up to R = 1 below 1,024
 * pages) to keep the estimate accurate, and cost more CPU per token.
 * Memory: the budget (budget_bytes, default RM_SHADOW_DEFAULT_BUDGET =
 * 1 MiB for all factors together) is counted exactly
 * (rm_shadow_memory_bytes): per entry 24 bytes with LRU (40 with a
 * priority policy: a 16-byte entry and a 24-byte heap slot) plus a
 * power-of-two table of 4-byte slots at most half full (8-16 bytes): at
 * most RM_SHADOW_LRU_ENTRY_BYTES / RM_SHADOW_ENTRY_BYTES. With 1 MiB, LRU
 * and the node's five factors that is R ~ 3,400 / pool pages at least
 * (pools past ~100,000 pages go below 1/32). The infinite shadow
 * is a table of 8-byte keys at most half full (16 bytes per entry), sized
 * by infinite_budget_bytes; it starts at the caches' rate, and when it
 * would fill beyond its budget its rate halves and the entries above the
 * new threshold go -- what a run at the lower rate would hold -- so its
 * memory never grows and its estimate stays unbiased, resting on fewer
 * pages. Nothing grows with the request: an access is streaming.
 *
 * Windows. Every counter is cumulative since rm_shadow_init (Prometheus
 * takes rates of them, and they compare to the cluster's own cumulative
 * hit rate); rm_shadow_hit_ratio and friends take two snapshots and give
 * the figure over the window between them (NULL: since start).
 *
 * Pure: no clock, no I/O, no randomness, no global state. Not thread-safe:
 * one owner thread calls it per Match (node) or per routed request
 * (router). */
#ifndef RM_SHADOW_H
#define RM_SHADOW_H

#include <stddef.h>
#include <stdint.h>

#include "nh.h"
#include "radix.h"

#define RM_SHADOW_MAX_FACTORS    8
#define RM_SHADOW_GROUP_TOKENS   64
#define RM_SHADOW_DEFAULT_BUDGET (1u << 20)
/* The rate: at most 1/32 (CPU), unless that leaves the factor-1 cache
 * fewer than 1,024 entries (accuracy); memory caps both. */
#define RM_SHADOW_DEFAULT_MAX_RATE   (1.0 / 32)
#define RM_SHADOW_DEFAULT_MIN_SAMPLE 1024
/* Bytes of state per entry, at most (see the top of this file): recency
 * (LRU) and priority engines, the infinite shadow. */
#define RM_SHADOW_LRU_ENTRY_BYTES 40
#define RM_SHADOW_ENTRY_BYTES     56
#define RM_SHADOW_INF_ENTRY_BYTES 16

typedef enum {
    RM_SHADOW_OK = 0,
    RM_SHADOW_BAD_CONFIG,   /* page_tokens 0, a factor <= 0 or not finite, too many factors */
    RM_SHADOW_NO_POOL,      /* factors but pool_pages 0 */
    RM_SHADOW_BUDGET_SMALL, /* the budget cannot hold one entry per cache / a minimal table */
} rm_shadow_result;

const char *rm_shadow_strerror(rm_shadow_result r);

/* What a priority function sees of an entry being touched. */
typedef struct rm_shadow_touch {
    uint32_t hits;    /* accesses that found it cached, this one included */
    uint32_t depth;   /* page index from the namespace root (0: first page) */
    double inflation; /* priority of the last entry this cache evicted (0 before any) */
} rm_shadow_touch;

/* Lower priorities are evicted first; ties go to the least recently
 * touched (deeper first within one access). arg is the policy's. */
typedef double (*rm_shadow_priority_fn)(const rm_shadow_touch *t, const void *arg);

/* priority NULL: recency only (the node's LRU), kept in a list, O(1) per
 * sampled page; otherwise a 4-ary heap by priority, O(log n). */
typedef struct rm_shadow_policy {
    rm_shadow_priority_fn priority;
    const void *arg;
} rm_shadow_policy;

/* The node's orders (radix.h): LRU (recency only) and LFU (hits, then
 * recency; an inserted page starts at 0 hits, as a new leaf does). */
rm_shadow_policy rm_shadow_policy_of(rm_evict_policy p);

typedef struct rm_shadow_config {
    uint32_t page_tokens;
    uint64_t pool_pages; /* the capacity factor 1 stands for, in pages */
    double factors[RM_SHADOW_MAX_FACTORS];
    uint32_t nfactors; /* 0: no bounded caches */
    int infinite;      /* keep the unbounded shadow too */
    rm_shadow_policy policy;
    size_t budget_bytes;          /* bounded caches together; 0: RM_SHADOW_DEFAULT_BUDGET */
    size_t infinite_budget_bytes; /* 0: RM_SHADOW_DEFAULT_BUDGET */
    double max_rate;     /* cap on R (CPU); 0: RM_SHADOW_DEFAULT_MAX_RATE; 1: memory only */
    uint32_t min_sample; /* ...raised so factor 1 keeps this many entries; 0: the default */
} rm_shadow_config;

/* The node's memory curve: factors 0.25, 0.5, 1, 2, 4 (in that order), no
 * infinite shadow, 1 MiB. */
void rm_shadow_config_node(rm_shadow_config *c, uint32_t page_tokens, uint64_t pool_pages,
                           rm_evict_policy policy);

/* The router's ideal (factor 1 of the cluster's total pool pages) and
 * infinite shadows, 512 KiB each. */
void rm_shadow_config_router(rm_shadow_config *c, uint32_t page_tokens, uint64_t total_pool_pages,
                             rm_evict_policy policy);

/* Cumulative since init. Sampled counts are weighted 1/R: pages estimates
 * the page-aligned pages accessed, hits[i] those that hit in cache i. */
typedef struct rm_shadow_counts {
    uint64_t requests;       /* rm_shadow_match calls */
    uint64_t query_tokens;   /* exact, as the node's query_tokens_total */
    uint64_t aligned_tokens; /* exact: the page-aligned part of each request */
    uint64_t samples;        /* sampled page accesses of the bounded caches (the support) */
    double pages, hits[RM_SHADOW_MAX_FACTORS];
    uint64_t inf_samples; /* the same for the infinite shadow, at its own rate */
    double inf_pages, inf_hits;
} rm_shadow_counts;

/* ---- internals (exposed for sizing; use the functions) ---------------- */

/* Priority engine: a 4-ary min-heap of slots, each naming its entry. */
typedef struct rm_shadow_slot {
    double pri;
    uint64_t seq;  /* access number: later is more recent */
    uint32_t rank; /* UINT32_MAX - depth: within an access, deeper is older */
    uint32_t entry;
} rm_shadow_slot;

typedef struct rm_shadow_entry {
    uint64_t key;  /* high 32 bits: the group's sampling value */
    uint16_t hits; /* saturating */
    uint16_t born; /* low bits of the access that inserted it: its edge */
    uint32_t pos;  /* its slot in heap[] */
} rm_shadow_entry;

/* Recency engine: a list from least to most recently touched. */
typedef struct rm_shadow_lnode {
    uint64_t key;
    uint32_t prev, next;
    uint32_t seq;       /* low bits of the last access that touched it */
    uint16_t born;      /* low bits of the access that inserted it: its edge */
    uint16_t in_access; /* on the current access's list */
} rm_shadow_lnode;

typedef struct rm_shadow_cache {
    double factor;
    uint32_t cap, len; /* entries at most / now */
    int dropping;      /* this access found nothing to evict: the rest of it is not cached */
    uint32_t *table;   /* entry index + 1; 0: empty */
    uint32_t mask;
    /* priority engine: heap[0..hlen) evictable, heap[hlen..len) this access's */
    uint32_t hlen;
    double inflation;
    rm_shadow_entry *entries;
    rm_shadow_slot *heap;
    /* recency engine: the evictable list and this access's own */
    rm_shadow_lnode *nodes;
    uint32_t head, tail, acc_head, acc_tail, free_head, used;
} rm_shadow_cache;

typedef struct rm_shadow {
    rm_shadow_config cfg;
    uint32_t group_pages;
    uint32_t *nh_keys;  /* group_pages * (page_tokens rounded up to even) */
    rm_nh_impl nh;      /* picked at init */
    uint64_t threshold; /* bounded caches sample u < threshold (<= 2^32) */
    uint64_t pool_pages;
    rm_shadow_cache caches[RM_SHADOW_MAX_FACTORS];
    uint64_t seq;
    /* the infinite shadow */
    uint64_t inf_threshold;
    uint64_t *inf_keys; /* 0: empty */
    size_t inf_mask, inf_len, inf_max;
    rm_shadow_counts counts;
} rm_shadow;

rm_shadow_result rm_shadow_init(rm_shadow *s, const rm_shadow_config *cfg);
void rm_shadow_destroy(rm_shadow *s);

/* One access: a Match of tokens[0..n) in namespace ns followed by an Insert
 * of the same tokens (the node's and the router's normal cycle). Counts the
 * request and its hits. */
void rm_shadow_match(rm_shadow *s, const char *ns, size_t ns_len, const uint32_t *tokens, size_t n);

/* An Insert without a Match (e.g. of the prompt and the generated reply
 * after the prompt's Match): caches and touches the pages, counts nothing,
 * adds no LFU hits. */
void rm_shadow_insert(rm_shadow *s, const char *ns, size_t ns_len, const uint32_t *tokens,
                      size_t n);

/* The capacity factor 1 stands for changed (a router's nodes joined or
 * left). R never rises (pages not sampled so far would start cold); it
 * falls, dropping the entries above the new threshold, when the new
 * capacities would not fit the budget. While it runs, memory briefly holds
 * the old and the new tables. Returns RM_SHADOW_OK or RM_SHADOW_NO_POOL
 * (pages 0 with bounded caches: nothing changes). */
rm_shadow_result rm_shadow_set_pool(rm_shadow *s, uint64_t pool_pages);

/* Sampling rates now (1 when unsampled; 0 without that shadow). */
double rm_shadow_rate(const rm_shadow *s);
double rm_shadow_infinite_rate(const rm_shadow *s);

/* Capacity of bounded cache i in sampled entries. */
uint32_t rm_shadow_capacity(const rm_shadow *s, uint32_t i);

/* Heap bytes of the state (caches, tables, keys): what the budget bounds. */
size_t rm_shadow_memory_bytes(const rm_shadow *s);

/* Estimated hit ratio of bounded cache i (the i-th factor) over the window
 * then..now (then NULL: since init): (sampled hits / sampled pages) x
 * (aligned tokens / query tokens). NaN when the window has no sampled page
 * while it has page-aligned tokens (no data yet), or no query tokens. */
double rm_shadow_hit_ratio(const rm_shadow_counts *now, const rm_shadow_counts *then, uint32_t i);

/* The same for the infinite shadow. */
double rm_shadow_infinite_hit_ratio(const rm_shadow_counts *now, const rm_shadow_counts *then);

/* Estimated hit tokens of cache i over the window: hit ratio x query
 * tokens (0 with no data). Summed over nodes and divided by their summed
 * query tokens it gives the cluster's figure, each node's estimate
 * weighted by its own traffic. */
double rm_shadow_hit_tokens(const rm_shadow_counts *now, const rm_shadow_counts *then, uint32_t i);

#endif
