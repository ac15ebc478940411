/* node_metrics.c -- the node's Prometheus text (/metrics): the cache's
 * counters and gauges, the streams the node cancelled, the hit budget's
 * estimates, serving state and build info. Built on the owner thread, published for the HTTP
 * thread. */
#include <math.h>
#include <stdio.h>

#include "node_internal.h"
#include "prom.h"
#include "util.h"

/* The hit budget (--hit-budget): raw counters, whose rates give any
 * window (router/README.md, "Hit budget"), and the estimate since start. */
static void budget_metrics(rm_sbuf *b, const rm_node *n, const char *l)
{
    const rm_shadow *s = &n->budget;
    const rm_shadow_counts *c = &s->counts;
    const rm_prom_row m[] = {
        {"radixmesh_hit_budget_query_tokens_total", "counter",
         "Tokens of the Matches the hit-budget estimators saw.", (double)c->query_tokens},
        {"radixmesh_hit_budget_aligned_tokens_total", "counter",
         "Their page-aligned part (a partial page never hits).", (double)c->aligned_tokens},
        {"radixmesh_hit_budget_sampled_pages_total", "counter",
         "Page accesses sampled by the estimators, weighted by 1/sampling rate.", c->pages},
        {"radixmesh_hit_budget_sampling_rate", "gauge", "Share of pages the estimators sample.",
         rm_shadow_rate(s)},
        {"radixmesh_hit_budget_memory_bytes", "gauge", "Memory of the hit-budget estimators.",
         (double)node_budget_bytes(n)},
        {"radixmesh_hit_budget_seconds_total", "counter",
         "Time the owner thread spent in the hit-budget estimators (their CPU cost).",
         (double)n->budget_ns / 1e9},
    };
    rm_prom_rows(b, m, RM_ARRAY_LEN(m), l);
    const char *fam[][3] = {
        {"radixmesh_hit_budget_sampled_hit_pages_total", "counter",
         "Sampled page accesses that hit the miniature cache of the pool x factor (weighted as "
         "the pages)."},
        {"radixmesh_hit_ratio_at_memory", "gauge",
         "Estimated token hit rate of this node's traffic with its pool x factor, since start."},
    };
    for (size_t f = 0; f < RM_ARRAY_LEN(fam); f++) {
        rm_prom_family(b, fam[f][0], fam[f][1], fam[f][2]);
        for (uint32_t i = 0; i < s->cfg.nfactors; i++) {
            double v = f == 0 ? c->hits[i] : rm_shadow_hit_ratio(c, NULL, i);
            if (isnan(v))
                continue; /* no data yet */
            char fs[32];
            snprintf(fs, sizeof fs, "%g", s->cfg.factors[i]);
            rm_prom_sample_by(b, fam[f][0], l, "factor", fs, v);
        }
    }
}

char *rm_node_metrics(rm_node *n)
{
    rm_cache_stats st;
    rm_cache_stats_get(&n->cache, &st);
    rm_sbuf b = {0};
    char l[512] = "";
    rm_prom_label(l, sizeof l, "node", n->node_id);
    const rm_prom_row counters[] = {
        {"radixmesh_match_requests_total", "counter", "Match requests accepted.",
         (double)st.match_requests_total},
        {"radixmesh_query_tokens_total", "counter", "Tokens of accepted Match requests.",
         (double)st.query_tokens_total},
        {"radixmesh_hit_tokens_total", "counter",
         "Tokens those Match requests found cached (hit rate = hit / query).",
         (double)st.hit_tokens_total},
        {"radixmesh_insert_requests_total", "counter", "Insert and WriteKV requests.",
         (double)st.insert_requests_total},
        {"radixmesh_inserted_tokens_total", "counter", "Tokens newly cached.",
         (double)st.inserted_tokens_total},
        {"radixmesh_evicted_tokens_total", "counter", "Tokens evicted to make room.",
         (double)st.evicted_tokens_total},
        {"radixmesh_dropped_tokens_total", "counter",
         "Tokens of Insert/WriteKV requests not cached: no page could be had for them (the "
         "pool is smaller than the sequence, or pinned).",
         (double)st.dropped_tokens_total},
        {"radixmesh_expired_leases_total", "counter", "Leases reclaimed by their TTL.",
         (double)st.expired_leases_total},
        {"radixmesh_namespace_refusals_total", "counter",
         "Requests refused a new namespace: --max-namespaces live ones all held entries or "
         "leases.",
         (double)st.namespace_refusals_total},
        {"radixmesh_peer_lease_refusals_total", "counter",
         "Leases refused because the caller held its share (--max-leases-per-peer).",
         (double)st.peer_lease_refusals_total},
        {"radixmesh_kv_streams_cancelled_total", "counter",
         "ReadKV/WriteKV streams the node ended: idle past --kv-stream-idle-ms, or their "
         "lease expired.",
         (double)n->streams_cancelled_total},
    };
    rm_prom_rows(&b, counters, RM_ARRAY_LEN(counters), l);
    node_mirror_metrics(n, &b, l);
    const char *states[] = {"free", "evictable", "protected"};
    double pages[] = {(double)st.free_pages, (double)st.evictable_pages,
                      (double)st.protected_pages};
    rm_prom_split(&b, "radixmesh_pool_pages", "gauge", "KV pool pages by state.", l, "state",
                  states, pages, RM_ARRAY_LEN(pages));
    const rm_prom_row gauges[] = {
        {"radixmesh_page_tokens", "gauge", "Tokens per KV page.",
         (double)rm_cache_page_tokens(&n->cache)},
        {"radixmesh_active_leases", "gauge", "Live leases.", (double)st.active_leases},
        {"radixmesh_tree_nodes", "gauge", "Radix tree nodes.", (double)st.tree_nodes},
        {"radixmesh_namespaces", "gauge", "Live namespaces.", (double)st.namespaces},
        {"radixmesh_metadata_bytes", "gauge", "Bytes of cache metadata.",
         (double)st.metadata_bytes},
        {"radixmesh_serving", "gauge", "1 while the node reports SERVING.", (double)n->serving},
    };
    rm_prom_rows(&b, gauges, RM_ARRAY_LEN(gauges), l);
    if (n->budget_on)
        budget_metrics(&b, n, l);
    rm_prom_build_info(&b, l, "node");
    return b.p;
}
