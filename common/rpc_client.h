/* rpc_client.h -- blocking gRPC core client calls.
 *
 * One rm_rpc_client = one channel + one pluck completion queue. Calls on it
 * block the calling thread; use one client per thread (a channel may be
 * shared by creating clients with rm_rpc_client_init_shared). */
#ifndef RM_RPC_CLIENT_H
#define RM_RPC_CLIENT_H

#include <grpc/grpc.h>
#include <stddef.h>

#include "bearer.h" /* rm_read_token_file */

/* "authorization: Bearer <token>" metadata for outgoing calls. */
typedef struct rm_rpc_auth {
    grpc_metadata md;
    int set;
} rm_rpc_auth;

/* Fills auth for token (copied; NULL or empty: no metadata). Release with
 * rm_rpc_auth_clear. */
void rm_rpc_auth_init(rm_rpc_auth *auth, const char *token);
void rm_rpc_auth_clear(rm_rpc_auth *auth);

typedef struct rm_rpc_client {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    int owns_channel;
    rm_rpc_auth auth;
    /* Calls wait for the channel to connect (within their deadline) instead
     * of failing at once while the server is unreachable: for clients that
     * ride out a server restart. */
    int wait_for_ready;
} rm_rpc_client;

/* How long one connection attempt (TCP connect, then the TLS and HTTP/2
 * handshakes) may take: gRPC's "minimum reconnect backoff", which is its
 * connect timeout. At 1 s it killed handshakes that only progress
 * while someone polls: a blocking client (the worker's cache connection)
 * polls during its calls, and between them only gRPC's backup poller does,
 * every 5 s; attempts started between calls died before a call came, and
 * one that a call picked up with less time left than a slow handshake
 * (a loaded host, valgrind) needs failed it. 10 s lets the backup poller
 * carry an idle attempt along and a call finish it. */
enum { RM_RPC_CONNECT_TIMEOUT_MS = 10000 };

/* Fills two channel args: reconnect backoff capped at 2 s, so a server back
 * from a restart (refused until then: those attempts fail at once) is found
 * again within seconds, not after gRPC's default of up to two minutes; and
 * the connect timeout above (an attempt begun while the server was cut off
 * ends after 10 s, not gRPC's 20 s). */
void rm_rpc_reconnect_args(grpc_arg args[2]);

struct rm_tls;

/* A channel to target "host:port", as every radixmesh client opens one
 * (the blocking clients here, the router towards its nodes): over TLS when
 * tls has a CA (tls may be NULL; see rm_rpc_client_init_tls), messages
 * received up to 64 MiB, the reconnect arguments above, and messages sent
 * up to max_send_bytes (-1: no limit of its own, gRPC's default). NULL on
 * failure. */
grpc_channel *rm_rpc_channel_create(const char *target, const struct rm_tls *tls,
                                    int max_send_bytes);

/* Connects (lazily) to target "host:port" without TLS. Max message sizes
 * are raised to 64 MiB so million-token requests fit; reconnect backoff is
 * capped at 2 s so a restarted server is found again quickly. Returns 0 or
 * -1. */
int rm_rpc_client_init(rm_rpc_client *c, const char *target);

/* Like rm_rpc_client_init, over TLS when tls has a CA (the server is
 * verified against it; tls's certificate, if any, is presented for mTLS).
 * tls may be NULL. */
int rm_rpc_client_init_tls(rm_rpc_client *c, const char *target, const struct rm_tls *tls);

/* A second client over another client's channel (own queue). */
void rm_rpc_client_init_shared(rm_rpc_client *c, const rm_rpc_client *base);

void rm_rpc_client_close(rm_rpc_client *c);

/* Registers a method path on the channel for cheaper calls. The returned
 * handle lives as long as the channel. */
void *rm_rpc_client_method(rm_rpc_client *c, const char *path);

/* Fills ops[0..6) with the six operations of a client unary call: send
 * metadata, req and close; receive metadata, *resp and the status. The
 * pointers must stay valid until the batch completes. */
void rm_rpc_unary_ops(grpc_op ops[6], grpc_byte_buffer *req, grpc_metadata_array *md,
                      grpc_byte_buffer **resp, grpc_metadata_array *trailing,
                      grpc_status_code *status, grpc_slice *details);

/* Releases what such a call's batch filled in (not the reply, which may
 * have gone to the caller) and the call. */
void rm_rpc_unary_release(grpc_call *call, grpc_metadata_array *md, grpc_metadata_array *trailing,
                          grpc_slice details);

/* Adds auth's metadata (if set) to the SEND_INITIAL_METADATA op. */
void rm_rpc_auth_apply(const rm_rpc_auth *auth, grpc_op *send_initial_md);

/* Sends token with every call of c from now on. */
void rm_rpc_client_set_token(rm_rpc_client *c, const char *token);

/* Unary call. On GRPC_STATUS_OK *reply holds the response (caller destroys
 * it); otherwise *reply is NULL and msg holds the status details. gRPC takes
 * req's slices when sending: the caller still destroys req but must not send
 * it again. timeout_ms 0: no deadline. */
grpc_status_code rm_rpc_unary(rm_rpc_client *c, void *method, grpc_byte_buffer *req, int timeout_ms,
                              grpc_byte_buffer **reply, char *msg, size_t msglen);

/* A streaming call, driven one blocking step at a time. */
typedef struct rm_rpc_stream {
    rm_rpc_client *c;
    grpc_call *call;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    int got_status; /* address used as the status batch's tag */
    int asked_initial_md;
} rm_rpc_stream;

/* Opens a call and sends initial metadata. Returns 0 or -1. */
int rm_rpc_stream_open(rm_rpc_stream *s, rm_rpc_client *c, void *method, int timeout_ms);

/* Sends one message (caller destroys bb; its slices are consumed);
 * last=1 also half-closes. Returns 0 or -1. */
int rm_rpc_stream_send(rm_rpc_stream *s, grpc_byte_buffer *bb, int last);

/* Half-closes without a message. */
int rm_rpc_stream_close_send(rm_rpc_stream *s);

/* Receives the next message into *bb (caller destroys). Returns 1, or 0 at
 * the end of the stream (*bb NULL). */
int rm_rpc_stream_recv(rm_rpc_stream *s, grpc_byte_buffer **bb);

/* Waits for the final status; copies details into msg. Frees the call. */
grpc_status_code rm_rpc_stream_finish(rm_rpc_stream *s, char *msg, size_t msglen);

#endif
