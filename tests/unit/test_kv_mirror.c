/* Unit tests for node/kv_mirror.c: an engine's KV-cache events applied to a
 * node's cache, as decoded events (common/kv_events.h) in and the tree's
 * contents (peeks) and the mirror's counters out. The cache's invariants
 * are checked after every test. */
#include <string.h>

#include "cache.h"
#include "check.h"
#include "kv_mirror.h"
#include "util.h"

#define PT 4

static rm_cache cache;
static rm_kv_mirror *mir;
static uint32_t T[256]; /* one engine sequence: T[i] = 1000 + i */
static rm_kv_mirror_stats st;

static void open_mirror(uint64_t pool_pages, uint64_t max_blocks)
{
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = PT;
    cfg.pool_pages = pool_pages;
    REQUIRE(rm_cache_init(&cache, &cfg) == RM_CACHE_OK);
    mir = rm_kv_mirror_new(&(rm_kv_mirror_config){.page_tokens = PT, .max_blocks = max_blocks});
    rm_kv_mirror_set_namespace(mir, &cache, "m");
    for (size_t i = 0; i < RM_ARRAY_LEN(T); i++)
        T[i] = 1000 + (uint32_t)i;
}

static void close_mirror(void)
{
    char err[256] = "";
    rm_cache_result rc = rm_cache_check(&cache, err, sizeof err);
    if (rc)
        fprintf(stderr, "invariant: %s\n", err);
    CHECK_EQ(rc, RM_CACHE_OK);
    rm_kv_mirror_free(mir);
    rm_cache_destroy(&cache);
}

static const rm_kv_mirror_stats *stats(void)
{
    rm_kv_mirror_stats_get(mir, &st);
    return &st;
}

static size_t held(const uint32_t *tok, size_t n)
{
    return rm_cache_peek(&cache, "m", 1, tok, n);
}

/* BlockStored of blocks first..first+n-1 of T (hash = 100 + block index),
 * chained to block first-1 (none for first == 0). */
static rm_kv_event stored(uint32_t first, uint32_t n, uint64_t *hashes)
{
    for (uint32_t i = 0; i < n; i++)
        hashes[i] = 100 + first + i;
    return (rm_kv_event){.type = RM_KV_BLOCK_STORED,
                         .medium = RM_KV_MEDIUM_GPU,
                         .hashes = hashes,
                         .n_hashes = n,
                         .tokens = T + (size_t)first * PT,
                         .n_tokens = n * PT,
                         .block_size = PT,
                         .parent = 100 + first - 1,
                         .has_parent = first > 0,
                         .group_idx = -1};
}

static int apply(rm_kv_event ev)
{
    return rm_kv_mirror_apply(mir, &cache, &ev, 1);
}

static int removed(uint64_t hash)
{
    return apply((rm_kv_event){
        .type = RM_KV_BLOCK_REMOVED, .hashes = &hash, .n_hashes = 1, .group_idx = -1});
}

static void test_chain_of_stores(void)
{
    open_mirror(64, 0);
    uint64_t h[8];
    CHECK_EQ(apply(stored(0, 2, h)), 1);
    CHECK_EQ(held(T, 64), 8);
    /* vLLM: the next step's newly full blocks, chained to the last one. */
    CHECK_EQ(apply(stored(2, 1, h)), 1);
    CHECK_EQ(held(T, 64), 12);
    /* SGLang: one event per page. */
    CHECK_EQ(apply(stored(3, 1, h)), 1);
    CHECK_EQ(apply(stored(4, 1, h)), 1);
    CHECK_EQ(held(T, 64), 20);
    /* Stored again (a hit re-emitted): nothing changes. */
    rm_cache_stats cs;
    rm_cache_stats_get(&cache, &cs);
    CHECK_EQ(apply(stored(0, 3, h)), 1);
    CHECK_EQ(held(T, 64), 20);
    CHECK_EQ(stats()->stored_blocks, 5);
    CHECK_EQ(st.blocks, 5);
    CHECK_EQ(st.applied, 5);
    CHECK(st.bytes >= 5 * (20 + 4 * PT));
    rm_cache_stats cs2;
    rm_cache_stats_get(&cache, &cs2);
    CHECK_EQ(cs2.inserted_tokens_total, cs.inserted_tokens_total);
    close_mirror();
}

static void test_removed_takes_what_hangs_under(void)
{
    open_mirror(64, 0);
    uint64_t h[8];
    apply(stored(0, 4, h));
    /* A branch off block 1: blocks 2' 3' with other tokens. */
    uint32_t other[8] = {7, 7, 7, 7, 8, 8, 8, 8};
    uint64_t bh[2] = {900, 901};
    rm_kv_event br = stored(2, 2, h);
    br.hashes = bh;
    br.tokens = other;
    CHECK_EQ(apply(br), 1);
    uint32_t seq2[16];
    memcpy(seq2, T, 8 * sizeof *seq2);
    memcpy(seq2 + 8, other, 8 * sizeof *seq2);
    CHECK_EQ(held(seq2, 16), 16);
    /* A leaf: exactly that block. */
    CHECK_EQ(removed(103), 1);
    CHECK_EQ(held(T, 64), 12);
    CHECK_EQ(held(seq2, 16), 16);
    /* Block 1: both branches hang under it. */
    CHECK_EQ(removed(101), 1);
    CHECK_EQ(held(T, 64), 4);
    CHECK_EQ(held(seq2, 16), 4);
    /* Unknown hashes: counted, ignored. */
    CHECK_EQ(removed(555), 0);
    CHECK_EQ(stats()->unknown_removed, 1);
    CHECK_EQ(st.removed_blocks, 2);
    /* The orphans are still the engine's (it evicts them later): when
     * block 1 comes back, a store under it works again. */
    CHECK_EQ(st.blocks, 4);
    CHECK_EQ(apply(stored(1, 1, h)), 1);
    CHECK_EQ(held(T, 64), 8);
    CHECK_EQ(apply(stored(2, 1, h)), 1);
    CHECK_EQ(held(T, 64), 12);
    /* Removing an orphan whose chain is broken touches nothing else. */
    CHECK_EQ(removed(101), 1);
    CHECK_EQ(removed(900), 1);
    CHECK_EQ(held(T, 64), 4);
    rm_cache_stats cs;
    rm_cache_stats_get(&cache, &cs);
    CHECK_EQ(cs.evicted_tokens_total, 0); /* the engine's removals are not evictions */
    close_mirror();
}

static void test_unknown_parent_and_loops(void)
{
    open_mirror(64, 0);
    uint64_t h[8];
    /* Joined late: a parent never seen. Recorded, not inserted. */
    CHECK_EQ(apply(stored(3, 1, h)), 0);
    CHECK_EQ(stats()->unknown_parent, 1);
    CHECK_EQ(st.blocks, 1);
    CHECK_EQ(held(T, 64), 0);
    /* Hostile: two blocks each other's parent, then a store under them. */
    uint64_t a = 700, b = 701;
    rm_kv_event e1 = stored(0, 1, h);
    e1.hashes = &a;
    e1.has_parent = 1;
    e1.parent = b;
    rm_kv_event e2 = stored(1, 1, h);
    e2.hashes = &b;
    e2.parent = a;
    apply(e1);
    apply(e2);
    rm_kv_event e3 = stored(2, 1, h);
    e3.parent = b;
    CHECK_EQ(apply(e3), 0); /* the walk ends; nothing inserted */
    CHECK_EQ(held(T, 64), 0);
    CHECK_EQ(removed(b), 1);
    close_mirror();
}

static void test_skipped_by_reason(void)
{
    open_mirror(64, 0);
    uint64_t h[8];
    rm_kv_event e = stored(0, 2, h);
    e.group_idx = 1;
    CHECK_EQ(apply(e), 0);
    e = stored(0, 2, h);
    e.medium = RM_KV_MEDIUM_CPU;
    CHECK_EQ(apply(e), 0);
    e = stored(0, 2, h);
    e.lora_name = "adapter";
    CHECK_EQ(apply(e), 0);
    e = stored(0, 2, h);
    e.has_lora_id = 1;
    e.lora_id = 3;
    CHECK_EQ(apply(e), 0);
    e = stored(0, 2, h);
    e.has_extra_keys = 1;
    CHECK_EQ(apply(e), 0);
    e = stored(0, 2, h);
    e.block_size = 2 * PT;
    e.n_tokens = 2 * 2 * PT;
    CHECK_EQ(apply(e), 0);
    e = stored(0, 2, h);
    e.n_tokens = 0; /* offloaded blocks come without tokens */
    CHECK_EQ(apply(e), 0);
    CHECK_EQ(held(T, 64), 0);
    stats();
    CHECK_EQ(st.skipped_group, 1);
    CHECK_EQ(st.skipped_medium, 1);
    CHECK_EQ(st.skipped_keyed, 3);
    CHECK_EQ(st.block_size_mismatches, 1);
    CHECK_EQ(st.last_block_size, 2 * PT);
    CHECK_EQ(st.no_tokens, 1);
    CHECK_EQ(st.blocks, 0);
    /* Releases before media (none sent) count as GPU; group 0 is fine;
     * lora_id 0 is no adapter. */
    e = stored(0, 2, h);
    e.medium = RM_KV_MEDIUM_NONE;
    e.group_idx = 0;
    e.has_lora_id = 1;
    CHECK_EQ(apply(e), 1);
    CHECK_EQ(held(T, 64), 8);
    /* A removal on another medium leaves the GPU copy. */
    uint64_t hash = 101;
    CHECK_EQ(apply((rm_kv_event){.type = RM_KV_BLOCK_REMOVED,
                                 .medium = RM_KV_MEDIUM_CPU,
                                 .hashes = &hash,
                                 .n_hashes = 1,
                                 .group_idx = -1}),
             0);
    CHECK_EQ(held(T, 64), 8);
    close_mirror();
}

static void test_clear_and_resync(void)
{
    open_mirror(64, 0);
    uint64_t h[8];
    apply(stored(0, 4, h));
    rm_cache_insert(&cache, NULL, "other", 5, T, 16, 0, 1, &(rm_insert_result){0});
    CHECK_EQ(apply((rm_kv_event){.type = RM_KV_ALL_CLEARED, .group_idx = -1}), 1);
    CHECK_EQ(held(T, 64), 0);
    CHECK_EQ(rm_cache_peek(&cache, "other", 5, T, 16), 16); /* only the mirror's namespace */
    CHECK_EQ(stats()->blocks, 0);
    CHECK_EQ(st.clears, 1);
    apply(stored(0, 4, h));
    rm_kv_mirror_clear(mir, &cache, 1);
    CHECK_EQ(held(T, 64), 0);
    CHECK_EQ(stats()->resyncs, 1);
    /* Stores after a clear need their chain again from the start. */
    CHECK_EQ(apply(stored(2, 1, h)), 0);
    CHECK_EQ(apply(stored(0, 3, h)), 1);
    CHECK_EQ(held(T, 64), 12);
    close_mirror();
}

static void test_bounds_and_busy(void)
{
    open_mirror(4, 3);
    uint64_t h[8];
    /* Three records at most; the pool (4 pages) takes what it can. */
    CHECK_EQ(apply(stored(0, 5, h)), 1);
    CHECK_EQ(stats()->blocks, 3);
    CHECK_EQ(st.full, 2);
    CHECK_EQ(held(T, 64), 16);
    CHECK_EQ(st.dropped_tokens, 4);
    /* A lease in the mirrored namespace keeps its pages. */
    rm_match_result mr;
    REQUIRE(rm_cache_match(&cache, NULL, "m", 1, T, 8, 1, 0, 1, &mr) == RM_CACHE_OK);
    CHECK_EQ(removed(101), 1);
    CHECK_EQ(stats()->busy, 1);
    CHECK_EQ(held(T, 64), 8);
    CHECK_EQ(rm_cache_release(&cache, NULL, mr.lease_id), RM_CACHE_OK);
    rm_kv_mirror_set_max_blocks(mir, 0);
    /* Another namespace: the old one is emptied. */
    rm_kv_mirror_set_namespace(mir, &cache, "m2");
    CHECK_EQ(held(T, 64), 0);
    CHECK(strcmp(rm_kv_mirror_namespace(mir), "m2") == 0);
    close_mirror();
}

int main(void)
{
    RUN(test_chain_of_stores);
    RUN(test_removed_takes_what_hangs_under);
    RUN(test_unknown_parent_and_loops);
    RUN(test_skipped_by_reason);
    RUN(test_clear_and_resync);
    RUN(test_bounds_and_busy);
    return rm_t_report();
}
