/* Unit tests for the hot-prefix rule of router/router.c: how the nodes'
 * reports of one prefix add up to branching traffic. */
#include <string.h>

#include "check.h"
#include "router.h"

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
    CHECK(rm_router_prefix_branching(e, 1) == 0);
}

static void test_a_node_of_its_own_branches(void)
{
    radixmesh_v1_HotPrefix e[1] = {report(7, 12, 8)};
    CHECK(rm_router_prefix_branching(e, 1) == 8);
}

/* Two conversations behind one prompt, one on each node: neither node sees
 * a branch, the cluster does -- the smaller leader counts as branching. */
static void test_leaders_differing_across_nodes(void)
{
    radixmesh_v1_HotPrefix e[3] = {report(7, 10, 0), report(9, 4, 1), report(7, 5, 0)};
    /* Overall leader 7 (15 requests); node 2's leader 9 (4) plus its own
     * other (1) branch. */
    CHECK(rm_router_prefix_branching(e, 3) == 5);
    /* The same conversation on two nodes (after a failover): one leader. */
    radixmesh_v1_HotPrefix f[2] = {report(7, 10, 0), report(7, 3, 0)};
    CHECK(rm_router_prefix_branching(f, 2) == 0);
}

static void test_no_leader_reported(void)
{
    /* A node too old to report continuations: nothing branches. */
    radixmesh_v1_HotPrefix e[2] = {report(0, 0, 0), report(0, 0, 0)};
    CHECK(rm_router_prefix_branching(e, 2) == 0);
}

int main(void)
{
    RUN(test_one_conversation_on_one_node);
    RUN(test_a_node_of_its_own_branches);
    RUN(test_leaders_differing_across_nodes);
    RUN(test_no_leader_reported);
    return rm_t_report();
}
