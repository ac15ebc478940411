/* node_link.c -- the router's nodes: membership (static, DNS, reload),
 * node references, health checks and Stats polls, and what they feed: the
 * ejection rule (router/outlier.h), the rings, the hot set and the
 * workers' pairing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb.h"
#include "log.h"
#include "flags.h"
#include "pbx.h"
#include "router_internal.h"
#include "util.h"

/* ---- membership and ring ---------------------------------------------- */

int rt_on_ring(const rnode *n)
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
int rt_has_worker(const rnode *n)
{
    return rt_on_ring(n) && n->worker_port && n->worker_ok && rm_breaker_admits(&n->breaker);
}

/* What /metrics and /api/cluster call a healthy worker. */
int rt_worker_up(const rnode *n)
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
        list[k].up = rt_has_worker(n);
        list[k++].port = n->worker_port;
    }
    pthread_mutex_lock(&r->workers_mu);
    free(r->workers);
    r->workers = list;
    r->nworkers = k;
    pthread_mutex_unlock(&r->workers_mu);
}

void rt_rebuild_ring(rm_router *r)
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
        up[i] = rt_on_ring(n);
        gw[i] = rt_has_worker(n);
        r->healthy += n->healthy;
        r->gw_members += gw[i];
    }
    rm_ring_build(&r->ring, ids, weights, up, r->nnodes, r->cfg.vnodes);
    rm_ring_build(&r->gw_ring, ids, weights, gw, r->nnodes, r->cfg.vnodes);
    rt_budget_pools(r); /* the ideal cache follows the healthy nodes */
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
    rt_rebuild_ring(r);
}

/* One result of a call to n (health check, Stats poll, peek, forwarded
 * call) through the ejection rule; why: the failure's details. */
void rt_note(rm_router *r, rnode *n, rm_outlier_outcome o, const char *why)
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
    case RM_OUTLIER_SAME: break;
    }
    if (ch == RM_OUTLIER_EJECT || ch == RM_OUTLIER_RESTORE || was != rm_outlier_healthy(oc, &n->ol))
        refresh(r);
}

/* The node answered SERVING to a health check. */
static void node_serving(rm_router *r, rnode *n)
{
    if (n->confirmed && !n->draining) {
        rt_note(r, n, RM_OUTLIER_ANSWERED, NULL);
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
void rt_note_auth(rm_router *r, rnode *n, grpc_status_code st, const char *details)
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

rnode *rt_node_ref(rnode *n)
{
    n->refs++;
    return n;
}

void rt_node_unref(rnode *n)
{
    if (--n->refs > 0)
        return;
    rt_node_channel_close(n);
    if (n->have_stats)
        pb_release(radixmesh_v1_NodeStats_fields, &n->stats);
    free(n->id);
    free(n->address);
    free(n);
}

int rt_was_member(const rm_router *r, const char *id)
{
    for (size_t i = 0; i < RM_ARRAY_LEN(r->retired); i++)
        if (r->retired[i] && !strcmp(r->retired[i], id))
            return 1;
    return 0;
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
    n->worker_running = n->worker_waiting = n->worker_kv = -1;
    rt_node_channel_open(r, n);
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

void rm_router_remove_node(rm_router *r, const char *address)
{
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (strcmp(n->address, address) != 0)
            continue;
        n->removed = 1;
        rm_log(RM_LOG_INFO, "router", "node %s (%s) removed from membership", n->id ? n->id : "?",
               n->address);
        if (n->id && !rt_was_member(r, n->id)) {
            free(r->retired[r->retired_next]);
            r->retired[r->retired_next] = rm_xstrndup(n->id, strlen(n->id));
            r->retired_next = (r->retired_next + 1) % RM_ARRAY_LEN(r->retired);
        }
        memmove(&r->nodes[i], &r->nodes[i + 1], (r->nnodes - i - 1) * sizeof *r->nodes);
        r->nnodes--;
        rt_node_unref(n);
        refresh(r);
        return;
    }
}

rnode *rt_find_by_id(rm_router *r, const char *id)
{
    for (uint32_t i = 0; i < r->nnodes; i++)
        if (r->nodes[i]->id && !strcmp(r->nodes[i]->id, id))
            return r->nodes[i];
    return NULL;
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
    n->worker_running = n->worker_waiting = n->worker_kv = -1;
    return 1;
}

/* ---- health checks and stats polls ---------------------------------------- */

typedef struct node_op {
    rm_router *r;
    rnode *n;
} node_op;

int rt_is_transport_failure(grpc_status_code st)
{
    return st == GRPC_STATUS_UNAVAILABLE || st == GRPC_STATUS_DEADLINE_EXCEEDED ||
           st == GRPC_STATUS_CANCELLED || st == GRPC_STATUS_UNKNOWN;
}

/* What a node's failed call counts as: a transport failure while the
 * router's own loop stalled measured the router, not the node. */
rm_outlier_outcome rt_outcome(const rm_router *r, grpc_status_code st, int cut)
{
    return rm_outlier_classify(rt_is_transport_failure(st), rm_rpc_server_reply_stalled(r->srv),
                               cut && st == GRPC_STATUS_DEADLINE_EXCEEDED);
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
        } else if (rt_is_transport_failure(st)) {
            rt_note(r, n, rt_outcome(r, st, 0), details);
        } else {
            node_not_serving(r, n, details);
        }
    }
    rt_node_unref(n);
    free(op);
}

static void on_stats(void *ctx, grpc_status_code st, grpc_byte_buffer *reply, const char *details)
{
    node_op *op = ctx;
    rm_router *r = op->r;
    rnode *n = op->n;
    n->stats_busy = 0;
    if (!n->removed && !rt_is_transport_failure(st))
        rt_note_auth(r, n, st, details);
    if (!n->removed)
        rt_note(r, n, rt_outcome(r, st, 0), details);
    if (st == GRPC_STATUS_OK && !n->removed) {
        radixmesh_v1_NodeStats s = radixmesh_v1_NodeStats_init_zero;
        char err[128];
        if (rm_pb_decode_bb(reply, radixmesh_v1_NodeStats_fields, &s, err, sizeof err)) {
            rt_confirm_work(r, n, &s);
            if (n->have_stats)
                pb_release(radixmesh_v1_NodeStats_fields, &n->stats);
            n->stats = s;
            n->have_stats = 1;
            const char *rid = s.node_id ? s.node_id : "";
            if (!n->id && *rid && !rt_find_by_id(r, rid)) {
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
                rt_rebuild_ring(r);
            }
            rt_recompute_hot(r);
            rt_budget_pools(r);
        } else {
            pb_release(radixmesh_v1_NodeStats_fields, &s);
        }
    }
    rt_node_unref(n);
    free(op);
}

static void empty_call(rm_router *r, rnode *n, rt_method m, rm_rpc_reply_fn cb)
{
    node_op *op = rm_xmalloc(sizeof *op);
    op->r = r;
    op->n = n;
    if (rt_node_call(r, n, m, grpc_empty_slice(), (int)r->cfg.call_timeout_ms, cb, op)) {
        free(op);
    } else {
        rt_node_ref(n);
        if (cb == on_health)
            n->health_busy = 1;
        else
            n->stats_busy = 1;
    }
}

void rm_router_tick(rm_router *r, uint64_t now_ms)
{
    if (now_ms - r->last_health_ms >= r->cfg.health_interval_ms) {
        r->last_health_ms = now_ms;
        for (uint32_t i = 0; i < r->nnodes; i++) {
            rnode *n = r->nodes[i];
            if (!n->health_busy && n->id)
                empty_call(r, n, RT_HEALTH, on_health);
            if (!n->id && !n->stats_busy) /* learn the id first */
                empty_call(r, n, RT_STATS, on_stats);
        }
    }
    if (now_ms - r->last_stats_ms >= r->cfg.stats_interval_ms) {
        r->last_stats_ms = now_ms;
        /* Nodes refusing the router's token are polled too: a poll is
         * how they are seen to accept it again. */
        for (uint32_t i = 0; i < r->nnodes; i++) {
            rnode *n = r->nodes[i];
            if (n->id && n->confirmed && !n->draining && !n->ol.ejected && !n->stats_busy)
                empty_call(r, n, RT_STATS, on_stats);
        }
    }
}
