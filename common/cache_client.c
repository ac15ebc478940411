#include "cache_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb.h"
#include "pbx.h"
#include "tls.h"
#include "util.h"

int rm_cc_init(rm_cache_client *cc, const char *target, int timeout_ms)
{
    return rm_cc_init_tls(cc, target, timeout_ms, NULL);
}

int rm_cc_init_tls(rm_cache_client *cc, const char *target, int timeout_ms, const rm_tls *tls)
{
    memset(cc, 0, sizeof *cc);
    if (rm_rpc_client_init_tls(&cc->rpc, target, tls) != 0)
        return -1;
    cc->m_match = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.CacheNode/Match");
    cc->m_insert = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.CacheNode/Insert");
    cc->m_release = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.CacheNode/Release");
    cc->m_stats = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.CacheNode/Stats");
    cc->m_read = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.CacheNode/ReadKV");
    cc->m_write = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.CacheNode/WriteKV");
    cc->m_health = rm_rpc_client_method(&cc->rpc, "/grpc.health.v1.Health/Check");
    cc->timeout_ms = timeout_ms;
    return 0;
}

int rm_cc_init_router(rm_cache_client *cc, const char *target, int timeout_ms)
{
    return rm_cc_init_router_tls(cc, target, timeout_ms, NULL);
}

int rm_cc_init_router_tls(rm_cache_client *cc, const char *target, int timeout_ms,
                          const rm_tls *tls)
{
    if (rm_cc_init_tls(cc, target, timeout_ms, tls) != 0)
        return -1;
    cc->m_match = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.Router/Match");
    cc->m_insert = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.Router/Insert");
    cc->m_release = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.Router/Release");
    cc->m_route = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.Router/Route");
    cc->m_cluster = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.Router/ClusterStats");
    return 0;
}

void rm_cc_close(rm_cache_client *cc)
{
    rm_rpc_client_close(&cc->rpc);
}

static void copy_id(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* Encodes req, calls, decodes the reply into rep. */
static int call(rm_cache_client *cc, void *method, const pb_msgdesc_t *req_fields, const void *req,
                const pb_msgdesc_t *rep_fields, void *rep, char *msg, size_t msglen)
{
    grpc_byte_buffer *bb = rm_pb_encode_bb(req_fields, req), *reply = NULL;
    if (!bb) {
        snprintf(msg, msglen, "cannot encode request");
        return GRPC_STATUS_INTERNAL;
    }
    grpc_status_code st = rm_rpc_unary(&cc->rpc, method, bb, cc->timeout_ms, &reply, msg, msglen);
    grpc_byte_buffer_destroy(bb);
    if (st != GRPC_STATUS_OK)
        return st;
    int ok = rm_pb_decode_bb(reply, rep_fields, rep, msg, msglen);
    grpc_byte_buffer_destroy(reply);
    return ok ? GRPC_STATUS_OK : GRPC_STATUS_INTERNAL;
}

int rm_cc_match(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n, int lease,
                uint32_t lease_ttl_ms, rm_cc_match_reply *out, char *msg, size_t msglen)
{
    return rm_cc_match_out(cc, ns, tokens, n, lease, lease_ttl_ms, 0, out, msg, msglen);
}

int rm_cc_match_out(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n,
                    int lease, uint32_t lease_ttl_ms, uint32_t output_tokens,
                    rm_cc_match_reply *out, char *msg, size_t msglen)
{
    radixmesh_v1_MatchRequest r = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens_view v = {tokens, n};
    r.namespace = (char *)ns;
    rm_pb_tokens_encoder(&r.tokens, &v);
    r.lease = lease;
    r.lease_ttl_ms = lease_ttl_ms;
    r.output_tokens = output_tokens;
    radixmesh_v1_MatchReply rep = radixmesh_v1_MatchReply_init_zero;
    int st = call(cc, cc->m_match, radixmesh_v1_MatchRequest_fields, &r,
                  radixmesh_v1_MatchReply_fields, &rep, msg, msglen);
    memset(out, 0, sizeof *out);
    if (st == GRPC_STATUS_OK) {
        out->matched_tokens = rep.matched_tokens;
        out->lease_id = rep.lease_id;
        copy_id(out->node_id, sizeof out->node_id, rep.node_id);
    }
    pb_release(radixmesh_v1_MatchReply_fields, &rep);
    return st;
}

static void fill_insert(rm_cc_insert_reply *out, const radixmesh_v1_InsertReply *rep)
{
    out->cached_tokens = rep->cached_tokens;
    out->inserted_tokens = rep->inserted_tokens;
    out->dropped_tokens = rep->dropped_tokens;
    copy_id(out->node_id, sizeof out->node_id, rep->node_id);
}

int rm_cc_insert(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n,
                 uint64_t lease_id, const char *node_id, rm_cc_insert_reply *out, char *msg,
                 size_t msglen)
{
    radixmesh_v1_InsertRequest r = radixmesh_v1_InsertRequest_init_zero;
    rm_tokens_view v = {tokens, n};
    r.namespace = (char *)ns;
    rm_pb_tokens_encoder(&r.tokens, &v);
    r.lease_id = lease_id;
    r.node_id = (char *)node_id;
    radixmesh_v1_InsertReply rep = radixmesh_v1_InsertReply_init_zero;
    int st = call(cc, cc->m_insert, radixmesh_v1_InsertRequest_fields, &r,
                  radixmesh_v1_InsertReply_fields, &rep, msg, msglen);
    memset(out, 0, sizeof *out);
    if (st == GRPC_STATUS_OK)
        fill_insert(out, &rep);
    pb_release(radixmesh_v1_InsertReply_fields, &rep);
    return st;
}

int rm_cc_release(rm_cache_client *cc, uint64_t lease_id, const char *node_id, char *msg,
                  size_t msglen)
{
    radixmesh_v1_ReleaseRequest r = radixmesh_v1_ReleaseRequest_init_zero;
    r.lease_id = lease_id;
    r.node_id = (char *)node_id;
    radixmesh_v1_ReleaseReply rep = radixmesh_v1_ReleaseReply_init_zero;
    return call(cc, cc->m_release, radixmesh_v1_ReleaseRequest_fields, &r,
                radixmesh_v1_ReleaseReply_fields, &rep, msg, msglen);
}

int rm_cc_stats(rm_cache_client *cc, radixmesh_v1_NodeStats *out, char *msg, size_t msglen)
{
    radixmesh_v1_StatsRequest r = radixmesh_v1_StatsRequest_init_zero;
    *out = (radixmesh_v1_NodeStats)radixmesh_v1_NodeStats_init_zero;
    return call(cc, cc->m_stats, radixmesh_v1_StatsRequest_fields, &r,
                radixmesh_v1_NodeStats_fields, out, msg, msglen);
}

int rm_cc_health(rm_cache_client *cc, int *serving, char *msg, size_t msglen)
{
    grpc_health_v1_HealthCheckRequest r = grpc_health_v1_HealthCheckRequest_init_zero;
    grpc_health_v1_HealthCheckResponse rep = grpc_health_v1_HealthCheckResponse_init_zero;
    int st = call(cc, cc->m_health, grpc_health_v1_HealthCheckRequest_fields, &r,
                  grpc_health_v1_HealthCheckResponse_fields, &rep, msg, msglen);
    *serving = st == GRPC_STATUS_OK &&
               rep.status == grpc_health_v1_HealthCheckResponse_ServingStatus_SERVING;
    return st;
}

typedef struct bytes_view {
    const uint8_t *p;
    size_t n;
} bytes_view;

static bool encode_bytes(pb_ostream_t *s, const pb_field_t *f, void *const *arg)
{
    const bytes_view *b = *arg;
    if (!b->n)
        return true;
    return pb_encode_tag_for_field(s, f) && pb_encode_string(s, b->p, b->n);
}

int rm_cc_write_kv(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n,
                   uint32_t kv_start, uint64_t lease_id, const uint8_t *kv, size_t kv_len,
                   size_t chunk_bytes, rm_cc_insert_reply *out, char *msg, size_t msglen)
{
    memset(out, 0, sizeof *out);
    rm_rpc_stream s;
    if (rm_rpc_stream_open(&s, &cc->rpc, cc->m_write, cc->timeout_ms) != 0) {
        rm_rpc_stream_finish(&s, msg, msglen);
        snprintf(msg, msglen, "cannot open WriteKV stream");
        return GRPC_STATUS_UNAVAILABLE;
    }
    size_t off = 0;
    int first = 1, send_ok = 1;
    while (send_ok && (first || off < kv_len)) {
        radixmesh_v1_WriteKVChunk m = radixmesh_v1_WriteKVChunk_init_zero;
        rm_tokens_view v = {tokens, n};
        if (first) {
            m.namespace = (char *)ns;
            rm_pb_tokens_encoder(&m.tokens, &v);
            m.lease_id = lease_id;
            m.kv_start_token = kv_start;
        }
        size_t take = kv_len - off < chunk_bytes ? kv_len - off : chunk_bytes;
        bytes_view bv = {kv + off, take};
        m.kv.funcs.encode = encode_bytes;
        m.kv.arg = &bv;
        grpc_byte_buffer *bb = rm_pb_encode_bb(radixmesh_v1_WriteKVChunk_fields, &m);
        off += take;
        first = 0;
        send_ok = bb && rm_rpc_stream_send(&s, bb, off >= kv_len) == 0;
        if (bb)
            grpc_byte_buffer_destroy(bb);
    }
    grpc_byte_buffer *reply = NULL;
    rm_rpc_stream_recv(&s, &reply);
    int st = rm_rpc_stream_finish(&s, msg, msglen);
    if (st == GRPC_STATUS_OK && reply) {
        radixmesh_v1_InsertReply rep = radixmesh_v1_InsertReply_init_zero;
        if (rm_pb_decode_bb(reply, radixmesh_v1_InsertReply_fields, &rep, msg, msglen))
            fill_insert(out, &rep);
        else
            st = GRPC_STATUS_INTERNAL;
        pb_release(radixmesh_v1_InsertReply_fields, &rep);
    }
    if (reply)
        grpc_byte_buffer_destroy(reply);
    return st;
}

typedef struct read_sink {
    uint8_t *out;
    size_t cap, got;
    int overflow;
} read_sink;

static bool decode_chunk_bytes(pb_istream_t *s, const pb_field_t *f, void **arg)
{
    (void)f;
    read_sink *k = *arg;
    size_t len = s->bytes_left;
    if (k->got + len > k->cap) {
        k->overflow = 1;
        return false;
    }
    if (!pb_read(s, k->out + k->got, len))
        return false;
    k->got += len;
    return true;
}

int rm_cc_read_kv(rm_cache_client *cc, uint64_t lease_id, uint32_t start_token, uint32_t max_tokens,
                  uint8_t *out, size_t cap, size_t *got, char *msg, size_t msglen)
{
    *got = 0;
    rm_rpc_stream s;
    if (rm_rpc_stream_open(&s, &cc->rpc, cc->m_read, cc->timeout_ms) != 0) {
        rm_rpc_stream_finish(&s, msg, msglen);
        snprintf(msg, msglen, "cannot open ReadKV stream");
        return GRPC_STATUS_UNAVAILABLE;
    }
    radixmesh_v1_ReadKVRequest r = radixmesh_v1_ReadKVRequest_init_zero;
    r.lease_id = lease_id;
    r.start_token = start_token;
    r.max_tokens = max_tokens;
    grpc_byte_buffer *bb = rm_pb_encode_bb(radixmesh_v1_ReadKVRequest_fields, &r);
    rm_rpc_stream_send(&s, bb, 1);
    grpc_byte_buffer_destroy(bb);
    read_sink sink = {out, cap, 0, 0};
    int bad = 0;
    grpc_byte_buffer *chunk;
    while (rm_rpc_stream_recv(&s, &chunk)) {
        radixmesh_v1_KVChunk c = radixmesh_v1_KVChunk_init_zero;
        c.kv.funcs.decode = decode_chunk_bytes;
        c.kv.arg = &sink;
        if (!bad && !rm_pb_decode_bb(chunk, radixmesh_v1_KVChunk_fields, &c, msg, msglen))
            bad = 1;
        grpc_byte_buffer_destroy(chunk);
    }
    int st = rm_rpc_stream_finish(&s, bad ? NULL : msg, bad ? 0 : msglen);
    *got = sink.got;
    if (st == GRPC_STATUS_OK && bad) {
        if (sink.overflow)
            snprintf(msg, msglen, "KV larger than the %zu-byte buffer", cap);
        return GRPC_STATUS_INTERNAL;
    }
    return st;
}

int rm_cc_route(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n,
                rm_cc_route_reply *out, char *msg, size_t msglen)
{
    return rm_cc_route_out(cc, ns, tokens, n, 0, out, msg, msglen);
}

int rm_cc_route_out(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n,
                    uint32_t output_tokens, rm_cc_route_reply *out, char *msg, size_t msglen)
{
    radixmesh_v1_RouteRequest r = radixmesh_v1_RouteRequest_init_zero;
    rm_tokens_view v = {tokens, n};
    r.namespace = (char *)ns;
    rm_pb_tokens_encoder(&r.tokens, &v);
    r.output_tokens = output_tokens;
    radixmesh_v1_RouteReply rep = radixmesh_v1_RouteReply_init_zero;
    memset(out, 0, sizeof *out);
    int st = call(cc, cc->m_route, radixmesh_v1_RouteRequest_fields, &r,
                  radixmesh_v1_RouteReply_fields, &rep, msg, msglen);
    if (st == GRPC_STATUS_OK) {
        copy_id(out->node_id, sizeof out->node_id, rep.node_id);
        copy_id(out->address, sizeof out->address, rep.address);
        out->key_tokens = rep.key_tokens;
        out->spilled = rep.spilled;
    }
    pb_release(radixmesh_v1_RouteReply_fields, &rep);
    return st;
}

static bool decode_node(pb_istream_t *s, const pb_field_t *f, void **arg)
{
    (void)f;
    rm_cc_cluster *c = *arg;
    c->nodes = rm_xrealloc(c->nodes, sizeof *c->nodes * (c->nnodes + 1));
    radixmesh_v1_NodeStats *n = &c->nodes[c->nnodes];
    *n = (radixmesh_v1_NodeStats)radixmesh_v1_NodeStats_init_zero;
    c->nnodes++; /* counted even if decoding fails, so it is released */
    return pb_decode(s, radixmesh_v1_NodeStats_fields, n);
}

int rm_cc_cluster_stats(rm_cache_client *cc, rm_cc_cluster *out, char *msg, size_t msglen)
{
    memset(out, 0, sizeof *out);
    radixmesh_v1_ClusterStatsRequest r = radixmesh_v1_ClusterStatsRequest_init_zero;
    out->cs.nodes.funcs.decode = decode_node;
    out->cs.nodes.arg = out;
    return call(cc, cc->m_cluster, radixmesh_v1_ClusterStatsRequest_fields, &r,
                radixmesh_v1_ClusterStats_fields, &out->cs, msg, msglen);
}

void rm_cc_cluster_free(rm_cc_cluster *c)
{
    for (size_t i = 0; i < c->nnodes; i++)
        pb_release(radixmesh_v1_NodeStats_fields, &c->nodes[i]);
    free(c->nodes);
    pb_release(radixmesh_v1_ClusterStats_fields, &c->cs);
    memset(c, 0, sizeof *c);
}
