/* shadow_cluster.h -- a trace through 8 in-process nodes with the issue-16
 * estimators beside their exact counterparts; shared by
 * tests/unit/test_shadow.c (asserts the figures) and
 * tests/bench/bench_shadow.c (prints them, with the CPU they cost).
 *
 * Placement: each request goes to node mix(conversation) % 8, a simple
 * session hash that does not look at the caches, so a second replay with
 * every pool doubled sees exactly the same traffic per node. Pools: each
 * node gets capacity x (the trace's distinct pages) / 8 pages.
 *
 * Per node: the node itself (rm_cache with its pool: Match, then Insert,
 * as a client's cycle), its rm_shadow (rm_shadow_config_node) and an
 * rm_shadow_exact with caches of factor x pool for each factor. The
 * router: an rm_shadow (rm_shadow_config_router over the summed pools)
 * and an rm_shadow_exact with one cache of the summed pools plus the
 * unbounded one. The 2x replay: 8 more rm_caches of twice the pool, fed
 * the same requests. */
#ifndef RM_SHADOW_CLUSTER_H
#define RM_SHADOW_CLUSTER_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "shadow.h"
#include "shadow_exact.h"
#include "trace.h"
#include "util.h"

#define SC_NODES   8
#define SC_PAGE    16
#define SC_FACTORS 5

typedef struct sc_options {
    double capacity;      /* cluster pool / distinct pages of the trace */
    size_t node_budget;   /* 0: the default */
    size_t router_budget; /* per router shadow; 0: the default */
    double max_rate;      /* cfg.max_rate of every shadow; 0: the default */
    uint32_t min_sample;  /* cfg.min_sample of every shadow; 0: the default */
    rm_evict_policy policy;
} sc_options;

typedef struct sc_figures {
    uint64_t distinct_pages, pool_pages; /* pool_pages: per node */
    size_t requests;
    uint64_t tokens;
    /* the cluster's hit ratio with every pool scaled by factor: estimate
     * (each node's estimate weighted by its query tokens) and exact */
    double est[SC_FACTORS], exact[SC_FACTORS];
    double node_err[SC_FACTORS]; /* largest |estimate - exact| of one node */
    double achieved;             /* the real nodes' hit ratio */
    double real2x;               /* the second replay, pools doubled */
    double ideal_est, ideal_exact, inf_est, inf_exact;
    double rate_min, rate_max, router_rate, router_inf_rate;
    size_t node_mem_max, router_mem;
    uint64_t node_samples_min; /* sampled page accesses of the least sampled node */
} sc_figures;

/* CPU time of one pass over the trace, best of `rounds` passes each. */
typedef struct sc_cpu {
    uint64_t ns_node;          /* the nodes' Match+Insert (rm_cache) */
    uint64_t ns_node_shadow;   /* the nodes' estimators */
    uint64_t ns_router_shadow; /* the router's ideal + infinite */
} sc_cpu;

static const double sc_factor[SC_FACTORS] = {0.25, 0.5, 1, 2, 4};

static void sc_cache_open(rm_cache *c, uint64_t pages, rm_evict_policy policy)
{
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = SC_PAGE;
    cfg.pool_pages = pages;
    cfg.policy = policy;
    if (rm_cache_init(c, &cfg) != 0) {
        fprintf(stderr, "shadow_cluster: cannot make a %llu-page cache\n",
                (unsigned long long)pages);
        exit(1);
    }
}

static uint64_t sc_cycle(rm_cache *c, const rm_trace_req *r, uint64_t now)
{
    rm_match_result mr;
    rm_insert_result ir;
    memset(&mr, 0, sizeof mr);
    if (rm_cache_match(c, NULL, "m", 1, r->tokens, r->n, 0, 0, now, &mr) != 0)
        mr.matched_tokens = 0;
    (void)rm_cache_insert(c, NULL, "m", 1, r->tokens, r->n, 0, now, &ir);
    return mr.matched_tokens;
}

static uint64_t sc_distinct_pages(const rm_trace *t)
{
    rm_shadow_exact e;
    if (rm_shadow_exact_init(&e, SC_PAGE, RM_EVICT_LRU, NULL, 0, 1) != 0)
        exit(1);
    for (size_t i = 0; i < t->n; i++)
        rm_shadow_exact_match(&e, "m", 1, t->req[i].tokens, t->req[i].n);
    uint64_t n = rm_shadow_exact_pages(&e);
    rm_shadow_exact_destroy(&e);
    return n;
}

static uint64_t sc_pages(double factor, uint64_t pool)
{
    uint64_t p = (uint64_t)llround(factor * (double)pool);
    return p ? p : 1;
}

static void sc_run(const rm_trace *t, const sc_options *o, sc_figures *f)
{
    memset(f, 0, sizeof *f);
    f->distinct_pages = sc_distinct_pages(t);
    f->pool_pages = (uint64_t)((double)f->distinct_pages * o->capacity / SC_NODES);
    if (f->pool_pages == 0)
        f->pool_pages = 1;
    uint64_t pool = f->pool_pages;

    rm_cache node[SC_NODES], twice[SC_NODES];
    rm_shadow sh[SC_NODES];
    rm_shadow_exact ex[SC_NODES];
    uint64_t caps[SC_FACTORS];
    for (int k = 0; k < SC_FACTORS; k++)
        caps[k] = sc_pages(sc_factor[k], pool);
    for (int j = 0; j < SC_NODES; j++) {
        sc_cache_open(&node[j], pool, o->policy);
        sc_cache_open(&twice[j], 2 * pool, o->policy);
        rm_shadow_config cfg;
        rm_shadow_config_node(&cfg, SC_PAGE, pool, o->policy);
        if (o->node_budget)
            cfg.budget_bytes = o->node_budget;
        cfg.max_rate = o->max_rate;
        cfg.min_sample = o->min_sample;
        if (rm_shadow_init(&sh[j], &cfg) != RM_SHADOW_OK ||
            rm_shadow_exact_init(&ex[j], SC_PAGE, o->policy, caps, SC_FACTORS, 0) != 0) {
            fprintf(stderr, "shadow_cluster: cannot make node %d's shadows\n", j);
            exit(1);
        }
    }
    rm_shadow router;
    rm_shadow_exact rex;
    rm_shadow_config rcfg;
    rm_shadow_config_router(&rcfg, SC_PAGE, SC_NODES * pool, o->policy);
    if (o->router_budget)
        rcfg.budget_bytes = rcfg.infinite_budget_bytes = o->router_budget;
    rcfg.max_rate = o->max_rate;
    rcfg.min_sample = o->min_sample;
    uint64_t total = SC_NODES * pool;
    if (rm_shadow_init(&router, &rcfg) != RM_SHADOW_OK ||
        rm_shadow_exact_init(&rex, SC_PAGE, o->policy, &total, 1, 1) != 0) {
        fprintf(stderr, "shadow_cluster: cannot make the router's shadows\n");
        exit(1);
    }

    uint64_t hit = 0, hit2 = 0, query = 0;
    for (size_t i = 0; i < t->n; i++) {
        const rm_trace_req *r = &t->req[i];
        int j = (int)(rm_mix64(r->conversation) % SC_NODES);
        hit += sc_cycle(&node[j], r, i);
        rm_shadow_match(&sh[j], "m", 1, r->tokens, r->n);
        rm_shadow_match(&router, "m", 1, r->tokens, r->n);
        hit2 += sc_cycle(&twice[j], r, i);
        rm_shadow_exact_match(&ex[j], "m", 1, r->tokens, r->n);
        rm_shadow_exact_match(&rex, "m", 1, r->tokens, r->n);
        query += r->n;
    }
    f->requests = t->n;
    f->tokens = query;
    f->achieved = (double)hit / (double)query;
    f->real2x = (double)hit2 / (double)query;
    f->rate_min = 1;
    f->node_samples_min = UINT64_MAX;
    for (int k = 0; k < SC_FACTORS; k++) {
        double est = 0, exact = 0;
        for (int j = 0; j < SC_NODES; j++) {
            const rm_shadow_counts *c = &sh[j].counts;
            double e = rm_shadow_hit_tokens(c, NULL, (uint32_t)k);
            est += e;
            exact += (double)ex[j].hit_tokens[k];
            if (c->query_tokens) {
                double d = fabs(e - (double)ex[j].hit_tokens[k]) / (double)c->query_tokens;
                f->node_err[k] = d > f->node_err[k] ? d : f->node_err[k];
            }
        }
        f->est[k] = est / (double)query;
        f->exact[k] = exact / (double)query;
    }
    for (int j = 0; j < SC_NODES; j++) {
        double r = rm_shadow_rate(&sh[j]);
        f->rate_min = r < f->rate_min ? r : f->rate_min;
        f->rate_max = r > f->rate_max ? r : f->rate_max;
        size_t m = rm_shadow_memory_bytes(&sh[j]);
        f->node_mem_max = m > f->node_mem_max ? m : f->node_mem_max;
        if (sh[j].counts.samples < f->node_samples_min)
            f->node_samples_min = sh[j].counts.samples;
        rm_cache_destroy(&node[j]);
        rm_cache_destroy(&twice[j]);
        rm_shadow_destroy(&sh[j]);
        rm_shadow_exact_destroy(&ex[j]);
    }
    f->ideal_est = rm_shadow_hit_ratio(&router.counts, NULL, 0);
    f->inf_est = rm_shadow_infinite_hit_ratio(&router.counts, NULL);
    f->ideal_exact = rm_shadow_exact_ratio(&rex, 0);
    f->inf_exact = rm_shadow_exact_infinite_ratio(&rex);
    f->router_rate = rm_shadow_rate(&router);
    f->router_inf_rate = rm_shadow_infinite_rate(&router);
    f->router_mem = rm_shadow_memory_bytes(&router);
    rm_shadow_destroy(&router);
    rm_shadow_exact_destroy(&rex);
}

/* Where the untimed read of a batch goes, so it is not optimised away. */
static volatile uint32_t sc_sink;

static inline uint64_t sc_thread_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline uint64_t sc_min(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* The requests go in batches of up to 1 MiB of tokens; each batch is read
 * once untimed (a node has just decoded them), then each part runs over it
 * alone, timed on the thread's CPU clock: every part sees the same
 * requests with their tokens in cache, as in a node, where the estimator
 * runs right after the Match on the same tokens, and a moment the thread
 * was preempted costs nothing. Best of `rounds` replays, per part. */
static inline void sc_time(const rm_trace *t, const sc_options *o, uint64_t pool, int rounds,
                           sc_cpu *out)
{
    out->ns_node = out->ns_node_shadow = out->ns_router_shadow = UINT64_MAX;
    for (int round = 0; round < rounds; round++) {
        rm_cache node[SC_NODES];
        rm_shadow sh[SC_NODES], router;
        rm_shadow_config cfg;
        for (int j = 0; j < SC_NODES; j++) {
            sc_cache_open(&node[j], pool, o->policy);
            rm_shadow_config_node(&cfg, SC_PAGE, pool, o->policy);
            if (o->node_budget)
                cfg.budget_bytes = o->node_budget;
            cfg.max_rate = o->max_rate;
            cfg.min_sample = o->min_sample;
            if (rm_shadow_init(&sh[j], &cfg) != RM_SHADOW_OK)
                exit(1);
        }
        rm_shadow_config_router(&cfg, SC_PAGE, SC_NODES * pool, o->policy);
        if (o->router_budget)
            cfg.budget_bytes = cfg.infinite_budget_bytes = o->router_budget;
        cfg.max_rate = o->max_rate;
        cfg.min_sample = o->min_sample;
        if (rm_shadow_init(&router, &cfg) != RM_SHADOW_OK)
            exit(1);
        uint64_t ns[3] = {0, 0, 0};
        for (size_t b = 0; b < t->n;) {
            size_t e = b, tokens = 0;
            while (e < t->n && (e == b || tokens + t->req[e].n <= (1u << 18)))
                tokens += t->req[e++].n;
            uint32_t x = 0;
            for (size_t i = b; i < e; i++)
                for (size_t k = 0; k < t->req[i].n; k += 16)
                    x ^= t->req[i].tokens[k];
            sc_sink ^= x;
            uint64_t t0 = sc_thread_ns();
            for (size_t i = b; i < e; i++)
                sc_cycle(&node[rm_mix64(t->req[i].conversation) % SC_NODES], &t->req[i], i);
            uint64_t t1 = sc_thread_ns();
            for (size_t i = b; i < e; i++)
                rm_shadow_match(&sh[rm_mix64(t->req[i].conversation) % SC_NODES], "m", 1,
                                t->req[i].tokens, t->req[i].n);
            uint64_t t2 = sc_thread_ns();
            for (size_t i = b; i < e; i++)
                rm_shadow_match(&router, "m", 1, t->req[i].tokens, t->req[i].n);
            uint64_t t3 = sc_thread_ns();
            ns[0] += t1 - t0;
            ns[1] += t2 - t1;
            ns[2] += t3 - t2;
            b = e;
        }
        out->ns_node = sc_min(out->ns_node, ns[0]);
        out->ns_node_shadow = sc_min(out->ns_node_shadow, ns[1]);
        out->ns_router_shadow = sc_min(out->ns_router_shadow, ns[2]);
        for (int j = 0; j < SC_NODES; j++) {
            rm_cache_destroy(&node[j]);
            rm_shadow_destroy(&sh[j]);
        }
        rm_shadow_destroy(&router);
    }
}

#endif
