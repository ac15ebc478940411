/* shadow.h -- what other cache sizes would hit on the same traffic: sampled
 * miniature caches (SHARDS / "mini-sim", Waldspurger et al., FAST'15 and
 * ATC'17) and a sampled unbounded cache, fed the requests one owner sees.
 *
 * Who uses it (issue 16):
 *   node    the hit rate its own traffic would get with 0.25x, 0.5x, 2x and
 *           4x its pool (and 1x: a check of the estimate against the node's
 *           real rate) -- rm_shadow_config_node;
 *   router  "ideal": one cache with the cluster's total memory (the sum of
 *           the nodes' pools) over the requests it routes, and "infinite":
 *           an unbounded cache, every repeated page a hit --
 *           rm_shadow_config_router. With several router replicas each
 *           reports the figures of its own traffic.
 * Offline exact counterparts (the node's cache code itself, and a set of
 * every page seen) are in shadow_exact.h.
 *
 * Pages and sampling. A page is what the node caches: page_tokens tokens at
 * a page-aligned offset, identified by its namespace and every token up to
 * its end (two requests share a page iff they share the namespace and the
 * prefix through that page; namespaces never share pages). Requests are cut
 * into groups of RM_SHADOW_GROUP_TOKENS tokens (whole pages; one page when
 * pages are larger), and a 64-bit chain hash is carried from group to group,
 * starting from the namespace's hash (rm_prefix_ns_hash, as prefix_key.h
 * does). A group is sampled iff the top 32 bits of the chain value *before*
 * it are below a threshold T, i.e. at rate R = T / 2^32: the decision for a
 * page depends only on what precedes its group, so a page is sampled in
 * every request that carries it or in none (spatial sampling, as SHARDS
 * samples keys). Each page of a sampled group is one entry, keyed by those
 * 32 bits and 32 bits of a hash of the chain and the group's tokens up to
 * that page's end. Sampling whole 64-token groups rather than single pages
 * lets one chain step serve four 16-token pages; the per-token work is an
 * NH sum (nh.h: UMAC's 32x32->64-bit products of key-offset token pairs,
 * vectorised).
 *
 * Collisions: two different pages get the same key with probability about
 * 2^-32 when they share everything before their group (siblings) and about
 * 2^-64 otherwise; a collision makes one false hit in an estimate. The keys
 * are fixed (the results are deterministic), so a client that wanted to
 * could craft colliding pages and skew its node's estimate, nothing more.
 *
 * The miniature caches. For each factor f a cache of f x pool x R entries
 * (rounded, at least 1) runs over the sampled pages only, with the node's
 * semantics:
 *   - a page is a hit iff it is cached (the node's tree is prefix-closed,
 *     and the eviction order below keeps the sampled caches so);
 *   - an access (rm_shadow_match) is a Match followed by an Insert of the
 *     same tokens: every page of the request is looked up, then cached;
 *   - eviction is leaf-first. A parent is touched whenever its child is, so
 *     within one access the deeper page counts as touched first: entries
 *     are ordered by (priority, access number, -depth). Touching a chain
 *     root-first and evicting the least recent would evict roots first
 *     and keep unreachable pages (tests/unit/test_shadow.c shows a trace
 *     where the two differ);
 *   - while an access runs, the pages it has looked up are out of
 *     eviction's reach (the node locks the matched prefix, and the pages it
 *     inserts are not in its tree until attached); a page that finds
 *     nothing else to evict is dropped with everything deeper in that
 *     request, as the node caches the prefix that fits;
 *   - the policy is a priority function (rm_shadow_policy): the entry with
 *     the lowest priority goes first, ties to the least recently touched.
 *     RM_EVICT_LRU and RM_EVICT_LFU give the node's orders; LFU-DA-style
 *     aging is possible through the inflation argument.
 *   Cost: a 4-ary heap and an open-addressing table per cache, O(log n) per
 *   sampled page and cache.
 * The node evicts whole tree edges (all the pages a leaf holds at once),
 * the miniature caches single pages: with the same capacity the node holds
 * slightly fewer pages on average. tests/unit/test_shadow.c measures the
 * resulting difference against the node's cache code.
 *
 * The estimate. A page's token share of the request is exact: the node
 * counts query_tokens and hits in whole pages, so with the cumulative
 * counters of rm_shadow_counts
 *
 *   hit ratio = (sampled hit pages / sampled pages)
 *               x (page-aligned tokens / query tokens)
 *
 * where the last two are counted exactly and partial tails count as the
 * node counts them (never a hit). Sampled counts are weighted 1/R (R at
 * the time of the access), so they stay comparable when R falls.
 *
 * Memory and the rate. Bounded caches: 48 bytes per entry at most (16 for
 * the entry, 24 for its heap slot, a power-of-two table of 4-byte slots
 * filled at most halfway: 8-16). R is the largest rate (at most 1, at most
 * cfg.max_rate) whose caches fit in budget_bytes counted exactly
 * (rm_shadow_memory_bytes); the default budget is RM_SHADOW_DEFAULT_BUDGET
 * (1 MiB) for all factors together, so pools up to ~2,800 pages are
 * simulated unsampled (R = 1) and larger ones at ~2,800 / pool pages. The
 * infinite shadow: a table of 8-byte keys filled at most halfway, 16 bytes
 * per entry, its size fixed by infinite_budget_bytes; when it would fill
 * beyond that, its rate halves and the entries above the new threshold
 * go (what a run at the lower rate would hold), so memory stays within the
 * budget and the estimate stays unbiased, with fewer samples behind it.
 * Nothing grows with the request: the work per request is streaming.
 *
 * Windows. Every counter is cumulative since rm_shadow_init (Prometheus
 * takes rates of them, and they compare to the cluster's own cumulative
 * hit rate); rm_shadow_hit_ratio and friends take two snapshots and give
 * the figure over the window between them (NULL: since start).
 *
 * Pure: no clock, no I/O, no randomness. Not thread-safe: one owner thread
 * calls it per Match (node) or per routed request (router). */
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
