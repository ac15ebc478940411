/* node_calls.c -- the router's calls to its nodes: each node's channel
 * (common/rpc_client.h builds it as every radixmesh client does) with its
 * registered methods, unary calls on the router's own completion queue
 * (their replies run on the router thread), and the deadline of a call
 * made for a client. Health checks, Stats polls, peeks, forwarded calls
 * and gateway records all start here. */
#include <grpc/byte_buffer.h>

#include "pbx.h"
#include "router_internal.h"
#include "rpc_client.h"

static const char *const paths[RT_METHODS] = {
    [RT_MATCH] = "/radixmesh.v1.CacheNode/Match",
    [RT_INSERT] = "/radixmesh.v1.CacheNode/Insert",
    [RT_RELEASE] = "/radixmesh.v1.CacheNode/Release",
    [RT_STATS] = "/radixmesh.v1.CacheNode/Stats",
    [RT_HEALTH] = "/grpc.health.v1.Health/Check",
};

void rt_node_channel_open(const rm_router *r, rnode *n)
{
    /* No send limit of the router's own: it forwards what its
     * --max-request-tokens admitted. */
    n->ch = rm_rpc_channel_create(n->address, r->cfg.node_tls, -1);
    for (int m = 0; m < RT_METHODS; m++)
        n->method[m] = grpc_channel_register_call(n->ch, paths[m], NULL, NULL);
}

void rt_node_channel_close(rnode *n)
{
    grpc_channel_destroy(n->ch);
    n->ch = NULL;
}

int rt_call_timeout_ms(uint32_t call_timeout_ms, int64_t client_ms_left, int *cut)
{
    int64_t t = call_timeout_ms;
    *cut = client_ms_left != INT64_MAX && client_ms_left < t + RT_DEADLINE_MARGIN_MS;
    if (*cut)
        t = client_ms_left > RT_DEADLINE_MARGIN_MS ? client_ms_left - RT_DEADLINE_MARGIN_MS : 0;
    return (int)t;
}

int rt_client_call_timeout(const rm_router *r, const rm_rpc_call *client, int *cut)
{
    return rt_call_timeout_ms(r->cfg.call_timeout_ms,
                              client ? rm_rpc_call_ms_left(client) : INT64_MAX, cut);
}

int rt_node_call(const rm_router *r, rnode *n, rt_method m, grpc_slice bytes, int timeout_ms,
                 rm_rpc_reply_fn cb, void *ctx)
{
    grpc_slice s = grpc_slice_ref(bytes);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    int rc = rm_rpc_server_client_call(r->srv, n->ch, n->method[m], bb, timeout_ms, cb, ctx);
    grpc_byte_buffer_destroy(bb);
    return rc;
}

int rt_node_call_msg(const rm_router *r, rnode *n, rt_method m, const pb_msgdesc_t *fields,
                     const void *msg, int timeout_ms, rm_rpc_reply_fn cb, void *ctx)
{
    grpc_byte_buffer *bb = rm_pb_encode_bb(fields, msg);
    if (!bb)
        return -1;
    int rc = rm_rpc_server_client_call(r->srv, n->ch, n->method[m], bb, timeout_ms, cb, ctx);
    grpc_byte_buffer_destroy(bb);
    return rc;
}
