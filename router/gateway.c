#include "gateway.h"

#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <uv.h>

#include "bearer.h"
#include "flags.h"
#include "http.h"
#include "http_head.h"
#include "list.h"
#include "log.h"
#include "openai.h"
#include "util.h"
#include "worker_metrics.h"

#define MAX_UPSTREAM_HEAD (64 * 1024)
#define MAX_SCRAPE_BYTES  (8u << 20)
#define WRITE_HIGH_WATER  (4u << 20) /* stop reading the worker above this */
#define WRITE_LOW_WATER   (1u << 20)
#define CLIENT_OUT_BOUND  (64u << 10) /* stop reading a client whose replies queue beyond this */
#define PENDING_BOUND     (64u << 10) /* pipelined bytes read ahead of the request in progress */
#define PARSE_INLINE_MAX  (64u << 10) /* larger bodies are parsed on libuv's threadpool */
#define LINGER_MS                                                                                  \
    2000                     /* after a closing reply, the client's bytes are read and             \
                                dropped this long, so its close does not reset the reply */
#define MAX_OVER_CAP      32 /* refused connections lingering at once (fds within the fixed budget) */
#define MAX_IDLE_UPSTREAM 64         /* kept-alive worker connections in all */
#define IDLE_UPSTREAM_MS  15000      /* closed after this long unused */
#define MAX_REPLY_BYTES   (4u << 20) /* generated text (or one response document) read */
#define RETRY_AFTER_S     1          /* in every 503 of the gateway's own */

void rm_gateway_config_defaults(rm_gateway_config *c)
{
    memset(c, 0, sizeof *c);
    c->listen = "127.0.0.1:0";
    c->max_body_bytes = 16u << 20;
    c->max_header_bytes = 64u << 10;
    c->connect_timeout_ms = 2000;
    /* A long prompt's prefill (128k tokens at a few thousand tokens/s,
     * behind a queue) stays well inside this, and so does a non-streamed
     * completion of a few thousand tokens (its head comes when it is done);
     * a wedged worker costs each request two minutes, not five. */
    c->first_byte_timeout_ms = 120000;
    c->upstream_timeout_ms = 300000;
    c->client_timeout_ms = 60000;
    c->scrape_interval_ms = 1000;
    c->max_prompt_tokens = 1u << 20;
    c->max_connections = 4096;
    c->max_buffered_bytes = 256u << 20;
}

/* CS_CLOSING: a closing reply is queued; what the client still sends is
 * read and dropped until it closes or LINGER_MS pass. */
typedef enum { CS_IDLE, CS_READING, CS_BUSY, CS_CLOSING } conn_state;
typedef enum { RQ_PARSING, RQ_ROUTING, RQ_CONNECTING, RQ_WAITING, RQ_STREAMING } req_state;
typedef enum { UP_FORWARD, UP_SCRAPE } up_kind;

/* How a worker connection failed its request. */
typedef enum {
    UPF_CONNECT,  /* no connection (refused, unresolvable, connect timeout) */
    UPF_CLOSED,   /* closed or reset before the response ended */
    UPF_PROTOCOL, /* not HTTP, a head too large, an unasked protocol switch */
    UPF_TIMEOUT,  /* no response head in time, or silence mid-stream */
    UPF_5XX       /* answered 5xx before any byte reached the client */
} up_failure;

typedef struct gw_conn gw_conn;
typedef struct gw_req gw_req;
typedef struct gw_up gw_up;

/* Counters are written on the gateway thread and read by the router's
 * metrics publisher: relaxed atomics. */
typedef struct gw_counters {
    uint64_t requests, by_class[6], retries, client_gone, upstream_failures, active, connections;
    uint64_t paused, connects, idle, timeouts, over_budget, over_cap, offloaded, scrape_skips;
    uint64_t buffered;
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
    uint32_t nconns, over_cap;
    gw_conn *conns;  /* open client connections */
    gw_up *ups;      /* open worker connections */
    gw_up *idle;     /* kept-alive worker connections, newest first */
    gw_up *scraping; /* scrapes in progress (at most one per worker) */
    uint32_t nidle;
    size_t buffered; /* request bytes held, against cfg.max_buffered_bytes */
    /* Large bodies waiting for the threadpool, one parse at a time: its
     * JSON document takes ~20x the body (a 16 MiB token array ~270 MB). */
    gw_req *parse_head, *parse_tail;
    int parse_running;
    gw_counters c;
};

struct gw_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    int open_handles, closing, reading, in_parser;
    int over_cap; /* 1: refused at the cap and lingering; 2: refused, closed once written */
    rm_gateway *g;
    http_parser parser;
    conn_state state;
    /* The request being read. */
    rm_sbuf url;
    rm_http_head hdrs;
    char *body; /* body_len bytes charged to g->buffered */
    size_t body_len, body_cap;
    int reject;    /* 413 / 431 / 501 / 503 decided while parsing */
    char *pending; /* bytes after a complete request, charged to g->buffered */
    size_t npending;
    gw_req *req;          /* in progress */
    gw_conn *prev, *next; /* g->conns while open */
};

/* A prompt's parse: the inputs are the request's body, read-only while
 * it is out on the threadpool; the outputs are written there. */
typedef struct gw_parse {
    uv_work_t work;
    rm_openai_kind kind;
    int rc;
    char *ns;
    uint32_t *tokens;
    size_t ntokens;
    char err[256];
} gw_parse;

struct gw_req {
    rm_gateway *g;
    gw_conn *conn;     /* NULL once the client has gone */
    rm_route_job *job; /* ours unless job_out */
    int job_out;
    int parsing;        /* queued for, or out on, the threadpool (see gw_parse) */
    gw_req *parse_next; /* g->parse_head queue */
    req_state state;
    int keep_alive, head_only, http_minor;
    char *head; /* request line + forwarded headers, without Host & framing */
    char *body; /* body_len bytes charged to g->buffered */
    size_t body_len;
    int attempts;
    gw_up *up;
    int sent_head, chunked_out;
    gw_parse parse;
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
    rm_http_head hdrs;
    char reason[64];
    int status; /* of the final response, once its head is in; 0 before */
    int connected, complete, retry_asked, paused, interim, switched;
    int reused;                   /* taken from the idle pool for this request */
    int idle;                     /* in g->idle, waiting for the next request to its worker */
    gw_up *prev, *next;           /* g->ups while open */
    gw_up *idle_prev, *idle_next; /* g->idle while idle */
    gw_up *sc_prev, *sc_next;     /* g->scraping while a scrape */
};

static void conn_close(gw_conn *c);
static void conn_next(gw_conn *c);
static void conn_pump(gw_conn *c);
static void up_close(gw_up *u);
static void route(gw_req *q);
static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_up_timer(uv_timer_t *t);
static void up_failed(gw_up *u, up_failure f, const char *why);
static void idle_put(gw_up *u);
static void up_start(rm_gateway *g, const char *host, int port, gw_req *q);
static void req_finish(gw_req *q, int ok, rm_worker_outcome outcome);

/* ---- small helpers ---------------------------------------------------------- */

/* Doubly linked lists through the link fields named prev and next. */
#define LIST_ADD(head, x) RM_LIST_ADD(head, x, prev, next)
#define LIST_DEL(head, x) RM_LIST_DEL(head, x, prev, next)

static const char *reason_of(int status)
{
    return rm_http_reason(status);
}

/* The budget of buffered request bytes (gateway thread). A body that would
 * pass it is refused; pipelined read-ahead is charged without a check (it
 * is bounded per connection by PENDING_BOUND and one read). */
static int budget_take(rm_gateway *g, size_t n)
{
    if (g->buffered + n > g->cfg.max_buffered_bytes)
        return -1;
    g->buffered += n;
    __atomic_store_n(&g->c.buffered, g->buffered, __ATOMIC_RELAXED);
    return 0;
}

static void budget_charge(rm_gateway *g, size_t n)
{
    g->buffered += n;
    __atomic_store_n(&g->c.buffered, g->buffered, __ATOMIC_RELAXED);
}

static void budget_give(rm_gateway *g, size_t n)
{
    g->buffered -= n;
    __atomic_store_n(&g->c.buffered, g->buffered, __ATOMIC_RELAXED);
}

/* ---- writing to the client -------------------------------------------------- */

typedef struct write_req {
    uv_write_t req;
    gw_conn *conn;
    char *buf;
} write_req;

/* A client whose replies queue up is not read (nor its pipelined requests
 * parsed) until they drain: replies to requests it never reads would
 * otherwise grow without bound. */
static int out_full(gw_conn *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > CLIENT_OUT_BOUND;
}

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
    if (c->closing)
        return;
    /* Backpressure: a slow client stops the worker's stream until its
     * queue has drained; the worker's idle timer stops with it. */
    gw_req *q = c->req;
    if (q && q->up && q->up->paused &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WRITE_LOW_WATER) {
        gw_up *u = q->up;
        u->paused = 0;
        uint32_t t = c->g->cfg.upstream_timeout_ms;
        uv_timer_start(&u->timer, on_up_timer, t, t);
        uv_read_start((uv_stream_t *)&u->tcp, rm_uv_alloc, on_up_read);
    }
    conn_pump(c);
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

static void on_conn_timer(uv_timer_t *t);

static void on_shutdown(uv_shutdown_t *s, int status)
{
    gw_conn *c = s->data;
    if (c->closing)
        return;
    if (status < 0 || c->over_cap == 2) {
        conn_close(c);
        return;
    }
    /* Everything is written: linger a little for the client's own close.
     * Closing now, with its unread bytes (the rest of a refused body, the
     * request the connection cap refused) in our buffer, would reset the
     * connection, and a reset can discard the reply before it is read. */
    uv_timer_start(&c->timer, on_conn_timer, LINGER_MS, 0);
}

static void conn_reading(gw_conn *c);

/* Closes the client connection once everything queued is written. */
static void client_finish_and_close(gw_conn *c)
{
    if (c->closing || c->state == CS_CLOSING)
        return;
    c->state = CS_CLOSING; /* read nothing more but the client's close */
    uv_timer_stop(&c->timer);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    conn_reading(c);
}

static void count_status(rm_gateway *g, int status)
{
    int cls = status / 100;
    __atomic_fetch_add(&g->c.by_class[cls >= 1 && cls <= 5 ? cls : 0], 1, __ATOMIC_RELAXED);
}

/* An answer of the gateway's own: an OpenAI-style error document. Every
 * 503 says when to come back. */
static void send_error(gw_conn *c, int status, const char *type, const char *msg, int keep)
{
    char *body = rm_openai_error(msg, type, NULL);
    size_t bl = strlen(body);
    rm_sbuf out = {0};
    rm_sbuf_printf(&out,
                   "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n",
                   status, reason_of(status), bl);
    if (status == 503)
        rm_sbuf_printf(&out, "Retry-After: %d\r\n", RETRY_AFTER_S);
    if (status == 401)
        rm_sbuf_printf(&out, "WWW-Authenticate: Bearer realm=\"radixmesh\"\r\n");
    rm_sbuf_printf(&out, "Connection: %s\r\n\r\n%s", keep ? "keep-alive" : "close", body);
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
    if (c->over_cap == 1)
        c->g->over_cap--;
    free(c->url.p);
    rm_http_head_reset(&c->hdrs);
    budget_give(c->g, c->body_len + c->npending);
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
    rm_gateway *g = q->g;
    free(q->head);
    budget_give(g, q->body_len);
    free(q->body);
    free(q->parse.ns);
    free(q->parse.tokens);
    rm_openai_reply_free(&q->reply);
    free(q);
    UNCOUNT(g, active);
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
        /* A request out on the router thread or the threadpool is freed
         * when it comes back. */
        if (!q->job_out && !q->parsing) {
            req_detach_up(q);
            req_finish(q, 0, RM_WORKER_NO_VERDICT);
        }
    }
    LIST_DEL(c->g->conns, c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

/* Drops the request being read (its body's bytes go back to the budget). */
static void reset_request(gw_conn *c)
{
    free(c->url.p);
    memset(&c->url, 0, sizeof c->url);
    rm_http_head_reset(&c->hdrs);
    budget_give(c->g, c->body_len);
    free(c->body);
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    c->reject = 0;
}

static void on_conn_timer(uv_timer_t *t)
{
    gw_conn *c = t->data;
    if (c->state == CS_READING) {
        reset_request(c); /* its bytes back to the budget now, not after the linger */
        send_error(c, 408, "invalid_request_error", "the request did not arrive in time", 0);
    } else if (c->state == CS_IDLE || c->state == CS_CLOSING)
        conn_close(c);
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
    rm_http_head_field(&c->hdrs, at, len);
    return over_header_limit(c);
}

static int on_req_value(http_parser *p, const char *at, size_t len)
{
    gw_conn *c = p->data;
    rm_http_head_value(&c->hdrs, at, len);
    return over_header_limit(c);
}

static int on_req_headers_complete(http_parser *p)
{
    gw_conn *c = p->data;
    rm_gateway *g = c->g;
    rm_http_head_end(&c->hdrs);
    if (c->hdrs.te_other) {
        c->reject = 501;
        return -1;
    }
    if (p->flags & F_CONTENTLENGTH) {
        if (p->content_length > g->cfg.max_body_bytes) {
            c->reject = 413;
            return -1;
        }
        /* Refused at once rather than after the body has come. */
        if (g->buffered + p->content_length > g->cfg.max_buffered_bytes) {
            c->reject = 503;
            return -1;
        }
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
    if (budget_take(c->g, len) != 0) {
        c->reject = 503;
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

/* The answer to a request the parser refused; the connection closes. */
static void reject_request(gw_conn *c, enum http_errno e)
{
    rm_gateway *g = c->g;
    int status = c->reject;
    if (e == HPE_HEADER_OVERFLOW) /* http-parser's own bound, 80 KiB */
        status = 431;
    reset_request(c); /* its bytes are of no more use */
    switch (status) {
    case 431:
        send_error(c, 431, "invalid_request_error",
                   "the request head is too large (--gateway-max-header-bytes)", 0);
        break;
    case 413:
        send_error(c, 413, "invalid_request_error",
                   "the request body exceeds --gateway-max-body-bytes", 0);
        break;
    case 501:
        send_error(c, 501, "invalid_request_error",
                   "Transfer-Encoding: only chunked is supported (send the body as it is)", 0);
        break;
    case 503:
        COUNT(g, over_budget);
        send_error(c, 503, "server_error",
                   "the gateway holds --gateway-max-buffered-bytes of request bodies; retry later",
                   0);
        break;
    default: {
        char msg[160];
        snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(e));
        send_error(c, 400, "invalid_request_error", msg, 0);
    }
    }
}

/* Keeps bytes read ahead of the request in progress. */
static void pending_add(gw_conn *c, const char *data, size_t n)
{
    c->pending = rm_xrealloc(c->pending, c->npending + n);
    memcpy(c->pending + c->npending, data, n);
    c->npending += n;
    budget_charge(c->g, n);
}

/* Feeds client bytes to the parser; keeps what a paused parser left. */
static void conn_feed(gw_conn *c, const char *data, size_t len)
{
    http_parser_pause(&c->parser, 0);
    c->in_parser = 1;
    size_t done = http_parser_execute(&c->parser, &c->g->req_settings, data, len);
    c->in_parser = 0;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->closing || c->state == CS_CLOSING)
        return;
    if (e == HPE_PAUSED) {
        if (done < len)
            pending_add(c, data + done, len - done);
        return;
    }
    if (e != HPE_OK)
        reject_request(c, e);
}

/* Starts or stops reading the client: it is read while its replies do not
 * queue up and what it pipelined ahead is small; a closing connection is
 * read (and its bytes dropped) to see its close. */
static void conn_reading(gw_conn *c)
{
    if (c->closing)
        return;
    int want = c->state == CS_CLOSING || (!out_full(c) && c->npending < PENDING_BOUND);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, rm_uv_alloc, on_client_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* Parses what the client sent ahead, one request at a time, while no
 * request is in progress and its replies do not queue up; then decides
 * whether to read more. Not from inside the parser (the loop that called
 * it goes on). */
static void conn_pump(gw_conn *c)
{
    while (!c->closing && !c->in_parser && c->npending && !out_full(c) &&
           (c->state == CS_IDLE || c->state == CS_READING)) {
        char *data = c->pending;
        size_t n = c->npending;
        c->pending = NULL;
        c->npending = 0;
        budget_give(c->g, n);
        conn_feed(c, data, n);
        free(data);
    }
    if (!c->in_parser)
        conn_reading(c);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    gw_conn *c = s->data;
    if (nread < 0) {
        conn_close(c); /* the client went away: cancels its request */
    } else if (nread > 0 && c->state != CS_CLOSING) {
        if (c->state == CS_BUSY || c->npending || out_full(c))
            pending_add(c, buf->base, (size_t)nread); /* waits its turn */
        else
            conn_feed(c, buf->base, (size_t)nread);
        conn_pump(c);
    }
    free(buf->base);
}

/* The previous request is answered: on to the next one (pipelined bytes
 * first), or close. */
static void conn_next(gw_conn *c)
{
    if (c->closing || c->state == CS_CLOSING)
        return;
    if (c->g->draining) {
        client_finish_and_close(c);
        return;
    }
    c->state = CS_IDLE;
    uv_timer_start(&c->timer, on_conn_timer, c->g->cfg.client_timeout_ms, 0);
    conn_pump(c);
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
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->state = CS_IDLE;
    if (g->nconns > g->cfg.max_connections) {
        /* A reply, not a reset: the client learns why and when to retry.
         * Each lingering reply holds a descriptor the fd budget does not
         * give the gateway's connections, so past MAX_OVER_CAP of them a
         * storm's connections close as soon as their reply is written. */
        COUNT(g, over_cap);
        c->over_cap = g->over_cap < MAX_OVER_CAP ? 1 : 2;
        g->over_cap += c->over_cap == 1;
        send_error(c, 503, "server_error",
                   "the gateway has --gateway-max-connections connections open; retry later", 0);
        return;
    }
    uv_timer_start(&c->timer, on_conn_timer, g->cfg.client_timeout_ms, 0);
    conn_reading(c);
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

/* Parses the prompt of q's body into q->parse. Runs on the gateway thread
 * for small bodies, on the threadpool for large ones: it reads q->body and
 * writes q->parse, nothing else. */
static void parse_prompt(gw_req *q)
{
    gw_parse *pp = &q->parse;
    pp->rc =
        rm_openai_prompt(q->body ? q->body : "", q->body_len, pp->kind, q->g->cfg.max_prompt_tokens,
                         &pp->ns, &pp->tokens, &pp->ntokens, &q->end, pp->err, sizeof pp->err);
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
        req_free(q);
        send_error(c, 400, "invalid_request_error", err, keep);
        if (keep)
            conn_next(c);
        return;
    }
    rm_openai_reply_init(&q->reply, pp->kind, MAX_REPLY_BYTES);
    q->job = new_job(q, pp->ns, pp->tokens, pp->ntokens, 0);
    pp->ns = NULL;
    pp->tokens = NULL;
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
        g->parse_head = q->parse_next;
        if (!g->parse_head)
            g->parse_tail = NULL;
        if (!q->conn) { /* the client left while it waited */
            req_free(q);
            continue;
        }
        q->parse.work.data = q;
        if (uv_queue_work(&g->loop, &q->parse.work, parse_work, parse_after) == 0) {
            g->parse_running = 1;
            return;
        }
        q->parsing = 0; /* cannot happen with a valid loop; parse here then */
        parse_prompt(q);
        prompt_parsed(q);
    }
}

static void parse_after(uv_work_t *w, int status)
{
    gw_req *q = w->data;
    rm_gateway *g = q->g;
    (void)status; /* never cancelled */
    q->parsing = 0;
    g->parse_running = 0;
    if (!q->conn) /* the client left meanwhile */
        req_free(q);
    else
        prompt_parsed(q);
    parse_dispatch(g);
}

static void start_request(gw_conn *c)
{
    rm_gateway *g = c->g;
    http_parser *p = &c->parser;
    COUNT(g, requests);
    if (g->cfg.auth_token && !rm_bearer_in_headers(g->cfg.auth_token, c->hdrs.out.p)) {
        int keep = http_should_keep_alive(p) && !g->draining;
        reset_request(c); /* an unauthenticated body holds no budget */
        send_error(c, 401, "authentication_error", "missing or invalid bearer token", keep);
        if (keep)
            conn_next(c);
        return;
    }
    COUNT(g, active);
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
    q->body = c->body; /* its budget charge moves with it */
    q->body_len = c->body_len;
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    c->req = q;
    char path[512];
    snprintf(path, sizeof path, "%s", c->url.p ? c->url.p : "/");
    path[strcspn(path, "?")] = '\0';
    int chat = !strcmp(path, "/v1/chat/completions");
    if (p->method == HTTP_POST && (chat || !strcmp(path, "/v1/completions"))) {
        q->parse.kind = chat ? RM_OPENAI_CHAT : RM_OPENAI_COMPLETIONS;
        if (q->body_len > PARSE_INLINE_MAX) {
            /* A 16 MiB token array takes most of a second to parse: off
             * the loop, or every other connection waits for it. */
            COUNT(g, offloaded);
            q->state = RQ_PARSING;
            q->parsing = 1;
            if (g->parse_tail)
                g->parse_tail->parse_next = q;
            else
                g->parse_head = q;
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
    q->state = RQ_ROUTING;
    q->job->done = on_routed;
    q->job_out = 1;
    if (rm_router_route_async(q->g->router, q->job) != 0) {
        q->job_out = 0;
        q->keep_alive = 0;
        req_fail(q, 503, "the router is shutting down", RM_WORKER_NO_VERDICT);
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
 * in-flight charge, recording the prompt -- and reply -- when ok, and
 * telling the worker's breaker the outcome) and frees it; the client
 * connection, if any, moves on. */
static void req_finish(gw_req *q, int ok, rm_worker_outcome outcome)
{
    rm_gateway *g = q->g;
    gw_conn *c = q->conn;
    req_detach_up(q);
    if (q->job && ok)
        extend_with_reply(q);
    if (q->job)
        rm_router_route_done(g->router, q->job, ok, outcome);
    q->job = NULL;
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
static void req_fail(gw_req *q, int status, const char *msg, rm_worker_outcome outcome)
{
    gw_conn *c = q->conn;
    COUNT(q->g, upstream_failures);
    if (c && !q->sent_head) {
        int keep = q->keep_alive;
        q->conn = NULL; /* answered here; req_finish must not move the connection on */
        c->req = NULL;
        req_finish(q, 0, outcome);
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
        req_finish(q, 0, outcome);
    }
}

/* The worker failed before anything reached the client: once more on
 * another node, or an error. */
static void retry_or_fail(gw_req *q, int status, const char *msg, rm_worker_outcome outcome)
{
    if (q->attempts >= 2 || q->sent_head || !q->conn) {
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

/* ---- upstream connections ------------------------------------------------------- */

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

static void scrape_done(gw_up *u);

static void idle_del(gw_up *u)
{
    rm_gateway *g = u->g;
    RM_LIST_DEL(g->idle, u, idle_prev, idle_next);
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

/* A worker connection that can no longer serve its request: the request
 * goes to another worker or gets 502 (504 after a timeout). */
static void up_failed(gw_up *u, up_failure f, const char *why)
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
    if (u->reused && f == UPF_CLOSED && u->status == 0 && !q->sent_head && q->conn) {
        /* A kept-alive connection the worker had closed meanwhile: not the
         * worker's failure. The same worker, on a new connection. */
        up_start(u->g, u->host, u->port, q);
        return;
    }
    static const rm_worker_outcome outcome[] = {
        [UPF_CONNECT] = RM_WORKER_UNREACHABLE, [UPF_CLOSED] = RM_WORKER_FAILED,
        [UPF_PROTOCOL] = RM_WORKER_FAILED,     [UPF_TIMEOUT] = RM_WORKER_FAILED,
        [UPF_5XX] = RM_WORKER_NO_VERDICT,
    };
    char msg[384];
    snprintf(msg, sizeof msg, "worker %s:%d: %s", u->host, u->port, why);
    retry_or_fail(q, f == UPF_TIMEOUT ? 504 : 502, msg, outcome[f]);
}

static void on_up_timer(uv_timer_t *t)
{
    gw_up *u = t->data;
    rm_gateway *g = u->g;
    char why[128];
    if (u->idle) {
        up_close(u);
    } else if (u->kind == UP_SCRAPE) {
        /* The scrape's deadline, from its start: a worker that answers a
         * byte at a time does not hold it open. Its head, if it came, says
         * the worker is there. */
        rm_log(RM_LOG_DEBUG, "gateway", "scrape of %s:%d: no whole page within %u ms", u->host,
               u->port, g->cfg.connect_timeout_ms * 2);
        u->report.reachable = u->status != 0;
        up_close(u);
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
    count_status(u->g, u->status);
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
        up_close(u);
        return 0;
    }
    /* Whether anything followed is known once the parser returns. */
    http_parser_pause(p, 1);
    return 0;
}

/* The worker's response has ended; `extra`: bytes came after it that
 * nobody asked for, so the connection can carry no other response. */
static void up_response_end(gw_up *u, int extra)
{
    gw_req *q = u->req;
    rm_gateway *g = u->g;
    if (!q) {
        up_close(u);
        return;
    }
    if (q->chunked_out && q->conn)
        client_write(q->conn, rm_xstrndup("0\r\n\r\n", 5), 5);
    int ok = u->status >= 200 && u->status < 300;
    rm_worker_outcome o = u->status < 500 ? RM_WORKER_ANSWERED : RM_WORKER_NO_VERDICT;
    if (extra)
        rm_log(RM_LOG_WARN, "gateway", "worker %s:%d sent bytes after its response: not reused",
               u->host, u->port);
    if (!extra && http_should_keep_alive(&u->parser) && !u->paused && !g->draining &&
        g->nidle < MAX_IDLE_UPSTREAM) {
        q->up = NULL; /* the connection outlives the request */
        u->req = NULL;
        req_finish(q, ok, o);
        idle_put(u);
        return;
    }
    req_finish(q, ok, o);
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    gw_up *u = s->data;
    if (u->closing || u->idle) {
        /* Anything from an idle worker connection (its close, or bytes
         * nobody asked for) ends it: it no longer carries a response we
         * wait for. */
        if (!u->closing)
            up_close(u);
        free(buf->base);
        return;
    }
    if (nread > 0 || nread == UV_EOF) {
        uv_timer_again(&u->timer); /* the idle timer, once streaming; else a no-op */
        size_t len = nread > 0 ? (size_t)nread : 0;
        size_t done = http_parser_execute(&u->parser, &u->g->resp_settings, buf->base, len);
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
    up_send(u);
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
static gw_up *idle_take(rm_gateway *g, const char *host, int port, gw_req *q)
{
    for (gw_up *u = g->idle, *next; u; u = next) {
        next = u->idle_next;
        if (u->port != port || strcmp(u->host, host) != 0)
            continue;
        if (up_has_unread(u)) {
            up_close(u);
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
 * is sent before up_open. */
static gw_up *up_new(rm_gateway *g, up_kind kind, const char *host, int port, gw_req *q)
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
static void up_open(gw_up *u)
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
static void up_start(rm_gateway *g, const char *host, int port, gw_req *q)
{
    up_open(up_new(g, UP_FORWARD, host, port, q));
}

/* ---- routed jobs and scrapes ----------------------------------------------------- */

static void handle_routed(rm_gateway *g, rm_route_job *job)
{
    gw_req *q = job->user;
    q->job_out = 0;
    if (!q->conn) { /* the client left while the router was choosing */
        req_finish(q, 0, RM_WORKER_NO_VERDICT);
        return;
    }
    if (!job->found) {
        req_fail(q, q->attempts ? 502 : 503,
                 q->attempts ? "the worker failed and no other worker is available" : job->why,
                 RM_WORKER_NO_VERDICT);
        return;
    }
    q->attempts++;
    q->state = RQ_CONNECTING;
    gw_up *u = idle_take(g, job->worker_host, job->worker_port, q);
    if (u) {
        q->up = u;
        up_send(u);
    } else {
        up_start(g, job->worker_host, job->worker_port, q);
    }
}

static void scrape_done(gw_up *u)
{
    rm_gateway *g = u->g;
    RM_LIST_DEL(g->scraping, u, sc_prev, sc_next);
    rm_router_worker_report(g->router, &u->report);
}

/* 1 while a scrape of this worker is still out. */
static int scrape_out(rm_gateway *g, const rm_worker_ref *w)
{
    for (gw_up *u = g->scraping; u; u = u->sc_next)
        if (!strcmp(u->report.node_id, w->node_id))
            return 1;
    return 0;
}

/* A round of scrapes: every worker whose last scrape is done. One that
 * answers slowly is skipped alone until its own deadline ends that
 * scrape. */
static void on_scrape_timer(uv_timer_t *t)
{
    rm_gateway *g = t->data;
    rm_worker_ref *w;
    size_t n = rm_router_workers(g->router, &w);
    for (size_t i = 0; i < n; i++) {
        if (scrape_out(g, &w[i])) {
            COUNT(g, scrape_skips);
            continue;
        }
        gw_up *u = up_new(g, UP_SCRAPE, w[i].host, w[i].port, NULL);
        snprintf(u->report.node_id, sizeof u->report.node_id, "%s", w[i].node_id);
        u->report.reachable = 1; /* until a failure says otherwise */
        u->report.hit_rate = -1;
        RM_LIST_ADD(g->scraping, u, sc_prev, sc_next);
        up_open(u);
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
    c.timeouts = __atomic_load_n(&g->c.timeouts, __ATOMIC_RELAXED);
    c.over_budget = __atomic_load_n(&g->c.over_budget, __ATOMIC_RELAXED);
    c.over_cap = __atomic_load_n(&g->c.over_cap, __ATOMIC_RELAXED);
    c.offloaded = __atomic_load_n(&g->c.offloaded, __ATOMIC_RELAXED);
    c.scrape_skips = __atomic_load_n(&g->c.scrape_skips, __ATOMIC_RELAXED);
    c.buffered = __atomic_load_n(&g->c.buffered, __ATOMIC_RELAXED);
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
        {"radixmesh_gateway_upstream_timeouts_total", "counter",
         "Worker requests that timed out (no response head in time, or silence mid-stream).",
         c.timeouts},
        {"radixmesh_gateway_over_budget_total", "counter",
         "Requests refused (503) because --gateway-max-buffered-bytes was held.", c.over_budget},
        {"radixmesh_gateway_over_connection_cap_total", "counter",
         "Connections refused (503) at --gateway-max-connections.", c.over_cap},
        {"radixmesh_gateway_offloaded_parses_total", "counter",
         "Large request bodies parsed off the gateway's loop.", c.offloaded},
        {"radixmesh_gateway_scrapes_skipped_total", "counter",
         "Scrapes skipped because that worker's previous one was still out.", c.scrape_skips},
        {"radixmesh_gateway_buffered_request_bytes", "gauge",
         "Request bytes held (bodies, pipelined read-ahead).", c.buffered},
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
