/* gateway_link.h -- one HTTP/1.1 client connection from the gateway to a
 * worker: resolving its host, connecting, writing a request, and reading
 * the response: the head assembled (bounded), interim 1xx responses
 * skipped, an unasked 101 refused, bytes that follow a complete response
 * noticed. What a response means is its owner's: a forward
 * (gateway_upstream.c) streams it to a client, a scrape
 * (gateway_scrape.c) reads a /metrics page. The owner embeds the link and
 * is called back through gw_link_ops; it owns the link's timer.
 *
 * Lifetime: gw_link_close ends the link at once (no callback after it but
 * freed); freed comes once libuv has let go of every handle and of any
 * name lookup, and the owner frees its memory there. Gateway thread
 * only. */
#ifndef RM_GATEWAY_LINK_H
#define RM_GATEWAY_LINK_H

#include <http_parser.h>
#include <stddef.h>
#include <uv.h>

#include "http_head.h"

/* How a worker connection failed. The link reports the first three; its
 * owner decides the others. */
typedef enum {
    UPF_CONNECT,  /* no connection (refused, unresolvable, connect timeout) */
    UPF_CLOSED,   /* closed or reset before the response ended */
    UPF_PROTOCOL, /* not HTTP, a head too large, an unasked protocol switch */
    UPF_TIMEOUT,  /* no response head in time, or silence mid-stream */
    UPF_5XX       /* answered 5xx before any byte reached the client */
} up_failure;

typedef struct gw_link gw_link;

/* Each runs on the gateway thread, from the link's callbacks. A callback
 * may close the link (gw_link_close); the link then reads no further.
 * Owners fill it in this order (one short line, positional). */
typedef struct gw_link_ops {
    /* The connection is open: send the request (gw_link_send). */
    void (*connected)(gw_link *l);
    /* The final response's head is in (l->status, l->reason, l->hdrs; p
     * for its framing). 0: read its body; 1: no body follows (a HEAD);
     * -1: read no further (the owner has closed or failed the link).
     * NULL: always 0. */
    int (*head)(gw_link *l, http_parser *p);
    /* A piece of the body. 0, or -1 to stop: the link then fails with
     * UPF_PROTOCOL. */
    int (*body)(gw_link *l, const char *at, size_t len);
    /* The response is complete. extra: bytes nobody asked for came after
     * it, so the connection can carry no other response. */
    void (*end)(gw_link *l, int extra);
    /* The connection failed (UPF_CONNECT, UPF_CLOSED, UPF_PROTOCOL; why
     * says how): the owner closes it. Also for anything read between
     * exchanges (a kept-alive connection the worker closed). */
    void (*failed)(gw_link *l, up_failure f, const char *why);
    /* The timer the owner armed (gw_link_arm) went off. */
    void (*timer)(gw_link *l);
    /* Nothing refers to the link any more: free the owner. */
    void (*freed)(gw_link *l);
} gw_link_ops;

struct gw_link {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect;
    uv_getaddrinfo_t gai;
    uv_loop_t *loop;
    const gw_link_ops *ops;
    char host[256];
    int port;
    int open_handles, gai_pending, closing, reading;
    int exchange; /* a request sent and its response not yet complete */
    size_t max_head;
    /* The response being read. */
    http_parser parser;
    rm_http_head hdrs;
    char reason[64];
    int status; /* of the final response, once its head is in; 0 before */
    int complete, interim;
};

/* A link to host:port on loop; nothing happens before gw_link_connect.
 * Response heads larger than max_head bytes fail it (UPF_PROTOCOL). */
void gw_link_init(gw_link *l, uv_loop_t *loop, const gw_link_ops *ops, const char *host, int port,
                  size_t max_head);

/* Resolves and connects; ops->connected or ops->failed follows, maybe
 * before this returns (the caller then touches the link no more). */
void gw_link_connect(gw_link *l);

/* Writes len bytes of buf (taken) as a request on the open connection and
 * reads its response. Returns 0, or -1 if the write cannot start (buf
 * freed; nothing else happened). */
int gw_link_send(gw_link *l, char *buf, size_t len);

/* Arms the owner's timer (uv_timer_start semantics); any read restarts a
 * repeating one. gw_link_pause stops it. */
void gw_link_arm(gw_link *l, uint64_t timeout_ms, uint64_t repeat_ms);

/* Stops reading the worker (and the timer); gw_link_resume reads again. */
void gw_link_pause(gw_link *l);
void gw_link_resume(gw_link *l);

/* 1 if bytes (or the worker's close) wait unread on a link between
 * exchanges: they arrived after its last response and before this loop
 * turn read them, and must not be taken for the next response. */
int gw_link_has_unread(gw_link *l);

/* Closes the link (no-op when closing); ops->freed follows. */
void gw_link_close(gw_link *l);

#endif
