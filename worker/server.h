/* server.h -- the worker's OpenAI-compatible HTTP/1.1 server.
 *
 * Endpoints: POST /v1/completions (JSON, or Server-Sent Events with
 * "stream": true; worker/api.h has the fields), GET /v1/models, GET
 * /metrics (vLLM's names, so a gateway router reads it as it reads vLLM),
 * GET /health. Errors are OpenAI-style JSON.
 *
 * Threads: the calling thread runs the libuv loop and owns every
 * connection; the engine runs on the inference thread (worker/infer.h: one
 * request at a time, a bounded queue, the hand-offs). A completion is read
 * and checked on the loop (a bad one is answered at once), queued, and
 * answered as its tokens come back; a client that leaves cancels it (the
 * engine stops at its next token, or it leaves the queue).
 *
 * Bounds: the request head (431) and body (413) sizes; a request must
 * arrive whole within request_timeout_ms (408); a kept-alive connection
 * idle, or a client that takes nothing of a response queued for it, for
 * idle_timeout_ms is closed (a client that stopped reading its stream
 * cancels it); max_connections (503 and closed beyond); max_waiting
 * requests wait for the engine (503 with Retry-After beyond). While a
 * request is in progress, or 256 KiB of replies wait for a client that
 * does not read them, its pipelined requests are not parsed and at most
 * 64 KiB of them is read ahead. A stream's events are not held back (the
 * engine does not wait for a client): at most max_context events queue
 * for a slow reader, and one that reads nothing is cut by the idle
 * timeout, which cancels its generation.
 *
 * SIGTERM or SIGINT: stop accepting, answer what is queued and running
 * (new requests on open connections get 503), exit once done; after
 * drain_timeout_ms, or a second signal, what is left is cancelled. */
#ifndef RM_WORKER_SERVER_H
#define RM_WORKER_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "engine.h"

typedef struct rm_wserver_config {
    const char *listen; /* HOST:PORT (port 0: any free port) */
    uint64_t max_body_bytes, max_header_bytes;
    uint64_t max_connections, max_waiting;
    uint64_t request_timeout_ms, idle_timeout_ms, drain_timeout_ms;
} rm_wserver_config;

void rm_wserver_config_defaults(rm_wserver_config *c);

/* Serves m's completions with engine e (which moves to the inference
 * thread and is freed here) until a signal's drain ends. Prints "HTTP
 * host:port" on stdout once listening (the line scripts wait for).
 * Returns 0, or 1 if it could not listen (logged). */
int rm_wserver_run(const rm_wserver_config *cfg, const rm_api_model *m, rm_engine *e);

#endif
