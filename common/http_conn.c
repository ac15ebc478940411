#include "http_conn.h"

#include <stdlib.h>

#include "http.h"

typedef struct write_req {
    uv_write_t req;
    char *buf;
} write_req;

static void on_closed(uv_handle_t *h)
{
    rm_hconn *c = h->data;
    if (--c->open_handles)
        return;
    c->ops->closed(c);
}

void rm_hconn_close(rm_hconn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->ops->closing)
        c->ops->closing(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

int rm_hconn_hold(int *held, uint64_t open, uint64_t cap, uint64_t refusing)
{
    if (open < cap + refusing)
        return 0;
    *held = 1;
    return 1;
}

void rm_hconn_release(int *held, uv_stream_t *listener)
{
    if (!*held || uv_is_closing((uv_handle_t *)listener))
        return;
    *held = 0;
    listener->connection_cb(listener, 0);
}

int rm_hconn_accept(rm_hconn *c, uv_loop_t *loop, uv_stream_t *server, const rm_hconn_ops *ops)
{
    c->ops = ops;
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        rm_hconn_close(c);
        return -1;
    }
    return 0;
}

int rm_hconn_ending(const rm_hconn *c)
{
    return c->closing || c->finishing;
}

size_t rm_hconn_queued(rm_hconn *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
}

static void on_timer(uv_timer_t *t)
{
    rm_hconn *c = t->data;
    c->ops->timeout(c);
}

void rm_hconn_arm(rm_hconn *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    rm_hconn *c = s->data;
    if (nread < 0)
        rm_hconn_close(c); /* gone, or done lingering */
    else if (nread > 0 && !rm_hconn_ending(c))
        c->ops->data(c, buf->base, (size_t)nread);
    free(buf->base);
}

void rm_hconn_reading(rm_hconn *c, int on)
{
    if (c->closing || c->reading == on)
        return;
    c->reading = on;
    if (on)
        uv_read_start((uv_stream_t *)&c->tcp, rm_uv_alloc, on_read);
    else
        uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_written(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    rm_hconn *c = req->handle->data;
    free(w->buf);
    free(w);
    if (status < 0) {
        rm_hconn_close(c);
        return;
    }
    if (rm_hconn_ending(c))
        return;
    c->ops->written(c);
}

void rm_hconn_write(rm_hconn *c, char *buf, size_t len)
{
    if (c->closing || !len) {
        free(buf);
        return;
    }
    write_req *w = rm_xmalloc(sizeof *w);
    w->buf = buf;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(buf);
        free(w);
        rm_hconn_close(c);
    }
}

void rm_http_head_out(rm_sbuf *b, int status, const char *type, size_t len, const char *extra,
                      int keep_alive)
{
    rm_sbuf_printf(b,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: "
                   "%s\r\n\r\n",
                   status, rm_http_reason(status), type, len, extra ? extra : "",
                   keep_alive ? "keep-alive" : "close");
}

void rm_hconn_respond(rm_hconn *c, int status, const char *type, const char *body, size_t len,
                      const char *extra, int keep_alive, int head_only)
{
    rm_sbuf b = {0};
    rm_http_head_out(&b, status, type, len, extra, keep_alive);
    if (!head_only)
        rm_sbuf_append(&b, body, len);
    rm_hconn_write(c, b.p, b.len);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    rm_hconn *c = req->data;
    if (status < 0 || c->closing || !c->linger_ms) {
        rm_hconn_close(c);
        return;
    }
    /* Everything is sent: drop what the client still sends, a while. */
    rm_hconn_arm(c, c->linger_ms);
    rm_hconn_reading(c, 1);
}

void rm_hconn_finish(rm_hconn *c, uint64_t timeout_ms)
{
    if (rm_hconn_ending(c))
        return;
    c->finishing = 1;
    rm_hconn_reading(c, 0);
    rm_hconn_arm(c, timeout_ms);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        rm_hconn_close(c);
}
