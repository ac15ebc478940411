/* gateway_scrape.c -- reading every paired worker's /metrics each scrape
 * interval (router/worker_metrics.h reads the page) and reporting what it
 * found to the router thread: whether the worker is reachable, and its
 * own prefix-cache figures. Gateway thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_internal.h"

void gw_scrape_done(gw_up *u)
{
    rm_gateway *g = u->g;
    RM_LIST_DEL(g->scraping, u, sc_prev, sc_next);
    rm_router_worker_report(g->router, &u->report);
}

/* 1 while a scrape of this worker is still out. */
static int scrape_out(rm_gateway *g, const rm_worker_ref *w)
{
    for (gw_up *u = g->scraping; u; u = u->sc_next)
        if (!strcmp(u->report.node_id, w->node_id))
            return 1;
    return 0;
}

/* A round of scrapes: every worker whose last scrape is done. One that
 * answers slowly is skipped alone until its own deadline ends that
 * scrape. */
void gw_on_scrape_timer(uv_timer_t *t)
{
    rm_gateway *g = t->data;
    rm_worker_ref *w;
    size_t n = rm_router_workers(g->router, &w);
    for (size_t i = 0; i < n; i++) {
        if (scrape_out(g, &w[i])) {
            COUNT(g, scrape_skips);
            continue;
        }
        gw_up *u = gw_up_new(g, UP_SCRAPE, w[i].host, w[i].port, NULL);
        snprintf(u->report.node_id, sizeof u->report.node_id, "%s", w[i].node_id);
        u->report.reachable = 1; /* until a failure says otherwise */
        u->report.hit_rate = -1;
        RM_LIST_ADD(g->scraping, u, sc_prev, sc_next);
        gw_up_open(u);
    }
    free(w);
}
