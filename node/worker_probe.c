/* worker_probe.c -- see worker_probe.h. */
#include "worker_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "flags.h"
#include "prom.h"
#include "util.h"

#define MAX_METRICS_BYTES (8u << 20)
#define MAX_MODELS_BYTES  (1u << 20)

/* ---- reading what the worker said (pure) ------------------------------------ */

static int name_is(const rm_prom_line *l, const char *name)
{
    return l->name_len == strlen(name) && !memcmp(l->name, name, l->name_len);
}

static uint64_t label_u64(const rm_prom_line *l, const char *key)
{
    char v[32], *end;
    if (rm_prom_label_get(l->labels, l->labels_len, key, v, sizeof v) != 0)
        return 0;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    return errno || end == v || *end || v[0] == '-' ? 0 : (uint64_t)x;
}

void rm_worker_look_metrics(const char *text, size_t len, rm_worker_look *out)
{
    const char *p = text, *end = text + len;
    double queries = 0;
    int has_queries = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        rm_prom_line l;
        if (rm_prom_parse_line(p, le, &l) == 0 && isfinite(l.value)) {
            if (name_is(&l, "vllm:cache_config_info")) {
                uint64_t bs = label_u64(&l, "block_size");
                out->block_size = bs <= UINT32_MAX ? (uint32_t)bs : 0;
                out->num_gpu_blocks = label_u64(&l, "num_gpu_blocks");
            } else if (name_is(&l, "process_start_time_seconds") && l.value > 0) {
                out->start_time = l.value;
            } else if (name_is(&l, "vllm:prefix_cache_queries_total") && l.value >= 0) {
                queries += l.value;
                has_queries = 1;
            }
        }
        p = le + 1;
    }
    out->has_queries = has_queries;
    out->queries = queries;
}

int rm_worker_look_models(const char *json, size_t len, char *model, size_t cap)
{
    json_t *doc = json_loadb(json, len, 0, NULL);
    json_t *id = json_object_get(json_array_get(json_object_get(doc, "data"), 0), "id");
    int rc = -1;
    if (json_is_string(id) && json_string_length(id) > 0 && json_string_length(id) < cap) {
        memcpy(model, json_string_value(id), json_string_length(id) + 1);
        rc = 0;
    }
    json_decref(doc);
    return rc;
}

int rm_worker_restarted(const rm_worker_look *before, const rm_worker_look *now)
{
    if (!before->reachable || !now->reachable)
        return 0;
    if (before->start_time > 0 && now->start_time > 0 && before->start_time != now->start_time)
        return 1;
    return before->has_queries && now->has_queries && now->queries < before->queries;
}

/* ---- one GET -------------------------------------------------------------------- */

typedef struct get_state {
    rm_sbuf body;
    size_t max;
    int status, done, too_big;
} get_state;

static int on_get_headers(http_parser *p)
{
    ((get_state *)p->data)->status = p->status_code;
    return 0;
}

static int on_get_body(http_parser *p, const char *at, size_t len)
{
    get_state *g = p->data;
    if (g->body.len + len > g->max) {
        g->too_big = 1;
        return -1;
    }
    rm_sbuf_append(&g->body, at, len);
    return 0;
}

static int on_get_complete(http_parser *p)
{
    ((get_state *)p->data)->done = 1;
    return 0;
}

static const http_parser_settings get_settings = {
    .on_headers_complete = on_get_headers,
    .on_body = on_get_body,
    .on_message_complete = on_get_complete,
};

static int ms_left(uint64_t deadline)
{
    uint64_t now = rm_now_ms();
    return now >= deadline ? 0 : (int)(deadline - now);
}

/* Waits for ev on fd until deadline. Returns 1 when ready, 0 on timeout. */
static int wait_fd(int fd, short ev, uint64_t deadline)
{
    for (;;) {
        struct pollfd p = {fd, ev, 0};
        int r = poll(&p, 1, ms_left(deadline));
        if (r >= 0 || errno != EINTR)
            return r > 0;
    }
}

static int connect_to(const char *host, int port, uint64_t deadline, char *err, size_t errlen)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    snprintf(err, errlen, "no address for %s", host);
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        int e = 0;
        socklen_t el = sizeof e;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 &&
            (errno != EINPROGRESS || !wait_fd(fd, POLLOUT, deadline) ||
             getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0 || e != 0)) {
            snprintf(err, errlen, "cannot connect to %s:%d: %s", host, port,
                     e                      ? strerror(e)
                     : errno == EINPROGRESS ? "timed out"
                                            : strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

int rm_http_get(const char *host, int port, const char *path, int timeout_ms, size_t max_bytes,
                int *status, char **body, size_t *len, char *err, size_t errlen)
{
    uint64_t deadline = rm_now_ms() + (uint64_t)timeout_ms;
    *body = NULL;
    *len = 0;
    int fd = connect_to(host, port, deadline, err, errlen);
    if (fd < 0)
        return -1;
    /* HTTP/1.0: the answer ends with the connection, never chunked. */
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s:%d\r\nAccept: */*\r\n\r\n", path,
                     host, port);
    get_state g = {.max = max_bytes};
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &g;
    int rc = -1;
    for (int sent = 0; sent < n;) {
        ssize_t w = send(fd, req + sent, (size_t)(n - sent), MSG_NOSIGNAL);
        if (w > 0)
            sent += (int)w;
        else if ((w < 0 && errno != EAGAIN && errno != EINTR) || !wait_fd(fd, POLLOUT, deadline)) {
            snprintf(err, errlen, "cannot send the request to %s:%d", host, port);
            goto out;
        }
    }
    char buf[16384];
    while (!g.done) {
        if (!wait_fd(fd, POLLIN, deadline)) {
            snprintf(err, errlen, "%s:%d: no whole answer to %s within %d ms", host, port, path,
                     timeout_ms);
            goto out;
        }
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r < 0) {
            snprintf(err, errlen, "%s:%d: %s", host, port, strerror(errno));
            goto out;
        }
        size_t done = http_parser_execute(&p, &get_settings, buf, (size_t)r);
        if (g.too_big) {
            snprintf(err, errlen, "%s:%d: %s is larger than %zu bytes", host, port, path,
                     max_bytes);
            goto out;
        }
        if (HTTP_PARSER_ERRNO(&p) != HPE_OK || done != (size_t)r) {
            snprintf(err, errlen, "%s:%d: not an HTTP answer to %s (%s)", host, port, path,
                     http_errno_description(HTTP_PARSER_ERRNO(&p)));
            goto out;
        }
        if (r == 0 && !g.done) {
            snprintf(err, errlen, "%s:%d closed before the answer to %s ended", host, port, path);
            goto out;
        }
    }
    rm_sbuf_append(&g.body, "", 0);
    *status = g.status;
    *body = g.body.p;
    *len = g.body.len;
    g.body.p = NULL;
    rc = 0;
out:
    free(g.body.p);
    close(fd);
    return rc;
}

/* ---- the probe's thread -------------------------------------------------------- */

struct rm_worker_probe {
    rm_worker_probe_config cfg;
    char host[256];
    int port;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    atomic_int want_model;
};

/* GET path; 0 with the body when it answered 200, else -1 with why. */
static int get_ok(rm_worker_probe *p, const char *path, size_t max, char **body, size_t *len,
                  char *why, size_t whylen)
{
    int status;
    if (rm_http_get(p->host, p->port, path, (int)p->cfg.timeout_ms, max, &status, body, len, why,
                    whylen) != 0)
        return -1;
    if (status == 200)
        return 0;
    snprintf(why, whylen, "%.100s:%d answered %d to GET %s", p->host, p->port, status, path);
    free(*body);
    *body = NULL;
    return -1;
}

static void look_once(rm_worker_probe *p)
{
    rm_worker_look *look = rm_xcalloc(1, sizeof *look);
    look->stamp = p->cfg.stamp ? p->cfg.stamp(p->cfg.ctx) : 0;
    char *body;
    size_t len;
    if (get_ok(p, "/metrics", MAX_METRICS_BYTES, &body, &len, look->why, sizeof look->why) == 0) {
        look->reachable = 1;
        rm_worker_look_metrics(body, len, look);
        free(body);
    }
    if (look->reachable && atomic_load(&p->want_model) &&
        get_ok(p, "/v1/models", MAX_MODELS_BYTES, &body, &len, look->why, sizeof look->why) == 0) {
        rm_worker_look_models(body, len, look->model, sizeof look->model);
        free(body);
    }
    p->cfg.report(p->cfg.ctx, look);
}

static void *probe_run(void *arg)
{
    rm_worker_probe *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        pthread_mutex_unlock(&p->mu);
        look_once(p);
        pthread_mutex_lock(&p->mu);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += p->cfg.interval_ms / 1000;
        until.tv_nsec += (long)(p->cfg.interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

rm_worker_probe *rm_worker_probe_start(const rm_worker_probe_config *cfg, char *err, size_t errlen)
{
    rm_worker_probe *p = rm_xcalloc(1, sizeof *p);
    p->cfg = *cfg;
    if (!cfg->url || rm_parse_http_url(cfg->url, p->host, sizeof p->host, &p->port) != 0) {
        snprintf(err, errlen, "--worker-url: expected http://HOST:PORT, got '%s'",
                 cfg->url ? cfg->url : "");
        free(p);
        return NULL;
    }
    p->cfg.url = NULL; /* not kept */
    atomic_init(&p->want_model, cfg->want_model);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&p->thread, NULL, probe_run, p) != 0) {
        snprintf(err, errlen, "worker probe: cannot start its thread");
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    return p;
}

void rm_worker_probe_model_known(rm_worker_probe *p)
{
    atomic_store(&p->want_model, 0);
}

void rm_worker_probe_stop(rm_worker_probe *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
