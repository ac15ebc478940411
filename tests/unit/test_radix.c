/* Unit tests for common/radix.c: page-aligned matching, node split,
 * namespaces, lock accounting, eviction order (LRU, LFU, LFU-DA, GDSF) and
 * TTL expiry. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "radix.h"

#define PT 4

static uint32_t next_page_id;

static void check_tree(const rm_radix *t)
{
    char err[256] = "";
    int rc = rm_radix_check(t, NULL, 0, NULL, 0, err, sizeof err);
    if (rc)
        fprintf(stderr, "invariant: %s\n", err);
    CHECK_EQ(rc, 0);
}

/* Inserts tokens the way the cache does: match with split, attach the rest. */
static rm_radix_node *put(rm_radix *t, rm_radix_node *root, const uint32_t *tok, size_t n,
                          uint64_t now)
{
    rm_radix_node *last;
    size_t aligned = n / PT * PT;
    size_t have =
        rm_radix_match(t, root, tok, aligned, RM_MATCH_TOUCH | RM_MATCH_SPLIT_DIVERGE, now, &last);
    uint32_t np = (uint32_t)((aligned - have) / PT);
    if (np == 0)
        return last;
    uint32_t pages[64];
    for (uint32_t i = 0; i < np; i++)
        pages[i] = next_page_id++;
    return rm_radix_attach(t, last, tok + have, pages, np, now);
}

static size_t match(rm_radix *t, rm_radix_node *root, const uint32_t *tok, size_t n)
{
    rm_radix_node *last;
    return rm_radix_match(t, root, tok, n, 0, 0, &last);
}

static void collect(void *ctx, const uint32_t *pages, uint32_t n)
{
    uint32_t *count = ctx;
    (void)pages;
    *count += n;
}

/* A tree of PT-token pages evicting by policy, page ids from 0; returns
 * the root of its namespace "m". */
static rm_radix_node *open_tree(rm_radix *t, rm_evict_policy policy)
{
    next_page_id = 0;
    REQUIRE(rm_radix_init(t, PT, policy, 8) == 0);
    rm_radix_node *root;
    REQUIRE(rm_radix_root(t, "m", 1, 1, &root) == 0);
    return root;
}

/* The tree's page accounting: pages no one holds, pages held. */
static void pages_are(const rm_radix *t, uint64_t evictable, uint64_t protected)
{
    CHECK_EQ(t->evictable_pages, evictable);
    CHECK_EQ(t->protected_pages, protected);
}

static void close_tree(rm_radix *t)
{
    check_tree(t);
    rm_radix_destroy(t);
}

/* Two sequences sharing their first page (FORK) or two (SPLIT), then
 * diverging. */
static const uint32_t FORK_A[8] = {1, 1, 1, 1, 2, 2, 2, 2}, FORK_B[8] = {1, 1, 1, 1, 3, 3, 3, 3};
static const uint32_t SPLIT_A[12] = {1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
static const uint32_t SPLIT_B[12] = {1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4};

static void test_page_alignment(void)
{
    rm_radix t;
    rm_radix_node *root = open_tree(&t, RM_EVICT_LRU);
    uint32_t a[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    put(&t, root, a, 10, 0); /* caches 8 tokens = 2 pages */
    pages_are(&t, 2, 0);
    CHECK_EQ(match(&t, root, a, 10), 8);
    CHECK_EQ(match(&t, root, a, 7), 4); /* only whole pages match */
    CHECK_EQ(match(&t, root, a, 3), 0);
    uint32_t b[8] = {1, 2, 3, 4, 5, 6, 7, 99};
    CHECK_EQ(match(&t, root, b, 8), 4); /* diverges inside page 2 */
    close_tree(&t);
}

static void test_split(void)
{
    rm_radix t;
    rm_radix_node *root = open_tree(&t, RM_EVICT_LRU);
    const uint32_t *a = SPLIT_A, *b = SPLIT_B;
    rm_radix_node *la = put(&t, root, a, 12, 0);
    CHECK_EQ(la->npages, 3);
    CHECK_EQ(t.nodes, 2); /* root + one edge */
    rm_radix_node *lb = put(&t, root, b, 12, 0);
    /* a's edge split into [2 pages] -> {[1 page of 3s], [1 page of 4s]} */
    CHECK_EQ(t.nodes, 4);
    CHECK_EQ(la->npages, 1);
    CHECK_EQ(lb->npages, 1);
    CHECK(la->parent == lb->parent);
    CHECK_EQ(la->parent->npages, 2);
    CHECK_EQ(la->parent->nchildren, 2);
    CHECK_EQ(rm_radix_node_tokens(la)[0], 3);
    pages_are(&t, 4, 0);
    CHECK_EQ(match(&t, root, a, 12), 12);
    CHECK_EQ(match(&t, root, b, 12), 12);
    /* Page ids follow their tokens through the split. */
    uint32_t path[8];
    CHECK_EQ(rm_radix_path_pages(&t, la, path, 8), 3);
    CHECK_EQ(path[0], 0);
    CHECK_EQ(path[1], 1);
    CHECK_EQ(path[2], 2);
    CHECK_EQ(rm_radix_path_pages(&t, lb, path, 8), 3);
    CHECK_EQ(path[2], 3);
    CHECK_EQ(rm_radix_depth_tokens(&t, lb), 12);
    /* A query ending inside an edge does not split it without SPLIT. */
    rm_radix_node *last;
    uint64_t nodes = t.nodes;
    CHECK_EQ(rm_radix_match(&t, root, a, 4, RM_MATCH_SPLIT_DIVERGE, 0, &last), 4);
    CHECK_EQ(t.nodes, nodes);
    CHECK(last == root);
    CHECK_EQ(rm_radix_match(&t, root, a, 4, RM_MATCH_SPLIT, 0, &last), 4);
    CHECK_EQ(t.nodes, nodes + 1);
    CHECK_EQ(last->npages, 1);
    check_tree(&t);
    /* A duplicate attach is refused. */
    uint32_t pg = 77;
    errno = 0;
    CHECK(rm_radix_attach(&t, last, a + 4, &pg, 1, 0) == NULL);
    CHECK_EQ(errno, EEXIST);
    close_tree(&t);
}

static void test_namespaces_isolated(void)
{
    rm_radix t;
    REQUIRE(rm_radix_init(&t, PT, RM_EVICT_LRU, 2) == 0);
    rm_radix_node *r1, *r2, *r3;
    REQUIRE(rm_radix_root(&t, "llama", 5, 1, &r1) == 0);
    REQUIRE(rm_radix_root(&t, "qwen", 4, 1, &r2) == 0);
    CHECK(r1 != r2);
    CHECK_EQ(rm_radix_root(&t, "third", 5, 1, &r3), -ENOSPC);
    CHECK_EQ(rm_radix_root(&t, "absent", 6, 0, &r3), -ENOENT);
    CHECK_EQ(rm_radix_root(&t, "llama", 5, 0, &r3), 0);
    CHECK(r3 == r1);
    uint32_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    put(&t, r1, a, 8, 0);
    CHECK_EQ(match(&t, r1, a, 8), 8);
    CHECK_EQ(match(&t, r2, a, 8), 0);
    put(&t, r2, a, 8, 0);
    CHECK_EQ(t.nodes, 4); /* same tokens, separate nodes */
    close_tree(&t);
}

/* Reclaim frees exactly the namespaces with no children and no references;
 * a freed slot (and its index) serves the next new namespace, and lookups
 * of the freed name miss. */
static void test_namespace_reclaim(void)
{
    rm_radix t;
    REQUIRE(rm_radix_init(&t, PT, RM_EVICT_LRU, 3) == 0);
    rm_radix_node *full, *held, *empty, *r;
    REQUIRE(rm_radix_root(&t, "full", 4, 1, &full) == 0);
    REQUIRE(rm_radix_root(&t, "held", 4, 1, &held) == 0);
    REQUIRE(rm_radix_root(&t, "empty", 5, 1, &empty) == 0);
    uint32_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    put(&t, full, a, 8, 0);
    rm_radix_lock(&t, held);
    uint32_t slot = empty->ns;
    CHECK_EQ(rm_radix_root(&t, "new", 3, 1, &r), -ENOSPC);
    CHECK_EQ(rm_radix_reclaim(&t), 1);
    CHECK_EQ(t.nns, 2);
    check_tree(&t);
    CHECK_EQ(rm_radix_root(&t, "empty", 5, 0, &r), -ENOENT);
    REQUIRE(rm_radix_root(&t, "new", 3, 1, &r) == 0);
    CHECK_EQ(r->ns, slot);
    CHECK_EQ(match(&t, full, a, 8), 8);
    check_tree(&t);
    /* Emptied by eviction and unlocked: both go; trailing slots shrink. */
    uint32_t freed = 0;
    rm_radix_evict(&t, 100, collect, &freed);
    CHECK_EQ(freed, 2);
    rm_radix_unlock(&t, held);
    CHECK_EQ(rm_radix_reclaim(&t), 3);
    CHECK_EQ(t.nns, 0);
    CHECK_EQ(t.ns_len, 0);
    CHECK_EQ(t.nodes, 0);
    check_tree(&t);
    REQUIRE(rm_radix_root(&t, "again", 5, 1, &r) == 0);
    CHECK_EQ(r->ns, 0);
    close_tree(&t);
}

static void test_lock_accounting(void)
{
    rm_radix t;
    rm_radix_node *root = open_tree(&t, RM_EVICT_LRU);
    rm_radix_node *la = put(&t, root, SPLIT_A, 12, 0);
    rm_radix_node *lb = put(&t, root, SPLIT_B, 12, 0);
    rm_radix_lock(&t, la);
    pages_are(&t, 1, 3); /* lb; la + shared parent */
    rm_radix_lock(&t, lb);
    pages_are(&t, 0, 4);
    CHECK_EQ(la->parent->lock_ref, 2);
    const rm_radix_node *held[2] = {la, lb};
    char err[128];
    CHECK_EQ(rm_radix_check(&t, held, 2, NULL, 0, err, sizeof err), 0);
    /* With only one holder declared the exact check must complain. */
    CHECK_EQ(rm_radix_check(&t, held, 1, NULL, 0, err, sizeof err), -EINVAL);
    CHECK(rm_radix_next_victim(&t) == NULL); /* everything is protected */
    uint32_t freed = 0;
    CHECK_EQ(rm_radix_evict(&t, 10, collect, &freed), 0);
    rm_radix_unlock(&t, la);
    CHECK_EQ(t.protected_pages, 3);
    CHECK_EQ(rm_radix_evict(&t, 10, collect, &freed), 1); /* only la can go */
    CHECK_EQ(match(&t, root, SPLIT_A, 12), 8);
    CHECK_EQ(match(&t, root, SPLIT_B, 12), 12);
    rm_radix_unlock(&t, lb);
    pages_are(&t, 3, 0);
    close_tree(&t);
}

static void test_lru_order(void)
{
    rm_radix t;
    rm_radix_node *root = open_tree(&t, RM_EVICT_LRU);
    uint32_t s[4][4] = {{1, 1, 1, 1}, {2, 2, 2, 2}, {3, 3, 3, 3}, {4, 4, 4, 4}};
    for (int i = 0; i < 4; i++)
        put(&t, root, s[i], 4, 0);
    /* Touch 0 and 2: eviction order is then 1, 3, 0, 2. */
    rm_radix_node *last;
    rm_radix_match(&t, root, s[0], 4, RM_MATCH_TOUCH, 0, &last);
    rm_radix_match(&t, root, s[2], 4, RM_MATCH_TOUCH, 0, &last);
    int expect[4] = {1, 3, 0, 2};
    for (int i = 0; i < 4; i++) {
        const rm_radix_node *next = rm_radix_next_victim(&t);
        REQUIRE(next != NULL);
        CHECK_EQ(rm_radix_node_tokens(next)[0], s[expect[i]][0]);
        uint32_t freed = 0;
        CHECK_EQ(rm_radix_evict(&t, 1, collect, &freed), 1);
        CHECK_EQ(match(&t, root, s[expect[i]], 4), 0);
        for (int j = i + 1; j < 4; j++)
            CHECK_EQ(match(&t, root, s[expect[j]], 4), 4);
        check_tree(&t);
    }
    CHECK(rm_radix_next_victim(&t) == NULL);
    close_tree(&t);
}

static void test_lfu_order(void)
{
    rm_radix t;
    rm_radix_node *root = open_tree(&t, RM_EVICT_LFU);
    uint32_t s[3][4] = {{1, 1, 1, 1}, {2, 2, 2, 2}, {3, 3, 3, 3}};
    for (int i = 0; i < 3; i++)
        put(&t, root, s[i], 4, 0);
    /* Hits: s0 x3, s1 x1, s2 x2 -> LFU evicts s1, then s2, then s0 even
     * though s0 was used least recently. */
    rm_radix_node *last;
    int hits[3] = {3, 1, 2};
    for (int i = 0; i < 3; i++)
        for (int h = 0; h < hits[i]; h++)
            rm_radix_match(&t, root, s[i], 4, RM_MATCH_TOUCH | RM_MATCH_HIT, 0, &last);
    int expect[3] = {1, 2, 0};
    for (int i = 0; i < 3; i++) {
        uint32_t freed = 0;
        CHECK_EQ(rm_radix_evict(&t, 1, collect, &freed), 1);
        CHECK_EQ(match(&t, root, s[expect[i]], 4), 0);
        check_tree(&t);
    }
    close_tree(&t);
}

/* LFU-DA: an entry hit 3 times long ago loses to entries hit once
 * recently, once the age L has passed it; plain LFU keeps it for ever. */
static void check_aging(rm_evict_policy policy, int old_survives)
{
    rm_radix t;
    rm_radix_node *root = open_tree(&t, policy);
    uint32_t old[4] = {9, 9, 9, 9};
    put(&t, root, old, 4, 0);
    rm_radix_node *last;
    for (int h = 0; h < 3; h++) /* K = L + f = 0 + 4 */
        rm_radix_match(&t, root, old, 4, RM_MATCH_TOUCH | RM_MATCH_HIT, 0, &last);
    int old_evicted_at = -1;
    for (uint32_t i = 0; i < 6; i++) {
        uint32_t x[4] = {i, i, i, i};
        put(&t, root, x, 4, 0); /* K = L + 1, then hit: L + 2 */
        rm_radix_match(&t, root, x, 4, RM_MATCH_TOUCH | RM_MATCH_HIT, 0, &last);
        uint32_t freed = 0;
        CHECK_EQ(rm_radix_evict(&t, 1, collect, &freed), 1);
        if (old_evicted_at < 0 && match(&t, root, old, 4) == 0)
            old_evicted_at = (int)i;
        if (policy == RM_EVICT_LFU_DA && i == 0)
            CHECK_EQ(t.age, 2 * RM_PRIO_ONE); /* x0 went: K = 0 + 2 */
        check_tree(&t);
    }
    /* The second round: x1's K = 2 + 2 ties the old entry's 4, and the
     * tie goes to the least recently used. */
    CHECK_EQ(old_evicted_at, old_survives ? -1 : 1);
    close_tree(&t);
}

static void test_lfu_da_ages(void)
{
    check_aging(RM_EVICT_LFU_DA, 0);
    check_aging(RM_EVICT_LFU, 1);
}

/* GDSF: of two leaves hit as often, the shallower goes first, even when it
 * is the more recent; LFU-DA, blind to depth, takes the older. */
static void check_depth(rm_evict_policy policy, int deep_first)
{
    rm_radix t;
    rm_radix_node *root = open_tree(&t, policy);
    uint32_t deep[20] = {1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5};
    uint32_t shallow[4] = {7, 7, 7, 7};
    put(&t, root, deep, 16, 0);
    rm_radix_node *leaf = put(&t, root, deep, 20, 1); /* 1 page 16 tokens deep */
    put(&t, root, shallow, 4, 2);
    /* The 4-page prefix is a leaf no more; the two leaves have f = 1. */
    CHECK_EQ(leaf->prio, policy == RM_EVICT_GDSF ? 65536u + 2 * 16 + 4 : 65536u);
    uint32_t freed = 0;
    CHECK_EQ(rm_radix_evict(&t, 1, collect, &freed), 1);
    CHECK_EQ(match(&t, root, deep, 20), deep_first ? 16 : 20);
    CHECK_EQ(match(&t, root, shallow, 4), deep_first ? 4 : 0);
    close_tree(&t);
}

static void test_gdsf_weighs_depth(void)
{
    check_depth(RM_EVICT_GDSF, 0);
    check_depth(RM_EVICT_LFU_DA, 1);
}

/* GDSF's cost/size: 1 at depth 0, 2 at a mean depth of D tokens; LFU-DA's
 * is 1 anywhere; both saturate. Names round-trip. */
static void test_policy_weights_and_names(void)
{
    CHECK_EQ(rm_evict_weight(RM_EVICT_GDSF, 0, 0), RM_PRIO_ONE);
    CHECK_EQ(rm_evict_weight(RM_EVICT_GDSF, RM_GDSF_ATTN_TOKENS, 0), 2 * RM_PRIO_ONE);
    CHECK_EQ(rm_evict_weight(RM_EVICT_GDSF, RM_GDSF_ATTN_TOKENS / 2, RM_GDSF_ATTN_TOKENS),
             2 * RM_PRIO_ONE);
    CHECK_EQ(rm_evict_weight(RM_EVICT_LFU_DA, 1u << 30, 1u << 20), RM_PRIO_ONE);
    CHECK(rm_evict_weight(RM_EVICT_GDSF, UINT64_MAX, 0) == UINT64_MAX);
    for (int p = 0; p < RM_EVICT_NPOLICIES; p++) {
        rm_evict_policy got = RM_EVICT_NPOLICIES;
        CHECK_EQ(rm_evict_policy_parse(rm_evict_policy_name((rm_evict_policy)p), &got), 0);
        CHECK_EQ(got, p);
    }
    rm_evict_policy got = RM_EVICT_LRU;
    CHECK_EQ(rm_evict_policy_parse("fifo", &got), -EINVAL);
    CHECK_EQ(rm_evict_policy_parse("LRU", &got), -EINVAL);
    CHECK(rm_evict_policy_name(RM_EVICT_NPOLICIES) == NULL);
    rm_radix t;
    CHECK_EQ(rm_radix_init(&t, PT, RM_EVICT_NPOLICIES, 8), -EINVAL);
}

static void test_evict_climbs_to_parent(void)
{
    rm_radix t;
    rm_radix_node *root = open_tree(&t, RM_EVICT_LRU);
    put(&t, root, FORK_A, 8, 0);
    put(&t, root, FORK_B, 8, 0);
    uint32_t freed = 0;
    /* Wanting 3 pages takes both leaves, then their parent as a new leaf. */
    CHECK_EQ(rm_radix_evict(&t, 3, collect, &freed), 3);
    CHECK_EQ(freed, 3);
    CHECK_EQ(t.nodes, 1);
    pages_are(&t, 0, 0);
    close_tree(&t);
}

static void test_ttl_expire(void)
{
    rm_radix t;
    rm_radix_node *root = open_tree(&t, RM_EVICT_LFU);
    uint32_t fresh[4] = {9, 9, 9, 9};
    uint32_t mixed[8] = {5, 5, 5, 5, 6, 6, 6, 6};
    put(&t, root, FORK_A, 8, 100);
    put(&t, root, FORK_B, 8, 100);
    put(&t, root, fresh, 4, 5000);
    rm_radix_node *locked = put(&t, root, mixed, 8, 100);
    rm_radix_lock(&t, locked);
    uint32_t freed = 0;
    /* Cutoff 1000: both old leaves and then their idle parent go; the
     * fresh entry and the locked one stay. */
    CHECK_EQ(rm_radix_expire(&t, 1000, collect, &freed), 3);
    CHECK_EQ(match(&t, root, FORK_A, 8), 0);
    CHECK_EQ(match(&t, root, fresh, 4), 4);
    CHECK_EQ(match(&t, root, mixed, 8), 8);
    rm_radix_unlock(&t, locked);
    CHECK_EQ(rm_radix_expire(&t, 1000, collect, &freed), 2);
    CHECK_EQ(match(&t, root, mixed, 8), 0);
    close_tree(&t);
}

static void test_many_children(void)
{
    /* Thousands of siblings exercise table growth and backward-shift
     * deletion; every remaining child must stay reachable. */
    rm_radix t;
    rm_radix_node *root = open_tree(&t, RM_EVICT_LRU);
    enum { N = 5000 };
    for (uint32_t i = 0; i < N; i++) {
        uint32_t tok[8] = {7, 7, 7, 7, i, i + 1, i + 2, i + 3};
        put(&t, root, tok, 8, i);
    }
    CHECK_EQ(t.nodes, N + 2);
    uint32_t freed = 0;
    CHECK_EQ(rm_radix_evict(&t, N / 2, collect, &freed), N / 2);
    int ok = 1;
    for (uint32_t i = 0; i < N; i++) {
        uint32_t tok[8] = {7, 7, 7, 7, i, i + 1, i + 2, i + 3};
        size_t want = i < N / 2 ? 4 : 8; /* LRU took the oldest half */
        ok &= match(&t, root, tok, 8) == want;
    }
    CHECK(ok);
    close_tree(&t);
}

int main(void)
{
    RUN(test_page_alignment);
    RUN(test_split);
    RUN(test_namespaces_isolated);
    RUN(test_namespace_reclaim);
    RUN(test_lock_accounting);
    RUN(test_lru_order);
    RUN(test_lfu_order);
    RUN(test_lfu_da_ages);
    RUN(test_gdsf_weighs_depth);
    RUN(test_policy_weights_and_names);
    RUN(test_evict_climbs_to_parent);
    RUN(test_ttl_expire);
    RUN(test_many_children);
    return rm_t_report();
}
