/* gateway_upstream.c -- the gateway's connections to workers: resolving
 * and connecting, sending a request, reading the response (interim 1xx
 * skipped, stray bytes after it refused) and streaming it to the client
 * with backpressure, the timeouts towards a worker, and the pool of
 * kept-alive connections. Gateway thread only. */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "gateway_internal.h"
#include "http.h"
#include "log.h"
#include "worker_metrics.h"

#define MAX_UPSTREAM_HEAD (64 * 1024)
#define MAX_SCRAPE_BYTES  (8u << 20)
#define MAX_IDLE_UPSTREAM 64    /* kept-alive worker connections in all */
#define IDLE_UPSTREAM_MS  15000 /* closed after this long unused */

static void up_failed(gw_up *u, up_failure f, const char *why);
static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_up_timer(uv_timer_t *t);
static void idle_put(gw_up *u);

/* Frees u once its handles are closed and no name lookup still points at it. */
static void up_maybe_free(gw_up *u)
{
    if (u->open_handles || u->gai_pending)
        return;
    rm_http_head_reset(&u->hdrs);
    free(u->scrape_body.p);
    free(u);
}

static void on_up_handle_closed(uv_handle_t *h)
{
    gw_up *u = h->data;
    u->open_handles--;
    up_maybe_free(u);
}

static void idle_del(gw_up *u)
{
    rm_gateway *g = u->g;
    RM_LIST_DEL(g->idle, u, idle_prev, idle_next);
    u->idle = 0;
    g->nidle--;
    __atomic_store_n(&g->c.idle, g->nidle, __ATOMIC_RELAXED);
}

void gw_up_close(gw_up *u)
{
    if (u->closing)
        return;
    u->closing = 1;
    LIST_DEL(u->g->ups, u);
    if (u->idle)
        idle_del(u);
    if (u->kind == UP_SCRAPE)
        gw_scrape_done(u);
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, on_up_handle_closed);
    uv_close((uv_handle_t *)&u->tcp, on_up_handle_closed);
}

/* A worker connection that can no longer serve its request: the request
 * goes to another worker or gets 502 (504 after a timeout). */
static void up_failed(gw_up *u, up_failure f, const char *why)
{
    if (u->kind == UP_SCRAPE) {
        u->report.reachable = 0;
        gw_up_close(u);
        return;
    }
    gw_req *q = u->req;
    gw_up_close(u);
    if (!q)
        return;
    q->up = NULL;
    u->req = NULL;
    if (u->reused && f == UPF_CLOSED && u->status == 0 && !q->sent_head && q->conn) {
        /* A kept-alive connection the worker had closed meanwhile: not the
         * worker's failure. The same worker, on a new connection. */
        gw_up_start(u->g, u->host, u->port, q);
        return;
    }
    static const rm_worker_outcome outcome[] = {
        [UPF_CONNECT] = RM_WORKER_UNREACHABLE, [UPF_CLOSED] = RM_WORKER_FAILED,
        [UPF_PROTOCOL] = RM_WORKER_FAILED,     [UPF_TIMEOUT] = RM_WORKER_FAILED,
        [UPF_5XX] = RM_WORKER_NO_VERDICT,
    };
    char msg[384];
    snprintf(msg, sizeof msg, "worker %s:%d: %s", u->host, u->port, why);
    gw_req_retry_or_fail(q, f == UPF_TIMEOUT ? 504 : 502, msg, outcome[f]);
}

static void on_up_timer(uv_timer_t *t)
{
    gw_up *u = t->data;
    rm_gateway *g = u->g;
    char why[128];
    if (u->idle) {
        gw_up_close(u);
    } else if (u->kind == UP_SCRAPE) {
        /* The scrape's deadline, from its start: a worker that answers a
         * byte at a time does not hold it open. Its head, if it came, says
         * the worker is there. */
        rm_log(RM_LOG_DEBUG, "gateway", "scrape of %s:%d: no whole page within %u ms", u->host,
               u->port, g->cfg.connect_timeout_ms * 2);
        u->report.reachable = u->status != 0;
        gw_up_close(u);
    } else if (!u->connected) {
        up_failed(u, UPF_CONNECT, "connect timed out");
    } else if (u->status == 0) {
        COUNT(g, timeouts);
        snprintf(why, sizeof why, "no response within %u ms (--gateway-first-byte-timeout-ms)",
                 g->cfg.first_byte_timeout_ms);
        up_failed(u, UPF_TIMEOUT, why);
    } else {
        COUNT(g, timeouts);
        snprintf(why, sizeof why, "silent for %u ms (--gateway-upstream-timeout-ms)",
                 g->cfg.upstream_timeout_ms);
        up_failed(u, UPF_TIMEOUT, why);
    }
}

static int on_up_status(http_parser *p, const char *at, size_t len)
{
    gw_up *u = p->data;
    size_t have = strlen(u->reason);
    if (have + len < sizeof u->reason) {
        memcpy(u->reason + have, at, len);
        u->reason[have + len] = '\0';
    }
    return 0;
}

static int on_up_field(http_parser *p, const char *at, size_t len)
{
    gw_up *u = p->data;
    rm_http_head_field(&u->hdrs, at, len);
    return u->hdrs.bytes > MAX_UPSTREAM_HEAD;
}

static int on_up_value(http_parser *p, const char *at, size_t len)
{
    gw_up *u = p->data;
    rm_http_head_value(&u->hdrs, at, len);
    return u->hdrs.bytes > MAX_UPSTREAM_HEAD;
}

static int on_up_headers_complete(http_parser *p)
{
    gw_up *u = p->data;
    rm_http_head_end(&u->hdrs);
    if (p->status_code / 100 == 1) {
        if (p->status_code == 101) {
            u->switched = 1; /* nobody asked it to switch protocols */
            return -1;
        }
        /* An interim response (100 Continue, 103 Early Hints): not the
         * answer, which follows on this connection. http-parser ends the
         * message here and parses the next one. */
        u->interim = 1;
        rm_http_head_reset(&u->hdrs);
        u->reason[0] = '\0';
        return 1;
    }
    u->status = p->status_code;
    if (u->kind == UP_SCRAPE)
        return 0;
    gw_req *q = u->req;
    if (!q)
        return -1;
    if (u->status >= 500 && q->attempts < 2) {
        u->retry_asked = 1; /* nothing is sent yet: try another worker */
        return -1;
    }
    /* The head is in: from now on the bound is the stream's idle time. */
    uint32_t idle = u->g->cfg.upstream_timeout_ms;
    uv_timer_start(&u->timer, on_up_timer, idle, idle);
    q->state = RQ_STREAMING;
    q->sent_head = 1;
    gw_count_status(u->g, u->status);
    int has_length = (p->flags & F_CONTENTLENGTH) && !(p->flags & F_CHUNKED);
    int no_body = q->head_only || u->status == 204 || u->status == 304;
    if (!has_length && !no_body && q->http_minor == 0)
        q->keep_alive = 0; /* HTTP/1.0 client: the end of the body is the close */
    q->chunked_out = !has_length && !no_body && q->http_minor >= 1;
    rm_sbuf out = {0};
    rm_sbuf_printf(&out, "HTTP/1.1 %d %s\r\n%sx-radixmesh-node: %s\r\n", u->status,
                   u->reason[0] ? u->reason : "OK", u->hdrs.out.p ? u->hdrs.out.p : "",
                   q->job->node_id);
    if (has_length)
        rm_sbuf_printf(&out, "Content-Length: %" PRIu64 "\r\n", (uint64_t)p->content_length);
    else if (q->chunked_out)
        rm_sbuf_printf(&out, "Transfer-Encoding: chunked\r\n");
    rm_sbuf_printf(&out, "Connection: %s\r\n\r\n", q->keep_alive ? "keep-alive" : "close");
    if (q->conn)
        gw_client_write(q->conn, out.p, out.len);
    else
        free(out.p);
    return q->head_only ? 1 : 0;
}

static int on_up_body(http_parser *p, const char *at, size_t len)
{
    gw_up *u = p->data;
    if (u->kind == UP_SCRAPE) {
        if (u->scrape_body.len + len > MAX_SCRAPE_BYTES)
            return -1;
        rm_sbuf_append(&u->scrape_body, at, len);
        return 0;
    }
    gw_req *q = u->req;
    if (!q || !q->conn)
        return -1;
    if (q->end.text && u->status / 100 == 2)
        rm_openai_reply_feed(&q->reply, at, len); /* past its bound: the prompt alone */
    char *buf;
    size_t n;
    if (q->chunked_out) {
        buf = rm_xmalloc(len + 32);
        int h = snprintf(buf, 32, "%zx\r\n", len);
        memcpy(buf + h, at, len);
        memcpy(buf + h + len, "\r\n", 2);
        n = (size_t)h + len + 2;
    } else {
        buf = rm_xmalloc(len);
        memcpy(buf, at, len);
        n = len;
    }
    gw_client_write(q->conn, buf, n);
    if (!u->paused && !q->conn->closing &&
        uv_stream_get_write_queue_size((uv_stream_t *)&q->conn->tcp) > WRITE_HIGH_WATER) {
        /* The worker is not silent, the client is slow: no idle timer
         * while paused. */
        u->paused = 1;
        COUNT(u->g, paused);
        uv_read_stop((uv_stream_t *)&u->tcp);
        uv_timer_stop(&u->timer);
    }
    return 0;
}

static int on_up_complete(http_parser *p)
{
    gw_up *u = p->data;
    if (u->interim) {
        u->interim = 0; /* the final response is still to come */
        return 0;
    }
    u->complete = 1;
    if (u->kind == UP_SCRAPE) {
        rm_worker_figures f;
        rm_worker_metrics_parse(u->scrape_body.p ? u->scrape_body.p : "", u->scrape_body.len, &f);
        u->report.complete = 1;
        u->report.has_counts = f.has_counts;
        u->report.hit_tokens = f.hit_tokens;
        u->report.query_tokens = f.query_tokens;
        u->report.hit_rate = f.hit_rate;
        gw_up_close(u);
        return 0;
    }
    /* Whether anything followed is known once the parser returns. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_status = on_up_status,
    .on_header_field = on_up_field,
    .on_header_value = on_up_value,
    .on_headers_complete = on_up_headers_complete,
    .on_body = on_up_body,
    .on_message_complete = on_up_complete,
};

/* The worker's response has ended; `extra`: bytes came after it that
 * nobody asked for, so the connection can carry no other response. */
static void up_response_end(gw_up *u, int extra)
{
    gw_req *q = u->req;
    rm_gateway *g = u->g;
    if (!q) {
        gw_up_close(u);
        return;
    }
    if (q->chunked_out && q->conn)
        gw_client_write(q->conn, rm_xstrndup("0\r\n\r\n", 5), 5);
    int ok = u->status >= 200 && u->status < 300;
    rm_worker_outcome o = u->status < 500 ? RM_WORKER_ANSWERED : RM_WORKER_NO_VERDICT;
    if (extra)
        rm_log(RM_LOG_WARN, "gateway", "worker %s:%d sent bytes after its response: not reused",
               u->host, u->port);
    if (!extra && http_should_keep_alive(&u->parser) && !u->paused && !g->draining &&
        g->nidle < MAX_IDLE_UPSTREAM) {
        q->up = NULL; /* the connection outlives the request */
        u->req = NULL;
        gw_req_finish(q, ok, o);
        idle_put(u);
        return;
    }
    gw_req_finish(q, ok, o);
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    gw_up *u = s->data;
    if (u->closing || u->idle) {
        /* Anything from an idle worker connection (its close, or bytes
         * nobody asked for) ends it: it no longer carries a response we
         * wait for. */
        if (!u->closing)
            gw_up_close(u);
        free(buf->base);
        return;
    }
    if (nread > 0 || nread == UV_EOF) {
        uv_timer_again(&u->timer); /* the idle timer, once streaming; else a no-op */
        size_t len = nread > 0 ? (size_t)nread : 0;
        size_t done = http_parser_execute(&u->parser, &resp_settings, buf->base, len);
        enum http_errno e = HTTP_PARSER_ERRNO(&u->parser);
        if (u->closing) {
            /* finished (or cancelled) inside a callback */
        } else if (u->complete) {
            /* A stray CRLF after a body is old practice, and harmless. */
            size_t i = done;
            while (i < len && (buf->base[i] == '\r' || buf->base[i] == '\n'))
                i++;
            up_response_end(u, i < len);
        } else if (u->retry_asked) {
            char why[96];
            snprintf(why, sizeof why, "answered %d", u->status);
            up_failed(u, UPF_5XX, why);
        } else if (u->switched) {
            up_failed(u, UPF_PROTOCOL, "answered 101 Switching Protocols unasked");
        } else if (e != HPE_OK || done != len) {
            up_failed(u, UPF_PROTOCOL, http_errno_description(e));
        } else if (nread == UV_EOF) {
            up_failed(u, UPF_CLOSED, "closed the connection before the response ended");
        }
    } else if (nread < 0) {
        up_failed(u, UPF_CLOSED, uv_strerror((int)nread));
    }
    free(buf->base);
}

static void on_up_written(uv_write_t *w, int status)
{
    gw_write *wr = (gw_write *)w;
    (void)status; /* a failed write shows up as a read error */
    free(wr->buf);
    free(wr);
}

/* Sends the request (or the scrape) on u's open connection and reads the
 * response. */
void gw_up_send(gw_up *u)
{
    rm_sbuf head = {0};
    const char *body = NULL;
    size_t body_len = 0;
    if (u->kind == UP_SCRAPE) {
        rm_sbuf_printf(&head, "GET /metrics HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n",
                       u->host, u->port);
    } else {
        gw_req *q = u->req;
        q->state = RQ_WAITING;
        rm_sbuf_printf(&head,
                       "%sHost: %s:%d\r\nContent-Length: %zu\r\nConnection: keep-alive\r\n\r\n",
                       q->head, u->host, u->port, q->body_len);
        body = q->body;
        body_len = q->body_len;
    }
    /* One buffer the write owns: the request may end before it completes. */
    size_t total = head.len + body_len;
    char *all = rm_xmalloc(total);
    memcpy(all, head.p, head.len);
    if (body_len)
        memcpy(all + head.len, body, body_len);
    free(head.p);
    if (gw_write_owned((uv_stream_t *)&u->tcp, all, total, NULL, on_up_written) != 0) {
        up_failed(u, UPF_CLOSED, "cannot write the request");
        return;
    }
    http_parser_init(&u->parser, HTTP_RESPONSE);
    u->parser.data = u;
    /* A forward's bound until the response head: absolute (not reset by
     * interim responses or a head that trickles in). A scrape keeps the
     * deadline it got when it started. */
    if (u->kind == UP_FORWARD)
        uv_timer_start(&u->timer, on_up_timer, u->g->cfg.first_byte_timeout_ms, 0);
    if (!u->reused) /* a pooled connection never stopped reading */
        uv_read_start((uv_stream_t *)&u->tcp, rm_uv_alloc, on_up_read);
}

static void on_up_connected(uv_connect_t *cr, int status)
{
    gw_up *u = cr->data;
    if (u->closing)
        return;
    if (status < 0) {
        up_failed(u, UPF_CONNECT, uv_strerror(status));
        return;
    }
    u->connected = 1;
    uv_tcp_nodelay(&u->tcp, 1);
    gw_up_send(u);
}

/* ---- the keep-alive pool towards workers ----------------------------------- */

/* 1 if bytes (or the worker's close) wait unread on an idle connection:
 * they arrived after its response and before this loop turn read them,
 * and must not be taken for the next request's response. */
static int up_has_unread(gw_up *u)
{
    uv_os_fd_t fd;
    char b;
    if (uv_fileno((uv_handle_t *)&u->tcp, &fd) != 0)
        return 1;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

/* An idle connection to host:port, taken out of the pool for q, or NULL. */
gw_up *gw_up_idle_take(rm_gateway *g, const char *host, int port, gw_req *q)
{
    for (gw_up *u = g->idle, *next; u; u = next) {
        next = u->idle_next;
        if (u->port != port || strcmp(u->host, host) != 0)
            continue;
        if (up_has_unread(u)) {
            gw_up_close(u);
            continue;
        }
        idle_del(u);
        u->req = q;
        u->reused = 1;
        u->status = u->complete = u->retry_asked = u->interim = 0;
        u->reason[0] = '\0';
        rm_http_head_reset(&u->hdrs);
        return u;
    }
    return NULL;
}

/* Keeps u (its response complete, nobody attached) for the next request
 * to its worker. */
static void idle_put(gw_up *u)
{
    rm_gateway *g = u->g;
    u->idle = 1;
    RM_LIST_ADD(g->idle, u, idle_prev, idle_next);
    g->nidle++;
    __atomic_store_n(&g->c.idle, g->nidle, __ATOMIC_RELAXED);
    uv_timer_start(&u->timer, on_up_timer, IDLE_UPSTREAM_MS, 0);
}

static void up_connect_addr(gw_up *u, const struct sockaddr *addr)
{
    u->connect.data = u;
    int rc = uv_tcp_connect(&u->connect, &u->tcp, addr, on_up_connected);
    if (rc != 0)
        up_failed(u, UPF_CONNECT, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    gw_up *u = req->data;
    u->gai_pending = 0;
    if (u->closing) {
        uv_freeaddrinfo(res);
        up_maybe_free(u);
        return;
    }
    if (status < 0 || !res)
        up_failed(u, UPF_CONNECT, status < 0 ? uv_strerror(status) : "no address");
    else
        up_connect_addr(u, res->ai_addr);
    uv_freeaddrinfo(res);
}

/* A worker connection for a forward (attached to q) or a scrape; nothing
 * is sent before gw_up_open. */
gw_up *gw_up_new(rm_gateway *g, up_kind kind, const char *host, int port, gw_req *q)
{
    gw_up *u = rm_xcalloc(1, sizeof *u);
    u->g = g;
    u->kind = kind;
    u->req = q;
    if (q)
        q->up = u;
    snprintf(u->host, sizeof u->host, "%s", host);
    u->port = port;
    uv_tcp_init(&g->loop, &u->tcp);
    uv_timer_init(&g->loop, &u->timer);
    u->tcp.data = u->timer.data = u;
    u->open_handles = 2;
    LIST_ADD(g->ups, u);
    return u;
}

/* Connects u. A failure may end it (and its request) before this returns:
 * callers touch neither afterwards. */
void gw_up_open(gw_up *u)
{
    rm_gateway *g = u->g;
    if (u->kind == UP_FORWARD)
        COUNT(g, connects);
    /* A scrape's one deadline covers connecting and the whole page. */
    uv_timer_start(&u->timer, on_up_timer,
                   u->kind == UP_SCRAPE ? g->cfg.connect_timeout_ms * 2 : g->cfg.connect_timeout_ms,
                   0);
    struct sockaddr_in sa;
    if (uv_ip4_addr(u->host, u->port, &sa) == 0) {
        up_connect_addr(u, (const struct sockaddr *)&sa);
    } else {
        char service[16];
        snprintf(service, sizeof service, "%d", u->port);
        struct addrinfo hints = {0};
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        u->gai.data = u;
        u->gai_pending = 1;
        if (uv_getaddrinfo(&g->loop, &u->gai, on_resolved, u->host, service, &hints) != 0) {
            u->gai_pending = 0;
            up_failed(u, UPF_CONNECT, "cannot resolve");
        }
    }
}

/* A forward of q on a new connection to host:port. */
void gw_up_start(rm_gateway *g, const char *host, int port, gw_req *q)
{
    gw_up_open(gw_up_new(g, UP_FORWARD, host, port, q));
}

void gw_up_resume(gw_up *u)
{
    if (!u->paused)
        return;
    u->paused = 0;
    uint32_t t = u->g->cfg.upstream_timeout_ms;
    uv_timer_start(&u->timer, on_up_timer, t, t);
    uv_read_start((uv_stream_t *)&u->tcp, rm_uv_alloc, on_up_read);
}

void gw_up_close_unattached(rm_gateway *g)
{
    for (gw_up *u = g->ups, *next; u; u = next) {
        next = u->next;
        if (u->kind == UP_FORWARD && u->req)
            continue; /* closed with its client connection */
        gw_up_close(u);
    }
}
