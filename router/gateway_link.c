#include "gateway_link.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "gateway_internal.h"
#include "http.h"

static void on_link_handle_closed(uv_handle_t *h);

/* Tells the owner once libuv has let go of every handle and the name
 * lookup, if one is out. */
static void link_maybe_freed(gw_link *l)
{
    if (l->open_handles || l->gai_pending)
        return;
    rm_http_head_reset(&l->hdrs);
    l->ops->freed(l);
}

static void on_link_handle_closed(uv_handle_t *h)
{
    gw_link *l = h->data;
    l->open_handles--;
    link_maybe_freed(l);
}

static void on_link_timer(uv_timer_t *t)
{
    gw_link *l = t->data;
    l->ops->timer(l);
}

void gw_link_init(gw_link *l, uv_loop_t *loop, const gw_link_ops *ops, const char *host, int port,
                  size_t max_head)
{
    l->loop = loop;
    l->ops = ops;
    snprintf(l->host, sizeof l->host, "%s", host);
    l->port = port;
    l->max_head = max_head;
    gw_handles_init(loop, &l->tcp, &l->timer, l);
    l->open_handles = 2;
}

void gw_link_close(gw_link *l)
{
    if (l->closing)
        return;
    l->closing = 1;
    gw_handles_close(&l->tcp, &l->timer, on_link_handle_closed);
}

void gw_link_arm(gw_link *l, uint64_t timeout_ms, uint64_t repeat_ms)
{
    uv_timer_start(&l->timer, on_link_timer, timeout_ms, repeat_ms);
}

/* ---- the response ------------------------------------------------------------ */

static int on_link_status(http_parser *p, const char *at, size_t len)
{
    gw_link *l = p->data;
    size_t have = strlen(l->reason);
    if (have + len < sizeof l->reason) {
        memcpy(l->reason + have, at, len);
        l->reason[have + len] = '\0';
    }
    return 0;
}

static int on_link_field(http_parser *p, const char *at, size_t len)
{
    gw_link *l = p->data;
    rm_http_head_field(&l->hdrs, at, len);
    return l->hdrs.bytes > l->max_head;
}

static int on_link_value(http_parser *p, const char *at, size_t len)
{
    gw_link *l = p->data;
    rm_http_head_value(&l->hdrs, at, len);
    return l->hdrs.bytes > l->max_head;
}

static int on_link_headers_complete(http_parser *p)
{
    gw_link *l = p->data;
    rm_http_head_end(&l->hdrs);
    if (p->status_code / 100 == 1) {
        if (p->status_code == 101) { /* nobody asked it to switch protocols */
            l->ops->failed(l, UPF_PROTOCOL, "answered 101 Switching Protocols unasked");
            return -1;
        }
        /* An interim response (100 Continue, 103 Early Hints): not the
         * answer, which follows on this connection. http-parser ends the
         * message here and parses the next one. */
        l->interim = 1;
        rm_http_head_reset(&l->hdrs);
        l->reason[0] = '\0';
        return 1;
    }
    l->status = p->status_code;
    return l->ops->head ? l->ops->head(l, p) : 0;
}

static int on_link_body(http_parser *p, const char *at, size_t len)
{
    gw_link *l = p->data;
    return l->ops->body(l, at, len);
}

static int on_link_complete(http_parser *p)
{
    gw_link *l = p->data;
    if (l->interim) {
        l->interim = 0; /* the final response is still to come */
        return 0;
    }
    l->complete = 1;
    /* Whether anything followed is known once the parser returns. */
    http_parser_pause(p, 1);
    return 0;
}

/* In http_parser_settings' order: message begin, url, status, header
 * field, header value, headers complete, body, message complete. */
static const http_parser_settings resp_settings = {NULL,           NULL,
                                                   on_link_status, on_link_field,
                                                   on_link_value,  on_link_headers_complete,
                                                   on_link_body,   on_link_complete,
                                                   NULL,           NULL};

static void on_link_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    gw_link *l = s->data;
    if (l->closing) {
        free(buf->base);
        return;
    }
    if (!l->exchange) {
        /* Anything between exchanges (the worker's close, or bytes nobody
         * asked for) ends the link: it no longer carries a response we
         * wait for. */
        free(buf->base);
        l->ops->failed(l, UPF_CLOSED, "read between responses");
        return;
    }
    if (nread > 0 || nread == UV_EOF) {
        uv_timer_again(&l->timer); /* a repeating (idle) timer restarts; else a no-op */
        size_t len = nread > 0 ? (size_t)nread : 0;
        size_t done = http_parser_execute(&l->parser, &resp_settings, buf->base, len);
        enum http_errno e = HTTP_PARSER_ERRNO(&l->parser);
        if (l->closing) {
            /* finished (or cancelled) inside a callback */
        } else if (l->complete) {
            /* A stray CRLF after a body is old practice, and harmless. */
            size_t i = done;
            while (i < len && (buf->base[i] == '\r' || buf->base[i] == '\n'))
                i++;
            l->exchange = 0;
            l->ops->end(l, i < len);
        } else if (e != HPE_OK || done != len) {
            l->ops->failed(l, UPF_PROTOCOL, http_errno_description(e));
        } else if (nread == UV_EOF) {
            l->ops->failed(l, UPF_CLOSED, "closed the connection before the response ended");
        }
    } else if (nread < 0) {
        l->ops->failed(l, UPF_CLOSED, uv_strerror((int)nread));
    }
    free(buf->base);
}

/* ---- connecting and sending --------------------------------------------------- */

static void on_link_written(uv_write_t *w, int status)
{
    gw_write *wr = (gw_write *)w;
    (void)status; /* a failed write shows up as a read error */
    free(wr->buf);
    free(wr);
}

int gw_link_send(gw_link *l, char *buf, size_t len)
{
    if (gw_write_owned((uv_stream_t *)&l->tcp, buf, len, NULL, on_link_written) != 0)
        return -1;
    /* A new exchange: nothing of the last response's stays. */
    l->exchange = 1;
    l->status = l->complete = l->interim = 0;
    l->reason[0] = '\0';
    rm_http_head_reset(&l->hdrs);
    http_parser_init(&l->parser, HTTP_RESPONSE);
    l->parser.data = l;
    gw_link_resume(l);
    return 0;
}

void gw_link_pause(gw_link *l)
{
    if (l->reading) {
        uv_read_stop((uv_stream_t *)&l->tcp);
        l->reading = 0;
    }
    uv_timer_stop(&l->timer);
}

void gw_link_resume(gw_link *l)
{
    if (!l->reading && uv_read_start((uv_stream_t *)&l->tcp, rm_uv_alloc, on_link_read) == 0)
        l->reading = 1;
}

static void on_link_connected(uv_connect_t *cr, int status)
{
    gw_link *l = cr->data;
    if (l->closing)
        return;
    if (status < 0) {
        l->ops->failed(l, UPF_CONNECT, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&l->tcp, 1);
    l->ops->connected(l);
}

static void link_connect_addr(gw_link *l, const struct sockaddr *addr)
{
    l->connect.data = l;
    int rc = uv_tcp_connect(&l->connect, &l->tcp, addr, on_link_connected);
    if (rc != 0)
        l->ops->failed(l, UPF_CONNECT, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    gw_link *l = req->data;
    l->gai_pending = 0;
    if (l->closing) {
        uv_freeaddrinfo(res);
        link_maybe_freed(l);
        return;
    }
    if (status < 0 || !res)
        l->ops->failed(l, UPF_CONNECT, status < 0 ? uv_strerror(status) : "no address");
    else
        link_connect_addr(l, res->ai_addr);
    uv_freeaddrinfo(res);
}

void gw_link_connect(gw_link *l)
{
    struct sockaddr_in sa;
    if (uv_ip4_addr(l->host, l->port, &sa) == 0) {
        link_connect_addr(l, (const struct sockaddr *)&sa);
        return;
    }
    char service[16];
    snprintf(service, sizeof service, "%d", l->port);
    struct addrinfo hints = {0};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    l->gai.data = l;
    l->gai_pending = 1;
    if (uv_getaddrinfo(l->loop, &l->gai, on_resolved, l->host, service, &hints) != 0) {
        l->gai_pending = 0;
        l->ops->failed(l, UPF_CONNECT, "cannot resolve");
    }
}

int gw_link_has_unread(gw_link *l)
{
    uv_os_fd_t fd;
    char b;
    if (uv_fileno((uv_handle_t *)&l->tcp, &fd) != 0)
        return 1;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}
