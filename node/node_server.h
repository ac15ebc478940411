/* node_server.h -- radixmesh.v1.CacheNode and grpc.health.v1.Health over
 * an rm_cache, as handlers for rm_rpc_server.
 *
 * The node (and its cache) is owned by the rm_rpc_server thread: every
 * handler and the tick run there, one at a time. */
#ifndef RM_NODE_SERVER_H
#define RM_NODE_SERVER_H

#include <stdint.h>

#include "cache.h"
#include "rpc_server.h"

typedef struct rm_node_config {
    const char *node_id;
    rm_cache_config cache;
    uint64_t max_request_tokens;
    uint32_t max_namespace_bytes;
    uint32_t kv_chunk_bytes;   /* target payload of one ReadKV chunk */
    uint32_t hot_block_tokens; /* block size of hot-prefix tracking */
    uint64_t hot_half_life_ms; /* how fast past traffic is forgotten */
    const char *worker_url;    /* the paired inference worker, NULL: none */
    /* Precise mirroring (node/KV_EVENTS.md): the worker's KV-event
     * publisher (NULL: none), its replay socket, topic, the namespace the
     * events go to (NULL: the model the worker serves), the media
     * accepted (RM_KV_MEDIUM_BIT()s, 0: GPU), how often its HTTP API is
     * looked at. */
    const char *worker_kv_events, *worker_kv_replay, *worker_kv_topic, *worker_namespace;
    uint32_t worker_kv_media;
    uint32_t worker_probe_interval_ms;
    /* A ReadKV/WriteKV that waits this long on its client (a send not
     * taken, nothing received) is cancelled and its pages returned. */
    uint64_t kv_stream_idle_ms;
    /* Estimate the hit rate at other pool sizes (common/shadow.h), fed
     * every Match and Insert; reported in Stats and /metrics. */
    int hit_budget;
} rm_node_config;

typedef struct rm_node rm_node;

/* Returns NULL (with a logged reason) if the cache cannot be created. */
rm_node *rm_node_create(const rm_node_config *cfg);
void rm_node_destroy(rm_node *n);

/* Registers the CacheNode and Health methods on srv. Returns 0 or -1. */
int rm_node_register(rm_node *n, rm_rpc_server *srv);

/* Periodic work: lease expiry, TTL eviction, namespace reclaim, the KV
 * streams' idle and lease bounds, rate-limited refusal logs. */
void rm_node_tick(rm_node *n, uint64_t now_ms);

/* Starts following the worker's KV events when configured
 * (cfg.worker_kv_events), posting to srv's thread. Returns 0, or -1 with
 * a reason naming the flag in err. */
int rm_node_mirror_start(rm_node *n, rm_rpc_server *srv, char *err, size_t errlen);

/* Stops what follows the worker (after the server loop ended). */
void rm_node_mirror_stop(rm_node *n);

/* Limits a config reload may change (owner thread). */
void rm_node_set_limits(rm_node *n, uint64_t max_request_tokens, uint32_t max_leases,
                        uint32_t lease_ttl_ms, uint32_t max_lease_ttl_ms);

/* Health status reported by grpc.health.v1.Health/Check. */
void rm_node_set_serving(rm_node *n, int serving);

/* Prometheus text of the node's counters and gauges (caller frees). For
 * the owner thread, which publishes it for the HTTP thread. */
char *rm_node_metrics(rm_node *n);

/* The node's id (owned by the node). */
const char *rm_node_id(const rm_node *n);

/* Whether the node reports SERVING. */
int rm_node_serving(const rm_node *n);

/* The node's cache (for the owner thread only). */
rm_cache *rm_node_cache(rm_node *n);

#endif
