/* gateway_upstream.c -- forwarding a request to its worker: the
 * connection (a new one, or one kept alive from the pool), the request
 * sent, the response streamed back to the client with backpressure, the
 * timeouts towards a worker, what a failure means for the request, and
 * the pool of kept-alive connections. The HTTP exchange itself is
 * gateway_link.c's. Gateway thread only. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_internal.h"
#include "log.h"

#define MAX_UPSTREAM_HEAD (64 * 1024)
#define MAX_IDLE_UPSTREAM 64    /* kept-alive worker connections in all */
#define IDLE_UPSTREAM_MS  15000 /* closed after this long unused */

#define UP_OF(l)          GW_CONTAINER(l, gw_up, link)

static void up_failed(gw_up *u, up_failure f, const char *why);

static void idle_del(gw_up *u)
{
    rm_gateway *g = u->g;
    RM_LIST_DEL(g->idle, u, idle_prev, idle_next);
    u->idle = 0;
    g->nidle--;
    __atomic_store_n(&g->c.idle, g->nidle, __ATOMIC_RELAXED);
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
    gw_link_arm(&u->link, IDLE_UPSTREAM_MS, 0);
}

void gw_up_close(gw_up *u)
{
    if (u->link.closing)
        return;
    LIST_DEL(u->g->ups, u);
    if (u->idle)
        idle_del(u);
    gw_link_close(&u->link);
}

void gw_up_close_unattached(rm_gateway *g)
{
    for (gw_up *u = g->ups, *next; u; u = next) {
        next = u->next;
        if (!u->req) /* one with a request is closed with its client connection */
            gw_up_close(u);
    }
}

/* ---- the link's callbacks ------------------------------------------------------ */

/* Sends the request on u's open connection; the response is read from
 * then on. */
void gw_up_send(gw_up *u)
{
    gw_req *q = u->req;
    gw_req_set_state(q, RM_GW_REQ_WAITING);
    rm_sbuf head = {0};
    rm_sbuf_printf(&head, "%sHost: %s:%d\r\nContent-Length: %zu\r\nConnection: keep-alive\r\n\r\n",
                   q->head, u->link.host, u->link.port, q->body_len);
    /* One buffer the write owns: the request may end before it completes. */
    size_t total = head.len + q->body_len;
    char *all = rm_xmalloc(total);
    memcpy(all, head.p, head.len);
    if (q->body_len)
        memcpy(all + head.len, q->body, q->body_len);
    free(head.p);
    if (gw_link_send(&u->link, all, total) != 0) {
        up_failed(u, UPF_CLOSED, "cannot write the request");
        return;
    }
    /* The bound until the response head: absolute (not reset by interim
     * responses or a head that trickles in). */
    gw_link_arm(&u->link, u->g->cfg.first_byte_timeout_ms, 0);
}

static void up_connected(gw_link *l)
{
    gw_up_send(UP_OF(l));
}

/* The final response head: to the client, unless it is a 5xx that another
 * worker may do better on. */
static int up_head(gw_link *l, http_parser *p)
{
    gw_up *u = UP_OF(l);
    gw_req *q = u->req;
    if (!q)
        return -1;
    if (l->status >= 500 && rm_gw_req_may_retry(q->state, q->attempts)) {
        char why[96]; /* nothing is sent yet: try another worker */
        snprintf(why, sizeof why, "answered %d", l->status);
        up_failed(u, UPF_5XX, why);
        return -1;
    }
    /* The head is in: from now on the bound is the stream's idle time. */
    uint32_t idle = u->g->cfg.upstream_timeout_ms;
    gw_link_arm(l, idle, idle);
    gw_req_set_state(q, RM_GW_REQ_STREAMING);
    gw_count_status(u->g, l->status);
    int has_length = (p->flags & F_CONTENTLENGTH) && !(p->flags & F_CHUNKED);
    int no_body = q->head_only || l->status == 204 || l->status == 304;
    if (!has_length && !no_body && q->http_minor == 0)
        q->keep_alive = 0; /* HTTP/1.0 client: the end of the body is the close */
    q->chunked_out = !has_length && !no_body && q->http_minor >= 1;
    rm_sbuf out = {0};
    rm_sbuf_printf(&out, "HTTP/1.1 %d %s\r\n%sx-radixmesh-node: %s\r\n", l->status,
                   l->reason[0] ? l->reason : "OK", l->hdrs.out.p ? l->hdrs.out.p : "",
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

static int up_body(gw_link *l, const char *at, size_t len)
{
    gw_up *u = UP_OF(l);
    gw_req *q = u->req;
    if (!q || !q->conn)
        return -1;
    if (q->end.text && l->status / 100 == 2)
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
        gw_link_pause(l);
    }
    return 0;
}

void gw_up_resume(gw_up *u)
{
    if (!u->paused)
        return;
    u->paused = 0;
    uint32_t t = u->g->cfg.upstream_timeout_ms;
    gw_link_arm(&u->link, t, t);
    gw_link_resume(&u->link);
}

/* The worker's response has ended; `extra`: bytes came after it that
 * nobody asked for, so the connection can carry no other response. */
static void up_end(gw_link *l, int extra)
{
    gw_up *u = UP_OF(l);
    gw_req *q = u->req;
    rm_gateway *g = u->g;
    if (!q) {
        gw_up_close(u);
        return;
    }
    if (q->chunked_out && q->conn)
        gw_client_write(q->conn, rm_xstrndup("0\r\n\r\n", 5), 5);
    int ok = l->status >= 200 && l->status < 300;
    rm_worker_outcome o = l->status < 500 ? RM_WORKER_ANSWERED : RM_WORKER_NO_VERDICT;
    if (extra)
        rm_log(RM_LOG_WARN, "gateway", "worker %s:%d sent bytes after its response: not reused",
               l->host, l->port);
    if (!extra && http_should_keep_alive(&l->parser) && !u->paused && !g->draining &&
        g->nidle < MAX_IDLE_UPSTREAM) {
        q->up = NULL; /* the connection outlives the request */
        u->req = NULL;
        gw_req_finish(q, ok, o);
        idle_put(u);
        return;
    }
    gw_req_finish(q, ok, o);
}

/* A worker connection that can no longer serve its request: the request
 * goes to another worker or gets 502 (504 after a timeout). */
static void up_failed(gw_up *u, up_failure f, const char *why)
{
    gw_req *q = u->req;
    gw_up_close(u);
    if (!q)
        return;
    q->up = NULL;
    u->req = NULL;
    if (u->reused && f == UPF_CLOSED && q->state == RM_GW_REQ_WAITING && q->conn) {
        /* A kept-alive connection the worker had closed meanwhile: not the
         * worker's failure. The same worker, on a new connection. */
        gw_req_set_state(q, RM_GW_REQ_CONNECTING);
        gw_up_start(u->g, u->link.host, u->link.port, q);
        return;
    }
    static const rm_worker_outcome outcome[] = {
        [UPF_CONNECT] = RM_WORKER_UNREACHABLE, [UPF_CLOSED] = RM_WORKER_FAILED,
        [UPF_PROTOCOL] = RM_WORKER_FAILED,     [UPF_TIMEOUT] = RM_WORKER_FAILED,
        [UPF_5XX] = RM_WORKER_NO_VERDICT,
    };
    char msg[384];
    snprintf(msg, sizeof msg, "worker %s:%d: %s", u->link.host, u->link.port, why);
    gw_req_retry_or_fail(q, f == UPF_TIMEOUT ? 504 : 502, msg, outcome[f]);
}

static void up_link_failed(gw_link *l, up_failure f, const char *why)
{
    up_failed(UP_OF(l), f, why);
}

static void up_timer(gw_link *l)
{
    gw_up *u = UP_OF(l);
    rm_gateway *g = u->g;
    char why[128];
    if (u->idle || !u->req) {
        gw_up_close(u);
    } else if (u->req->state == RM_GW_REQ_CONNECTING) {
        up_failed(u, UPF_CONNECT, "connect timed out");
    } else if (u->req->state == RM_GW_REQ_WAITING) {
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

static void up_freed(gw_link *l)
{
    free(UP_OF(l));
}

static const gw_link_ops up_ops = {up_connected,   up_head,  up_body, up_end,
                                   up_link_failed, up_timer, up_freed};

/* ---- opening, and the keep-alive pool ------------------------------------------ */

void gw_up_start(rm_gateway *g, const char *host, int port, gw_req *q)
{
    gw_up *u = rm_xcalloc(1, sizeof *u);
    u->g = g;
    u->req = q;
    q->up = u;
    gw_link_init(&u->link, &g->loop, &up_ops, host, port, MAX_UPSTREAM_HEAD);
    LIST_ADD(g->ups, u);
    COUNT(g, connects);
    gw_link_arm(&u->link, g->cfg.connect_timeout_ms, 0);
    gw_link_connect(&u->link);
}

gw_up *gw_up_idle_take(rm_gateway *g, const char *host, int port, gw_req *q)
{
    for (gw_up *u = g->idle, *next; u; u = next) {
        next = u->idle_next;
        if (u->link.port != port || strcmp(u->link.host, host) != 0)
            continue;
        if (gw_link_has_unread(&u->link)) {
            gw_up_close(u);
            continue;
        }
        idle_del(u);
        u->req = q;
        u->reused = 1;
        return u;
    }
    return NULL;
}
