/* cache_client.h -- typed, blocking calls to a radixmesh.v1.CacheNode.
 *
 * Each function returns the gRPC status; on error msg holds the server's (or
 * the transport's) reason. One rm_cache_client per thread. */
#ifndef RM_CACHE_CLIENT_H
#define RM_CACHE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <pb_decode.h> /* pb_release for NodeStats */

#include "radixmesh.pb.h"
#include "rpc_client.h"

typedef struct rm_cache_client {
    rm_rpc_client rpc;
    void *m_match, *m_insert, *m_release, *m_stats, *m_read, *m_write, *m_health;
    void *m_route, *m_cluster;
    int timeout_ms; /* per call; 0: none */
} rm_cache_client;

/* Connects to a cache node at target "host:port". Returns 0 or -1. */
int rm_cc_init(rm_cache_client *cc, const char *target, int timeout_ms);

/* Connects to a router: Match/Insert/Release go to radixmesh.v1.Router,
 * and rm_cc_route / rm_cc_cluster_stats work. Returns 0 or -1. */
int rm_cc_init_router(rm_cache_client *cc, const char *target, int timeout_ms);
void rm_cc_close(rm_cache_client *cc);

/* rm_cc_init / rm_cc_init_router over TLS (see rm_rpc_client_init_tls);
 * tls may be NULL. */
int rm_cc_init_tls(rm_cache_client *cc, const char *target, int timeout_ms,
                   const struct rm_tls *tls);
int rm_cc_init_router_tls(rm_cache_client *cc, const char *target, int timeout_ms,
                          const struct rm_tls *tls);

typedef struct rm_cc_match_reply {
    uint32_t matched_tokens;
    uint64_t lease_id;
    char node_id[128];
} rm_cc_match_reply;

int rm_cc_match(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n, int lease,
                uint32_t lease_ttl_ms, rm_cc_match_reply *out, char *msg, size_t msglen);
/* The same, declaring the reply's expected length (MatchRequest.output_tokens;
 * 0: not given). */
int rm_cc_match_out(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n,
                    int lease, uint32_t lease_ttl_ms, uint32_t output_tokens,
                    rm_cc_match_reply *out, char *msg, size_t msglen);

typedef struct rm_cc_insert_reply {
    uint32_t cached_tokens, inserted_tokens, dropped_tokens;
    char node_id[128];
} rm_cc_insert_reply;

/* node_id (may be NULL): through a router, pins the Insert to that node. */
int rm_cc_insert(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n,
                 uint64_t lease_id, const char *node_id, rm_cc_insert_reply *out, char *msg,
                 size_t msglen);

/* node_id (may be NULL for a node; required through a router). */
int rm_cc_release(rm_cache_client *cc, uint64_t lease_id, const char *node_id, char *msg,
                  size_t msglen);

typedef struct rm_cc_route_reply {
    char node_id[128], address[128];
    uint32_t key_tokens;
    int spilled;
} rm_cc_route_reply;

int rm_cc_route(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n,
                rm_cc_route_reply *out, char *msg, size_t msglen);
/* The same, declaring the reply's expected length (0: not given). */
int rm_cc_route_out(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n,
                    uint32_t output_tokens, rm_cc_route_reply *out, char *msg, size_t msglen);

/* ClusterStats with its nodes decoded into an array. Free with
 * rm_cc_cluster_free. */
typedef struct rm_cc_cluster {
    radixmesh_v1_ClusterStats cs;
    radixmesh_v1_NodeStats *nodes;
    size_t nnodes;
} rm_cc_cluster;

int rm_cc_cluster_stats(rm_cache_client *cc, rm_cc_cluster *out, char *msg, size_t msglen);
void rm_cc_cluster_free(rm_cc_cluster *c);

/* Fills *out; the caller must pb_release(radixmesh_v1_NodeStats_fields, out). */
int rm_cc_stats(rm_cache_client *cc, radixmesh_v1_NodeStats *out, char *msg, size_t msglen);

/* grpc.health.v1 Check: *serving is 1 for SERVING, 0 otherwise. */
int rm_cc_health(rm_cache_client *cc, int *serving, char *msg, size_t msglen);

/* WriteKV: tokens plus the KV of [kv_start, page-aligned end), kv_len bytes
 * sent in chunks of chunk_bytes. */
int rm_cc_write_kv(rm_cache_client *cc, const char *ns, const uint32_t *tokens, size_t n,
                   uint32_t kv_start, uint64_t lease_id, const uint8_t *kv, size_t kv_len,
                   size_t chunk_bytes, rm_cc_insert_reply *out, char *msg, size_t msglen);

/* ReadKV: copies the streamed bytes into out (capacity cap) and the number
 * of bytes into *got; chunks must arrive in order and contiguous. */
int rm_cc_read_kv(rm_cache_client *cc, uint64_t lease_id, uint32_t start_token, uint32_t max_tokens,
                  uint8_t *out, size_t cap, size_t *got, char *msg, size_t msglen);

#endif
