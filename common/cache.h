/* cache.h -- the prefix cache: radix tree + page pool + leases + counters.
 *
 * This is the whole behaviour of a cache node, independent of gRPC, so the
 * daemon, the benchmarks, the offline analyzer and the differential fuzz
 * test all drive the same code. Time is passed in (now_ms) rather than read,
 * which keeps tests deterministic.
 *
 * Page accounting (checked by rm_cache_check after every test operation):
 *
 *   pool_pages == free + evictable + protected
 *     free       pages on the pool's free list
 *     evictable  tree pages no one references (LRU/LFU/TTL may take them)
 *     protected  tree pages under a lease / KV stream / insert in progress,
 *                plus pages reserved by unfinished WriteKV streams
 *
 * References on tree nodes (rm_radix_lock) are held by: leases, ReadKV pins
 * and WriteKV streams. Nothing else keeps a node locked between calls.
 *
 * Namespaces: a namespace whose root has no cached pages and no references
 * is reclaimed (at the next tick, or at once when a new namespace needs its
 * slot), so --max-namespaces bounds live namespaces, not names ever seen.
 *
 * Callers: the functions that take or name a lease get the caller's
 * identity (rm_cache_caller; NULL: unknown, as for tools and tests). A
 * known caller is held to a share of the leases, and a lease taken by an
 * authenticated identity exists only for that identity: any other caller
 * naming it gets RM_CACHE_UNKNOWN_LEASE, exactly as for an id never issued.
 * Lease ids are SipHash-2-4 of a counter under a random per-process key, so
 * one id tells nothing about another.
 *
 * Errors are rm_cache_result values, one per outcome a caller must tell
 * apart (memcached-style); each function lists the ones it returns.
 * Not thread-safe: one owner thread (node/README.md). */
#ifndef RM_CACHE_H
#define RM_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "peers.h"
#include "pool.h"
#include "ptrtab.h"
#include "radix.h"

/* What a cache operation came to. Each failure names one outcome, so a
 * caller answers it (the node maps each to a gRPC status in one table)
 * without knowing how the cache found it. */
typedef enum rm_cache_result {
    RM_CACHE_OK = 0,
    RM_CACHE_BAD_CONFIG,       /* a config field is zero or out of range */
    RM_CACHE_NO_MEMORY,        /* the KV pool could not be mapped */
    RM_CACHE_NO_RANDOMNESS,    /* the kernel gave no randomness for the lease-id key */
    RM_CACHE_UNKNOWN_LEASE,    /* never issued, released, expired, or another identity's */
    RM_CACHE_LEASE_MISMATCH,   /* the lease's prefix is not a prefix of these tokens in this ns */
    RM_CACHE_PREFIX_SHORT,     /* the cache holds fewer tokens of the prefix than kv_start */
    RM_CACHE_BAD_KV_START,     /* kv_start is not page-aligned, or past the sequence */
    RM_CACHE_LEASE_LIMIT,      /* max_leases leases are live */
    RM_CACHE_PEER_LEASE_LIMIT, /* the caller holds rm_cache_peer_lease_limit leases */
    RM_CACHE_NAMESPACE_LIMIT,  /* every namespace slot holds pages or references */
    RM_CACHE_STORES_KV,        /* a metadata-only insert into a cache that stores KV bytes */
    RM_CACHE_METADATA_ONLY,    /* KV bytes asked of a cache that stores none */
    RM_CACHE_INCONSISTENT,     /* rm_cache_check found a broken invariant */
    RM_CACHE_NRESULTS
} rm_cache_result;

/* A short, static description of r ("unknown lease", ...). */
const char *rm_cache_strerror(rm_cache_result r);

typedef struct rm_cache_config {
    uint32_t page_tokens;        /* tokens per page, > 0 */
    uint64_t pool_pages;         /* pages in the pool, > 0 */
    uint64_t kv_bytes_per_token; /* 0: metadata-only */
    rm_evict_policy policy;
    uint64_t ttl_ms;               /* drop entries idle this long; 0: never */
    uint32_t default_lease_ttl_ms; /* lease TTL when a Match asks for 0 */
    uint32_t max_lease_ttl_ms;     /* longer requests are clamped to this */
    uint32_t max_leases;           /* live leases at most */
    uint32_t max_leases_per_peer;  /* per known caller; 0: half of max_leases (at least 1) */
    uint32_t max_namespaces;
    int prefault_kv; /* fault the KV pool in at start (see rm_pool_init) */
    /* One sequence caches at most this share of the pool, in percent; the
     * rest of it is dropped. 0 (or 100): no cap. */
    uint32_t max_sequence_pct;
} rm_cache_config;

/* Fills a config with the daemon's defaults (page 16, LRU, 30 s leases...). */
void rm_cache_config_defaults(rm_cache_config *cfg);

typedef struct rm_cache_stats {
    uint64_t match_requests_total, query_tokens_total, hit_tokens_total;
    uint64_t insert_requests_total, inserted_tokens_total, evicted_tokens_total;
    uint64_t dropped_tokens_total; /* Insert/WriteKV tokens that found no page */
    uint64_t expired_leases_total;
    uint64_t namespace_refusals_total;  /* RM_CACHE_NAMESPACE_LIMIT answers */
    uint64_t peer_lease_refusals_total; /* RM_CACHE_PEER_LEASE_LIMIT answers */
    uint64_t pool_pages, free_pages, evictable_pages, protected_pages;
    uint64_t active_leases, tree_nodes, metadata_bytes, namespaces;
} rm_cache_stats;

/* Who calls. id is an authenticated TLS client identity (authenticated
 * != 0) or the peer's address; len bytes, not necessarily NUL-terminated.
 * Pass NULL for an unknown caller: no share applies and it owns nothing. */
typedef struct rm_cache_caller {
    const char *id;
    size_t len;
    int authenticated;
} rm_cache_caller;

typedef struct rm_lease {
    uint64_t id;
    rm_radix_node *node; /* locked */
    rm_peer *owner;      /* the caller that took it (counted there), NULL: unknown */
    uint64_t expires_ms;
    uint32_t ttl_ms;
    uint32_t heap_idx;
} rm_lease;

typedef struct rm_kv_pin rm_kv_pin;
typedef struct rm_kv_write rm_kv_write;

typedef struct rm_cache {
    rm_cache_config cfg;
    rm_radix tree;
    rm_pool pool;
    rm_cache_stats st; /* counters only; gauges are computed on demand */

    rm_ptrtab leases;      /* rm_lease entries by id */
    rm_lease **lease_heap; /* min-heap by expires_ms, leases.n long */
    uint64_t lease_seq;
    uint8_t lease_key[16]; /* SipHash key of the lease ids, from getrandom */
    rm_peers peers;        /* leases per known caller */

    uint64_t pending_pages; /* reserved by unfinished WriteKV streams */
    rm_kv_pin *pins;        /* live ReadKV pins (for the checker) */
    rm_kv_write *writes;    /* live WriteKV streams (for the checker) */

    uint32_t *scratch; /* page ids buffer reused across inserts */
    size_t scratch_cap;
} rm_cache;

/* Returns RM_CACHE_OK, RM_CACHE_BAD_CONFIG, RM_CACHE_NO_MEMORY or
 * RM_CACHE_NO_RANDOMNESS. */
rm_cache_result rm_cache_init(rm_cache *c, const rm_cache_config *cfg);

/* Frees everything, including live leases, pins and writes' memory (pins and
 * writes must not be used afterwards). */
void rm_cache_destroy(rm_cache *c);

typedef struct rm_match_result {
    size_t matched_tokens;
    uint64_t lease_id; /* 0 without a lease */
} rm_match_result;

/* Longest cached page-aligned prefix of tokens[0..n) in namespace ns. With
 * lease, pins it until rm_cache_release or lease_ttl_ms (0: default,
 * clamped to max_lease_ttl_ms) passes; the lease belongs to who. Counts the
 * request in the stats. Returns RM_CACHE_OK, RM_CACHE_LEASE_LIMIT,
 * RM_CACHE_PEER_LEASE_LIMIT or RM_CACHE_NAMESPACE_LIMIT (only with lease:
 * an unleased match on an unknown namespace is a miss). */
rm_cache_result rm_cache_match(rm_cache *c, const rm_cache_caller *who, const char *ns,
                               size_t ns_len, const uint32_t *tokens, size_t n, int lease,
                               uint32_t lease_ttl_ms, uint64_t now_ms, rm_match_result *out);

/* Leases one known caller may hold at once. */
uint32_t rm_cache_peer_lease_limit(const rm_cache *c);

/* The configuration in force (rm_cache_set_limits changes it). */
const rm_cache_config *rm_cache_config_get(const rm_cache *c);
uint32_t rm_cache_page_tokens(const rm_cache *c);
uint64_t rm_cache_kv_bytes_per_token(const rm_cache *c); /* 0: metadata-only */

/* The limits a config reload may change, each > 0. Live leases keep the
 * TTL they were given; a lower max_leases refuses new leases until enough
 * end. */
void rm_cache_set_limits(rm_cache *c, uint32_t max_leases, uint32_t default_lease_ttl_ms,
                         uint32_t max_lease_ttl_ms);

/* Longest cached page-aligned prefix, without counting the request or
 * recording an access (eviction order and statistics are untouched). */
size_t rm_cache_peek(rm_cache *c, const char *ns, size_t ns_len, const uint32_t *tokens, size_t n);

typedef struct rm_insert_result {
    size_t cached_tokens;   /* page-aligned tokens already present */
    size_t inserted_tokens; /* tokens added by this call */
    size_t dropped_tokens;  /* page-aligned tokens that found no free page */
} rm_insert_result;

/* Caches the page-aligned part of tokens[0..n), evicting unreferenced
 * leaves when the pool is short. If only part fits (the pool is smaller
 * than the sequence, or pinned, the caller's own lease perhaps: nothing at
 * all may fit), caches that part and reports the rest as dropped: that is
 * RM_CACHE_OK, a cache loses nothing by not holding something. With
 * lease_id != 0 the lease must cover a prefix of tokens in ns; it then
 * moves to the whole cached sequence and its TTL restarts. Returns
 * RM_CACHE_OK, RM_CACHE_UNKNOWN_LEASE, RM_CACHE_LEASE_MISMATCH,
 * RM_CACHE_NAMESPACE_LIMIT, or RM_CACHE_STORES_KV when the cache stores KV
 * bytes: an entry without its bytes would serve stale memory, so such
 * caches take sequences via WriteKV. */
rm_cache_result rm_cache_insert(rm_cache *c, const rm_cache_caller *who, const char *ns,
                                size_t ns_len, const uint32_t *tokens, size_t n, uint64_t lease_id,
                                uint64_t now_ms, rm_insert_result *out);

/* Ends a lease. Returns RM_CACHE_OK or RM_CACHE_UNKNOWN_LEASE. */
rm_cache_result rm_cache_release(rm_cache *c, const rm_cache_caller *who, uint64_t lease_id);

/* Expires leases whose TTL passed and, with ttl_ms, entries idle longer;
 * reclaims namespaces left empty. Returns the number of leases expired.
 * Call it every few hundred ms. */
uint32_t rm_cache_tick(rm_cache *c, uint64_t now_ms);

/* Milliseconds until the next lease expires (UINT64_MAX if none). */
uint64_t rm_cache_next_expiry(const rm_cache *c, uint64_t now_ms);

/* Counters plus current gauges. */
void rm_cache_stats_get(const rm_cache *c, rm_cache_stats *out);

/* Verifies every invariant of tree, pool and references (see the top of
 * this file). Returns RM_CACHE_OK, or RM_CACHE_INCONSISTENT with a reason
 * in err. O(tree size). */
rm_cache_result rm_cache_check(const rm_cache *c, char *err, size_t errlen);

/* ---- KV bytes --------------------------------------------------------- */

/* A ReadKV stream's hold on a leased prefix: its pages cannot be evicted or
 * freed until rm_cache_unpin, even if the lease ends meanwhile. The pin is
 * meant to live no longer than the lease's TTL: rm_cache_pin_expires says
 * when that is, and the stream's owner ends it then. */
struct rm_kv_pin {
    rm_radix_node *node;
    uint32_t *pages; /* page ids from the first token on, owned by the pin */
    size_t npages;
    rm_lease *lease;     /* the lease pinned under, NULL once it ended */
    uint64_t expires_ms; /* the lease's end, kept when it ends */
    rm_kv_pin *next, *prev;
};

/* Pins the prefix of lease lease_id. Returns RM_CACHE_OK,
 * RM_CACHE_UNKNOWN_LEASE or RM_CACHE_METADATA_ONLY. */
rm_cache_result rm_cache_pin_lease(rm_cache *c, const rm_cache_caller *who, uint64_t lease_id,
                                   rm_kv_pin *pin);
void rm_cache_unpin(rm_cache *c, rm_kv_pin *pin);

/* When the lease pin was taken under ends (or ended: a released lease
 * still bounds its pins by the TTL it had). */
uint64_t rm_cache_pin_expires(const rm_cache *c, const rm_kv_pin *pin);

/* Pointer to the KV of token i of a pinned prefix (i < npages*page_tokens);
 * kv_bytes_per_token bytes there, up to the end of its page, are valid. */
const uint8_t *rm_cache_pin_kv(const rm_cache *c, const rm_kv_pin *pin, size_t token);

/* A WriteKV stream in progress. Pages for the tokens the cache lacks are
 * reserved at begin and filled as bytes arrive; commit links them into the
 * tree, abort returns them. The prefix the cache already held at begin stays
 * locked throughout, so it cannot be evicted under the writer. */
struct rm_kv_write {
    rm_radix_node *root, *anchor;
    uint32_t *tokens; /* page-aligned copy of the sequence */
    size_t ntokens;
    size_t have_tokens; /* cached at begin: anchor's depth */
    size_t kv_start;    /* first token whose KV the client sends */
    uint32_t *pages;    /* pages[i] holds tokens have_tokens + i*page_tokens.. */
    uint32_t npages, wanted_pages;
    uint64_t lease_id;
    rm_kv_write *next, *prev;
};

/* Starts a write of tokens[0..n) whose client will send the KV of tokens
 * [kv_start, n rounded down to pages). Fewer than a page of tokens (none
 * at all included) is a valid write of nothing: it commits with nothing
 * cached. Pages are reserved for what fits, as rm_cache_insert does (none
 * at all may fit); the bytes of the rest are dropped (rm_cache_write_dest
 * returns NULL) and the commit reports them. Returns RM_CACHE_OK,
 * RM_CACHE_METADATA_ONLY, RM_CACHE_BAD_KV_START, RM_CACHE_UNKNOWN_LEASE,
 * RM_CACHE_LEASE_MISMATCH (checked before the next), RM_CACHE_PREFIX_SHORT
 * (rm_cache_peek says how many tokens the cache holds: the client resends
 * KV from there) or RM_CACHE_NAMESPACE_LIMIT. */
rm_cache_result rm_cache_write_begin(rm_cache *c, const rm_cache_caller *who, const char *ns,
                                     size_t ns_len, const uint32_t *tokens, size_t n,
                                     size_t kv_start, uint64_t lease_id, uint64_t now_ms,
                                     rm_kv_write *w);

/* Where the KV bytes of token i (kv_start <= i < ntokens) go, or NULL when
 * they are not stored (already cached, or dropped for lack of pages). The
 * pointer is valid for kv_bytes_per_token bytes up to the page's end. */
uint8_t *rm_cache_write_dest(rm_cache *c, const rm_kv_write *w, size_t token);

/* Links the written pages into the tree (pages someone else cached meanwhile
 * are returned to the pool) and ends the write. Returns RM_CACHE_OK or
 * RM_CACHE_UNKNOWN_LEASE (the lease named at begin is gone; the data is
 * still cached). */
rm_cache_result rm_cache_write_commit(rm_cache *c, rm_kv_write *w, uint64_t now_ms,
                                      rm_insert_result *out);

/* Ends the write without caching anything new. */
void rm_cache_write_abort(rm_cache *c, rm_kv_write *w);

#endif
