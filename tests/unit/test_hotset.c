/* Unit tests for common/hotset.c and common/prefix_key.c. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "hotset.h"
#include "prefix_key.h"
#include "util.h"

#define B 8

/* A request: `shared` blocks of a common prompt, then unique blocks. */
static size_t request(uint32_t *tok, int shared_blocks, uint64_t id, int total_blocks)
{
    size_t n = (size_t)total_blocks * B;
    for (size_t i = 0; i < n; i++)
        tok[i] = i < (size_t)shared_blocks * B ? (uint32_t)(7000 + i)
                                               : (uint32_t)(rm_mix64(id * 1000 + i) % 100000);
    return n;
}

static uint64_t prefix_hash(const uint32_t *tok, int blocks)
{
    uint64_t h = rm_prefix_ns_hash("m", 1);
    for (int b = 0; b < blocks; b++)
        h = rm_prefix_chain(h, tok + b * B, B);
    return h;
}

static double share_of(const rm_hotset *h, uint64_t hash, uint64_t now, uint32_t *blocks)
{
    static rm_hot_entry top[8192];
    double total;
    size_t k = rm_hotset_top(h, 0.0, now, top, 8192, &total);
    for (size_t i = 0; i < k; i++) {
        if (top[i].hash == hash) {
            *blocks = top[i].blocks;
            return top[i].count / total;
        }
    }
    return 0;
}

/* rm_hotset_top's answer: the first k of e, of `total` decayed requests. */
typedef struct hot_top {
    rm_hot_entry e[256];
    size_t k;
    double total;
} hot_top;

/* Each test's state: the hot set, a request's tokens (request() writes
 * them), the last top list (top_of()). */
static struct {
    rm_hotset h;
    uint32_t tok[256 * B];
    hot_top t;
} fx;

/* A fresh fx.h over blocks of B tokens, its cold threshold 1%. */
static rm_hotset *fx_init(uint32_t max_blocks, uint64_t half_life_ms, size_t capacity)
{
    REQUIRE(rm_hotset_init(&fx.h, B, max_blocks, 0.01, half_life_ms, capacity, 0) == 0);
    return &fx.h;
}

/* Adds requests first .. first+count-1 to fx.h, each `shared` blocks of the
 * common prompt in `blocks` (request()), all at time now; fx.tok ends as
 * the last one. */
static void add_requests(int shared, uint64_t first, uint64_t count, int blocks, uint64_t now)
{
    for (uint64_t i = first; i < first + count; i++)
        rm_hotset_add(&fx.h, "m", 1, fx.tok, request(fx.tok, shared, i, blocks), now);
}

/* fx.h's entries above min_share at now, at most max, into fx.t; how many. */
static size_t top_of(double min_share, uint64_t now, size_t max)
{
    REQUIRE(max <= 256);
    fx.t.k = rm_hotset_top(&fx.h, min_share, now, fx.t.e, max, &fx.t.total);
    return fx.t.k;
}

static const rm_hot_entry *entry_of(uint64_t hash)
{
    for (size_t i = 0; i < fx.t.k; i++)
        if (fx.t.e[i].hash == hash)
            return &fx.t.e[i];
    return NULL;
}

static void test_finds_shared_prompt(void)
{
    rm_hotset *h = fx_init(64, 10000, 1024);
    uint32_t *tok = fx.tok;
    /* 60% of requests share a 5-block prompt; the rest are unique. */
    for (uint64_t i = 0; i < 5000; i++) {
        size_t n = request(tok, (i % 5) < 3 ? 5 : 0, i, 12);
        rm_hotset_add(h, "m", 1, tok, n, i / 10);
    }
    request(tok, 5, 999999, 12);
    uint32_t blocks = 0;
    for (int b = 1; b <= 5; b++) {
        double s = share_of(h, prefix_hash(tok, b), 500, &blocks);
        CHECK(fabs(s - 0.6) < 0.03);
        CHECK_EQ(blocks, (uint32_t)b);
    }
    /* One block past the prompt every request is unique: cold. */
    CHECK(share_of(h, prefix_hash(tok, 6), 500, &blocks) < 0.01);
    /* Only the hot chain (and few cold leftovers) is reported above 1%. */
    CHECK_EQ(top_of(0.01, 500, 256), 5);
    CHECK(fabs(fx.t.total - 5000) < 600); /* decay over 0.5 s at half-life 10 s */
    /* Most shared first; along the equally shared chain, deepest first. */
    CHECK_EQ(fx.t.e[0].blocks, 5);
    CHECK(fx.t.e[0].hash == prefix_hash(tok, 5));
    CHECK_EQ(top_of(0.01, 500, 1), 1);
    CHECK_EQ(fx.t.e[0].blocks, 5);
    /* Another namespace with the same tokens is another prefix. */
    uint64_t other = rm_prefix_chain(rm_prefix_ns_hash("x", 1), tok, B);
    CHECK(share_of(h, other, 500, &blocks) == 0);
    rm_hotset_destroy(h);
}

static void test_noise_never_crowds_out_the_shared_chain(void)
{
    fx_init(64, 10000, 4096);
    /* Few requests, each a shared 9-block prompt then unique blocks: every
     * unique prefix is ~1.5% of this small window, above the report cut. */
    add_requests(9, 0, 64, 12, 0);
    CHECK_EQ(top_of(0.01, 0, 8), 8);
    for (size_t i = 0; i < fx.t.k; i++) {
        CHECK(fx.t.e[i].count > 60);
        CHECK_EQ(fx.t.e[i].blocks, 9 - i);
    }
    rm_hotset_destroy(&fx.h);
}

static void test_decays(void)
{
    rm_hotset *h = fx_init(64, 1000, 1024);
    uint32_t *tok = fx.tok, blocks;
    add_requests(3, 0, 1000, 6, 0);
    uint64_t hp = prefix_hash(tok, 3);
    CHECK(share_of(h, hp, 0, &blocks) > 0.99);
    /* Traffic moves on: two half-lives of unique requests later the old
     * prompt's share has fallen to about a quarter... */
    for (uint64_t i = 0; i < 2000; i++)
        rm_hotset_add(h, "m", 1, tok, request(tok, 0, 5000 + i, 6), i);
    request(tok, 3, 1, 6);
    double s = share_of(h, hp, 2000, &blocks);
    CHECK(s > 0.15 && s < 0.45);
    /* ...and long after, it is gone from what is reported. */
    for (uint64_t i = 0; i < 20000; i++)
        rm_hotset_add(h, "m", 1, tok + 6 * B, request(tok + 6 * B, 0, 90000 + i, 6), 2000 + i);
    CHECK_EQ(top_of(0.01, 22000, 256), 0);
    rm_hotset_destroy(h);
}

/* One conversation: each turn resends the last and adds 1.5 blocks, so most
 * turns end a few tokens into a block that the next turn completes. Nothing
 * in it branches, at any depth, however much traffic it is. */
static void test_one_conversation_never_branches(void)
{
    rm_hotset *h = fx_init(64, 10000, 1024);
    request(fx.tok, 0, 77, 40);
    for (int turn = 1; turn <= 20; turn++)
        rm_hotset_add(h, "m", 1, fx.tok, (size_t)turn * 3 * B / 2, (uint64_t)turn);
    CHECK(top_of(0.0, 20, 256) >= 29);
    for (size_t i = 0; i < fx.t.k; i++) {
        const rm_hot_entry *e = &fx.t.e[i];
        CHECK(e->other == 0);
        /* Every prefix but the deepest was continued by some turn. */
        if (e->blocks < 30)
            CHECK(e->lead_known > 0 && e->lead_count > 0);
    }
    rm_hotset_destroy(h);
}

/* A 5-block prompt followed by distinct conversations branches after its
 * last block and nowhere inside it; distinct short questions (tails under a
 * block) branch too, while tails under a quarter block count for nothing. */
static void test_shared_prompt_branches_at_its_end(void)
{
    rm_hotset *h = fx_init(64, 10000, 1024);
    add_requests(5, 0, 40, 8, 0);
    top_of(0.0, 0, 256);
    for (int b = 1; b <= 4; b++) {
        const rm_hot_entry *e = entry_of(prefix_hash(fx.tok, b));
        REQUIRE(e != NULL);
        CHECK(e->other == 0 && e->lead_count == 40 && e->lead_known == RM_HOT_CHECKPOINTS);
    }
    const rm_hot_entry *end = entry_of(prefix_hash(fx.tok, 5));
    REQUIRE(end != NULL);
    CHECK(end->other >= 38 && end->lead_count + end->other == 40);
    rm_hotset_destroy(h);

    fx_init(64, 10000, 1024);
    for (uint64_t i = 0; i < 40; i++) /* the prompt + 5 distinct tokens */
        rm_hotset_add(h, "m", 1, fx.tok, request(fx.tok, 5, 1000 + i, 6) - 3, 0);
    for (uint64_t i = 0; i < 40; i++) /* the prompt + 1 token: below a quarter */
        rm_hotset_add(h, "m", 1, fx.tok, request(fx.tok, 5, 2000 + i, 6) - 7, 0);
    top_of(0.0, 0, 256);
    end = entry_of(prefix_hash(fx.tok, 5));
    REQUIRE(end != NULL);
    CHECK_EQ(end->count, 80);
    CHECK(end->other >= 38 && end->lead_count + end->other == 40);
    rm_hotset_destroy(h);
}

/* A continuation seen once, then another one many times: the second takes
 * the lead, and "other" keeps only what came before it did. */
static void test_leader_is_displaced(void)
{
    rm_hotset *h = fx_init(64, 10000, 1024);
    uint32_t a[3 * B], c[3 * B];
    request(a, 2, 1, 3);
    request(c, 2, 2, 3);
    rm_hotset_add(h, "m", 1, a, 3 * B, 0);
    for (int i = 0; i < 10; i++)
        rm_hotset_add(h, "m", 1, c, 3 * B, 0);
    top_of(0.0, 0, 16);
    const rm_hot_entry *e = entry_of(prefix_hash(a, 2));
    REQUIRE(e != NULL);
    CHECK(e->lead[RM_HOT_CHECKPOINTS - 1] == prefix_hash(c, 3));
    CHECK(e->other <= 2 && e->lead_count >= 9 && e->lead_count + e->other == 11);
    rm_hotset_destroy(h);
}

static void test_prefix_hash_deterministic(void)
{
    /* Fixed vectors: the hash must not change across builds or machines,
     * or router replicas and nodes of different versions would disagree. */
    uint32_t block[4] = {1, 2, 3, 4};
    uint64_t h0 = rm_prefix_ns_hash("llama", 5);
    uint64_t h1 = rm_prefix_chain(h0, block, 4);
    CHECK(h0 == rm_prefix_ns_hash("llama", 5));
    CHECK(h1 != h0);
    CHECK(rm_prefix_chain(h0, block, 3) != h1);
    fprintf(stderr, "vectors: ns=%016llx chain=%016llx\n", (unsigned long long)h0,
            (unsigned long long)h1);
    CHECK(h0 == 0x6eb9f32ee9dca5d3ULL);
    CHECK(h1 == 0xa332344cb2158ff3ULL);
}

/* Few long requests in a window give every prefix of each a share far
 * above the cold threshold, so dropping cold entries frees nothing: the
 * table must still make room (it used to fill and probe forever -- a node
 * hung on the Mooncake trace at 512-token blocks). The shared prompt, the
 * warmest chain, survives. */
static void test_full_table_of_warm_prefixes(void)
{
    rm_hotset *h = fx_init(256, 10000, 4096);
    for (uint64_t id = 1; id <= 64; id++) {
        size_t n = request(fx.tok, 4, id, 256); /* 256 blocks each, 4 shared */
        rm_hotset_add(h, "m", 1, fx.tok, n, 0);
        CHECK(h->used * 4 <= (h->mask + 1) * 3);
    }
    CHECK(h->used > 0);
    uint32_t blocks;
    CHECK(share_of(h, prefix_hash(fx.tok, 4), 0, &blocks) > 0.99);
    CHECK(blocks == 4);
    rm_hotset_destroy(h);
}

/* Sketches as deep as RM_HOT_MAX_TOKENS (at least 64k tokens at small
 * blocks), with room for a few chains that deep. */
static void test_depth_reaches_past_long_prompts(void)
{
    CHECK_EQ(rm_hotset_depth(64), 2048);
    CHECK_EQ(rm_hotset_depth(512), 256);
    CHECK_EQ(rm_hotset_depth(4), RM_HOT_MAX_BLOCKS); /* 64k tokens */
    CHECK_EQ(rm_hotset_depth(1), RM_HOT_MAX_BLOCKS);
    CHECK_EQ(rm_hotset_depth(1u << 20), 1);
    CHECK(rm_hotset_depth(4) * 4 >= 65536);
    CHECK_EQ(rm_hotset_capacity(16), 4096);
    CHECK_EQ(rm_hotset_capacity(2048), 8192);
    CHECK_EQ(rm_hotset_capacity(3000), 16384);
}

/* Several versions of a long shared prompt (a coding agent's tool
 * definitions: hundreds of blocks each) are far more entries than a node
 * reports. What a router needs of each is where it branches; the inside of
 * the chains goes first when the report is cut, however common. */
/* At full scale: a 20,032-token shared prompt (313 blocks of 64 tokens, a
 * coding agent's tool definitions) behind 200 sessions of their own, fed
 * to a sketch as a node sets it up. The prompt's end -- where its traffic
 * branches -- is reported as the most shared branch point, at its full
 * depth, within the 256 entries a node reports. */
static void test_a_20k_token_shared_prompt_at_full_scale(void)
{
    enum { BT = 64, PROMPT = 313, TAIL = 6 };
    uint32_t depth = rm_hotset_depth(BT);
    rm_hotset h;
    REQUIRE(rm_hotset_init(&h, BT, depth, 0.01, 10000, rm_hotset_capacity(depth), 0) == 0);
    static uint32_t tok[(PROMPT + TAIL) * BT];
    size_t n = sizeof tok / sizeof tok[0];
    for (uint64_t s = 0; s < 200; s++) {
        for (size_t t = 0; t < n; t++)
            tok[t] = t < PROMPT * BT ? (uint32_t)(5000 + t) : (uint32_t)(rm_mix64(s * 131 + t));
        rm_hotset_add(&h, "m", 1, tok, n, 0);
    }
    uint64_t end = rm_prefix_ns_hash("m", 1);
    for (int b = 0; b < PROMPT; b++)
        end = rm_prefix_chain(end, tok + b * BT, BT);
    rm_hot_entry top[256];
    double total;
    size_t k = rm_hotset_top(&h, 0.01, 0, top, 256, &total);
    REQUIRE(k > 0);
    CHECK(top[0].hash == end);
    CHECK_EQ(top[0].blocks, PROMPT);
    CHECK(top[0].count > 0.99 * total && top[0].other > 0.5 * top[0].count);
    rm_hotset_destroy(&h);
}

static void test_branch_points_are_reported_before_long_chains(void)
{
    enum { DEEP = 300, VERSIONS = 3 };
    uint32_t depth = rm_hotset_depth(B);
    rm_hotset h;
    REQUIRE(rm_hotset_init(&h, B, depth, 0.01, 10000, rm_hotset_capacity(depth), 0) == 0);
    static uint32_t tok[(DEEP + 4) * B];
    uint64_t ends[VERSIONS];
    for (uint64_t i = 0; i < 300; i++) {
        /* Versions 0, 1, 2 in 60/30/10%, each a DEEP-block prompt of its
         * own, then a conversation of its own. */
        uint32_t v = i % 10 < 6 ? 0 : i % 10 < 9 ? 1 : 2;
        size_t n = (DEEP + 3) * B;
        for (size_t t = 0; t < n; t++)
            tok[t] = t < DEEP * B ? (uint32_t)(v * 1000000 + t)
                                  : (uint32_t)(rm_mix64(i * 7919 + t) % 100000);
        rm_hotset_add(&h, "m", 1, tok, n, 0);
        ends[v] = prefix_hash(tok, DEEP);
    }
    rm_hot_entry top[256];
    double total;
    size_t k = rm_hotset_top(&h, 0.01, 0, top, 256, &total);
    CHECK_EQ(k, 256);
    for (int v = 0; v < VERSIONS; v++) {
        const rm_hot_entry *e = NULL;
        for (size_t i = 0; i < k; i++)
            if (top[i].hash == ends[v])
                e = &top[i];
        CHECK(e != NULL);
        if (e)
            CHECK(e->blocks == DEEP && e->other > 0.5 * e->count);
    }
    rm_hotset_destroy(&h);
}

/* A purge ends with the table at most half full, so the next one is a
 * quarter of the table's inserts away. Warm chains filling most of the
 * table, then a stream of distinct requests each adding one cold entry:
 * a purge that only dropped what was cold would leave the table just
 * under its threshold and rebuild it every few requests. */
static void test_purge_leaves_half_the_table_free(void)
{
    rm_hotset h;
    REQUIRE(rm_hotset_init(&h, B, 512, 0.01, 10000, 4096, 0) == 0);
    static uint32_t tok[512 * B];
    for (int rep = 0; rep < 10; rep++)
        for (uint64_t id = 1; id <= 6; id++) /* 6 chains of 500 blocks: 3,000 warm */
            rm_hotset_add(&h, "m", 1, tok, request(tok, 0, id, 500), 0);
    size_t cap = h.mask + 1, purges = 0, added = 0;
    for (uint64_t id = 100; id < 2100; id++) {
        size_t before = h.used;
        rm_hotset_add(&h, "m", 1, tok, request(tok, 0, id, 4), 0);
        added++;
        if (h.used <= before) {
            purges++;
            CHECK(h.used * 2 <= cap + 2);
        }
    }
    CHECK(purges > 0);
    CHECK(purges <= added / (cap / 4) + 1);
    rm_hotset_destroy(&h);
}

int main(void)
{
    RUN(test_finds_shared_prompt);
    RUN(test_noise_never_crowds_out_the_shared_chain);
    RUN(test_decays);
    RUN(test_one_conversation_never_branches);
    RUN(test_shared_prompt_branches_at_its_end);
    RUN(test_leader_is_displaced);
    RUN(test_prefix_hash_deterministic);
    RUN(test_full_table_of_warm_prefixes);
    RUN(test_depth_reaches_past_long_prompts);
    RUN(test_branch_points_are_reported_before_long_chains);
    RUN(test_a_20k_token_shared_prompt_at_full_scale);
    RUN(test_purge_leaves_half_the_table_free);
    return rm_t_report();
}
