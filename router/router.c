/* router.c -- the router's lifecycle: its configuration, creating and
 * destroying it, the gRPC method table, and its own Health.
 *
 * The rest lives by feature (router_internal.h lists the files). */
#include "router.h"

#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb.h"
#include "pbx.h"
#include "route_key.h"
#include "router_internal.h"
#include "util.h"

void rm_router_config_defaults(rm_router_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->router_id = "router";
    cfg->load_factor = 1.25;
    cfg->load_floor = 32;
    cfg->vnodes = 256;
    cfg->choices = 2;
    cfg->key_block_tokens = 64;
    cfg->max_key_blocks = 128;
    cfg->hot_share = 0;
    cfg->key_mode = RM_KEY_ADAPTIVE;
    cfg->fixed_key_tokens = 256;
    cfg->call_timeout_ms = 1000;
    cfg->health_interval_ms = 1000;
    cfg->stats_interval_ms = 1000;
    cfg->load_half_life_ms = 1000;
    cfg->max_request_tokens = 1048576;
    rm_outlier_config_defaults(&cfg->outlier);
    rm_breaker_config_defaults(&cfg->worker_breaker);
}

rm_router *rm_router_create(const rm_router_config *cfg)
{
    rm_router *r = rm_xcalloc(1, sizeof *r);
    r->cfg = *cfg;
    if (r->cfg.max_key_blocks > RM_ROUTE_MAX_KEY_BLOCKS)
        r->cfg.max_key_blocks = RM_ROUTE_MAX_KEY_BLOCKS;
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
    const rm_rpc_method methods[] = {
        {.path = "/radixmesh.v1.Router/Route",
         .kind = RM_RPC_UNARY_ASYNC,
         .unary_async = rt_do_route,
         .ctx = r},
        {.path = "/radixmesh.v1.Router/Match",
         .kind = RM_RPC_UNARY_ASYNC,
         .unary_async = rt_do_match,
         .ctx = r},
        {.path = "/radixmesh.v1.Router/Insert",
         .kind = RM_RPC_UNARY_ASYNC,
         .unary_async = rt_do_insert,
         .ctx = r},
        {.path = "/radixmesh.v1.Router/Release",
         .kind = RM_RPC_UNARY_ASYNC,
         .unary_async = rt_do_release,
         .ctx = r},
        {.path = "/radixmesh.v1.Router/ClusterStats",
         .kind = RM_RPC_UNARY,
         .unary = rt_do_cluster_stats,
         .ctx = r},
        {.path = "/grpc.health.v1.Health/Check",
         .kind = RM_RPC_UNARY,
         .unary = do_health,
         .ctx = r},
    };
    for (size_t i = 0; i < RM_ARRAY_LEN(methods); i++)
        if (rm_rpc_server_add_method(srv, &methods[i]) != 0)
            return -1;
    return 0;
}
