#include "http.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "bearer.h"
#include "flags.h"
#include "http_conn.h"
#include "log.h"
#include "prom.h"
#include "util.h"

/* Replies queued for a client above this: its connection is not read
 * (nor its pipelined requests parsed) until they drain below it. */
#define MAX_QUEUED_OUTPUT (256u << 10)

/* The server's figures: indexes into rm_http_server.figures and the rows
 * of rm_http_metrics, in the order they are printed. */
enum { FIG_CONNS, FIG_REFUSED, FIG_UNAUTHORIZED, FIG_PAUSED, FIG_TIMEOUTS, NFIGURES };

struct rm_http_server {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop;
    pthread_t thread;
    rm_http_handler handler;
    void *ctx;
    rm_http_config cfg;
    char *token; /* cfg.auth_token's copy, NULL: no auth */
    /* Written on the HTTP thread, read by metrics: relaxed atomics. */
    uint64_t figures[NFIGURES];
    /* HTTP thread only: a connection left unaccepted in libuv (which then
     * stops accepting) while every descriptor --http may hold is in use,
     * closing ones included; taken once one has closed. */
    int accept_held;
};

typedef struct conn {
    rm_hconn h; /* first: the core's callbacks hand it back as the conn */
    rm_http_server *srv;
    http_parser parser;
    char path[2048];
    size_t path_len;
    int too_long;
    int in_head; /* between a request's first byte and its end */
    int paused;  /* parser paused: too much output queued */
    /* The Authorization header (read only when a token is required). */
    char field[16];
    size_t field_len;
    int in_value, auth_field, authorized;
    rm_sbuf auth;
    char *pending; /* bytes read but not parsed while paused */
    size_t npending;
} conn;

const char *rm_http_status_lookup(const rm_http_status_text *table, size_t n, int status)
{
    for (size_t i = 0; i < n; i++)
        if (table[i].status == status)
            return table[i].text;
    return NULL;
}

const char *rm_http_reason(int status)
{
    static const rm_http_status_text table[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {103, "Early Hints"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {206, "Partial Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {411, "Length Required"},
        {413, "Payload Too Large"},
        {414, "URI Too Long"},
        {415, "Unsupported Media Type"},
        {417, "Expectation Failed"},
        {422, "Unprocessable Content"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
    };
    const char *reason = rm_http_status_lookup(table, RM_ARRAY_LEN(table), status);
    return reason ? reason : "Unknown";
}

void rm_http_config_defaults(rm_http_config *c)
{
    memset(c, 0, sizeof *c);
    c->max_connections = 256;
    c->header_timeout_ms = 10000;
    c->idle_timeout_ms = 60000;
}

static void conn_closed(rm_hconn *h)
{
    conn *c = (conn *)h;
    rm_http_server *srv = c->srv;
    __atomic_fetch_sub(&srv->figures[FIG_CONNS], 1, __ATOMIC_RELAXED);
    free(c->auth.p);
    free(c->pending);
    free(c);
    rm_hconn_release(&srv->accept_held, (uv_stream_t *)&srv->listener);
}

/* Closes once what is queued has been sent (bounded by the idle timeout:
 * a client that never reads does not keep it). */
static void finish_and_close(conn *c)
{
    if (rm_hconn_ending(&c->h))
        return;
    /* Nothing after this request is parsed (a parser in an error state
     * stops by itself, and must not be paused). */
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_OK)
        http_parser_pause(&c->parser, 1);
    rm_hconn_finish(&c->h, c->srv->cfg.idle_timeout_ms);
}

static void feed(conn *c, const char *data, size_t len);

/* Output drained below the bound: parse what waited, then read again. */
static void resume(conn *c)
{
    if (!c->paused || rm_hconn_ending(&c->h) || rm_hconn_queued(&c->h) >= MAX_QUEUED_OUTPUT)
        return;
    c->paused = 0;
    http_parser_pause(&c->parser, 0);
    char *data = c->pending;
    size_t n = c->npending;
    c->pending = NULL;
    c->npending = 0;
    if (n)
        feed(c, data, n);
    free(data);
    if (!c->paused && !rm_hconn_ending(&c->h))
        rm_hconn_reading(&c->h, 1);
}

static void conn_written(rm_hconn *h)
{
    conn *c = (conn *)h;
    if (!c->in_head)
        rm_hconn_arm(h, c->srv->cfg.idle_timeout_ms); /* the client reads: not idle */
    resume(c);
}

static void respond(conn *c, int status, const char *type, const char *body, size_t len,
                    int head_only, int keep_alive)
{
    /* A 405 names what is allowed (RFC 9110 15.5.6). */
    const char *extra = status == 401   ? "Cache-Control: no-store\r\n" RM_HTTP_BEARER_CHALLENGE
                        : status == 405 ? "Cache-Control: no-store\r\nAllow: GET, HEAD\r\n"
                                        : "Cache-Control: no-store\r\n";
    rm_hconn_respond(&c->h, status, type, body, len, extra, keep_alive, head_only);
}

static void conn_timeout(rm_hconn *h)
{
    conn *c = (conn *)h;
    __atomic_fetch_add(&c->srv->figures[FIG_TIMEOUTS], 1, __ATOMIC_RELAXED);
    if (c->in_head && !h->finishing) {
        respond(c, 408, "text/plain", "request head timed out\n", 23, 0, 0);
        finish_and_close(c);
    } else {
        rm_hconn_close(h);
    }
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->path_len + len >= sizeof c->path) {
        c->too_long = 1;
        return 0;
    }
    memcpy(c->path + c->path_len, at, len);
    c->path_len += len;
    c->path[c->path_len] = '\0';
    return 0;
}

/* Ends the header being read: an Authorization value is checked. */
static void end_header(conn *c)
{
    if (c->in_value && c->auth_field)
        c->authorized |= rm_bearer_matches(c->srv->token, c->auth.p ? c->auth.p : "", c->auth.len);
    c->in_value = c->auth_field = 0;
    c->field_len = 0;
    c->auth.len = 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (!c->srv->token)
        return 0;
    if (c->in_value)
        end_header(c);
    if (c->field_len < sizeof c->field) {
        size_t room = sizeof c->field - c->field_len;
        memcpy(c->field + c->field_len, at, len < room ? len : room);
    }
    c->field_len += len; /* past the buffer: not the name looked for */
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (!c->srv->token)
        return 0;
    if (!c->in_value) {
        c->in_value = 1;
        c->auth_field = c->field_len == 13 && !strncasecmp(c->field, "authorization", 13);
    }
    if (c->auth_field)
        rm_sbuf_append(&c->auth, at, len);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    conn *c = p->data;
    if (c->srv->token)
        end_header(c);
    return 0;
}

static int on_message_begin(http_parser *p)
{
    conn *c = p->data;
    c->path_len = 0;
    c->path[0] = '\0';
    c->too_long = 0;
    c->authorized = 0;
    c->in_value = c->auth_field = 0;
    c->field_len = 0;
    c->auth.len = 0;
    c->in_head = 1;
    rm_hconn_arm(&c->h, c->srv->cfg.header_timeout_ms);
    return 0;
}

/* Paths open without a token: probes cannot send one. */
static int auth_exempt(const char *path)
{
    return !strcmp(path, "/healthz") || !strcmp(path, "/readyz");
}

static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    rm_http_server *srv = c->srv;
    int keep = http_should_keep_alive(p) && !c->too_long;
    int head = p->method == HTTP_HEAD;
    c->in_head = 0;
    if (c->too_long) {
        respond(c, 414, "text/plain", "URI too long\n", 13, head, 0);
    } else if (p->method != HTTP_GET && !head) {
        respond(c, 405, "text/plain", "read-only: GET or HEAD\n", 23, 0, keep);
    } else {
        char *q = strchr(c->path, '?');
        if (q)
            *q = '\0';
        if (srv->token && !c->authorized && !auth_exempt(c->path)) {
            __atomic_fetch_add(&srv->figures[FIG_UNAUTHORIZED], 1, __ATOMIC_RELAXED);
            respond(c, 401, "text/plain", "missing or invalid bearer token\n", 32, head, keep);
        } else {
            rm_http_response r = {404, "text/plain", NULL, 0};
            srv->handler(srv->ctx, c->path, &r);
            if (!r.body) {
                r.body = rm_xstrndup("not found\n", 10);
                r.len = 10;
            }
            respond(c, r.status, r.content_type, r.body, r.len, head, keep);
            free(r.body);
        }
    }
    if (!keep) {
        finish_and_close(c);
        return 0;
    }
    rm_hconn_arm(&c->h, srv->cfg.idle_timeout_ms);
    if (rm_hconn_queued(&c->h) >= MAX_QUEUED_OUTPUT) {
        /* The client is not reading its replies: parse no further. */
        __atomic_fetch_add(&srv->figures[FIG_PAUSED], 1, __ATOMIC_RELAXED);
        c->paused = 1;
        http_parser_pause(p, 1);
        rm_hconn_reading(&c->h, 0);
    }
    return 0;
}

/* In http_parser_settings' order: message begin, url, status, header
 * field, header value, headers complete, body, message complete. */
static const http_parser_settings settings = {
    on_message_begin,    on_url, NULL, on_header_field, on_header_value, on_headers_complete, NULL,
    on_message_complete, NULL,   NULL};

/* Parses client bytes; what a pause left unparsed waits in pending. */
static void feed(conn *c, const char *data, size_t len)
{
    size_t parsed = http_parser_execute(&c->parser, &settings, data, len);
    /* http_parser stops after a request that asks to switch protocols
     * (Upgrade, CONNECT), taking what follows for the new protocol. This
     * server never switches (RFC 9110 7.8 lets it ignore the ask): what
     * follows is the next request. */
    while (!rm_hconn_ending(&c->h) && c->parser.upgrade && parsed < len &&
           HTTP_PARSER_ERRNO(&c->parser) == HPE_OK) {
        size_t step = http_parser_execute(&c->parser, &settings, data + parsed, len - parsed);
        if (!step)
            break; /* no progress: the check below calls it a bad request */
        parsed += step;
    }
    if (rm_hconn_ending(&c->h))
        return;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        if (parsed < len) {
            c->pending = rm_xrealloc(c->pending, c->npending + len - parsed);
            memcpy(c->pending + c->npending, data + parsed, len - parsed);
            c->npending += len - parsed;
        }
    } else if (e != HPE_OK || parsed != len) {
        respond(c, 400, "text/plain", "bad request\n", 12, 0, 0);
        finish_and_close(c);
    }
}

static void conn_data(rm_hconn *h, const char *data, size_t len)
{
    feed((conn *)h, data, len);
}

static const rm_hconn_ops conn_ops = {conn_data, conn_written, conn_timeout, NULL, conn_closed};

static void on_connection(uv_stream_t *server, int status)
{
    rm_http_server *srv = server->data;
    if (status < 0)
        return;
    /* Every descriptor --http may hold in use: gRPC's accept would meet
     * EMFILE next (fdbudget.h). */
    if (rm_hconn_hold(&srv->accept_held,
                      __atomic_load_n(&srv->figures[FIG_CONNS], __ATOMIC_RELAXED),
                      srv->cfg.max_connections, RM_HCONN_MAX_REFUSING))
        return;
    conn *c = rm_xcalloc(1, sizeof *c);
    c->srv = srv;
    uint64_t n = __atomic_add_fetch(&srv->figures[FIG_CONNS], 1, __ATOMIC_RELAXED);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (rm_hconn_accept(&c->h, &srv->loop, server, &conn_ops) != 0)
        return;
    if (n > srv->cfg.max_connections) {
        /* Past the cap: told so, then closed. At most
         * RM_HCONN_MAX_REFUSING are (the accept is held beyond), which
         * keeps them in the fd budget. */
        __atomic_fetch_add(&srv->figures[FIG_REFUSED], 1, __ATOMIC_RELAXED);
        respond(c, 503, "text/plain", "too many connections\n", 21, 0, 0);
        finish_and_close(c);
        return;
    }
    rm_hconn_arm(&c->h, srv->cfg.idle_timeout_ms);
    rm_hconn_reading(&c->h, 1);
}

/* Closes every handle so uv_run returns: the listener and the wake-up
 * handle plainly, connections with their state. */
static void close_any(uv_handle_t *h, void *arg)
{
    rm_http_server *s = arg;
    if (uv_is_closing(h))
        return;
    if (h == (uv_handle_t *)&s->listener || h == (uv_handle_t *)&s->stop)
        uv_close(h, NULL);
    else
        rm_hconn_close(h->data);
}

static void on_stop(uv_async_t *a)
{
    uv_walk(a->loop, close_any, a->data);
}

static void *run(void *p)
{
    rm_http_server *s = p;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

int rm_uv_listen(uv_loop_t *loop, uv_tcp_t *tcp, const char *host_port, int backlog,
                 uv_connection_cb cb, char *err, size_t errlen)
{
    char host[256];
    int p;
    struct sockaddr_in addr;
    if (rm_parse_hostport(host_port, host, sizeof host, &p) != 0) {
        snprintf(err, errlen, "expected HOST:PORT, got '%s'", host_port);
        return -1;
    }
    if (uv_ip4_addr(host, p, &addr) != 0) {
        snprintf(err, errlen, "'%s' is not an IPv4 address", host);
        return -1;
    }
    uv_loop_init(loop);
    uv_tcp_init(loop, tcp);
    int rc = uv_tcp_bind(tcp, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)tcp, backlog, cb);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", host_port, uv_strerror(rc));
        uv_close((uv_handle_t *)tcp, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
        return -1;
    }
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(tcp, (struct sockaddr *)&bound, &len);
    return ntohs(bound.sin_port);
}

void rm_uv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = rm_xmalloc(suggested);
    buf->len = suggested;
}

rm_http_server *rm_http_start(const char *host_port, const rm_http_config *cfg,
                              rm_http_handler handler, void *ctx, int *port, char *err,
                              size_t errlen)
{
    rm_http_server *s = rm_xcalloc(1, sizeof *s);
    s->handler = handler;
    s->ctx = ctx;
    s->cfg = *cfg;
    s->cfg.auth_token = NULL;
    int p = rm_uv_listen(&s->loop, &s->listener, host_port, 128, on_connection, err, errlen);
    if (p < 0) {
        free(s);
        return NULL;
    }
    if (cfg->auth_token)
        s->token = rm_xstrndup(cfg->auth_token, strlen(cfg->auth_token));
    s->loop.data = s; /* set once initialised; nothing runs before uv_run */
    s->listener.data = s;
    *port = p;
    uv_async_init(&s->loop, &s->stop, on_stop);
    s->stop.data = s;
    pthread_create(&s->thread, NULL, run, s);
    return s;
}

rm_http_server *rm_http_start_announced(const char *host_port, const rm_http_config *cfg,
                                        rm_http_handler handler, void *ctx, const char *module)
{
    char err[256];
    int port;
    rm_http_server *s = rm_http_start(host_port, cfg, handler, ctx, &port, err, sizeof err);
    if (!s) {
        rm_log(RM_LOG_ERROR, module, "--http: %s", err);
        return NULL;
    }
    int hl = (int)(strrchr(host_port, ':') - host_port);
    rm_log(RM_LOG_INFO, module, "HTTP on http://%.*s:%d/ (at most %llu connections%s)", hl,
           host_port, port, (unsigned long long)cfg->max_connections,
           s->token ? ", bearer token required" : "");
    printf("HTTP %.*s:%d\n", hl, host_port, port);
    fflush(stdout);
    return s;
}

char *rm_http_metrics(rm_http_server *s, const char *labels)
{
    rm_sbuf b = {0};
    rm_sbuf_append(&b, "", 0);
    if (!s)
        return b.p;
    static const rm_prom_row rows[NFIGURES] = {
        [FIG_CONNS] = {"radixmesh_http_connections", "gauge", "Open --http connections.", 0},
        [FIG_REFUSED] = {"radixmesh_http_refused_connections_total", "counter",
                         "--http connections refused at --http-max-connections.", 0},
        [FIG_UNAUTHORIZED] = {"radixmesh_http_unauthorized_total", "counter",
                              "--http requests answered 401 (--http-auth).", 0},
        [FIG_PAUSED] = {"radixmesh_http_backpressure_pauses_total", "counter",
                        "Times a --http client's unread replies stopped its requests being read.",
                        0},
        [FIG_TIMEOUTS] = {"radixmesh_http_timeouts_total", "counter",
                          "--http connections closed by the header or idle timeout.", 0},
    };
    rm_prom_row now[NFIGURES];
    for (size_t i = 0; i < NFIGURES; i++) {
        now[i] = rows[i];
        now[i].value = (double)__atomic_load_n(&s->figures[i], __ATOMIC_RELAXED);
    }
    rm_prom_rows(&b, now, NFIGURES, labels);
    return b.p;
}

void rm_http_stop(rm_http_server *s)
{
    if (!s)
        return;
    uv_async_send(&s->stop);
    pthread_join(s->thread, NULL);
    uv_loop_close(&s->loop);
    free(s->token);
    free(s);
}

void rm_published_init(rm_published *p)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
}

void rm_published_destroy(rm_published *p)
{
    free(p->metrics);
    free(p->json);
    pthread_mutex_destroy(&p->mu);
}

void rm_published_set(rm_published *p, char *metrics, char *json, int ready)
{
    pthread_mutex_lock(&p->mu);
    if (metrics) {
        free(p->metrics);
        p->metrics = metrics;
    }
    if (json) {
        free(p->json);
        p->json = json;
    }
    p->ready = ready;
    pthread_mutex_unlock(&p->mu);
}

char *rm_published_get(rm_published *p, int which_json, int *ready)
{
    pthread_mutex_lock(&p->mu);
    const char *src = which_json ? p->json : p->metrics;
    char *copy = src ? rm_xstrndup(src, strlen(src)) : NULL;
    if (ready)
        *ready = p->ready;
    pthread_mutex_unlock(&p->mu);
    return copy;
}

static void text_body(rm_http_response *out, int status, const char *text)
{
    out->status = status;
    out->content_type = "text/plain";
    out->len = strlen(text);
    out->body = rm_xstrndup(text, out->len);
}

int rm_http_serve_published(rm_published *p, const char *path, rm_http_response *out)
{
    int ready = 0, json = !strcmp(path, "/api/cluster");
    if (!strcmp(path, "/healthz")) {
        text_body(out, 200, "ok\n");
    } else if (!strcmp(path, "/readyz")) {
        free(rm_published_get(p, 0, &ready));
        text_body(out, ready ? 200 : 503, ready ? "ready\n" : "not ready\n");
    } else if (json || !strcmp(path, "/metrics")) {
        out->body = rm_published_get(p, json, &ready);
        if (!out->body)
            return 0;
        out->status = 200;
        out->content_type = json ? "application/json" : "text/plain; version=0.0.4";
        out->len = strlen(out->body);
    } else {
        return 0;
    }
    return 1;
}
