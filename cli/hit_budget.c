/* hit_budget.c -- the hit budget in the CLI (hit_budget.h). */
#include "hit_budget.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "budget.h"
#include "util.h"

static void pct_or_dash(char *out, size_t len, double v)
{
    if (v >= 0)
        snprintf(out, len, "%.1f%%", 100 * v);
    else
        snprintf(out, len, "-");
}

/* One point of a memory curve. At 1x the rate is the cluster's achieved
 * one, not an estimate; the estimators' own 1x figure goes beside it, as on
 * the dashboard, so that a curve whose other points sit above or below the
 * achieved rate reads as the estimators' bias (router/README.md, "How far
 * to trust it"), not as less memory hitting more. */
static void print_curve_point(double memory, double hit_rate, double hit_tokens,
                              uint64_t query_tokens)
{
    char v[16], e[16];
    pct_or_dash(v, sizeof v, hit_rate);
    if (memory == 1) { /* "-": no estimate, e.g. too few samples (rm_budget_rate) */
        pct_or_dash(e, sizeof e, rm_budget_rate(hit_tokens, query_tokens));
        printf(" %gx %s (estimate %s)", memory, v, e);
    } else {
        printf(" %gx %s", memory, v);
    }
}

void cli_budget_print_cluster(const radixmesh_v1_ClusterStats *s)
{
    char inf[16], ideal[16], del[16];
    pct_or_dash(inf, sizeof inf, s->infinite_hit_rate);
    pct_or_dash(ideal, sizeof ideal, s->ideal_hit_rate);
    pct_or_dash(del, sizeof del, s->worker_hit_rate);
    printf("hit budget (since start): infinite %s -> ideal %s -> achieved %.1f%% -> delivered %s\n"
           "memory curve:",
           inf, ideal, 100.0 * s->hit_rate, del);
    for (pb_size_t k = 0; k < s->memory_curve_count; k++) {
        const radixmesh_v1_HitBudgetPoint *p = &s->memory_curve[k];
        print_curve_point(p->memory, p->hit_rate, p->hit_tokens, p->query_tokens);
    }
    printf("\n\n");
}

void cli_budget_print_node(const radixmesh_v1_NodeStats *s)
{
    if (!s->hit_budget_factors_count) {
        printf("hit_budget off\n");
        return;
    }
    printf("hit_budget_query_tokens %" PRIu64 "\nhit_budget_sampling_rate %.4g\n"
           "hit_budget_samples %" PRIu64 "\nhit_budget_memory_bytes %" PRIu64 "\n",
           s->hit_budget_query_tokens, s->hit_budget_sampling_rate, s->hit_budget_samples,
           s->hit_budget_memory_bytes);
    for (pb_size_t i = 0; i < s->hit_budget_factors_count && i < s->hit_budget_hit_tokens_count;
         i++)
        printf("hit_rate_at_memory_%g %.4f\n", s->hit_budget_factors[i],
               s->hit_budget_query_tokens
                   ? s->hit_budget_hit_tokens[i] / (double)s->hit_budget_query_tokens
                   : 0.0);
}

/* ---- replay: the budget over the run ------------------------------------- */

/* Healthy nodes whose Stats the router has not had yet (their pools are
 * unknown). */
static size_t unsized(const rm_cc_cluster *c)
{
    size_t k = 0;
    for (size_t i = 0; i < c->nnodes; i++)
        k += c->nodes[i].healthy && !c->nodes[i].page_tokens;
    return k;
}

void cli_budget_begin(cli_budget *b, rm_cache_client *cc)
{
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    char msg[256];
    /* A node is healthy before its first Stats poll: wait for its pool
     * (bounded; the router polls every --stats-interval). */
    uint64_t deadline = rm_now_ms() + 5000;
    for (;;) {
        if (rm_cc_cluster_stats(cc, &b->before, msg, sizeof msg) != 0) {
            rm_cc_cluster_free(&b->before);
            return;
        }
        if (!unsized(&b->before) || rm_now_ms() > deadline)
            break;
        rm_cc_cluster_free(&b->before);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL); /* one poll step, bounded by the deadline */
    }
    b->have_before = 1;
    uint64_t tokens = 0;
    uint32_t page = 0, policy = 0;
    for (size_t i = 0; i < b->before.nnodes; i++) {
        const radixmesh_v1_NodeStats *n = &b->before.nodes[i];
        if (!n->healthy || !n->page_tokens)
            continue;
        if (!page) {
            page = n->page_tokens;
            policy = n->eviction_policy;
        }
        tokens += n->pool_pages * n->page_tokens;
    }
    b->ideal_pages = page ? tokens / page : 0;
    if (b->ideal_pages &&
        rm_shadow_exact_init(&b->exact, page, (rm_evict_policy)policy, &b->ideal_pages, 1, 1) == 0)
        b->exact_on = 1;
}

void cli_budget_feed(cli_budget *b, const char *ns, const uint32_t *tokens, size_t n)
{
    if (!b->exact_on)
        return;
    pthread_mutex_lock(&b->mu);
    rm_shadow_exact_match(&b->exact, ns, strlen(ns), tokens, n);
    pthread_mutex_unlock(&b->mu);
}

/* a's entry for the node called id, or NULL. */
static const radixmesh_v1_NodeStats *node_in(const rm_cc_cluster *a, const char *id)
{
    for (size_t i = 0; a && id && i < a->nnodes; i++)
        if (a->nodes[i].node_id && !strcmp(a->nodes[i].node_id, id))
            return &a->nodes[i];
    return NULL;
}

/* The cluster's memory curve over the window a..z: each node's estimated
 * hit tokens and query tokens since a (all of them for a node that was
 * not there, or restarted). */
static void window_curve(const rm_cc_cluster *a, const rm_cc_cluster *z, double achieved,
                         rm_budget_point out[RM_BUDGET_POINTS])
{
    rm_budget_node *nodes = rm_xcalloc(z->nnodes + 1, sizeof *nodes);
    double(*hit)[8] = rm_xcalloc(z->nnodes + 1, sizeof *hit);
    for (size_t i = 0; i < z->nnodes; i++) {
        const radixmesh_v1_NodeStats *n = &z->nodes[i], *p = node_in(a, n->node_id);
        if (p && p->hit_budget_query_tokens > n->hit_budget_query_tokens)
            p = NULL; /* restarted: its counters began again */
        size_t m = n->hit_budget_factors_count < n->hit_budget_hit_tokens_count
                       ? n->hit_budget_factors_count
                       : n->hit_budget_hit_tokens_count;
        for (size_t j = 0; j < m && j < 8; j++) {
            hit[i][j] = n->hit_budget_hit_tokens[j];
            for (pb_size_t k = 0; p && k < p->hit_budget_factors_count; k++)
                if (p->hit_budget_factors[k] == n->hit_budget_factors[j])
                    hit[i][j] -= p->hit_budget_hit_tokens[k];
        }
        nodes[i] =
            (rm_budget_node){n->hit_budget_factors, hit[i], m < 8 ? m : 8,
                             n->hit_budget_query_tokens - (p ? p->hit_budget_query_tokens : 0)};
    }
    rm_budget_curve(nodes, z->nnodes, achieved, out);
    free(nodes);
    free(hit);
}

static double diff_rate(uint64_t hit_after, uint64_t hit_before, uint64_t q_after,
                        uint64_t q_before)
{
    return q_after > q_before ? (double)(hit_after - hit_before) / (double)(q_after - q_before)
                              : -1;
}

static json_t *rate_json(double v)
{
    return v >= 0 ? json_real(v) : json_null();
}

json_t *cli_budget_end(cli_budget *b, rm_cache_client *cc)
{
    json_t *j = NULL;
    rm_cc_cluster z;
    char msg[256];
    if (!b->have_before || rm_cc_cluster_stats(cc, &z, msg, sizeof msg) != 0) {
        if (b->have_before)
            rm_cc_cluster_free(&z);
        printf("hit budget: the router's figures could not be read\n");
        goto out;
    }
    const radixmesh_v1_ClusterStats *s0 = &b->before.cs, *s1 = &z.cs;
    double achieved = diff_rate(s1->hit_tokens_total, s0->hit_tokens_total, s1->query_tokens_total,
                                s0->query_tokens_total);
    double delivered = diff_rate(s1->worker_hit_tokens_total, s0->worker_hit_tokens_total,
                                 s1->worker_query_tokens_total, s0->worker_query_tokens_total);
    if (delivered < 0 && !s1->worker_query_tokens_total)
        delivered = s1->worker_hit_rate; /* a rate alone (SGLang), since start; -1: none */
    /* The router's live estimates over the run (-1: off or no data). */
    uint64_t bq = s1->budget_query_tokens - s0->budget_query_tokens;
    int live =
        s1->ideal_sampling_rate > 0 && s1->budget_query_tokens >= s0->budget_query_tokens && bq > 0;
    double live_ideal = live ? rm_budget_rate(s1->ideal_hit_tokens - s0->ideal_hit_tokens, bq) : -1;
    double live_inf =
        live ? rm_budget_rate(s1->infinite_hit_tokens - s0->infinite_hit_tokens, bq) : -1;
    double ideal = live_ideal, inf = live_inf;
    if (b->exact_on && b->exact.query_tokens) {
        ideal = rm_shadow_exact_ratio(&b->exact, 0);
        inf = rm_shadow_exact_infinite_ratio(&b->exact);
    }
    rm_budget_point curve[RM_BUDGET_POINTS];
    window_curve(&b->before, &z, achieved, curve);
    char si[16], sd[16], sa[16], sv[16];
    pct_or_dash(si, sizeof si, inf);
    pct_or_dash(sd, sizeof sd, ideal);
    pct_or_dash(sa, sizeof sa, achieved);
    pct_or_dash(sv, sizeof sv, delivered);
    printf("hit budget over this replay: infinite %s -> ideal %s -> achieved %s -> delivered %s\n",
           si, sd, sa, sv);
    pct_or_dash(si, sizeof si, live_inf);
    pct_or_dash(sd, sizeof sd, live_ideal);
    if (b->exact_on)
        printf("  infinite and ideal exact (offline: one cache of %" PRIu64
               " pages, the healthy nodes' pools); the router's estimates: %s, %s\n",
               b->ideal_pages, si, sd);
    else
        printf("  infinite and ideal: the router's estimates (no healthy node's pool was known)\n");
    printf("  memory curve (the cluster's estimate, routing as it was):");
    for (int k = 0; k < RM_BUDGET_POINTS; k++)
        print_curve_point(curve[k].memory, curve[k].hit_rate, curve[k].hit_tokens,
                          curve[k].query_tokens);
    printf("\n");
    {
        j = json_object();
        json_t *c = json_array(), *l = json_object();
        json_object_set_new(j, "infinite", rate_json(inf));
        json_object_set_new(j, "ideal", rate_json(ideal));
        json_object_set_new(j, "achieved", rate_json(achieved));
        json_object_set_new(j, "delivered", rate_json(delivered));
        for (int k = 0; k < RM_BUDGET_POINTS; k++) {
            json_t *p = json_object();
            json_object_set_new(p, "memory", json_real(curve[k].memory));
            json_object_set_new(p, "hit_rate", rate_json(curve[k].hit_rate));
            json_object_set_new(
                p, "estimate",
                rate_json(rm_budget_rate(curve[k].hit_tokens, curve[k].query_tokens)));
            json_array_append_new(c, p);
        }
        json_object_set_new(j, "memory_curve", c);
        json_object_set_new(j, "exact", json_boolean(b->exact_on));
        json_object_set_new(j, "ideal_pool_pages", json_integer((json_int_t)b->ideal_pages));
        json_object_set_new(l, "infinite", rate_json(live_inf));
        json_object_set_new(l, "ideal", rate_json(live_ideal));
        json_object_set_new(j, "live", l);
    }
    rm_cc_cluster_free(&z);
out:
    if (b->have_before)
        rm_cc_cluster_free(&b->before);
    if (b->exact_on)
        rm_shadow_exact_destroy(&b->exact);
    pthread_mutex_destroy(&b->mu);
    return j;
}
