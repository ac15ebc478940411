/* router_internal.h -- what the router's files share: the router, its
 * nodes, and the functions one file provides to the others.
 *
 * Not a public header: only the files implementing router.h include it.
 * Every field below is owned by the router thread (the rm_rpc_server
 * thread that runs handlers, node replies, posted work and the tick),
 * except the published worker list (workers, nworkers), which the gateway
 * thread reads under workers_mu.
 *
 *   router.c        lifecycle: config, create/destroy, method table, Health
 *   node_link.c     membership, node references, health checks and Stats
 *                   polls, feeding the ejection rule (router/outlier.h)
 *   node_calls.c    channels to the nodes and the calls made on them
 *   route_key.c     the routing key and the cluster-hot prefixes
 *   placement.c     load, candidates under the bounded-load rule, charging
 *   proxy.c         Route/Match/Insert/Release: peeks, the choice between
 *                   two candidates, forwarding and retries
 *   gateway_jobs.c  gateway route jobs, prompt records, worker reports and
 *                   circuit breakers
 *   hit_budget.c    the ideal and infinite caches' shadow, the memory curve
 *   router_views.c  ClusterStats, /metrics, /api/cluster, history samples */
#ifndef RM_ROUTER_INTERNAL_H
#define RM_ROUTER_INTERNAL_H

#include <pthread.h>

#include "budget.h"
#include "charges.h"
#include "radixmesh.pb.h"
#include "ring.h"
#include "router.h"
#include "rpc_server.h"
#include "shadow.h"

/* The node methods the router calls. */
typedef enum { RT_MATCH, RT_INSERT, RT_RELEASE, RT_STATS, RT_HEALTH, RT_METHODS } rt_method;

/* One cache node as the router sees it. A removed node leaves r->nodes at
 * once and is freed when the last call in flight that points at it ends:
 * refs counts the membership and every such call (health checks, Stats
 * polls, peeks, forwarded calls, gateway records). */
typedef struct rnode {
    char *id; /* NULL until learnt from Stats (DNS discovery) */
    char *address;
    uint32_t weight;
    int refs;
    int removed;
    /* Health (see refresh): confirmed once it answered SERVING; draining
     * after NOT_SERVING; auth_rejected while it refuses the router's token;
     * ol: the ejection rule's count. healthy and routable are derived. */
    int confirmed, draining, auth_rejected, kept_logged;
    rm_outlier_node ol;
    int healthy;  /* a member, neither ejected nor failing */
    int routable; /* on the ring: healthy, failing but kept, or anything in panic */
    int health_busy, stats_busy;
    int id_warned, block_warned;
    grpc_channel *ch;
    void *method[RT_METHODS]; /* registered on ch (node_calls.c) */
    uint32_t inflight;
    double recent;      /* --load-unit requests: routed requests, decayed (load_half_life_ms) */
    uint64_t recent_ms; /* when recent and work were last decayed */
    uint64_t routed;
    /* Work (placement.c): the node's own decayed figure from its last
     * report (NodeStats.recent_*, halving every work_half_life_ms, the
     * node's), and this router's charges it has not counted yet (not
     * decayed; expiring, charges.h). */
    double work;
    rm_charges charges;
    double settled_requests;    /* rt_settle_charge's since the last report */
    uint32_t work_half_life_ms; /* 0: not reported, the router's own */
    uint64_t work_at;           /* wall clock (ms) at which work stood as given */
    double gw_inflight_work;    /* costs of this router's gateway requests in flight */
    /* The worker's own figures from its /metrics; -1: unknown. */
    double worker_running, worker_waiting, worker_kv;
    radixmesh_v1_NodeStats stats;
    int have_stats;
    /* The paired inference worker (gateway mode), from the node's Stats. */
    char worker_host[256];
    int worker_port;    /* 0: no worker */
    int worker_ok;      /* reachable at the last try (scrape or request) */
    rm_breaker breaker; /* judged by its requests alone; zeroed = closed */
    int worker_has_counts;
    uint64_t worker_hit, worker_query;
    double worker_rate; /* -1: unknown */
    uint64_t gw_requests;
    uint32_t gw_inflight;
} rnode;

#define HISTORY 300 /* seconds of history for the dashboard */

typedef struct sample {
    uint64_t t_ms, hit, query, routed, spills;
} sample;

struct rm_router {
    rm_router_config cfg;
    sample history[HISTORY];
    size_t nhist, hist_next;
    uint64_t started_ms;
    rm_rpc_server *srv;
    rnode **nodes;
    uint32_t nnodes, cap;
    rm_ring ring;
    rm_ring gw_ring; /* nodes with a reachable worker: gateway routing */
    uint32_t healthy, gw_members;
    int panic; /* too few healthy nodes: every member is on the ring */
    uint64_t ejections;
    /* Ids of recently removed nodes: a Release naming one is answered OK. */
    char *retired[256];
    size_t retired_next;
    /* Moving averages of reply lengths (rt_expected_output): per
     * namespace, by a hash of its name (a collision starts over), and of
     * all. */
    struct rt_output_avg {
        uint64_t ns_hash;
        double avg;
    } out_avg[64];
    double out_avg_all;
    uint64_t *hot; /* sorted hashes of cluster-hot prefixes */
    size_t nhot;
    double hot_share_now;
    uint64_t spills, failovers, retries, routed_total;
    int serving;
    uint64_t last_health_ms, last_stats_ms;
    uint64_t gw_requests_total, any_counter, breaker_opens;
    /* Hit budget (cfg.hit_budget): the ideal and infinite caches over the
     * requests this router routes, made once a node's Stats give the page
     * size (rt_budget_pools). */
    rm_shadow budget;
    int budget_on, budget_failed;
    uint64_t budget_ns; /* time spent feeding it (what it costs, in /metrics) */
    /* The worker list the gateway thread reads (rm_router_workers). */
    pthread_mutex_t workers_mu;
    rm_worker_ref *workers;
    size_t nworkers;
};

/* ---- node_link.c ------------------------------------------------------------ */

/* On the ring: routable, a member, its id known. */
int rt_on_ring(const rnode *n);
/* Gateway requests go only to nodes whose worker is known, reachable, and
 * admitted by its breaker. */
int rt_has_worker(const rnode *n);
/* What /metrics and /api/cluster call a healthy worker. */
int rt_worker_up(const rnode *n);
/* Rebuilds both rings from the nodes' flags and publishes the workers. */
void rt_rebuild_ring(rm_router *r);
/* One result of a call to n through the ejection rule; why: its details. */
void rt_note(rm_router *r, rnode *n, rm_outlier_outcome o, const char *why);
/* A status of one of the router's authenticated calls to n:
 * UNAUTHENTICATED means n refuses the router's own token. */
void rt_note_auth(rm_router *r, rnode *n, grpc_status_code st, const char *details);
/* Transport failures: the node did not answer (counted by the rule). */
int rt_is_transport_failure(grpc_status_code st);
/* What a call's status counts as, inside its reply callback; cut: the
 * call's deadline was its client's, shorter than --call-timeout-ms
 * (rt_call_timeout_ms). */
rm_outlier_outcome rt_outcome(const rm_router *r, grpc_status_code st, int cut);
/* A call in flight keeps the node it points at (returns n). */
rnode *rt_node_ref(rnode *n);
void rt_node_unref(rnode *n);
/* One of the last 256 removed ids. */
int rt_was_member(const rm_router *r, const char *id);
rnode *rt_find_by_id(rm_router *r, const char *id);

/* ---- node_calls.c ----------------------------------------------------------- */

/* Opens n's channel to n->address (TLS per the router's node_tls) and
 * registers the methods; closed when n is freed. */
void rt_node_channel_open(const rm_router *r, rnode *n);
void rt_node_channel_close(rnode *n);

/* Starts a unary call of method m on n with bytes (the caller keeps its
 * reference) on the router's completion queue; cb(ctx, ...) runs on the
 * router thread when it ends, within timeout_ms (> 0). Returns 0, or -1
 * when the call could not start -- the router is stopping -- and cb will
 * not run. */
int rt_node_call(const rm_router *r, rnode *n, rt_method m, grpc_slice bytes, int timeout_ms,
                 rm_rpc_reply_fn cb, void *ctx);
/* The same with msg encoded (fields: its nanopb descriptor). */
int rt_node_call_msg(const rm_router *r, rnode *n, rt_method m, const pb_msgdesc_t *fields,
                     const void *msg, int timeout_ms, rm_rpc_reply_fn cb, void *ctx);

/* Before a client's deadline, the router needs this long to carry a node's
 * answer back (and the client to receive it). */
#define RT_DEADLINE_MARGIN_MS 10

/* The deadline of a node call made for a client call with client_ms_left
 * (INT64_MAX: no deadline) left: the router's own call_timeout_ms, or
 * less, to answer RT_DEADLINE_MARGIN_MS before the client's deadline.
 * Returns 0 when that moment has passed (no node call is worth making).
 * *cut: the client's deadline made it shorter than call_timeout_ms. */
int rt_call_timeout_ms(uint32_t call_timeout_ms, int64_t client_ms_left, int *cut);

/* The same for client (NULL: none, e.g. gateway jobs) and the router's
 * --call-timeout-ms. */
int rt_client_call_timeout(const rm_router *r, const rm_rpc_call *client, int *cut);

/* ---- route_key.c ------------------------------------------------------------ */

/* Recomputes the hot set from the healthy nodes' last Stats. */
void rt_recompute_hot(rm_router *r);

/* ---- placement.c ------------------------------------------------------------ */

/* The load placement sees (decayed to now): by work, the node's confirmed
 * work plus this router's unconfirmed charges plus its worker's backlog;
 * by requests, in-flight calls plus recently routed requests. */
double rt_node_load(const rm_router *r, rnode *n, uint64_t now);
/* The mean cost of a request, from every node's counters (0: none yet). */
double rt_mean_cost(const rm_router *r);
/* The bound's floor in average requests (--load-floor, 0: auto). */
double rt_load_floor(const rm_router *r);
/* Before n's stats become next: its work becomes the node's decayed
 * figure, and what its counters show since its last report leaves this
 * router's unconfirmed charges. */
void rt_confirm_work(const rm_router *r, rnode *n, const radixmesh_v1_NodeStats *next);
/* Up to k nodes for key, clockwise, under the bounded-load rule (skipping
 * exclude), on the gateway's ring or the cache ring. Charges nothing.
 * Returns how many (0: empty ring). */
size_t rt_candidates(rm_router *r, uint64_t key, rnode *exclude, rnode **out, size_t k,
                     int *spilled, int gateway);
/* Charges n one unit of load (proxied: a forwarded call in flight too);
 * decision: a routing decision for a new request, counted as routed. */
void rt_charge(rm_router *r, rnode *n, int proxied, int spilled, int decision);
/* One node for key, charged as load. NULL: none up. */
rnode *rt_pick(rm_router *r, uint64_t key, rnode *exclude, int proxied, int *spilled);
/* The reply length to expect of a request in ns that declared `declared`
 * tokens (0: none): rm_place_output over the router's moving averages of
 * declared lengths, which a declared one updates. */
double rt_expected_output(rm_router *r, const char *ns, uint32_t declared);
/* A reply's length as seen (the gateway's), into ns's moving average. */
void rt_learn_output(rm_router *r, const char *ns, double seen);
/* Requests n has served (its own count plus what this router sent since). */
double rt_served(const rnode *n);
typedef struct rt_choice rt_choice;
/* The node ch's request goes to once its candidates were peeked (one of
 * them, or by work a node past them when the bound admits neither); sets
 * ch->spilled, ch->cost and ch->cached_chosen. The rules: placement.h. */
rnode *rt_decide(rt_choice *ch);
/* Charges n with ch's request: a routed request (in flight when proxied)
 * and, by work, its cost until the node's counters confirm it. */
void rt_charge_choice(rt_choice *ch, rnode *n);
/* ch's request, forwarded to n (proxied), was answered: its charge leaves
 * the unconfirmed ones; counted (the node answered it OK, so counted it)
 * it joins n's work until the node's next report tells it. Charges of
 * requests the router does not forward (Route) wait for the node's
 * counts instead (rt_confirm_work). */
void rt_settle_charge(rt_choice *ch, rnode *n, int counted);
/* The prompt tokens ch's request was charged on the node chosen (what it
 * holds of them taken off). */
double rt_charged_prompt(const rt_choice *ch);
/* A charge whose request the node will never count (a gateway request
 * that was not answered, or had no prompt): it leaves n's unconfirmed
 * ones, or it would stay there for good. */
void rt_drop_charge(rm_router *r, rnode *n, double prompt, double output);

/* ---- proxy.c ---------------------------------------------------------------- */

/* Match and Route look at the key's first two acceptable nodes on the ring
 * (power of two choices). Both are peeked in parallel for the cached prefix
 * length; the request goes where more of its prefix already is, and when
 * neither holds more (a new conversation), to the one that has served fewer
 * requests. Continuing conversations keep their node; new ones even out the
 * load, which plain hashing leaves 10-16% uneven on real traces (see
 * BENCHMARKS.md). */
/* How a choice ends, set by whoever started it (Match: forward; Route:
 * reply; gateway: hand the job back). n is the chosen node, already
 * charged with the request, and the callee owns one reference to it; NULL
 * when no node is up. The choice is over: the callee frees it (or the
 * object it is part of). */
typedef void (*rt_choice_done_fn)(rt_choice *ch, rnode *n);

/* One request's choice of a node: its key, its candidates, their peeks. */
struct rt_choice {
    rm_router *r;
    rt_choice_done_fn done;
    void *arg; /* the starter's (Match: its proxy; Route: the call; gateway: the job) */
    const rm_rpc_call *client; /* whose deadline bounds the peeks; NULL: none */
    int cut;                   /* the peeks' deadline was the client's */
    int proxied;               /* the request goes through the router: a call in flight */
    int gateway;               /* candidates from the gateway's ring */
    int no_spill;              /* the one candidate must take it (a breaker's trial) */
    uint64_t key;
    uint32_t key_tokens;
    uint64_t prompt_tokens; /* the request's */
    double output;          /* its expected reply tokens */
    rnode *cand[2];
    int64_t cached[2]; /* -1: the peek failed */
    int ncand, waiting, spilled;
    int64_t cached_chosen; /* what the chosen node holds (rt_decide) */
    double cost;           /* the request's cost there, in the load's unit */
    struct rt_peek {
        rt_choice *ch;
        int idx;
    } pk[2];
};

/* Peeks at ch's candidates for the cached prefix of tokens (in parallel),
 * or decides at once when there is only one; charges the winner and calls
 * ch->done -- at once with NULL when there is no candidate. ch has r,
 * done, arg, client, proxied, gateway, its key, prompt_tokens, output and
 * its candidates (and spilled). */
void rt_choose(rt_choice *ch, const char *ns, const uint32_t *tokens, size_t ntokens);
/* Why no node could take a call, for the client. */
void rt_no_node_reason(const rm_router *r, char *msg, size_t len);
void rt_do_route(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req);
void rt_do_match(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req);
void rt_do_insert(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req);
void rt_do_release(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req);

/* ---- hit_budget.c ----------------------------------------------------------- */

/* Makes or resizes the ideal cache to the healthy nodes' summed pools
 * (after each Stats reply and ring rebuild: O(nodes)). */
void rt_budget_pools(rm_router *r);
/* Feeds the router's estimators: access is rm_shadow_match for a routed
 * request (Match, Route, a gateway prompt as recorded), rm_shadow_insert
 * for an Insert (the reply after a gateway prompt; one repeating its Match
 * is free). A no-op while they are off. */
typedef void (*rt_budget_fn)(rm_shadow *s, const char *ns, size_t ns_len, const uint32_t *tokens,
                             size_t n);
void rt_budget(rm_router *r, rt_budget_fn access, const char *ns, const uint32_t *tokens, size_t n);
/* The router's estimators' memory (0: off). */
size_t rt_budget_bytes(const rm_router *r);

/* The budget as the views show it, cumulative since start; rates -1: no
 * data. */
typedef struct rt_budget_figures {
    double infinite, ideal;
    double ideal_hit_tokens, infinite_hit_tokens; /* estimated, of query_tokens */
    uint64_t query_tokens, aligned_tokens;
    rm_budget_point curve[RM_BUDGET_POINTS];
} rt_budget_figures;

/* achieved: the cluster's hit rate (factor 1 of the curve). */
void rt_budget_view(const rm_router *r, double achieved, rt_budget_figures *out);

/* ---- router_views.c --------------------------------------------------------- */

grpc_status_code rt_do_cluster_stats(void *ctx, grpc_byte_buffer *req, grpc_byte_buffer **reply,
                                     char *msg, size_t len);

#endif
