#include "router.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb.h"
#include "log.h"
#include "pbx.h"
#include "prefix_key.h"
#include "radixmesh.pb.h"
#include "flags.h"
#include "ring.h"
#include "rpc_client.h"
#include "tls.h"
#include "util.h"

#define MAX_KEY_BLOCKS 1024

void rm_router_config_defaults(rm_router_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->router_id = "router";
    cfg->load_factor = 1.25;
    cfg->load_floor = 32;
    cfg->vnodes = 256;
    cfg->choices = 2;
    cfg->key_block_tokens = 64;
    cfg->max_key_blocks = 128;
    cfg->hot_share = 0;
    cfg->key_mode = RM_KEY_ADAPTIVE;
    cfg->fixed_key_tokens = 256;
    cfg->call_timeout_ms = 1000;
    cfg->health_interval_ms = 1000;
    cfg->stats_interval_ms = 1000;
    cfg->load_half_life_ms = 1000;
    cfg->max_request_tokens = 1048576;
    rm_outlier_config_defaults(&cfg->outlier);
    rm_breaker_config_defaults(&cfg->worker_breaker);
}

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
    void *m_match, *m_insert, *m_release, *m_stats, *m_health;
    uint32_t inflight;
    double recent; /* routed requests, decayed (half-life load_half_life_ms) */
    uint64_t recent_ms;
    uint64_t routed;
    double pending; /* Match requests routed here since the node last reported */
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
    uint64_t *hot; /* sorted hashes of cluster-hot prefixes */
    size_t nhot;
    double hot_share_now;
    uint64_t spills, failovers, retries, routed_total;
    int serving;
    uint64_t last_health_ms, last_stats_ms;
    uint64_t gw_requests_total, any_counter, breaker_opens;
    /* The worker list the gateway thread reads (rm_router_workers). */
    pthread_mutex_t workers_mu;
    rm_worker_ref *workers;
    size_t nworkers;
};

/* ---- membership and ring ---------------------------------------------- */

static int on_ring(const rnode *n)
{
    return n->routable && !n->removed && n->id;
}

/* A node the ejection rule applies to: it answered SERVING, is not
 * draining and accepts the router's credentials. */
static int member(const rnode *n)
{
    return n->id && !n->removed && n->confirmed && !n->draining && !n->auth_rejected;
}

/* Gateway requests go only to nodes whose worker is known, reachable, and
 * admitted by its breaker. */
static int has_worker(const rnode *n)
{
    return on_ring(n) && n->worker_port && n->worker_ok && rm_breaker_admits(&n->breaker);
}

/* What /metrics and /api/cluster call a healthy worker. */
static int worker_up(const rnode *n)
{
    return n->worker_ok && n->breaker.state == RM_BREAKER_CLOSED;
}

/* The worker list is published for the gateway thread on every change. */
static void publish_workers(rm_router *r)
{
    rm_worker_ref *list = rm_xcalloc(r->nnodes + 1, sizeof *list);
    size_t k = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (n->removed || !n->id || !n->worker_port)
            continue;
        snprintf(list[k].node_id, sizeof list[k].node_id, "%s", n->id);
        snprintf(list[k].host, sizeof list[k].host, "%s", n->worker_host);
        list[k++].port = n->worker_port;
    }
    pthread_mutex_lock(&r->workers_mu);
    free(r->workers);
    r->workers = list;
    r->nworkers = k;
    pthread_mutex_unlock(&r->workers_mu);
}

static void rebuild_ring(rm_router *r)
{
    const char **ids = rm_xcalloc(r->nnodes + 1, sizeof *ids);
    uint32_t *weights = rm_xcalloc(r->nnodes + 1, sizeof *weights);
    int *up = rm_xcalloc(r->nnodes + 1, sizeof *up);
    int *gw = rm_xcalloc(r->nnodes + 1, sizeof *gw);
    r->healthy = r->gw_members = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        ids[i] = n->id ? n->id : "";
        weights[i] = n->weight;
        up[i] = on_ring(n);
        gw[i] = has_worker(n);
        r->healthy += n->healthy;
        r->gw_members += gw[i];
    }
    rm_ring_build(&r->ring, ids, weights, up, r->nnodes, r->cfg.vnodes);
    rm_ring_build(&r->gw_ring, ids, weights, gw, r->nnodes, r->cfg.vnodes);
    free(ids);
    free(weights);
    free(up);
    free(gw);
    publish_workers(r);
}

/* Derives every node's healthy/routable flags and the panic state from
 * the nodes' states (router/outlier.h), then rebuilds the rings. */
static void refresh(rm_router *r)
{
    const rm_outlier_config *oc = &r->cfg.outlier;
    uint32_t members = 0, healthy = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (member(n)) {
            members++;
            healthy += (uint32_t)rm_outlier_healthy(oc, &n->ol);
        }
    }
    int panic = rm_outlier_panic(oc, healthy, members);
    if (panic != r->panic)
        rm_log(panic ? RM_LOG_WARN : RM_LOG_INFO, "router",
               panic ? "%u of %u nodes healthy, below --panic-threshold %.2f: routing to all of "
                       "them as if healthy"
                     : "%u of %u nodes healthy (--panic-threshold %.2f): routing to healthy "
                       "nodes again",
               healthy, members, oc->panic_threshold);
    r->panic = panic;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        n->healthy = member(n) && rm_outlier_healthy(oc, &n->ol);
        n->routable = member(n) && rm_outlier_routable(&n->ol, panic);
    }
    rebuild_ring(r);
}

/* One result of a call to n (health check, Stats poll, peek, forwarded
 * call) through the ejection rule; why: the failure's details. */
static void note(rm_router *r, rnode *n, rm_outlier_outcome o, const char *why)
{
    if (!member(n))
        return;
    if (o == RM_OUTLIER_ANSWERED && !n->ol.failures && !n->ol.ejected) {
        n->kept_logged = 0;
        return; /* the common case, every successful reply: nothing changes */
    }
    const rm_outlier_config *oc = &r->cfg.outlier;
    uint32_t members = 0, ejected = 0;
    for (uint32_t i = 0; i < r->nnodes; i++)
        if (member(r->nodes[i])) {
            members++;
            ejected += (uint32_t)r->nodes[i]->ol.ejected;
        }
    int was = rm_outlier_healthy(oc, &n->ol);
    rm_outlier_change ch = rm_outlier_record(oc, &n->ol, o, members, ejected);
    if (o == RM_OUTLIER_FAILED)
        rm_log(RM_LOG_DEBUG, "router", "node %s: failure %u in a row: %s", n->id, n->ol.failures,
               why);
    else if (o == RM_OUTLIER_IGNORED)
        rm_log(RM_LOG_DEBUG, "router", "node %s: failure not counted, the router stalled: %s",
               n->id, why);
    if (o == RM_OUTLIER_ANSWERED)
        n->kept_logged = 0;
    switch (ch) {
    case RM_OUTLIER_EJECT:
        r->ejections++;
        n->kept_logged = 0;
        rm_log(RM_LOG_WARN, "router",
               "node %s (%s) leaves the ring: %u failures in a row (last: %s)", n->id, n->address,
               n->ol.failures, why);
        break;
    case RM_OUTLIER_RESTORE:
        rm_log(RM_LOG_INFO, "router", "node %s (%s) joins the ring again", n->id, n->address);
        break;
    case RM_OUTLIER_KEPT:
        if (!n->kept_logged)
            rm_log(RM_LOG_WARN, "router",
                   "node %s (%s) failed %u times in a row (last: %s) but stays on the ring: %u of "
                   "%u nodes are out already (--max-ejected-share %.2f)",
                   n->id, n->address, n->ol.failures, why, ejected, members, oc->max_ejected_share);
        n->kept_logged = 1;
        break;
    case RM_OUTLIER_SAME:
        break;
    }
    if (ch == RM_OUTLIER_EJECT || ch == RM_OUTLIER_RESTORE || was != rm_outlier_healthy(oc, &n->ol))
        refresh(r);
}

/* The node answered SERVING to a health check. */
static void node_serving(rm_router *r, rnode *n)
{
    if (n->confirmed && !n->draining) {
        note(r, n, RM_OUTLIER_ANSWERED, NULL);
        return;
    }
    n->confirmed = 1;
    n->draining = 0;
    n->ol = (rm_outlier_node){0};
    rm_log(RM_LOG_INFO, "router", "node %s (%s) joins the ring", n->id, n->address);
    refresh(r);
}

/* The node said it does not serve (NOT_SERVING while it drains, or an
 * error status of its own): an explicit answer, not a failure, so it
 * leaves at once, outside the ejection rule. */
static void node_not_serving(rm_router *r, rnode *n, const char *why)
{
    if (n->draining)
        return;
    n->draining = 1;
    n->ol = (rm_outlier_node){0};
    if (n->confirmed)
        rm_log(RM_LOG_WARN, "router", "node %s (%s) leaves the ring: %s", n->id, n->address, why);
    refresh(r);
}

/* The node answered one of the router's authenticated calls (all but the
 * health check): with UNAUTHENTICATED it refuses the router's own token
 * (--node-token-file), and routing there cannot work. Logged once per
 * change. */
static void note_auth(rm_router *r, rnode *n, grpc_status_code st, const char *details)
{
    int rejected = st == GRPC_STATUS_UNAUTHENTICATED;
    if (n->removed || !n->id || rejected == n->auth_rejected)
        return;
    n->auth_rejected = rejected;
    if (rejected)
        rm_log(RM_LOG_ERROR, "router",
               "node %s (%s) rejects the router's credentials (%s): it leaves the ring; check "
               "--node-token-file",
               n->id, n->address, details);
    else
        rm_log(RM_LOG_INFO, "router", "node %s (%s) accepts the router's credentials again", n->id,
               n->address);
    refresh(r);
}

static rnode *node_ref(rnode *n)
{
    n->refs++;
    return n;
}

static void node_unref(rnode *n)
{
    if (--n->refs > 0)
        return;
    grpc_channel_destroy(n->ch);
    if (n->have_stats)
        pb_release(radixmesh_v1_NodeStats_fields, &n->stats);
    free(n->id);
    free(n->address);
    free(n);
}

static int was_member(const rm_router *r, const char *id)
{
    for (size_t i = 0; i < RM_ARRAY_LEN(r->retired); i++)
        if (r->retired[i] && !strcmp(r->retired[i], id))
            return 1;
    return 0;
}

rm_router *rm_router_create(const rm_router_config *cfg)
{
    rm_router *r = rm_xcalloc(1, sizeof *r);
    r->cfg = *cfg;
    if (r->cfg.max_key_blocks > MAX_KEY_BLOCKS)
        r->cfg.max_key_blocks = MAX_KEY_BLOCKS;
    r->serving = 1;
    r->started_ms = rm_now_ms();
    pthread_mutex_init(&r->workers_mu, NULL);
    return r;
}

void rm_router_destroy(rm_router *r)
{
    for (uint32_t i = 0; i < r->nnodes; i++)
        node_unref(r->nodes[i]);
    for (size_t i = 0; i < RM_ARRAY_LEN(r->retired); i++)
        free(r->retired[i]);
    free(r->nodes);
    free(r->hot);
    rm_ring_free(&r->ring);
    rm_ring_free(&r->gw_ring);
    free(r->workers);
    pthread_mutex_destroy(&r->workers_mu);
    free(r);
}

int rm_router_add_node(rm_router *r, const char *id, const char *address)
{
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *o = r->nodes[i];
        if (!strcmp(o->address, address) || (id && o->id && !strcmp(o->id, id)))
            return -1;
    }
    if (r->nnodes == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->nodes = rm_xrealloc(r->nodes, sizeof *r->nodes * r->cap);
    }
    rnode *n = rm_xcalloc(1, sizeof *n);
    n->id = id ? rm_xstrndup(id, strlen(id)) : NULL;
    n->address = rm_xstrndup(address, strlen(address));
    n->weight = 1;
    n->refs = 1; /* the membership's */
    grpc_arg args[3];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = 64 << 20;
    rm_rpc_reconnect_args(args + 1); /* a node back from a cut rejoins fast */
    grpc_channel_args ca = {3, args};
    grpc_channel_credentials *creds = rm_tls_channel_creds(r->cfg.node_tls);
    n->ch = grpc_channel_create(address, creds, &ca);
    grpc_channel_credentials_release(creds);
    n->m_match = grpc_channel_register_call(n->ch, "/radixmesh.v1.CacheNode/Match", NULL, NULL);
    n->m_insert = grpc_channel_register_call(n->ch, "/radixmesh.v1.CacheNode/Insert", NULL, NULL);
    n->m_release = grpc_channel_register_call(n->ch, "/radixmesh.v1.CacheNode/Release", NULL, NULL);
    n->m_stats = grpc_channel_register_call(n->ch, "/radixmesh.v1.CacheNode/Stats", NULL, NULL);
    n->m_health = grpc_channel_register_call(n->ch, "/grpc.health.v1.Health/Check", NULL, NULL);
    r->nodes[r->nnodes++] = n;
    r->last_health_ms = 0; /* check the newcomer at the next tick */
    return 0;
}

typedef struct spec_entry {
    char id[128];
    char addr[300];
} spec_entry;

int rm_router_set_static_nodes(rm_router *r, const char *spec, char *err, size_t errlen)
{
    char *copy = rm_xstrndup(spec, strlen(spec)), *save = NULL;
    spec_entry *want = NULL;
    size_t n = 0;
    int rc = 0;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        char host[256];
        int port;
        if (!eq || eq == item || (size_t)(eq - item) >= sizeof want->id ||
            strlen(eq + 1) >= sizeof want->addr ||
            rm_parse_hostport(eq + 1, host, sizeof host, &port)) {
            snprintf(err, errlen, "--nodes: expected id=host:port, got '%s'", item);
            rc = -1;
            break;
        }
        *eq = '\0';
        for (size_t k = 0; k < n; k++)
            if (!strcmp(want[k].id, item) || !strcmp(want[k].addr, eq + 1)) {
                snprintf(err, errlen, "--nodes: duplicate node id or address '%s'", item);
                rc = -1;
            }
        if (rc)
            break;
        want = rm_xrealloc(want, (n + 1) * sizeof *want);
        snprintf(want[n].id, sizeof want[n].id, "%s", item);
        snprintf(want[n].addr, sizeof want[n].addr, "%s", eq + 1);
        n++;
    }
    free(copy);
    if (rc == 0 && n == 0) {
        snprintf(err, errlen, "--nodes: no nodes given");
        rc = -1;
    }
    if (rc) {
        free(want);
        return -1;
    }
    int changed = 0;
    char **drop = rm_xcalloc(r->nnodes + 1, sizeof *drop);
    uint32_t ndrop = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *o = r->nodes[i];
        int keep = 0;
        for (size_t k = 0; k < n; k++)
            keep |= o->id && !strcmp(o->id, want[k].id) && !strcmp(o->address, want[k].addr);
        if (!keep)
            drop[ndrop++] = rm_xstrndup(o->address, strlen(o->address));
    }
    for (uint32_t i = 0; i < ndrop; i++) { /* removing shifts r->nodes */
        rm_router_remove_node(r, drop[i]);
        free(drop[i]);
        changed++;
    }
    free(drop);
    for (size_t k = 0; k < n; k++)
        if (rm_router_add_node(r, want[k].id, want[k].addr) == 0) {
            rm_log(RM_LOG_INFO, "router", "node %s (%s) added to the membership", want[k].id,
                   want[k].addr);
            changed++;
        }
    free(want);
    return changed;
}

void rm_router_set_tuning(rm_router *r, double load_factor, uint32_t call_timeout_ms,
                          uint64_t max_request_tokens)
{
    r->cfg.load_factor = load_factor;
    r->cfg.call_timeout_ms = call_timeout_ms;
    r->cfg.max_request_tokens = max_request_tokens;
}

void rm_router_remove_node(rm_router *r, const char *address)
{
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (strcmp(n->address, address) != 0)
            continue;
        n->removed = 1;
        rm_log(RM_LOG_INFO, "router", "node %s (%s) removed from membership", n->id ? n->id : "?",
               n->address);
        if (n->id && !was_member(r, n->id)) {
            free(r->retired[r->retired_next]);
            r->retired[r->retired_next] = rm_xstrndup(n->id, strlen(n->id));
            r->retired_next = (r->retired_next + 1) % RM_ARRAY_LEN(r->retired);
        }
        memmove(&r->nodes[i], &r->nodes[i + 1], (r->nnodes - i - 1) * sizeof *r->nodes);
        r->nnodes--;
        node_unref(n);
        refresh(r);
        return;
    }
}

uint32_t rm_router_healthy_nodes(const rm_router *r)
{
    return r->healthy;
}

void rm_router_set_serving(rm_router *r, int serving)
{
    r->serving = serving;
}

static rnode *find_by_id(rm_router *r, const char *id)
{
    for (uint32_t i = 0; i < r->nnodes; i++)
        if (r->nodes[i]->id && !strcmp(r->nodes[i]->id, id))
            return r->nodes[i];
    return NULL;
}

/* ---- load ----------------------------------------------------------------- */

static double node_load(const rm_router *r, rnode *n, uint64_t now)
{
    if (now > n->recent_ms) {
        n->recent *= exp2(-(double)(now - n->recent_ms) / r->cfg.load_half_life_ms);
        n->recent_ms = now;
    }
    return n->inflight + n->recent;
}

typedef struct pick_ctx {
    rm_router *r;
    double capacity;
    uint64_t now;
} pick_ctx;

static int under_bound(void *ctx, uint32_t m)
{
    pick_ctx *p = ctx;
    return node_load(p->r, p->r->nodes[m], p->now) + 1 <= p->capacity;
}

/* Up to k nodes for key, clockwise, that are under the bounded-load rule
 * (skipping exclude). Charges nothing. Returns how many (0: empty ring). */
static size_t candidates(rm_router *r, uint64_t key, rnode *exclude, rnode **out, size_t k,
                         int *spilled, int gateway)
{
    uint64_t now = rm_now_ms();
    double total = 0;
    uint32_t up = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (gateway ? has_worker(n) : on_ring(n)) {
            total += node_load(r, n, now);
            up++;
        }
    }
    if (!up)
        return 0;
    /* CHBL capacity: ceil(c * (load + 1) / n). Near zero load that is 1 or
     * 2 and would force round-robin, which protects nothing and costs
     * affinity (and makes replicas' decisions hinge on microseconds of
     * decay): below the floor no node is skipped. */
    double cap = ceil(r->cfg.load_factor * (total + 1) / up);
    pick_ctx ctx = {r, cap > r->cfg.load_floor ? cap : r->cfg.load_floor, now};
    uint32_t ex = UINT32_MAX;
    for (uint32_t i = 0; exclude && i < r->nnodes; i++)
        if (r->nodes[i] == exclude)
            ex = i;
    uint32_t idx[2];
    size_t got = rm_ring_pick_n(gateway ? &r->gw_ring : &r->ring, key, under_bound, &ctx, ex, idx,
                                k > 2 ? 2 : k, spilled);
    for (size_t i = 0; i < got; i++)
        out[i] = r->nodes[idx[i]];
    return got;
}

/* Charges node n with one unit of load (and a forwarded call in flight).
 * `decision` marks a routing decision for a new request (Match, Route): only
 * those count as routed requests; an Insert or a retry is load alone. */
static void charge(rm_router *r, rnode *n, int proxied, int spilled, int decision)
{
    n->recent += 1;
    if (decision) {
        n->routed++;
        r->routed_total++;
    }
    if (proxied)
        n->inflight++;
    if (spilled)
        r->spills++;
}

/* One node for key under the bounded-load rule, charged as load (not as a
 * new routed request: callers are Insert and retries). NULL: none up. */
static rnode *pick(rm_router *r, uint64_t key, rnode *exclude, int proxied, int *spilled)
{
    rnode *n;
    int sp = 0;
    if (!candidates(r, key, exclude, &n, 1, &sp, 0))
        return NULL;
    charge(r, n, proxied, sp, 0);
    if (spilled)
        *spilled = sp;
    return n;
}

/* Requests a node has served, as it reports them (all routers' traffic),
 * plus what this router sent it since. Every replica reads the same
 * reports, so they place new conversations alike. */
static double served(const rnode *n)
{
    return (n->have_stats ? (double)n->stats.match_requests_total : 0.0) + n->pending;
}

/* ---- keys ------------------------------------------------------------------ */

static int is_hot(const rm_router *r, uint64_t h)
{
    size_t lo = 0, hi = r->nhot;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->hot[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < r->nhot && r->hot[lo] == h;
}

uint64_t rm_router_key(const rm_router *r, const char *ns, const uint32_t *tokens, size_t n,
                       uint32_t *key_tokens)
{
    uint64_t h = rm_prefix_ns_hash(ns, strlen(ns));
    if (r->cfg.key_mode == RM_KEY_FIXED) {
        size_t len = n < r->cfg.fixed_key_tokens ? n : r->cfg.fixed_key_tokens;
        *key_tokens = (uint32_t)len;
        return rm_hash_u32s(tokens, len, h);
    }
    size_t B = r->cfg.key_block_tokens, m = n / B;
    if (m > r->cfg.max_key_blocks)
        m = r->cfg.max_key_blocks;
    if (m == 0) { /* shorter than a block: nothing worth affinity, spread */
        *key_tokens = (uint32_t)n;
        return rm_hash_u32s(tokens, n, h ^ 0x5bd1e995ULL);
    }
    if (r->nhot == 0) { /* the common case: the first block is the key */
        *key_tokens = (uint32_t)B;
        return rm_prefix_chain(h, tokens, B);
    }
    /* Key = the first block past the deepest hot prefix of this request.
     * Hot prefixes are shared by a large share of all traffic (summed over
     * the nodes' sketches), so keying on them would pin that share to one
     * node; the block after them tells conversations and documents apart
     * while every turn of one conversation still shares it. */
    uint64_t hb[MAX_KEY_BLOCKS + 1];
    size_t deepest = 0;
    hb[0] = h;
    for (size_t b = 1; b <= m; b++) {
        hb[b] = rm_prefix_chain(hb[b - 1], tokens + (b - 1) * B, B);
        if (is_hot(r, hb[b]))
            deepest = b;
    }
    if (deepest < m) {
        *key_tokens = (uint32_t)((deepest + 1) * B);
        return hb[deepest + 1];
    }
    /* All of it is hot prefix (plus a partial block): spread by the rest. */
    *key_tokens = (uint32_t)n;
    return rm_hash_u32s(tokens + m * B, n - m * B, hb[m] ^ 0x5bd1e995ULL);
}

static int by_hash(const void *a, const void *b)
{
    const radixmesh_v1_HotPrefix *x = a, *y = b;
    return x->hash < y->hash ? -1 : x->hash > y->hash;
}

/* A prefix is extended past only if at least this share of the requests
 * carrying it went on through a block other than the leading one. The
 * history of a single conversation (0 branching) is then never hot, however
 * much of the traffic it is -- at low traffic, one chat is all of it -- while
 * a prompt shared by two conversations in turn is (about one half). */
#define HOT_BRANCH 0.1

/* Two conversations behind one prompt on two nodes each lead their node:
 * the cluster sees them branch though neither node does. */
double rm_router_prefix_branching(const radixmesh_v1_HotPrefix *e, size_t n)
{
    double best = -1, all_leads = 0, other = 0;
    for (size_t i = 0; i < n; i++) {
        other += e[i].other_requests;
        all_leads += e[i].lead_requests;
        double via = 0;
        for (size_t j = 0; j < n; j++)
            if (e[j].lead == e[i].lead)
                via += e[j].lead_requests;
        best = via > best ? via : best;
    }
    return other + all_leads - (best > 0 ? best : 0);
}

/* Recomputes the hot set from every healthy node's last Stats: a prefix is
 * hot when the requests carrying it, summed over nodes, are at least
 * hot_share of all requests the nodes counted, and they branch after it
 * (HOT_BRANCH). Every router replica reads the same node statistics, so
 * replicas agree on the set. */
static void recompute_hot(rm_router *r)
{
    double total = 0;
    size_t nent = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (!n->have_stats || n->removed || !n->healthy)
            continue;
        if (n->stats.hot_block_tokens != r->cfg.key_block_tokens) {
            if (!n->block_warned)
                rm_log(RM_LOG_WARN, "router",
                       "node %s tracks %u-token blocks, router keys on %u: its hot prefixes "
                       "are ignored (set --hot-block-tokens = --key-block-tokens)",
                       n->id, n->stats.hot_block_tokens, r->cfg.key_block_tokens);
            n->block_warned = 1;
            continue;
        }
        total += n->stats.hot_window_requests;
        nent += n->stats.hot_prefixes_count;
    }
    double share = r->cfg.hot_share;
    if (share <= 0) {
        share = r->healthy ? 0.5 / r->healthy : 1.0;
        if (share < 0.02)
            share = 0.02;
    }
    r->hot_share_now = share;
    radixmesh_v1_HotPrefix *all = rm_xmalloc(sizeof *all * (nent + 1));
    size_t k = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (!n->have_stats || n->removed || !n->healthy ||
            n->stats.hot_block_tokens != r->cfg.key_block_tokens)
            continue;
        for (pb_size_t j = 0; j < n->stats.hot_prefixes_count; j++)
            all[k++] = n->stats.hot_prefixes[j];
    }
    qsort(all, k, sizeof *all, by_hash);
    r->nhot = 0;
    r->hot = rm_xrealloc(r->hot, sizeof *r->hot * (k + 1));
    for (size_t i = 0; i < k;) {
        size_t j = i;
        double sum = 0;
        while (j < k && all[j].hash == all[i].hash)
            sum += all[j++].requests;
        if (total > 0 && sum >= share * total &&
            rm_router_prefix_branching(all + i, j - i) >= HOT_BRANCH * sum)
            r->hot[r->nhot++] = all[i].hash;
        i = j;
    }
    free(all);
}

/* The node's --worker-url, as this router can reach it. A sidecar node
 * names its worker by a loopback address, which from here means the
 * node's own host. Returns 1 if the pairing changed. */
static int learn_worker(rnode *n, const char *url)
{
    char host[256];
    int port = 0;
    if (!url || !*url || rm_parse_http_url(url, host, sizeof host, &port) != 0) {
        host[0] = '\0';
        port = 0;
    } else if (!strcmp(host, "localhost") || !strncmp(host, "127.", 4) ||
               !strcmp(host, "0.0.0.0")) {
        char nh[256];
        int np;
        if (rm_parse_hostport(n->address, nh, sizeof nh, &np) == 0)
            snprintf(host, sizeof host, "%s", nh);
    }
    if (port == n->worker_port && !strcmp(host, n->worker_host))
        return 0;
    snprintf(n->worker_host, sizeof n->worker_host, "%s", host);
    n->worker_port = port;
    n->worker_ok = port != 0;
    rm_breaker_init(&n->breaker); /* another worker */
    n->worker_rate = -1;
    n->worker_has_counts = 0;
    return 1;
}

/* ---- health checks and stats polls ---------------------------------------- */

typedef struct node_op {
    rm_router *r;
    rnode *n;
} node_op;

static int is_transport_failure(grpc_status_code st)
{
    return st == GRPC_STATUS_UNAVAILABLE || st == GRPC_STATUS_DEADLINE_EXCEEDED ||
           st == GRPC_STATUS_CANCELLED || st == GRPC_STATUS_UNKNOWN;
}

/* What a node's failed call counts as: a transport failure while the
 * router's own loop stalled measured the router, not the node. */
static rm_outlier_outcome outcome(const rm_router *r, grpc_status_code st)
{
    return rm_outlier_classify(is_transport_failure(st), rm_rpc_server_reply_stalled(r->srv));
}

static void on_health(void *ctx, grpc_status_code st, grpc_byte_buffer *reply, const char *details)
{
    node_op *op = ctx;
    rm_router *r = op->r;
    rnode *n = op->n;
    n->health_busy = 0;
    if (!n->removed && n->id) {
        if (st == GRPC_STATUS_OK) {
            grpc_health_v1_HealthCheckResponse rep = grpc_health_v1_HealthCheckResponse_init_zero;
            char err[128];
            if (rm_pb_decode_bb(reply, grpc_health_v1_HealthCheckResponse_fields, &rep, err,
                                sizeof err) &&
                rep.status == grpc_health_v1_HealthCheckResponse_ServingStatus_SERVING)
                node_serving(r, n);
            else
                node_not_serving(r, n, "NOT_SERVING");
        } else if (is_transport_failure(st)) {
            note(r, n, outcome(r, st), details);
        } else {
            node_not_serving(r, n, details);
        }
    }
    node_unref(n);
    free(op);
}

static void on_stats(void *ctx, grpc_status_code st, grpc_byte_buffer *reply, const char *details)
{
    node_op *op = ctx;
    rm_router *r = op->r;
    rnode *n = op->n;
    n->stats_busy = 0;
    if (!n->removed && !is_transport_failure(st))
        note_auth(r, n, st, details);
    if (!n->removed)
        note(r, n, outcome(r, st), details);
    if (st == GRPC_STATUS_OK && !n->removed) {
        radixmesh_v1_NodeStats s = radixmesh_v1_NodeStats_init_zero;
        char err[128];
        if (rm_pb_decode_bb(reply, radixmesh_v1_NodeStats_fields, &s, err, sizeof err)) {
            /* What the node now confirms as served no longer needs our
             * estimate (a restarted node starts from zero). */
            uint64_t before = n->have_stats ? n->stats.match_requests_total : 0;
            uint64_t now_req = s.match_requests_total;
            n->pending -= now_req >= before ? (double)(now_req - before) : (double)now_req;
            if (n->pending < 0)
                n->pending = 0;
            if (n->have_stats)
                pb_release(radixmesh_v1_NodeStats_fields, &n->stats);
            n->stats = s;
            n->have_stats = 1;
            const char *rid = s.node_id ? s.node_id : "";
            if (!n->id && *rid && !find_by_id(r, rid)) {
                n->id = rm_xstrndup(rid, strlen(rid)); /* discovered via DNS */
                rm_log(RM_LOG_INFO, "router", "node at %s is %s", n->address, n->id);
            } else if (n->id && strcmp(n->id, rid) != 0 && !n->id_warned) {
                rm_log(RM_LOG_WARN, "router", "node %s at %s calls itself '%s'", n->id, n->address,
                       rid);
                n->id_warned = 1;
            }
            if (n->id && learn_worker(n, s.worker_url)) {
                if (n->worker_port)
                    rm_log(RM_LOG_INFO, "router", "node %s pairs with worker %s:%d", n->id,
                           n->worker_host, n->worker_port);
                rebuild_ring(r);
            }
            recompute_hot(r);
        } else {
            pb_release(radixmesh_v1_NodeStats_fields, &s);
        }
    }
    node_unref(n);
    free(op);
}

static void empty_call(rm_router *r, rnode *n, void *method, rm_rpc_reply_fn cb)
{
    grpc_slice empty = grpc_empty_slice();
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&empty, 1);
    node_op *op = rm_xmalloc(sizeof *op);
    op->r = r;
    op->n = n;
    if (rm_rpc_server_client_call(r->srv, n->ch, method, bb, (int)r->cfg.call_timeout_ms, cb, op)) {
        free(op);
    } else {
        node_ref(n);
        if (cb == on_health)
            n->health_busy = 1;
        else
            n->stats_busy = 1;
    }
    grpc_byte_buffer_destroy(bb);
}

void rm_router_tick(rm_router *r, uint64_t now_ms)
{
    if (now_ms - r->last_health_ms >= r->cfg.health_interval_ms) {
        r->last_health_ms = now_ms;
        for (uint32_t i = 0; i < r->nnodes; i++) {
            rnode *n = r->nodes[i];
            if (!n->health_busy && n->id)
                empty_call(r, n, n->m_health, on_health);
            if (!n->id && !n->stats_busy) /* learn the id first */
                empty_call(r, n, n->m_stats, on_stats);
        }
    }
    if (now_ms - r->last_stats_ms >= r->cfg.stats_interval_ms) {
        r->last_stats_ms = now_ms;
        /* Nodes refusing the router's token are polled too: a poll is
         * how they are seen to accept it again. */
        for (uint32_t i = 0; i < r->nnodes; i++) {
            rnode *n = r->nodes[i];
            if (n->id && n->confirmed && !n->draining && !n->ol.ejected && !n->stats_busy)
                empty_call(r, n, n->m_stats, on_stats);
        }
    }
}

/* ---- proxied calls ---------------------------------------------------------- */

typedef enum { PX_MATCH, PX_INSERT, PX_RELEASE } px_kind;

typedef struct proxy {
    rm_router *r;
    rm_rpc_call *call;
    px_kind kind;
    grpc_slice req;      /* bytes to forward */
    grpc_slice fallback; /* Insert without its lease, for another node */
    int has_fallback;
    uint64_t key;
    rnode *node; /* holds a reference */
    int attempts;
} proxy;

static void *method_of(const proxy *p, const rnode *n)
{
    return p->kind == PX_MATCH ? n->m_match : p->kind == PX_INSERT ? n->m_insert : n->m_release;
}

static void on_forward_reply(void *ctx, grpc_status_code st, grpc_byte_buffer *reply,
                             const char *details);

/* A forwarded call to node n (already charged with it in flight); takes
 * req and fallback (a grpc_empty_slice() when has_fallback is 0). */
static proxy *proxy_new(rm_router *r, rm_rpc_call *call, px_kind kind, grpc_slice req,
                        grpc_slice fallback, int has_fallback, uint64_t key, rnode *n)
{
    proxy *p = rm_xcalloc(1, sizeof *p);
    *p = (proxy){r, call, kind, req, fallback, has_fallback, key, node_ref(n), 0};
    return p;
}

static void proxy_free(proxy *p)
{
    grpc_slice_unref(p->req);
    if (p->has_fallback)
        grpc_slice_unref(p->fallback);
    node_unref(p->node);
    free(p);
}

/* Why no node could take a call: a node refusing the router's own token
 * is a configuration error the client should not mistake for its own
 * (its token was fine) nor for an outage. */
static void no_node_reason(const rm_router *r, char *msg, size_t len)
{
    const rnode *refusing = NULL;
    uint32_t up = 0, refuse = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        const rnode *n = r->nodes[i];
        if (!n->id || !n->confirmed || n->draining)
            continue;
        up++;
        if (n->auth_rejected) {
            refuse++;
            refusing = n;
        }
    }
    if (refusing && refuse == up)
        snprintf(msg, len,
                 "no cache node accepts the router's credentials (%s answers UNAUTHENTICATED): "
                 "check the router's --node-token-file",
                 refusing->id);
    else if (refusing)
        snprintf(msg, len,
                 "no healthy cache node: %s rejects the router's credentials (check the router's "
                 "--node-token-file), the others are down or unreachable",
                 refusing->id);
    else
        snprintf(msg, len, "no healthy cache node: every node is down or unreachable");
}

static void forward(proxy *p)
{
    grpc_slice s = grpc_slice_ref(p->req);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    p->attempts++;
    if (rm_rpc_server_client_call(p->r->srv, p->node->ch, method_of(p, p->node), bb,
                                  (int)p->r->cfg.call_timeout_ms, on_forward_reply, p) != 0) {
        /* Refused only while the server's queue shuts down. */
        p->node->inflight--;
        rm_rpc_call_finish(p->call, GRPC_STATUS_UNAVAILABLE, "router is shutting down", NULL);
        proxy_free(p);
    }
    grpc_byte_buffer_destroy(bb);
}

static void on_forward_reply(void *ctx, grpc_status_code st, grpc_byte_buffer *reply,
                             const char *details)
{
    proxy *p = ctx;
    rm_router *r = p->r;
    rnode *n = p->node;
    if (n->inflight)
        n->inflight--;
    int failed = is_transport_failure(st), auth = st == GRPC_STATUS_UNAUTHENTICATED;
    if (!failed)
        note_auth(r, n, st, details);
    note(r, n, outcome(r, st), details);
    if (st == GRPC_STATUS_OK) {
        rm_rpc_call_finish(p->call, GRPC_STATUS_OK, NULL, grpc_byte_buffer_copy(reply));
        proxy_free(p);
        return;
    }
    if (!failed && !auth) { /* the node's own answer: pass it on */
        rm_rpc_call_finish(p->call, st, details, NULL);
        proxy_free(p);
        return;
    }
    /* A transport failure, or the node refusing the router's token: the
     * client's own call was fine, so it gets another node or UNAVAILABLE,
     * never the router's UNAUTHENTICATED as if its token were wrong. */
    char msg[512];
    if (auth)
        snprintf(msg, sizeof msg,
                 "node %s rejected the router's credentials (%s): check the router's "
                 "--node-token-file",
                 n->id, details);
    if (p->kind == PX_RELEASE && auth) {
        rm_rpc_call_finish(p->call, GRPC_STATUS_UNAVAILABLE, msg, NULL);
        proxy_free(p);
        return;
    }
    if (p->kind == PX_RELEASE) {
        /* The lease lived on a node that is gone or hung: it dies with the
         * node or expires by TTL. Nothing is left to release. */
        rm_rpc_call_finish(
            p->call, GRPC_STATUS_OK, NULL,
            rm_pb_encode_bb(radixmesh_v1_ReleaseReply_fields, &(radixmesh_v1_ReleaseReply){0}));
        proxy_free(p);
        return;
    }
    rnode *next = p->attempts < 2 ? pick(r, p->key, n, 1, NULL) : NULL;
    if (!next) {
        if (!auth)
            snprintf(msg, sizeof msg,
                     "no healthy cache node could serve the call (last: %s at %s: %s)", n->id,
                     n->address, details);
        rm_rpc_call_finish(p->call, GRPC_STATUS_UNAVAILABLE, msg, NULL);
        proxy_free(p);
        return;
    }
    r->retries++;
    r->failovers++;
    rm_log(RM_LOG_INFO, "router", "retrying on %s after %s failed: %s", next->id, n->id, details);
    if (p->has_fallback) { /* the lease belonged to the failed node */
        grpc_slice_unref(p->req);
        p->req = grpc_slice_ref(p->fallback);
    }
    p->node = node_ref(next);
    node_unref(n);
    forward(p);
}

/* Copies a request's bytes into one slice (kept for a retry). */
static grpc_slice request_bytes(grpc_byte_buffer *req)
{
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, req);
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    return s;
}

static grpc_status_code decode_tokens_req(rm_router *r, grpc_byte_buffer *req,
                                          const pb_msgdesc_t *desc, void *msg, pb_callback_t *cb,
                                          rm_tokens *toks, char *err, size_t errlen)
{
    toks->max = r->cfg.max_request_tokens;
    rm_pb_tokens_decoder(cb, toks);
    if (rm_pb_decode_bb(req, desc, msg, err, errlen))
        return GRPC_STATUS_OK;
    if (toks->too_many)
        snprintf(err, errlen, "request has more than %" PRIu64 " tokens (--max-request-tokens)",
                 r->cfg.max_request_tokens);
    return GRPC_STATUS_INVALID_ARGUMENT;
}

static void no_node(rm_router *r, rm_rpc_call *call)
{
    char msg[256];
    no_node_reason(r, msg, sizeof msg);
    rm_rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, msg, NULL);
}

/* ---- choosing between two candidates ------------------------------------- */

/* Match and Route look at the key's first two acceptable nodes on the ring
 * (power of two choices). Both are peeked in parallel for the cached prefix
 * length; the request goes where more of its prefix already is, and when
 * neither holds more (a new conversation), to the one that has served fewer
 * requests. Continuing conversations keep their node; new ones even out the
 * load, which plain hashing leaves 10-16% uneven on real traces (see
 * BENCHMARKS.md). */
typedef enum { CH_MATCH, CH_ROUTE, CH_GATEWAY } choice_kind;

typedef struct choice choice;
typedef struct peek_ctx {
    choice *ch;
    int idx;
} peek_ctx;

struct choice {
    rm_router *r;
    rm_rpc_call *call; /* CH_MATCH, CH_ROUTE */
    rm_route_job *job; /* CH_GATEWAY */
    choice_kind kind;
    grpc_slice req; /* CH_MATCH: the client's request, forwarded as is */
    uint64_t key;
    uint32_t key_tokens;
    size_t ntokens;
    rnode *cand[2];
    int64_t cached[2]; /* -1: the peek failed */
    int ncand, waiting, spilled;
    peek_ctx pk[2];
};

static void decide(choice *ch)
{
    rm_router *r = ch->r;
    int w = 0;
    if (ch->ncand == 2) {
        /* Credit starts with the key's own tokens. The key block is what
         * sets this request apart (it lies past any cluster-hot prefix),
         * so a node holding all of it has seen this conversation or
         * document; anything shorter is text every request with a common
         * prompt shares, cached (or soon cached) everywhere, and counting
         * it sent every new conversation behind such a prompt to the first
         * nodes that held the prompt. */
        int64_t key = (int64_t)ch->key_tokens, a = ch->cached[0], b = ch->cached[1];
        if (a >= 0)
            a = a >= key ? a - key + 1 : 0;
        if (b >= 0)
            b = b >= key ? b - key + 1 : 0;
        if (a < 0 || b < 0)
            w = a < 0 && b >= 0 ? 1 : 0;
        else if (a != b)
            w = b > a;
        else
            w = served(ch->cand[1]) < served(ch->cand[0]);
    }
    if (ch->ncand == 2 && ch->cand[w]->removed && !ch->cand[!w]->removed)
        w = !w; /* left the membership while we peeked */
    rnode *n = ch->cand[w];
    charge(r, n, ch->kind != CH_ROUTE, ch->spilled, 1);
    n->pending += 1;
    if (ch->kind == CH_GATEWAY) {
        rm_route_job *job = ch->job;
        n->gw_requests++;
        n->gw_inflight++;
        r->gw_requests_total++;
        job->found = job->charged = 1;
        snprintf(job->node_id, sizeof job->node_id, "%s", n->id);
        snprintf(job->worker_host, sizeof job->worker_host, "%s", n->worker_host);
        job->worker_port = n->worker_port;
        job->key_tokens = ch->key_tokens;
        job->done(job);
    } else if (ch->kind == CH_MATCH) {
        forward(proxy_new(r, ch->call, PX_MATCH, ch->req, grpc_empty_slice(), 0, ch->key, n));
    } else {
        radixmesh_v1_RouteReply rep = radixmesh_v1_RouteReply_init_zero;
        rep.node_id = n->id;
        rep.address = n->address;
        rep.key_tokens = ch->key_tokens;
        rep.spilled = ch->spilled;
        rm_rpc_call_finish(ch->call, GRPC_STATUS_OK, NULL,
                           rm_pb_encode_bb(radixmesh_v1_RouteReply_fields, &rep));
        grpc_slice_unref(ch->req);
    }
    for (int i = 0; i < ch->ncand; i++)
        node_unref(ch->cand[i]);
    free(ch);
}

static void on_peek(void *ctx, grpc_status_code st, grpc_byte_buffer *reply, const char *details)
{
    peek_ctx *pk = ctx;
    choice *ch = pk->ch;
    rnode *n = ch->cand[pk->idx];
    if (!is_transport_failure(st))
        note_auth(ch->r, n, st, details);
    note(ch->r, n, outcome(ch->r, st), details);
    ch->cached[pk->idx] = -1;
    if (st == GRPC_STATUS_OK) {
        radixmesh_v1_MatchReply rep = radixmesh_v1_MatchReply_init_zero;
        char err[64];
        if (rm_pb_decode_bb(reply, radixmesh_v1_MatchReply_fields, &rep, err, sizeof err))
            ch->cached[pk->idx] = rep.matched_tokens;
        pb_release(radixmesh_v1_MatchReply_fields, &rep);
    }
    if (--ch->waiting == 0)
        decide(ch);
}

/* Peeks at both candidates, or decides at once when there is only one.
 * ch has its key and candidates. */
static void peek_and_decide(choice *ch, const char *ns, const uint32_t *tokens, size_t ntokens)
{
    rm_router *r = ch->r;
    for (int i = 0; i < ch->ncand; i++) /* until decide */
        node_ref(ch->cand[i]);
    if (ch->ncand == 1) {
        decide(ch);
        return;
    }
    radixmesh_v1_MatchRequest pm = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens_view view = {tokens, ntokens};
    pm.namespace = (char *)ns;
    rm_pb_tokens_encoder(&pm.tokens, &view);
    pm.peek = true;
    grpc_byte_buffer *bb = rm_pb_encode_bb(radixmesh_v1_MatchRequest_fields, &pm);
    grpc_slice bytes = request_bytes(bb);
    grpc_byte_buffer_destroy(bb);
    ch->waiting = 2;
    for (int i = 0; i < 2; i++) {
        ch->pk[i] = (peek_ctx){ch, i};
        grpc_slice s = grpc_slice_ref(bytes);
        grpc_byte_buffer *pb = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        if (rm_rpc_server_client_call(r->srv, ch->cand[i]->ch, ch->cand[i]->m_match, pb,
                                      (int)r->cfg.call_timeout_ms, on_peek, &ch->pk[i]) != 0) {
            ch->cached[i] = -1;
            ch->waiting--;
        }
        grpc_byte_buffer_destroy(pb);
    }
    grpc_slice_unref(bytes);
    if (ch->waiting == 0)
        decide(ch);
}

/* Starts the choice for a decoded request; finishes the call itself. */
static void choose(rm_router *r, rm_rpc_call *call, choice_kind kind, grpc_slice req,
                   const char *ns, const rm_tokens *toks)
{
    choice *ch = rm_xcalloc(1, sizeof *ch);
    ch->r = r;
    ch->call = call;
    ch->kind = kind;
    ch->req = req;
    ch->ntokens = toks->n;
    ch->key = rm_router_key(r, ns, toks->v, toks->n, &ch->key_tokens);
    ch->ncand = (int)candidates(r, ch->key, NULL, ch->cand, r->cfg.choices, &ch->spilled, 0);
    if (ch->ncand == 0) {
        grpc_slice_unref(req);
        free(ch);
        no_node(r, call);
        return;
    }
    peek_and_decide(ch, ns, toks->v, toks->n);
}

static void do_match(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req)
{
    rm_router *r = ctx;
    radixmesh_v1_MatchRequest m = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens toks = {0};
    char err[256];
    grpc_status_code st = decode_tokens_req(r, req, radixmesh_v1_MatchRequest_fields, &m, &m.tokens,
                                            &toks, err, sizeof err);
    if (st != GRPC_STATUS_OK)
        rm_rpc_call_finish(call, st, err, NULL);
    else if (m.peek)
        rm_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                           "peek is for nodes; ask the router with Route", NULL);
    else
        choose(r, call, CH_MATCH, request_bytes(req), m.namespace ? m.namespace : "", &toks);
    pb_release(radixmesh_v1_MatchRequest_fields, &m);
    rm_tokens_free(&toks);
}

static void do_insert(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req)
{
    rm_router *r = ctx;
    radixmesh_v1_InsertRequest m = radixmesh_v1_InsertRequest_init_zero;
    rm_tokens toks = {0};
    char err[256];
    grpc_status_code st = decode_tokens_req(r, req, radixmesh_v1_InsertRequest_fields, &m,
                                            &m.tokens, &toks, err, sizeof err);
    if (st != GRPC_STATUS_OK) {
        rm_rpc_call_finish(call, st, err, NULL);
        goto out;
    }
    const char *ns = m.namespace ? m.namespace : "";
    uint32_t kt;
    uint64_t key = rm_router_key(r, ns, toks.v, toks.n, &kt);
    /* The same insert without lease or pin, for any other node. */
    radixmesh_v1_InsertRequest plain = radixmesh_v1_InsertRequest_init_zero;
    rm_tokens_view view = {toks.v, toks.n};
    plain.namespace = (char *)ns;
    rm_pb_tokens_encoder(&plain.tokens, &view);
    grpc_byte_buffer *pbb = rm_pb_encode_bb(radixmesh_v1_InsertRequest_fields, &plain);
    grpc_slice fallback = request_bytes(pbb);
    grpc_byte_buffer_destroy(pbb);
    rnode *n = NULL;
    grpc_slice bytes;
    if (m.node_id && *m.node_id) {
        rnode *pin = find_by_id(r, m.node_id);
        if (pin && on_ring(pin)) {
            /* Pinned: the node that answered Match holds the lease, whatever
             * the ring or the loads say now. Still counted as load. */
            n = pin;
            charge(r, n, 1, 0, 0);
            bytes = request_bytes(req);
        }
    }
    if (!n) {
        /* Not pinned, or its node is gone: cache it where the key goes now,
         * without the lease (which only the old node knew). */
        n = pick(r, key, NULL, 1, NULL);
        if (!n) {
            grpc_slice_unref(fallback);
            no_node(r, call);
            goto out;
        }
        bytes = (m.lease_id && !(m.node_id && *m.node_id)) ? request_bytes(req)
                                                           : grpc_slice_ref(fallback);
    }
    forward(proxy_new(r, call, PX_INSERT, bytes, fallback, 1, key, n));
out:
    pb_release(radixmesh_v1_InsertRequest_fields, &m);
    rm_tokens_free(&toks);
}

static void do_release(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req)
{
    rm_router *r = ctx;
    radixmesh_v1_ReleaseRequest m = radixmesh_v1_ReleaseRequest_init_zero;
    char err[256];
    if (!rm_pb_decode_bb(req, radixmesh_v1_ReleaseRequest_fields, &m, err, sizeof err)) {
        rm_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, err, NULL);
    } else if (!m.node_id || !*m.node_id) {
        rm_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                           "Release needs node_id: the node_id of the Match reply", NULL);
    } else {
        rnode *n = find_by_id(r, m.node_id);
        if (!n && !was_member(r, m.node_id)) {
            snprintf(err, sizeof err, "unknown node '%.100s'", m.node_id);
            rm_rpc_call_finish(call, GRPC_STATUS_NOT_FOUND, err, NULL);
        } else if (n && n->auth_rejected) {
            snprintf(err, sizeof err,
                     "node %.100s rejects the router's credentials: check the router's "
                     "--node-token-file",
                     n->id);
            rm_rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, err, NULL);
        } else if (!n || !on_ring(n)) {
            /* Removed, down or hung: its leases die with it or expire by
             * their TTL. */
            rm_rpc_call_finish(
                call, GRPC_STATUS_OK, NULL,
                rm_pb_encode_bb(radixmesh_v1_ReleaseReply_fields, &(radixmesh_v1_ReleaseReply){0}));
        } else {
            n->inflight++;
            forward(
                proxy_new(r, call, PX_RELEASE, request_bytes(req), grpc_empty_slice(), 0, 0, n));
        }
    }
    pb_release(radixmesh_v1_ReleaseRequest_fields, &m);
}

static void do_route(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req)
{
    rm_router *r = ctx;
    radixmesh_v1_RouteRequest m = radixmesh_v1_RouteRequest_init_zero;
    rm_tokens toks = {0};
    char err[256];
    grpc_status_code st = decode_tokens_req(r, req, radixmesh_v1_RouteRequest_fields, &m, &m.tokens,
                                            &toks, err, sizeof err);
    if (st != GRPC_STATUS_OK)
        rm_rpc_call_finish(call, st, err, NULL);
    else
        choose(r, call, CH_ROUTE, grpc_empty_slice(), m.namespace ? m.namespace : "", &toks);
    pb_release(radixmesh_v1_RouteRequest_fields, &m);
    rm_tokens_free(&toks);
}

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
        st.load = node_load(r, n, rm_now_ms());
        st.worker_healthy = n->worker_port && worker_up(n);
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

static grpc_status_code do_cluster_stats(void *ctx, grpc_byte_buffer *req, grpc_byte_buffer **reply,
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

static grpc_status_code do_health(void *ctx, grpc_byte_buffer *req, grpc_byte_buffer **reply,
                                  char *msg, size_t len)
{
    rm_router *r = ctx;
    grpc_health_v1_HealthCheckRequest q = grpc_health_v1_HealthCheckRequest_init_zero;
    if (!rm_pb_decode_bb(req, grpc_health_v1_HealthCheckRequest_fields, &q, msg, len)) {
        pb_release(grpc_health_v1_HealthCheckRequest_fields, &q);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    pb_release(grpc_health_v1_HealthCheckRequest_fields, &q);
    grpc_health_v1_HealthCheckResponse rep = grpc_health_v1_HealthCheckResponse_init_zero;
    /* Ready to route only with at least one node on the ring. */
    rep.status = r->serving && r->healthy
                     ? grpc_health_v1_HealthCheckResponse_ServingStatus_SERVING
                     : grpc_health_v1_HealthCheckResponse_ServingStatus_NOT_SERVING;
    *reply = rm_pb_encode_bb(grpc_health_v1_HealthCheckResponse_fields, &rep);
    return GRPC_STATUS_OK;
}

int rm_router_register(rm_router *r, rm_rpc_server *srv)
{
    r->srv = srv;
    const rm_rpc_method methods[] = {
        {.path = "/radixmesh.v1.Router/Route",
         .kind = RM_RPC_UNARY_ASYNC,
         .unary_async = do_route,
         .ctx = r},
        {.path = "/radixmesh.v1.Router/Match",
         .kind = RM_RPC_UNARY_ASYNC,
         .unary_async = do_match,
         .ctx = r},
        {.path = "/radixmesh.v1.Router/Insert",
         .kind = RM_RPC_UNARY_ASYNC,
         .unary_async = do_insert,
         .ctx = r},
        {.path = "/radixmesh.v1.Router/Release",
         .kind = RM_RPC_UNARY_ASYNC,
         .unary_async = do_release,
         .ctx = r},
        {.path = "/radixmesh.v1.Router/ClusterStats",
         .kind = RM_RPC_UNARY,
         .unary = do_cluster_stats,
         .ctx = r},
        {.path = "/grpc.health.v1.Health/Check",
         .kind = RM_RPC_UNARY,
         .unary = do_health,
         .ctx = r},
    };
    for (size_t i = 0; i < RM_ARRAY_LEN(methods); i++)
        if (rm_rpc_server_add_method(srv, &methods[i]) != 0)
            return -1;
    return 0;
}

/* ---- gateway jobs (posted from the gateway thread) ------------------------ */

typedef struct gw_post {
    rm_router *r;
    rm_route_job *job;
    int ok;
    rm_worker_outcome outcome;
    rm_worker_report rep;
} gw_post;

static void breaker_log(rm_router *r, rnode *n, const char *why)
{
    const rm_breaker *b = &n->breaker;
    if (b->state == RM_BREAKER_OPEN) {
        r->breaker_opens++;
        rm_log(RM_LOG_WARN, "router",
               "worker of %s (%s:%d): circuit open after %s; a trial request in %u ms", n->id,
               n->worker_host, n->worker_port, why, b->cooldown_ms);
    } else {
        rm_log(RM_LOG_INFO, "router", "worker of %s (%s:%d): circuit %s%s", n->id, n->worker_host,
               n->worker_port, rm_breaker_state_name(b->state),
               b->state == RM_BREAKER_HALF_OPEN ? ": the next request is a trial" : "");
    }
}

/* Open breakers whose cooldown has passed turn half-open (checked as
 * gateway requests come: without them no trial could go anyway). */
static void breakers_poll(rm_router *r)
{
    uint64_t now = rm_now_ms();
    int changed = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (!n->removed && rm_breaker_poll(&n->breaker, now)) {
            breaker_log(r, n, NULL);
            changed = 1;
        }
    }
    if (changed)
        rebuild_ring(r);
}

static void gw_route(void *arg)
{
    gw_post *p = arg;
    rm_router *r = p->r;
    rm_route_job *job = p->job;
    free(p);
    breakers_poll(r);
    choice *ch = rm_xcalloc(1, sizeof *ch);
    ch->r = r;
    ch->job = job;
    ch->kind = CH_GATEWAY;
    ch->req = grpc_empty_slice();
    ch->ntokens = job->ntokens;
    const char *ns = job->ns ? job->ns : "";
    if (job->any) /* no affinity: a fresh key each time spreads them */
        ch->key = rm_mix64(++r->any_counter ^ 0x9e3779b97f4a7c15ULL);
    else
        ch->key = rm_router_key(r, ns, job->tokens, job->ntokens, &ch->key_tokens);
    rnode *ex = job->exclude[0] ? find_by_id(r, job->exclude) : NULL;
    ch->ncand =
        (int)candidates(r, ch->key, ex, ch->cand, job->any ? 1 : r->cfg.choices, &ch->spilled, 1);
    if (ch->ncand == 1 && ch->cand[0] == ex)
        ch->ncand = 0; /* the ring's fallback would hand back the failed one */
    if (ch->ncand == 0) {
        free(ch);
        job->found = 0;
        if (r->healthy)
            snprintf(job->why, sizeof job->why,
                     "no inference worker is available (no healthy node with a reachable worker)");
        else
            no_node_reason(r, job->why, sizeof job->why);
        job->done(job);
        return;
    }
    /* A half-open worker among the candidates takes this request as its
     * one trial, decided here and now: with a peek in between, a second
     * request could pick it before the first is charged. */
    for (int i = 0; i < ch->ncand; i++) {
        rnode *n = ch->cand[i];
        if (n->breaker.state == RM_BREAKER_HALF_OPEN && rm_breaker_admits(&n->breaker)) {
            job->trial = rm_breaker_take(&n->breaker);
            ch->cand[0] = n;
            ch->ncand = 1;
            rebuild_ring(r); /* no other request until the trial's outcome */
            break;
        }
    }
    peek_and_decide(ch, ns, job->tokens, job->ntokens);
}

int rm_router_route_async(rm_router *r, rm_route_job *job)
{
    job->found = job->charged = job->trial = 0;
    gw_post *p = rm_xcalloc(1, sizeof *p);
    p->r = r;
    p->job = job;
    if (rm_rpc_server_post(r->srv, gw_route, p) != 0) {
        free(p);
        return -1;
    }
    return 0;
}

static void free_job(rm_route_job *job)
{
    free(job->ns);
    free(job->tokens);
    free(job->record);
    free(job);
}

typedef struct record_op {
    rm_router *r;
    rnode *n;
    rm_route_job *job;
} record_op;

static void on_recorded(void *ctx, grpc_status_code st, grpc_byte_buffer *reply,
                        const char *details)
{
    record_op *op = ctx;
    (void)reply;
    if (st != GRPC_STATUS_OK)
        rm_log(RM_LOG_DEBUG, "router", "recording a gateway prompt in %s: %s", op->n->id, details);
    node_unref(op->n);
    free_job(op->job);
    free(op);
}

/* Inserts the prompt once the Match has counted its hit: the node then
 * holds what the worker has just computed. */
static void on_record_match(void *ctx, grpc_status_code st, grpc_byte_buffer *reply,
                            const char *details)
{
    record_op *op = ctx;
    (void)reply;
    if (st != GRPC_STATUS_OK || op->n->removed) {
        on_recorded(op, st, NULL, details);
        return;
    }
    radixmesh_v1_InsertRequest ins = radixmesh_v1_InsertRequest_init_zero;
    rm_tokens_view view = {op->job->tokens, op->job->ntokens};
    if (op->job->record)
        view = (rm_tokens_view){op->job->record, op->job->nrecord};
    ins.namespace = op->job->ns;
    rm_pb_tokens_encoder(&ins.tokens, &view);
    grpc_byte_buffer *bb = rm_pb_encode_bb(radixmesh_v1_InsertRequest_fields, &ins);
    if (rm_rpc_server_client_call(op->r->srv, op->n->ch, op->n->m_insert, bb,
                                  (int)op->r->cfg.call_timeout_ms, on_recorded, op) != 0)
        on_recorded(op, GRPC_STATUS_UNAVAILABLE, NULL, "cannot start Insert");
    grpc_byte_buffer_destroy(bb);
}

static void record_prompt(rm_router *r, rnode *n, rm_route_job *job)
{
    record_op *op = rm_xmalloc(sizeof *op);
    *op = (record_op){r, node_ref(n), job};
    radixmesh_v1_MatchRequest m = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens_view view = {job->tokens, job->ntokens};
    m.namespace = job->ns;
    rm_pb_tokens_encoder(&m.tokens, &view);
    grpc_byte_buffer *bb = rm_pb_encode_bb(radixmesh_v1_MatchRequest_fields, &m);
    if (rm_rpc_server_client_call(r->srv, n->ch, n->m_match, bb, (int)r->cfg.call_timeout_ms,
                                  on_record_match, op) != 0)
        on_recorded(op, GRPC_STATUS_UNAVAILABLE, NULL, "cannot start Match");
    grpc_byte_buffer_destroy(bb);
}

static void set_worker_ok(rm_router *r, rnode *n, int ok, const char *why)
{
    if (n->worker_ok == ok)
        return;
    n->worker_ok = ok;
    rm_log(ok ? RM_LOG_INFO : RM_LOG_WARN, "router", "worker of %s (%s:%d) %s%s%s", n->id,
           n->worker_host, n->worker_port, ok ? "is back" : "is unreachable", why ? ": " : "",
           why ? why : "");
    rebuild_ring(r);
}

static void gw_done(void *arg)
{
    gw_post *p = arg;
    rm_router *r = p->r;
    rm_route_job *job = p->job;
    rnode *n = job->found ? find_by_id(r, job->node_id) : NULL;
    if (n && job->charged) {
        if (n->inflight)
            n->inflight--;
        if (n->gw_inflight)
            n->gw_inflight--;
    }
    if (n) {
        static const rm_breaker_outcome verdict[] = {
            [RM_WORKER_NO_VERDICT] = RM_BREAKER_NO_VERDICT,
            [RM_WORKER_ANSWERED] = RM_BREAKER_SUCCESS,
            [RM_WORKER_FAILED] = RM_BREAKER_FAILURE,
            [RM_WORKER_UNREACHABLE] = RM_BREAKER_FAILURE,
        };
        int changed = rm_breaker_done(&n->breaker, &r->cfg.worker_breaker, job->trial,
                                      verdict[p->outcome], rm_now_ms());
        if (changed)
            breaker_log(r, n, job->trial ? "a failed trial" : "consecutive failed requests");
        if (p->outcome == RM_WORKER_UNREACHABLE && n->worker_ok)
            set_worker_ok(r, n, 0, "a request could not connect"); /* rebuilds the ring */
        else if (changed)
            rebuild_ring(r);
    }
    int ok = p->ok;
    free(p);
    if (n && ok && !job->any && job->ntokens && n->healthy)
        record_prompt(r, n, job);
    else
        free_job(job);
}

void rm_router_route_done(rm_router *r, rm_route_job *job, int ok, rm_worker_outcome outcome)
{
    gw_post *p = rm_xcalloc(1, sizeof *p);
    p->r = r;
    p->job = job;
    p->ok = ok;
    p->outcome = outcome;
    if (rm_rpc_server_post(r->srv, gw_done, p) != 0) {
        free(p);
        free_job(job); /* the router has stopped: nothing left to release */
    }
}

size_t rm_router_workers(rm_router *r, rm_worker_ref **out)
{
    pthread_mutex_lock(&r->workers_mu);
    size_t n = r->nworkers;
    *out = rm_xcalloc(n + 1, sizeof **out);
    if (n) /* none published yet: the gateway may scrape before the first ring */
        memcpy(*out, r->workers, n * sizeof **out);
    pthread_mutex_unlock(&r->workers_mu);
    return n;
}

static void gw_report(void *arg)
{
    gw_post *p = arg;
    rm_router *r = p->r;
    rnode *n = find_by_id(r, p->rep.node_id);
    if (n) {
        if (p->rep.complete) { /* else the last figures stand */
            n->worker_has_counts = p->rep.has_counts;
            n->worker_hit = p->rep.hit_tokens;
            n->worker_query = p->rep.query_tokens;
            n->worker_rate = p->rep.hit_rate;
        }
        set_worker_ok(r, n, p->rep.reachable,
                      p->rep.reachable ? NULL : "its /metrics is unreachable");
    }
    free(p);
}

void rm_router_worker_report(rm_router *r, const rm_worker_report *rep)
{
    gw_post *p = rm_xcalloc(1, sizeof *p);
    p->r = r;
    p->rep = *rep;
    if (rm_rpc_server_post(r->srv, gw_report, p) != 0)
        free(p);
}

/* ---- published views: metrics, /api/cluster ------------------------------ */

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

static void family(rm_sbuf *b, const char *name, const char *type, const char *help)
{
    rm_sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *rm_router_metrics(rm_router *r)
{
    rm_sbuf b = {0};
    uint64_t hit, query;
    cluster_totals(r, &hit, &query);
    const char *rl = r->cfg.router_id;
    family(&b, "radixmesh_cluster_hit_tokens_total", "counter",
           "Tokens the cluster's Match requests found cached (sum over nodes).");
    rm_sbuf_printf(&b, "radixmesh_cluster_hit_tokens_total{router=\"%s\"} %" PRIu64 "\n", rl, hit);
    family(&b, "radixmesh_cluster_query_tokens_total", "counter",
           "Tokens of the cluster's Match requests (sum over nodes).");
    rm_sbuf_printf(&b, "radixmesh_cluster_query_tokens_total{router=\"%s\"} %" PRIu64 "\n", rl,
                   query);
    const struct {
        const char *name, *help;
        uint64_t v;
    } counters[] = {
        {"radixmesh_router_routed_requests_total", "Requests routed (Match and Route).",
         r->routed_total},
        {"radixmesh_router_spills_total", "Requests that skipped an overloaded node.", r->spills},
        {"radixmesh_router_failovers_total", "Calls moved off a failed node.", r->failovers},
        {"radixmesh_router_retries_total", "Calls retried on another node.", r->retries},
        {"radixmesh_router_ejections_total",
         "Nodes taken off the ring after consecutive failures (--eject-after-failures).",
         r->ejections},
    };
    for (size_t i = 0; i < RM_ARRAY_LEN(counters); i++) {
        family(&b, counters[i].name, "counter", counters[i].help);
        rm_sbuf_printf(&b, "%s{router=\"%s\"} %" PRIu64 "\n", counters[i].name, rl, counters[i].v);
    }
    if (r->gw_requests_total || r->nworkers) {
        uint64_t wh, wq;
        double wr = worker_totals(r, &wh, &wq);
        family(&b, "radixmesh_router_gateway_routed_total", "counter",
               "HTTP requests the gateway routed to workers.");
        rm_sbuf_printf(&b, "radixmesh_router_gateway_routed_total{router=\"%s\"} %" PRIu64 "\n", rl,
                       r->gw_requests_total);
        family(&b, "radixmesh_router_worker_breaker_opens_total", "counter",
               "Times a worker's circuit breaker opened (failed requests or trials).");
        rm_sbuf_printf(&b,
                       "radixmesh_router_worker_breaker_opens_total{router=\"%s\"} %" PRIu64 "\n",
                       rl, r->breaker_opens);
        family(&b, "radixmesh_cluster_worker_hit_rate", "gauge",
               "The workers' own prefix-cache hit rate (-1: unknown).");
        rm_sbuf_printf(&b, "radixmesh_cluster_worker_hit_rate{router=\"%s\"} %.17g\n", rl, wr);
        family(&b, "radixmesh_node_worker_up", "gauge",
               "1 while the node's worker is reachable and its circuit breaker closed.");
        for (uint32_t i = 0; i < r->nnodes; i++) {
            rnode *n = r->nodes[i];
            if (!n->removed && n->id && n->worker_port)
                rm_sbuf_printf(&b, "radixmesh_node_worker_up{router=\"%s\",node=\"%s\"} %d\n", rl,
                               n->id, worker_up(n));
        }
    }
    family(&b, "radixmesh_router_healthy_nodes", "gauge",
           "Nodes answering, neither ejected nor failing.");
    rm_sbuf_printf(&b, "radixmesh_router_healthy_nodes{router=\"%s\"} %u\n", rl, r->healthy);
    family(&b, "radixmesh_router_panic", "gauge",
           "1 while too few nodes are healthy (--panic-threshold) and all are routed to.");
    rm_sbuf_printf(&b, "radixmesh_router_panic{router=\"%s\"} %d\n", rl, r->panic);
    family(&b, "radixmesh_router_hot_prefixes", "gauge", "Prefixes routing keys extend past.");
    rm_sbuf_printf(&b, "radixmesh_router_hot_prefixes{router=\"%s\"} %zu\n", rl, r->nhot);
    /* Per node: cardinality is bounded by the membership. */
    const char *fams[][3] = {
        {"radixmesh_node_up", "gauge", "1 while the node is healthy."},
        {"radixmesh_node_failures", "gauge", "Consecutive failed calls to the node."},
        {"radixmesh_node_routed_requests_total", "counter", "Requests routed to the node."},
        {"radixmesh_node_hit_tokens_total", "counter", "The node's hit tokens (its Stats)."},
        {"radixmesh_node_query_tokens_total", "counter", "The node's query tokens (its Stats)."},
        {"radixmesh_node_evicted_tokens_total", "counter", "The node's evicted tokens."},
        {"radixmesh_node_pool_pages", "gauge", "The node's pool size in pages."},
        {"radixmesh_node_free_pages", "gauge", "The node's free pages."},
        {"radixmesh_node_load", "gauge", "In-flight + recent routed requests."},
    };
    uint64_t now = rm_now_ms();
    for (size_t f = 0; f < RM_ARRAY_LEN(fams); f++) {
        family(&b, fams[f][0], fams[f][1], fams[f][2]);
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
                          (double)st->pool_pages,
                          (double)st->free_pages,
                          node_load(r, n, now)};
            rm_sbuf_printf(&b, "%s{router=\"%s\",node=\"%s\"} %.17g\n", fams[f][0], rl, n->id,
                           v[f]);
        }
    }
    family(&b, "radixmesh_build_info", "gauge", "Build information.");
    rm_sbuf_printf(&b, "radixmesh_build_info{router=\"%s\",role=\"router\",version=\"%s\"} 1\n", rl,
                   RM_VERSION);
    return b.p;
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
        json_object_set_new(j, "active_leases", json_integer((json_int_t)st->active_leases));
        json_object_set_new(j, "load", json_real(node_load(r, n, now)));
        if (n->worker_port) {
            char url[300];
            snprintf(url, sizeof url, "http://%s:%d", n->worker_host, n->worker_port);
            json_object_set_new(j, "worker_url", json_string(url));
            json_object_set_new(j, "worker_healthy", json_boolean(worker_up(n)));
            json_object_set_new(j, "worker_breaker",
                                json_string(rm_breaker_state_name(n->breaker.state)));
            json_object_set_new(j, "worker_hit_rate",
                                n->worker_has_counts && n->worker_query
                                    ? json_real((double)n->worker_hit / (double)n->worker_query)
                                : n->worker_rate >= 0 ? json_real(n->worker_rate)
                                                      : json_null());
            json_object_set_new(j, "gateway_requests", json_integer((json_int_t)n->gw_requests));
            json_object_set_new(j, "gateway_inflight", json_integer(n->gw_inflight));
        }
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
