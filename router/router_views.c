/* router_views.c -- what the router publishes: ClusterStats, /metrics,
 * /api/cluster and the per-second history the dashboard draws. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "pbx.h"
#include "prom.h"
#include "router_internal.h"
#include "util.h"

static bool encode_nodes(pb_ostream_t *s, const pb_field_t *f, void *const *arg)
{
    rm_router *r = *arg;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (n->removed)
            continue;
        radixmesh_v1_NodeStats st = radixmesh_v1_NodeStats_init_zero;
        if (n->have_stats)
            st = n->stats;
        st.node_id = n->id ? n->id : (char *)"";
        st.healthy = n->healthy;
        st.routed_requests = n->routed;
        st.address = n->address;
        st.load = rt_node_load(r, n, rm_now_ms());
        st.worker_healthy = n->worker_port && rt_worker_up(n);
        st.worker_metrics = n->worker_has_counts || n->worker_rate >= 0;
        st.worker_hit_tokens = n->worker_hit;
        st.worker_query_tokens = n->worker_query;
        st.worker_hit_rate = n->worker_port ? n->worker_rate : -1;
        st.gateway_requests = n->gw_requests;
        st.gateway_inflight = n->gw_inflight;
        if (!pb_encode_tag_for_field(s, f) ||
            !pb_encode_submessage(s, radixmesh_v1_NodeStats_fields, &st))
            return false;
    }
    return true;
}

/* Sums the workers' own prefix-cache counters. Returns the hit rate they
 * give, or the mean of the workers' reported rates when none has counters
 * (SGLang exports only a rate), or -1 when no worker reports anything. */
static double worker_totals(const rm_router *r, uint64_t *hit, uint64_t *query)
{
    *hit = *query = 0;
    double rate_sum = 0;
    int rates = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        const rnode *n = r->nodes[i];
        if (n->removed || !n->worker_port)
            continue;
        if (n->worker_has_counts) {
            *hit += n->worker_hit;
            *query += n->worker_query;
        } else if (n->worker_rate >= 0) {
            rate_sum += n->worker_rate;
            rates++;
        }
    }
    if (*query)
        return (double)*hit / (double)*query;
    return rates ? rate_sum / rates : -1;
}

/* ClusterStats' hit budget (achieved: the cluster's rate, -1: none). */
static void budget_fill(const rm_router *r, double achieved, radixmesh_v1_ClusterStats *cs)
{
    rt_budget_figures b;
    rt_budget_view(r, achieved, &b);
    cs->infinite_hit_rate = b.infinite;
    cs->ideal_hit_rate = b.ideal;
    cs->memory_curve_count = RM_BUDGET_POINTS;
    for (int k = 0; k < RM_BUDGET_POINTS; k++)
        cs->memory_curve[k] = (radixmesh_v1_HitBudgetPoint){
            b.curve[k].memory, b.curve[k].hit_rate, b.curve[k].hit_tokens, b.curve[k].query_tokens};
    cs->budget_query_tokens = b.query_tokens;
    cs->ideal_hit_tokens = b.ideal_hit_tokens;
    cs->infinite_hit_tokens = b.infinite_hit_tokens;
    if (r->budget_on) {
        cs->ideal_pool_pages = r->budget.pool_pages;
        cs->ideal_sampling_rate = rm_shadow_rate(&r->budget);
        cs->infinite_sampling_rate = rm_shadow_infinite_rate(&r->budget);
        cs->budget_memory_bytes = rt_budget_bytes(r);
    }
}

grpc_status_code rt_do_cluster_stats(void *ctx, grpc_byte_buffer *req, grpc_byte_buffer **reply,
                                     char *msg, size_t len)
{
    rm_router *r = ctx;
    radixmesh_v1_ClusterStatsRequest q = radixmesh_v1_ClusterStatsRequest_init_zero;
    if (!rm_pb_decode_bb(req, radixmesh_v1_ClusterStatsRequest_fields, &q, msg, len))
        return GRPC_STATUS_INVALID_ARGUMENT;
    radixmesh_v1_ClusterStats cs = radixmesh_v1_ClusterStats_init_zero;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (n->removed || !n->have_stats)
            continue;
        cs.match_requests_total += n->stats.match_requests_total;
        cs.query_tokens_total += n->stats.query_tokens_total;
        cs.hit_tokens_total += n->stats.hit_tokens_total;
    }
    cs.hit_rate =
        cs.query_tokens_total ? (double)cs.hit_tokens_total / (double)cs.query_tokens_total : 0.0;
    budget_fill(r, cs.query_tokens_total ? cs.hit_rate : -1, &cs);
    cs.worker_hit_rate =
        worker_totals(r, &cs.worker_hit_tokens_total, &cs.worker_query_tokens_total);
    cs.gateway_requests_total = r->gw_requests_total;
    cs.routed_requests_total = r->routed_total;
    cs.spills_total = r->spills;
    cs.failovers_total = r->failovers;
    cs.retries_total = r->retries;
    cs.ejections_total = r->ejections;
    cs.healthy_nodes = r->healthy;
    cs.hot_prefixes = (uint32_t)r->nhot;
    cs.hot_share = r->hot_share_now;
    cs.router_id = (char *)r->cfg.router_id;
    cs.nodes.funcs.encode = encode_nodes;
    cs.nodes.arg = r;
    *reply = rm_pb_encode_bb(radixmesh_v1_ClusterStats_fields, &cs);
    if (!*reply) {
        snprintf(msg, len, "cannot encode ClusterStats");
        return GRPC_STATUS_INTERNAL;
    }
    return GRPC_STATUS_OK;
}

static void cluster_totals(const rm_router *r, uint64_t *hit, uint64_t *query)
{
    *hit = *query = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        const rnode *n = r->nodes[i];
        if (n->removed || !n->have_stats)
            continue;
        *hit += n->stats.hit_tokens_total;
        *query += n->stats.query_tokens_total;
    }
}

void rm_router_sample(rm_router *r, uint64_t now_ms)
{
    sample *s = &r->history[r->hist_next];
    s->t_ms = now_ms;
    cluster_totals(r, &s->hit, &s->query);
    s->routed = r->routed_total;
    s->spills = r->spills;
    r->hist_next = (r->hist_next + 1) % HISTORY;
    if (r->nhist < HISTORY)
        r->nhist++;
}

/* A gauge sample, left out while it has no data (v < 0). */
static void known_sample(rm_sbuf *b, const char *name, const char *labels, double v)
{
    if (v >= 0)
        rm_prom_sample(b, name, labels, v);
}

/* The hit budget: the ratios since start, and the router's raw counters
 * whose rates give any window (router/README.md, "Hit budget"). */
static void budget_metrics(rm_sbuf *b, const rm_router *r, const char *rl, double achieved)
{
    rt_budget_figures v;
    rt_budget_view(r, achieved, &v);
    rm_prom_family(b, "radixmesh_cluster_infinite_hit_ratio", "gauge",
                   "Token hit rate an unbounded cache would get on this router's traffic, since "
                   "start (estimate).");
    known_sample(b, "radixmesh_cluster_infinite_hit_ratio", rl, v.infinite);
    rm_prom_family(b, "radixmesh_cluster_ideal_hit_ratio", "gauge",
                   "Token hit rate one cache of the healthy nodes' summed pools would get on this "
                   "router's traffic, since start (estimate).");
    known_sample(b, "radixmesh_cluster_ideal_hit_ratio", rl, v.ideal);
    rm_prom_family(b, "radixmesh_cluster_hit_ratio_at_memory", "gauge",
                   "The cluster's token hit rate with every pool x factor, routing as it is, since "
                   "the nodes started (factor 1: the achieved rate).");
    for (int k = 0; k < RM_BUDGET_POINTS; k++) {
        char f[32];
        snprintf(f, sizeof f, "%g", v.curve[k].memory);
        if (v.curve[k].hit_rate >= 0) /* no data yet */
            rm_prom_sample_by(b, "radixmesh_cluster_hit_ratio_at_memory", rl, "factor", f,
                              v.curve[k].hit_rate);
    }
    if (!r->budget_on)
        return;
    const rm_shadow_counts *c = &r->budget.counts;
    const rm_prom_row m[] = {
        {"radixmesh_router_hit_budget_query_tokens_total", "counter",
         "Tokens of the requests this router fed its ideal and infinite estimators.",
         (double)c->query_tokens},
        {"radixmesh_router_hit_budget_aligned_tokens_total", "counter",
         "Their page-aligned part (a partial page never hits).", (double)c->aligned_tokens},
        {"radixmesh_router_hit_budget_ideal_pool_pages", "gauge",
         "Pages of the ideal cache: the healthy nodes' summed pools.",
         (double)r->budget.pool_pages},
        {"radixmesh_router_hit_budget_memory_bytes", "gauge",
         "Memory of the router's hit-budget estimators.", (double)rt_budget_bytes(r)},
        {"radixmesh_router_hit_budget_seconds_total", "counter",
         "Time the router thread spent in the hit-budget estimators (their CPU cost).",
         (double)r->budget_ns / 1e9},
    };
    rm_prom_rows(b, m, RM_ARRAY_LEN(m), rl);
    const char *fams[][3] = {
        {"radixmesh_router_hit_budget_pages_total", "counter",
         "Page accesses sampled by the estimator, weighted by 1/sampling rate."},
        {"radixmesh_router_hit_budget_hit_pages_total", "counter",
         "Those that hit its cache (weighted as the pages)."},
        {"radixmesh_router_hit_budget_sampling_rate", "gauge",
         "Share of pages the estimator samples."},
    };
    const char *caches[] = {"ideal", "infinite"};
    double vals[3][2] = {{c->pages, c->inf_pages},
                         {c->hits[0], c->inf_hits},
                         {rm_shadow_rate(&r->budget), rm_shadow_infinite_rate(&r->budget)}};
    for (size_t i = 0; i < RM_ARRAY_LEN(fams); i++)
        rm_prom_split(b, fams[i][0], fams[i][1], fams[i][2], rl, "cache", caches, vals[i],
                      RM_ARRAY_LEN(caches));
}

char *rm_router_metrics(rm_router *r)
{
    rm_sbuf b = {0};
    uint64_t hit, query;
    cluster_totals(r, &hit, &query);
    char rl[512] = "";
    rm_prom_label(rl, sizeof rl, "router", r->cfg.router_id);
    const rm_prom_row head[] = {
        {"radixmesh_cluster_hit_tokens_total", "counter",
         "Tokens the cluster's Match requests found cached (sum over nodes).", (double)hit},
        {"radixmesh_cluster_query_tokens_total", "counter",
         "Tokens of the cluster's Match requests (sum over nodes).", (double)query},
        {"radixmesh_router_routed_requests_total", "counter", "Requests routed (Match and Route).",
         (double)r->routed_total},
        {"radixmesh_router_spills_total", "counter", "Requests that skipped an overloaded node.",
         (double)r->spills},
        {"radixmesh_router_failovers_total", "counter", "Calls moved off a failed node.",
         (double)r->failovers},
        {"radixmesh_router_retries_total", "counter", "Calls retried on another node.",
         (double)r->retries},
        {"radixmesh_router_ejections_total", "counter",
         "Nodes taken off the ring after consecutive failures (--eject-after-failures).",
         (double)r->ejections},
    };
    rm_prom_rows(&b, head, RM_ARRAY_LEN(head), rl);
    if (r->gw_requests_total || r->nworkers) {
        uint64_t wh, wq;
        const rm_prom_row gw[] = {
            {"radixmesh_router_gateway_routed_total", "counter",
             "HTTP requests the gateway routed to workers.", (double)r->gw_requests_total},
            {"radixmesh_router_worker_breaker_opens_total", "counter",
             "Times a worker's circuit breaker opened (failed requests or trials).",
             (double)r->breaker_opens},
            {"radixmesh_cluster_worker_hit_rate", "gauge",
             "The workers' own prefix-cache hit rate (-1: unknown).", worker_totals(r, &wh, &wq)},
        };
        rm_prom_rows(&b, gw, RM_ARRAY_LEN(gw), rl);
        rm_prom_family(&b, "radixmesh_node_worker_up", "gauge",
                       "1 while the node's worker is reachable and its circuit breaker closed.");
        for (uint32_t i = 0; i < r->nnodes; i++) {
            rnode *n = r->nodes[i];
            if (!n->removed && n->id && n->worker_port)
                rm_prom_sample_by(&b, "radixmesh_node_worker_up", rl, "node", n->id,
                                  rt_worker_up(n));
        }
    }
    budget_metrics(&b, r, rl, query ? (double)hit / (double)query : -1);
    const rm_prom_row state[] = {
        {"radixmesh_router_healthy_nodes", "gauge", "Nodes answering, neither ejected nor failing.",
         r->healthy},
        {"radixmesh_router_panic", "gauge",
         "1 while too few nodes are healthy (--panic-threshold) and all are routed to.", r->panic},
        {"radixmesh_router_hot_prefixes", "gauge", "Prefixes routing keys extend past.",
         (double)r->nhot},
    };
    rm_prom_rows(&b, state, RM_ARRAY_LEN(state), rl);
    /* Per node: cardinality is bounded by the membership. */
    const char *fams[][3] = {
        {"radixmesh_node_up", "gauge", "1 while the node is healthy."},
        {"radixmesh_node_failures", "gauge", "Consecutive failed calls to the node."},
        {"radixmesh_node_routed_requests_total", "counter", "Requests routed to the node."},
        {"radixmesh_node_hit_tokens_total", "counter", "The node's hit tokens (its Stats)."},
        {"radixmesh_node_query_tokens_total", "counter", "The node's query tokens (its Stats)."},
        {"radixmesh_node_evicted_tokens_total", "counter", "The node's evicted tokens."},
        {"radixmesh_node_dropped_tokens_total", "counter",
         "Tokens the node could not cache: no page to be had (pool smaller than the sequence, "
         "or leased)."},
        {"radixmesh_node_pool_pages", "gauge", "The node's pool size in pages."},
        {"radixmesh_node_free_pages", "gauge", "The node's free pages."},
        {"radixmesh_node_load", "gauge",
         "The router's view of the node's load: work in tokens (--load-unit requests: in-flight + "
         "recent routed requests)."},
        {"radixmesh_node_expired_charges_total", "counter",
         "Routes charged to the node that it never counted, dropped after --charge-ttl-ms "
         "(their client did not call the node; a share a report took is not counted)."},
        {"radixmesh_node_kv_precise", "gauge",
         "1 while the node mirrors its worker from the worker's KV events."},
        {"radixmesh_node_kv_resyncs_total", "counter",
         "Times the node's precise mirror was emptied to start again."},
    };
    uint64_t now = rm_now_ms();
    for (size_t f = 0; f < RM_ARRAY_LEN(fams); f++) {
        rm_prom_family(&b, fams[f][0], fams[f][1], fams[f][2]);
        for (uint32_t i = 0; i < r->nnodes; i++) {
            rnode *n = r->nodes[i];
            if (n->removed || !n->id)
                continue;
            const radixmesh_v1_NodeStats *st = &n->stats;
            double v[] = {n->healthy,
                          (double)n->ol.failures,
                          (double)n->routed,
                          (double)st->hit_tokens_total,
                          (double)st->query_tokens_total,
                          (double)st->evicted_tokens_total,
                          (double)st->dropped_tokens_total,
                          (double)st->pool_pages,
                          (double)st->free_pages,
                          rt_node_load(r, n, now),
                          n->charges.expired_requests,
                          st->kv_events,
                          (double)st->kv_resyncs_total};
            _Static_assert(RM_ARRAY_LEN(v) == RM_ARRAY_LEN(fams), "a value for every family");
            rm_prom_sample_by(&b, fams[f][0], rl, "node", n->id, v[f]);
        }
    }
    rm_prom_build_info(&b, rl, "router");
    return b.p;
}

static json_t *rate_or_null(double v)
{
    return v >= 0 ? json_real(v) : json_null();
}

/* /api/cluster's hit_budget: rates in 0..1 or null (no data), cumulative
 * since start. achieved is exactly hit_rate (0 before any query). */
static json_t *budget_json(const rm_router *r, double achieved, double delivered)
{
    rt_budget_figures v;
    rt_budget_view(r, achieved, &v);
    json_t *o = json_object(), *curve = json_array();
    json_object_set_new(o, "infinite", rate_or_null(v.infinite));
    json_object_set_new(o, "ideal", rate_or_null(v.ideal));
    json_object_set_new(o, "achieved", json_real(achieved >= 0 ? achieved : 0));
    json_object_set_new(o, "delivered", rate_or_null(delivered));
    for (int k = 0; k < RM_BUDGET_POINTS; k++) {
        const rm_budget_point *p = &v.curve[k];
        json_t *j = json_object();
        json_object_set_new(j, "memory", json_real(p->memory));
        json_object_set_new(j, "hit_rate", rate_or_null(p->hit_rate));
        json_object_set_new(j, "estimate",
                            rate_or_null(rm_budget_rate(p->hit_tokens, p->query_tokens)));
        json_array_append_new(curve, j);
    }
    json_object_set_new(o, "memory_curve", curve);
    json_object_set_new(o, "window", json_string("since start"));
    json_object_set_new(o, "query_tokens", json_integer((json_int_t)v.query_tokens));
    json_object_set_new(o, "ideal_pool_pages",
                        json_integer(r->budget_on ? (json_int_t)r->budget.pool_pages : 0));
    json_object_set_new(o, "sampling_rate",
                        json_real(r->budget_on ? rm_shadow_rate(&r->budget) : 0));
    json_object_set_new(o, "memory_bytes", json_integer((json_int_t)rt_budget_bytes(r)));
    return o;
}

/* A node mirroring its worker from KV events: how the stream goes. The
 * counters keep their NodeStats names, so /api/cluster and ClusterStats
 * read alike. */
static void kv_json(json_t *j, const radixmesh_v1_NodeStats *st)
{
    typedef struct {
        const char *key;
        uint64_t v;
    } kv_field;
#define KV_FIELD(field) ((kv_field){#field, st->field})
    const kv_field f[] = {KV_FIELD(kv_batches_total),
                          KV_FIELD(kv_events_applied_total),
                          KV_FIELD(kv_events_skipped_total),
                          KV_FIELD(kv_gaps_total),
                          KV_FIELD(kv_replays_total),
                          KV_FIELD(kv_replayed_total),
                          KV_FIELD(kv_resyncs_total),
                          KV_FIELD(kv_drops_total),
                          KV_FIELD(kv_malformed_total),
                          KV_FIELD(kv_block_size_mismatches_total),
                          KV_FIELD(kv_blocks),
                          KV_FIELD(worker_cache_tokens),
                          KV_FIELD(kv_worker_restarts_total)};
#undef KV_FIELD
    for (size_t i = 0; i < RM_ARRAY_LEN(f); i++)
        json_object_set_new(j, f[i].key, json_integer((json_int_t)f[i].v));
    json_object_set_new(j, "kv_lag_ms", json_real(st->kv_lag_ms));
    json_object_set_new(j, "kv_namespace", json_string(st->kv_namespace ? st->kv_namespace : ""));
    json_object_set_new(j, "kv_last_seq",
                        st->kv_has_seq ? json_integer((json_int_t)st->kv_last_seq) : json_null());
}

char *rm_router_cluster_json(rm_router *r)
{
    uint64_t hit, query;
    cluster_totals(r, &hit, &query);
    json_t *o = json_object(), *nodes = json_array(), *hist = json_array();
    json_object_set_new(o, "router_id", json_string(r->cfg.router_id));
    json_object_set_new(o, "hit_tokens_total", json_integer((json_int_t)hit));
    json_object_set_new(o, "query_tokens_total", json_integer((json_int_t)query));
    json_object_set_new(o, "hit_rate", json_real(query ? (double)hit / (double)query : 0));
    json_object_set_new(o, "routed_requests_total", json_integer((json_int_t)r->routed_total));
    json_object_set_new(o, "spills_total", json_integer((json_int_t)r->spills));
    json_object_set_new(o, "failovers_total", json_integer((json_int_t)r->failovers));
    json_object_set_new(o, "ejections_total", json_integer((json_int_t)r->ejections));
    json_object_set_new(o, "panic", json_boolean(r->panic));
    json_object_set_new(o, "healthy_nodes", json_integer(r->healthy));
    json_object_set_new(o, "hot_prefixes", json_integer((json_int_t)r->nhot));
    uint64_t wh, wq;
    double wr = worker_totals(r, &wh, &wq);
    json_object_set_new(o, "worker_hit_rate", wr >= 0 ? json_real(wr) : json_null());
    json_object_set_new(o, "worker_hit_tokens_total", json_integer((json_int_t)wh));
    json_object_set_new(o, "worker_query_tokens_total", json_integer((json_int_t)wq));
    json_object_set_new(o, "gateway_requests_total",
                        json_integer((json_int_t)r->gw_requests_total));
    json_object_set_new(o, "hit_budget",
                        budget_json(r, query ? (double)hit / (double)query : -1, wr));
    uint64_t now = rm_now_ms();
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (n->removed)
            continue;
        const radixmesh_v1_NodeStats *st = &n->stats;
        json_t *j = json_object();
        json_object_set_new(j, "id", json_string(n->id ? n->id : ""));
        json_object_set_new(j, "address", json_string(n->address));
        json_object_set_new(j, "healthy", json_boolean(n->healthy));
        json_object_set_new(j, "ejected", json_boolean(n->ol.ejected));
        json_object_set_new(j, "failures", json_integer(n->ol.failures));
        json_object_set_new(j, "hit_tokens_total", json_integer((json_int_t)st->hit_tokens_total));
        json_object_set_new(j, "query_tokens_total",
                            json_integer((json_int_t)st->query_tokens_total));
        json_object_set_new(j, "match_requests_total",
                            json_integer((json_int_t)st->match_requests_total));
        json_object_set_new(j, "routed_requests", json_integer((json_int_t)n->routed));
        json_object_set_new(j, "pool_pages", json_integer((json_int_t)st->pool_pages));
        json_object_set_new(j, "free_pages", json_integer((json_int_t)st->free_pages));
        json_object_set_new(j, "evicted_tokens_total",
                            json_integer((json_int_t)st->evicted_tokens_total));
        json_object_set_new(j, "dropped_tokens_total",
                            json_integer((json_int_t)st->dropped_tokens_total));
        json_object_set_new(j, "active_leases", json_integer((json_int_t)st->active_leases));
        json_object_set_new(j, "load", json_real(rt_node_load(r, n, now)));
        json_object_set_new(j, "expired_charges_total", json_real(n->charges.expired_requests));
        json_object_set_new(j, "unconfirmed_requests",
                            json_real(rm_charges_total(&n->charges).requests));
        if (n->worker_port) {
            char url[300];
            snprintf(url, sizeof url, "http://%s:%d", n->worker_host, n->worker_port);
            json_object_set_new(j, "worker_url", json_string(url));
            json_object_set_new(j, "worker_healthy", json_boolean(rt_worker_up(n)));
            json_object_set_new(j, "worker_breaker",
                                json_string(rm_breaker_state_name(n->breaker.state)));
            json_object_set_new(j, "worker_hit_rate",
                                n->worker_has_counts && n->worker_query
                                    ? json_real((double)n->worker_hit / (double)n->worker_query)
                                : n->worker_rate >= 0 ? json_real(n->worker_rate)
                                                      : json_null());
            json_object_set_new(j, "gateway_requests", json_integer((json_int_t)n->gw_requests));
            json_object_set_new(j, "gateway_inflight", json_integer(n->gw_inflight));
            json_object_set_new(j, "mirror", json_string(st->kv_events ? "precise" : "approx"));
        }
        if (st->kv_events)
            kv_json(j, st);
        json_array_append_new(nodes, j);
    }
    json_object_set_new(o, "nodes", nodes);
    /* History: per-second hit rate and request rate over the window. */
    for (size_t k = 1; k < r->nhist; k++) {
        const sample *a = &r->history[(r->hist_next + HISTORY - r->nhist + k - 1) % HISTORY];
        const sample *b = &r->history[(r->hist_next + HISTORY - r->nhist + k) % HISTORY];
        double dt = (double)(b->t_ms - a->t_ms) / 1000.0;
        uint64_t dq = b->query - a->query, dh = b->hit - a->hit;
        json_t *p = json_object();
        json_object_set_new(p, "t", json_real((double)(b->t_ms - r->started_ms) / 1000.0));
        json_object_set_new(p, "hit_rate", dq ? json_real((double)dh / (double)dq) : json_null());
        json_object_set_new(p, "requests_per_second",
                            json_real(dt > 0 ? (double)(b->routed - a->routed) / dt : 0));
        json_object_set_new(p, "spills", json_integer((json_int_t)(b->spills - a->spills)));
        json_array_append_new(hist, p);
    }
    json_object_set_new(o, "history", hist);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}
