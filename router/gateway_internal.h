/* gateway_internal.h -- what the gateway's files share (router/gateway.h
 * is the contract; this is its inside).
 *
 *   gateway.c          lifecycle: start, wake-ups from other threads,
 *                      drain/stop, the /metrics text
 *   gateway_client.c   client connections: accept and the cap, reading and
 *                      parsing requests, flow control, the body budget,
 *                      the gateway's own answers (errors)
 *   gateway_request.c  one request: its prompt's parse (offloaded when
 *                      large), the routing hand-off, retries, finish/fail
 *   gateway_upstream.c forwarding to a worker: the response streamed back
 *                      (backpressure), timeouts, the keep-alive pool
 *   gateway_scrape.c   workers' /metrics, read every scrape interval
 *   gateway_tokenize.c a text prompt's token ids from a worker's /tokenize
 *                      (--gateway-tokenize worker)
 *   gateway_link.c     one HTTP exchange with a worker, for both of those
 *                      (gateway_link.h)
 *   gateway_state.c    a request's states and allowed moves (pure,
 *                      gateway_state.h)
 *
 * Everything here is owned by the gateway thread, except what struct
 * rm_gateway marks as shared (under mu), the counters (atomics), and a
 * request's body and parse results while it is PARSING on the threadpool
 * (gw_parse). */
#ifndef RM_GATEWAY_INTERNAL_H
#define RM_GATEWAY_INTERNAL_H

#include <http_parser.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "gateway.h"
#include "gateway_link.h"
#include "gateway_state.h"
#include "http_head.h"
#include "list.h"
#include "openai.h"
#include "util.h"

#define WRITE_HIGH_WATER (4u << 20) /* stop reading the worker above this */
#define WRITE_LOW_WATER  (1u << 20) /* and read it again below this */

/* CS_CLOSING: a closing reply is queued; what the client still sends is
 * read and dropped until it closes or LINGER_MS pass. */
typedef enum { CS_IDLE, CS_READING, CS_BUSY, CS_CLOSING } conn_state;
typedef struct gw_conn gw_conn;
typedef struct gw_req gw_req;
typedef struct gw_up gw_up;
typedef struct gw_scrape gw_scrape;
typedef struct gw_tok gw_tok;

/* Counters are written on the gateway thread and read by the router's
 * metrics publisher: relaxed atomics. */
typedef struct gw_counters {
    uint64_t requests, by_class[6], retries, client_gone, upstream_failures, active, connections;
    uint64_t paused, connects, idle, timeouts, over_budget, over_cap, offloaded, scrape_skips;
    uint64_t buffered, tokenized, tokenize_fallbacks, tokenize_us;
} gw_counters;

/* Counting on the gateway thread, for readers on any thread. */
#define COUNT(g, field)   __atomic_fetch_add(&(g)->c.field, 1, __ATOMIC_RELAXED)
#define UNCOUNT(g, field) __atomic_fetch_sub(&(g)->c.field, 1, __ATOMIC_RELAXED)

/* The struct of type that holds ptr as its member. */
#define GW_CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Doubly linked lists through the link fields named prev and next. */
#define LIST_ADD(head, x) RM_LIST_ADD(head, x, prev, next)
#define LIST_DEL(head, x) RM_LIST_DEL(head, x, prev, next)

struct rm_gateway {
    rm_gateway_config cfg;
    rm_router *router;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake;
    uv_timer_t scrape_timer;
    pthread_t thread;
    /* Routed jobs back from the router thread, and requests to drain or
     * stop: shared with other threads under mu. */
    pthread_mutex_t mu;
    rm_route_job **ready;
    size_t nready, cap;
    int want_drain, want_stop;
    /* Gateway thread only. */
    int draining, stopping, listening;
    uint32_t nconns, over_cap;
    /* A connection left unaccepted in libuv (which then stops accepting):
     * every descriptor the fd budget gives client connections is in use,
     * counting those still closing. Taken once one of them has closed. */
    int accept_held;
    gw_conn *conns;      /* open client connections */
    gw_up *ups;          /* open forwarding connections to workers */
    gw_up *idle;         /* kept-alive ones among them, newest first */
    gw_scrape *scraping; /* scrapes in progress (at most one per worker) */
    gw_tok *tokenizing;  /* /tokenize exchanges in progress */
    uint32_t tok_next;   /* the worker the next one asks, round robin */
    int tok_logged;      /* the first fallback was logged */
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
    /* The request being read; rq.refuse: 413 / 417 / 431 / 501 / 503
     * decided while parsing. */
    rm_http_req rq;
    char *body; /* body_len bytes charged to g->buffered */
    size_t body_len, body_cap;
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
    char *tok_body; /* --gateway-tokenize: the /tokenize request (text prompts) */
    char err[256];
} gw_parse;

/* One request. Its state (gateway_state.h) says where it is and changes
 * only through gw_req_set_state. */
struct gw_req {
    rm_gateway *g;
    rm_gw_req_state state;
    gw_conn *conn;      /* NULL once the client has gone (or was answered) */
    rm_route_job *job;  /* ours but while ROUTING */
    gw_req *parse_next; /* g->parse_head queue, while PARSING */
    int keep_alive, head_only, http_minor;
    char *head; /* request line + forwarded headers, without Host & framing */
    char *body; /* body_len bytes charged to g->buffered */
    size_t body_len;
    int attempts;    /* workers tried (RM_GW_MAX_ATTEMPTS) */
    gw_up *up;       /* the worker connection, while CONNECTING to STREAMING */
    gw_tok *tok;     /* the /tokenize exchange, while TOKENIZING */
    int chunked_out; /* STREAMING: the body goes to the client re-chunked */
    gw_parse parse;
    /* A text prompt's 2xx response is read for the generated text, to
     * record it with the prompt (the worker caches both). */
    rm_openai_end end;     /* where the prompt's tokens stopped; .text: read the reply */
    rm_openai_reply reply; /* knows the request's kind */
};

/* A forward's connection to its worker (gateway_upstream.c). */
struct gw_up {
    gw_link link; /* the HTTP exchange (gateway_link.h) */
    rm_gateway *g;
    gw_req *req;                  /* NULL once detached, or while idle */
    int reused;                   /* taken from the idle pool for this request */
    int paused;                   /* the client's queue is full: the worker is not read */
    int idle;                     /* in g->idle, waiting for the next request to its worker */
    gw_up *prev, *next;           /* g->ups while open */
    gw_up *idle_prev, *idle_next; /* g->idle while idle */
};

/* A connection's TCP handle and its timer (every connection of the
 * gateway's has both), pointing back at owner. */
static inline void gw_handles_init(uv_loop_t *loop, uv_tcp_t *tcp, uv_timer_t *timer, void *owner)
{
    uv_tcp_init(loop, tcp);
    uv_timer_init(loop, timer);
    tcp->data = timer->data = owner;
}

/* Closes both (closing the timer stops it); cb runs for each. */
static inline void gw_handles_close(uv_tcp_t *tcp, uv_timer_t *timer, uv_close_cb cb)
{
    uv_close((uv_handle_t *)timer, cb);
    uv_close((uv_handle_t *)tcp, cb);
}

/* ---- gateway.c -------------------------------------------------------------- */

/* Queues len bytes of buf (taken; freed when written) on stream; arg is
 * the write's ((gw_write *)w)->arg in cb. Returns 0, or -1 (buf freed) if
 * the write cannot start. */
typedef struct gw_write {
    uv_write_t req;
    void *arg;
    char *buf;
} gw_write;
int gw_write_owned(uv_stream_t *stream, char *buf, size_t len, void *arg, uv_write_cb cb);

/* ---- gateway_client.c -------------------------------------------------------- */

void gw_on_connection(uv_stream_t *server, int status);
/* Gives n bytes back to the budget of buffered request bytes. */
void gw_budget_give(rm_gateway *g, size_t n);
/* Queues len bytes of buf (taken) for the client. */
void gw_client_write(gw_conn *c, char *buf, size_t len);
/* Closes the client connection once everything queued is written. */
void gw_client_finish_and_close(gw_conn *c);
/* Counts a response of this status by its class. */
void gw_count_status(rm_gateway *g, int status);
/* An answer of the gateway's own (an OpenAI-style error); keep: the
 * connection stays open (else it closes once the answer is written). */
void gw_send_error(gw_conn *c, int status, const char *type, const char *msg, int keep);
/* The previous request is answered: on to the next one, or close. */
void gw_conn_next(gw_conn *c);
/* Closes the connection now; its request, if any, is cancelled. */
void gw_conn_close(gw_conn *c);
/* Closes idle client connections, or all of them (stopping). */
void gw_close_clients(rm_gateway *g, int all);

/* ---- gateway_request.c -------------------------------------------------------- */

/* A request read whole on c (its head and body are taken from c). */
void gw_req_start(gw_conn *c);
/* Moves q to state `to`; a move gateway_state.h does not allow is a bug:
 * logged, then abort(). */
void gw_req_set_state(gw_req *q, rm_gw_req_state to);
/* q's client has gone: q ends now, or when it comes back to the gateway
 * thread. */
void gw_req_client_gone(gw_req *q);
/* A job back from the router thread (on_wake). */
void gw_req_routed(rm_gateway *g, rm_route_job *job);
/* Ends a request: its job goes back to the router (the node's in-flight
 * charge released, the prompt -- and reply -- recorded when ok, the
 * outcome told to the worker's breaker), q is freed, and the client
 * connection, if any, moves on. */
void gw_req_finish(gw_req *q, int ok, rm_worker_outcome outcome);
/* The worker failed before anything reached the client: once more on
 * another node, or an error. */
void gw_req_retry_or_fail(gw_req *q, int status, const char *msg, rm_worker_outcome outcome);

/* ---- gateway_upstream.c ------------------------------------------------------- */

/* A forward of q on a new connection to host:port. A failure may end it
 * (and q) before this returns: callers touch neither afterwards. */
void gw_up_start(rm_gateway *g, const char *host, int port, gw_req *q);
/* An idle kept-alive connection to host:port, taken for q, or NULL. */
gw_up *gw_up_idle_take(rm_gateway *g, const char *host, int port, gw_req *q);
/* Sends q's request on u's open connection (u->req == q). */
void gw_up_send(gw_up *u);
/* Reads the worker again if a slow client paused it. */
void gw_up_resume(gw_up *u);
void gw_up_close(gw_up *u);
/* Closes every worker connection no request is attached to. */
void gw_up_close_unattached(rm_gateway *g);

/* The /tokenize answer for q (TOKENIZING): the engine's token ids
 * (tokens, n; taken), or NULL when there is none (why says what failed).
 * q then routes. */
void gw_req_tokenized(gw_req *q, uint32_t *tokens, size_t n, const char *why);

/* ---- gateway_tokenize.c ------------------------------------------------------- */

/* Asks a worker's POST /tokenize for q's prompt (body: its JSON, taken);
 * gw_req_tokenized follows within tokenize_timeout_ms, maybe before this
 * returns. */
void gw_tokenize_start(gw_req *q, char *body);
/* q no longer waits for its answer (q->tok is cleared). */
void gw_tokenize_detach(gw_req *q);
/* Ends every exchange in progress (stopping). */
void gw_tokenize_close_all(rm_gateway *g);

/* ---- gateway_scrape.c --------------------------------------------------------- */

/* Starts the scrape timer (cfg.scrape_interval_ms; 0: never). */
void gw_scrape_start(rm_gateway *g);
/* Stops it (its handle is closed). */
void gw_scrape_stop(rm_gateway *g);
/* Ends every scrape in progress (each reports what it has). */
void gw_scrape_close_all(rm_gateway *g);

#endif
