/* Unit tests for common/cache.c: the node's semantics without gRPC.
 * Every test checks the full invariant set after each operation. */
#include <string.h>

#include "cache.h"
#include "check.h"
#include "siphash.h"
#include "util.h"

static void inv(const rm_cache *c)
{
    char err[256] = "";
    rm_cache_result rc = rm_cache_check(c, err, sizeof err);
    if (rc)
        fprintf(stderr, "invariant: %s\n", err);
    CHECK_EQ(rc, RM_CACHE_OK);
}

static void seq(uint32_t *out, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        out[i] = seed * 100003u + (uint32_t)i;
}

/* A cache under test, the caller its next calls are made for, and the
 * results of its last calls. a and b are two unrelated token sequences. */
typedef struct fx {
    rm_cache c;
    const rm_cache_caller *who; /* NULL: unknown */
    rm_match_result mr;
    rm_insert_result ir;
    rm_cache_stats st;
    rm_kv_write w;
    rm_kv_pin pin;
    uint32_t a[640], b[640];
} fx;

/* pt tokens a page, pages pages, kvb KV bytes a token (0: metadata-only),
 * leases of 1 s by default. */
static rm_cache_config cfg_of(uint32_t pt, uint64_t pages, uint64_t kvb)
{
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = pt;
    cfg.pool_pages = pages;
    cfg.kv_bytes_per_token = kvb;
    cfg.default_lease_ttl_ms = 1000;
    return cfg;
}

static void open_cfg(fx *f, const rm_cache_config *cfg)
{
    memset(f, 0, sizeof *f);
    REQUIRE(rm_cache_init(&f->c, cfg) == RM_CACHE_OK);
    seq(f->a, RM_ARRAY_LEN(f->a), 1);
    seq(f->b, RM_ARRAY_LEN(f->b), 2);
}

static void open_fx(fx *f, uint32_t pt, uint64_t pages, uint64_t kvb)
{
    rm_cache_config cfg = cfg_of(pt, pages, kvb);
    open_cfg(f, &cfg);
}

static void close_fx(fx *f)
{
    inv(&f->c);
    rm_cache_destroy(&f->c);
}

static rm_cache_result mat(fx *f, const char *ns, const uint32_t *tok, size_t n, int lease,
                           uint32_t ttl_ms, uint64_t now)
{
    return rm_cache_match(&f->c, f->who, ns, strlen(ns), tok, n, lease, ttl_ms, now, &f->mr);
}

/* Tokens an unleased match finds, or -1 if it is refused. */
static long matched(fx *f, const char *ns, const uint32_t *tok, size_t n, uint64_t now)
{
    return mat(f, ns, tok, n, 0, 0, now) == RM_CACHE_OK ? (long)f->mr.matched_tokens : -1;
}

static rm_cache_result ins(fx *f, const char *ns, const uint32_t *tok, size_t n, uint64_t lease,
                           uint64_t now)
{
    return rm_cache_insert(&f->c, f->who, ns, strlen(ns), tok, n, lease, now, &f->ir);
}

static rm_cache_result wbegin(fx *f, const char *ns, const uint32_t *tok, size_t n, size_t kv_start,
                              uint64_t lease, uint64_t now)
{
    return rm_cache_write_begin(&f->c, f->who, ns, strlen(ns), tok, n, kv_start, lease, now, &f->w);
}

static rm_cache_result commit(fx *f, uint64_t now)
{
    return rm_cache_write_commit(&f->c, &f->w, now, &f->ir);
}

/* Writes tok[0..n) whole (no bytes filled in) and commits it. */
static rm_cache_result write_all(fx *f, const char *ns, const uint32_t *tok, size_t n)
{
    rm_cache_result rc = wbegin(f, ns, tok, n, 0, 0, 0);
    return rc ? rc : commit(f, 0);
}

static rm_cache_result pin(fx *f, uint64_t lease)
{
    return rm_cache_pin_lease(&f->c, f->who, lease, &f->pin);
}

static const rm_cache_stats *stats(fx *f)
{
    rm_cache_stats_get(&f->c, &f->st);
    return &f->st;
}

static void test_insert_612_caches_608(fx *f)
{
    CHECK_EQ(ins(f, "m", f->a, 612, 0, 0), RM_CACHE_OK);
    CHECK_EQ(f->ir.cached_tokens, 0);
    CHECK_EQ(f->ir.inserted_tokens, 608);
    CHECK_EQ(f->ir.dropped_tokens, 0);
    inv(&f->c);
    CHECK_EQ(matched(f, "m", f->a, 612, 1), 608);
    CHECK_EQ(f->mr.lease_id, 0);
    /* Re-insert: all cached, nothing added. */
    CHECK_EQ(ins(f, "m", f->a, 612, 0, 2), RM_CACHE_OK);
    CHECK_EQ(f->ir.cached_tokens, 608);
    CHECK_EQ(f->ir.inserted_tokens, 0);
    /* A peek sees the same prefix but counts nothing. */
    CHECK_EQ(rm_cache_peek(&f->c, "m", 1, f->a, 612), 608);
    CHECK_EQ(rm_cache_peek(&f->c, "zz", 2, f->a, 612), 0);
    /* Empty match is valid and counts its request. */
    CHECK_EQ(matched(f, "m", f->a, 0, 3), 0);
    const rm_cache_stats *st = stats(f);
    CHECK_EQ(st->match_requests_total, 2);
    CHECK_EQ(st->query_tokens_total, 612);
    CHECK_EQ(st->hit_tokens_total, 608);
    CHECK_EQ(st->inserted_tokens_total, 608);
    CHECK_EQ(st->evictable_pages, 38);
    CHECK_EQ(st->free_pages, 1024 - 38);
}

static void test_namespaces(fx *f)
{
    CHECK_EQ(ins(f, "llama@v1", f->a, 16, 0, 0), RM_CACHE_OK);
    CHECK_EQ(matched(f, "llama@v2", f->a, 16, 0), 0);
    CHECK_EQ(matched(f, "llama@v1", f->a, 16, 0), 16);
    /* Namespace names are bytes, not C strings. */
    CHECK_EQ(rm_cache_match(&f->c, NULL, "llama@v1\0x", 10, f->a, 16, 0, 0, 0, &f->mr),
             RM_CACHE_OK);
    CHECK_EQ(f->mr.matched_tokens, 0);
}

static void test_lease_pins_and_expires(fx *f)
{
    CHECK_EQ(ins(f, "m", f->a, 16, 0, 0), RM_CACHE_OK);
    CHECK_EQ(mat(f, "m", f->a, 16, 1, 500, 10), RM_CACHE_OK);
    CHECK_EQ(f->mr.matched_tokens, 16);
    uint64_t lease = f->mr.lease_id;
    CHECK(lease != 0);
    CHECK_EQ(stats(f)->protected_pages, 4);
    CHECK_EQ(f->st.active_leases, 1);
    inv(&f->c);
    /* The pool is fully pinned: inserting b cannot evict a, and drops b. */
    CHECK_EQ(ins(f, "m", f->b, 16, 0, 20), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 0);
    CHECK_EQ(f->ir.dropped_tokens, 16);
    inv(&f->c);
    CHECK_EQ(matched(f, "m", f->a, 16, 30), 16);
    /* TTL 500 ms from t=10: still alive at 509, gone at 510. */
    CHECK_EQ(rm_cache_tick(&f->c, 509), 0);
    CHECK_EQ(rm_cache_next_expiry(&f->c, 509), 1);
    CHECK_EQ(rm_cache_tick(&f->c, 510), 1);
    CHECK_EQ(rm_cache_release(&f->c, NULL, lease), RM_CACHE_UNKNOWN_LEASE);
    inv(&f->c);
    /* Recovery: now b fits by evicting a. */
    CHECK_EQ(ins(f, "m", f->b, 16, 0, 600), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 16);
    CHECK_EQ(stats(f)->evicted_tokens_total, 16);
    CHECK_EQ(f->st.expired_leases_total, 1);
}

static void test_release(fx *f)
{
    CHECK_EQ(ins(f, "m", f->a, 8, 0, 0), RM_CACHE_OK);
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 0, 0), RM_CACHE_OK);
    const uint64_t ids[] = {f->mr.lease_id, f->mr.lease_id, 0, 12345};
    for (size_t i = 0; i < RM_ARRAY_LEN(ids); i++) /* only the first release finds it */
        CHECK_EQ(rm_cache_release(&f->c, NULL, ids[i]), i ? RM_CACHE_UNKNOWN_LEASE : RM_CACHE_OK);
    CHECK_EQ(stats(f)->protected_pages, 0);
    CHECK_EQ(f->st.active_leases, 0);
}

static void test_lease_partial_edge_splits(fx *f)
{
    CHECK_EQ(ins(f, "m", f->a, 16, 0, 0), RM_CACHE_OK);
    /* Leasing the first 8 tokens pins exactly 2 pages, not the 4-page edge. */
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 0, 0), RM_CACHE_OK);
    CHECK_EQ(stats(f)->protected_pages, 2);
    CHECK_EQ(f->st.evictable_pages, 2);
}

static void test_insert_moves_lease(fx *f)
{
    CHECK_EQ(ins(f, "m", f->a, 8, 0, 0), RM_CACHE_OK);
    CHECK_EQ(mat(f, "m", f->a, 24, 1, 100, 0), RM_CACHE_OK);
    CHECK_EQ(f->mr.matched_tokens, 8);
    /* The usual cycle: Match(lease) -> compute -> Insert(lease). */
    CHECK_EQ(ins(f, "m", f->a, 24, f->mr.lease_id, 50), RM_CACHE_OK);
    CHECK_EQ(f->ir.cached_tokens, 8);
    CHECK_EQ(f->ir.inserted_tokens, 16);
    CHECK_EQ(stats(f)->protected_pages, 6); /* the whole sequence is pinned now */
    inv(&f->c);
    /* TTL restarted at t=50. */
    CHECK_EQ(rm_cache_tick(&f->c, 149), 0);
    CHECK_EQ(rm_cache_tick(&f->c, 150), 1);
    inv(&f->c);
    /* A lease whose prefix is not a prefix of the insert is refused. */
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 0, 200), RM_CACHE_OK);
    CHECK_EQ(ins(f, "m", f->b, 8, f->mr.lease_id, 200), RM_CACHE_LEASE_MISMATCH);
    CHECK_EQ(ins(f, "x", f->a, 8, f->mr.lease_id, 200), RM_CACHE_LEASE_MISMATCH);
    CHECK_EQ(ins(f, "m", f->a, 8, 999, 200), RM_CACHE_UNKNOWN_LEASE);
}

static void test_partial_insert_when_pinned(fx *f)
{
    CHECK_EQ(ins(f, "m", f->a, 16, 0, 0), RM_CACHE_OK);
    CHECK_EQ(mat(f, "m", f->a, 16, 1, 0, 0), RM_CACHE_OK);
    /* 2 pages left: b caches its first 8 tokens and drops 8. */
    CHECK_EQ(ins(f, "m", f->b, 16, 0, 1), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 8);
    CHECK_EQ(f->ir.dropped_tokens, 8);
    inv(&f->c);
    CHECK_EQ(matched(f, "m", f->b, 16, 2), 8);
}

/* A sequence larger than the whole pool, under a lease that ends up
 * pinning every page: each Insert is OK, caches what fits and reports the
 * rest dropped; the lease follows what is cached; nothing else breaks. */
static void test_insert_larger_than_pool(fx *f)
{
    /* 8 pages of 4 tokens; the sequence is 100 tokens (25 pages). */
    CHECK_EQ(ins(f, "m", f->a, 100, 0, 0), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 32);
    CHECK_EQ(f->ir.dropped_tokens, 68);
    inv(&f->c);
    CHECK_EQ(mat(f, "m", f->a, 100, 1, 0, 1), RM_CACHE_OK);
    CHECK_EQ(f->mr.matched_tokens, 32);
    uint64_t lease = f->mr.lease_id;
    CHECK_EQ(stats(f)->protected_pages, 8); /* its own lease pins the whole pool */
    CHECK_EQ(f->st.free_pages + f->st.evictable_pages, 0);
    /* The next turn: 40 more tokens, not one page for them. */
    CHECK_EQ(ins(f, "m", f->a, 140, lease, 2), RM_CACHE_OK);
    CHECK_EQ(f->ir.cached_tokens, 32);
    CHECK_EQ(f->ir.inserted_tokens, 0);
    CHECK_EQ(f->ir.dropped_tokens, 108);
    inv(&f->c);
    /* Others are dropped too, not refused, while the lease holds. */
    CHECK_EQ(ins(f, "m", f->b, 8, 0, 3), RM_CACHE_OK);
    CHECK_EQ(f->ir.dropped_tokens, 8);
    CHECK_EQ(stats(f)->dropped_tokens_total, 68 + 108 + 8);
    CHECK_EQ(rm_cache_release(&f->c, NULL, lease), RM_CACHE_OK);
    inv(&f->c);
    CHECK_EQ(ins(f, "m", f->b, 8, 0, 4), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 8);
}

/* The same for WriteKV: the bytes that fit are stored, the rest are
 * dropped (no destination) and reported at commit, even when not a single
 * page is free. */
static void test_write_larger_than_pool(fx *f)
{
    CHECK_EQ(wbegin(f, "m", f->a, 48, 0, 0, 0), RM_CACHE_OK);
    CHECK_EQ(f->w.npages, 8);
    CHECK(rm_cache_write_dest(&f->c, &f->w, 31) != NULL);
    CHECK(rm_cache_write_dest(&f->c, &f->w, 32) == NULL);
    inv(&f->c);
    CHECK_EQ(commit(f, 1), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 32);
    CHECK_EQ(f->ir.dropped_tokens, 16);
    CHECK_EQ(mat(f, "m", f->a, 48, 1, 0, 2), RM_CACHE_OK);
    uint64_t lease = f->mr.lease_id;
    /* Its lease pins every page: the next write keeps nothing, says so. */
    CHECK_EQ(wbegin(f, "m", f->a, 64, 32, lease, 3), RM_CACHE_OK);
    CHECK_EQ(f->w.npages, 0);
    CHECK(rm_cache_write_dest(&f->c, &f->w, 32) == NULL);
    inv(&f->c);
    CHECK_EQ(commit(f, 4), RM_CACHE_OK);
    CHECK_EQ(f->ir.cached_tokens, 32);
    CHECK_EQ(f->ir.dropped_tokens, 32);
    CHECK_EQ(f->ir.inserted_tokens, 0);
    CHECK_EQ(stats(f)->protected_pages, 8);
    CHECK_EQ(f->st.dropped_tokens_total, 16 + 32);
    CHECK_EQ(rm_cache_release(&f->c, NULL, lease), RM_CACHE_OK);
    inv(&f->c);
}

/* max_sequence_pct: a sequence caches at most that share of the pool
 * (here 50% of 8 pages), the rest is dropped, whatever is free; another
 * sequence keeps the other half. */
static void test_sequence_share(fx *f)
{
    rm_cache_config cfg = *rm_cache_config_get(&f->c);
    cfg.max_sequence_pct = 50;
    close_fx(f);
    open_cfg(f, &cfg);
    CHECK_EQ(ins(f, "m", f->a, 12, 0, 0), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 12);
    CHECK_EQ(ins(f, "m", f->a, 40, 0, 1), RM_CACHE_OK);
    CHECK_EQ(f->ir.cached_tokens, 12);
    CHECK_EQ(f->ir.inserted_tokens, 4);
    CHECK_EQ(f->ir.dropped_tokens, 24);
    CHECK_EQ(stats(f)->free_pages, 4);
    CHECK_EQ(ins(f, "m", f->a, 40, 0, 2), RM_CACHE_OK); /* at its share: nothing more */
    CHECK_EQ(f->ir.inserted_tokens, 0);
    CHECK_EQ(f->ir.dropped_tokens, 24);
    CHECK_EQ(ins(f, "m", f->b, 40, 0, 4), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 16);
    CHECK_EQ(stats(f)->evicted_tokens_total, 0);
    inv(&f->c);
}

/* LFU-DA counts a request once, at its Match: re-inserting cached pages
 * (what every request's Insert does after its Match) is no hit. a, only
 * ever re-inserted, goes before b, matched once, though a was used last;
 * LRU would take b. */
static void test_insert_is_not_a_hit(fx *f)
{
    rm_cache_config cfg = *rm_cache_config_get(&f->c);
    cfg.policy = RM_EVICT_LFU_DA;
    close_fx(f);
    open_cfg(f, &cfg);
    CHECK_EQ(ins(f, "m", f->a, 8, 0, 0), RM_CACHE_OK);
    CHECK_EQ(ins(f, "m", f->b, 8, 0, 1), RM_CACHE_OK);
    CHECK_EQ(matched(f, "m", f->b, 8, 2), 8);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(ins(f, "m", f->a, 8, 0, 3 + (uint64_t)i), RM_CACHE_OK);
    uint32_t c[8];
    seq(c, 8, 3);
    CHECK_EQ(ins(f, "m", c, 8, 0, 10), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 8);
    CHECK_EQ(rm_cache_peek(&f->c, "m", 1, f->a, 8), 0);
    CHECK_EQ(rm_cache_peek(&f->c, "m", 1, f->b, 8), 8);
    CHECK_EQ(f->c.tree.age, RM_PRIO_ONE); /* a's K: L 0 + f 1 */
}

static void test_max_leases(fx *f)
{
    const rm_cache_result want[] = {RM_CACHE_OK, RM_CACHE_OK, RM_CACHE_LEASE_LIMIT};
    for (size_t i = 0; i < RM_ARRAY_LEN(want); i++)
        CHECK_EQ(mat(f, "m", f->a, 4, 1, 0, 0), want[i]);
    CHECK_EQ(matched(f, "m", f->a, 4, 0), 0); /* without a lease: served */
}

static void test_ttl_entries(fx *f)
{
    CHECK_EQ(ins(f, "m", f->a, 8, 0, 5000), RM_CACHE_OK);
    CHECK_EQ(ins(f, "m", f->b, 8, 0, 5500), RM_CACHE_OK);
    rm_cache_tick(&f->c, 6200); /* a idle 1200 ms > 1000, b 700 ms */
    CHECK_EQ(matched(f, "m", f->a, 8, 6200), 0);
    CHECK_EQ(matched(f, "m", f->b, 8, 6200), 8);
}

static void test_kv_write_read_roundtrip(fx *f)
{
    enum { KVB = 8 };
    /* kv_start must be page-aligned and within the sequence. */
    CHECK_EQ(wbegin(f, "m", f->a, 18, 2, 0, 0), RM_CACHE_BAD_KV_START);
    CHECK_EQ(wbegin(f, "m", f->a, 18, 4, 0, 0), RM_CACHE_PREFIX_SHORT);
    CHECK_EQ(wbegin(f, "m", f->a, 18, 0, 0, 0), RM_CACHE_OK);
    CHECK_EQ(f->w.ntokens, 16);
    CHECK_EQ(stats(f)->protected_pages, 4); /* reserved while streaming */
    inv(&f->c);
    for (size_t i = 0; i < 16; i++) {
        uint8_t *d = rm_cache_write_dest(&f->c, &f->w, i);
        REQUIRE(d != NULL);
        memset(d, (int)(i + 1), KVB);
    }
    CHECK(rm_cache_write_dest(&f->c, &f->w, 16) == NULL);
    CHECK_EQ(commit(f, 1), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 16);
    inv(&f->c);
    CHECK_EQ(mat(f, "m", f->a, 18, 1, 0, 2), RM_CACHE_OK);
    CHECK_EQ(f->mr.matched_tokens, 16);
    CHECK_EQ(pin(f, f->mr.lease_id), RM_CACHE_OK);
    CHECK_EQ(f->pin.npages, 4);
    /* The pin outlives the lease. */
    CHECK_EQ(rm_cache_release(&f->c, NULL, f->mr.lease_id), RM_CACHE_OK);
    inv(&f->c);
    int ok = 1;
    for (size_t i = 0; i < 16; i++) {
        const uint8_t *d = rm_cache_pin_kv(&f->c, &f->pin, i);
        for (int b = 0; b < KVB; b++)
            ok &= d[b] == (uint8_t)(i + 1);
    }
    CHECK(ok);
    rm_cache_unpin(&f->c, &f->pin);
    inv(&f->c);
    CHECK_EQ(pin(f, f->mr.lease_id), RM_CACHE_UNKNOWN_LEASE);
}

static void test_kv_write_extends_and_aborts(fx *f)
{
    /* A KV cache refuses metadata inserts: their pages would hold stale bytes. */
    CHECK_EQ(ins(f, "m", f->a, 8, 0, 0), RM_CACHE_STORES_KV);
    CHECK_EQ(write_all(f, "m", f->a, 8), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 8);
    /* Cache holds 8: the client may start at 8 (or earlier, bytes ignored). */
    CHECK_EQ(wbegin(f, "m", f->a, 16, 8, 0, 0), RM_CACHE_OK);
    CHECK(rm_cache_write_dest(&f->c, &f->w, 4) == NULL);
    CHECK(rm_cache_write_dest(&f->c, &f->w, 8) != NULL);
    rm_cache_write_abort(&f->c, &f->w);
    inv(&f->c);
    CHECK_EQ(stats(f)->free_pages, 6);
    /* Two concurrent writers of the same tail: the second's pages are
     * returned as duplicates at commit. */
    rm_kv_write w1, w2;
    CHECK_EQ(rm_cache_write_begin(&f->c, NULL, "m", 1, f->a, 16, 8, 0, 0, &w1), RM_CACHE_OK);
    CHECK_EQ(rm_cache_write_begin(&f->c, NULL, "m", 1, f->a, 16, 8, 0, 0, &w2), RM_CACHE_OK);
    inv(&f->c);
    CHECK_EQ(rm_cache_write_commit(&f->c, &w1, 1, &f->ir), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 8);
    CHECK_EQ(rm_cache_write_commit(&f->c, &w2, 2, &f->ir), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 0);
    inv(&f->c);
    CHECK_EQ(stats(f)->free_pages, 4);
}

static void test_metadata_only_has_no_kv(fx *f)
{
    CHECK_EQ(wbegin(f, "m", f->a, 8, 0, 0, 0), RM_CACHE_METADATA_ONLY);
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 0, 0), RM_CACHE_OK);
    CHECK_EQ(pin(f, f->mr.lease_id), RM_CACHE_METADATA_ONLY);
}

/* A WriteKV naming no tokens (or less than a page) is a write of nothing:
 * it begins, commits with nothing cached, and never reads the (NULL) token
 * array. Under UBSan the old memcpy from NULL killed the process. */
static void test_empty_write(fx *f)
{
    CHECK_EQ(wbegin(f, "m", NULL, 0, 0, 0, 0), RM_CACHE_OK);
    CHECK_EQ(f->w.ntokens, 0);
    inv(&f->c);
    CHECK(rm_cache_write_dest(&f->c, &f->w, 0) == NULL);
    CHECK_EQ(commit(f, 1), RM_CACHE_OK);
    CHECK_EQ(f->ir.cached_tokens + f->ir.inserted_tokens + f->ir.dropped_tokens, 0);
    inv(&f->c);
    CHECK_EQ(wbegin(f, "m", f->a, 3, 0, 0, 2), RM_CACHE_OK);
    rm_cache_write_abort(&f->c, &f->w);
    inv(&f->c);
    CHECK_EQ(stats(f)->free_pages, 8);
    CHECK_EQ(f->st.inserted_tokens_total, 0);
}

/* The case: leased Matches on fresh namespaces with 100 ms leases
 * filled --max-namespaces for good. Once the leases end, the namespaces
 * are empty and unreferenced and their slots serve new names. */
static void test_namespace_slots_come_back(fx *f)
{
    char name[32];
    uint64_t now = 1000;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 8; i++) {
            snprintf(name, sizeof name, "model-%d-%d", round, i);
            CHECK_EQ(mat(f, name, f->a, 4, 1, 100, now), RM_CACHE_OK);
            inv(&f->c);
        }
        /* Full: a ninth namespace is refused while all eight are leased. */
        CHECK_EQ(mat(f, "extra", f->a, 4, 1, 100, now), RM_CACHE_NAMESPACE_LIMIT);
        /* An unleased match on an unknown namespace creates nothing: a miss. */
        CHECK_EQ(matched(f, "extra", f->a, 4, now), 0);
        now += 100;
        CHECK_EQ(rm_cache_tick(&f->c, now), 8);
        inv(&f->c);
        CHECK_EQ(stats(f)->namespaces, 0);
        CHECK_EQ(f->st.namespace_refusals_total, (uint64_t)round + 1);
    }
}

/* A namespace is freed only with no pages and no references; one emptied
 * by eviction makes room for a new name at once, without a tick. */
static void test_namespace_reclaim_keeps_held_ones(fx *f)
{
    CHECK_EQ(ins(f, "a", f->a, 16, 0, 0), RM_CACHE_OK);    /* the whole pool */
    CHECK_EQ(mat(f, "b", f->b, 16, 1, 0, 0), RM_CACHE_OK); /* an empty lease */
    CHECK_EQ(ins(f, "c", f->a, 16, 0, 1), RM_CACHE_NAMESPACE_LIMIT);
    CHECK_EQ(rm_cache_tick(&f->c, 2), 0);
    inv(&f->c);
    CHECK_EQ(stats(f)->namespaces, 2); /* "a" holds pages, "b" a lease: both stay */
    /* "b" inserts through its lease and evicts all of "a": "a" is empty. */
    CHECK_EQ(ins(f, "b", f->b, 16, f->mr.lease_id, 3), RM_CACHE_OK);
    CHECK_EQ(f->ir.inserted_tokens, 16);
    CHECK_EQ(mat(f, "c", f->a, 16, 1, 0, 4), RM_CACHE_OK);
    CHECK_EQ(rm_cache_peek(&f->c, "a", 1, f->a, 16), 0);
    inv(&f->c);
    CHECK_EQ(stats(f)->namespaces, 2); /* "b" and "c"; "a" was reclaimed for "c" */
    CHECK_EQ(f->st.namespace_refusals_total, 1);
    CHECK_EQ(rm_cache_peek(&f->c, "b", 1, f->b, 16), 16);
}

/* The inverse of the old id scheme, mix64(seq ^ s) ^ s. */
static uint64_t unmix64(uint64_t x)
{
    x ^= x >> 31 ^ x >> 62;
    x *= 0x319642b2d24d8ec3ULL; /* inverse of 0x94d049bb133111eb */
    x ^= x >> 27 ^ x >> 54;
    x *= 0x96de1b173f119089ULL; /* inverse of 0xbf58476d1ce4e5b9 */
    x ^= x >> 30 ^ x >> 60;
    return x;
}

static uint64_t key_word(const uint8_t *k)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | k[i];
    return v;
}

/* Lease ids are a keyed PRF of the counter: they follow from the secret
 * key (and from nothing a client sees), two processes' sequences share no
 * structure, and the old scheme's inverse recovers no counter. */
static void test_lease_ids_unpredictable(fx *f)
{
    enum { N = 64 };
    static fx other;
    open_fx(&other, 4, 8, 0);
    fx *caches[2] = {f, &other};
    uint64_t id[2][N];
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < N; i++) {
            CHECK_EQ(mat(caches[k], "m", f->a, 4, 1, 0, 0), RM_CACHE_OK);
            id[k][i] = caches[k]->mr.lease_id;
        }
    }
    const uint8_t *key = f->c.lease_key;
    CHECK(memcmp(key, other.c.lease_key, 16) != 0);
    const uint64_t *a = id[0], *b = id[1];
    int prf = 1, inverse_fails = 1, deltas_differ = 1, distinct = 1;
    for (int i = 0; i < N; i++) {
        uint8_t ctr[8];
        for (int k = 0; k < 8; k++)
            ctr[k] = (uint8_t)((uint64_t)(i + 1) >> (8 * k));
        prf &= a[i] == rm_siphash24(key, ctr, 8);
        /* With the old scheme and its secret, this gave back i+1. */
        for (int w = 0; w < 2; w++) {
            uint64_t s = key_word(key + 8 * w);
            inverse_fails &= (unmix64(a[i] ^ s) ^ s) != (uint64_t)(i + 1);
        }
        inverse_fails &= unmix64(a[i]) != (uint64_t)(i + 1);
        if (i > 0)
            deltas_differ &=
                (a[i] - a[i - 1]) != (b[i] - b[i - 1]) && (a[i] ^ a[i - 1]) != (b[i] ^ b[i - 1]);
        for (int j = 0; j < i; j++)
            distinct &= a[i] != a[j];
        distinct &= a[i] != 0;
    }
    CHECK(prf);
    CHECK(inverse_fails);
    CHECK(deltas_differ);
    CHECK(distinct);
    /* Sanity of the test's own inverse: it does undo rm_mix64. */
    CHECK_EQ(unmix64(rm_mix64(0x123456789abcdefULL)), 0x123456789abcdefULL);
    close_fx(&other);
}

static const rm_cache_caller alice = {"alice", 5, 1}, bob = {"bob", 3, 1};
static const rm_cache_caller alice_addr = {"alice", 5, 0}, ip1 = {"10.0.0.1", 8, 0};

/* rm_cache_peer_lease_limit of a cache with these limits. */
static uint32_t share_of(uint32_t max_leases, uint32_t per_peer)
{
    rm_cache_config cfg = cfg_of(4, 8, 0);
    cfg.max_leases = max_leases;
    cfg.max_leases_per_peer = per_peer;
    fx f;
    open_cfg(&f, &cfg);
    uint32_t share = rm_cache_peer_lease_limit(&f.c);
    rm_cache_destroy(&f.c);
    return share;
}

/* Each known caller holds at most its share (default half of max_leases);
 * unknown callers (NULL) only meet the global limit. */
static void test_peer_lease_share(fx *f)
{
    CHECK_EQ(rm_cache_peer_lease_limit(&f->c), 4);
    f->who = &ip1;
    uint64_t first = 0;
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(mat(f, "m", f->a, 4, 1, 0, 0), RM_CACHE_OK);
        first = first ? first : f->mr.lease_id;
    }
    CHECK_EQ(mat(f, "m", f->a, 4, 1, 0, 0), RM_CACHE_PEER_LEASE_LIMIT);
    CHECK_EQ(f->mr.lease_id, 0);
    /* The same caller is still served without a lease, others with one;
     * an address and an identity with the same text are different peers. */
    CHECK_EQ(matched(f, "m", f->a, 4, 0), 0);
    const rm_cache_caller *others[] = {&alice, &alice_addr};
    for (size_t i = 0; i < RM_ARRAY_LEN(others); i++) {
        f->who = others[i];
        CHECK_EQ(mat(f, "m", f->a, 4, 1, 0, 0), RM_CACHE_OK);
    }
    inv(&f->c);
    CHECK_EQ(rm_cache_release(&f->c, &ip1, first), RM_CACHE_OK);
    f->who = &ip1;
    CHECK_EQ(mat(f, "m", f->a, 4, 1, 0, 0), RM_CACHE_OK);
    CHECK_EQ(stats(f)->peer_lease_refusals_total, 1);
    CHECK_EQ(f->c.peers.tab.n, 3);
    /* Expiry gives the share back too. */
    CHECK_EQ(rm_cache_tick(&f->c, 1000000), 6);
    CHECK_EQ(f->c.peers.tab.n, 0);
    /* An explicit share; max_leases 1 still leaves one lease per peer. */
    CHECK_EQ(share_of(8, 2), 2);
    CHECK_EQ(share_of(1, 0), 1);
}

/* A lease taken by an authenticated identity exists for it alone: anyone
 * else naming it gets RM_CACHE_UNKNOWN_LEASE, like an id never issued.
 * Leases of address-only callers are bearer capabilities. */
static void test_lease_ownership(fx *f)
{
    CHECK_EQ(write_all(f, "m", f->a, 8), RM_CACHE_OK);
    f->who = &alice;
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 0, 0), RM_CACHE_OK);
    uint64_t id = f->mr.lease_id;
    const rm_cache_caller *others[] = {&bob, &alice_addr, &ip1, NULL};
    for (size_t i = 0; i < RM_ARRAY_LEN(others); i++) {
        f->who = others[i];
        CHECK_EQ(rm_cache_release(&f->c, f->who, id), RM_CACHE_UNKNOWN_LEASE);
        CHECK_EQ(pin(f, id), RM_CACHE_UNKNOWN_LEASE);
        CHECK_EQ(wbegin(f, "m", f->a, 8, 8, id, 0), RM_CACHE_UNKNOWN_LEASE);
        inv(&f->c);
    }
    f->who = &alice;
    CHECK_EQ(pin(f, id), RM_CACHE_OK);
    rm_cache_unpin(&f->c, &f->pin);
    CHECK_EQ(wbegin(f, "m", f->a, 8, 8, id, 0), RM_CACHE_OK);
    CHECK_EQ(commit(f, 0), RM_CACHE_OK);
    CHECK_EQ(rm_cache_release(&f->c, &alice, id), RM_CACHE_OK);
    /* Address-owned: the id is the capability. */
    f->who = &ip1;
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 0, 0), RM_CACHE_OK);
    CHECK_EQ(rm_cache_release(&f->c, &bob, f->mr.lease_id), RM_CACHE_OK);
    close_fx(f);
    /* Insert (metadata-only cache) checks ownership the same way. */
    open_fx(f, 4, 16, 0);
    f->who = &alice;
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 0, 0), RM_CACHE_OK);
    f->who = &bob;
    CHECK_EQ(ins(f, "m", f->a, 8, f->mr.lease_id, 0), RM_CACHE_UNKNOWN_LEASE);
    f->who = &alice;
    CHECK_EQ(ins(f, "m", f->a, 8, f->mr.lease_id, 0), RM_CACHE_OK);
}

/* A pin lives no longer than its lease's TTL: it follows the lease while
 * the lease lives (an Insert restarts the TTL) and keeps its end after. */
static void test_pin_bounded_by_lease(fx *f)
{
    CHECK_EQ(write_all(f, "m", f->a, 4), RM_CACHE_OK);
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 500, 100), RM_CACHE_OK);
    rm_kv_pin p2;
    CHECK_EQ(pin(f, f->mr.lease_id), RM_CACHE_OK);
    CHECK_EQ(rm_cache_pin_expires(&f->c, &f->pin), 600);
    CHECK_EQ(wbegin(f, "m", f->a, 8, 4, f->mr.lease_id, 300), RM_CACHE_OK);
    CHECK_EQ(commit(f, 300), RM_CACHE_OK); /* the TTL restarts at 300 */
    CHECK_EQ(rm_cache_pin_expires(&f->c, &f->pin), 800);
    CHECK_EQ(rm_cache_pin_lease(&f->c, NULL, f->mr.lease_id, &p2), RM_CACHE_OK);
    CHECK_EQ(rm_cache_release(&f->c, NULL, f->mr.lease_id), RM_CACHE_OK);
    CHECK_EQ(rm_cache_pin_expires(&f->c, &f->pin), 800); /* released: still bounded by its TTL */
    inv(&f->c);
    rm_cache_unpin(&f->c, &f->pin);
    rm_cache_unpin(&f->c, &p2);
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 50, 1000), RM_CACHE_OK);
    CHECK_EQ(pin(f, f->mr.lease_id), RM_CACHE_OK);
    CHECK_EQ(rm_cache_tick(&f->c, 1050), 1);
    CHECK_EQ(rm_cache_pin_expires(&f->c, &f->pin), 1050); /* expired: due now */
    inv(&f->c);
    rm_cache_unpin(&f->c, &f->pin);
}

/* A refused write says which of its two stale cases it is: a lease that
 * does not cover the sequence, or a prefix shorter than kv_start (the
 * client resends from what rm_cache_peek reports), lease or not. */
static void test_write_refusals_apart(fx *f)
{
    CHECK_EQ(write_all(f, "m", f->a, 4), RM_CACHE_OK);
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 0, 0), RM_CACHE_OK);
    CHECK_EQ(f->mr.matched_tokens, 4);
    uint64_t lease = f->mr.lease_id;
    CHECK_EQ(wbegin(f, "m", f->a, 12, 8, lease, 0), RM_CACHE_PREFIX_SHORT);
    CHECK_EQ(rm_cache_peek(&f->c, "m", 1, f->a, 12), 4);
    CHECK_EQ(wbegin(f, "m", f->b, 12, 0, lease, 0), RM_CACHE_LEASE_MISMATCH);
    CHECK_EQ(wbegin(f, "x", f->a, 12, 0, lease, 0), RM_CACHE_LEASE_MISMATCH);
    CHECK_EQ(wbegin(f, "m", f->a, 12, 8, 0, 0), RM_CACHE_PREFIX_SHORT);
}

/* Every result has its own description; accessors show the config in force. */
static void test_results_and_accessors(fx *f)
{
    for (int i = 0; i < RM_CACHE_NRESULTS; i++) {
        const char *a = rm_cache_strerror((rm_cache_result)i);
        CHECK(a != NULL && *a);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(a, rm_cache_strerror((rm_cache_result)j)) != 0);
    }
    CHECK(strcmp(rm_cache_strerror(RM_CACHE_NRESULTS), "unknown cache result") == 0);
    CHECK_EQ(rm_cache_page_tokens(&f->c), 8);
    CHECK_EQ(rm_cache_kv_bytes_per_token(&f->c), 3);
    CHECK_EQ(rm_cache_config_get(&f->c)->pool_pages, 16);
    rm_cache_set_limits(&f->c, 1, 70, 90);
    CHECK_EQ(rm_cache_config_get(&f->c)->max_leases, 1);
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 0, 0), RM_CACHE_OK);
    CHECK_EQ(rm_cache_next_expiry(&f->c, 0), 70); /* the new default TTL */
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 0, 0), RM_CACHE_LEASE_LIMIT);
    rm_cache_set_limits(&f->c, 2, 70, 90);
    CHECK_EQ(mat(f, "m", f->a, 8, 1, 500, 0), RM_CACHE_OK);
    CHECK_EQ(rm_cache_tick(&f->c, 89), 1); /* 500 clamped to the new max, 90 */
    CHECK_EQ(rm_cache_tick(&f->c, 90), 1);
}

static void test_bad_config(fx *f)
{
    (void)f;
    rm_cache c;
    rm_cache_config cfg = cfg_of(0, 8, 0);
    CHECK_EQ(rm_cache_init(&c, &cfg), RM_CACHE_BAD_CONFIG);
    cfg = cfg_of(4, 0, 0);
    CHECK_EQ(rm_cache_init(&c, &cfg), RM_CACHE_BAD_CONFIG);
    cfg = cfg_of(4, 8, 0);
    cfg.policy = RM_EVICT_NPOLICIES;
    CHECK_EQ(rm_cache_init(&c, &cfg), RM_CACHE_BAD_CONFIG);
}

/* A test and the cache it starts with. */
typedef struct cache_test {
    const char *name;
    void (*run)(fx *f);
    uint32_t page_tokens;
    uint64_t pool_pages, kv_bytes_per_token;
    uint32_t max_leases, max_namespaces; /* 0: the defaults */
    uint64_t ttl_ms;
} cache_test;

#define T(fn, ...)                                                                                 \
    {                                                                                              \
#fn, fn, __VA_ARGS__                                                                       \
    }

static const cache_test tests[] = {
    T(test_insert_612_caches_608, 16, 1024, 0, 0, 0, 0),
    T(test_namespaces, 4, 64, 0, 0, 0, 0),
    T(test_lease_pins_and_expires, 4, 4, 0, 0, 0, 0), /* room for exactly one 16-token sequence */
    T(test_release, 4, 16, 0, 0, 0, 0),
    T(test_lease_partial_edge_splits, 4, 16, 0, 0, 0, 0),
    T(test_insert_moves_lease, 4, 32, 0, 0, 0, 0),
    T(test_partial_insert_when_pinned, 4, 6, 0, 0, 0, 0),
    T(test_insert_larger_than_pool, 4, 8, 0, 0, 0, 0),
    T(test_write_larger_than_pool, 4, 8, 2, 0, 0, 0),
    T(test_insert_is_not_a_hit, 4, 4, 0, 0, 0, 0),
    T(test_sequence_share, 4, 8, 0, 0, 0, 0),
    T(test_max_leases, 4, 8, 0, 2, 0, 0),
    T(test_ttl_entries, 4, 16, 0, 0, 0, 1000),
    T(test_kv_write_read_roundtrip, 4, 16, 8, 0, 0, 0),
    T(test_kv_write_extends_and_aborts, 4, 8, 2, 0, 0, 0),
    T(test_metadata_only_has_no_kv, 4, 8, 0, 0, 0, 0),
    T(test_bad_config, 4, 8, 0, 0, 0, 0),
    T(test_empty_write, 4, 8, 2, 0, 0, 0),
    T(test_namespace_slots_come_back, 4, 4, 0, 0, 8, 0),
    T(test_namespace_reclaim_keeps_held_ones, 4, 4, 0, 0, 2, 0),
    T(test_lease_ids_unpredictable, 4, 8, 0, 0, 0, 0),
    T(test_peer_lease_share, 4, 8, 0, 8, 0, 0),
    T(test_lease_ownership, 4, 16, 2, 0, 0, 0),
    T(test_pin_bounded_by_lease, 4, 16, 2, 0, 0, 0),
    T(test_write_refusals_apart, 4, 16, 2, 0, 0, 0),
    T(test_results_and_accessors, 8, 16, 3, 0, 0, 0),
};

int main(void)
{
    static fx f;
    for (size_t i = 0; i < RM_ARRAY_LEN(tests); i++) {
        const cache_test *t = &tests[i];
        rm_cache_config cfg = cfg_of(t->page_tokens, t->pool_pages, t->kv_bytes_per_token);
        cfg.max_leases = t->max_leases ? t->max_leases : cfg.max_leases;
        cfg.max_namespaces = t->max_namespaces ? t->max_namespaces : cfg.max_namespaces;
        cfg.ttl_ms = t->ttl_ms;
        int fails = rm_t_fail;
        open_cfg(&f, &cfg);
        t->run(&f);
        close_fx(&f);
        fprintf(stderr, "%-40s %s\n", t->name, rm_t_fail == fails ? "ok" : "FAILED");
    }
    return rm_t_report();
}
