/* node_internal.h -- what the node's files share: struct rm_node and the
 * request plumbing of node_server.c that node_kv.c's streams use too.
 *
 * Node-private (prefix node_); everything here runs on the rm_rpc_server
 * thread that owns the node (node_server.h). */
#ifndef RM_NODE_INTERNAL_H
#define RM_NODE_INTERNAL_H

#include <stdint.h>

#include "cache.h"
#include "guard.h"
#include "hotset.h"
#include "node_server.h"
#include "pbx.h"
#include "radixmesh.pb.h"
#include "rpc_server.h"
#include "shadow.h"
#include "util.h"

typedef struct node_mirror node_mirror;

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
    rm_cache cache; /* only through rm_cache_* calls */
    rm_hotset hot;
    rm_shadow budget; /* the memory curve, when budget_on (--hit-budget) */
    int budget_on;
    uint64_t budget_ns; /* time spent feeding it (what it costs, in /metrics) */
    /* The work Matches brought: prompt tokens not held, replies' declared
     * lengths (NodeStats.uncached_tokens_total / output_tokens_total). */
    uint64_t uncached_tokens_total, output_tokens_total;
    /* The same, decayed as of recent_ms: routers balance on these
     * (NodeStats.recent_*). The half-life is the routers' default
     * --load-half-life-ms: long enough that a conversation's think time
     * does not forget its node's work, short enough to follow a shift. */
#define RM_NODE_WORK_HALF_LIFE_MS 30000
    double recent_uncached, recent_output;
    uint64_t recent_ms;
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
    node_mirror *mirror; /* the worker's KV events (node_mirror.c); NULL: not followed */
    uint64_t mirror_foreign_inserts; /* Inserts into the mirrored namespace, ignored */
};

/* ---- request plumbing (node_server.c) ---------------------------------- */

typedef struct node_caller {
    rm_cache_caller who;
    char id[512];
} node_caller;

/* Who makes call (see rm_rpc_call_peer), or NULL when gRPC cannot say;
 * nc holds the answer's storage. */
const rm_cache_caller *node_caller_of(rm_rpc_call *call, node_caller *nc);

/* What a refused cache call was about, for its message. */
typedef struct node_cache_subject {
    uint64_t lease_id;          /* the lease the request named, 0: none */
    const rm_cache_caller *who; /* the caller (for the per-peer share), NULL: unknown */
    uint32_t kv_start;          /* WriteKV's kv_start_token */
    size_t have;                /* RM_CACHE_PREFIX_SHORT: tokens of the prefix the node holds */
    const char *kv_hint;        /* RM_CACHE_METADATA_ONLY: what to do instead */
} node_cache_subject;

/* The status a refused cache call is answered with (one table for every
 * rm_cache_result), and a message into msg naming the limit or the object
 * involved. */
grpc_status_code node_cache_error(rm_node *n, rm_cache_result rc, const node_cache_subject *s,
                                  char *msg, size_t len);

/* Decodes a request whose tokens field (if any) is wired to toks, holding
 * it to --max-request-tokens. OK or INVALID_ARGUMENT with a reason. */
grpc_status_code node_decode(const rm_node *n, grpc_byte_buffer *bb, const pb_msgdesc_t *desc,
                             void *msg, rm_tokens *toks, char *err, size_t errlen);

/* node_decode of a request with a token sequence (its tokens field wired
 * to toks) and a namespace (*ns after decoding, checked as below). */
grpc_status_code node_decode_seq(const rm_node *n, grpc_byte_buffer *bb, const pb_msgdesc_t *desc,
                                 void *msg, pb_callback_t *tokens, char *const *ns, rm_tokens *toks,
                                 char *err, size_t errlen);

/* INVALID_ARGUMENT when ns is longer than the node allows, else OK. */
grpc_status_code node_check_namespace(const rm_node *n, const char *ns, char *msg, size_t len);

/* ns, or "" for an absent namespace field. */
const char *node_ns_or_empty(const char *ns);

void node_fill_insert_reply(const rm_node *n, const rm_insert_result *ir,
                            radixmesh_v1_InsertReply *rep);

/* The hit budget's estimators see what the cache saw: access is
 * rm_shadow_match for a counted Match, rm_shadow_insert for an Insert or
 * WriteKV of a sequence (one that repeats the Match before it costs
 * nothing). A no-op with --hit-budget off. */
typedef void (*node_budget_fn)(rm_shadow *s, const char *ns, size_t ns_len, const uint32_t *tokens,
                               size_t n);
void node_budget(rm_node *n, node_budget_fn access, const char *ns, const rm_tokens *t);

/* The estimator's memory: its heap state and the struct. */
size_t node_budget_bytes(const rm_node *n);

/* ---- precise mirroring (node_mirror.c) --------------------------------- */

/* Starts following the worker's KV events (cfg.worker_kv_events; nothing
 * when unset) and looking at its HTTP API (cfg.worker_url), posting to
 * srv's thread. Returns 0, or -1 with a reason naming the flag in err. */
int node_mirror_start(rm_node *n, rm_rpc_server *srv, char *err, size_t errlen);
/* Stops the subscriber's and the probe's threads (once the server loop has
 * run what they posted). */
void node_mirror_stop(rm_node *n);
void node_mirror_destroy(rm_node *n);
/* The namespace the worker's events go to; NULL when not followed or not
 * known yet. */
const char *node_mirror_namespace(const rm_node *n);
/* Rate-limited summaries of skipped events. */
void node_mirror_tick(rm_node *n, uint64_t now_ms);
/* The kv_* fields of Stats, the radixmesh_kv_* families of /metrics. */
void node_mirror_stats(rm_node *n, radixmesh_v1_NodeStats *rep);
void node_mirror_metrics(rm_node *n, rm_sbuf *b, const char *labels);

/* ---- KV streams (node_kv.c) -------------------------------------------- */

/* radixmesh.v1.CacheNode/ReadKV and /WriteKV (ctx: the node). */
void node_read_kv(void *ctx, rm_rpc_call *call, rm_call_event ev, grpc_byte_buffer *msg, int ok);
void node_write_kv(void *ctx, rm_rpc_call *call, rm_call_event ev, grpc_byte_buffer *msg, int ok);

/* The tick's check of every live stream against the idle bound and its
 * lease (rm_guard_stream): cancels the ones past either. */
void node_check_streams(rm_node *n, uint64_t now_ms);

#endif
