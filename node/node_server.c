#include "node_server.h"

#include <grpc/slice.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb.h"
#include "guard.h"
#include "hotset.h"
#include "log.h"
#include "pbx.h"
#include "radixmesh.pb.h"
#include "util.h"

/* A KV stream as the tick sees it: what it waits on and what it holds.
 * First member of each stream's state. */
typedef struct kv_stream {
    rm_rpc_call *call;
    rm_kv_pin *pin;            /* ReadKV: the pin; NULL for WriteKV */
    uint64_t waiting_since_ms; /* 0: not waiting on the client */
    int listed;
    struct kv_stream *next, *prev;
} kv_stream;

/* A unary method that needs its call (to learn who is calling). */
typedef grpc_status_code (*node_unary_fn)(rm_node *n, rm_rpc_call *call, grpc_byte_buffer *req,
                                          grpc_byte_buffer **reply, char *msg, size_t len);
typedef struct node_method {
    rm_node *node;
    node_unary_fn fn;
} node_method;

struct rm_node {
    rm_node_config cfg;
    char *node_id;
    rm_cache cache;
    rm_hotset hot;
    int serving;
    uint64_t started_ms;
    node_method match_m, insert_m, release_m;
    /* Streams still receiving or sending, checked every tick against the
     * idle bound and their leases (rm_guard_stream). */
    kv_stream *streams;
    uint64_t streams_cancelled_total;
    char last_cancel[160];       /* why the last stream was cancelled */
    char last_refused_peer[200]; /* the last caller over its lease share */
    rm_log_limit ns_log, peer_log, stream_log;
};

#define REFUSAL_LOG_MS 10000 /* at most one summary line per kind this often */

rm_node *rm_node_create(const rm_node_config *cfg)
{
    rm_node *n = rm_xcalloc(1, sizeof *n);
    n->cfg = *cfg;
    n->node_id = rm_xstrndup(cfg->node_id, strlen(cfg->node_id));
    n->cfg.node_id = n->node_id;
    n->cfg.worker_url =
        cfg->worker_url ? rm_xstrndup(cfg->worker_url, strlen(cfg->worker_url)) : NULL;
    rm_cache_result rc = rm_cache_init(&n->cache, &cfg->cache);
    if (rc) {
        rm_log(RM_LOG_ERROR, "node", "cannot create the cache: %s", rm_cache_strerror(rc));
        free(n->node_id);
        free((char *)n->cfg.worker_url);
        free(n);
        return NULL;
    }
    n->serving = 1;
    n->started_ms = rm_now_ms();
    n->ns_log.interval_ms = n->peer_log.interval_ms = n->stream_log.interval_ms = REFUSAL_LOG_MS;
    /* Local shares under 1% are cold: at most ~100 hot branches per depth. */
    if (rm_hotset_init(&n->hot, cfg->hot_block_tokens, 256, 0.01, cfg->hot_half_life_ms, 4096,
                       n->started_ms) != 0) {
        rm_log(RM_LOG_ERROR, "node", "bad hot-prefix settings");
        rm_cache_destroy(&n->cache);
        free(n->node_id);
        free((char *)n->cfg.worker_url);
        free(n);
        return NULL;
    }
    return n;
}

void rm_node_destroy(rm_node *n)
{
    rm_hotset_destroy(&n->hot);
    rm_cache_destroy(&n->cache);
    free(n->node_id);
    free((char *)n->cfg.worker_url);
    free(n);
}

rm_cache *rm_node_cache(rm_node *n)
{
    return &n->cache;
}

const char *rm_node_id(const rm_node *n)
{
    return n->node_id;
}

int rm_node_serving(const rm_node *n)
{
    return n->serving;
}

static void metric(rm_sbuf *b, const char *name, const char *type, const char *help,
                   const char *labels, double v)
{
    rm_sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %.17g\n", name, help, name, type, name,
                   labels, v);
}

char *rm_node_metrics(rm_node *n)
{
    rm_cache_stats st;
    rm_cache_stats_get(&n->cache, &st);
    rm_sbuf b = {0};
    char l[256];
    snprintf(l, sizeof l, "node=\"%s\"", n->node_id);
    metric(&b, "radixmesh_match_requests_total", "counter", "Match requests accepted.", l,
           (double)st.match_requests_total);
    metric(&b, "radixmesh_query_tokens_total", "counter", "Tokens of accepted Match requests.", l,
           (double)st.query_tokens_total);
    metric(&b, "radixmesh_hit_tokens_total", "counter",
           "Tokens those Match requests found cached (hit rate = hit / query).", l,
           (double)st.hit_tokens_total);
    metric(&b, "radixmesh_insert_requests_total", "counter", "Insert and WriteKV requests.", l,
           (double)st.insert_requests_total);
    metric(&b, "radixmesh_inserted_tokens_total", "counter", "Tokens newly cached.", l,
           (double)st.inserted_tokens_total);
    metric(&b, "radixmesh_evicted_tokens_total", "counter", "Tokens evicted to make room.", l,
           (double)st.evicted_tokens_total);
    metric(&b, "radixmesh_expired_leases_total", "counter", "Leases reclaimed by their TTL.", l,
           (double)st.expired_leases_total);
    metric(&b, "radixmesh_namespace_refusals_total", "counter",
           "Requests refused a new namespace: --max-namespaces live ones all held entries or "
           "leases.",
           l, (double)st.namespace_refusals_total);
    metric(&b, "radixmesh_peer_lease_refusals_total", "counter",
           "Leases refused because the caller held its share (--max-leases-per-peer).", l,
           (double)st.peer_lease_refusals_total);
    metric(&b, "radixmesh_kv_streams_cancelled_total", "counter",
           "ReadKV/WriteKV streams the node ended: idle past --kv-stream-idle-ms, or their "
           "lease expired.",
           l, (double)n->streams_cancelled_total);
    rm_sbuf_printf(&b, "# HELP radixmesh_pool_pages KV pool pages by state.\n"
                       "# TYPE radixmesh_pool_pages gauge\n");
    const char *states[] = {"free", "evictable", "protected"};
    uint64_t v[] = {st.free_pages, st.evictable_pages, st.protected_pages};
    for (int i = 0; i < 3; i++)
        rm_sbuf_printf(&b, "radixmesh_pool_pages{%s,state=\"%s\"} %" PRIu64 "\n", l, states[i],
                       v[i]);
    metric(&b, "radixmesh_page_tokens", "gauge", "Tokens per KV page.", l,
           (double)rm_cache_page_tokens(&n->cache));
    metric(&b, "radixmesh_active_leases", "gauge", "Live leases.", l, (double)st.active_leases);
    metric(&b, "radixmesh_tree_nodes", "gauge", "Radix tree nodes.", l, (double)st.tree_nodes);
    metric(&b, "radixmesh_namespaces", "gauge", "Live namespaces.", l, (double)st.namespaces);
    metric(&b, "radixmesh_metadata_bytes", "gauge", "Bytes of cache metadata.", l,
           (double)st.metadata_bytes);
    metric(&b, "radixmesh_serving", "gauge", "1 while the node reports SERVING.", l,
           (double)n->serving);
    snprintf(l, sizeof l, "node=\"%s\",role=\"node\",version=\"%s\"", n->node_id, RM_VERSION);
    metric(&b, "radixmesh_build_info", "gauge", "Build information.", l, 1);
    return b.p;
}

void rm_node_set_serving(rm_node *n, int serving)
{
    n->serving = serving;
}

static void check_streams(rm_node *n, uint64_t now_ms);

void rm_node_tick(rm_node *n, uint64_t now_ms)
{
    uint32_t expired = rm_cache_tick(&n->cache, now_ms);
    if (expired)
        rm_log(RM_LOG_DEBUG, "node", "%u leases expired", expired);
    check_streams(n, now_ms);
    /* Refusals are summed into one line per kind and interval: a client
     * retrying in a loop must not turn the log into a flood. */
    rm_cache_stats st;
    rm_cache_stats_get(&n->cache, &st);
    uint64_t k;
    if ((k = rm_log_limit_due(&n->ns_log, st.namespace_refusals_total, now_ms)))
        rm_log(RM_LOG_WARN, "node",
               "refused %" PRIu64 " request(s) a new namespace: --max-namespaces %u reached and "
               "every namespace holds cached entries or leases",
               k, rm_cache_config_get(&n->cache)->max_namespaces);
    if ((k = rm_log_limit_due(&n->peer_log, st.peer_lease_refusals_total, now_ms)))
        rm_log(RM_LOG_WARN, "node",
               "refused %" PRIu64 " lease(s) over a caller's share (--max-leases-per-peer %u); "
               "last: %s",
               k, rm_cache_peer_lease_limit(&n->cache), n->last_refused_peer);
    if ((k = rm_log_limit_due(&n->stream_log, n->streams_cancelled_total, now_ms)))
        rm_log(RM_LOG_WARN, "node", "cancelled %" PRIu64 " KV stream(s); last: %s", k,
               n->last_cancel);
}

/* ---- callers ------------------------------------------------------------ */

typedef struct node_caller {
    rm_cache_caller who;
    char id[512];
} node_caller;

/* Who makes call (see rm_rpc_call_peer), or NULL when gRPC cannot say. */
static const rm_cache_caller *caller_of(rm_rpc_call *call, node_caller *nc)
{
    int kind = rm_rpc_call_peer(call, nc->id, sizeof nc->id);
    if (kind < 0)
        return NULL;
    nc->who = (rm_cache_caller){nc->id, strlen(nc->id), kind == 1};
    return &nc->who;
}

/* Runs a node_method and answers its call at once. */
static void unary_with_call(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req)
{
    node_method *m = ctx;
    char msg[384] = "";
    grpc_byte_buffer *reply = NULL;
    grpc_status_code code = m->fn(m->node, call, req, &reply, msg, sizeof msg);
    rm_rpc_call_finish(call, code, msg, reply);
}

/* ---- shared request plumbing ------------------------------------------ */

/* What a refused cache call was about, for its message. */
typedef struct cache_subject {
    uint64_t lease_id;          /* the lease the request named, 0: none */
    const rm_cache_caller *who; /* the caller (for the per-peer share), NULL: unknown */
    uint32_t kv_start;          /* WriteKV's kv_start_token */
    size_t have;                /* RM_CACHE_PREFIX_SHORT: tokens of the prefix the node holds */
    const char *kv_hint;        /* RM_CACHE_METADATA_ONLY: what to do instead */
} cache_subject;

/* The status each cache outcome is answered with. */
static const grpc_status_code cache_status[RM_CACHE_NRESULTS] = {
    [RM_CACHE_OK] = GRPC_STATUS_OK,
    [RM_CACHE_BAD_CONFIG] = GRPC_STATUS_INTERNAL,
    [RM_CACHE_NO_MEMORY] = GRPC_STATUS_INTERNAL,
    [RM_CACHE_NO_RANDOMNESS] = GRPC_STATUS_INTERNAL,
    [RM_CACHE_UNKNOWN_LEASE] = GRPC_STATUS_NOT_FOUND,
    [RM_CACHE_LEASE_MISMATCH] = GRPC_STATUS_FAILED_PRECONDITION,
    [RM_CACHE_PREFIX_SHORT] = GRPC_STATUS_FAILED_PRECONDITION,
    [RM_CACHE_BAD_KV_START] = GRPC_STATUS_INVALID_ARGUMENT,
    [RM_CACHE_POOL_PINNED] = GRPC_STATUS_RESOURCE_EXHAUSTED,
    [RM_CACHE_LEASE_LIMIT] = GRPC_STATUS_RESOURCE_EXHAUSTED,
    [RM_CACHE_PEER_LEASE_LIMIT] = GRPC_STATUS_RESOURCE_EXHAUSTED,
    [RM_CACHE_NAMESPACE_LIMIT] = GRPC_STATUS_RESOURCE_EXHAUSTED,
    [RM_CACHE_STORES_KV] = GRPC_STATUS_FAILED_PRECONDITION,
    [RM_CACHE_METADATA_ONLY] = GRPC_STATUS_FAILED_PRECONDITION,
    [RM_CACHE_INCONSISTENT] = GRPC_STATUS_INTERNAL,
};

/* Answers a refused cache call: its status (cache_status) and a message
 * naming the limit or the object involved. */
static grpc_status_code cache_error(rm_node *n, rm_cache_result rc, const cache_subject *s,
                                    char *msg, size_t len)
{
    const rm_cache_config *c = rm_cache_config_get(&n->cache);
    grpc_status_code code =
        (unsigned)rc < RM_CACHE_NRESULTS ? cache_status[rc] : GRPC_STATUS_INTERNAL;
    switch (rc) {
    case RM_CACHE_UNKNOWN_LEASE:
        snprintf(msg, len, "unknown lease %" PRIu64 " (never issued, released or expired)",
                 s->lease_id);
        break;
    case RM_CACHE_LEASE_MISMATCH:
        snprintf(msg, len,
                 "lease %" PRIu64 " does not cover a prefix of these tokens in this namespace",
                 s->lease_id);
        break;
    case RM_CACHE_PREFIX_SHORT:
        snprintf(msg, len,
                 "node holds only %zu tokens of this prefix, fewer than kv_start_token %u; "
                 "resend KV from token %zu",
                 s->have, s->kv_start, s->have);
        break;
    case RM_CACHE_BAD_KV_START:
        snprintf(msg, len, "kv_start_token %u must be a multiple of %u and within the sequence",
                 s->kv_start, c->page_tokens);
        break;
    case RM_CACHE_POOL_PINNED:
        snprintf(msg, len,
                 "KV pool exhausted: all %" PRIu64
                 " pages are pinned by leases or streams; release leases and retry",
                 c->pool_pages);
        break;
    case RM_CACHE_LEASE_LIMIT:
        snprintf(msg, len, "lease limit reached (--max-leases %u); release leases and retry",
                 c->max_leases);
        break;
    case RM_CACHE_NAMESPACE_LIMIT:
        snprintf(msg, len,
                 "namespace limit reached (--max-namespaces %u): every namespace holds cached "
                 "entries or leases",
                 c->max_namespaces);
        break;
    case RM_CACHE_PEER_LEASE_LIMIT:
        snprintf(n->last_refused_peer, sizeof n->last_refused_peer, "%s '%.150s'",
                 s->who && s->who->authenticated ? "client identity" : "address",
                 s->who ? s->who->id : "");
        snprintf(msg, len,
                 "lease limit per peer reached: %s holds %u leases (--max-leases-per-peer %u%s); "
                 "release leases and retry",
                 n->last_refused_peer, rm_cache_peer_lease_limit(&n->cache),
                 rm_cache_peer_lease_limit(&n->cache),
                 c->max_leases_per_peer ? "" : ", half of --max-leases");
        break;
    case RM_CACHE_STORES_KV:
        snprintf(msg, len,
                 "this node stores KV bytes (--kv-bytes-per-token %" PRIu64
                 "): cache sequences with WriteKV, not Insert",
                 c->kv_bytes_per_token);
        break;
    case RM_CACHE_METADATA_ONLY:
        snprintf(msg, len, "this node is metadata-only (--kv-bytes-per-token 0): %s",
                 s->kv_hint ? s->kv_hint : "it stores no KV bytes");
        break;
    default:
        snprintf(msg, len, "cache error: %s", rm_cache_strerror(rc));
        code = GRPC_STATUS_INTERNAL; /* never OK for a failure */
        break;
    }
    return code;
}

/* Decodes a request whose tokens field is wired to toks. */
static grpc_status_code decode(const rm_node *n, grpc_byte_buffer *bb, const pb_msgdesc_t *desc,
                               void *msg, rm_tokens *toks, char *err, size_t errlen)
{
    if (toks)
        toks->max = n->cfg.max_request_tokens;
    if (rm_pb_decode_bb(bb, desc, msg, err, errlen))
        return GRPC_STATUS_OK;
    if (toks && toks->too_many)
        snprintf(err, errlen, "request has more than %" PRIu64 " tokens (--max-request-tokens)",
                 n->cfg.max_request_tokens);
    return GRPC_STATUS_INVALID_ARGUMENT;
}

static grpc_status_code check_namespace(const rm_node *n, const char *ns, char *msg, size_t len)
{
    if (ns && strlen(ns) > n->cfg.max_namespace_bytes) {
        snprintf(msg, len, "namespace is longer than %u bytes", n->cfg.max_namespace_bytes);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    return GRPC_STATUS_OK;
}

static grpc_status_code encode(const pb_msgdesc_t *desc, const void *msg, grpc_byte_buffer **out,
                               char *err, size_t errlen)
{
    *out = rm_pb_encode_bb(desc, msg);
    if (*out)
        return GRPC_STATUS_OK;
    snprintf(err, errlen, "cannot encode reply");
    return GRPC_STATUS_INTERNAL;
}

static const char *ns_or_empty(const char *ns)
{
    return ns ? ns : "";
}

/* ---- unary methods ---------------------------------------------------- */

static grpc_status_code do_match(rm_node *n, rm_rpc_call *call, grpc_byte_buffer *req,
                                 grpc_byte_buffer **reply, char *msg, size_t len)
{
    radixmesh_v1_MatchRequest r = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens toks = {0};
    rm_pb_tokens_decoder(&r.tokens, &toks);
    grpc_status_code code = decode(n, req, radixmesh_v1_MatchRequest_fields, &r, &toks, msg, len);
    if (code == GRPC_STATUS_OK)
        code = check_namespace(n, r.namespace, msg, len);
    if (code == GRPC_STATUS_OK && r.peek && r.lease) {
        snprintf(msg, len, "a peek cannot take a lease");
        code = GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (code == GRPC_STATUS_OK && r.peek) {
        const char *ns = ns_or_empty(r.namespace);
        radixmesh_v1_MatchReply rep = radixmesh_v1_MatchReply_init_zero;
        rep.matched_tokens = (uint32_t)rm_cache_peek(&n->cache, ns, strlen(ns), toks.v, toks.n);
        rep.node_id = n->node_id;
        code = encode(radixmesh_v1_MatchReply_fields, &rep, reply, msg, len);
    } else if (code == GRPC_STATUS_OK) {
        const char *ns = ns_or_empty(r.namespace);
        uint64_t now = rm_now_ms();
        rm_match_result mr;
        node_caller nc;
        const rm_cache_caller *who = r.lease ? caller_of(call, &nc) : NULL;
        rm_cache_result rc = rm_cache_match(&n->cache, who, ns, strlen(ns), toks.v, toks.n, r.lease,
                                            r.lease_ttl_ms, now, &mr);
        if (rc == RM_CACHE_OK)
            rm_hotset_add(&n->hot, ns, strlen(ns), toks.v, toks.n, now);
        if (rc) {
            code = cache_error(n, rc, &(cache_subject){.who = who}, msg, len);
        } else {
            radixmesh_v1_MatchReply rep = radixmesh_v1_MatchReply_init_zero;
            rep.matched_tokens = (uint32_t)mr.matched_tokens;
            rep.lease_id = mr.lease_id;
            rep.node_id = n->node_id;
            code = encode(radixmesh_v1_MatchReply_fields, &rep, reply, msg, len);
        }
    }
    pb_release(radixmesh_v1_MatchRequest_fields, &r);
    rm_tokens_free(&toks);
    return code;
}

static void fill_insert_reply(const rm_node *n, const rm_insert_result *ir,
                              radixmesh_v1_InsertReply *rep)
{
    rep->cached_tokens = (uint32_t)ir->cached_tokens;
    rep->inserted_tokens = (uint32_t)ir->inserted_tokens;
    rep->dropped_tokens = (uint32_t)ir->dropped_tokens;
    rep->node_id = n->node_id;
}

static grpc_status_code do_insert(rm_node *n, rm_rpc_call *call, grpc_byte_buffer *req,
                                  grpc_byte_buffer **reply, char *msg, size_t len)
{
    radixmesh_v1_InsertRequest r = radixmesh_v1_InsertRequest_init_zero;
    rm_tokens toks = {0};
    rm_pb_tokens_decoder(&r.tokens, &toks);
    grpc_status_code code = decode(n, req, radixmesh_v1_InsertRequest_fields, &r, &toks, msg, len);
    if (code == GRPC_STATUS_OK)
        code = check_namespace(n, r.namespace, msg, len);
    if (code == GRPC_STATUS_OK) {
        const char *ns = ns_or_empty(r.namespace);
        rm_insert_result ir;
        node_caller nc;
        const rm_cache_caller *who = r.lease_id ? caller_of(call, &nc) : NULL;
        rm_cache_result rc = rm_cache_insert(&n->cache, who, ns, strlen(ns), toks.v, toks.n,
                                             r.lease_id, rm_now_ms(), &ir);
        if (rc) {
            code =
                cache_error(n, rc, &(cache_subject){.lease_id = r.lease_id, .who = who}, msg, len);
        } else {
            radixmesh_v1_InsertReply rep = radixmesh_v1_InsertReply_init_zero;
            fill_insert_reply(n, &ir, &rep);
            code = encode(radixmesh_v1_InsertReply_fields, &rep, reply, msg, len);
        }
    }
    pb_release(radixmesh_v1_InsertRequest_fields, &r);
    rm_tokens_free(&toks);
    return code;
}

static grpc_status_code do_release(rm_node *n, rm_rpc_call *call, grpc_byte_buffer *req,
                                   grpc_byte_buffer **reply, char *msg, size_t len)
{
    radixmesh_v1_ReleaseRequest r = radixmesh_v1_ReleaseRequest_init_zero;
    grpc_status_code code = decode(n, req, radixmesh_v1_ReleaseRequest_fields, &r, NULL, msg, len);
    if (code == GRPC_STATUS_OK) {
        node_caller nc;
        const rm_cache_caller *who = caller_of(call, &nc);
        rm_cache_result rc = rm_cache_release(&n->cache, who, r.lease_id);
        if (rc) {
            code =
                cache_error(n, rc, &(cache_subject){.lease_id = r.lease_id, .who = who}, msg, len);
        } else {
            radixmesh_v1_ReleaseReply rep = radixmesh_v1_ReleaseReply_init_zero;
            code = encode(radixmesh_v1_ReleaseReply_fields, &rep, reply, msg, len);
        }
    }
    pb_release(radixmesh_v1_ReleaseRequest_fields, &r);
    return code;
}

static grpc_status_code do_stats(void *ctx, grpc_byte_buffer *req, grpc_byte_buffer **reply,
                                 char *msg, size_t len)
{
    rm_node *n = ctx;
    radixmesh_v1_StatsRequest r = radixmesh_v1_StatsRequest_init_zero;
    grpc_status_code code = decode(n, req, radixmesh_v1_StatsRequest_fields, &r, NULL, msg, len);
    if (code != GRPC_STATUS_OK)
        return code;
    rm_cache_stats st;
    rm_cache_stats_get(&n->cache, &st);
    radixmesh_v1_NodeStats rep = radixmesh_v1_NodeStats_init_zero;
    rep.node_id = n->node_id;
    rep.match_requests_total = st.match_requests_total;
    rep.query_tokens_total = st.query_tokens_total;
    rep.hit_tokens_total = st.hit_tokens_total;
    rep.inserted_tokens_total = st.inserted_tokens_total;
    rep.evicted_tokens_total = st.evicted_tokens_total;
    rep.page_tokens = rm_cache_page_tokens(&n->cache);
    rep.pool_pages = st.pool_pages;
    rep.free_pages = st.free_pages;
    rep.evictable_pages = st.evictable_pages;
    rep.protected_pages = st.protected_pages;
    rep.active_leases = st.active_leases;
    rep.kv_bytes_per_token = rm_cache_kv_bytes_per_token(&n->cache);
    rep.insert_requests_total = st.insert_requests_total;
    rep.expired_leases_total = st.expired_leases_total;
    rep.tree_nodes = st.tree_nodes;
    rep.namespace_refusals_total = st.namespace_refusals_total;
    rep.namespaces = st.namespaces;
    rep.peer_lease_refusals_total = st.peer_lease_refusals_total;
    rep.metadata_bytes = st.metadata_bytes;
    rep.version = (char *)RM_VERSION;
    rep.worker_url = (char *)(n->cfg.worker_url ? n->cfg.worker_url : "");
    uint64_t now = rm_now_ms();
    rep.uptime_ms = now - n->started_ms;
    rep.serving = n->serving;
    rep.hot_block_tokens = n->hot.block_tokens;
    rm_hot_entry top[256];
    size_t k = rm_hotset_top(&n->hot, 0.01, now, top, 256, &rep.hot_window_requests);
    rep.hot_prefixes_count = (pb_size_t)k;
    for (size_t i = 0; i < k; i++) {
        rep.hot_prefixes[i].hash = top[i].hash;
        rep.hot_prefixes[i].blocks = top[i].blocks;
        rep.hot_prefixes[i].requests = top[i].count;
        rep.hot_prefixes[i].lead = top[i].lead_known ? top[i].lead[0] : 0;
        rep.hot_prefixes[i].lead_requests = top[i].lead_count;
        rep.hot_prefixes[i].other_requests = top[i].other;
    }
    return encode(radixmesh_v1_NodeStats_fields, &rep, reply, msg, len);
}

static grpc_status_code do_health(void *ctx, grpc_byte_buffer *req, grpc_byte_buffer **reply,
                                  char *msg, size_t len)
{
    rm_node *n = ctx;
    grpc_health_v1_HealthCheckRequest r = grpc_health_v1_HealthCheckRequest_init_zero;
    grpc_status_code code =
        decode(n, req, grpc_health_v1_HealthCheckRequest_fields, &r, NULL, msg, len);
    if (code == GRPC_STATUS_OK) {
        const char *svc = ns_or_empty(r.service);
        if (*svc && strcmp(svc, "radixmesh.v1.CacheNode") != 0) {
            snprintf(msg, len, "unknown service '%.100s'", svc);
            code = GRPC_STATUS_NOT_FOUND;
        } else {
            grpc_health_v1_HealthCheckResponse rep = grpc_health_v1_HealthCheckResponse_init_zero;
            rep.status = n->serving ? grpc_health_v1_HealthCheckResponse_ServingStatus_SERVING
                                    : grpc_health_v1_HealthCheckResponse_ServingStatus_NOT_SERVING;
            code = encode(grpc_health_v1_HealthCheckResponse_fields, &rep, reply, msg, len);
        }
    }
    pb_release(grpc_health_v1_HealthCheckRequest_fields, &r);
    return code;
}

/* ---- KV streams: the list the tick bounds ------------------------------- */

static void stream_add(rm_node *n, kv_stream *s, rm_rpc_call *call, rm_kv_pin *pin)
{
    s->call = call;
    s->pin = pin;
    s->listed = 1;
    s->prev = NULL;
    s->next = n->streams;
    if (n->streams)
        n->streams->prev = s;
    n->streams = s;
}

/* Takes s off the list (idempotent): once a stream ends its call, nothing
 * it waits on is the client's to bound any more. */
static void stream_del(rm_node *n, kv_stream *s)
{
    if (!s->listed)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        n->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->listed = 0;
    s->next = s->prev = NULL;
}

/* Ends a listed stream's call with status code and msg. */
static void stream_finish(rm_node *n, kv_stream *s, grpc_status_code code, const char *msg,
                          grpc_byte_buffer *final)
{
    stream_del(n, s);
    rm_rpc_call_finish(s->call, code, msg, final);
}

/* ---- ReadKV: server streaming ------------------------------------------ */

typedef struct read_state {
    kv_stream guard; /* first: the tick sees read and write states alike */
    rm_kv_pin pin;
    size_t next, end; /* token range still to send */
} read_state;

/* One KVChunk as header bytes followed by slices that point straight into
 * the pinned pages: the KV bytes are never copied on the node. */
static grpc_byte_buffer *kv_chunk(rm_node *n, read_state *st, size_t from, size_t count)
{
    uint64_t kvb = rm_cache_kv_bytes_per_token(&n->cache);
    uint32_t pt = rm_cache_page_tokens(&n->cache);
    radixmesh_v1_KVChunk hdr = radixmesh_v1_KVChunk_init_zero;
    hdr.token_offset = (uint32_t)from;
    hdr.token_count = (uint32_t)count;
    uint8_t head[64];
    pb_ostream_t os = pb_ostream_from_buffer(head, sizeof head);
    uint64_t bytes = count * kvb;
    if (!pb_encode(&os, radixmesh_v1_KVChunk_fields, &hdr) ||
        !pb_encode_tag(&os, PB_WT_STRING, radixmesh_v1_KVChunk_kv_tag) ||
        !pb_encode_varint(&os, bytes))
        return NULL;
    size_t nslices = 1 + (count + pt - 1) / pt + 1;
    grpc_slice *slices = rm_xmalloc(sizeof *slices * nslices);
    size_t k = 0;
    slices[k++] = grpc_slice_from_copied_buffer((const char *)head, os.bytes_written);
    for (size_t t = from; t < from + count;) {
        size_t in_page = pt - t % pt;
        if (in_page > from + count - t)
            in_page = from + count - t;
        const uint8_t *p = rm_cache_pin_kv(&n->cache, &st->pin, t);
        slices[k++] = grpc_slice_from_static_buffer(p, in_page * kvb);
        t += in_page;
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(slices, k);
    for (size_t i = 0; i < k; i++)
        grpc_slice_unref(slices[i]);
    free(slices);
    return bb;
}

static void read_send_next(rm_node *n, rm_rpc_call *call, read_state *st)
{
    if (st->next >= st->end) {
        stream_finish(n, &st->guard, GRPC_STATUS_OK, NULL, NULL);
        return;
    }
    uint64_t kvb = rm_cache_kv_bytes_per_token(&n->cache);
    size_t per = n->cfg.kv_chunk_bytes / kvb;
    if (per == 0)
        per = 1;
    size_t count = st->end - st->next < per ? st->end - st->next : per;
    grpc_byte_buffer *bb = kv_chunk(n, st, st->next, count);
    if (!bb) {
        stream_finish(n, &st->guard, GRPC_STATUS_INTERNAL, "cannot encode KV chunk", NULL);
        return;
    }
    st->next += count;
    /* A send completes once the client has taken the bytes: waiting for
     * that is waiting on the client. */
    st->guard.waiting_since_ms = rm_now_ms();
    rm_rpc_call_send(call, bb);
}

static void read_kv(void *ctx, rm_rpc_call *call, rm_call_event ev, grpc_byte_buffer *msg, int ok)
{
    rm_node *n = ctx;
    read_state *st = rm_rpc_call_user(call);
    char err[256] = "";
    switch (ev) {
    case RM_CALL_EV_START: {
        radixmesh_v1_ReadKVRequest r = radixmesh_v1_ReadKVRequest_init_zero;
        grpc_status_code code =
            decode(n, msg, radixmesh_v1_ReadKVRequest_fields, &r, NULL, err, sizeof err);
        uint64_t lease = r.lease_id;
        uint32_t start = r.start_token, max = r.max_tokens;
        pb_release(radixmesh_v1_ReadKVRequest_fields, &r);
        if (code != GRPC_STATUS_OK) {
            rm_rpc_call_finish(call, code, err, NULL);
            return;
        }
        st = rm_xcalloc(1, sizeof *st);
        node_caller nc;
        const rm_cache_caller *who = caller_of(call, &nc);
        rm_cache_result rc = rm_cache_pin_lease(&n->cache, who, lease, &st->pin);
        if (rc) {
            free(st);
            cache_subject subj = {.lease_id = lease, .who = who, .kv_hint = "no KV bytes to read"};
            code = cache_error(n, rc, &subj, err, sizeof err);
            rm_rpc_call_finish(call, code, err, NULL);
            return;
        }
        rm_rpc_call_set_user(call, st);
        stream_add(n, &st->guard, call, &st->pin);
        uint32_t pt = rm_cache_page_tokens(&n->cache);
        size_t have = st->pin.npages * pt;
        if (start % pt || start > have) {
            snprintf(err, sizeof err,
                     "start_token %u must be a multiple of %u and at most the leased %zu tokens",
                     start, pt, have);
            stream_finish(n, &st->guard, GRPC_STATUS_INVALID_ARGUMENT, err, NULL);
            return;
        }
        st->next = start;
        st->end = max && start + (size_t)max < have ? start + (size_t)max : have;
        read_send_next(n, call, st);
        return;
    }
    case RM_CALL_EV_SENT:
        st->guard.waiting_since_ms = 0;
        if (!ok) {
            stream_finish(n, &st->guard, GRPC_STATUS_CANCELLED, "client went away", NULL);
            return;
        }
        read_send_next(n, call, st);
        return;
    case RM_CALL_EV_DONE:
        /* Only now: a send cancelled a moment ago may still have pointed
         * gRPC at the pinned pages. */
        if (st) {
            stream_del(n, &st->guard);
            rm_cache_unpin(&n->cache, &st->pin);
            free(st);
        }
        return;
    case RM_CALL_EV_MESSAGE:
        return;
    }
}

/* ---- WriteKV: client streaming ------------------------------------------ */

typedef enum { WRITE_AWAIT_HEADER, WRITE_STREAMING, WRITE_DONE } write_phase;

typedef struct write_state {
    kv_stream guard; /* first: the tick sees read and write states alike */
    write_phase phase;
    rm_node *node;
    rm_kv_write w;
    int begun;
    uint64_t received, expected; /* KV bytes */
    uint8_t *stash;              /* first message's kv, before the write began */
    size_t stash_len;
    int overflow;
} write_state;

/* Copies len bytes of the sequence's KV stream into the reserved pages,
 * skipping tokens the node already holds. */
static void write_bytes(write_state *ws, const uint8_t *src, pb_istream_t *s, size_t len)
{
    rm_node *n = ws->node;
    uint64_t kvb = rm_cache_kv_bytes_per_token(&n->cache);
    uint32_t pt = rm_cache_page_tokens(&n->cache);
    while (len) {
        size_t token = ws->w.kv_start + ws->received / kvb;
        size_t off = ws->received % kvb;
        size_t run = (pt - token % pt) * kvb - off; /* to the end of this page */
        if (run > len)
            run = len;
        uint8_t *dst = rm_cache_write_dest(&n->cache, &ws->w, token);
        if (src) {
            if (dst)
                memcpy(dst + off, src, run);
            src += run;
        } else if (!pb_read(s, dst ? dst + off : NULL, run)) {
            return;
        }
        ws->received += run;
        len -= run;
    }
}

static bool decode_kv(pb_istream_t *s, const pb_field_t *f, void **arg)
{
    (void)f;
    write_state *ws = *arg;
    size_t len = s->bytes_left;
    if (!ws->begun) {
        ws->stash = rm_xrealloc(ws->stash, ws->stash_len + len + 1);
        if (!pb_read(s, ws->stash + ws->stash_len, len))
            return false;
        ws->stash_len += len;
        return true;
    }
    if (ws->received + len > ws->expected) {
        ws->overflow = 1;
        PB_RETURN_ERROR(s, "more KV bytes than the sequence needs");
    }
    write_bytes(ws, NULL, s, len);
    return s->bytes_left == 0;
}

/* Asks for the next message; from now on the stream waits on its client. */
static void write_recv(write_state *ws, rm_rpc_call *call)
{
    ws->guard.waiting_since_ms = rm_now_ms();
    rm_rpc_call_recv(call);
}

/* Returns the reserved pages and ends the write (the call is not touched). */
static void write_drop(write_state *ws)
{
    if (ws->begun) {
        rm_cache_write_abort(&ws->node->cache, &ws->w);
        ws->begun = 0;
    }
    ws->phase = WRITE_DONE;
}

static void write_fail(write_state *ws, rm_rpc_call *call, grpc_status_code code, const char *msg)
{
    (void)call;
    write_drop(ws);
    stream_finish(ws->node, &ws->guard, code, msg, NULL);
}

static void write_header(write_state *ws, rm_rpc_call *call, grpc_byte_buffer *msg)
{
    rm_node *n = ws->node;
    char err[256] = "";
    radixmesh_v1_WriteKVChunk r = radixmesh_v1_WriteKVChunk_init_zero;
    rm_tokens toks = {0};
    rm_pb_tokens_decoder(&r.tokens, &toks);
    r.kv.funcs.decode = decode_kv;
    r.kv.arg = ws;
    grpc_status_code code =
        decode(n, msg, radixmesh_v1_WriteKVChunk_fields, &r, &toks, err, sizeof err);
    if (code == GRPC_STATUS_OK)
        code = check_namespace(n, r.namespace, err, sizeof err);
    if (code != GRPC_STATUS_OK) {
        write_fail(ws, call, code, err);
        goto out;
    }
    const char *ns = ns_or_empty(r.namespace);
    node_caller nc;
    const rm_cache_caller *who = r.lease_id ? caller_of(call, &nc) : NULL;
    rm_cache_result rc = rm_cache_write_begin(&n->cache, who, ns, strlen(ns), toks.v, toks.n,
                                              r.kv_start_token, r.lease_id, rm_now_ms(), &ws->w);
    if (rc) {
        cache_subject subj = {.lease_id = r.lease_id,
                              .who = who,
                              .kv_start = r.kv_start_token,
                              .kv_hint = "use Insert"};
        if (rc == RM_CACHE_PREFIX_SHORT) /* the client resends from what the node holds */
            subj.have = rm_cache_peek(&n->cache, ns, strlen(ns), toks.v, toks.n);
        code = cache_error(n, rc, &subj, err, sizeof err);
        write_fail(ws, call, code, err);
        goto out;
    }
    ws->begun = 1;
    ws->expected = (ws->w.ntokens - ws->w.kv_start) * rm_cache_kv_bytes_per_token(&n->cache);
    ws->phase = WRITE_STREAMING;
    if (ws->stash_len > ws->expected) {
        write_fail(ws, call, GRPC_STATUS_INVALID_ARGUMENT, "more KV bytes than the sequence needs");
        goto out;
    }
    write_bytes(ws, ws->stash, NULL, ws->stash_len);
    write_recv(ws, call);
out:
    free(ws->stash);
    ws->stash = NULL;
    ws->stash_len = 0;
    pb_release(radixmesh_v1_WriteKVChunk_fields, &r);
    rm_tokens_free(&toks);
}

static void write_chunk(write_state *ws, rm_rpc_call *call, grpc_byte_buffer *msg)
{
    rm_node *n = ws->node;
    char err[256] = "";
    radixmesh_v1_WriteKVChunk r = radixmesh_v1_WriteKVChunk_init_zero;
    r.kv.funcs.decode = decode_kv;
    r.kv.arg = ws;
    /* Later messages carry only kv; a tokens field here is skipped. */
    if (!rm_pb_decode_bb(msg, radixmesh_v1_WriteKVChunk_fields, &r, err, sizeof err)) {
        pb_release(radixmesh_v1_WriteKVChunk_fields, &r);
        write_fail(ws, call, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    pb_release(radixmesh_v1_WriteKVChunk_fields, &r);
    (void)n;
    write_recv(ws, call);
}

static void write_end(write_state *ws, rm_rpc_call *call)
{
    rm_node *n = ws->node;
    char err[256];
    if (ws->received != ws->expected) {
        snprintf(err, sizeof err,
                 "stream ended after %" PRIu64 " KV bytes, %" PRIu64 " expected (%" PRIu64
                 " bytes per token); nothing was cached",
                 ws->received, ws->expected, rm_cache_kv_bytes_per_token(&n->cache));
        write_fail(ws, call, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    rm_insert_result ir;
    rm_cache_result rc = rm_cache_write_commit(&n->cache, &ws->w, rm_now_ms(), &ir);
    ws->begun = 0;
    ws->phase = WRITE_DONE;
    if (rc) {
        grpc_status_code code =
            cache_error(n, rc, &(cache_subject){.lease_id = ws->w.lease_id}, err, sizeof err);
        stream_finish(n, &ws->guard, code, err, NULL);
        return;
    }
    (void)call;
    radixmesh_v1_InsertReply rep = radixmesh_v1_InsertReply_init_zero;
    fill_insert_reply(n, &ir, &rep);
    grpc_byte_buffer *bb = rm_pb_encode_bb(radixmesh_v1_InsertReply_fields, &rep);
    stream_finish(n, &ws->guard, bb ? GRPC_STATUS_OK : GRPC_STATUS_INTERNAL,
                  bb ? NULL : "cannot encode reply", bb);
}

static void write_kv(void *ctx, rm_rpc_call *call, rm_call_event ev, grpc_byte_buffer *msg, int ok)
{
    rm_node *n = ctx;
    write_state *ws = rm_rpc_call_user(call);
    (void)ok;
    switch (ev) {
    case RM_CALL_EV_START:
        ws = rm_xcalloc(1, sizeof *ws);
        ws->node = n;
        ws->phase = WRITE_AWAIT_HEADER;
        rm_rpc_call_set_user(call, ws);
        stream_add(n, &ws->guard, call, NULL);
        write_recv(ws, call);
        return;
    case RM_CALL_EV_MESSAGE:
        ws->guard.waiting_since_ms = 0;
        if (ws->phase == WRITE_DONE)
            return;
        if (!msg) {
            if (ws->phase == WRITE_AWAIT_HEADER)
                write_fail(ws, call, GRPC_STATUS_INVALID_ARGUMENT,
                           "WriteKV stream ended before its first message");
            else
                write_end(ws, call);
            return;
        }
        if (ws->phase == WRITE_AWAIT_HEADER)
            write_header(ws, call, msg);
        else
            write_chunk(ws, call, msg);
        return;
    case RM_CALL_EV_DONE:
        if (ws) {
            stream_del(n, &ws->guard);
            if (ws->begun)
                rm_cache_write_abort(&n->cache, &ws->w);
            free(ws->stash);
            free(ws);
        }
        return;
    case RM_CALL_EV_SENT:
        return;
    }
}

/* ---- stream bounds ----------------------------------------------------- */

/* Ends s from the server side: the pages it holds are the reason. A
 * write's reservation goes back at once; a read's pin at DONE, once gRPC
 * has let go of the send that points into the pages. */
static void cancel_stream(rm_node *n, kv_stream *s, rm_stream_verdict v, uint64_t now_ms)
{
    char msg[320];
    unsigned long long idle = (unsigned long long)n->cfg.kv_stream_idle_ms;
    if (!s->pin) {
        write_state *ws = (write_state *)s;
        uint32_t pages = ws->begun ? ws->w.npages : 0;
        write_drop(ws);
        snprintf(msg, sizeof msg,
                 "WriteKV received nothing for %llu ms (--kv-stream-idle-ms): cancelled, its %u "
                 "reserved pages returned, nothing cached",
                 idle, pages);
    } else if (v == RM_STREAM_LEASE_EXPIRED) {
        read_state *st = (read_state *)s;
        snprintf(msg, sizeof msg,
                 "the lease ended %llu ms ago, before ReadKV finished (a read lasts no longer than "
                 "its lease's TTL): cancelled at token %zu of %zu, pages unpinned",
                 (unsigned long long)(now_ms - rm_cache_pin_expires(&n->cache, s->pin)), st->next,
                 st->end);
    } else {
        snprintf(msg, sizeof msg,
                 "ReadKV's client took no data for %llu ms (--kv-stream-idle-ms): cancelled, "
                 "pages unpinned",
                 idle);
    }
    snprintf(n->last_cancel, sizeof n->last_cancel, "%.150s", msg);
    n->streams_cancelled_total++;
    stream_del(n, s);
    rm_rpc_call_cancel(s->call, GRPC_STATUS_DEADLINE_EXCEEDED, msg); /* may free s */
}

static void check_streams(rm_node *n, uint64_t now_ms)
{
    kv_stream *next;
    for (kv_stream *s = n->streams; s; s = next) {
        next = s->next; /* cancelling s may free it, never another stream */
        uint64_t lease_end = s->pin ? rm_cache_pin_expires(&n->cache, s->pin) : UINT64_MAX;
        rm_stream_verdict v =
            rm_guard_stream(now_ms, s->waiting_since_ms, n->cfg.kv_stream_idle_ms, lease_end);
        if (v != RM_STREAM_KEEP)
            cancel_stream(n, s, v, now_ms);
    }
}

/* ---- registration ------------------------------------------------------ */

int rm_node_register(rm_node *n, rm_rpc_server *srv)
{
    /* Methods that take or name leases need the call to learn the caller:
     * they run as async unary methods answered before they return. */
    n->match_m = (node_method){n, do_match};
    n->insert_m = (node_method){n, do_insert};
    n->release_m = (node_method){n, do_release};
    const rm_rpc_method methods[] = {
        {.path = "/radixmesh.v1.CacheNode/Match",
         .kind = RM_RPC_UNARY_ASYNC,
         .unary_async = unary_with_call,
         .ctx = &n->match_m},
        {.path = "/radixmesh.v1.CacheNode/Insert",
         .kind = RM_RPC_UNARY_ASYNC,
         .unary_async = unary_with_call,
         .ctx = &n->insert_m},
        {.path = "/radixmesh.v1.CacheNode/Release",
         .kind = RM_RPC_UNARY_ASYNC,
         .unary_async = unary_with_call,
         .ctx = &n->release_m},
        {.path = "/radixmesh.v1.CacheNode/Stats",
         .kind = RM_RPC_UNARY,
         .unary = do_stats,
         .ctx = n},
        {.path = "/radixmesh.v1.CacheNode/ReadKV",
         .kind = RM_RPC_SERVER_STREAMING,
         .stream = read_kv,
         .ctx = n},
        {.path = "/radixmesh.v1.CacheNode/WriteKV",
         .kind = RM_RPC_CLIENT_STREAMING,
         .stream = write_kv,
         .ctx = n},
        {.path = "/grpc.health.v1.Health/Check",
         .kind = RM_RPC_UNARY,
         .unary = do_health,
         .ctx = n},
    };
    for (size_t i = 0; i < RM_ARRAY_LEN(methods); i++)
        if (rm_rpc_server_add_method(srv, &methods[i]) != 0)
            return -1;
    return 0;
}

void rm_node_set_limits(rm_node *n, uint64_t max_request_tokens, uint32_t max_leases,
                        uint32_t lease_ttl_ms, uint32_t max_lease_ttl_ms)
{
    n->cfg.max_request_tokens = max_request_tokens;
    rm_cache_set_limits(&n->cache, max_leases, lease_ttl_ms, max_lease_ttl_ms);
}
