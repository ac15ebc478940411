/* node_metrics.c -- the node's Prometheus text (/metrics): the cache's
 * counters and gauges, the streams the node cancelled, serving state and
 * build info. Built on the owner thread, published for the HTTP thread. */
#include <stdio.h>

#include "node_internal.h"
#include "prom.h"
#include "util.h"

typedef struct node_metric {
    const char *name, *type, *help;
    double value;
} node_metric;

static void metrics_out(rm_sbuf *b, const node_metric *m, size_t n, const char *labels)
{
    for (size_t i = 0; i < n; i++)
        rm_prom_metric(b, m[i].name, m[i].type, m[i].help, labels, m[i].value);
}

char *rm_node_metrics(rm_node *n)
{
    rm_cache_stats st;
    rm_cache_stats_get(&n->cache, &st);
    rm_sbuf b = {0};
    char l[512] = "";
    rm_prom_label(l, sizeof l, "node", n->node_id);
    const node_metric counters[] = {
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
    metrics_out(&b, counters, RM_ARRAY_LEN(counters), l);
    rm_prom_family(&b, "radixmesh_pool_pages", "gauge", "KV pool pages by state.");
    const char *states[] = {"free", "evictable", "protected"};
    uint64_t pages[] = {st.free_pages, st.evictable_pages, st.protected_pages};
    for (int i = 0; i < 3; i++) {
        char ls[600];
        snprintf(ls, sizeof ls, "%s", l);
        rm_prom_label(ls, sizeof ls, "state", states[i]);
        rm_prom_sample(&b, "radixmesh_pool_pages", ls, (double)pages[i]);
    }
    const node_metric gauges[] = {
        {"radixmesh_page_tokens", "gauge", "Tokens per KV page.",
         (double)rm_cache_page_tokens(&n->cache)},
        {"radixmesh_active_leases", "gauge", "Live leases.", (double)st.active_leases},
        {"radixmesh_tree_nodes", "gauge", "Radix tree nodes.", (double)st.tree_nodes},
        {"radixmesh_namespaces", "gauge", "Live namespaces.", (double)st.namespaces},
        {"radixmesh_metadata_bytes", "gauge", "Bytes of cache metadata.",
         (double)st.metadata_bytes},
        {"radixmesh_serving", "gauge", "1 while the node reports SERVING.", (double)n->serving},
    };
    metrics_out(&b, gauges, RM_ARRAY_LEN(gauges), l);
    rm_prom_label(l, sizeof l, "role", "node");
    rm_prom_label(l, sizeof l, "version", RM_VERSION);
    rm_prom_metric(&b, "radixmesh_build_info", "gauge", "Build information.", l, 1);
    return b.p;
}
