/* server_internal.h -- what the worker server's files share (server.h is
 * the contract; this is its inside).
 *
 *   server.c            connections (on http_conn.h's core), reading and
 *                       parsing requests, the endpoints but completions,
 *                       listening, signals and the drain
 *   server_completion.c POST /v1/completions: the job handed to the
 *                       inference thread, its answer whole or as a stream
 *
 * Everything here is owned by the loop thread (server.h). */
#ifndef RM_WORKER_SERVER_INTERNAL_H
#define RM_WORKER_SERVER_INTERNAL_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "api.h"
#include "bytetok.h"
#include "http_conn.h"
#include "http_head.h"
#include "infer.h"
#include "server.h"
#include "util.h"

#define MAX_URL 2047 /* URL bytes; past it 414 */

typedef struct ws_srv ws_srv;

typedef struct ws_conn {
    rm_hconn h; /* first: the core's callbacks hand it back as the ws_conn */
    ws_srv *s;
    http_parser parser;
    rm_http_req rq; /* URL and head; rq.refuse: a status decided while reading the request */
    rm_sbuf body;
    int in_message; /* between a request's first byte and its end */
    int complete;   /* a request was read whole by the last parse */
    int keep;       /* keep the connection after this request */
    int chunked;    /* the stream is sent with chunked framing */
    /* The request in progress (NULL: none) and its stream. */
    rm_job *job;
    int streaming, with_ids, include_usage, final_sent;
    size_t sent;
    rm_bytetok_text text;
    char id[40];
    long long created;
    /* Bytes read but not parsed yet (pipelined, or read during a job):
     * pending[pstart, npending). */
    char *pending;
    size_t pstart, npending;
    struct ws_conn *prev, *next;
} ws_conn;

struct ws_srv {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake;
    uv_poll_t signals; /* readable: SIGTERM/SIGINT pending (signals.h) */
    int signal_fd;
    uv_timer_t drain_timer;
    rm_wserver_config cfg;
    const rm_api_model *model;
    rm_infer *in;
    ws_conn *conns;
    uint64_t nconns; /* closing ones included: each holds a descriptor */
    /* A connection left unaccepted in libuv while nconns is at the cap
     * plus the refusing (rm_hconn_hold); taken once one has closed. */
    int accept_held;
    size_t njobs; /* submitted and not freed yet */
    int draining, handles_closed;
    uint64_t next_id;
    /* Loop thread only (/metrics runs there too). */
    uint64_t refused_conns, timeouts, refused_full, refused_bad;
    uint64_t cache_log_ms, cache_log_skipped; /* cache failures: a line a second */
};

/* ---- server.c ------------------------------------------------------------------- */

/* Sends buf (malloc'd; taken). */
void ws_send_buf(ws_conn *c, char *buf, size_t len);
/* A whole response: head (extra: further header lines, or NULL) and body. */
void ws_respond(ws_conn *c, int status, const char *type, const char *body, size_t len,
                const char *extra, int head_only);
/* An OpenAI-style error document (extra as ws_respond's). */
void ws_respond_error(ws_conn *c, const rm_api_error *e, const char *extra);
/* The request is answered: the next one, or the end of the connection. */
void ws_request_done(ws_conn *c);
/* Closes now; a request in progress is cancelled. */
void ws_close_conn(ws_conn *c);
/* Parses what the client sent ahead, answering each request read whole in
 * turn, until a request is in progress or nothing is left. */
void ws_pump(ws_conn *c);
/* A job whose connection is gone: the owner's share of the hand-off. */
void ws_job_release(ws_srv *s, rm_job *j);
/* While draining: closes what is done, then the loop's own handles. */
void ws_drain_step(ws_srv *s);

/* ---- server_completion.c -------------------------------------------------------- */

/* POST /v1/completions, its body read whole: answered at once when bad or
 * refused, else queued for the engine (c->job) and answered as it runs. */
void ws_completion(ws_conn *c);
/* The inference thread's wake-up (rm_infer_start's notify, with the
 * loop's async handle) and its handler on the loop: the jobs' news. */
void ws_notify(void *arg);
void ws_on_wake(uv_async_t *a);

#endif
