/* node_server.c -- the node's life (create, tick, limits), its unary
 * methods (Match, Insert, Release, Stats, Health), registration, and the
 * request plumbing the KV streams share: decoding, callers, and the one
 * table from cache results to gRPC statuses.
 *
 * ReadKV/WriteKV and the streams' bounds are node_kv.c; the Prometheus
 * text is node_metrics.c. */
#include "node_server.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb.h"
#include "log.h"
#include "node_internal.h"
#include "util.h"

#define REFUSAL_LOG_MS 10000 /* at most one summary line per kind this often */

/* The memory curve: the node's page size, pool and eviction policy. A
 * shadow that cannot be made leaves the node serving without it. */
static void budget_open(rm_node *n)
{
    const rm_cache_config *c = &n->cfg.cache;
    if (!n->cfg.hit_budget)
        return;
    if (!rm_shadow_models(c->policy))
        rm_log(RM_LOG_WARN, "node",
               "hit budget: eviction policy %d has no model in common/shadow.c; the memory curve "
               "estimates LRU",
               (int)c->policy);
    rm_shadow_config sc;
    rm_shadow_config_node(&sc, c->page_tokens, c->pool_pages, c->policy);
    rm_shadow_result rc = rm_shadow_init(&n->budget, &sc);
    if (rc != RM_SHADOW_OK) {
        rm_log(RM_LOG_WARN, "node", "hit budget off: %s", rm_shadow_strerror(rc));
        return;
    }
    n->budget_on = 1;
    rm_log(RM_LOG_INFO, "node", "hit budget: %u factors, sampling rate %.4g, %zu bytes",
           sc.nfactors, rm_shadow_rate(&n->budget), node_budget_bytes(n));
}

/* Each call is timed (two vDSO clock reads, ~50 ns): the estimator's cost
 * is then a figure of the running node, not only of a benchmark. */
void node_budget(rm_node *n, node_budget_fn access, const char *ns, const rm_tokens *t)
{
    if (!n->budget_on)
        return;
    uint64_t t0 = rm_now_ns();
    access(&n->budget, ns, strlen(ns), t->v, t->n);
    n->budget_ns += rm_now_ns() - t0;
}

size_t node_budget_bytes(const rm_node *n)
{
    return n->budget_on ? sizeof n->budget + rm_shadow_memory_bytes(&n->budget) : 0;
}

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
    budget_open(n);
    n->serving = 1;
    n->started_ms = rm_now_ms();
    n->ns_log.interval_ms = n->peer_log.interval_ms = n->stream_log.interval_ms = REFUSAL_LOG_MS;
    /* Local shares under 1% are cold: at most ~100 hot branches per depth.
     * As deep as routers' keys look (RM_HOT_MAX_TOKENS): past shared
     * prompts of tens of thousands of tokens. */
    uint32_t depth = rm_hotset_depth(cfg->hot_block_tokens);
    if (rm_hotset_init(&n->hot, cfg->hot_block_tokens, depth, 0.01, cfg->hot_half_life_ms,
                       rm_hotset_capacity(depth), n->started_ms) != 0) {
        rm_log(RM_LOG_ERROR, "node", "bad hot-prefix settings");
        rm_shadow_destroy(&n->budget);
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
    rm_shadow_destroy(&n->budget);
    node_mirror_destroy(n);
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

void rm_node_set_serving(rm_node *n, int serving)
{
    n->serving = serving;
}

void rm_node_tick(rm_node *n, uint64_t now_ms)
{
    uint32_t expired = rm_cache_tick(&n->cache, now_ms);
    if (expired)
        rm_log(RM_LOG_DEBUG, "node", "%u leases expired", expired);
    node_check_streams(n, now_ms);
    node_mirror_tick(n, now_ms);
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

/* Who makes call (see rm_rpc_call_peer), or NULL when gRPC cannot say. */
const rm_cache_caller *node_caller_of(rm_rpc_call *call, node_caller *nc)
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
    [RM_CACHE_LEASE_LIMIT] = GRPC_STATUS_RESOURCE_EXHAUSTED,
    [RM_CACHE_PEER_LEASE_LIMIT] = GRPC_STATUS_RESOURCE_EXHAUSTED,
    [RM_CACHE_NAMESPACE_LIMIT] = GRPC_STATUS_RESOURCE_EXHAUSTED,
    [RM_CACHE_STORES_KV] = GRPC_STATUS_FAILED_PRECONDITION,
    [RM_CACHE_METADATA_ONLY] = GRPC_STATUS_FAILED_PRECONDITION,
    [RM_CACHE_INCONSISTENT] = GRPC_STATUS_INTERNAL,
};

/* Answers a refused cache call: its status (cache_status) and a message
 * naming the limit or the object involved. */
grpc_status_code node_cache_error(rm_node *n, rm_cache_result rc, const node_cache_subject *s,
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
grpc_status_code node_decode(const rm_node *n, grpc_byte_buffer *bb, const pb_msgdesc_t *desc,
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

grpc_status_code node_check_namespace(const rm_node *n, const char *ns, char *msg, size_t len)
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

grpc_status_code node_decode_seq(const rm_node *n, grpc_byte_buffer *bb, const pb_msgdesc_t *desc,
                                 void *msg, pb_callback_t *tokens, char *const *ns, rm_tokens *toks,
                                 char *err, size_t errlen)
{
    rm_pb_tokens_decoder(tokens, toks);
    grpc_status_code code = node_decode(n, bb, desc, msg, toks, err, errlen);
    if (code == GRPC_STATUS_OK)
        code = node_check_namespace(n, *ns, err, errlen);
    return code;
}

const char *node_ns_or_empty(const char *ns)
{
    return ns ? ns : "";
}

/* ---- unary methods ---------------------------------------------------- */

/* Whether ns is the namespace the worker's KV events fill: its Matches
 * count as the engine counts, its Inserts are the events' alone. */
static int mirrored(const rm_node *n, const char *ns)
{
    const char *m = node_mirror_namespace(n);
    return m && !strcmp(m, ns);
}

/* Decays the node's recent work to now. */
static void decay_work(rm_node *n, uint64_t now)
{
    if (now <= n->recent_ms)
        return;
    double f = exp2(-(double)(now - n->recent_ms) / RM_NODE_WORK_HALF_LIFE_MS);
    n->recent_uncached *= f;
    n->recent_output *= f;
    n->recent_ms = now;
}

static grpc_status_code do_match(rm_node *n, rm_rpc_call *call, grpc_byte_buffer *req,
                                 grpc_byte_buffer **reply, char *msg, size_t len)
{
    radixmesh_v1_MatchRequest r = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens toks = {0};
    grpc_status_code code = node_decode_seq(n, req, radixmesh_v1_MatchRequest_fields, &r, &r.tokens,
                                            &r.namespace, &toks, msg, len);
    if (code == GRPC_STATUS_OK && r.peek && r.lease) {
        snprintf(msg, len, "a peek cannot take a lease");
        code = GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (code == GRPC_STATUS_OK && r.peek) {
        const char *ns = node_ns_or_empty(r.namespace);
        radixmesh_v1_MatchReply rep = radixmesh_v1_MatchReply_init_zero;
        rep.matched_tokens = (uint32_t)rm_cache_peek(&n->cache, ns, strlen(ns), toks.v, toks.n);
        rep.node_id = n->node_id;
        code = encode(radixmesh_v1_MatchReply_fields, &rep, reply, msg, len);
    } else if (code == GRPC_STATUS_OK) {
        const char *ns = node_ns_or_empty(r.namespace);
        uint64_t now = rm_now_ms();
        rm_match_result mr = {0};
        node_caller nc;
        const rm_cache_caller *who = r.lease ? node_caller_of(call, &nc) : NULL;
        rm_cache_result rc = RM_CACHE_OK;
        if (!r.lease && mirrored(n, ns)) /* counted as the engine counts its own hits */
            mr.matched_tokens =
                rm_cache_match_engine(&n->cache, ns, strlen(ns), toks.v, toks.n, now);
        else
            rc = rm_cache_match(&n->cache, who, ns, strlen(ns), toks.v, toks.n, r.lease,
                                r.lease_ttl_ms, now, &mr);
        if (rc == RM_CACHE_OK) {
            rm_hotset_add(&n->hot, ns, strlen(ns), toks.v, toks.n, now);
            node_budget(n, rm_shadow_match, ns, &toks);
            /* A declared reply is at most a request's size, as routers
             * bound it (placement.h, rm_place_output). */
            uint64_t out = r.output_tokens < n->cfg.max_request_tokens ? r.output_tokens
                                                                       : n->cfg.max_request_tokens;
            n->uncached_tokens_total += toks.n - mr.matched_tokens;
            n->output_tokens_total += out;
            decay_work(n, now);
            n->recent_uncached += (double)(toks.n - mr.matched_tokens);
            n->recent_output += (double)out;
        }
        if (rc) {
            code = node_cache_error(n, rc, &(node_cache_subject){.who = who}, msg, len);
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

void node_fill_insert_reply(const rm_node *n, const rm_insert_result *ir,
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
    grpc_status_code code = node_decode_seq(n, req, radixmesh_v1_InsertRequest_fields, &r,
                                            &r.tokens, &r.namespace, &toks, msg, len);
    if (code == GRPC_STATUS_OK) {
        const char *ns = node_ns_or_empty(r.namespace);
        rm_insert_result ir;
        node_caller nc;
        const rm_cache_caller *who = r.lease_id ? node_caller_of(call, &nc) : NULL;
        rm_cache_result rc = RM_CACHE_OK;
        if (mirrored(n, ns)) { /* what the worker holds comes from its events alone */
            uint32_t pt = rm_cache_page_tokens(&n->cache);
            ir = (rm_insert_result){.dropped_tokens = toks.n / pt * pt};
            n->mirror_foreign_inserts++;
        } else {
            rc = rm_cache_insert(&n->cache, who, ns, strlen(ns), toks.v, toks.n, r.lease_id,
                                 rm_now_ms(), &ir);
        }
        if (rc) {
            code = node_cache_error(
                n, rc, &(node_cache_subject){.lease_id = r.lease_id, .who = who}, msg, len);
        } else {
            radixmesh_v1_InsertReply rep = radixmesh_v1_InsertReply_init_zero;
            node_budget(n, rm_shadow_insert, ns, &toks);
            node_fill_insert_reply(n, &ir, &rep);
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
    grpc_status_code code =
        node_decode(n, req, radixmesh_v1_ReleaseRequest_fields, &r, NULL, msg, len);
    if (code == GRPC_STATUS_OK) {
        node_caller nc;
        const rm_cache_caller *who = node_caller_of(call, &nc);
        rm_cache_result rc = rm_cache_release(&n->cache, who, r.lease_id);
        if (rc) {
            code = node_cache_error(
                n, rc, &(node_cache_subject){.lease_id = r.lease_id, .who = who}, msg, len);
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
    grpc_status_code code =
        node_decode(n, req, radixmesh_v1_StatsRequest_fields, &r, NULL, msg, len);
    if (code != GRPC_STATUS_OK)
        return code;
    rm_cache_stats st;
    rm_cache_stats_get(&n->cache, &st);
    radixmesh_v1_NodeStats rep = radixmesh_v1_NodeStats_init_zero;
    rep.node_id = n->node_id;
    rep.page_tokens = rm_cache_page_tokens(&n->cache);
    rep.kv_bytes_per_token = rm_cache_kv_bytes_per_token(&n->cache);
    /* The cache's counters and gauges, field for field. */
    rep.match_requests_total = st.match_requests_total;
    rep.query_tokens_total = st.query_tokens_total;
    rep.hit_tokens_total = st.hit_tokens_total;
    rep.inserted_tokens_total = st.inserted_tokens_total;
    rep.evicted_tokens_total = st.evicted_tokens_total;
    rep.dropped_tokens_total = st.dropped_tokens_total;
    rep.pool_pages = st.pool_pages;
    rep.free_pages = st.free_pages;
    rep.evictable_pages = st.evictable_pages;
    rep.protected_pages = st.protected_pages;
    rep.active_leases = st.active_leases;
    rep.insert_requests_total = st.insert_requests_total;
    rep.expired_leases_total = st.expired_leases_total;
    rep.tree_nodes = st.tree_nodes;
    rep.namespace_refusals_total = st.namespace_refusals_total;
    rep.namespaces = st.namespaces;
    rep.peer_lease_refusals_total = st.peer_lease_refusals_total;
    rep.metadata_bytes = st.metadata_bytes;
    rep.uncached_tokens_total = n->uncached_tokens_total;
    rep.output_tokens_total = n->output_tokens_total;
    decay_work(n, rm_now_ms());
    rep.recent_uncached_tokens = n->recent_uncached;
    rep.recent_output_tokens = n->recent_output;
    rep.work_half_life_ms = RM_NODE_WORK_HALF_LIFE_MS;
    rep.work_at_unix_ms = rm_wall_ms();
    rep.version = (char *)RM_VERSION;
    rep.worker_url = (char *)(n->cfg.worker_url ? n->cfg.worker_url : "");
    uint64_t now = rm_now_ms();
    rep.uptime_ms = now - n->started_ms;
    rep.serving = n->serving;
    rep.eviction_policy = (uint32_t)n->cfg.cache.policy;
    if (n->budget_on) {
        const rm_shadow *b = &n->budget;
        rep.hit_budget_factors_count = rep.hit_budget_hit_tokens_count = (pb_size_t)b->cfg.nfactors;
        for (uint32_t i = 0; i < b->cfg.nfactors; i++) {
            rep.hit_budget_factors[i] = b->cfg.factors[i];
            rep.hit_budget_hit_tokens[i] = rm_shadow_hit_tokens(&b->counts, NULL, i);
        }
        rep.hit_budget_query_tokens = b->counts.query_tokens;
        rep.hit_budget_aligned_tokens = b->counts.aligned_tokens;
        rep.hit_budget_samples = b->counts.samples;
        rep.hit_budget_sampling_rate = rm_shadow_rate(b);
        rep.hit_budget_memory_bytes = node_budget_bytes(n);
    }
    rep.hot_block_tokens = n->hot.block_tokens;
    node_mirror_stats(n, &rep);
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
    const rm_node *n = ctx;
    grpc_health_v1_HealthCheckRequest r = grpc_health_v1_HealthCheckRequest_init_zero;
    grpc_status_code code =
        node_decode(n, req, grpc_health_v1_HealthCheckRequest_fields, &r, NULL, msg, len);
    if (code == GRPC_STATUS_OK) {
        const char *svc = node_ns_or_empty(r.service);
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

/* ---- registration ------------------------------------------------------ */

/* Methods that take or name leases need the call to learn the caller:
 * they run as async unary methods answered before they return. */
static rm_rpc_method with_call(const char *path, node_method *m)
{
    return (rm_rpc_method){
        .path = path, .kind = RM_RPC_UNARY_ASYNC, .unary_async = unary_with_call, .ctx = m};
}

static rm_rpc_method unary(const char *path, rm_unary_fn fn, rm_node *n)
{
    return (rm_rpc_method){.path = path, .kind = RM_RPC_UNARY, .unary = fn, .ctx = n};
}

static rm_rpc_method streaming(const char *path, rm_rpc_kind kind, rm_stream_fn fn, rm_node *n)
{
    return (rm_rpc_method){.path = path, .kind = kind, .stream = fn, .ctx = n};
}

int rm_node_register(rm_node *n, rm_rpc_server *srv)
{
    n->match_m = (node_method){n, do_match};
    n->insert_m = (node_method){n, do_insert};
    n->release_m = (node_method){n, do_release};
    const rm_rpc_method methods[] = {
        with_call("/radixmesh.v1.CacheNode/Match", &n->match_m),
        with_call("/radixmesh.v1.CacheNode/Insert", &n->insert_m),
        with_call("/radixmesh.v1.CacheNode/Release", &n->release_m),
        unary("/radixmesh.v1.CacheNode/Stats", do_stats, n),
        streaming("/radixmesh.v1.CacheNode/ReadKV", RM_RPC_SERVER_STREAMING, node_read_kv, n),
        streaming("/radixmesh.v1.CacheNode/WriteKV", RM_RPC_CLIENT_STREAMING, node_write_kv, n),
        unary("/grpc.health.v1.Health/Check", do_health, n),
    };
    for (size_t i = 0; i < RM_ARRAY_LEN(methods); i++)
        if (rm_rpc_server_add_method(srv, &methods[i]) != 0)
            return -1;
    return 0;
}

int rm_node_mirror_start(rm_node *n, rm_rpc_server *srv, char *err, size_t errlen)
{
    return node_mirror_start(n, srv, err, errlen);
}

void rm_node_mirror_stop(rm_node *n)
{
    node_mirror_stop(n);
}

void rm_node_set_limits(rm_node *n, uint64_t max_request_tokens, uint32_t max_leases,
                        uint32_t lease_ttl_ms, uint32_t max_lease_ttl_ms)
{
    n->cfg.max_request_tokens = max_request_tokens;
    rm_cache_set_limits(&n->cache, max_leases, lease_ttl_ms, max_lease_ttl_ms);
}
