/* gateway.h -- the router as the HTTP front door of inference workers.
 *
 * An HTTP/1.1 server on its own libuv thread. POST /v1/completions and
 * /v1/chat/completions are routed by their prompt (router/openai.h) with the
 * router's own algorithm, on the router's thread (rm_router_route_async),
 * to the worker paired with the chosen cache node; any other request goes
 * to any worker that answers. The request is forwarded unchanged and the
 * response streamed back as it arrives (SSE chunk by chunk) with an
 * x-radixmesh-node header.
 *
 * Per request, once the client side has read it whole (else it answered
 * 400/413/431/501, 408 too slow, 401 unauthenticated, 503 over budget):
 *
 *   NEW -> (PARSING) -> ROUTING --routed--> CONNECTING --> WAITING --head--> STREAMING -> DONE
 *    |        |           |  (router thread)  |    ^         |   |             |
 *    +- 400 --+- 400      +- 503 none up      |    +---------+   |             +- worker gone
 *       (large bodies                         |  a kept-alive    |                or silent:
 *        are parsed on                        |  connection      |                cut the client
 *        libuv's                              |  found closed:   |                (truncated)
 *        threadpool)                          |  a new one       |
 *                                             +------------------+- connect error, 5xx, or no head
 *                                                                   in time, before any byte
 *                                                                   reached the client: ROUTING
 *                                                                   once more, the failed node
 *                                                                   excluded
 *
 * Any state ends in DONE when the client leaves (a request out on the
 * router thread or the threadpool when it comes back). The moves are
 * router/gateway_state.h's, checked on every change.
 *
 * Timeouts towards a worker: connecting (connect_timeout_ms), then an
 * absolute bound on the wait for its response head (first_byte_timeout_ms;
 * interim 1xx responses do not count as the head), then the stream's idle
 * time between bytes (upstream_timeout_ms), which does not run while a
 * slow client has the worker's stream paused. Every request's outcome
 * (answered, failed, no verdict) goes back to the router with its job and
 * drives the worker's circuit breaker (router/breaker.h).
 *
 * Memory: request bytes held in all (bodies being read or kept for a
 * retry, pipelined bytes read ahead) stay under max_buffered_bytes (503
 * with Retry-After beyond it); a client whose replies queue up (it sends
 * and does not read) is not read until they drain.
 *
 * A client that goes away cancels its upstream request (the worker's
 * connection is closed). Threads: the gateway thread owns every connection
 * and request; the router's state stays on the router thread, reached only
 * through rm_route_job messages. A large request body is parsed on libuv's
 * threadpool: while it is out, that thread reads the request's body and
 * writes its parse results and nothing else; the gateway thread touches
 * neither until the after-work callback (on the gateway thread) takes the
 * request back. */
#ifndef RM_GATEWAY_H
#define RM_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "router.h"

typedef struct rm_gateway_config {
    const char *listen;             /* HOST:PORT (port 0: any free port) */
    size_t max_body_bytes;          /* larger request bodies: 413 */
    size_t max_header_bytes;        /* larger request heads: 431 */
    uint32_t connect_timeout_ms;    /* to a worker */
    uint32_t first_byte_timeout_ms; /* request sent -> the worker's final response head */
    uint32_t upstream_timeout_ms;   /* worker silence once its response has begun */
    uint32_t client_timeout_ms;     /* to send a whole request; idle keep-alive */
    uint32_t scrape_interval_ms;    /* workers' /metrics; 0: never */
    size_t max_prompt_tokens;       /* routing input kept per request */
    uint32_t max_connections;       /* more get 503 (Connection: close) */
    size_t max_buffered_bytes;      /* request bytes held in all: beyond, 503 + Retry-After */
    /* Non-NULL: requests need "Authorization: Bearer <auth_token>", else
     * 401 (the header is forwarded to the worker unchanged). Kept by the
     * caller while the gateway runs. */
    const char *auth_token;
    /* With tokenize, a text prompt is routed on the engine's own token ids:
     * a worker's POST /tokenize (any worker the router routes to: they
     * share the model's tokenizer) is asked first, within
     * tokenize_timeout_ms, and the request routes in the model's namespace
     * -- the one a node following its worker's KV events mirrors. When it
     * fails, the request routes on pseudo-tokens as without (counted). */
    int tokenize;
    uint32_t tokenize_timeout_ms;
} rm_gateway_config;

void rm_gateway_config_defaults(rm_gateway_config *c);

typedef struct rm_gateway rm_gateway;

/* Binds cfg->listen and starts the gateway thread. Returns the gateway and
 * the bound port, or NULL with a reason in err. */
rm_gateway *rm_gateway_start(const rm_gateway_config *cfg, rm_router *r, int *port, char *err,
                             size_t errlen);

/* Stops accepting connections and closes idle ones; requests in progress
 * carry on. Thread-safe. */
void rm_gateway_drain(rm_gateway *g);

/* Requests in progress. Thread-safe. */
uint64_t rm_gateway_active(rm_gateway *g);

/* Prometheus text of the gateway's counters (caller frees). Thread-safe. */
char *rm_gateway_metrics(rm_gateway *g, const char *router_id);

/* Closes everything (in-flight requests are cut) and joins the thread.
 * Call after the router thread has stopped. NULL is ignored. */
void rm_gateway_stop(rm_gateway *g);

#endif
