/* Unit tests for the routing key and the hot-prefix rule (router/route_key.h):
 * which block a request is keyed on, and how the nodes' reports of one
 * prefix add up to a hot set. */
#include <string.h>

#include "check.h"
#include "prefix_key.h"
#include "route_key.h"
#include "util.h"

#define B 4 /* tokens per key block in these tests */

static rm_router_config config(void)
{
    rm_router_config c;
    rm_router_config_defaults(&c);
    c.key_block_tokens = B;
    c.max_key_blocks = 8;
    return c;
}

/* Tokens of a request: `shared` tokens of a common prompt, then tokens of
 * conversation `conv`. */
static void request(uint32_t *t, size_t n, size_t shared, uint32_t conv)
{
    for (size_t i = 0; i < n; i++)
        t[i] = i < shared ? 1000 + (uint32_t)i : conv * 100000 + (uint32_t)i;
}

static uint64_t chain(const char *ns, const uint32_t *t, size_t blocks)
{
    uint64_t h = rm_prefix_ns_hash(ns, strlen(ns));
    for (size_t b = 0; b < blocks; b++)
        h = rm_prefix_chain(h, t + b * B, B);
    return h;
}

/* The hot set of t's first two blocks, sorted. */
static void hot_first_two(const uint32_t *t, uint64_t hot[2])
{
    uint64_t a = chain("m", t, 1), b = chain("m", t, 2);
    hot[0] = a < b ? a : b;
    hot[1] = a < b ? b : a;
}

static void test_no_hot_set_keys_on_the_first_block(void)
{
    rm_router_config c = config();
    uint32_t a[20], b[20], kt = 0;
    request(a, 20, 4, 1);
    request(b, 20, 4, 2); /* same first block, different conversation */
    uint64_t ka = rm_route_key(&c, NULL, 0, "m", a, 20, &kt);
    CHECK_EQ(kt, B);
    CHECK(ka == chain("m", a, 1));
    CHECK(rm_route_key(&c, NULL, 0, "m", b, 20, &kt) == ka);
    CHECK(rm_route_key(&c, NULL, 0, "other", a, 20, &kt) != ka); /* namespaces apart */
}

static void test_key_steps_past_the_deepest_hot_prefix(void)
{
    rm_router_config c = config();
    uint32_t a[20], b[20], a2[24], kt = 0;
    request(a, 20, 8, 1);
    request(b, 20, 8, 2);
    request(a2, 24, 8, 1); /* the next turn of a's conversation */
    uint64_t hot[2];
    hot_first_two(a, hot);
    uint64_t ka = rm_route_key(&c, hot, 2, "m", a, 20, &kt);
    CHECK_EQ(kt, 3 * B);
    CHECK(ka == chain("m", a, 3));
    CHECK(rm_route_key(&c, hot, 2, "m", b, 20, &kt) != ka);  /* conversations apart */
    CHECK(rm_route_key(&c, hot, 2, "m", a2, 24, &kt) == ka); /* turns together */
    /* Only the deeper prefix hot: the same key (deepest counts). */
    uint64_t deep = chain("m", a, 2);
    CHECK(rm_route_key(&c, &deep, 1, "m", a, 20, &kt) == ka);
    CHECK_EQ(kt, 3 * B);
}

static void test_short_or_all_hot_requests_spread(void)
{
    rm_router_config c = config();
    uint32_t a[3] = {1, 2, 3}, b[3] = {1, 2, 4}, kt = 0;
    /* Shorter than a block: keyed on all of it. */
    uint64_t ka = rm_route_key(&c, NULL, 0, "m", a, 3, &kt);
    CHECK_EQ(kt, 3);
    CHECK(rm_route_key(&c, NULL, 0, "m", b, 3, &kt) != ka);
    /* Hot all through, plus a partial block: keyed on all of it. */
    uint32_t x[10], y[10];
    request(x, 10, 8, 1);
    request(y, 10, 8, 2);
    uint64_t hot[2];
    hot_first_two(x, hot);
    uint64_t kx = rm_route_key(&c, hot, 2, "m", x, 10, &kt);
    CHECK_EQ(kt, 10);
    CHECK(kx != chain("m", x, 2));
    CHECK(rm_route_key(&c, hot, 2, "m", y, 10, &kt) != kx);
}

static void test_max_key_blocks_bounds_the_depth(void)
{
    rm_router_config c = config();
    c.max_key_blocks = 2;
    uint32_t a[20], kt = 0;
    request(a, 20, 20, 0);
    uint64_t hot[2];
    hot_first_two(a, hot);
    /* Both looked-at blocks hot: spread, though block 3 exists. */
    rm_route_key(&c, hot, 2, "m", a, 20, &kt);
    CHECK_EQ(kt, 20);
}

/* By default keys look as deep as the nodes' sketches: past a shared prompt
 * of 64k tokens even at 4-token blocks (16,000 blocks; the old bound was
 * 1,024), in one pass over the prompt. */
static void test_default_depth_reaches_past_a_64k_prompt(void)
{
    rm_router_config c;
    rm_router_config_defaults(&c);
    c.key_block_tokens = B;
    CHECK_EQ(c.max_key_blocks, 0); /* auto */
    enum { PROMPT = 64000, N = PROMPT + 3 * B };
    static uint32_t a[N], b[N];
    request(a, N, PROMPT, 1);
    request(b, N, PROMPT, 2);
    uint64_t hot = chain("m", a, PROMPT / B);
    uint32_t kt;
    uint64_t ka = rm_route_key(&c, &hot, 1, "m", a, N, &kt);
    CHECK_EQ(kt, PROMPT + B);
    CHECK(ka == chain("m", a, PROMPT / B + 1));
    CHECK(rm_route_key(&c, &hot, 1, "m", b, N, &kt) != ka); /* conversations apart */
    /* A configured depth still bounds it. */
    c.max_key_blocks = 1024;
    rm_route_key(&c, &hot, 1, "m", a, N, &kt);
    CHECK_EQ(kt, B);
}

static void test_fixed_mode_keys_on_the_first_n_tokens(void)
{
    rm_router_config c = config();
    c.key_mode = RM_KEY_FIXED;
    c.fixed_key_tokens = 6;
    uint32_t a[20], b[20], kt = 0;
    request(a, 20, 6, 1);
    request(b, 20, 6, 2);
    uint64_t ka = rm_route_key(&c, NULL, 0, "m", a, 20, &kt);
    CHECK_EQ(kt, 6);
    CHECK(rm_route_key(&c, NULL, 0, "m", b, 20, &kt) == ka);
    rm_route_key(&c, NULL, 0, "m", a, 5, &kt);
    CHECK_EQ(kt, 5);
}

static void test_is_hot_searches_the_sorted_set(void)
{
    uint64_t hot[] = {3, 9, 27, 81};
    CHECK(rm_route_is_hot(hot, 4, 3));
    CHECK(rm_route_is_hot(hot, 4, 81));
    CHECK(!rm_route_is_hot(hot, 4, 10));
    CHECK(!rm_route_is_hot(hot, 4, 100));
    CHECK(!rm_route_is_hot(hot, 0, 3));
}

static void test_hot_share(void)
{
    CHECK(rm_route_hot_share(0.3, 4) == 0.3);  /* configured */
    CHECK(rm_route_hot_share(0, 5) == 0.1);    /* half a node's fair share */
    CHECK(rm_route_hot_share(0, 100) == 0.02); /* floor */
    CHECK(rm_route_hot_share(0, 0) == 1.0);    /* no healthy node: nothing hot */
}

static radixmesh_v1_HotPrefix report(uint64_t lead, double via_lead, double other)
{
    radixmesh_v1_HotPrefix e = radixmesh_v1_HotPrefix_init_zero;
    e.hash = 42;
    e.blocks = 3;
    e.requests = via_lead + other + 1; /* +1: a request that ended here */
    e.lead = lead;
    e.lead_requests = via_lead;
    e.other_requests = other;
    return e;
}

static void test_one_conversation_on_one_node(void)
{
    radixmesh_v1_HotPrefix e[1] = {report(7, 20, 0)};
    CHECK(rm_route_branching(e, 1) == 0);
}

static void test_a_node_of_its_own_branches(void)
{
    radixmesh_v1_HotPrefix e[1] = {report(7, 12, 8)};
    CHECK(rm_route_branching(e, 1) == 8);
}

/* Two conversations behind one prompt, one on each node: neither node sees
 * a branch, the cluster does -- the smaller leader counts as branching. */
static void test_leaders_differing_across_nodes(void)
{
    radixmesh_v1_HotPrefix e[3] = {report(7, 10, 0), report(9, 4, 1), report(7, 5, 0)};
    /* Overall leader 7 (15 requests); node 2's leader 9 (4) plus its own
     * other (1) branch. */
    CHECK(rm_route_branching(e, 3) == 5);
    /* The same conversation on two nodes (after a failover): one leader. */
    radixmesh_v1_HotPrefix f[2] = {report(7, 10, 0), report(7, 3, 0)};
    CHECK(rm_route_branching(f, 2) == 0);
}

static void test_no_leader_reported(void)
{
    /* A node too old to report continuations: nothing branches. */
    radixmesh_v1_HotPrefix e[2] = {report(0, 0, 0), report(0, 0, 0)};
    CHECK(rm_route_branching(e, 2) == 0);
}

/* The set: summed over nodes, at least share of the total, and branching. */
static void test_hot_set_sums_nodes_and_needs_branching(void)
{
    radixmesh_v1_HotPrefix e[5];
    e[0] = report(7, 10, 0); /* prompt 42 on node 0: leader 7 */
    e[1] = report(9, 10, 0); /* prompt 42 on node 1: leader 9, a branch */
    e[2] = report(7, 30, 0); /* one long chat, 50, on one node: no branch */
    e[2].hash = 50;
    e[3] = report(7, 2, 2); /* a rare prefix, 60: branches, too few requests */
    e[3].hash = 60;
    e[4] = report(7, 5, 0); /* prompt 42 again, a third node */
    uint64_t out[5];
    /* 42: 11 + 11 + 6 = 28 of 100 requests, 10 of them branching. */
    size_t n = rm_route_hot_set(e, 5, 100, 0.25, out);
    CHECK_EQ(n, 1);
    CHECK(out[0] == 42);
    /* Share above what 42 carries: nothing. */
    CHECK_EQ(rm_route_hot_set(e, 5, 100, 0.3, out), 0);
    /* No traffic counted: nothing. */
    CHECK_EQ(rm_route_hot_set(e, 5, 0, 0.25, out), 0);
    /* A low share: 60 too (5 of 100, branching 2 >= 0.5), never 50. */
    n = rm_route_hot_set(e, 5, 100, 0.05, out);
    CHECK_EQ(n, 2);
    CHECK(out[0] == 42 && out[1] == 60);
}

int main(void)
{
    RUN(test_no_hot_set_keys_on_the_first_block);
    RUN(test_key_steps_past_the_deepest_hot_prefix);
    RUN(test_short_or_all_hot_requests_spread);
    RUN(test_max_key_blocks_bounds_the_depth);
    RUN(test_default_depth_reaches_past_a_64k_prompt);
    RUN(test_fixed_mode_keys_on_the_first_n_tokens);
    RUN(test_is_hot_searches_the_sorted_set);
    RUN(test_hot_share);
    RUN(test_one_conversation_on_one_node);
    RUN(test_a_node_of_its_own_branches);
    RUN(test_leaders_differing_across_nodes);
    RUN(test_no_leader_reported);
    RUN(test_hot_set_sums_nodes_and_needs_branching);
    return rm_t_report();
}
