/* gateway_jobs.c -- the router's side of the gateway (router/gateway.c
 * runs on its own thread): route jobs, recording answered prompts in the
 * node, worker reports and the workers' circuit breakers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pbx.h"
#include "router_internal.h"
#include "util.h"

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
        rt_rebuild_ring(r);
}

/* Whether n mirrors its worker from the worker's KV events in namespace
 * ns (its Stats say so): the events then record what the worker caches,
 * exactly, and a recording after the request would only add guesses. */
static int mirrors_precisely(const rnode *n, const char *ns)
{
    const char *m = n->stats.kv_namespace;
    return n->have_stats && n->stats.kv_events && m && *m && !strcmp(m, ns);
}

typedef struct count_op {
    rm_router *r;
    rnode *n;
    rm_route_job *job;
} count_op;

static void on_counted(void *ctx, grpc_status_code st, grpc_byte_buffer *reply, const char *details)
{
    count_op *op = ctx;
    rm_route_job *job = op->job;
    (void)reply;
    if (st != GRPC_STATUS_OK) {
        rm_log(RM_LOG_DEBUG, "router", "counting a gateway prompt in %s: %s", op->n->id, details);
        /* Not counted, and not recorded after (job->counted): its charge
         * would stay for good. */
        rt_drop_charge(op->r, op->n, job->prompt_charged, job->output_charged);
    }
    rt_node_unref(op->n);
    free(op);
    job->done(job);
}

/* The request's Match, counted in n before the worker sees the request:
 * the engine counts its hits against its cache as the request finds it,
 * and the mirror must not yet hold the blocks the request itself is about
 * to store. The job goes back once the node has answered. Takes n's
 * reference. */
static void count_then_done(rm_router *r, rnode *n, rm_route_job *job)
{
    count_op *op = rm_xmalloc(sizeof *op);
    *op = (count_op){r, n, job};
    job->counted = 1;
    radixmesh_v1_MatchRequest m = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens_view view = {job->tokens, job->ntokens};
    m.namespace = job->ns;
    rm_pb_tokens_encoder(&m.tokens, &view);
    if (rt_node_call_msg(r, n, RT_MATCH, radixmesh_v1_MatchRequest_fields, &m,
                         (int)r->cfg.call_timeout_ms, on_counted, op) != 0)
        on_counted(op, GRPC_STATUS_UNAVAILABLE, NULL, "cannot start Match");
}

/* The choice ended: the job goes back to the gateway, with its worker or
 * why there is none. */
static void gw_chosen(rt_choice *ch, rnode *n)
{
    rm_router *r = ch->r;
    rm_route_job *job = ch->arg;
    if (n) {
        n->gw_requests++;
        n->gw_inflight++;
        n->gw_inflight_work += ch->cost;
        job->cost = ch->cost;
        job->output_charged = ch->output;
        job->prompt_charged = rt_charged_prompt(ch);
        r->gw_requests_total++;
        job->found = job->charged = 1;
        snprintf(job->node_id, sizeof job->node_id, "%s", n->id);
        snprintf(job->worker_host, sizeof job->worker_host, "%s", n->worker_host);
        job->worker_port = n->worker_port;
        job->key_tokens = ch->key_tokens;
        if (!job->any && job->ntokens && mirrors_precisely(n, job->ns ? job->ns : "")) {
            free(ch);
            count_then_done(r, n, job);
            return;
        }
        rt_node_unref(n);
    } else {
        job->found = 0;
        if (r->healthy)
            snprintf(job->why, sizeof job->why,
                     "no inference worker is available (no healthy node with a reachable worker)");
        else
            rt_no_node_reason(r, job->why, sizeof job->why);
    }
    free(ch);
    job->done(job);
}

static void gw_route(void *arg)
{
    gw_post *p = arg;
    rm_router *r = p->r;
    rm_route_job *job = p->job;
    free(p);
    breakers_poll(r);
    rt_choice *ch = rm_xcalloc(1, sizeof *ch);
    ch->r = r;
    ch->done = gw_chosen;
    ch->arg = job;
    ch->proxied = 1;
    ch->gateway = 1;
    const char *ns = job->ns ? job->ns : "";
    if (job->any) { /* no affinity: a fresh key each time spreads them */
        ch->key = rm_mix64(++r->any_counter ^ 0x9e3779b97f4a7c15ULL);
    } else {
        ch->key = rm_router_key(r, ns, job->tokens, job->ntokens, &ch->key_tokens);
        ch->prompt_tokens = job->ntokens;
        ch->output = rt_expected_output(r, ns, job->output_tokens);
    }
    rnode *ex = job->exclude[0] ? rt_find_by_id(r, job->exclude) : NULL;
    ch->ncand = (int)rt_candidates(r, ch->key, ex, ch->cand, job->any ? 1 : r->cfg.choices,
                                   &ch->spilled, 1);
    if (ch->ncand == 1 && ch->cand[0] == ex)
        ch->ncand = 0; /* the ring's fallback would hand back the failed one */
    /* A half-open worker among the candidates takes this request as its
     * one trial, decided here and now: with a peek in between, a second
     * request could pick it before the first is charged. */
    for (int i = 0; i < ch->ncand; i++) {
        rnode *n = ch->cand[i];
        if (n->breaker.state == RM_BREAKER_HALF_OPEN && rm_breaker_admits(&n->breaker)) {
            job->trial = rm_breaker_take(&n->breaker);
            ch->cand[0] = n;
            ch->ncand = 1;
            ch->no_spill = 1;
            rt_rebuild_ring(r); /* no other request until the trial's outcome */
            break;
        }
    }
    rt_choose(ch, ns, job->tokens, job->ntokens);
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
    rt_node_unref(op->n);
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
        if (st != GRPC_STATUS_OK) /* not counted: its charge would stay for good */
            rt_drop_charge(op->r, op->n, op->job->prompt_charged, op->job->output_charged);
        on_recorded(op, st, NULL, details);
        return;
    }
    radixmesh_v1_InsertRequest ins = radixmesh_v1_InsertRequest_init_zero;
    rm_tokens_view view = {op->job->tokens, op->job->ntokens};
    if (op->job->record)
        view = (rm_tokens_view){op->job->record, op->job->nrecord};
    ins.namespace = op->job->ns;
    rm_pb_tokens_encoder(&ins.tokens, &view);
    if (rt_node_call_msg(op->r, op->n, RT_INSERT, radixmesh_v1_InsertRequest_fields, &ins,
                         (int)op->r->cfg.call_timeout_ms, on_recorded, op) != 0)
        on_recorded(op, GRPC_STATUS_UNAVAILABLE, NULL, "cannot start Insert");
}

static void record_prompt(rm_router *r, rnode *n, rm_route_job *job)
{
    record_op *op = rm_xmalloc(sizeof *op);
    *op = (record_op){r, rt_node_ref(n), job};
    radixmesh_v1_MatchRequest m = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens_view view = {job->tokens, job->ntokens};
    m.namespace = job->ns;
    /* The node counts the reply in its work: as long as it was, when the
     * gateway could tell, else what the request was charged. */
    double out = job->output_seen ? job->output_seen : job->output_charged;
    m.output_tokens = out < 4294967295.0 ? (uint32_t)out : UINT32_MAX;
    rm_pb_tokens_encoder(&m.tokens, &view);
    if (rt_node_call_msg(r, n, RT_MATCH, radixmesh_v1_MatchRequest_fields, &m,
                         (int)r->cfg.call_timeout_ms, on_record_match, op) != 0)
        on_record_match(op, GRPC_STATUS_UNAVAILABLE, NULL, "cannot start Match");
}

static void set_worker_ok(rm_router *r, rnode *n, int ok, const char *why)
{
    if (n->worker_ok == ok)
        return;
    n->worker_ok = ok;
    rm_log(ok ? RM_LOG_INFO : RM_LOG_WARN, "router", "worker of %s (%s:%d) %s%s%s", n->id,
           n->worker_host, n->worker_port, ok ? "is back" : "is unreachable", why ? ": " : "",
           why ? why : "");
    rt_rebuild_ring(r);
}

static void gw_done(void *arg)
{
    gw_post *p = arg;
    rm_router *r = p->r;
    rm_route_job *job = p->job;
    rnode *n = job->found ? rt_find_by_id(r, job->node_id) : NULL;
    if (n && job->charged) {
        if (n->inflight)
            n->inflight--;
        if (n->gw_inflight)
            n->gw_inflight--;
        n->gw_inflight_work -= job->cost;
        if (n->gw_inflight_work < 1e-6 || !n->gw_inflight)
            n->gw_inflight_work = 0;
    }
    if (job->output_seen && !job->any)
        rt_learn_output(r, job->ns ? job->ns : "", job->output_seen);
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
            rt_rebuild_ring(r);
    }
    int ok = p->ok;
    free(p);
    int answered = n && ok && !job->any && job->ntokens && n->healthy;
    if (answered) {
        /* The budget sees the traffic the nodes count: answered prompts. */
        const char *ns = job->ns ? job->ns : "";
        rt_budget(r, rm_shadow_match, ns, job->tokens, job->ntokens);
        if (job->record)
            rt_budget(r, rm_shadow_insert, ns, job->record, job->nrecord);
    }
    /* A request the node does not count in the end never confirms its
     * charge: answered, its Match does, or did before it went (counted). */
    if (n && job->charged && !answered && !job->counted)
        rt_drop_charge(r, n, job->prompt_charged, job->output_charged);
    if (answered && !job->counted) /* a mirrored node's events record it instead */
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
    rnode *n = rt_find_by_id(r, p->rep.node_id);
    if (n) {
        if (p->rep.complete) { /* else the last figures stand */
            n->worker_has_counts = p->rep.has_counts;
            n->worker_hit = p->rep.hit_tokens;
            n->worker_query = p->rep.query_tokens;
            n->worker_rate = p->rep.hit_rate;
            n->worker_running = p->rep.running;
            n->worker_waiting = p->rep.waiting;
            n->worker_kv = p->rep.kv_usage;
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
