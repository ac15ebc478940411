/* gateway_client.c -- the gateway's client connections: accepting them
 * (and refusing past the cap), reading and parsing requests one at a time,
 * flow control (a client whose replies queue up is not read), the budget
 * of buffered request bytes, and the gateway's own answers. A request read
 * whole goes to gateway_request.c. Gateway thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bearer.h"
#include "gateway_internal.h"
#include "http.h"
#include "http_conn.h"
#include "openai.h"

#define CLIENT_OUT_BOUND (64u << 10) /* stop reading a client whose replies queue beyond this */
#define PENDING_BOUND    (64u << 10) /* pipelined bytes read ahead of the request in progress */
#define LINGER_MS                                                                                  \
    2000                 /* after a closing reply, the client's bytes are read and                 \
                            dropped this long, so its close does not reset the reply */
#define MAX_OVER_CAP  32 /* refused connections lingering at once (fds within the fixed budget) */
#define RETRY_AFTER_S 1  /* in every 503 of the gateway's own */

static void conn_pump(gw_conn *c);
static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- the budget of buffered request bytes -------------------------------------- */

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

void gw_budget_give(rm_gateway *g, size_t n)
{
    g->buffered -= n;
    __atomic_store_n(&g->c.buffered, g->buffered, __ATOMIC_RELAXED);
}

/* ---- writing to the client -------------------------------------------------- */

/* A client whose replies queue up is not read (nor its pipelined requests
 * parsed) until they drain: replies to requests it never reads would
 * otherwise grow without bound. */
static int out_full(gw_conn *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > CLIENT_OUT_BOUND;
}

static void on_client_written(uv_write_t *w, int status)
{
    gw_write *wr = (gw_write *)w;
    gw_conn *c = wr->arg;
    free(wr->buf);
    free(wr);
    if (status < 0) {
        gw_conn_close(c);
        return;
    }
    if (c->closing)
        return;
    /* Backpressure: a slow client stops the worker's stream until its
     * queue has drained; the worker's idle timer stops with it. */
    gw_req *q = c->req;
    if (q && q->up && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WRITE_LOW_WATER)
        gw_up_resume(q->up);
    conn_pump(c);
}

void gw_client_write(gw_conn *c, char *buf, size_t len)
{
    if (c->closing)
        free(buf);
    else if (gw_write_owned((uv_stream_t *)&c->tcp, buf, len, c, on_client_written) != 0)
        gw_conn_close(c);
}

static void on_conn_timer(uv_timer_t *t);

static void on_shutdown(uv_shutdown_t *s, int status)
{
    gw_conn *c = s->data;
    if (c->closing)
        return;
    if (status < 0 || c->over_cap == 2) {
        gw_conn_close(c);
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
void gw_client_finish_and_close(gw_conn *c)
{
    if (c->closing || c->state == CS_CLOSING)
        return;
    c->state = CS_CLOSING; /* read nothing more but the client's close */
    uv_timer_stop(&c->timer);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        gw_conn_close(c);
        return;
    }
    conn_reading(c);
}

void gw_count_status(rm_gateway *g, int status)
{
    int cls = status / 100;
    __atomic_fetch_add(&g->c.by_class[cls >= 1 && cls <= 5 ? cls : 0], 1, __ATOMIC_RELAXED);
}

/* An answer of the gateway's own: an OpenAI-style error document (to a
 * HEAD request the head alone, RFC 9110 9.3.2: a body would be read as the
 * next response). Every 503 says when to come back. */
void gw_send_error(gw_conn *c, int status, const char *type, const char *msg, int keep)
{
    char *body = rm_openai_error(msg, type, NULL);
    size_t bl = strlen(body);
    char extra[64] = "";
    if (status == 503)
        snprintf(extra, sizeof extra, "Retry-After: %d\r\n", RETRY_AFTER_S);
    else if (status == 401)
        snprintf(extra, sizeof extra, "%s", RM_HTTP_BEARER_CHALLENGE);
    rm_sbuf out = {0};
    rm_http_head_out(&out, status, "application/json", bl, extra, keep);
    if (!c->rq.head_request)
        rm_sbuf_append(&out, body, bl);
    free(body);
    gw_count_status(c->g, status);
    gw_client_write(c, out.p, out.len);
    if (!keep)
        gw_client_finish_and_close(c);
}

/* ---- client connections ---------------------------------------------------- */

static void on_conn_handle_closed(uv_handle_t *h)
{
    gw_conn *c = h->data;
    if (--c->open_handles)
        return;
    rm_gateway *g = c->g;
    UNCOUNT(g, connections);
    g->nconns--;
    if (c->over_cap == 1)
        g->over_cap--;
    rm_http_req_reset(&c->rq);
    gw_budget_give(c->g, c->body_len + c->npending);
    free(c->body);
    free(c->pending);
    free(c);
    rm_hconn_release(&g->accept_held, (uv_stream_t *)&g->listener);
}

void gw_conn_close(gw_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    gw_req *q = c->req;
    if (q) {
        c->req = NULL;
        gw_req_client_gone(q);
    }
    LIST_DEL(c->g->conns, c);
    gw_handles_close(&c->tcp, &c->timer, on_conn_handle_closed);
}

/* Drops the request being read (its body's bytes go back to the budget). */
static void reset_request(gw_conn *c)
{
    rm_http_req_reset(&c->rq);
    gw_budget_give(c->g, c->body_len);
    free(c->body);
    c->body = NULL;
    c->body_len = c->body_cap = 0;
}

static void on_conn_timer(uv_timer_t *t)
{
    gw_conn *c = t->data;
    if (c->state == CS_READING) {
        reset_request(c); /* its bytes back to the budget now, not after the linger */
        gw_send_error(c, 408, "invalid_request_error", "the request did not arrive in time", 0);
    } else if (c->state == CS_IDLE || c->state == CS_CLOSING)
        gw_conn_close(c);
}

static int on_req_begin(http_parser *p)
{
    gw_conn *c = rm_http_req_owner(p);
    reset_request(c);
    c->state = CS_READING;
    uv_timer_start(&c->timer, on_conn_timer, c->g->cfg.client_timeout_ms, 0);
    return 0;
}

static int on_req_headers_complete(http_parser *p)
{
    gw_conn *c = rm_http_req_owner(p);
    rm_gateway *g = c->g;
    int v = rm_http_req_headers_complete(p);
    if (v < 0)
        return -1;
    /* Refused at once rather than after the body has come. */
    if ((p->flags & F_CONTENTLENGTH) &&
        g->buffered + p->content_length > g->cfg.max_buffered_bytes) {
        c->rq.refuse = 503;
        return -1;
    }
    if (v == RM_HTTP_REQ_CONTINUE)
        gw_client_write(c, rm_xstrndup(RM_HTTP_CONTINUE, RM_HTTP_CONTINUE_LEN),
                        RM_HTTP_CONTINUE_LEN);
    return 0;
}

static int on_req_body(http_parser *p, const char *at, size_t len)
{
    gw_conn *c = rm_http_req_owner(p);
    if (rm_http_req_body(p, c->body_len, len) != 0)
        return 1;
    if (budget_take(c->g, len) != 0) {
        c->rq.refuse = 503;
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

static int on_req_complete(http_parser *p)
{
    gw_conn *c = rm_http_req_owner(p);
    /* One request at a time: what follows (pipelined) waits in pending. */
    http_parser_pause(p, 1);
    c->state = CS_BUSY;
    uv_timer_stop(&c->timer);
    rm_gateway *g = c->g;
    COUNT(g, requests);
    if (g->cfg.auth_token && !rm_bearer_in_headers(g->cfg.auth_token, c->rq.head.out.p)) {
        int keep = http_should_keep_alive(p) && !g->draining;
        reset_request(c); /* an unauthenticated body holds no budget */
        gw_send_error(c, 401, "authentication_error", "missing or invalid bearer token", keep);
        if (keep)
            gw_conn_next(c);
        return 0;
    }
    gw_req_start(c);
    return 0;
}

static const http_parser_settings req_settings =
    RM_HTTP_REQ_SETTINGS(on_req_begin, on_req_headers_complete, on_req_body, on_req_complete);

/* The answer to a request the parser refused; the connection closes. */
static void reject_request(gw_conn *c, enum http_errno e)
{
    rm_gateway *g = c->g;
    int status = rm_http_req_refusal(&c->rq, e);
    reset_request(c); /* its bytes are of no more use */
    switch (status) {
    case 431:
        gw_send_error(c, 431, "invalid_request_error",
                      "the request head is too large (--gateway-max-header-bytes)", 0);
        break;
    case 413:
        gw_send_error(c, 413, "invalid_request_error",
                      "the request body exceeds --gateway-max-body-bytes", 0);
        break;
    case 417:
        gw_send_error(c, 417, "invalid_request_error", "only Expect: 100-continue is understood",
                      0);
        break;
    case 501:
        gw_send_error(c, 501, "invalid_request_error",
                      "Transfer-Encoding: only chunked is supported (send the body as it is)", 0);
        break;
    case 503:
        COUNT(g, over_budget);
        gw_send_error(
            c, 503, "server_error",
            "the gateway holds --gateway-max-buffered-bytes of request bodies; retry later", 0);
        break;
    default: {
        char msg[160];
        snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(e));
        gw_send_error(c, 400, "invalid_request_error", msg, 0);
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
    size_t done = http_parser_execute(&c->parser, &req_settings, data, len);
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
        gw_budget_give(c->g, n);
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
        gw_conn_close(c); /* the client went away: cancels its request */
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
void gw_conn_next(gw_conn *c)
{
    if (c->closing || c->state == CS_CLOSING)
        return;
    if (c->g->draining) {
        gw_client_finish_and_close(c);
        return;
    }
    c->state = CS_IDLE;
    c->rq.head_request = 0;
    uv_timer_start(&c->timer, on_conn_timer, c->g->cfg.client_timeout_ms, 0);
    conn_pump(c);
}

void gw_on_connection(uv_stream_t *server, int status)
{
    rm_gateway *g = server->data;
    if (status < 0)
        return;
    /* Every descriptor the fd budget gives client connections in use,
     * refused ones lingering included: gRPC's accept would meet EMFILE
     * next (fdbudget.h). */
    if (rm_hconn_hold(&g->accept_held, g->nconns, g->cfg.max_connections, MAX_OVER_CAP))
        return;
    gw_conn *c = rm_xcalloc(1, sizeof *c);
    c->g = g;
    gw_handles_init(&g->loop, &c->tcp, &c->timer, c);
    c->open_handles = 2;
    LIST_ADD(g->conns, c);
    g->nconns++;
    COUNT(g, connections);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        gw_conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = &c->rq;
    c->rq.owner = c;
    /* No URL bound of its own: it counts toward the head's. */
    c->rq.lim = (rm_http_req_limits){0, g->cfg.max_header_bytes, g->cfg.max_body_bytes};
    c->state = CS_IDLE;
    if (g->nconns > g->cfg.max_connections) {
        /* A reply, not a reset: the client learns why and when to retry.
         * Each lingering reply holds a descriptor the fd budget does not
         * give the gateway's connections, so past MAX_OVER_CAP of them a
         * storm's connections close as soon as their reply is written. */
        COUNT(g, over_cap);
        c->over_cap = g->over_cap < MAX_OVER_CAP ? 1 : 2;
        g->over_cap += c->over_cap == 1;
        gw_send_error(c, 503, "server_error",
                      "the gateway has --gateway-max-connections connections open; retry later", 0);
        return;
    }
    uv_timer_start(&c->timer, on_conn_timer, g->cfg.client_timeout_ms, 0);
    conn_reading(c);
}

void gw_close_clients(rm_gateway *g, int all)
{
    for (gw_conn *c = g->conns, *next; c; c = next) {
        next = c->next;
        if (all || c->state == CS_IDLE)
            gw_conn_close(c);
    }
}
