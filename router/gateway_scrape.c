/* gateway_scrape.c -- reading every paired worker's /metrics each scrape
 * interval (router/worker_metrics.h reads the page) and reporting what it
 * found to the router thread: whether the worker is reachable, and its
 * own prefix-cache figures. The HTTP exchange is gateway_link.c's.
 * Gateway thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_internal.h"
#include "log.h"
#include "worker_metrics.h"

#define MAX_SCRAPE_HEAD  (64 * 1024)
#define MAX_SCRAPE_BYTES (8u << 20)

/* One scrape of one worker, on a connection of its own. */
typedef struct gw_scrape gw_scrape;
struct gw_scrape {
    gw_link link;
    rm_gateway *g;
    rm_worker_report report;
    rm_sbuf body;
    gw_scrape *prev, *next; /* g->scraping while in progress */
};

#define SCRAPE_OF(l) GW_CONTAINER(l, gw_scrape, link)

/* Ends the scrape: its report goes to the router. */
static void scrape_close(gw_scrape *s)
{
    if (s->link.closing)
        return;
    rm_gateway *g = s->g;
    LIST_DEL(g->scraping, s);
    rm_router_worker_report(g->router, &s->report);
    gw_link_close(&s->link);
}

static void scrape_failed(gw_link *l, up_failure f, const char *why)
{
    (void)f;
    (void)why;
    gw_scrape *s = SCRAPE_OF(l);
    s->report.reachable = 0;
    scrape_close(s);
}

/* The scrape keeps the deadline it got when it started. */
static void scrape_connected(gw_link *l)
{
    rm_sbuf b = {0};
    rm_sbuf_printf(&b, "GET /metrics HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", l->host,
                   l->port);
    if (gw_link_send(l, b.p, b.len) != 0)
        scrape_failed(l, UPF_CLOSED, "cannot write the request");
}

static int scrape_body(gw_link *l, const char *at, size_t len)
{
    gw_scrape *s = SCRAPE_OF(l);
    if (s->body.len + len > MAX_SCRAPE_BYTES)
        return -1;
    rm_sbuf_append(&s->body, at, len);
    return 0;
}

static void scrape_end(gw_link *l, int extra)
{
    gw_scrape *s = SCRAPE_OF(l);
    (void)extra; /* the connection closes anyway */
    rm_worker_figures f;
    rm_worker_metrics_parse(s->body.p ? s->body.p : "", s->body.len, &f);
    s->report.complete = 1;
    s->report.has_counts = f.has_counts;
    s->report.hit_tokens = f.hit_tokens;
    s->report.query_tokens = f.query_tokens;
    s->report.hit_rate = f.hit_rate;
    s->report.running = f.running;
    s->report.waiting = f.waiting;
    s->report.kv_usage = f.kv_usage;
    scrape_close(s);
}

/* The scrape's deadline, from its start: a worker that answers a byte at
 * a time does not hold it open. Its head, if it came, says the worker is
 * there. */
static void scrape_timer(gw_link *l)
{
    gw_scrape *s = SCRAPE_OF(l);
    rm_log(RM_LOG_DEBUG, "gateway", "scrape of %s:%d: no whole page within %u ms", l->host, l->port,
           s->g->cfg.connect_timeout_ms * 2);
    s->report.reachable = l->status != 0;
    scrape_close(s);
}

static void scrape_freed(gw_link *l)
{
    gw_scrape *s = SCRAPE_OF(l);
    free(s->body.p);
    free(s);
}

static const gw_link_ops scrape_ops = {scrape_connected, NULL,         scrape_body, scrape_end,
                                       scrape_failed,    scrape_timer, scrape_freed};

/* 1 while a scrape of this worker is still out. */
static int scrape_out(rm_gateway *g, const rm_worker_ref *w)
{
    for (gw_scrape *s = g->scraping; s; s = s->next)
        if (!strcmp(s->report.node_id, w->node_id))
            return 1;
    return 0;
}

/* A round of scrapes: every worker whose last scrape is done. One that
 * answers slowly is skipped alone until its own deadline ends that
 * scrape. */
static void on_scrape_timer(uv_timer_t *t)
{
    rm_gateway *g = t->data;
    rm_worker_ref *w;
    size_t n = rm_router_workers(g->router, &w);
    for (size_t i = 0; i < n; i++) {
        if (scrape_out(g, &w[i])) {
            COUNT(g, scrape_skips);
            continue;
        }
        gw_scrape *s = rm_xcalloc(1, sizeof *s);
        s->g = g;
        snprintf(s->report.node_id, sizeof s->report.node_id, "%s", w[i].node_id);
        s->report.reachable = 1; /* until a failure says otherwise */
        s->report.hit_rate = s->report.running = s->report.waiting = s->report.kv_usage = -1;
        gw_link_init(&s->link, &g->loop, &scrape_ops, w[i].host, w[i].port, MAX_SCRAPE_HEAD);
        LIST_ADD(g->scraping, s);
        /* One deadline covers connecting and the whole page. */
        gw_link_arm(&s->link, g->cfg.connect_timeout_ms * 2, 0);
        gw_link_connect(&s->link);
    }
    free(w);
}

void gw_scrape_start(rm_gateway *g)
{
    uv_timer_init(&g->loop, &g->scrape_timer);
    g->scrape_timer.data = g;
    if (g->cfg.scrape_interval_ms)
        uv_timer_start(&g->scrape_timer, on_scrape_timer, g->cfg.scrape_interval_ms,
                       g->cfg.scrape_interval_ms);
}

void gw_scrape_stop(rm_gateway *g)
{
    uv_timer_stop(&g->scrape_timer);
    uv_close((uv_handle_t *)&g->scrape_timer, NULL);
}

void gw_scrape_close_all(rm_gateway *g)
{
    while (g->scraping)
        scrape_close(g->scraping);
}
