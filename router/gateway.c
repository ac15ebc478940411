#include "gateway.h"

#include <http_parser.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "bearer.h"
#include "flags.h"
#include "http.h"
#include "log.h"
#include "openai.h"
#include "util.h"
#include "worker_metrics.h"

#define MAX_UPSTREAM_HEAD (64 * 1024)
#define MAX_SCRAPE_BYTES  (8u << 20)
#define WRITE_HIGH_WATER  (4u << 20) /* stop reading the worker above this */
#define WRITE_LOW_WATER   (1u << 20)
#define MAX_IDLE_UPSTREAM 64         /* kept-alive worker connections in all */
#define IDLE_UPSTREAM_MS  15000      /* closed after this long unused */
#define MAX_REPLY_BYTES   (4u << 20) /* generated text (or one response document) read */

void rm_gateway_config_defaults(rm_gateway_config *c)
{
    memset(c, 0, sizeof *c);
    c->listen = "127.0.0.1:0";
    c->max_body_bytes = 16u << 20;
    c->max_header_bytes = 64u << 10;
    c->connect_timeout_ms = 2000;
    c->upstream_timeout_ms = 300000;
    c->client_timeout_ms = 60000;
    c->scrape_interval_ms = 1000;
    c->max_prompt_tokens = 1u << 20;
    c->max_connections = 4096;
}

typedef enum { CS_IDLE, CS_READING, CS_BUSY } conn_state;
typedef enum { RQ_ROUTING, RQ_CONNECTING, RQ_WAITING, RQ_STREAMING } req_state;
typedef enum { UP_FORWARD, UP_SCRAPE } up_kind;

typedef struct gw_conn gw_conn;
typedef struct gw_req gw_req;
typedef struct gw_up gw_up;

/* Counters are written on the gateway thread and read by the router's
 * metrics publisher: relaxed atomics. */
typedef struct gw_counters {
    uint64_t requests, by_class[6], retries, client_gone, upstream_failures, active, connections;
    uint64_t paused, connects, idle;
} gw_counters;

#define COUNT(g, field)   __atomic_fetch_add(&(g)->c.field, 1, __ATOMIC_RELAXED)
#define UNCOUNT(g, field) __atomic_fetch_sub(&(g)->c.field, 1, __ATOMIC_RELAXED)

struct rm_gateway {
    rm_gateway_config cfg;
    rm_router *router;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake;
    uv_timer_t scrape_timer;
    pthread_t thread;
    http_parser_settings req_settings, resp_settings;
    /* Routed jobs back from the router thread, and requests to drain or
     * stop: shared with other threads under mu. */
    pthread_mutex_t mu;
    rm_route_job **ready;
    size_t nready, cap;
    int want_drain, want_stop;
    /* Gateway thread only. */
    int draining, stopping, listening;
    uint32_t nconns;
    gw_conn *conns; /* open client connections */
    gw_up *ups;     /* open worker connections */
    gw_up *idle;    /* kept-alive worker connections, newest first */
    uint32_t nidle;
    size_t scrapes;
    gw_counters c;
};

/* A header line kept while parsing a head. */
typedef struct hdr_acc {
    rm_sbuf out; /* "Name: value\r\n" lines that are forwarded */
    rm_sbuf field, value;
    int in_value;
    size_t bytes;
    char expect[32];
} hdr_acc;

struct gw_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    int open_handles, closing;
    rm_gateway *g;
    http_parser parser;
    conn_state state;
    /* The request being read. */
    rm_sbuf url;
    hdr_acc hdrs;
    char *body;
    size_t body_len, body_cap;
    int reject;    /* 413 / 431 decided while parsing */
    char *pending; /* bytes after a complete request */
    size_t npending;
    gw_req *req;          /* in progress */
    gw_conn *prev, *next; /* g->conns while open */
};

struct gw_req {
    rm_gateway *g;
    gw_conn *conn;     /* NULL once the client has gone */
    rm_route_job *job; /* ours unless job_out */
    int job_out;
    req_state state;
    int keep_alive, head_only, http_minor;
    char *head; /* request line + forwarded headers, without Host & framing */
    char *body;
    size_t body_len;
    int attempts;
    gw_up *up;
    int sent_head, chunked_out;
    /* A text prompt's 2xx response is read for the generated text, to
     * record it with the prompt (the worker caches both). */
    rm_openai_end end;     /* where the prompt's tokens stopped; .text: read the reply */
    rm_openai_reply reply; /* knows the request's kind */
};

struct gw_up {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect;
    uv_getaddrinfo_t gai;
    int open_handles, gai_pending, closing;
    up_kind kind;
    rm_gateway *g;
    gw_req *req;             /* UP_FORWARD; NULL once detached */
    rm_worker_report report; /* UP_SCRAPE */
    rm_sbuf scrape_body;
    char host[256];
    int port;
    http_parser parser;
    hdr_acc hdrs;
    char reason[64];
    int status, connected, complete, retry_asked, paused;
    int reused;                   /* taken from the idle pool for this request */
    int idle;                     /* in g->idle, waiting for the next request to its worker */
    gw_up *prev, *next;           /* g->ups while open */
    gw_up *idle_prev, *idle_next; /* g->idle while idle */
};

static void conn_close(gw_conn *c);
static void conn_next(gw_conn *c);
static void up_close(gw_up *u);
static void route(gw_req *q);
static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void up_failed(gw_up *u, int worker_failed, const char *why);
static void idle_put(gw_up *u);
static gw_up *up_start(rm_gateway *g, up_kind kind, const char *host, int port, gw_req *q);
static void req_finish(gw_req *q, int ok, int worker_failed);

/* ---- small helpers ---------------------------------------------------------- */

#define LIST_ADD(head, x)                                                                          \
    do {                                                                                           \
        (x)->prev = NULL;                                                                          \
        (x)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (x);                                                                    \
        (head) = (x);                                                                              \
    } while (0)

#define LIST_DEL(head, x)                                                                          \
    do {                                                                                           \
        if ((x)->prev)                                                                             \
            (x)->prev->next = (x)->next;                                                           \
        else                                                                                       \
            (head) = (x)->next;                                                                    \
        if ((x)->next)                                                                             \
            (x)->next->prev = (x)->prev;                                                           \
    } while (0)

static const char *reason_of(int status)
{
    return rm_http_reason(status);
}

static void hdr_reset(hdr_acc *h)
{
    free(h->out.p);
    free(h->field.p);
    free(h->value.p);
    memset(h, 0, sizeof *h);
}

/* Headers that describe one connection, not the message: never forwarded
 * (RFC 9110 7.6.1), plus the ones the gateway rewrites. */
static int hop_by_hop(const char *name)
{
    static const char *const drop[] = {
        "connection",        "keep-alive", "proxy-connection", "te",   "trailer",
        "transfer-encoding", "upgrade",    "content-length",   "host", "expect"};
    for (size_t i = 0; i < RM_ARRAY_LEN(drop); i++)
        if (!strcasecmp(name, drop[i]))
            return 1;
    return 0;
}

/* Ends the header being accumulated. */
static void hdr_flush(hdr_acc *h)
{
    if (!h->field.p)
        return;
    const char *v = h->value.p ? h->value.p : "";
    if (!strcasecmp(h->field.p, "expect"))
        snprintf(h->expect, sizeof h->expect, "%s", v);
    if (!hop_by_hop(h->field.p))
        rm_sbuf_printf(&h->out, "%s: %s\r\n", h->field.p, v);
    free(h->field.p);
    free(h->value.p);
    memset(&h->field, 0, sizeof h->field);
    memset(&h->value, 0, sizeof h->value);
    h->in_value = 0;
}

static void hdr_field(hdr_acc *h, const char *at, size_t len)
{
    if (h->in_value)
        hdr_flush(h);
    rm_sbuf_append(&h->field, at, len);
    h->bytes += len;
}

static void hdr_value(hdr_acc *h, const char *at, size_t len)
{
    h->in_value = 1;
    rm_sbuf_append(&h->value, at, len);
    h->bytes += len;
}

/* ---- writing to the client -------------------------------------------------- */

typedef struct write_req {
    uv_write_t req;
    gw_conn *conn;
    char *buf;
} write_req;

static void on_client_written(uv_write_t *w, int status)
{
    write_req *wr = (write_req *)w;
    gw_conn *c = wr->conn;
    free(wr->buf);
    free(wr);
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* Backpressure: a slow client stops the worker's stream until its
     * queue has drained. */
    gw_req *q = c->req;
    if (q && q->up && q->up->paused &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WRITE_LOW_WATER) {
        q->up->paused = 0;
        uv_read_start((uv_stream_t *)&q->up->tcp, rm_uv_alloc, on_up_read);
    }
}

/* Queues len bytes of buf (taken; freed when written) on stream. conn
 * (may be NULL) is handed to cb. Returns 0, or -1 (buf freed) if the write
 * cannot start. */
static int write_owned(uv_stream_t *stream, char *buf, size_t len, gw_conn *conn, uv_write_cb cb)
{
    write_req *wr = rm_xmalloc(sizeof *wr);
    wr->conn = conn;
    wr->buf = buf;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    if (uv_write(&wr->req, stream, &b, 1, cb) != 0) {
        free(buf);
        free(wr);
        return -1;
    }
    return 0;
}

/* Queues len bytes of buf (taken) for the client. */
static void client_write(gw_conn *c, char *buf, size_t len)
{
    if (c->closing)
        free(buf);
    else if (write_owned((uv_stream_t *)&c->tcp, buf, len, c, on_client_written) != 0)
        conn_close(c);
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
    (void)status;
    conn_close(s->data);
}

/* Closes the client connection once everything queued is written. */
static void client_finish_and_close(gw_conn *c)
{
    if (c->closing)
        return;
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close(c);
    c->state = CS_BUSY; /* read nothing more */
}

static void count_status(rm_gateway *g, int status)
{
    int cls = status / 100;
    __atomic_fetch_add(&g->c.by_class[cls >= 1 && cls <= 5 ? cls : 0], 1, __ATOMIC_RELAXED);
}

/* An answer of the gateway's own: an OpenAI-style error document. */
static void send_error(gw_conn *c, int status, const char *type, const char *msg, int keep)
{
    char *body = rm_openai_error(msg, type, NULL);
    size_t bl = strlen(body);
    rm_sbuf out = {0};
    rm_sbuf_printf(&out,
                   "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                   "%sConnection: %s\r\n\r\n%s",
                   status, reason_of(status), bl,
                   status == 401 ? "WWW-Authenticate: Bearer realm=\"radixmesh\"\r\n" : "",
                   keep ? "keep-alive" : "close", body);
    free(body);
    count_status(c->g, status);
    client_write(c, out.p, out.len);
    if (!keep)
        client_finish_and_close(c);
}

/* ---- client connections ---------------------------------------------------- */

static void on_conn_handle_closed(uv_handle_t *h)
{
    gw_conn *c = h->data;
    if (--c->open_handles)
        return;
    UNCOUNT(c->g, connections);
    c->g->nconns--;
    free(c->url.p);
    hdr_reset(&c->hdrs);
    free(c->body);
    free(c->pending);
    free(c);
}

/* The request's upstream no longer serves it: close the connection to the
 * worker (that is how an HTTP request is cancelled). */
static void req_detach_up(gw_req *q)
{
    if (q->up) {
        q->up->req = NULL;
        up_close(q->up);
        q->up = NULL;
    }
}

static void req_free(gw_req *q)
{
    free(q->head);
    free(q->body);
    rm_openai_reply_free(&q->reply);
    free(q);
}

static void conn_close(gw_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    gw_req *q = c->req;
    if (q) {
        c->req = NULL;
        q->conn = NULL;
        COUNT(c->g, client_gone);
        if (!q->job_out) { /* else freed when the router hands the job back */
            req_detach_up(q);
            req_finish(q, 0, 0);
        }
    }
    LIST_DEL(c->g->conns, c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_conn_timer(uv_timer_t *t)
{
    gw_conn *c = t->data;
    if (c->state == CS_READING)
        send_error(c, 408, "invalid_request_error", "the request did not arrive in time", 0);
    else if (c->state == CS_IDLE)
        conn_close(c);
}

static void reset_request(gw_conn *c)
{
    free(c->url.p);
    memset(&c->url, 0, sizeof c->url);
    hdr_reset(&c->hdrs);
    free(c->body);
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    c->reject = 0;
}

static int on_req_begin(http_parser *p)
{
    gw_conn *c = p->data;
    reset_request(c);
    c->state = CS_READING;
    uv_timer_start(&c->timer, on_conn_timer, c->g->cfg.client_timeout_ms, 0);
    return 0;
}

static int over_header_limit(gw_conn *c)
{
    if (c->url.len + c->hdrs.bytes <= c->g->cfg.max_header_bytes)
        return 0;
    c->reject = 431;
    return 1;
}

static int on_req_url(http_parser *p, const char *at, size_t len)
{
    gw_conn *c = p->data;
    rm_sbuf_append(&c->url, at, len);
    return over_header_limit(c);
}

static int on_req_field(http_parser *p, const char *at, size_t len)
{
    gw_conn *c = p->data;
    hdr_field(&c->hdrs, at, len);
    return over_header_limit(c);
}

static int on_req_value(http_parser *p, const char *at, size_t len)
{
    gw_conn *c = p->data;
    hdr_value(&c->hdrs, at, len);
    return over_header_limit(c);
}

static int on_req_headers_complete(http_parser *p)
{
    gw_conn *c = p->data;
    hdr_flush(&c->hdrs);
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->g->cfg.max_body_bytes) {
        c->reject = 413;
        return -1;
    }
    if (!strcasecmp(c->hdrs.expect, "100-continue")) {
        const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        client_write(c, rm_xstrndup(cont, sizeof cont - 1), sizeof cont - 1);
    }
    return 0;
}

static int on_req_body(http_parser *p, const char *at, size_t len)
{
    gw_conn *c = p->data;
    if (c->body_len + len > c->g->cfg.max_body_bytes) {
        c->reject = 413;
        return 1;
    }
    if (c->body_len + len > c->body_cap) {
        c->body_cap = (c->body_len + len) * 2;
        if (c->body_cap > c->g->cfg.max_body_bytes)
            c->body_cap = c->g->cfg.max_body_bytes;
        c->body = rm_xrealloc(c->body, c->body_cap);
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static void start_request(gw_conn *c);

static int on_req_complete(http_parser *p)
{
    gw_conn *c = p->data;
    /* One request at a time: what follows (pipelined) waits in pending. */
    http_parser_pause(p, 1);
    c->state = CS_BUSY;
    uv_timer_stop(&c->timer);
    start_request(c);
    return 0;
}

/* Feeds client bytes to the parser; keeps what a paused parser left. */
static void conn_feed(gw_conn *c, const char *data, size_t len)
{
    size_t done = http_parser_execute(&c->parser, &c->g->req_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->closing)
        return;
    if (e == HPE_PAUSED) {
        if (done < len) {
            c->pending = rm_xrealloc(c->pending, c->npending + len - done);
            memcpy(c->pending + c->npending, data + done, len - done);
            c->npending += len - done;
        }
        return;
    }
    if (e != HPE_OK) {
        if (c->reject == 431)
            send_error(c, 431, "invalid_request_error",
                       "the request head exceeds --gateway-max-header-bytes", 0);
        else if (c->reject == 413)
            send_error(c, 413, "invalid_request_error",
                       "the request body exceeds --gateway-max-body-bytes", 0);
        else {
            char msg[160];
            snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(e));
            send_error(c, 400, "invalid_request_error", msg, 0);
        }
        c->state = CS_BUSY;
    }
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    gw_conn *c = s->data;
    if (nread < 0) {
        conn_close(c); /* the client went away: cancels its request */
    } else if (nread > 0 && c->state == CS_BUSY) {
        /* Pipelined bytes while a request is in progress. Bounded: a client
         * that floods them is cut off. */
        if (c->npending + (size_t)nread > c->g->cfg.max_body_bytes + c->g->cfg.max_header_bytes) {
            conn_close(c);
        } else {
            c->pending = rm_xrealloc(c->pending, c->npending + (size_t)nread);
            memcpy(c->pending + c->npending, buf->base, (size_t)nread);
            c->npending += (size_t)nread;
        }
    } else if (nread > 0) {
        conn_feed(c, buf->base, (size_t)nread);
    }
    free(buf->base);
}

/* The previous request is answered: on to the next one (pipelined bytes
 * first), or close. */
static void conn_next(gw_conn *c)
{
    if (c->closing)
        return;
    if (c->g->draining) {
        client_finish_and_close(c);
        return;
    }
    c->state = CS_IDLE;
    http_parser_pause(&c->parser, 0);
    uv_timer_start(&c->timer, on_conn_timer, c->g->cfg.client_timeout_ms, 0);
    if (c->npending) {
        char *data = c->pending;
        size_t n = c->npending;
        c->pending = NULL;
        c->npending = 0;
        conn_feed(c, data, n);
        free(data);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    rm_gateway *g = server->data;
    if (status < 0)
        return;
    gw_conn *c = rm_xcalloc(1, sizeof *c);
    c->g = g;
    uv_tcp_init(&g->loop, &c->tcp);
    uv_timer_init(&g->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    LIST_ADD(g->conns, c);
    g->nconns++;
    COUNT(g, connections);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || g->nconns > g->cfg.max_connections) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->state = CS_IDLE;
    uv_timer_start(&c->timer, on_conn_timer, g->cfg.client_timeout_ms, 0);
    uv_read_start((uv_stream_t *)&c->tcp, rm_uv_alloc, on_client_read);
}

/* ---- requests ---------------------------------------------------------------- */

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

static void start_request(gw_conn *c)
{
    rm_gateway *g = c->g;
    http_parser *p = &c->parser;
    COUNT(g, requests);
    if (g->cfg.auth_token && !rm_bearer_in_headers(g->cfg.auth_token, c->hdrs.out.p)) {
        int keep = http_should_keep_alive(p) && !g->draining;
        send_error(c, 401, "authentication_error", "missing or invalid bearer token", keep);
        if (keep)
            conn_next(c);
        return;
    }
    gw_req *q = rm_xcalloc(1, sizeof *q);
    q->g = g;
    q->conn = c;
    q->keep_alive = http_should_keep_alive(p) && !g->draining;
    q->head_only = p->method == HTTP_HEAD;
    q->http_minor = p->http_major == 1 ? p->http_minor : 0;
    rm_sbuf head = {0};
    rm_sbuf_printf(&head, "%s %s HTTP/1.1\r\n%s", http_method_str(p->method),
                   c->url.p ? c->url.p : "/", c->hdrs.out.p ? c->hdrs.out.p : "");
    q->head = head.p;
    q->body = c->body;
    q->body_len = c->body_len;
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    c->req = q;
    char path[512];
    snprintf(path, sizeof path, "%s", c->url.p ? c->url.p : "/");
    path[strcspn(path, "?")] = '\0';
    int chat = !strcmp(path, "/v1/chat/completions");
    if (p->method == HTTP_POST && (chat || !strcmp(path, "/v1/completions"))) {
        char *ns, err[256];
        uint32_t *tokens;
        size_t n;
        if (rm_openai_prompt(
                q->body ? q->body : "", q->body_len, chat ? RM_OPENAI_CHAT : RM_OPENAI_COMPLETIONS,
                g->cfg.max_prompt_tokens, &ns, &tokens, &n, &q->end, err, sizeof err) != 0) {
            int keep = q->keep_alive;
            c->req = NULL;
            req_free(q);
            send_error(c, 400, "invalid_request_error", err, keep);
            if (keep)
                conn_next(c);
            return;
        }
        rm_openai_reply_init(&q->reply, chat ? RM_OPENAI_CHAT : RM_OPENAI_COMPLETIONS,
                             MAX_REPLY_BYTES);
        q->job = new_job(q, ns, tokens, n, 0);
    } else {
        q->job = new_job(q, rm_xstrndup("", 0), NULL, 0, 1);
    }
    COUNT(g, active);
    route(q);
}

static void on_routed(rm_route_job *job); /* router thread */
static void req_fail(gw_req *q, int status, const char *msg, int worker_failed);

static void route(gw_req *q)
{
    q->state = RQ_ROUTING;
    q->job->done = on_routed;
    q->job_out = 1;
    if (rm_router_route_async(q->g->router, q->job) != 0) {
        q->job_out = 0;
        q->keep_alive = 0;
        req_fail(q, 503, "the router is shutting down", 0);
    }
}

/* Router thread: hand the job back to the gateway thread. */
static void on_routed(rm_route_job *job)
{
    gw_req *q = job->user;
    rm_gateway *g = q->g;
    pthread_mutex_lock(&g->mu);
    if (g->nready == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 64;
        g->ready = rm_xrealloc(g->ready, g->cap * sizeof *g->ready);
    }
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
}

/* Ends a request: returns its job to the router (releasing the node's
 * in-flight charge, recording the prompt -- and reply -- when ok) and frees
 * it; the client connection, if any, moves on. */
static void req_finish(gw_req *q, int ok, int worker_failed)
{
    rm_gateway *g = q->g;
    gw_conn *c = q->conn;
    req_detach_up(q);
    if (q->job && ok)
        extend_with_reply(q);
    if (q->job)
        rm_router_route_done(g->router, q->job, ok, worker_failed);
    q->job = NULL;
    UNCOUNT(g, active);
    if (c) {
        c->req = NULL;
        if (!q->keep_alive)
            client_finish_and_close(c);
        else
            conn_next(c);
    }
    req_free(q);
}

/* Fails a request before or after its response began. */
static void req_fail(gw_req *q, int status, const char *msg, int worker_failed)
{
    gw_conn *c = q->conn;
    COUNT(q->g, upstream_failures);
    if (c && !q->sent_head) {
        int keep = q->keep_alive;
        q->conn = NULL; /* answered here; req_finish must not move the connection on */
        c->req = NULL;
        req_finish(q, 0, worker_failed);
        send_error(c, status, status == 504 ? "timeout" : "server_error", msg, keep);
        if (keep)
            conn_next(c);
    } else {
        /* Part of the response is out: cutting the connection is the only
         * way left to tell the client it is incomplete. */
        if (c) {
            q->conn = NULL;
            c->req = NULL;
            conn_close(c);
        }
        req_finish(q, 0, worker_failed);
    }
}

/* The worker failed before anything reached the client: once more on
 * another node, or an error. */
static void retry_or_fail(gw_req *q, int status, const char *msg, int worker_failed)
{
    if (q->attempts >= 2 || q->sent_head || !q->conn) {
        req_fail(q, status, msg, worker_failed);
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
    rm_router_route_done(q->g->router, old, 0, worker_failed);
    q->job = job;
    route(q);
}

/* ---- upstream connections ------------------------------------------------------- */

/* Frees u once its handles are closed and no name lookup still points at it. */
static void up_maybe_free(gw_up *u)
{
    if (u->open_handles || u->gai_pending)
        return;
    hdr_reset(&u->hdrs);
    free(u->scrape_body.p);
    free(u);
}

static void on_up_handle_closed(uv_handle_t *h)
{
    gw_up *u = h->data;
    u->open_handles--;
    up_maybe_free(u);
}

static void scrape_done(gw_up *u);

static void idle_del(gw_up *u)
{
    rm_gateway *g = u->g;
    if (u->idle_prev)
        u->idle_prev->idle_next = u->idle_next;
    else
        g->idle = u->idle_next;
    if (u->idle_next)
        u->idle_next->idle_prev = u->idle_prev;
    u->idle = 0;
    g->nidle--;
    __atomic_store_n(&g->c.idle, g->nidle, __ATOMIC_RELAXED);
}

static void up_close(gw_up *u)
{
    if (u->closing)
        return;
    u->closing = 1;
    LIST_DEL(u->g->ups, u);
    if (u->idle)
        idle_del(u);
    if (u->kind == UP_SCRAPE)
        scrape_done(u);
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, on_up_handle_closed);
    uv_close((uv_handle_t *)&u->tcp, on_up_handle_closed);
}

/* A transport failure or timeout of an upstream connection. */
/* A worker connection that can no longer serve its request: the request
 * goes to another worker or gets `status` (502, 504 after silence). */
static void up_abandon(gw_up *u, int worker_failed, const char *why, int status)
{
    if (u->kind == UP_SCRAPE) {
        u->report.reachable = 0;
        up_close(u);
        return;
    }
    gw_req *q = u->req;
    up_close(u);
    if (!q)
        return;
    q->up = NULL;
    u->req = NULL;
    if (u->reused && worker_failed && u->status == 0 && !q->sent_head && q->conn) {
        /* A kept-alive connection the worker had closed meanwhile: not the
         * worker's failure. The same worker, on a new connection. */
        q->up = up_start(u->g, UP_FORWARD, u->host, u->port, q);
        return;
    }
    char msg[384];
    snprintf(msg, sizeof msg, "worker %s:%d: %s", u->host, u->port, why);
    retry_or_fail(q, status, msg, worker_failed);
}

/* A transport failure of a worker connection (502 if nobody else serves). */
static void up_failed(gw_up *u, int worker_failed, const char *why)
{
    up_abandon(u, worker_failed, why, 502);
}

static void on_up_timer(uv_timer_t *t)
{
    gw_up *u = t->data;
    char why[96];
    if (u->idle) {
        up_close(u);
    } else if (!u->connected) {
        up_failed(u, 1, "connect timed out");
    } else {
        snprintf(why, sizeof why, "silent for %u ms", u->g->cfg.upstream_timeout_ms);
        up_abandon(u, 0, why, 504);
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
    hdr_field(&u->hdrs, at, len);
    return u->hdrs.bytes > MAX_UPSTREAM_HEAD;
}

static int on_up_value(http_parser *p, const char *at, size_t len)
{
    gw_up *u = p->data;
    hdr_value(&u->hdrs, at, len);
    return u->hdrs.bytes > MAX_UPSTREAM_HEAD;
}

static int on_up_headers_complete(http_parser *p)
{
    gw_up *u = p->data;
    hdr_flush(&u->hdrs);
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
    q->state = RQ_STREAMING;
    q->sent_head = 1;
    count_status(u->g, u->status);
    int has_length = (p->flags & F_CONTENTLENGTH) && !(p->flags & F_CHUNKED);
    int no_body = q->head_only || u->status == 204 || u->status == 304 || u->status / 100 == 1;
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
        client_write(q->conn, out.p, out.len);
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
    client_write(q->conn, buf, n);
    if (!q->conn->closing &&
        uv_stream_get_write_queue_size((uv_stream_t *)&q->conn->tcp) > WRITE_HIGH_WATER) {
        u->paused = 1;
        COUNT(u->g, paused);
        uv_read_stop((uv_stream_t *)&u->tcp);
    }
    return 0;
}

static int on_up_complete(http_parser *p)
{
    gw_up *u = p->data;
    u->complete = 1;
    if (u->kind == UP_SCRAPE) {
        rm_worker_figures f;
        rm_worker_metrics_parse(u->scrape_body.p ? u->scrape_body.p : "", u->scrape_body.len, &f);
        u->report.has_counts = f.has_counts;
        u->report.hit_tokens = f.hit_tokens;
        u->report.query_tokens = f.query_tokens;
        u->report.hit_rate = f.hit_rate;
        up_close(u);
        return 0;
    }
    gw_req *q = u->req;
    if (!q)
        return 0;
    if (q->chunked_out && q->conn)
        client_write(q->conn, rm_xstrndup("0\r\n\r\n", 5), 5);
    int ok = u->status >= 200 && u->status < 300;
    rm_gateway *g = u->g;
    if (http_should_keep_alive(p) && !u->paused && u->status >= 200 && !g->draining &&
        g->nidle < MAX_IDLE_UPSTREAM) {
        q->up = NULL; /* the connection outlives the request */
        u->req = NULL;
        req_finish(q, ok, 0);
        idle_put(u);
        return 0;
    }
    req_finish(q, ok, 0);
    return 0;
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    gw_up *u = s->data;
    if (u->closing || u->idle) {
        /* Anything from an idle worker connection (its close, most likely)
         * ends it: it no longer carries a response we wait for. */
        if (!u->closing)
            up_close(u);
        free(buf->base);
        return;
    }
    if (nread > 0 || nread == UV_EOF) {
        uv_timer_again(&u->timer);
        size_t len = nread > 0 ? (size_t)nread : 0;
        size_t done = http_parser_execute(&u->parser, &u->g->resp_settings, buf->base, len);
        enum http_errno e = HTTP_PARSER_ERRNO(&u->parser);
        if (u->closing) {
            /* finished (or cancelled) inside a callback */
        } else if (u->retry_asked) {
            char why[96];
            snprintf(why, sizeof why, "answered %d", u->status);
            up_failed(u, 0, why);
        } else if (e != HPE_OK || done != len) {
            up_failed(u, 0, http_errno_description(e));
        } else if (nread == UV_EOF && !u->complete) {
            up_failed(u, u->status == 0, "closed the connection before the response ended");
        }
    } else if (nread < 0) {
        up_failed(u, u->status == 0, uv_strerror((int)nread));
    }
    free(buf->base);
}

static void on_up_written(uv_write_t *w, int status)
{
    write_req *wr = (write_req *)w;
    (void)status; /* a failed write shows up as a read error */
    free(wr->buf);
    free(wr);
}

/* Sends the request (or the scrape) on u's open connection and reads the
 * response. */
static void up_send(gw_up *u)
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
    if (write_owned((uv_stream_t *)&u->tcp, all, total, NULL, on_up_written) != 0) {
        up_failed(u, 1, "cannot write the request");
        return;
    }
    http_parser_init(&u->parser, HTTP_RESPONSE);
    u->parser.data = u;
    uint32_t t =
        u->kind == UP_SCRAPE ? u->g->cfg.connect_timeout_ms * 2 : u->g->cfg.upstream_timeout_ms;
    uv_timer_start(&u->timer, on_up_timer, t, t);
    if (!u->reused) /* a pooled connection never stopped reading */
        uv_read_start((uv_stream_t *)&u->tcp, rm_uv_alloc, on_up_read);
}

static void on_up_connected(uv_connect_t *cr, int status)
{
    gw_up *u = cr->data;
    if (u->closing)
        return;
    if (status < 0) {
        up_failed(u, 1, uv_strerror(status));
        return;
    }
    u->connected = 1;
    uv_tcp_nodelay(&u->tcp, 1);
    up_send(u);
}

/* ---- the keep-alive pool towards workers ----------------------------------- */

/* An idle connection to host:port, taken out of the pool for q, or NULL. */
static gw_up *idle_take(rm_gateway *g, const char *host, int port, gw_req *q)
{
    for (gw_up *u = g->idle; u; u = u->idle_next) {
        if (u->port != port || strcmp(u->host, host) != 0)
            continue;
        idle_del(u);
        u->req = q;
        u->reused = 1;
        u->status = u->complete = u->retry_asked = 0;
        u->reason[0] = '\0';
        hdr_reset(&u->hdrs);
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
    u->idle_prev = NULL;
    u->idle_next = g->idle;
    if (g->idle)
        g->idle->idle_prev = u;
    g->idle = u;
    g->nidle++;
    __atomic_store_n(&g->c.idle, g->nidle, __ATOMIC_RELAXED);
    uv_timer_start(&u->timer, on_up_timer, IDLE_UPSTREAM_MS, 0);
}

static void up_connect_addr(gw_up *u, const struct sockaddr *addr)
{
    u->connect.data = u;
    int rc = uv_tcp_connect(&u->connect, &u->tcp, addr, on_up_connected);
    if (rc != 0)
        up_failed(u, 1, uv_strerror(rc));
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
        up_failed(u, 1, status < 0 ? uv_strerror(status) : "no address");
    else
        up_connect_addr(u, res->ai_addr);
    uv_freeaddrinfo(res);
}

/* Opens a connection to host:port for a forward or a scrape. */
static gw_up *up_start(rm_gateway *g, up_kind kind, const char *host, int port, gw_req *q)
{
    gw_up *u = rm_xcalloc(1, sizeof *u);
    u->g = g;
    u->kind = kind;
    u->req = q;
    snprintf(u->host, sizeof u->host, "%s", host);
    u->port = port;
    uv_tcp_init(&g->loop, &u->tcp);
    uv_timer_init(&g->loop, &u->timer);
    u->tcp.data = u->timer.data = u;
    u->open_handles = 2;
    LIST_ADD(g->ups, u);
    if (kind == UP_FORWARD)
        COUNT(g, connects);
    uv_timer_start(&u->timer, on_up_timer, g->cfg.connect_timeout_ms, 0);
    struct sockaddr_in sa;
    if (uv_ip4_addr(host, port, &sa) == 0) {
        up_connect_addr(u, (const struct sockaddr *)&sa);
    } else {
        char service[16];
        snprintf(service, sizeof service, "%d", port);
        struct addrinfo hints = {0};
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        u->gai.data = u;
        u->gai_pending = 1;
        if (uv_getaddrinfo(&g->loop, &u->gai, on_resolved, host, service, &hints) != 0) {
            u->gai_pending = 0;
            up_failed(u, 1, "cannot resolve");
        }
    }
    return u;
}

/* ---- routed jobs and scrapes ----------------------------------------------------- */

static void handle_routed(rm_gateway *g, rm_route_job *job)
{
    gw_req *q = job->user;
    q->job_out = 0;
    if (!q->conn) { /* the client left while the router was choosing */
        req_finish(q, 0, 0);
        return;
    }
    if (!job->found) {
        req_fail(q, q->attempts ? 502 : 503,
                 q->attempts ? "the worker failed and no other worker is available"
                             : "no inference worker is available (no healthy node with a worker)",
                 0);
        return;
    }
    q->attempts++;
    q->state = RQ_CONNECTING;
    gw_up *u = idle_take(g, job->worker_host, job->worker_port, q);
    if (u) {
        q->up = u;
        up_send(u);
    } else {
        q->up = up_start(g, UP_FORWARD, job->worker_host, job->worker_port, q);
    }
}

static void scrape_done(gw_up *u)
{
    u->g->scrapes--;
    rm_router_worker_report(u->g->router, &u->report);
}

static void on_scrape_timer(uv_timer_t *t)
{
    rm_gateway *g = t->data;
    if (g->scrapes) /* the last round is still out: skip one */
        return;
    rm_worker_ref *w;
    size_t n = rm_router_workers(g->router, &w);
    for (size_t i = 0; i < n; i++) {
        g->scrapes++;
        gw_up *u = up_start(g, UP_SCRAPE, w[i].host, w[i].port, NULL);
        snprintf(u->report.node_id, sizeof u->report.node_id, "%s", w[i].node_id);
        u->report.reachable = 1; /* until a failure says otherwise */
        u->report.hit_rate = -1;
    }
    free(w);
}

/* Closes idle client connections (draining) or all of them and every
 * worker connection (stopping). */
static void close_connections(rm_gateway *g)
{
    for (gw_conn *c = g->conns, *next; c; c = next) {
        next = c->next;
        if (g->stopping || c->state == CS_IDLE)
            conn_close(c);
    }
    for (gw_up *u = g->stopping ? g->ups : NULL, *next; u; u = next) {
        next = u->next;
        if (u->kind == UP_FORWARD && u->req)
            continue; /* closed with its client connection */
        up_close(u);
    }
}

static void on_wake(uv_async_t *a)
{
    rm_gateway *g = a->data;
    pthread_mutex_lock(&g->mu);
    rm_route_job **jobs = g->ready;
    size_t n = g->nready;
    g->ready = NULL;
    g->nready = g->cap = 0;
    int drain = g->want_drain, stop = g->want_stop;
    pthread_mutex_unlock(&g->mu);
    if ((drain || stop) && !g->draining) {
        g->draining = 1;
        if (g->listening) {
            g->listening = 0;
            uv_close((uv_handle_t *)&g->listener, NULL);
        }
    }
    if (stop && !g->stopping) {
        g->stopping = 1;
        uv_timer_stop(&g->scrape_timer);
        uv_close((uv_handle_t *)&g->scrape_timer, NULL);
    }
    if (g->draining)
        close_connections(g);
    for (size_t i = 0; i < n; i++)
        handle_routed(g, jobs[i]);
    free(jobs);
    if (g->stopping) {
        close_connections(g); /* and whatever the jobs just opened */
        uv_close((uv_handle_t *)&g->wake, NULL);
    }
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static void *gateway_thread(void *arg)
{
    rm_gateway *g = arg;
    uv_run(&g->loop, UV_RUN_DEFAULT);
    return NULL;
}

rm_gateway *rm_gateway_start(const rm_gateway_config *cfg, rm_router *r, int *port, char *err,
                             size_t errlen)
{
    rm_gateway *g = rm_xcalloc(1, sizeof *g);
    g->cfg = *cfg;
    g->router = r;
    pthread_mutex_init(&g->mu, NULL);
    g->req_settings.on_message_begin = on_req_begin;
    g->req_settings.on_url = on_req_url;
    g->req_settings.on_header_field = on_req_field;
    g->req_settings.on_header_value = on_req_value;
    g->req_settings.on_headers_complete = on_req_headers_complete;
    g->req_settings.on_body = on_req_body;
    g->req_settings.on_message_complete = on_req_complete;
    g->resp_settings.on_status = on_up_status;
    g->resp_settings.on_header_field = on_up_field;
    g->resp_settings.on_header_value = on_up_value;
    g->resp_settings.on_headers_complete = on_up_headers_complete;
    g->resp_settings.on_body = on_up_body;
    g->resp_settings.on_message_complete = on_up_complete;
    int p = rm_uv_listen(&g->loop, &g->listener, cfg->listen, 511, on_connection, err, errlen);
    if (p < 0) {
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    g->listener.data = g; /* set once initialised; nothing runs before uv_run */
    g->listening = 1;
    *port = p;
    uv_async_init(&g->loop, &g->wake, on_wake);
    g->wake.data = g;
    uv_timer_init(&g->loop, &g->scrape_timer);
    g->scrape_timer.data = g;
    if (cfg->scrape_interval_ms)
        uv_timer_start(&g->scrape_timer, on_scrape_timer, cfg->scrape_interval_ms,
                       cfg->scrape_interval_ms);
    pthread_create(&g->thread, NULL, gateway_thread, g);
    return g;
}

/* Raises one of the gateway's requests (want_drain, want_stop) from any
 * thread and wakes its loop. */
static void ask(rm_gateway *g, int *want)
{
    pthread_mutex_lock(&g->mu);
    *want = 1;
    pthread_mutex_unlock(&g->mu);
    uv_async_send(&g->wake);
}

void rm_gateway_drain(rm_gateway *g)
{
    if (g)
        ask(g, &g->want_drain);
}

uint64_t rm_gateway_active(rm_gateway *g)
{
    return g ? __atomic_load_n(&g->c.active, __ATOMIC_RELAXED) : 0;
}

char *rm_gateway_metrics(rm_gateway *g, const char *router_id)
{
    rm_sbuf b = {0};
    gw_counters c;
    c.requests = __atomic_load_n(&g->c.requests, __ATOMIC_RELAXED);
    for (int i = 0; i < 6; i++)
        c.by_class[i] = __atomic_load_n(&g->c.by_class[i], __ATOMIC_RELAXED);
    c.retries = __atomic_load_n(&g->c.retries, __ATOMIC_RELAXED);
    c.client_gone = __atomic_load_n(&g->c.client_gone, __ATOMIC_RELAXED);
    c.upstream_failures = __atomic_load_n(&g->c.upstream_failures, __ATOMIC_RELAXED);
    c.active = __atomic_load_n(&g->c.active, __ATOMIC_RELAXED);
    c.connections = __atomic_load_n(&g->c.connections, __ATOMIC_RELAXED);
    c.paused = __atomic_load_n(&g->c.paused, __ATOMIC_RELAXED);
    c.connects = __atomic_load_n(&g->c.connects, __ATOMIC_RELAXED);
    c.idle = __atomic_load_n(&g->c.idle, __ATOMIC_RELAXED);
    rm_sbuf_printf(&b,
                   "# HELP radixmesh_gateway_requests_total HTTP requests the gateway read.\n"
                   "# TYPE radixmesh_gateway_requests_total counter\n"
                   "radixmesh_gateway_requests_total{router=\"%s\"} %" PRIu64 "\n",
                   router_id, c.requests);
    rm_sbuf_printf(&b, "# HELP radixmesh_gateway_responses_total Responses by status class.\n"
                       "# TYPE radixmesh_gateway_responses_total counter\n");
    for (int i = 1; i <= 5; i++)
        rm_sbuf_printf(
            &b, "radixmesh_gateway_responses_total{router=\"%s\",code=\"%dxx\"} %" PRIu64 "\n",
            router_id, i, c.by_class[i]);
    const struct {
        const char *name, *type, *help;
        uint64_t v;
    } rows[] = {
        {"radixmesh_gateway_retries_total", "counter", "Requests retried on another worker.",
         c.retries},
        {"radixmesh_gateway_client_disconnects_total", "counter",
         "Requests whose client left before the end (upstream cancelled).", c.client_gone},
        {"radixmesh_gateway_upstream_failures_total", "counter",
         "Requests that failed at the worker after the retry.", c.upstream_failures},
        {"radixmesh_gateway_backpressure_pauses_total", "counter",
         "Times a slow client paused a worker's stream.", c.paused},
        {"radixmesh_gateway_upstream_connects_total", "counter",
         "New connections to workers (requests reuse kept-alive ones).", c.connects},
        {"radixmesh_gateway_idle_upstream_connections", "gauge",
         "Kept-alive worker connections waiting for a request.", c.idle},
        {"radixmesh_gateway_active_requests", "gauge", "Requests in progress.", c.active},
        {"radixmesh_gateway_connections", "gauge", "Open client connections.", c.connections},
    };
    for (size_t i = 0; i < RM_ARRAY_LEN(rows); i++)
        rm_sbuf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n%s{router=\"%s\"} %" PRIu64 "\n",
                       rows[i].name, rows[i].help, rows[i].name, rows[i].type, rows[i].name,
                       router_id, rows[i].v);
    return b.p;
}

void rm_gateway_stop(rm_gateway *g)
{
    if (!g)
        return;
    ask(g, &g->want_stop);
    pthread_join(g->thread, NULL);
    uv_loop_close(&g->loop);
    pthread_mutex_destroy(&g->mu);
    free(g->ready);
    free(g);
}
