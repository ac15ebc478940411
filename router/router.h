/* router.h -- radixmesh.v1.Router over a set of cache nodes.
 *
 * All router state (members, ring, loads, hot prefixes, counters) is owned
 * by the rm_rpc_server thread: handlers, node replies (client calls on the
 * same completion queue) and the tick all run there. See router/README.md
 * for the routing algorithm. */
#ifndef RM_ROUTER_H
#define RM_ROUTER_H

#include <stdint.h>

#include "breaker.h"
#include "outlier.h"
#include "radixmesh.pb.h"
#include "rpc_server.h"

typedef enum { RM_KEY_ADAPTIVE = 0, RM_KEY_FIXED = 1 } rm_key_mode;

/* What load is counted in (router/README.md): work (prompt tokens a node
 * must compute plus expected reply tokens), or requests (the rule before
 * work, kept for comparison). */
typedef enum { RM_LOAD_WORK = 0, RM_LOAD_REQUESTS = 1 } rm_load_unit;

typedef struct rm_router_config {
    const char *router_id;
    double load_factor; /* bounded-load c, > 1 */
    double load_floor;  /* in average requests: nodes below never skipped; 0: auto */
    rm_load_unit load_unit;
    double decode_weight;      /* work of a reply token relative to a prompt token */
    uint32_t vnodes;           /* ring points per unit of weight */
    uint32_t choices;          /* ring candidates peeked per request: 1 or 2 */
    uint32_t key_block_tokens; /* must equal the nodes' --hot-block-tokens */
    uint32_t max_key_blocks;   /* 0: as deep as the nodes' sketches (rm_hotset_depth) */
    double hot_share;          /* 0: auto = max(0.02, 0.5 / healthy nodes) */
    rm_key_mode key_mode;
    uint32_t fixed_key_tokens; /* RM_KEY_FIXED: hash of the first N tokens */
    uint32_t call_timeout_ms;  /* per forwarded call */
    uint32_t health_interval_ms, stats_interval_ms;
    uint32_t load_half_life_ms; /* decay of the load */
    uint32_t charge_ttl_ms;     /* Routes' unconfirmed charges expire (router/charges.h); 0: 60 s */
    uint64_t max_request_tokens;
    const struct rm_tls *node_tls;    /* TLS towards nodes when it has a CA; may be NULL */
    rm_outlier_config outlier;        /* when failing nodes leave the ring (router/outlier.h) */
    rm_breaker_config worker_breaker; /* gateway: when a worker stops getting requests */
    int hit_budget; /* estimate the ideal and infinite caches (router/hit_budget.h) */
} rm_router_config;

void rm_router_config_defaults(rm_router_config *cfg);

typedef struct rm_router rm_router;

rm_router *rm_router_create(const rm_router_config *cfg);
void rm_router_destroy(rm_router *r);

/* Adds a node (before or while serving). id may be NULL when unknown (DNS
 * discovery): it is learnt from the node's Stats before the node joins the
 * ring. Returns 0 or -1 (duplicate address or id). */
int rm_router_add_node(rm_router *r, const char *id, const char *address);

/* Makes the membership exactly spec ("id=host:port,..."): nodes not in it
 * leave, new ones join, the rest stay as they are. The whole spec is
 * checked first; on a malformed or duplicate entry nothing changes and -1
 * is returned with the reason in err. Returns how many nodes changed. */
int rm_router_set_static_nodes(rm_router *r, const char *spec, char *err, size_t errlen);

/* The least --charge-ttl-ms c allows: 4 x (a call + a report), so that a
 * Route's Match reaches the node and its report the router before the
 * charge it confirms can expire (router/charges.h). */
uint64_t rm_router_charge_ttl_floor(const rm_router_config *c);

/* Tunables a config reload may change (router thread). */
void rm_router_set_tuning(rm_router *r, double load_factor, uint32_t call_timeout_ms,
                          uint64_t max_request_tokens);

/* Drops the node with this address from the membership. Its memory is
 * freed once no call in flight refers to it. Its id is remembered (the
 * last 256 removed ids): a Release naming it is answered OK, as for a down
 * node, since its leases died with it or expire by their TTL. */
void rm_router_remove_node(rm_router *r, const char *address);

/* Registers Router and Health methods on srv (and keeps srv for node calls). */
int rm_router_register(rm_router *r, rm_rpc_server *srv);

/* Periodic work: health checks, stats polls. Call from the server tick. */
void rm_router_tick(rm_router *r, uint64_t now_ms);

/* Health reported by grpc.health.v1 Check while draining (0) or not (1). */
void rm_router_set_serving(rm_router *r, int serving);

/* Records a history sample (call once a second from the tick). */
void rm_router_sample(rm_router *r, uint64_t now_ms);

/* Prometheus text (caller frees): router counters, cluster totals and
 * per-node series labelled by node id. */
char *rm_router_metrics(rm_router *r);

/* The /api/cluster document (caller frees): totals, every node, and the
 * recent per-second history the dashboard draws. */
char *rm_router_cluster_json(rm_router *r);

/* Nodes healthy now: answering SERVING, accepting the router's
 * credentials, neither ejected nor failing (router/outlier.h). Readiness
 * (grpc health, /readyz) needs at least one. In panic the ring holds more
 * nodes than this. */
uint32_t rm_router_healthy_nodes(const rm_router *r);

/* The routing key of a request and how many tokens it covers, with the
 * router's current hot set (the rule: rm_route_key, router/route_key.h). */
uint64_t rm_router_key(const rm_router *r, const char *ns, const uint32_t *tokens, size_t n,
                       uint32_t *key_tokens);

/* ---- gateway support (router/gateway.c runs on its own thread) ---------- */

/* One HTTP request to route to an inference worker. The gateway thread
 * fills the input half and hands the job to the router thread with
 * rm_router_route_async; the router fills the output half and calls
 * done(job) on its own thread, after which the job is the gateway's again
 * until it is returned with rm_router_route_done. */
typedef struct rm_route_job {
    /* in */
    char *ns;         /* owned by the job */
    uint32_t *tokens; /* owned by the job; may be NULL */
    size_t ntokens;
    int any; /* no affinity wanted (GET /v1/models...): any worker */
    /* What the node should hold after the request, when more than tokens
     * (the prompt followed by the generated text); owned by the job, may be
     * NULL. The record Match still counts the prompt alone, as the worker's
     * own prefix cache does. */
    uint32_t *record;
    size_t nrecord;
    char exclude[128];      /* node id whose worker just failed, "" for none */
    uint32_t output_tokens; /* the reply's declared length (max_tokens), 0: unknown */
    /* Set by the gateway when the reply is over: its length as seen (text
     * in pseudo-tokens), 0: unknown. Feeds the router's estimate for
     * requests that declare none. */
    uint32_t output_seen;
    /* out */
    int found;
    char why[256]; /* !found: why no worker could take it, for the client */
    char node_id[128];
    char worker_host[256];
    int worker_port;
    uint32_t key_tokens;
    /* delivery */
    void (*done)(struct rm_route_job *job); /* runs on the router thread */
    void *user;
    int charged;           /* router-private: the node carries this request as load */
    double cost;           /* router-private: its cost there (in flight until done) */
    double output_charged; /* router-private: the reply length charged */
    double prompt_charged; /* router-private: the prompt tokens charged */
    int trial;             /* router-private: the half-open trial of the worker's breaker */
    int counted;           /* router-private: its Match was counted before it went (precise node) */
} rm_route_job;

/* Thread-safe. Routes job on the router thread like a Match (adaptive
 * key, bounded load, two peeked choices) among nodes whose worker is
 * known and healthy, skipping job->exclude; charges the chosen node one
 * request in flight; then calls job->done. When the chosen node mirrors
 * its worker from KV events in job->ns (its Stats: kv_events,
 * kv_namespace), the request's Match is counted there first, before the
 * worker can store the request's own blocks: done follows its answer.
 * Returns 0, or -1 once the router has stopped (done is not called; the
 * job stays the caller's). */
int rm_router_route_async(rm_router *r, rm_route_job *job);

/* What a request told about its worker (router/breaker.h). */
typedef enum {
    RM_WORKER_NO_VERDICT, /* nothing: the client left, or the worker answered 5xx */
    RM_WORKER_ANSWERED,   /* a response (status < 500) came in time */
    RM_WORKER_FAILED,     /* no response head in time, silence, broke off, garbage */
    RM_WORKER_UNREACHABLE /* no connection: FAILED, and out until a scrape reaches it */
} rm_worker_outcome;

/* Thread-safe; takes the job. The request it routed is over: the node's
 * in-flight charge is released; with ok (the worker answered 2xx) its
 * prompt is recorded in the node (Match of tokens, then a metadata-only
 * Insert of record, or of tokens), so the node mirrors what its worker
 * cached -- unless its Match was counted before (a node following its
 * worker's KV events, which record the rest); the outcome feeds the
 * worker's circuit breaker (consecutive
 * failures open it, see router/breaker.h), and RM_WORKER_UNREACHABLE also
 * takes the worker out of gateway routing until a scrape reaches it
 * again. */
void rm_router_route_done(rm_router *r, rm_route_job *job, int ok, rm_worker_outcome outcome);

/* A worker the gateway should scrape: its node and where it listens. */
typedef struct rm_worker_ref {
    char node_id[128];
    char host[256];
    int port;
    int up; /* the gateway routes to it now (reachable, its breaker closed) */
} rm_worker_ref;

/* Thread-safe snapshot of the paired workers; *out is malloc'd (caller
 * frees). Returns how many. */
size_t rm_router_workers(rm_router *r, rm_worker_ref **out);

/* What a scrape of a worker's /metrics found. A scrape that reaches the
 * worker brings it back into routing after a failed connection, but never
 * closes its breaker: a wedged worker's /metrics may well answer. */
typedef struct rm_worker_report {
    char node_id[128];
    int reachable;  /* any HTTP answer (a response head) */
    int complete;   /* the page was read whole: the figures below are current */
    int has_counts; /* prefix-cache hit/query token counters */
    uint64_t hit_tokens, query_tokens;
    double hit_rate; /* -1: unknown */
    /* What the worker says it is busy with (vLLM, SGLang); -1: unknown. */
    double running, waiting, kv_usage;
} rm_worker_report;

/* Thread-safe; copies rep. Applied on the router thread. */
void rm_router_worker_report(rm_router *r, const rm_worker_report *rep);

#endif
