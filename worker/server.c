/* server.c -- the worker's HTTP/1.1 server: its connections (on
 * http_conn.h's core), reading and parsing requests one at a time, the
 * endpoints but POST /v1/completions (server_completion.c), listening,
 * signals and the drain (server_internal.h). Loop thread only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "signals.h"
#include "list.h"
#include "log.h"
#include "server_internal.h"

/* Bytes of what a client sends next read while its request runs: enough to
 * see it leave (EOF) and a few pipelined requests; then reading stops. */
#define MAX_READ_AHEAD (64u << 10)
/* Replies queued for a client above this: its pipelined requests wait
 * (unparsed, and unread past MAX_READ_AHEAD) until they drain below it. */
#define MAX_QUEUED_OUTPUT (256u << 10)
/* A closing connection reads and drops what the client still sends this
 * long, so its unread bytes do not reset the reply away. */
#define LINGER_MS 2000

void rm_wserver_config_defaults(rm_wserver_config *c)
{
    memset(c, 0, sizeof *c);
    c->listen = "127.0.0.1:8000";
    c->max_body_bytes = 1u << 20;
    c->max_header_bytes = 64u << 10;
    c->max_connections = 256;
    c->max_waiting = 64;
    c->request_timeout_ms = 30000;
    c->idle_timeout_ms = 60000;
    c->drain_timeout_ms = 30000;
}

/* ---- connection plumbing ---------------------------------------------------- */

static size_t queued(ws_conn *c)
{
    return rm_hconn_queued(&c->h);
}

static void conn_closed(rm_hconn *h)
{
    ws_conn *c = (ws_conn *)h;
    ws_srv *s = c->s;
    RM_LIST_DEL(s->conns, c, prev, next);
    s->nconns--;
    rm_http_req_reset(&c->rq);
    free(c->body.p);
    free(c->pending);
    free(c);
    rm_hconn_release(&s->accept_held, (uv_stream_t *)&s->listener);
    ws_drain_step(s);
}

/* A job whose connection is gone: the owner's share of the hand-off. */
void ws_job_release(ws_srv *s, rm_job *j)
{
    rm_job_free(j);
    s->njobs--;
}

static void conn_closing(rm_hconn *h)
{
    ws_conn *c = (ws_conn *)h;
    if (c->job) {
        /* The client left: a waiting request leaves the queue, a running
         * one stops at its next token and comes back through the poll. */
        if (rm_infer_cancel(c->s->in, c->job))
            ws_job_release(c->s, c->job);
        else
            c->job->owner = NULL;
        c->job = NULL;
    }
}

void ws_close_conn(ws_conn *c)
{
    rm_hconn_close(&c->h);
}

/* Closes once what is queued is sent (bounded by the idle timeout, then
 * the linger). Nothing more is parsed. */
static void finish_and_close(ws_conn *c)
{
    if (rm_hconn_ending(&c->h))
        return;
    free(c->pending);
    c->pending = NULL;
    c->pstart = c->npending = 0;
    rm_hconn_finish(&c->h, c->s->cfg.idle_timeout_ms);
}

static void conn_written(rm_hconn *h)
{
    ws_conn *c = (ws_conn *)h;
    if (c->job) {
        /* The client takes its stream: watch it only while some waits. */
        if (queued(c))
            rm_hconn_arm(h, c->s->cfg.idle_timeout_ms);
        else
            uv_timer_stop(&h->timer);
    } else {
        if (!c->in_message)
            rm_hconn_arm(h, c->s->cfg.idle_timeout_ms); /* the client reads: not idle */
        if (c->npending > c->pstart && queued(c) < MAX_QUEUED_OUTPUT)
            ws_pump(c); /* pipelined requests held back by unread replies */
    }
}

/* A client that reads nothing of what waits for it is stalled (a job
 * implies the connection is open: closing drops it). */
static void watch_stall(ws_conn *c)
{
    if (c->job && queued(c) && !uv_is_active((uv_handle_t *)&c->h.timer))
        rm_hconn_arm(&c->h, c->s->cfg.idle_timeout_ms);
}

/* Sends buf (malloc'd; taken). */
void ws_send_buf(ws_conn *c, char *buf, size_t len)
{
    rm_hconn_write(&c->h, buf, len);
    watch_stall(c);
}

/* A whole response: head (extra: further header lines) and body. */
void ws_respond(ws_conn *c, int status, const char *type, const char *body, size_t len,
                const char *extra, int head_only)
{
    rm_hconn_respond(&c->h, status, type, body, len, extra, c->keep, head_only);
    watch_stall(c);
}

/* To a HEAD request, the head alone (RFC 9110 9.3.2): a body would be
 * read as the next response on the connection. */
void ws_respond_error(ws_conn *c, const rm_api_error *e, const char *extra)
{
    size_t len;
    char *body = rm_api_error_json(e, &len);
    ws_respond(c, e->status, "application/json", body, len, extra, c->rq.head_request);
    free(body);
}

/* The request is answered: the next one, or the end of the connection. */
void ws_request_done(ws_conn *c)
{
    c->rq.head_request = 0;
    if (rm_hconn_ending(&c->h))
        return;
    if (!c->keep) {
        finish_and_close(c);
        return;
    }
    rm_hconn_arm(&c->h, c->s->cfg.idle_timeout_ms);
}

/* ---- requests --------------------------------------------------------------- */

static void metrics(ws_conn *c, int head_only)
{
    ws_srv *s = c->s;
    rm_infer_figures f;
    rm_infer_figures_get(s->in, &f);
    rm_api_figures af = {f.engine,          f.waiting,        f.finished_total,
                         f.cancelled_total, s->refused_full,  s->refused_bad,
                         s->nconns,         s->refused_conns, s->timeouts};
    char *text = rm_api_metrics(s->model->name, &af);
    ws_respond(c, 200, "text/plain; version=0.0.4", text, strlen(text), NULL, head_only);
    free(text);
}

static void dispatch(ws_conn *c)
{
    ws_srv *s = c->s;
    c->keep = http_should_keep_alive(&c->parser) && !s->draining;
    char none[] = "";
    char *path = c->rq.url.p ? c->rq.url.p : none; /* http-parser requires a URL */
    char *q = strchr(path, '?');
    if (q)
        *q = '\0';
    int method = c->parser.method, head_only = c->rq.head_request;
    int get = head_only || method == HTTP_GET;
    rm_api_error e;
    if (s->draining) {
        c->keep = 0;
        rm_api_error_set(&e, 503, "server_error", NULL, "the worker is shutting down");
        ws_respond_error(c, &e, "Retry-After: 1\r\n");
    } else if (!strcmp(path, "/v1/completions")) {
        if (method == HTTP_POST) {
            ws_completion(c);
            return; /* ws_completion() ends the request when it answers at once */
        }
        rm_api_error_set(&e, 405, "invalid_request_error", NULL, "use POST");
        ws_respond_error(c, &e, "Allow: POST\r\n");
    } else if (!strcmp(path, "/health") || !strcmp(path, "/v1/models") ||
               !strcmp(path, "/metrics")) {
        if (!get) {
            rm_api_error_set(&e, 405, "invalid_request_error", NULL, "use GET");
            ws_respond_error(c, &e, "Allow: GET, HEAD\r\n");
        } else if (!strcmp(path, "/health")) {
            ws_respond(c, 200, "text/plain", "", 0, NULL, head_only);
        } else if (!strcmp(path, "/metrics")) {
            metrics(c, head_only);
        } else {
            size_t len;
            char *body = rm_api_models_json(s->model, (long long)time(NULL), &len);
            ws_respond(c, 200, "application/json", body, len, NULL, head_only);
            free(body);
        }
    } else {
        rm_api_error_set(&e, 404, "invalid_request_error", NULL,
                         "no such endpoint: %.200s (this worker serves POST /v1/completions, GET "
                         "/v1/models, /metrics, /health)",
                         path);
        ws_respond_error(c, &e, NULL);
    }
    ws_request_done(c);
}

/* ---- http-parser callbacks ---------------------------------------------------- */

static int on_message_begin(http_parser *p)
{
    ws_conn *c = rm_http_req_owner(p);
    rm_http_req_reset(&c->rq);
    free(c->body.p);
    memset(&c->body, 0, sizeof c->body);
    c->in_message = 1;
    rm_hconn_arm(&c->h, c->s->cfg.request_timeout_ms);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    ws_conn *c = rm_http_req_owner(p);
    int v = rm_http_req_headers_complete(p);
    if (v < 0)
        return -1;
    if (v == RM_HTTP_REQ_CONTINUE)
        ws_send_buf(c, rm_xstrndup(RM_HTTP_CONTINUE, RM_HTTP_CONTINUE_LEN), RM_HTTP_CONTINUE_LEN);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    ws_conn *c = rm_http_req_owner(p);
    if (rm_http_req_body(p, c->body.len, len) != 0)
        return -1;
    rm_sbuf_append(&c->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    ws_conn *c = rm_http_req_owner(p);
    c->in_message = 0;
    c->complete = 1;
    uv_timer_stop(&c->h.timer);
    http_parser_pause(p, 1); /* one request at a time: the rest waits */
    return 0;
}

static const http_parser_settings settings =
    RM_HTTP_REQ_SETTINGS(on_message_begin, on_headers_complete, on_body, on_message_complete);

/* ---- answering the requests read ----------------------------------------------- */

/* Answers a request the parser could not take, and closes. */
static void refuse(ws_conn *c, int status)
{
    static const rm_http_status_text why[] = {
        {400, "malformed HTTP request"},
        {408, "the request did not arrive in time"},
        {413, "the request body is too large (--max-body-bytes)"},
        {414, "the request URL is too long"},
        {417, "only Expect: 100-continue is understood"},
        {431, "the request head is too large (--max-header-bytes)"},
        {501, "Transfer-Encoding other than chunked is not supported"},
    };
    const char *msg = rm_http_status_lookup(why, RM_ARRAY_LEN(why), status);
    rm_api_error e;
    rm_api_error_set(&e, status, "invalid_request_error", NULL, "%s",
                     msg ? msg : rm_http_reason(status));
    c->keep = 0;
    ws_respond_error(c, &e, NULL);
    finish_and_close(c);
}

/* Parses what waits, answering each request read whole in turn, until a
 * request is in progress or nothing is left. */
void ws_pump(ws_conn *c)
{
    while (!rm_hconn_ending(&c->h) && !c->job && c->npending > c->pstart &&
           queued(c) < MAX_QUEUED_OUTPUT) {
        http_parser_pause(&c->parser, 0);
        size_t len = c->npending - c->pstart;
        size_t parsed = http_parser_execute(&c->parser, &settings, c->pending + c->pstart, len);
        enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
        c->pstart += parsed;
        if (c->pstart == c->npending) {
            free(c->pending);
            c->pending = NULL;
            c->pstart = c->npending = 0;
        }
        if (c->complete) { /* what follows is parsed after this request */
            c->complete = 0;
            dispatch(c);
            continue;
        }
        if (err != HPE_OK) {
            refuse(c, rm_http_req_refusal(&c->rq, err));
            return;
        }
    }
    if (!rm_hconn_ending(&c->h))
        rm_hconn_reading(&c->h, c->npending - c->pstart < MAX_READ_AHEAD);
}

/* Client bytes (a client that leaves, or is done lingering, is closed by
 * the core: a request in progress is cancelled then). */
static void conn_data(rm_hconn *h, const char *data, size_t len)
{
    ws_conn *c = (ws_conn *)h;
    if (c->pstart) { /* the parsed part goes: what stays is bounded by MAX_READ_AHEAD */
        memmove(c->pending, c->pending + c->pstart, c->npending - c->pstart);
        c->npending -= c->pstart;
        c->pstart = 0;
    }
    c->pending = rm_xrealloc(c->pending, c->npending + len);
    memcpy(c->pending + c->npending, data, len);
    c->npending += len;
    ws_pump(c);
}

static void conn_timeout(rm_hconn *h)
{
    ws_conn *c = (ws_conn *)h;
    if (h->finishing) {
        ws_close_conn(c);
        return;
    }
    c->s->timeouts++;
    if (c->in_message)
        refuse(c, 408);
    else
        ws_close_conn(c); /* idle, or not reading its response: a request is cancelled */
}

/* ---- listening, signals, drain ------------------------------------------------ */

static const rm_hconn_ops conn_ops = {conn_data, conn_written, conn_timeout, conn_closing,
                                      conn_closed};

static void on_connection(uv_stream_t *server, int status)
{
    ws_srv *s = server->data;
    /* Every descriptor the fd budget gives connections in use (refused
     * ones linger): the process would run out next. */
    if (status < 0 ||
        rm_hconn_hold(&s->accept_held, s->nconns, s->cfg.max_connections, RM_HCONN_MAX_REFUSING))
        return;
    ws_conn *c = rm_xcalloc(1, sizeof *c);
    c->s = s;
    c->h.linger_ms = LINGER_MS;
    RM_LIST_ADD(s->conns, c, prev, next);
    s->nconns++;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = &c->rq;
    c->rq.owner = c;
    c->rq.lim = (rm_http_req_limits){MAX_URL, s->cfg.max_header_bytes, s->cfg.max_body_bytes};
    if (rm_hconn_accept(&c->h, &s->loop, server, &conn_ops) != 0)
        return;
    if (s->nconns > s->cfg.max_connections || s->draining) {
        s->refused_conns += !s->draining;
        rm_api_error e;
        rm_api_error_set(&e, 503, "server_error", NULL,
                         s->draining ? "the worker is shutting down" : "too many connections");
        ws_respond_error(c, &e, "Retry-After: 1\r\n");
        finish_and_close(c);
        return;
    }
    rm_hconn_arm(&c->h, s->cfg.idle_timeout_ms);
    rm_hconn_reading(&c->h, 1);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* While draining: once no job is left, every connection is closed (after
 * what it was sent), and then the loop's own handles, which ends it. */
void ws_drain_step(ws_srv *s)
{
    if (!s->draining || s->njobs)
        return;
    for (ws_conn *c = s->conns; c; c = c->next) {
        if (!c->in_message && !queued(c))
            ws_close_conn(c);
        else
            finish_and_close(c);
    }
    if (s->nconns || s->handles_closed)
        return;
    s->handles_closed = 1;
    close_handle((uv_handle_t *)&s->listener);
    close_handle((uv_handle_t *)&s->wake);
    close_handle((uv_handle_t *)&s->signals);
    close_handle((uv_handle_t *)&s->drain_timer);
}

static void on_drain_timeout(uv_timer_t *t)
{
    ws_srv *s = t->data;
    rm_log(RM_LOG_WARN, "worker", "drain: %zu requests still in progress after %llu ms: cancelled",
           s->njobs, (unsigned long long)s->cfg.drain_timeout_ms);
    rm_infer_cancel_all(s->in);
}

static void on_signal(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    ws_srv *s = p->data;
    unsigned got = rm_signals_take();
    if (got & RM_SIG_HUP)
        rm_log(RM_LOG_WARN, "worker", "SIGHUP ignored: the worker has nothing to reload");
    if (!(got & (RM_SIG_TERM | RM_SIG_INT)))
        return;
    if (s->draining) {
        rm_log(RM_LOG_WARN, "worker", "second signal: cancelling what is left");
        rm_infer_cancel_all(s->in);
        return;
    }
    rm_log(RM_LOG_INFO, "worker", "%s: draining (%zu requests in progress)",
           got & RM_SIG_TERM ? "SIGTERM" : "SIGINT", s->njobs);
    s->draining = 1;
    close_handle((uv_handle_t *)&s->listener);
    rm_infer_stop(s->in);
    uv_timer_start(&s->drain_timer, on_drain_timeout, s->cfg.drain_timeout_ms, 0);
    ws_drain_step(s);
}

int rm_wserver_run(const rm_wserver_config *cfg, const rm_api_model *m, rm_engine *e)
{
    ws_srv *s = rm_xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    s->model = m;
    char err[256];
    int port =
        rm_uv_listen(&s->loop, &s->listener, cfg->listen, 128, on_connection, err, sizeof err);
    if (port < 0) {
        rm_log(RM_LOG_ERROR, "worker", "--listen: %s", err);
        rm_engine_free(e);
        free(s);
        return 1;
    }
    s->listener.data = s;
    uv_async_init(&s->loop, &s->wake, ws_on_wake);
    s->wake.data = s;
    /* main blocked the signals before any thread started (rm_signals_block) */
    s->signal_fd = rm_signals_fd();
    if (s->signal_fd < 0 || uv_poll_init(&s->loop, &s->signals, s->signal_fd) != 0) {
        rm_log(RM_LOG_ERROR, "worker", "cannot watch SIGTERM: %s", strerror(errno));
        exit(1);
    }
    s->signals.data = s;
    uv_poll_start(&s->signals, UV_READABLE, on_signal);
    uv_timer_init(&s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    s->in = rm_infer_start(e, cfg->max_waiting, ws_notify, &s->wake);
    if (!s->in) {
        rm_log(RM_LOG_ERROR, "worker", "cannot start the inference thread");
        rm_engine_free(e);
        s->draining = 1;
        ws_drain_step(s); /* closes the handles */
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
        close(s->signal_fd);
        free(s);
        return 1;
    }

    int hl = (int)(strrchr(cfg->listen, ':') - cfg->listen);
    rm_log(RM_LOG_INFO, "worker",
           "serving %s on http://%.*s:%d/ (POST /v1/completions, GET /v1/models, /metrics, "
           "/health; at most %llu waiting)",
           m->name, hl, cfg->listen, port, (unsigned long long)cfg->max_waiting);
    printf("HTTP %.*s:%d\n", hl, cfg->listen, port);
    fflush(stdout);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    close(s->signal_fd);
    rm_infer_free(s->in);
    free(s);
    rm_log(RM_LOG_INFO, "worker", "drained, exiting");
    return 0;
}
