/* http.h -- a small read-only HTTP/1.1 server on its own libuv thread.
 *
 * Requests are parsed by http-parser; keep-alive and pipelined requests are
 * answered in order. The handler runs on the HTTP thread, so it must only
 * read state that its owner publishes for it (see rm_published below):
 * the daemons' caches and routers stay owned by their gRPC thread. */
#ifndef RM_HTTP_H
#define RM_HTTP_H

#include <pthread.h>
#include <stddef.h>
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

/* Binds host_port ("127.0.0.1:0" for any free port) and serves on a new
 * thread. Returns the server and the bound port in *port, or NULL with a
 * reason in err. */
rm_http_server *rm_http_start(const char *host_port, rm_http_handler handler, void *ctx, int *port,
                              char *err, size_t errlen);

/* rm_http_start for a daemon: logs a failure under module, and on success
 * logs "http://host:port/" and prints "HTTP host:port" on stdout (the line
 * scripts read, as with LISTENING). NULL on failure. */
rm_http_server *rm_http_start_announced(const char *host_port, rm_http_handler handler, void *ctx,
                                        const char *module);

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
