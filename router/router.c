/* router.c -- the router's lifecycle: its configuration, creating and
 * destroying it, the gRPC method table, and its own Health.
 *
 * The rest lives by feature (router_internal.h lists the files). */
#include "router.h"

#include <stdlib.h>

#include "grpc/health/v1/health.pb.h"
#include "hotset.h"
#include "pbx.h"
#include "route_key.h"
#include "router_internal.h"
#include "util.h"

void rm_router_config_defaults(rm_router_config *cfg)
{
    *cfg = (rm_router_config){.router_id = "router",
                              /* placement */
                              .load_factor = 1.1,
                              .load_floor = 0,
                              .load_unit = RM_LOAD_WORK,
                              .decode_weight = 1,
                              .vnodes = 256,
                              .choices = 2,
                              .load_half_life_ms = 30000,
                              /* keys: hot_share 0 is auto */
                              .key_mode = RM_KEY_ADAPTIVE,
                              .key_block_tokens = 64,
                              .max_key_blocks = 0,
                              .hot_share = 0,
                              .fixed_key_tokens = 256,
                              /* calls to nodes */
                              .call_timeout_ms = 1000,
                              .health_interval_ms = 1000,
                              .stats_interval_ms = 1000,
                              .charge_ttl_ms = 0,
                              .max_request_tokens = 1048576,
                              .hit_budget = 1};
    rm_outlier_config_defaults(&cfg->outlier);
    rm_breaker_config_defaults(&cfg->worker_breaker);
}

rm_router *rm_router_create(const rm_router_config *cfg)
{
    rm_router *r = rm_xcalloc(1, sizeof *r);
    r->cfg = *cfg;
    if (r->cfg.max_key_blocks == 0)
        r->cfg.max_key_blocks = rm_hotset_depth(r->cfg.key_block_tokens);
    if (r->cfg.max_key_blocks > RM_HOT_MAX_BLOCKS)
        r->cfg.max_key_blocks = RM_HOT_MAX_BLOCKS;
    r->serving = 1;
    r->started_ms = rm_now_ms();
    pthread_mutex_init(&r->workers_mu, NULL);
    return r;
}

void rm_router_destroy(rm_router *r)
{
    for (uint32_t i = 0; i < r->nnodes; i++)
        rt_node_unref(r->nodes[i]);
    for (size_t i = 0; i < RM_ARRAY_LEN(r->retired); i++)
        free(r->retired[i]);
    free(r->nodes);
    free(r->hot);
    rm_shadow_destroy(&r->budget);
    rm_ring_free(&r->ring);
    rm_ring_free(&r->gw_ring);
    free(r->workers);
    pthread_mutex_destroy(&r->workers_mu);
    free(r);
}

void rm_router_set_tuning(rm_router *r, double load_factor, uint32_t call_timeout_ms,
                          uint64_t max_request_tokens)
{
    r->cfg.load_factor = load_factor;
    r->cfg.call_timeout_ms = call_timeout_ms;
    r->cfg.max_request_tokens = max_request_tokens;
}

uint32_t rm_router_healthy_nodes(const rm_router *r)
{
    return r->healthy;
}

void rm_router_set_serving(rm_router *r, int serving)
{
    r->serving = serving;
}

static grpc_status_code do_health(void *ctx, grpc_byte_buffer *req, grpc_byte_buffer **reply,
                                  char *msg, size_t len)
{
    rm_router *r = ctx;
    grpc_health_v1_HealthCheckRequest q = grpc_health_v1_HealthCheckRequest_init_zero;
    if (!rm_pb_decode_bb(req, grpc_health_v1_HealthCheckRequest_fields, &q, msg, len)) {
        pb_release(grpc_health_v1_HealthCheckRequest_fields, &q);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    pb_release(grpc_health_v1_HealthCheckRequest_fields, &q);
    grpc_health_v1_HealthCheckResponse rep = grpc_health_v1_HealthCheckResponse_init_zero;
    /* Ready to route only with at least one node on the ring. */
    rep.status = r->serving && r->healthy
                     ? grpc_health_v1_HealthCheckResponse_ServingStatus_SERVING
                     : grpc_health_v1_HealthCheckResponse_ServingStatus_NOT_SERVING;
    *reply = rm_pb_encode_bb(grpc_health_v1_HealthCheckResponse_fields, &rep);
    return GRPC_STATUS_OK;
}

int rm_router_register(rm_router *r, rm_rpc_server *srv)
{
    r->srv = srv;
    static const struct {
        const char *path;
        rm_unary_async_fn call; /* answered later: Router calls go to nodes */
        rm_unary_fn unary;      /* answered at once from the router's state */
    } methods[] = {
        {"/radixmesh.v1.Router/Route", rt_do_route, NULL},
        {"/radixmesh.v1.Router/Match", rt_do_match, NULL},
        {"/radixmesh.v1.Router/Insert", rt_do_insert, NULL},
        {"/radixmesh.v1.Router/Release", rt_do_release, NULL},
        {"/radixmesh.v1.Router/ClusterStats", NULL, rt_do_cluster_stats},
        {"/grpc.health.v1.Health/Check", NULL, do_health},
    };
    for (size_t i = 0; i < RM_ARRAY_LEN(methods); i++) {
        rm_rpc_method m = {.path = methods[i].path,
                           .kind = methods[i].call ? RM_RPC_UNARY_ASYNC : RM_RPC_UNARY,
                           .unary = methods[i].unary,
                           .unary_async = methods[i].call,
                           .ctx = r};
        if (rm_rpc_server_add_method(srv, &m) != 0)
            return -1;
    }
    return 0;
}
