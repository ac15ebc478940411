/* gateway_request.c -- one gateway request, from the moment it was read
 * whole: its prompt's parse (on libuv's threadpool when the body is
 * large), the routing hand-off to the router thread, the worker chosen,
 * a retry on another worker, and its end (the job back to the router,
 * the client connection on to its next request). Gateway thread only,
 * but for on_routed (router thread) and parse_work (a threadpool
 * thread), which touch only what they say. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_internal.h"
#include "log.h"

#define PARSE_INLINE_MAX (64u << 10) /* larger bodies are parsed on libuv's threadpool */
#define MAX_REPLY_BYTES  (4u << 20)  /* generated text (or one response document) read */

static void route(gw_req *q);

void gw_req_set_state(gw_req *q, rm_gw_req_state to)
{
    if (!rm_gw_req_transition_ok(q->state, to)) {
        /* A bug in the gateway, never bad input: going on could free the
         * request twice or answer a client that has gone. */
        rm_log(RM_LOG_ERROR, "gateway", "request state %s -> %s is not a transition",
               rm_gw_req_state_name(q->state), rm_gw_req_state_name(to));
        abort();
    }
    q->state = to;
}

/* The request's upstream no longer serves it: close the connection to the
 * worker (that is how an HTTP request is cancelled). */
static void req_detach_up(gw_req *q)
{
    if (q->up) {
        q->up->req = NULL;
        gw_up_close(q->up);
        q->up = NULL;
    }
}

/* Frees a request that is DONE. */
static void req_free(gw_req *q)
{
    rm_gateway *g = q->g;
    free(q->head);
    gw_budget_give(g, q->body_len);
    free(q->body);
    free(q->parse.ns);
    free(q->parse.tokens);
    free(q->parse.tok_body);
    rm_openai_reply_free(&q->reply);
    free(q);
    UNCOUNT(g, active);
}

/* Ends a request that has no job out (malformed, or its client left
 * while it waited for the threadpool). */
static void req_drop(gw_req *q)
{
    gw_req_set_state(q, RM_GW_REQ_DONE);
    req_free(q);
}

static rm_route_job *new_job(gw_req *q, char *ns, uint32_t *tokens, size_t n, int any)
{
    rm_route_job *job = rm_xcalloc(1, sizeof *job);
    job->ns = ns;
    job->tokens = tokens;
    job->ntokens = n;
    job->any = any;
    job->user = q;
    return job;
}

/* Parses the prompt of q's body into q->parse. Runs on the gateway thread
 * for small bodies, on the threadpool for large ones: it reads q->body and
 * writes q->parse, nothing else. */
static void parse_prompt(gw_req *q)
{
    gw_parse *pp = &q->parse;
    pp->rc =
        rm_openai_prompt(q->body ? q->body : "", q->body_len, pp->kind, q->g->cfg.max_prompt_tokens,
                         &pp->ns, &pp->tokens, &pp->ntokens, &q->end, pp->err, sizeof pp->err);
    if (pp->rc == 0 && q->end.text && q->g->cfg.tokenize)
        pp->tok_body = rm_openai_tokenize_body(q->body, q->body_len, pp->kind);
}

/* The prompt is parsed (gateway thread): route it, or answer 400. */
static void prompt_parsed(gw_req *q)
{
    gw_conn *c = q->conn;
    gw_parse *pp = &q->parse;
    if (pp->rc != 0) {
        char err[sizeof pp->err];
        int keep = q->keep_alive;
        snprintf(err, sizeof err, "%s", pp->err);
        c->req = NULL;
        req_drop(q);
        gw_send_error(c, 400, "invalid_request_error", err, keep);
        if (keep)
            gw_conn_next(c);
        return;
    }
    rm_openai_reply_init(&q->reply, pp->kind, MAX_REPLY_BYTES);
    q->job = new_job(q, pp->ns, pp->tokens, pp->ntokens, 0);
    q->job->output_tokens = q->end.max_reply;
    pp->ns = NULL;
    pp->tokens = NULL;
    if (pp->tok_body) { /* the engine's token ids first (gateway_tokenize.c) */
        char *body = pp->tok_body;
        pp->tok_body = NULL;
        gw_req_set_state(q, RM_GW_REQ_TOKENIZING);
        gw_tokenize_start(q, body);
        return;
    }
    route(q);
}

void gw_req_tokenized(gw_req *q, uint32_t *tokens, size_t n, const char *why)
{
    rm_gateway *g = q->g;
    q->tok = NULL;
    if (!why) {
        /* The model's own namespace: pseudo-tokens live in "#text". */
        char *ns = q->job->ns;
        size_t len = strlen(ns);
        if (len >= 5 && !strcmp(ns + len - 5, "#text"))
            ns[len - 5] = '\0';
        free(q->job->tokens);
        q->job->tokens = tokens;
        q->job->ntokens = n;
        q->end.text = 0; /* the reply's token ids are the engine's to know */
        COUNT(g, tokenized);
    } else {
        COUNT(g, tokenize_fallbacks);
        if (!g->tok_logged)
            rm_log(RM_LOG_WARN, "gateway",
                   "routing text prompts on pseudo-tokens: %s (logged once; "
                   "radixmesh_gateway_tokenize_fallbacks_total counts them)",
                   why);
        g->tok_logged = 1;
    }
    route(q);
}

static void parse_work(uv_work_t *w) /* a threadpool thread */
{
    parse_prompt(w->data);
}

static void parse_after(uv_work_t *w, int status);

/* Starts the next queued parse if none is out. */
static void parse_dispatch(rm_gateway *g)
{
    while (!g->parse_running && g->parse_head) {
        gw_req *q = g->parse_head;
        if (!(g->parse_head = q->parse_next))
            g->parse_tail = NULL;
        if (!q->conn) { /* the client left while it waited */
            req_drop(q);
            continue;
        }
        q->parse.work.data = q;
        if (uv_queue_work(&g->loop, &q->parse.work, parse_work, parse_after) == 0) {
            g->parse_running = 1;
            return;
        }
        parse_prompt(q); /* cannot happen with a valid loop; parse here then */
        prompt_parsed(q);
    }
}

static void parse_after(uv_work_t *w, int status)
{
    gw_req *q = w->data;
    rm_gateway *g = q->g;
    (void)status; /* never cancelled */
    g->parse_running = 0;
    if (!q->conn) /* the client left meanwhile */
        req_drop(q);
    else
        prompt_parsed(q);
    parse_dispatch(g);
}

void gw_req_start(gw_conn *c)
{
    rm_gateway *g = c->g;
    http_parser *p = &c->parser;
    COUNT(g, active);
    gw_req *q = rm_xcalloc(1, sizeof *q);
    q->g = g;
    q->conn = c;
    q->keep_alive = http_should_keep_alive(p) && !g->draining;
    q->head_only = c->rq.head_request;
    q->http_minor = p->http_major == 1 ? p->http_minor : 0;
    rm_sbuf head = {0};
    rm_sbuf_printf(&head, "%s %s HTTP/1.1\r\n%s", http_method_str(p->method),
                   c->rq.url.p ? c->rq.url.p : "/", c->rq.head.out.p ? c->rq.head.out.p : "");
    q->head = head.p;
    q->body = c->body; /* its budget charge moves with it */
    q->body_len = c->body_len;
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    c->req = q;
    char path[512];
    snprintf(path, sizeof path, "%s", c->rq.url.p ? c->rq.url.p : "/");
    path[strcspn(path, "?")] = '\0';
    int chat = !strcmp(path, "/v1/chat/completions");
    if (p->method == HTTP_POST && (chat || !strcmp(path, "/v1/completions"))) {
        q->parse.kind = chat ? RM_OPENAI_CHAT : RM_OPENAI_COMPLETIONS;
        if (q->body_len > PARSE_INLINE_MAX) {
            /* A 16 MiB token array takes most of a second to parse: off
             * the loop, or every other connection waits for it. */
            COUNT(g, offloaded);
            gw_req_set_state(q, RM_GW_REQ_PARSING);
            *(g->parse_tail ? &g->parse_tail->parse_next : &g->parse_head) = q;
            g->parse_tail = q;
            parse_dispatch(g);
            return;
        }
        parse_prompt(q);
        prompt_parsed(q);
        return;
    }
    q->job = new_job(q, rm_xstrndup("", 0), NULL, 0, 1);
    route(q);
}

static void on_routed(rm_route_job *job); /* router thread */
static void req_fail(gw_req *q, int status, const char *msg, rm_worker_outcome outcome);

static void route(gw_req *q)
{
    gw_req_set_state(q, RM_GW_REQ_ROUTING);
    q->job->done = on_routed;
    if (rm_router_route_async(q->g->router, q->job) != 0) {
        q->keep_alive = 0; /* the job never left */
        req_fail(q, 503, "the router is shutting down", RM_WORKER_NO_VERDICT);
    }
}

/* Router thread: hand the job back to the gateway thread. */
static void on_routed(rm_route_job *job)
{
    gw_req *q = job->user;
    rm_gateway *g = q->g;
    pthread_mutex_lock(&g->mu);
    g->ready = rm_xgrow(g->ready, g->nready, &g->cap, sizeof *g->ready, 64);
    g->ready[g->nready++] = job;
    pthread_mutex_unlock(&g->mu);
    uv_async_send(&g->wake);
}

/* After a 2xx: the node is to record prompt + generated text when the
 * response carried text, so it mirrors what the worker cached and the
 * conversation's next turn finds its whole history. */
static void extend_with_reply(gw_req *q)
{
    char *text;
    size_t text_len, n;
    uint32_t *tokens;
    if (!q->end.text || rm_openai_reply_finish(&q->reply, &text, &text_len) != 0)
        return;
    int rc = rm_openai_continue(q->reply.kind, q->job->tokens, q->job->ntokens, &q->end, text,
                                text_len, q->g->cfg.max_prompt_tokens, &tokens, &n);
    free(text);
    if (rc != 0)
        return;
    free(q->job->record);
    q->job->record = tokens;
    q->job->nrecord = n;
    /* The reply's length as the router learns it (pseudo-tokens of text). */
    size_t seen = n > q->job->ntokens ? n - q->job->ntokens : 0;
    q->job->output_seen = seen < UINT32_MAX ? (uint32_t)seen : UINT32_MAX;
}

void gw_req_client_gone(gw_req *q)
{
    q->conn = NULL;
    COUNT(q->g, client_gone);
    /* A request out on the router thread or the threadpool is freed when
     * it comes back. */
    if (!rm_gw_req_away(q->state))
        gw_req_finish(q, 0, RM_WORKER_NO_VERDICT);
}

/* Ends a request: returns its job to the router (releasing the node's
 * in-flight charge, recording the prompt -- and reply -- when ok, and
 * telling the worker's breaker the outcome) and frees it; the client
 * connection, if any, moves on. */
void gw_req_finish(gw_req *q, int ok, rm_worker_outcome outcome)
{
    rm_gateway *g = q->g;
    gw_conn *c = q->conn;
    gw_req_set_state(q, RM_GW_REQ_DONE);
    req_detach_up(q);
    gw_tokenize_detach(q);
    if (q->job && ok)
        extend_with_reply(q);
    if (q->job)
        rm_router_route_done(g->router, q->job, ok, outcome);
    q->job = NULL;
    if (c) {
        c->req = NULL;
        if (!q->keep_alive)
            gw_client_finish_and_close(c);
        else
            gw_conn_next(c);
    }
    req_free(q);
}

/* Fails a request before or after its response began. */
static void req_fail(gw_req *q, int status, const char *msg, rm_worker_outcome outcome)
{
    gw_conn *c = q->conn;
    COUNT(q->g, upstream_failures);
    if (c && q->state != RM_GW_REQ_STREAMING) {
        int keep = q->keep_alive;
        /* msg may be the job's own (job->why): the router thread frees the
         * job once gw_req_finish has handed it back. */
        char why[512];
        snprintf(why, sizeof why, "%s", msg);
        q->conn = NULL; /* answered here; req_finish must not move the connection on */
        c->req = NULL;
        gw_req_finish(q, 0, outcome);
        gw_send_error(c, status, status == 504 ? "timeout" : "server_error", why, keep);
        if (keep)
            gw_conn_next(c);
    } else {
        /* Part of the response is out: cutting the connection is the only
         * way left to tell the client it is incomplete. */
        if (c) {
            q->conn = NULL;
            c->req = NULL;
            gw_conn_close(c);
        }
        gw_req_finish(q, 0, outcome);
    }
}

/* The worker failed before anything reached the client: once more on
 * another node, or an error. */
void gw_req_retry_or_fail(gw_req *q, int status, const char *msg, rm_worker_outcome outcome)
{
    if (!q->conn || !rm_gw_req_may_retry(q->state, q->attempts)) {
        req_fail(q, status, msg, outcome);
        return;
    }
    COUNT(q->g, retries);
    rm_route_job *old = q->job;
    uint32_t *tokens = NULL;
    if (old->ntokens) {
        tokens = rm_xmalloc(old->ntokens * sizeof *tokens);
        memcpy(tokens, old->tokens, old->ntokens * sizeof *tokens);
    }
    rm_route_job *job =
        new_job(q, rm_xstrndup(old->ns, strlen(old->ns)), tokens, old->ntokens, old->any);
    snprintf(job->exclude, sizeof job->exclude, "%s", old->node_id);
    rm_log(RM_LOG_INFO, "gateway", "retrying on another worker after %s: %s", old->node_id, msg);
    req_detach_up(q);
    rm_router_route_done(q->g->router, old, 0, outcome);
    q->job = job;
    route(q);
}

void gw_req_routed(rm_gateway *g, rm_route_job *job)
{
    gw_req *q = job->user;
    if (!q->conn) { /* the client left while the router was choosing */
        gw_req_finish(q, 0, RM_WORKER_NO_VERDICT);
        return;
    }
    if (!job->found) {
        req_fail(q, q->attempts ? 502 : 503,
                 q->attempts ? "the worker failed and no other worker is available" : job->why,
                 RM_WORKER_NO_VERDICT);
        return;
    }
    q->attempts++;
    gw_req_set_state(q, RM_GW_REQ_CONNECTING);
    gw_up *u = gw_up_idle_take(g, job->worker_host, job->worker_port, q);
    if (u) {
        q->up = u;
        gw_up_send(u);
    } else {
        gw_up_start(g, job->worker_host, job->worker_port, q);
    }
}
