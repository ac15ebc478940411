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
    int rc = rm_cache_check(c, err, sizeof err);
    if (rc)
        fprintf(stderr, "invariant: %s\n", err);
    CHECK_EQ(rc, 0);
}

static void mk(rm_cache *c, uint32_t pt, uint64_t pages, uint64_t kvb)
{
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = pt;
    cfg.pool_pages = pages;
    cfg.kv_bytes_per_token = kvb;
    cfg.default_lease_ttl_ms = 1000;
    REQUIRE(rm_cache_init(c, &cfg) == 0);
}

static void seq(uint32_t *out, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        out[i] = seed * 100003u + (uint32_t)i;
}

static void test_insert_612_caches_608(void)
{
    rm_cache c;
    mk(&c, 16, 1024, 0);
    uint32_t tok[612];
    seq(tok, 612, 1);
    rm_insert_result ir;
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, tok, 612, 0, 0, &ir), 0);
    CHECK_EQ(ir.cached_tokens, 0);
    CHECK_EQ(ir.inserted_tokens, 608);
    CHECK_EQ(ir.dropped_tokens, 0);
    inv(&c);
    rm_match_result mr;
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, tok, 612, 0, 0, 1, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 608);
    CHECK_EQ(mr.lease_id, 0);
    /* Re-insert: all cached, nothing added. */
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, tok, 612, 0, 2, &ir), 0);
    CHECK_EQ(ir.cached_tokens, 608);
    CHECK_EQ(ir.inserted_tokens, 0);
    /* A peek sees the same prefix but counts nothing. */
    CHECK_EQ(rm_cache_peek(&c, "m", 1, tok, 612), 608);
    CHECK_EQ(rm_cache_peek(&c, "zz", 2, tok, 612), 0);
    /* Empty match is valid and counts its request. */
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, tok, 0, 0, 0, 3, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 0);
    rm_cache_stats st;
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.match_requests_total, 2);
    CHECK_EQ(st.query_tokens_total, 612);
    CHECK_EQ(st.hit_tokens_total, 608);
    CHECK_EQ(st.inserted_tokens_total, 608);
    CHECK_EQ(st.evictable_pages, 38);
    CHECK_EQ(st.free_pages, 1024 - 38);
    inv(&c);
    rm_cache_destroy(&c);
}

static void test_namespaces(void)
{
    rm_cache c;
    mk(&c, 4, 64, 0);
    uint32_t tok[16];
    seq(tok, 16, 2);
    rm_insert_result ir;
    rm_match_result mr;
    CHECK_EQ(rm_cache_insert(&c, NULL, "llama@v1", 8, tok, 16, 0, 0, &ir), 0);
    CHECK_EQ(rm_cache_match(&c, NULL, "llama@v2", 8, tok, 16, 0, 0, 0, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 0);
    CHECK_EQ(rm_cache_match(&c, NULL, "llama@v1", 8, tok, 16, 0, 0, 0, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 16);
    /* Namespace names are bytes, not C strings. */
    CHECK_EQ(rm_cache_match(&c, NULL, "llama@v1\0x", 10, tok, 16, 0, 0, 0, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 0);
    inv(&c);
    rm_cache_destroy(&c);
}

static void test_lease_pins_and_expires(void)
{
    rm_cache c;
    mk(&c, 4, 4, 0); /* 4 pages: room for exactly one 16-token sequence */
    uint32_t a[16], b[16];
    seq(a, 16, 3);
    seq(b, 16, 4);
    rm_insert_result ir;
    rm_match_result mr;
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, a, 16, 0, 0, &ir), 0);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 16, 1, 500, 10, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 16);
    CHECK(mr.lease_id != 0);
    rm_cache_stats st;
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.protected_pages, 4);
    CHECK_EQ(st.active_leases, 1);
    inv(&c);
    /* The pool is fully pinned: inserting b cannot evict a. */
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, b, 16, 0, 20, &ir), RM_CACHE_POOL_PINNED);
    inv(&c);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 16, 0, 0, 30, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 16);
    /* TTL 500 ms from t=10: still alive at 509, gone at 510. */
    CHECK_EQ(rm_cache_tick(&c, 509), 0);
    CHECK_EQ(rm_cache_next_expiry(&c, 509), 1);
    CHECK_EQ(rm_cache_tick(&c, 510), 1);
    CHECK_EQ(rm_cache_release(&c, NULL, mr.lease_id), RM_CACHE_UNKNOWN_LEASE);
    inv(&c);
    /* Recovery: now b fits by evicting a. */
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, b, 16, 0, 600, &ir), 0);
    CHECK_EQ(ir.inserted_tokens, 16);
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.evicted_tokens_total, 16);
    CHECK_EQ(st.expired_leases_total, 1);
    inv(&c);
    rm_cache_destroy(&c);
}

static void test_release(void)
{
    rm_cache c;
    mk(&c, 4, 16, 0);
    uint32_t a[8];
    seq(a, 8, 5);
    rm_insert_result ir;
    rm_match_result mr;
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, a, 8, 0, 0, &ir), 0);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 8, 1, 0, 0, &mr), 0);
    CHECK_EQ(rm_cache_release(&c, NULL, mr.lease_id), 0);
    CHECK_EQ(rm_cache_release(&c, NULL, mr.lease_id), RM_CACHE_UNKNOWN_LEASE);
    CHECK_EQ(rm_cache_release(&c, NULL, 0), RM_CACHE_UNKNOWN_LEASE);
    CHECK_EQ(rm_cache_release(&c, NULL, 12345), RM_CACHE_UNKNOWN_LEASE);
    rm_cache_stats st;
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.protected_pages, 0);
    CHECK_EQ(st.active_leases, 0);
    inv(&c);
    rm_cache_destroy(&c);
}

static void test_lease_partial_edge_splits(void)
{
    rm_cache c;
    mk(&c, 4, 16, 0);
    uint32_t a[16];
    seq(a, 16, 6);
    rm_insert_result ir;
    rm_match_result mr;
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, a, 16, 0, 0, &ir), 0);
    /* Leasing the first 8 tokens pins exactly 2 pages, not the 4-page edge. */
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 8, 1, 0, 0, &mr), 0);
    rm_cache_stats st;
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.protected_pages, 2);
    CHECK_EQ(st.evictable_pages, 2);
    inv(&c);
    rm_cache_destroy(&c);
}

static void test_insert_moves_lease(void)
{
    rm_cache c;
    mk(&c, 4, 32, 0);
    uint32_t a[24];
    seq(a, 24, 7);
    rm_insert_result ir;
    rm_match_result mr;
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, a, 8, 0, 0, &ir), 0);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 24, 1, 100, 0, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 8);
    /* The usual cycle: Match(lease) -> compute -> Insert(lease). */
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, a, 24, mr.lease_id, 50, &ir), 0);
    CHECK_EQ(ir.cached_tokens, 8);
    CHECK_EQ(ir.inserted_tokens, 16);
    rm_cache_stats st;
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.protected_pages, 6); /* the whole sequence is pinned now */
    inv(&c);
    /* TTL restarted at t=50. */
    CHECK_EQ(rm_cache_tick(&c, 149), 0);
    CHECK_EQ(rm_cache_tick(&c, 150), 1);
    inv(&c);
    /* A lease whose prefix is not a prefix of the insert is refused. */
    uint32_t other[8];
    seq(other, 8, 8);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 8, 1, 0, 200, &mr), 0);
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, other, 8, mr.lease_id, 200, &ir),
             RM_CACHE_LEASE_MISMATCH);
    CHECK_EQ(rm_cache_insert(&c, NULL, "x", 1, a, 8, mr.lease_id, 200, &ir),
             RM_CACHE_LEASE_MISMATCH);
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, a, 8, 999, 200, &ir), RM_CACHE_UNKNOWN_LEASE);
    inv(&c);
    rm_cache_destroy(&c);
}

static void test_partial_insert_when_pinned(void)
{
    rm_cache c;
    mk(&c, 4, 6, 0);
    uint32_t a[16], b[16];
    seq(a, 16, 9);
    seq(b, 16, 10);
    rm_insert_result ir;
    rm_match_result mr;
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, a, 16, 0, 0, &ir), 0);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 16, 1, 0, 0, &mr), 0);
    /* 2 pages left: b caches its first 8 tokens and drops 8. */
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, b, 16, 0, 1, &ir), 0);
    CHECK_EQ(ir.inserted_tokens, 8);
    CHECK_EQ(ir.dropped_tokens, 8);
    inv(&c);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, b, 16, 0, 0, 2, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 8);
    rm_cache_destroy(&c);
}

static void test_max_leases(void)
{
    rm_cache c;
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = 4;
    cfg.pool_pages = 8;
    cfg.max_leases = 2;
    REQUIRE(rm_cache_init(&c, &cfg) == 0);
    uint32_t a[4] = {1, 2, 3, 4};
    rm_match_result mr;
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 4, 1, 0, 0, &mr), 0);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 4, 1, 0, 0, &mr), 0);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 4, 1, 0, 0, &mr), RM_CACHE_LEASE_LIMIT);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 4, 0, 0, 0, &mr), 0);
    inv(&c);
    rm_cache_destroy(&c);
}

static void test_ttl_entries(void)
{
    rm_cache c;
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = 4;
    cfg.pool_pages = 16;
    cfg.ttl_ms = 1000;
    REQUIRE(rm_cache_init(&c, &cfg) == 0);
    uint32_t a[8], b[8];
    seq(a, 8, 11);
    seq(b, 8, 12);
    rm_insert_result ir;
    rm_match_result mr;
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, a, 8, 0, 5000, &ir), 0);
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, b, 8, 0, 5500, &ir), 0);
    rm_cache_tick(&c, 6200); /* a idle 1200 ms > 1000, b 700 ms */
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, a, 8, 0, 0, 6200, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 0);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, b, 8, 0, 0, 6200, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 8);
    inv(&c);
    rm_cache_destroy(&c);
}

static void test_kv_write_read_roundtrip(void)
{
    enum { PT = 4, KVB = 8 };
    rm_cache c;
    mk(&c, PT, 16, KVB);
    uint32_t tok[18];
    seq(tok, 18, 13);
    rm_kv_write w;
    /* kv_start must be page-aligned and within the sequence. */
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, tok, 18, 2, 0, 0, &w), RM_CACHE_BAD_KV_START);
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, tok, 18, 4, 0, 0, &w), RM_CACHE_PREFIX_SHORT);
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, tok, 18, 0, 0, 0, &w), 0);
    CHECK_EQ(w.ntokens, 16);
    rm_cache_stats st;
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.protected_pages, 4); /* reserved while streaming */
    inv(&c);
    for (size_t i = 0; i < 16; i++) {
        uint8_t *d = rm_cache_write_dest(&c, &w, i);
        REQUIRE(d != NULL);
        memset(d, (int)(i + 1), KVB);
    }
    CHECK(rm_cache_write_dest(&c, &w, 16) == NULL);
    rm_insert_result ir;
    CHECK_EQ(rm_cache_write_commit(&c, &w, 1, &ir), 0);
    CHECK_EQ(ir.inserted_tokens, 16);
    inv(&c);
    rm_match_result mr;
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, tok, 18, 1, 0, 2, &mr), 0);
    CHECK_EQ(mr.matched_tokens, 16);
    rm_kv_pin pin;
    CHECK_EQ(rm_cache_pin_lease(&c, NULL, mr.lease_id, &pin), 0);
    CHECK_EQ(pin.npages, 4);
    /* The pin outlives the lease. */
    CHECK_EQ(rm_cache_release(&c, NULL, mr.lease_id), 0);
    inv(&c);
    int ok = 1;
    for (size_t i = 0; i < 16; i++) {
        const uint8_t *d = rm_cache_pin_kv(&c, &pin, i);
        for (int b = 0; b < KVB; b++)
            ok &= d[b] == (uint8_t)(i + 1);
    }
    CHECK(ok);
    rm_cache_unpin(&c, &pin);
    inv(&c);
    CHECK_EQ(rm_cache_pin_lease(&c, NULL, mr.lease_id, &pin), RM_CACHE_UNKNOWN_LEASE);
    rm_cache_destroy(&c);
}

static void test_kv_write_extends_and_aborts(void)
{
    enum { PT = 4, KVB = 2 };
    rm_cache c;
    mk(&c, PT, 8, KVB);
    uint32_t tok[16];
    seq(tok, 16, 14);
    rm_insert_result ir;
    rm_kv_write w;
    /* A KV cache refuses metadata inserts: their pages would hold stale bytes. */
    CHECK_EQ(rm_cache_insert(&c, NULL, "m", 1, tok, 8, 0, 0, &ir), RM_CACHE_STORES_KV);
    REQUIRE(rm_cache_write_begin(&c, NULL, "m", 1, tok, 8, 0, 0, 0, &w) == 0);
    CHECK_EQ(rm_cache_write_commit(&c, &w, 0, &ir), 0);
    CHECK_EQ(ir.inserted_tokens, 8);
    /* Cache holds 8: the client may start at 8 (or earlier, bytes ignored). */
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, tok, 16, 8, 0, 0, &w), 0);
    CHECK(rm_cache_write_dest(&c, &w, 4) == NULL);
    CHECK(rm_cache_write_dest(&c, &w, 8) != NULL);
    rm_cache_write_abort(&c, &w);
    inv(&c);
    rm_cache_stats st;
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.free_pages, 6);
    /* Two concurrent writers of the same tail: the second's pages are
     * returned as duplicates at commit. */
    rm_kv_write w1, w2;
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, tok, 16, 8, 0, 0, &w1), 0);
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, tok, 16, 8, 0, 0, &w2), 0);
    inv(&c);
    CHECK_EQ(rm_cache_write_commit(&c, &w1, 1, &ir), 0);
    CHECK_EQ(ir.inserted_tokens, 8);
    CHECK_EQ(rm_cache_write_commit(&c, &w2, 2, &ir), 0);
    CHECK_EQ(ir.inserted_tokens, 0);
    inv(&c);
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.free_pages, 4);
    rm_cache_destroy(&c);
}

static void test_metadata_only_has_no_kv(void)
{
    rm_cache c;
    mk(&c, 4, 8, 0);
    uint32_t tok[8];
    seq(tok, 8, 15);
    rm_kv_write w;
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, tok, 8, 0, 0, 0, &w), RM_CACHE_METADATA_ONLY);
    rm_match_result mr;
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, tok, 8, 1, 0, 0, &mr), 0);
    rm_kv_pin pin;
    CHECK_EQ(rm_cache_pin_lease(&c, NULL, mr.lease_id, &pin), RM_CACHE_METADATA_ONLY);
    inv(&c);
    rm_cache_destroy(&c);
}

/* A WriteKV naming no tokens (or less than a page) is a write of nothing:
 * it begins, commits with nothing cached, and never reads the (NULL) token
 * array. Under UBSan the old memcpy from NULL killed the process. */
static void test_empty_write(void)
{
    rm_cache c;
    mk(&c, 4, 8, 2);
    rm_kv_write w;
    rm_insert_result ir;
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, NULL, 0, 0, 0, 0, &w), 0);
    CHECK_EQ(w.ntokens, 0);
    inv(&c);
    CHECK(rm_cache_write_dest(&c, &w, 0) == NULL);
    CHECK_EQ(rm_cache_write_commit(&c, &w, 1, &ir), 0);
    CHECK_EQ(ir.cached_tokens + ir.inserted_tokens + ir.dropped_tokens, 0);
    inv(&c);
    uint32_t few[3] = {1, 2, 3};
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, few, 3, 0, 0, 2, &w), 0);
    rm_cache_write_abort(&c, &w);
    inv(&c);
    rm_cache_stats st;
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.free_pages, 8);
    CHECK_EQ(st.inserted_tokens_total, 0);
    rm_cache_destroy(&c);
}

static rm_cache_config ns_config(uint32_t max_ns)
{
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = 4;
    cfg.pool_pages = 4;
    cfg.max_namespaces = max_ns;
    return cfg;
}

/* The case: leased Matches on fresh namespaces with 100 ms leases
 * filled --max-namespaces for good. Once the leases end, the namespaces
 * are empty and unreferenced and their slots serve new names. */
static void test_namespace_slots_come_back(void)
{
    rm_cache c;
    rm_cache_config cfg = ns_config(8);
    REQUIRE(rm_cache_init(&c, &cfg) == 0);
    uint32_t tok[4] = {1, 2, 3, 4};
    rm_match_result mr;
    char name[32];
    uint64_t now = 1000;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 8; i++) {
            int len = snprintf(name, sizeof name, "model-%d-%d", round, i);
            CHECK_EQ(rm_cache_match(&c, NULL, name, (size_t)len, tok, 4, 1, 100, now, &mr), 0);
            inv(&c);
        }
        /* Full: a ninth namespace is refused while all eight are leased. */
        CHECK_EQ(rm_cache_match(&c, NULL, "extra", 5, tok, 4, 1, 100, now, &mr),
                 RM_CACHE_NAMESPACE_LIMIT);
        /* An unleased match on an unknown namespace creates nothing: a miss. */
        CHECK_EQ(rm_cache_match(&c, NULL, "extra", 5, tok, 4, 0, 0, now, &mr), 0);
        now += 100;
        CHECK_EQ(rm_cache_tick(&c, now), 8);
        inv(&c);
        rm_cache_stats st;
        rm_cache_stats_get(&c, &st);
        CHECK_EQ(st.namespaces, 0);
        CHECK_EQ(st.namespace_refusals_total, (uint64_t)round + 1);
    }
    rm_cache_destroy(&c);
}

/* A namespace is freed only with no pages and no references; one emptied
 * by eviction makes room for a new name at once, without a tick. */
static void test_namespace_reclaim_keeps_held_ones(void)
{
    rm_cache c;
    rm_cache_config cfg = ns_config(2);
    REQUIRE(rm_cache_init(&c, &cfg) == 0);
    uint32_t a[16], b[16];
    seq(a, 16, 40);
    seq(b, 16, 41);
    rm_insert_result ir;
    rm_match_result mr;
    CHECK_EQ(rm_cache_insert(&c, NULL, "a", 1, a, 16, 0, 0, &ir), 0);   /* the whole pool */
    CHECK_EQ(rm_cache_match(&c, NULL, "b", 1, b, 16, 1, 0, 0, &mr), 0); /* an empty lease */
    CHECK_EQ(rm_cache_insert(&c, NULL, "c", 1, a, 16, 0, 1, &ir), RM_CACHE_NAMESPACE_LIMIT);
    CHECK_EQ(rm_cache_tick(&c, 2), 0);
    inv(&c);
    rm_cache_stats st;
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.namespaces, 2); /* "a" holds pages, "b" a lease: both stay */
    /* "b" inserts through its lease and evicts all of "a": "a" is empty. */
    CHECK_EQ(rm_cache_insert(&c, NULL, "b", 1, b, 16, mr.lease_id, 3, &ir), 0);
    CHECK_EQ(ir.inserted_tokens, 16);
    CHECK_EQ(rm_cache_match(&c, NULL, "c", 1, a, 16, 1, 0, 4, &mr), 0);
    CHECK_EQ(rm_cache_peek(&c, "a", 1, a, 16), 0);
    inv(&c);
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.namespaces, 2); /* "b" and "c"; "a" was reclaimed for "c" */
    CHECK_EQ(st.namespace_refusals_total, 1);
    CHECK_EQ(rm_cache_peek(&c, "b", 1, b, 16), 16);
    rm_cache_destroy(&c);
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
static void test_lease_ids_unpredictable(void)
{
    enum { N = 64 };
    rm_cache c1, c2;
    mk(&c1, 4, 8, 0);
    mk(&c2, 4, 8, 0);
    CHECK(memcmp(c1.lease_key, c2.lease_key, 16) != 0);
    uint32_t tok[4] = {1, 2, 3, 4};
    uint64_t a[N], b[N];
    for (int i = 0; i < N; i++) {
        rm_match_result mr;
        CHECK_EQ(rm_cache_match(&c1, NULL, "m", 1, tok, 4, 1, 0, 0, &mr), 0);
        a[i] = mr.lease_id;
        CHECK_EQ(rm_cache_match(&c2, NULL, "m", 1, tok, 4, 1, 0, 0, &mr), 0);
        b[i] = mr.lease_id;
    }
    int prf = 1, inverse_fails = 1, deltas_differ = 1, distinct = 1;
    for (int i = 0; i < N; i++) {
        uint8_t ctr[8];
        for (int k = 0; k < 8; k++)
            ctr[k] = (uint8_t)((uint64_t)(i + 1) >> (8 * k));
        prf &= a[i] == rm_siphash24(c1.lease_key, ctr, 8);
        /* With the old scheme and its secret, this gave back i+1. */
        for (int w = 0; w < 2; w++) {
            uint64_t s = key_word(c1.lease_key + 8 * w);
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
    inv(&c1);
    rm_cache_destroy(&c1);
    rm_cache_destroy(&c2);
}

static const rm_cache_caller alice = {"alice", 5, 1}, bob = {"bob", 3, 1};
static const rm_cache_caller alice_addr = {"alice", 5, 0}, ip1 = {"10.0.0.1", 8, 0};

/* Each known caller holds at most its share (default half of max_leases);
 * unknown callers (NULL) only meet the global limit. */
static void test_peer_lease_share(void)
{
    rm_cache c;
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = 4;
    cfg.pool_pages = 8;
    cfg.max_leases = 8;
    REQUIRE(rm_cache_init(&c, &cfg) == 0);
    CHECK_EQ(rm_cache_peer_lease_limit(&c), 4);
    uint32_t tok[4] = {1, 2, 3, 4};
    rm_match_result mr;
    uint64_t first = 0;
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(rm_cache_match(&c, &ip1, "m", 1, tok, 4, 1, 0, 0, &mr), 0);
        first = first ? first : mr.lease_id;
    }
    CHECK_EQ(rm_cache_match(&c, &ip1, "m", 1, tok, 4, 1, 0, 0, &mr), RM_CACHE_PEER_LEASE_LIMIT);
    CHECK_EQ(mr.lease_id, 0);
    /* The same caller is still served without a lease, others with one. */
    CHECK_EQ(rm_cache_match(&c, &ip1, "m", 1, tok, 4, 0, 0, 0, &mr), 0);
    CHECK_EQ(rm_cache_match(&c, &alice, "m", 1, tok, 4, 1, 0, 0, &mr), 0);
    /* An address and an identity with the same text are different peers. */
    CHECK_EQ(rm_cache_match(&c, &alice_addr, "m", 1, tok, 4, 1, 0, 0, &mr), 0);
    inv(&c);
    CHECK_EQ(rm_cache_release(&c, &ip1, first), 0);
    CHECK_EQ(rm_cache_match(&c, &ip1, "m", 1, tok, 4, 1, 0, 0, &mr), 0);
    rm_cache_stats st;
    rm_cache_stats_get(&c, &st);
    CHECK_EQ(st.peer_lease_refusals_total, 1);
    CHECK_EQ(c.peers.n, 3);
    /* Expiry gives the share back too. */
    CHECK_EQ(rm_cache_tick(&c, 1000000), 6);
    CHECK_EQ(c.peers.n, 0);
    inv(&c);
    rm_cache_destroy(&c);
    /* An explicit share; max_leases 1 still leaves one lease per peer. */
    cfg.max_leases_per_peer = 2;
    REQUIRE(rm_cache_init(&c, &cfg) == 0);
    CHECK_EQ(rm_cache_peer_lease_limit(&c), 2);
    rm_cache_destroy(&c);
    cfg.max_leases_per_peer = 0;
    cfg.max_leases = 1;
    REQUIRE(rm_cache_init(&c, &cfg) == 0);
    CHECK_EQ(rm_cache_peer_lease_limit(&c), 1);
    rm_cache_destroy(&c);
}

/* A lease taken by an authenticated identity exists for it alone: anyone
 * else naming it gets RM_CACHE_UNKNOWN_LEASE, like an id never issued. Leases of
 * address-only callers are bearer capabilities. */
static void test_lease_ownership(void)
{
    rm_cache c;
    mk(&c, 4, 16, 2);
    uint32_t tok[8];
    seq(tok, 8, 42);
    rm_kv_write w;
    rm_insert_result ir;
    REQUIRE(rm_cache_write_begin(&c, NULL, "m", 1, tok, 8, 0, 0, 0, &w) == 0);
    CHECK_EQ(rm_cache_write_commit(&c, &w, 0, &ir), 0);
    rm_match_result mr;
    CHECK_EQ(rm_cache_match(&c, &alice, "m", 1, tok, 8, 1, 0, 0, &mr), 0);
    uint64_t id = mr.lease_id;
    const rm_cache_caller *others[] = {&bob, &alice_addr, &ip1, NULL};
    rm_kv_pin pin;
    for (size_t i = 0; i < RM_ARRAY_LEN(others); i++) {
        CHECK_EQ(rm_cache_release(&c, others[i], id), RM_CACHE_UNKNOWN_LEASE);
        CHECK_EQ(rm_cache_pin_lease(&c, others[i], id, &pin), RM_CACHE_UNKNOWN_LEASE);
        CHECK_EQ(rm_cache_write_begin(&c, others[i], "m", 1, tok, 8, 8, id, 0, &w),
                 RM_CACHE_UNKNOWN_LEASE);
        inv(&c);
    }
    CHECK_EQ(rm_cache_pin_lease(&c, &alice, id, &pin), 0);
    rm_cache_unpin(&c, &pin);
    CHECK_EQ(rm_cache_write_begin(&c, &alice, "m", 1, tok, 8, 8, id, 0, &w), 0);
    CHECK_EQ(rm_cache_write_commit(&c, &w, 0, &ir), 0);
    CHECK_EQ(rm_cache_release(&c, &alice, id), 0);
    /* Address-owned: the id is the capability. */
    CHECK_EQ(rm_cache_match(&c, &ip1, "m", 1, tok, 8, 1, 0, 0, &mr), 0);
    CHECK_EQ(rm_cache_release(&c, &bob, mr.lease_id), 0);
    inv(&c);
    rm_cache_destroy(&c);
    /* Insert (metadata-only cache) checks ownership the same way. */
    mk(&c, 4, 16, 0);
    CHECK_EQ(rm_cache_match(&c, &alice, "m", 1, tok, 8, 1, 0, 0, &mr), 0);
    CHECK_EQ(rm_cache_insert(&c, &bob, "m", 1, tok, 8, mr.lease_id, 0, &ir),
             RM_CACHE_UNKNOWN_LEASE);
    CHECK_EQ(rm_cache_insert(&c, &alice, "m", 1, tok, 8, mr.lease_id, 0, &ir), 0);
    inv(&c);
    rm_cache_destroy(&c);
}

/* A pin lives no longer than its lease's TTL: it follows the lease while
 * the lease lives (an Insert restarts the TTL) and keeps its end after. */
static void test_pin_bounded_by_lease(void)
{
    rm_cache c;
    mk(&c, 4, 16, 2);
    uint32_t tok[8];
    seq(tok, 8, 43);
    rm_kv_write w;
    rm_insert_result ir;
    REQUIRE(rm_cache_write_begin(&c, NULL, "m", 1, tok, 4, 0, 0, 0, &w) == 0);
    CHECK_EQ(rm_cache_write_commit(&c, &w, 0, &ir), 0);
    rm_match_result mr;
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, tok, 8, 1, 500, 100, &mr), 0);
    rm_kv_pin p1, p2;
    CHECK_EQ(rm_cache_pin_lease(&c, NULL, mr.lease_id, &p1), 0);
    CHECK_EQ(rm_cache_pin_expires(&c, &p1), 600);
    REQUIRE(rm_cache_write_begin(&c, NULL, "m", 1, tok, 8, 4, mr.lease_id, 300, &w) == 0);
    CHECK_EQ(rm_cache_write_commit(&c, &w, 300, &ir), 0); /* the TTL restarts at 300 */
    CHECK_EQ(rm_cache_pin_expires(&c, &p1), 800);
    CHECK_EQ(rm_cache_pin_lease(&c, NULL, mr.lease_id, &p2), 0);
    CHECK_EQ(rm_cache_release(&c, NULL, mr.lease_id), 0);
    CHECK_EQ(rm_cache_pin_expires(&c, &p1), 800); /* released: still bounded by its TTL */
    inv(&c);
    rm_cache_unpin(&c, &p1);
    rm_cache_unpin(&c, &p2);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, tok, 8, 1, 50, 1000, &mr), 0);
    CHECK_EQ(rm_cache_pin_lease(&c, NULL, mr.lease_id, &p1), 0);
    CHECK_EQ(rm_cache_tick(&c, 1050), 1);
    CHECK_EQ(rm_cache_pin_expires(&c, &p1), 1050); /* expired: due now */
    inv(&c);
    rm_cache_unpin(&c, &p1);
    inv(&c);
    rm_cache_destroy(&c);
}

/* A refused write says which of its two stale cases it is: a lease that
 * does not cover the sequence, or a prefix shorter than kv_start (the
 * client resends from what rm_cache_peek reports), lease or not. */
static void test_write_refusals_apart(void)
{
    rm_cache c;
    mk(&c, 4, 16, 2);
    uint32_t tok[12], other[12];
    seq(tok, 12, 44);
    seq(other, 12, 45);
    rm_kv_write w;
    rm_insert_result ir;
    REQUIRE(rm_cache_write_begin(&c, NULL, "m", 1, tok, 4, 0, 0, 0, &w) == RM_CACHE_OK);
    CHECK_EQ(rm_cache_write_commit(&c, &w, 0, &ir), RM_CACHE_OK);
    rm_match_result mr;
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, tok, 8, 1, 0, 0, &mr), RM_CACHE_OK);
    CHECK_EQ(mr.matched_tokens, 4);
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, tok, 12, 8, mr.lease_id, 0, &w),
             RM_CACHE_PREFIX_SHORT);
    CHECK_EQ(rm_cache_peek(&c, "m", 1, tok, 12), 4);
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, other, 12, 0, mr.lease_id, 0, &w),
             RM_CACHE_LEASE_MISMATCH);
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "x", 1, tok, 12, 0, mr.lease_id, 0, &w),
             RM_CACHE_LEASE_MISMATCH);
    CHECK_EQ(rm_cache_write_begin(&c, NULL, "m", 1, tok, 12, 8, 0, 0, &w), RM_CACHE_PREFIX_SHORT);
    inv(&c);
    rm_cache_destroy(&c);
}

/* Every result has its own description; accessors show the config in force. */
static void test_results_and_accessors(void)
{
    for (int i = 0; i < RM_CACHE_NRESULTS; i++) {
        const char *a = rm_cache_strerror((rm_cache_result)i);
        CHECK(a != NULL && *a);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(a, rm_cache_strerror((rm_cache_result)j)) != 0);
    }
    CHECK(strcmp(rm_cache_strerror(RM_CACHE_NRESULTS), "unknown cache result") == 0);
    rm_cache c;
    mk(&c, 8, 16, 3);
    CHECK_EQ(rm_cache_page_tokens(&c), 8);
    CHECK_EQ(rm_cache_kv_bytes_per_token(&c), 3);
    CHECK_EQ(rm_cache_config_get(&c)->pool_pages, 16);
    rm_cache_set_limits(&c, 1, 70, 90);
    CHECK_EQ(rm_cache_config_get(&c)->max_leases, 1);
    uint32_t tok[8];
    seq(tok, 8, 46);
    rm_match_result mr;
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, tok, 8, 1, 0, 0, &mr), RM_CACHE_OK);
    CHECK_EQ(rm_cache_next_expiry(&c, 0), 70); /* the new default TTL */
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, tok, 8, 1, 0, 0, &mr), RM_CACHE_LEASE_LIMIT);
    rm_cache_set_limits(&c, 2, 70, 90);
    CHECK_EQ(rm_cache_match(&c, NULL, "m", 1, tok, 8, 1, 500, 0, &mr), RM_CACHE_OK);
    CHECK_EQ(rm_cache_tick(&c, 89), 1); /* 500 clamped to the new max, 90 */
    CHECK_EQ(rm_cache_tick(&c, 90), 1);
    inv(&c);
    rm_cache_destroy(&c);
}

static void test_bad_config(void)
{
    rm_cache c;
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = 0;
    CHECK_EQ(rm_cache_init(&c, &cfg), RM_CACHE_BAD_CONFIG);
    rm_cache_config_defaults(&cfg);
    cfg.pool_pages = 0;
    CHECK_EQ(rm_cache_init(&c, &cfg), RM_CACHE_BAD_CONFIG);
}

int main(void)
{
    RUN(test_insert_612_caches_608);
    RUN(test_namespaces);
    RUN(test_lease_pins_and_expires);
    RUN(test_release);
    RUN(test_lease_partial_edge_splits);
    RUN(test_insert_moves_lease);
    RUN(test_partial_insert_when_pinned);
    RUN(test_max_leases);
    RUN(test_ttl_entries);
    RUN(test_kv_write_read_roundtrip);
    RUN(test_kv_write_extends_and_aborts);
    RUN(test_metadata_only_has_no_kv);
    RUN(test_bad_config);
    RUN(test_empty_write);
    RUN(test_namespace_slots_come_back);
    RUN(test_namespace_reclaim_keeps_held_ones);
    RUN(test_lease_ids_unpredictable);
    RUN(test_peer_lease_share);
    RUN(test_lease_ownership);
    RUN(test_pin_bounded_by_lease);
    RUN(test_write_refusals_apart);
    RUN(test_results_and_accessors);
    return rm_t_report();
}
