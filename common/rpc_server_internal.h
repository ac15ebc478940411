/* rpc_server_internal.h -- the server struct that rpc_server.c (calls,
 * run loop), rpc_post.c (work posted from other threads) and
 * rpc_server_client.c (client calls on the server's queue) share.
 * Private to those files; the contract is rpc_server.h. */
#ifndef RM_RPC_SERVER_INTERNAL_H
#define RM_RPC_SERVER_INTERNAL_H

#include <pthread.h>

#include "rpc_client.h"
#include "rpc_server.h"

#define RPC_MAX_METHODS 32
#define RPC_NBUCKETS    16 /* latency histogram buckets (rpc_server.c) */

typedef struct reg_method {
    rm_rpc_method m;
    void *handle; /* from grpc_server_register_method */
    uint64_t count, le[RPC_NBUCKETS];
    double sum;
} reg_method;

/* A call on a lame channel fails at once: its completion is how another
 * thread makes the owner thread's grpc_completion_queue_next return
 * (gRPC core's C API has no alarm of its own). */
typedef struct wake_call {
    rm_cq_tag base;
    grpc_call *call;
    grpc_status_code status;
    grpc_slice details;
} wake_call;

struct rm_rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    reg_method methods[RPC_MAX_METHODS];
    int nmethods;
    int shutting_down, shutdown_done, cancelled_all;
    size_t active;
    char *token;             /* required bearer token, NULL: none */
    int verified_clients;    /* TLS with a CA: client identities are verified */
    rm_rpc_auth client_auth; /* sent on our own client calls */
    char shutdown_tag;
    /* Work posted by other threads (rm_rpc_server_post). A wake call is in
     * flight on the queue whenever the list is non-empty, so the owner
     * thread runs the work promptly; `closed` is set under post_mu right
     * before the queue shuts down, after which nothing may start on it. */
    pthread_mutex_t post_mu;
    struct posted *post_head, **post_tail; /* FIFO; post_tail: the last next field */
    int wake_pending, post_closed;
    grpc_channel *wake_ch;
    /* At most one wake call is out (wake_pending), so it lives here. Its
     * fields are written and read under post_mu, which also orders them
     * for ThreadSanitizer (the queue's own ordering is invisible to it). */
    wake_call wake;
    /* Loop lag (server thread only): stalls counted so far, their total
     * length, and whether the reply being delivered saw one. */
    uint64_t stalls, stalled_ms;
    int reply_stalled;
};

/* ---- rpc_post.c ---------------------------------------------------------- */

/* Sets up posting (the lock, the lame channel whose calls wake the queue). */
void rpc_post_init(rm_rpc_server *s);

/* Shuts the server's queue down; from now on nothing may be posted (the
 * flag is set under the lock, so a post either got in before or fails). */
void rpc_post_close(rm_rpc_server *s);

void rpc_post_destroy(rm_rpc_server *s);

#endif
