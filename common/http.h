/* http.h -- a small read-only HTTP/1.1 server on its own libuv thread.
 *
 * Requests are parsed by http-parser; keep-alive and pipelined requests are
 * answered in order. A client that sends requests without reading the
 * replies is not read from while more than a small bound of its replies
 * waits to be sent (its unparsed requests wait, parsed no further), so
 * each connection holds a bounded amount of memory. A connection's libuv
 * plumbing is http_conn.h's, shared with the worker's server. The handler
 * runs on the HTTP thread, so it must only read state that its owner
 * publishes for it (see rm_published below): the daemons' caches and
 * routers stay owned by their gRPC thread. */
#ifndef RM_HTTP_H
#define RM_HTTP_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct rm_http_response {
    int status;
    const char *content_type;
    char *body; /* malloc'd by the handler, freed by the server */
    size_t len;
} rm_http_response;

/* Fills out for a GET/HEAD of path (query string stripped). */
typedef void (*rm_http_handler)(void *ctx, const char *path, rm_http_response *out);

typedef struct rm_http_server rm_http_server;

typedef struct rm_http_config {
    /* Open connections at most; past it a connection is answered 503 and
     * closed (the fd budget of fdbudget.h sets it). */
    uint64_t max_connections;
    /* A request head must arrive whole within this (else 408, closed). */
    uint64_t header_timeout_ms;
    /* A kept-alive connection with nothing to do, or whose client reads
     * nothing of what is queued for it, is closed after this. */
    uint64_t idle_timeout_ms;
    /* Non-NULL: every path but /healthz and /readyz needs "Authorization:
     * Bearer <auth_token>", else 401 (copied at start). */
    const char *auth_token;
} rm_http_config;

void rm_http_config_defaults(rm_http_config *c);

/* The --http-* flags of both daemons, over a config's fields (for an
 * rm_flag table; uint64_t fields, --http-auth is an int). */
#define RM_HTTP_FLAGS(cfg, auth)                                                                   \
    {"http-max-connections", RM_FLAG_AT(&(cfg).max_connections),                                   \
     "--http connections at most (more get 503; lowered to fit the fd budget)", 1, 1000000},       \
        {"http-header-timeout-ms", RM_FLAG_AT(&(cfg).header_timeout_ms),                           \
         "a --http request head must arrive within this (else 408)", 100, 3600000},                \
        {"http-idle-timeout-ms", RM_FLAG_AT(&(cfg).idle_timeout_ms),                               \
         "close --http connections idle (or not reading their replies) this long", 100, 86400000}, \
    {                                                                                              \
        "http-auth", RM_FLAG_AT(&(auth)),                                                          \
            "require --auth-token-file's bearer token on HTTP (all but /healthz, /readyz)", 0, 0   \
    }

/* Binds host_port ("127.0.0.1:0" for any free port) and serves on a new
 * thread. Returns the server and the bound port in *port, or NULL with a
 * reason in err. */
rm_http_server *rm_http_start(const char *host_port, const rm_http_config *cfg,
                              rm_http_handler handler, void *ctx, int *port, char *err,
                              size_t errlen);

/* rm_http_start for a daemon: logs a failure under module, and on success
 * logs "http://host:port/" and prints "HTTP host:port" on stdout (the line
 * scripts read, as with LISTENING). NULL on failure. */
rm_http_server *rm_http_start_announced(const char *host_port, const rm_http_config *cfg,
                                        rm_http_handler handler, void *ctx, const char *module);

/* Prometheus text of the server's connection figures (open connections,
 * connections refused at the cap, requests refused without a valid token,
 * backpressure pauses, timeouts), with labels (a ready label list, see
 * prom.h) on each sample. Caller frees. Thread-safe; NULL s gives "". */
char *rm_http_metrics(rm_http_server *s, const char *labels);

/* The header line a 401 carries (RFC 6750): a bearer token is wanted. */
#define RM_HTTP_BEARER_CHALLENGE "WWW-Authenticate: Bearer realm=\"radixmesh\"\r\n"

/* A status code and a text for it (a reason phrase, a message). */
typedef struct rm_http_status_text {
    int status;
    const char *text;
} rm_http_status_text;

/* The text of status in table[0, n), or NULL if it has none there. */
const char *rm_http_status_lookup(const rm_http_status_text *table, size_t n, int status);

/* The reason phrase of an HTTP status code ("Not Found"); "Unknown" for
 * codes without one here. One table for every HTTP server of the
 * daemons. */
const char *rm_http_reason(int status);

/* For libuv servers (this one and the gateway): initialises loop and tcp on
 * it, binds IPv4 host_port and listens with cb. Returns the bound port, or
 * -1 with a reason in err (the loop is then closed again). */
int rm_uv_listen(uv_loop_t *loop, uv_tcp_t *tcp, const char *host_port, int backlog,
                 uv_connection_cb cb, char *err, size_t errlen);

/* libuv read-buffer allocator: malloc'd buffers that the read callback
 * frees. */
void rm_uv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* Stops serving, closes connections and joins the thread. */
void rm_http_stop(rm_http_server *s);

/* Strings an owner thread publishes for HTTP handlers: a mutex-guarded
 * set of documents swapped whole, so readers never see a half update. */
typedef struct rm_published {
    pthread_mutex_t mu;
    char *metrics; /* Prometheus text */
    char *json;    /* /api/cluster (routers) */
    int ready;     /* /readyz */
} rm_published;

void rm_published_init(rm_published *p);
void rm_published_destroy(rm_published *p);

/* Replaces a document (takes ownership of text; NULL leaves it as is). */
void rm_published_set(rm_published *p, char *metrics, char *json, int ready);

/* A copy of a document (caller frees), or NULL if none was published. */
char *rm_published_get(rm_published *p, int which_json, int *ready);

/* The endpoints every daemon has, from what p holds: /healthz (alive),
 * /readyz (200 or 503), /metrics, and /api/cluster when a JSON document is
 * published. Returns 1 if path was one of them (out filled), else 0. */
int rm_http_serve_published(rm_published *p, const char *path, rm_http_response *out);

#endif
