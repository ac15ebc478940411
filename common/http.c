#include "http.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "flags.h"
#include "log.h"
#include "util.h"

struct rm_http_server {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop;
    pthread_t thread;
    rm_http_handler handler;
    void *ctx;
    http_parser_settings settings;
};

typedef struct conn {
    uv_tcp_t tcp;
    rm_http_server *srv;
    http_parser parser;
    char path[2048];
    size_t path_len;
    int too_long, closing;
} conn;

typedef struct write_req {
    uv_write_t req;
    char *buf;
} write_req;

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 414:
        return "URI Too Long";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

static void close_conn(conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    (void)status;
    free(w->buf);
    free(w);
}

static void respond(conn *c, int status, const char *type, const char *body, size_t len,
                    int head_only, int keep_alive)
{
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: %s\r\n\r\n",
                     status, reason(status), type, len, keep_alive ? "keep-alive" : "close");
    write_req *w = rm_xmalloc(sizeof *w);
    w->buf = rm_xmalloc((size_t)n + (head_only ? 0 : len));
    memcpy(w->buf, hdr, (size_t)n);
    if (!head_only)
        memcpy(w->buf + n, body, len);
    uv_buf_t b = uv_buf_init(w->buf, (unsigned)((size_t)n + (head_only ? 0 : len)));
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(w->buf);
        free(w);
        close_conn(c);
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

static int on_message_begin(http_parser *p)
{
    conn *c = p->data;
    c->path_len = 0;
    c->path[0] = '\0';
    c->too_long = 0;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    int keep = http_should_keep_alive(p);
    int head = p->method == HTTP_HEAD;
    if (c->too_long) {
        respond(c, 414, "text/plain", "URI too long\n", 13, head, 0);
    } else if (p->method != HTTP_GET && !head) {
        respond(c, 405, "text/plain", "read-only: GET or HEAD\n", 23, 0, keep);
    } else {
        char *q = strchr(c->path, '?');
        if (q)
            *q = '\0';
        rm_http_response r = {404, "text/plain", NULL, 0};
        c->srv->handler(c->srv->ctx, c->path, &r);
        if (!r.body) {
            r.body = rm_xstrndup("not found\n", 10);
            r.len = 10;
        }
        respond(c, r.status, r.content_type, r.body, r.len, head, keep);
        free(r.body);
    }
    if (!keep)
        close_conn(c);
    return 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (nread > 0) {
        size_t done = http_parser_execute(&c->parser, &c->srv->settings, buf->base, (size_t)nread);
        if (c->parser.http_errno != HPE_OK || done != (size_t)nread) {
            if (!c->closing)
                respond(c, 400, "text/plain", "bad request\n", 12, 0, 0);
            close_conn(c);
        }
    } else if (nread < 0) {
        close_conn(c);
    }
    free(buf->base);
}

static void on_connection(uv_stream_t *server, int status)
{
    rm_http_server *srv = server->data;
    if (status < 0)
        return;
    conn *c = rm_xcalloc(1, sizeof *c);
    c->srv = srv;
    uv_tcp_init(&srv->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        close_conn(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, rm_uv_alloc, on_read);
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
        close_conn(h->data);
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

rm_http_server *rm_http_start(const char *host_port, rm_http_handler handler, void *ctx, int *port,
                              char *err, size_t errlen)
{
    rm_http_server *s = rm_xcalloc(1, sizeof *s);
    s->handler = handler;
    s->ctx = ctx;
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_message_complete = on_message_complete;
    int p = rm_uv_listen(&s->loop, &s->listener, host_port, 128, on_connection, err, errlen);
    if (p < 0) {
        free(s);
        return NULL;
    }
    s->loop.data = s; /* set once initialised; nothing runs before uv_run */
    s->listener.data = s;
    *port = p;
    uv_async_init(&s->loop, &s->stop, on_stop);
    s->stop.data = s;
    pthread_create(&s->thread, NULL, run, s);
    return s;
}

rm_http_server *rm_http_start_announced(const char *host_port, rm_http_handler handler, void *ctx,
                                        const char *module)
{
    char err[256];
    int port;
    rm_http_server *s = rm_http_start(host_port, handler, ctx, &port, err, sizeof err);
    if (!s) {
        rm_log(RM_LOG_ERROR, module, "--http: %s", err);
        return NULL;
    }
    int hl = (int)(strrchr(host_port, ':') - host_port);
    rm_log(RM_LOG_INFO, module, "HTTP on http://%.*s:%d/", hl, host_port, port);
    printf("HTTP %.*s:%d\n", hl, host_port, port);
    fflush(stdout);
    return s;
}

void rm_http_stop(rm_http_server *s)
{
    if (!s)
        return;
    uv_async_send(&s->stop);
    pthread_join(s->thread, NULL);
    uv_loop_close(&s->loop);
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
