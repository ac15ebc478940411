/* cluster_wait.h -- waiting, with a deadline, until a router's ClusterStats
 * says something (the C integration tests and the router benchmark). */
#ifndef RM_TEST_CLUSTER_WAIT_H
#define RM_TEST_CLUSTER_WAIT_H

#include "cache_client.h"
#include "daemon.h"

/* Polls ClusterStats until pred(stats, arg) holds or timeout_ms passes.
 * Returns 1 if it held. Each poll is a round trip: no sleeping. */
static int cw_wait_for(rm_cache_client *cc, int (*pred)(const rm_cc_cluster *, void *), void *arg,
                       int timeout_ms)
{
    long long deadline = td_now_ms() + td_ms(timeout_ms); /* x10 under RM_TEST_SLOW */
    while (td_now_ms() < deadline) {
        rm_cc_cluster c;
        char msg[256];
        int ok = rm_cc_cluster_stats(cc, &c, msg, sizeof msg) == GRPC_STATUS_OK && pred(&c, arg);
        rm_cc_cluster_free(&c);
        if (ok)
            return 1;
    }
    return 0;
}

/* Predicate: exactly *(uint32_t *)arg nodes on the ring. */
static int cw_healthy_is(const rm_cc_cluster *c, void *arg)
{
    return c->cs.healthy_nodes == *(uint32_t *)arg;
}

/* Starts a router (argv as for td_start), connects cc to it (call deadline
 * call_timeout_ms) and waits up to timeout_ms until `nodes` nodes are on
 * its ring. Returns 1 once they are; 0 if the router did not start or the
 * ring did not fill in time (cc is then open if the router started). */
static inline int cw_start_router(test_daemon *r, const char *const *argv, rm_cache_client *cc,
                                  int call_timeout_ms, uint32_t nodes, int timeout_ms)
{
    if (td_start(r, argv) != 0 || rm_cc_init_router(cc, r->addr, call_timeout_ms) != 0)
        return 0;
    return cw_wait_for(cc, cw_healthy_is, &nodes, timeout_ms);
}

#endif
