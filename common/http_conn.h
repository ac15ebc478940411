/* http_conn.h -- the libuv plumbing of one server-side HTTP/1.1
 * connection, shared by the daemons' --http server (http.c) and the
 * worker's server (worker/server.c): the TCP handle and its timer, reads
 * handed to the owner, writes of owned buffers, a close that waits for
 * both handles, and a graceful finish (shut down once the queued replies
 * are sent, then close -- or first linger, reading and dropping what the
 * client still sends, so its unread bytes do not reset the reply away).
 *
 * The owner embeds rm_hconn as the first member of its connection (the
 * callbacks' rm_hconn * is then its connection) and keeps parsing, what
 * to answer, and its caps and counters. Loop thread only. */
#ifndef RM_HTTP_CONN_H
#define RM_HTTP_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "util.h"

typedef struct rm_hconn rm_hconn;

typedef struct rm_hconn_ops {
    /* Bytes the client sent (not called once finishing or closing). */
    void (*data)(rm_hconn *c, const char *buf, size_t len);
    /* A write completed and the connection is neither closing nor
     * finishing (a failed write closes it). */
    void (*written)(rm_hconn *c);
    /* The timer set with rm_hconn_arm ran out. */
    void (*timeout)(rm_hconn *c);
    /* The connection starts to close, however that came (NULL: nothing
     * to do): what it was doing for the client is dropped now. */
    void (*closing)(rm_hconn *c);
    /* Both handles are closed: the owner frees its connection. */
    void (*closed)(rm_hconn *c);
} rm_hconn_ops;

struct rm_hconn {
    /* The owner's: its callbacks, and after a finish's shutdown how long
     * to read and drop what the client sends before closing (0: close at
     * once). */
    const rm_hconn_ops *ops;
    uint64_t linger_ms;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    int open_handles;
    int reading;
    int finishing; /* the last reply is queued: closing once it is sent */
    int closing;
};

/* Initialises c's handles on loop and accepts server's next connection
 * into it. Returns 0, or -1 if the accept failed (c is closing then:
 * ops->closed follows). */
int rm_hconn_accept(rm_hconn *c, uv_loop_t *loop, uv_stream_t *server, const rm_hconn_ops *ops);

/* 1 once the connection is closing or finishing (its last reply
 * queued): nothing more is read from it or answered on it. */
int rm_hconn_ending(const rm_hconn *c);

/* Bytes queued for the client and not written yet. */
size_t rm_hconn_queued(rm_hconn *c);

/* (Re)starts the timer: ops->timeout after ms. */
void rm_hconn_arm(rm_hconn *c, uint64_t ms);

/* Starts or stops reading the client (nothing once closing). */
void rm_hconn_reading(rm_hconn *c, int on);

/* Queues len bytes of buf (malloc'd; taken) for the client; dropped once
 * closing. A write that cannot start closes the connection. */
void rm_hconn_write(rm_hconn *c, char *buf, size_t len);

/* A whole response, head and body (none with head_only), written to c:
 * extra holds further header lines ("Name: value\r\n" each, or NULL). */
void rm_hconn_respond(rm_hconn *c, int status, const char *type, const char *body, size_t len,
                      const char *extra, int keep_alive, int head_only);

/* Closes now (what is queued is dropped); ops->closed follows. */
void rm_hconn_close(rm_hconn *c);

/* Stops reading and closes once what is queued is sent, then after the
 * linger; bounded by timeout_ms (the timer's ops->timeout decides, and
 * should close a finishing connection). */
void rm_hconn_finish(rm_hconn *c, uint64_t timeout_ms);

/* Connections past a server's cap still being refused (a 503, then the
 * finish and its linger) at most, for --http and the worker: the accept
 * is held beyond. */
#define RM_HCONN_MAX_REFUSING 64

/* The accept hold, for a listener's connection callback: returns 1 when
 * open (the server's connections, closing ones included) has reached cap
 * + refusing (the refused connections it lets linger) -- the caller then
 * returns without accepting and *held is set. libuv accepts in a loop until the backlog is empty,
 * and closes complete a loop turn later: accepting on would hold
 * descriptors past the budget (fdbudget.h), and once the process runs out
 * libuv resets what waits. Left unaccepted, libuv stops reading the
 * listener and the connection waits for rm_hconn_release. */
int rm_hconn_hold(int *held, uint64_t open, uint64_t cap, uint64_t refusing);

/* For the owner's close callback, once its count has dropped: a held
 * connection is taken now (the listener's connection callback runs
 * again), unless the listener is closing. */
void rm_hconn_release(int *held, uv_stream_t *listener);

/* The head of an HTTP/1.1 response, appended to b: the status line,
 * Content-Type, Content-Length, extra (header lines, or NULL), and
 * Connection. */
void rm_http_head_out(rm_sbuf *b, int status, const char *type, size_t len, const char *extra,
                      int keep_alive);

#endif
