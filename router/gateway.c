/* gateway.c -- the gateway's lifecycle: its thread and loop, the
 * wake-ups other threads send it (routed jobs, drain, stop), draining and
 * stopping, and its /metrics text. The connections and requests it runs
 * are in gateway_client.c, gateway_request.c, gateway_upstream.c and
 * gateway_scrape.c (gateway_internal.h says which does what). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_internal.h"
#include "http.h"
#include "prom.h"

void rm_gateway_config_defaults(rm_gateway_config *c)
{
    memset(c, 0, sizeof *c);
    c->listen = "127.0.0.1:0";
    c->max_body_bytes = 16u << 20;
    c->max_header_bytes = 64u << 10;
    c->connect_timeout_ms = 2000;
    /* A long prompt's prefill (128k tokens at a few thousand tokens/s,
     * behind a queue) stays well inside this, and so does a non-streamed
     * completion of a few thousand tokens (its head comes when it is done);
     * a wedged worker costs each request two minutes, not five. */
    c->first_byte_timeout_ms = 120000;
    c->upstream_timeout_ms = 300000;
    c->client_timeout_ms = 60000;
    c->scrape_interval_ms = 1000;
    c->max_prompt_tokens = 1u << 20;
    c->max_connections = 4096;
    c->max_buffered_bytes = 256u << 20;
    c->tokenize_timeout_ms = 1000;
}

int gw_write_owned(uv_stream_t *stream, char *buf, size_t len, void *arg, uv_write_cb cb)
{
    gw_write *wr = rm_xmalloc(sizeof *wr);
    wr->arg = arg;
    wr->buf = buf;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    if (uv_write(&wr->req, stream, &b, 1, cb) != 0) {
        free(buf);
        free(wr);
        return -1;
    }
    return 0;
}

/* Closes idle client connections (draining) or all of them and every
 * worker connection (stopping). */
static void close_connections(rm_gateway *g)
{
    gw_close_clients(g, g->stopping);
    if (g->stopping) {
        gw_up_close_unattached(g);
        gw_scrape_close_all(g);
        gw_tokenize_close_all(g);
    }
}

static void on_wake(uv_async_t *a)
{
    rm_gateway *g = a->data;
    pthread_mutex_lock(&g->mu);
    rm_route_job **jobs = g->ready;
    size_t n = g->nready;
    g->ready = NULL;
    g->nready = g->cap = 0;
    int drain = g->want_drain, stop = g->want_stop;
    pthread_mutex_unlock(&g->mu);
    if ((drain || stop) && !g->draining) {
        g->draining = 1;
        if (g->listening) {
            g->listening = 0;
            uv_close((uv_handle_t *)&g->listener, NULL);
        }
    }
    if (stop && !g->stopping) {
        g->stopping = 1;
        gw_scrape_stop(g);
    }
    if (g->draining)
        close_connections(g);
    for (size_t i = 0; i < n; i++)
        gw_req_routed(g, jobs[i]);
    free(jobs);
    if (g->stopping) {
        close_connections(g); /* and whatever the jobs just opened */
        uv_close((uv_handle_t *)&g->wake, NULL);
    }
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static void *gateway_thread(void *arg)
{
    rm_gateway *g = arg;
    uv_run(&g->loop, UV_RUN_DEFAULT);
    return NULL;
}

rm_gateway *rm_gateway_start(const rm_gateway_config *cfg, rm_router *r, int *port, char *err,
                             size_t errlen)
{
    rm_gateway *g = rm_xcalloc(1, sizeof *g);
    g->cfg = *cfg;
    g->router = r;
    pthread_mutex_init(&g->mu, NULL);
    int p = rm_uv_listen(&g->loop, &g->listener, cfg->listen, 511, gw_on_connection, err, errlen);
    if (p < 0) {
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    g->listener.data = g; /* set once initialised; nothing runs before uv_run */
    g->listening = 1;
    *port = p;
    uv_async_init(&g->loop, &g->wake, on_wake);
    g->wake.data = g;
    gw_scrape_start(g);
    pthread_create(&g->thread, NULL, gateway_thread, g);
    return g;
}

/* Raises one of the gateway's requests (want_drain, want_stop) from any
 * thread and wakes its loop. */
static void ask(rm_gateway *g, int *want)
{
    pthread_mutex_lock(&g->mu);
    *want = 1;
    pthread_mutex_unlock(&g->mu);
    uv_async_send(&g->wake);
}

void rm_gateway_drain(rm_gateway *g)
{
    if (g)
        ask(g, &g->want_drain);
}

uint64_t rm_gateway_active(rm_gateway *g)
{
    return g ? __atomic_load_n(&g->c.active, __ATOMIC_RELAXED) : 0;
}

char *rm_gateway_metrics(rm_gateway *g, const char *router_id)
{
    rm_sbuf b = {0};
    gw_counters c;
    c.requests = __atomic_load_n(&g->c.requests, __ATOMIC_RELAXED);
    for (int i = 0; i < 6; i++)
        c.by_class[i] = __atomic_load_n(&g->c.by_class[i], __ATOMIC_RELAXED);
    c.retries = __atomic_load_n(&g->c.retries, __ATOMIC_RELAXED);
    c.client_gone = __atomic_load_n(&g->c.client_gone, __ATOMIC_RELAXED);
    c.upstream_failures = __atomic_load_n(&g->c.upstream_failures, __ATOMIC_RELAXED);
    c.active = __atomic_load_n(&g->c.active, __ATOMIC_RELAXED);
    c.connections = __atomic_load_n(&g->c.connections, __ATOMIC_RELAXED);
    c.paused = __atomic_load_n(&g->c.paused, __ATOMIC_RELAXED);
    c.connects = __atomic_load_n(&g->c.connects, __ATOMIC_RELAXED);
    c.idle = __atomic_load_n(&g->c.idle, __ATOMIC_RELAXED);
    c.timeouts = __atomic_load_n(&g->c.timeouts, __ATOMIC_RELAXED);
    c.over_budget = __atomic_load_n(&g->c.over_budget, __ATOMIC_RELAXED);
    c.over_cap = __atomic_load_n(&g->c.over_cap, __ATOMIC_RELAXED);
    c.offloaded = __atomic_load_n(&g->c.offloaded, __ATOMIC_RELAXED);
    c.scrape_skips = __atomic_load_n(&g->c.scrape_skips, __ATOMIC_RELAXED);
    c.buffered = __atomic_load_n(&g->c.buffered, __ATOMIC_RELAXED);
    c.tokenized = __atomic_load_n(&g->c.tokenized, __ATOMIC_RELAXED);
    c.tokenize_fallbacks = __atomic_load_n(&g->c.tokenize_fallbacks, __ATOMIC_RELAXED);
    c.tokenize_us = __atomic_load_n(&g->c.tokenize_us, __ATOMIC_RELAXED);
    char l[256] = "";
    rm_prom_label(l, sizeof l, "router", router_id);
    rm_prom_metric(&b, "radixmesh_gateway_requests_total", "counter",
                   "HTTP requests the gateway read.", l, (double)c.requests);
    rm_prom_family(&b, "radixmesh_gateway_responses_total", "counter",
                   "Responses by status class.");
    for (int i = 1; i <= 5; i++) {
        char code[8];
        snprintf(code, sizeof code, "%dxx", i);
        rm_prom_sample_by(&b, "radixmesh_gateway_responses_total", l, "code", code,
                          (double)c.by_class[i]);
    }
    const rm_prom_row rows[] = {
        {"radixmesh_gateway_retries_total", "counter", "Requests retried on another worker.",
         c.retries},
        {"radixmesh_gateway_client_disconnects_total", "counter",
         "Requests whose client left before the end (upstream cancelled).", c.client_gone},
        {"radixmesh_gateway_upstream_failures_total", "counter",
         "Requests that failed at the worker after the retry.", c.upstream_failures},
        {"radixmesh_gateway_backpressure_pauses_total", "counter",
         "Times a slow client paused a worker's stream.", c.paused},
        {"radixmesh_gateway_upstream_connects_total", "counter",
         "New connections to workers (requests reuse kept-alive ones).", c.connects},
        {"radixmesh_gateway_idle_upstream_connections", "gauge",
         "Kept-alive worker connections waiting for a request.", c.idle},
        {"radixmesh_gateway_upstream_timeouts_total", "counter",
         "Worker requests that timed out (no response head in time, or silence mid-stream).",
         c.timeouts},
        {"radixmesh_gateway_over_budget_total", "counter",
         "Requests refused (503) because --gateway-max-buffered-bytes was held.", c.over_budget},
        {"radixmesh_gateway_over_connection_cap_total", "counter",
         "Connections refused (503) at --gateway-max-connections.", c.over_cap},
        {"radixmesh_gateway_offloaded_parses_total", "counter",
         "Large request bodies parsed off the gateway's loop.", c.offloaded},
        {"radixmesh_gateway_scrapes_skipped_total", "counter",
         "Scrapes skipped because that worker's previous one was still out.", c.scrape_skips},
        {"radixmesh_gateway_buffered_request_bytes", "gauge",
         "Request bytes held (bodies, pipelined read-ahead).", c.buffered},
        {"radixmesh_gateway_active_requests", "gauge", "Requests in progress.", c.active},
        {"radixmesh_gateway_connections", "gauge", "Open client connections.", c.connections},
    };
    rm_prom_rows(&b, rows, RM_ARRAY_LEN(rows), l);
    if (g->cfg.tokenize) {
        rm_prom_metric(&b, "radixmesh_gateway_tokenized_total", "counter",
                       "Text prompts routed on a worker's /tokenize token ids.", l,
                       (double)c.tokenized);
        rm_prom_metric(&b, "radixmesh_gateway_tokenize_fallbacks_total", "counter",
                       "Text prompts routed on pseudo-tokens: /tokenize failed.", l,
                       (double)c.tokenize_fallbacks);
        rm_prom_metric(&b, "radixmesh_gateway_tokenize_seconds_total", "counter",
                       "Time spent asking /tokenize (its mean: over tokenized + fallbacks).", l,
                       (double)c.tokenize_us / 1e6);
    }
    return b.p;
}

void rm_gateway_stop(rm_gateway *g)
{
    if (!g)
        return;
    ask(g, &g->want_stop);
    pthread_join(g->thread, NULL);
    uv_loop_close(&g->loop);
    pthread_mutex_destroy(&g->mu);
    free(g->ready);
    free(g);
}
