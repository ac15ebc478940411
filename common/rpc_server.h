/* rpc_server.h -- a gRPC core server driven by one completion queue.
 *
 * One thread calls rm_rpc_server_run and every handler runs on it, so the
 * state handlers touch (the cache) has exactly one owner and needs no lock.
 * gRPC core does its network I/O while that thread polls the queue.
 *
 * Each call is a small state machine (see rm_call_state): for a unary method
 * the framework receives the request, calls the handler once and sends its
 * reply + status in one batch. Streaming methods get events (rm_call_event)
 * and answer them with rm_rpc_call_send / _recv / _finish; at any time a
 * streaming call has at most one send and one receive in flight.
 *
 * Unknown methods are answered UNIMPLEMENTED. Shutdown (rm_rpc_server_run's
 * tick asks for it) stops accepting calls, lets in-flight calls finish, and
 * cancels whatever is still running after the drain timeout. */
#ifndef RM_RPC_SERVER_H
#define RM_RPC_SERVER_H

#include <grpc/grpc.h>

#include "tls.h"
#include <stddef.h>
#include <stdint.h>

typedef struct rm_rpc_server rm_rpc_server;
typedef struct rm_rpc_call rm_rpc_call;

/* Every tag on the server's completion queue starts with one of these, so
 * server calls and client calls made from the server thread share a loop. */
typedef struct rm_cq_tag rm_cq_tag;
typedef void (*rm_cq_fn)(rm_cq_tag *tag, int ok);
struct rm_cq_tag {
    rm_cq_fn fn;
};

typedef enum {
    RM_RPC_UNARY,
    /* Unary, answered later: the handler starts work (e.g. a call to
     * another server) and ends the call with rm_rpc_call_finish. */
    RM_RPC_UNARY_ASYNC,
    RM_RPC_SERVER_STREAMING, /* one request, a stream of replies */
    RM_RPC_CLIENT_STREAMING, /* a stream of requests, one reply */
} rm_rpc_kind;

typedef enum {
    RM_CALL_EV_START,   /* accepted; server-streaming: msg is the request */
    RM_CALL_EV_MESSAGE, /* client-streaming: next message, NULL at end of stream */
    RM_CALL_EV_SENT,    /* the last rm_rpc_call_send completed; ok == 0: peer gone */
    RM_CALL_EV_DONE,    /* the call is over: release per-call state */
} rm_call_event;

/* Unary handler: decode req, do the work, set *reply (ownership passes to
 * the framework) and return GRPC_STATUS_OK, or return an error code and
 * write a human-readable reason into msg. */
typedef grpc_status_code (*rm_unary_fn)(void *ctx, grpc_byte_buffer *req, grpc_byte_buffer **reply,
                                        char *msg, size_t msglen);

/* Streaming handler. msg (if any) belongs to the framework and is valid
 * only during the call. */
typedef void (*rm_stream_fn)(void *ctx, rm_rpc_call *call, rm_call_event ev, grpc_byte_buffer *msg,
                             int ok);

/* Async unary handler: req belongs to the framework (valid during the
 * call); the handler must end the call once with rm_rpc_call_finish. */
typedef void (*rm_unary_async_fn)(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req);

typedef struct rm_rpc_method {
    const char *path; /* "/package.Service/Method" */
    rm_rpc_kind kind;
    rm_unary_fn unary;
    rm_stream_fn stream;
    void *ctx;
    rm_unary_async_fn unary_async;
} rm_rpc_method;

/* Called every tick_ms on the server thread (and between events when busy).
 * Return nonzero to start a graceful shutdown. */
typedef int (*rm_tick_fn)(void *ctx, uint64_t now_ms);

/* Creates a server; args (may be NULL) are copied by gRPC. */
rm_rpc_server *rm_rpc_server_create(const grpc_channel_args *args);

/* A server whose incoming messages may be up to max_receive_bytes, with at
 * most max_streams calls at a time per client connection (HTTP/2
 * SETTINGS_MAX_CONCURRENT_STREAMS: further calls wait in the client until
 * one ends, or fail with DEADLINE_EXCEEDED; 0: gRPC's default). */
rm_rpc_server *rm_rpc_server_create_limited(uint64_t max_receive_bytes, uint32_t max_streams);

/* Binds addr (a valid "HOST:PORT") and prints "LISTENING host:port" on
 * stdout, the line scripts and tests read to learn a port-0 daemon's port.
 * Returns the port, or -1 after logging why under module. */
int rm_rpc_server_announce(rm_rpc_server *s, const char *addr, const char *module,
                           const struct rm_tls *tls);

/* Requires "authorization: Bearer <token>" on every call except
 * grpc.health.v1 (Kubernetes probes cannot send metadata): others are
 * answered UNAUTHENTICATED. The comparison takes constant time. token is
 * copied; NULL turns the check off. */
void rm_rpc_server_require_token(rm_rpc_server *s, const char *token);

/* Token sent with the calls rm_rpc_server_client_call makes (a router's own
 * credentials towards its nodes). Copied; NULL: none. */
void rm_rpc_server_set_client_token(rm_rpc_server *s, const char *token);

/* Registers a method before listen/start. Returns 0 or -1. */
int rm_rpc_server_add_method(rm_rpc_server *s, const rm_rpc_method *m);

/* Binds addr ("127.0.0.1:0" for a free port), with TLS when tls has a
 * certificate (tls may be NULL). Returns the bound port, or -1. */
int rm_rpc_server_listen(rm_rpc_server *s, const char *addr, const struct rm_tls *tls);

/* Serves until shutdown completes. drain_ms bounds the wait for in-flight
 * calls once shutdown began. */
void rm_rpc_server_run(rm_rpc_server *s, uint32_t tick_ms, rm_tick_fn tick, void *tick_ctx,
                       uint32_t drain_ms);

/* Asks a running server to shut down (same as tick returning nonzero);
 * callable only from the server thread. */
void rm_rpc_server_request_shutdown(rm_rpc_server *s);

void rm_rpc_server_destroy(rm_rpc_server *s);

/* Prometheus text of radixmesh_rpc_duration_seconds{method=...}: one
 * histogram per registered method, from accepting a call to its final
 * status. labels (e.g. node="n1") are added to every sample. Caller frees.
 * Server thread only (the histograms have no lock). */
char *rm_rpc_server_metrics(const rm_rpc_server *s, const char *labels);

/* Work for the server thread from any other thread. */
typedef void (*rm_post_fn)(void *arg);

/* Runs fn(arg) on the server thread soon (it wakes the queue; calls run
 * in posting order). Thread-safe. Returns 0, or -1 once the server's queue
 * has shut down (fn will not run; arg stays the caller's). */
int rm_rpc_server_post(rm_rpc_server *s, rm_post_fn fn, void *arg);

/* Loop lag. rm_rpc_server_run's thread comes back to the queue at least
 * every tick_ms plus one event's work; a gap longer than tick_ms +
 * RM_RPC_STALL_MS is a stall: the process was stopped or starved of CPU,
 * or a handler blocked. A call's deadline that passed then measured the
 * server, not the peer. */
#define RM_RPC_STALL_MS 50

/* Inside a reply callback (rm_rpc_reply_fn): 1 if the server thread
 * stalled while that call was out, so its failure may be the server's own
 * lag rather than the peer's. 0 elsewhere. Server thread only. */
int rm_rpc_server_reply_stalled(const rm_rpc_server *s);

/* Stalls so far and the time lost to them beyond the expected tick.
 * Server thread only (also exported by rm_rpc_server_metrics). */
void rm_rpc_server_stall_stats(const rm_rpc_server *s, uint64_t *stalls, uint64_t *stalled_ms);

/* Calls currently in progress (accepted, not yet done). */
size_t rm_rpc_server_active_calls(const rm_rpc_server *s);

/* Per-call user state for streaming handlers. */
void rm_rpc_call_set_user(rm_rpc_call *c, void *user);
void *rm_rpc_call_user(const rm_rpc_call *c);

/* Sends one message (takes ownership of bb). Returns 0 or -1 (a send is
 * already in flight or the call finished). */
int rm_rpc_call_send(rm_rpc_call *c, grpc_byte_buffer *bb);

/* Asks for the next client message (client-streaming). Returns 0 or -1. */
int rm_rpc_call_recv(rm_rpc_call *c);

/* Ends the call with a status, optionally sending a last message first
 * (takes ownership of final). Returns 0 or -1 if already finished. */
int rm_rpc_call_finish(rm_rpc_call *c, grpc_status_code code, const char *msg,
                       grpc_byte_buffer *final);

/* The call's deadline in milliseconds from now (INT64_MAX without one). */
int64_t rm_rpc_call_ms_left(const rm_rpc_call *c);

/* Ends a streaming call from the server thread, for a bound the server
 * enforces (an idle stream): the client gets status code and msg, batches
 * in flight complete as failed, and the handler gets no event but
 * RM_CALL_EV_DONE, once they have (possibly before this returns). Returns
 * 0, or -1 when the call is not an active streaming call. */
int rm_rpc_call_cancel(rm_rpc_call *c, grpc_status_code code, const char *msg);

/* Who made the call, into buf (NUL-terminated, cut at len-1 bytes): the
 * authenticated TLS client identity when there is one (the certificate's
 * subject alternative names joined by ',', else its common name; only on a
 * listener with --tls-ca, whose client certificates gRPC verified), else
 * the peer's address without the port ("10.0.0.5", "::1"). Returns 1 for
 * an authenticated identity, 0 for an address, -1 when gRPC knows no peer
 * (buf is then ""). */
int rm_rpc_call_peer(const rm_rpc_call *c, char *buf, size_t len);

/* Reply of a client call made with rm_rpc_server_client_call: reply (NULL
 * unless st is OK) and details belong to the framework, valid during the
 * callback only. */
typedef void (*rm_rpc_reply_fn)(void *ctx, grpc_status_code st, grpc_byte_buffer *reply,
                                const char *details);

/* Starts a unary client call on ch whose completion runs cb on the server
 * thread; call it from the server thread. gRPC takes req's slices (the
 * caller still destroys req). A deadline is required (timeout_ms > 0) so
 * shutdown never waits forever. Returns 0, or -1 if the call could not
 * start (cb is not called): in particular once the server's queue has begun
 * to shut down (every served call is over and rm_rpc_server_run only drains
 * what is left -- replies and the tick still run then, and must not count
 * on a new call). Callers treat -1 as "the server is stopping". */
int rm_rpc_server_client_call(rm_rpc_server *s, grpc_channel *ch, void *method,
                              grpc_byte_buffer *req, int timeout_ms, rm_rpc_reply_fn cb, void *ctx);

#endif
