/* live_model.h -- the router's live placement, modelled in process for
 * bench_placement: eight nodes (the node's cache code and its hot-prefix
 * sketch), one router replaying a trace in order on a simulated clock.
 *
 * What is modelled as the live cluster does it:
 *   - keys: rm_route_key (router/route_key.h) over the hot set the router
 *     recomputes from the nodes' sketches every stats interval
 *     (rm_hotset_top -> rm_route_hot_set), with the router's defaults;
 *   - candidates: the key's first two ring members under the load bound
 *     (rm_ring_pick_n), peeked (rm_cache_peek) and decided by a rule;
 *   - the request: Match with a lease at the chosen node, Insert with the
 *     lease, Release (a session larger than a pool errs as live);
 *   - load: charged as the live router charges it and decayed on the
 *     simulated clock (request i at i * 1000 / rate ms): the replay runs as
 *     fast as it can, so its wall clock is its request order.
 * One router: the nodes' reports and its own pending add up to exactly the
 * decayed charges it made, so those are used directly (replica effects are
 * measured live, tests/integration/test_router.c).
 *
 * The rules tried (lm_rule) differ in what load counts (requests, or work:
 * prompt tokens not cached on the node plus the reply's tokens), how the
 * bound is drawn and floored, and how two candidates are decided. */
#ifndef RM_LIVE_MODEL_H
#define RM_LIVE_MODEL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "hotset.h"
#include "placement.h"
#include "radixmesh.pb.h"
#include "ring.h"
#include "route_key.h"
#include "trace.h"

#define LM_NODES 8
#define LM_PAGE  16

typedef enum { LM_REQUESTS, LM_WORK } lm_unit;

/* How two peeked candidates are decided. */
typedef enum {
    LM_PREFIX, /* longer credit wins (rm_place_credit); ties: less load */
    LM_SCORE,  /* least load + beta * cost after the request */
    LM_LIVE    /* placement.c's work rule: rm_place_decide_work, spill, rm_place_least */
} lm_choice;

typedef struct lm_rule {
    const char *name;
    lm_unit unit;
    lm_choice choice;
    double factor; /* bounded-load c */
    double floor;  /* LM_REQUESTS: absolute; LM_WORK: in mean request costs */
    double beta;   /* LM_SCORE: weight of the candidate's cost */
    int tie_total; /* LM_PREFIX ties: cumulative work / requests instead of decayed load */
    int key;       /* 0 adaptive, else fixed-N tokens */
    uint32_t choices;
    int post;      /* LM_WORK: bound L + cost on the peeked candidates, spill past both */
    double margin; /* LM_LIVE: rm_place_least's margin, in mean request costs */
    /* Overrides of the environment's (0: its own). */
    uint32_t half_life_ms, max_key_blocks, hot_max_blocks;
} lm_rule;

typedef struct lm_env {
    double rate;           /* requests per second of the simulated replay */
    uint32_t half_life_ms; /* load decay */
    uint32_t stats_ms;     /* hot-set recompute period (bench_router: 250) */
    uint32_t hot_half_life_ms;
    uint32_t max_key_blocks; /* router --max-key-blocks */
    uint32_t hot_max_blocks; /* the node's sketch depth */
    size_t hot_report;       /* entries a node reports */
    double decode_weight;
    const char *layout; /* ring names prefix */
} lm_env;

typedef struct lm_outcome {
    double hit, req_mm, work_mm;
    uint64_t spills, errors;
} lm_outcome;

typedef struct lm_node {
    rm_cache cache;
    rm_hotset hot;
    double load; /* decayed, in the rule's unit */
    uint64_t load_ms;
    double total_work, total_req;
} lm_node;

/* The ring of n <= LM_NODES members named prefix0, prefix1, ..., equal and
 * up, with the router's 256 points each. bench_placement's rules use it
 * too: a layout name then places keys alike in both models. */
static void lm_ring_build(rm_ring *ring, const char *prefix, uint32_t n)
{
    char id[LM_NODES][32];
    const char *ids[LM_NODES];
    uint32_t weight[LM_NODES];
    int up[LM_NODES];
    for (uint32_t j = 0; j < n; j++) {
        snprintf(id[j], sizeof id[j], "%s%u", prefix, j);
        ids[j] = id[j];
        weight[j] = 1;
        up[j] = 1;
    }
    rm_ring_build(ring, ids, weight, up, n, 256);
}

static double lm_load(lm_node *n, uint64_t now, uint32_t hl)
{
    if (now > n->load_ms) {
        n->load = rm_place_decay(n->load, now - n->load_ms, hl);
        n->load_ms = now;
    }
    return n->load;
}

typedef struct lm_bound {
    lm_node *nodes;
    const lm_rule *rule;
    const lm_env *env;
    uint64_t now;
    double cap, cost, slack;
} lm_bound;

static int lm_under(void *ctx, uint32_t m)
{
    lm_bound *b = ctx;
    double l = lm_load(&b->nodes[m], b->now, b->env->half_life_ms);
    if (b->rule->unit == LM_REQUESTS)
        return l + 1 <= b->cap;
    if (b->rule->post)
        return l + b->cost <= b->cap + b->slack * b->cost;
    return l <= b->cap;
}

static void lm_hot(lm_node *nodes, const lm_env *env, uint64_t now, uint64_t **hot, size_t *nhot)
{
    size_t cap = env->hot_report;
    radixmesh_v1_HotPrefix *all = malloc(sizeof *all * (cap * LM_NODES + 1));
    rm_hot_entry *top = malloc(sizeof *top * (cap + 1));
    double total = 0;
    size_t k = 0;
    for (int j = 0; j < LM_NODES; j++) {
        double t;
        size_t got = rm_hotset_top(&nodes[j].hot, 0.01, now, top, cap, &t);
        total += t;
        for (size_t i = 0; i < got; i++)
            all[k++] = (radixmesh_v1_HotPrefix){
                .hash = top[i].hash,
                .blocks = top[i].blocks,
                .requests = top[i].count,
                .lead = top[i].lead_known ? top[i].lead[0] : 0,
                .lead_requests = top[i].lead_count,
                .other_requests = top[i].other,
            };
    }
    *hot = realloc(*hot, sizeof **hot * (k + 1));
    *nhot = rm_route_hot_set(all, k, total, rm_route_hot_share(0, LM_NODES), *hot);
    free(all);
    free(top);
}

static lm_outcome lm_simulate(const rm_trace *w, uint64_t pages, const lm_rule *rule,
                              const lm_env *env0)
{
    lm_env envv = *env0;
    const lm_env *env = &envv;
    if (rule->half_life_ms)
        envv.half_life_ms = rule->half_life_ms;
    if (rule->max_key_blocks)
        envv.max_key_blocks = rule->max_key_blocks;
    if (rule->hot_max_blocks)
        envv.hot_max_blocks = rule->hot_max_blocks;
    lm_node nodes[LM_NODES];
    for (int j = 0; j < LM_NODES; j++) {
        memset(&nodes[j], 0, sizeof nodes[j]);
        rm_cache_config cfg;
        rm_cache_config_defaults(&cfg);
        cfg.page_tokens = LM_PAGE;
        cfg.pool_pages = pages;
        cfg.max_leases_per_peer = 0;
        if (rm_cache_init(&nodes[j].cache, &cfg) != RM_CACHE_OK) {
            fprintf(stderr, "live_model: cannot make a cache\n");
            exit(1);
        }
        rm_hotset_init(&nodes[j].hot, 64, env->hot_max_blocks, 0.01, env->hot_half_life_ms,
                       rm_hotset_capacity(env->hot_max_blocks), 0);
    }
    rm_ring ring = {0};
    lm_ring_build(&ring, env->layout, LM_NODES);
    rm_router_config rc;
    rm_router_config_defaults(&rc);
    rc.key_mode = rule->key ? RM_KEY_FIXED : RM_KEY_ADAPTIVE;
    rc.fixed_key_tokens = rule->key ? (uint32_t)rule->key : 64;
    rc.max_key_blocks = env->max_key_blocks;
    uint64_t *hot = NULL, next_stats = 0;
    size_t nhot = 0;
    uint64_t q = 0, h = 0, spills = 0, errors = 0;
    double mean_cost = 0, sum_work = 0, n_req = 0;
    double work[LM_NODES] = {0}, reqs[LM_NODES] = {0};
    for (size_t i = 0; i < w->n; i++) {
        const rm_trace_req *r = &w->req[i];
        uint64_t now = (uint64_t)((double)i * 1000.0 / env->rate);
        if (now >= next_stats) {
            lm_hot(nodes, env, now, &hot, &nhot);
            next_stats = now + env->stats_ms;
        }
        uint32_t kt;
        uint64_t key = rm_route_key(&rc, hot, nhot, "m", r->tokens, r->n, &kt);
        double out = env->decode_weight * (double)r->output_tokens;
        double miss = (double)r->n + out;
        /* the bound */
        double total = 0;
        for (int j = 0; j < LM_NODES; j++)
            total += lm_load(&nodes[j], now, env->half_life_ms);
        lm_bound b = {nodes, rule, env, now, 0, 0, 0};
        if (rule->unit == LM_REQUESTS) {
            b.cap = rm_place_capacity(rule->factor, total, LM_NODES, rule->floor);
        } else {
            double fair = rule->factor * total / LM_NODES;
            double fl = rule->floor * (mean_cost > 0 ? mean_cost : miss);
            b.cap = fair > fl ? fair : fl;
        }
        uint32_t cand[2];
        int spilled = 0;
        size_t k;
        if ((rule->post || rule->choice == LM_LIVE) && rule->unit == LM_WORK)
            k = rm_ring_pick_n(&ring, key, NULL, NULL, UINT32_MAX, cand, rule->choices, NULL);
        else
            k = rm_ring_pick_n(&ring, key, lm_under, &b, UINT32_MAX, cand, rule->choices, &spilled);
        int64_t cached[2] = {0, 0};
        double cost[2];
        for (size_t c = 0; c < k; c++) {
            cached[c] = (int64_t)rm_cache_peek(&nodes[cand[c]].cache, "m", 1, r->tokens, r->n);
            cost[c] = (double)r->n - (double)cached[c] + out;
        }
        if (rule->post && rule->unit == LM_WORK && rule->choice != LM_LIVE) {
            /* fair share after the request on each candidate */
            int ok[2] = {0, 0}, nok = 0;
            for (size_t c = 0; c < k; c++) {
                double l = lm_load(&nodes[cand[c]], now, env->half_life_ms);
                double cap = rule->factor * (total + cost[c]) / LM_NODES;
                double fl = rule->floor * (mean_cost > 0 ? mean_cost : miss);
                ok[c] = l + cost[c] <= (cap > fl ? cap : fl);
                nok += ok[c];
            }
            if (nok == 1 && k == 2) {
                k = 1;
                if (!ok[0]) {
                    cand[0] = cand[1], cached[0] = cached[1], cost[0] = cost[1];
                }
            } else if (nok == 0) {
                /* past both: the first node under the bound for a miss */
                uint32_t ex[2] = {cand[0], k > 1 ? cand[1] : cand[0]};
                b.cost = miss;
                b.slack = 0;
                b.cap = rule->factor * (total + miss) / LM_NODES;
                double fl = rule->floor * (mean_cost > 0 ? mean_cost : miss);
                b.cap = b.cap > fl ? b.cap : fl;
                uint32_t all[LM_NODES];
                size_t got =
                    rm_ring_pick_n(&ring, key, NULL, NULL, UINT32_MAX, all, LM_NODES, NULL);
                for (size_t c = 0; c < got; c++)
                    if (all[c] != ex[0] && all[c] != ex[1] && lm_under(&b, all[c])) {
                        cand[0] = all[c];
                        cached[0] =
                            (int64_t)rm_cache_peek(&nodes[all[c]].cache, "m", 1, r->tokens, r->n);
                        cost[0] = (double)r->n - (double)cached[0] + out;
                        k = 1;
                        spilled = 1;
                        break;
                    }
            }
        }
        int win = 0;
        if (rule->choice == LM_LIVE) {
            /* router/placement.c's rt_decide, by work */
            rm_place_candidate pc[2];
            double mean = n_req > 0 ? sum_work / n_req : 0;
            double fl = rule->floor > 0 ? rule->floor : rm_place_auto_floor(rule->factor);
            for (size_t c = 0; c < k; c++)
                pc[c] = (rm_place_candidate){
                    .cached = cached[c],
                    .load = lm_load(&nodes[cand[c]], now, env->half_life_ms),
                    .cost = cost[c],
                    .cap = rm_place_work_capacity(rule->factor, total, cost[c], LM_NODES, fl,
                                                  mean > 0 ? mean : miss)};
            double margin = rule->margin * (mean > 0 ? mean : miss);
            int w = rm_place_decide_work(pc, (int)k, kt, margin);
            if (w < 0) {
                b.cost = miss;
                b.slack = 0;
                b.cap = rm_place_work_capacity(rule->factor, total, miss, LM_NODES, fl,
                                               mean > 0 ? mean : miss);
                uint32_t all[LM_NODES];
                size_t got =
                    rm_ring_pick_n(&ring, key, NULL, NULL, UINT32_MAX, all, LM_NODES, NULL);
                for (size_t c = 0; c < got && w < 0; c++)
                    if (all[c] != cand[0] && (k < 2 || all[c] != cand[1]) && lm_under(&b, all[c])) {
                        cand[0] = all[c];
                        k = 1;
                        w = 0;
                        spilled = 1;
                    }
                if (w < 0)
                    w = rm_place_least(pc, (int)k, margin);
            } else {
                int64_t best = rm_place_credit(cached[0], kt);
                if (k > 1 && rm_place_credit(cached[1], kt) > best)
                    best = rm_place_credit(cached[1], kt);
                spilled = rm_place_credit(cached[w], kt) < best;
            }
            win = w;
        } else if (k == 2) {
            double l0 = lm_load(&nodes[cand[0]], now, env->half_life_ms);
            double l1 = lm_load(&nodes[cand[1]], now, env->half_life_ms);
            if (rule->choice == LM_PREFIX) {
                int64_t a = rm_place_credit(cached[0], kt), bb = rm_place_credit(cached[1], kt);
                if (a != bb) {
                    win = bb > a;
                } else if (rule->tie_total) {
                    double t0 = rule->unit == LM_WORK ? nodes[cand[0]].total_work
                                                      : nodes[cand[0]].total_req;
                    double t1 = rule->unit == LM_WORK ? nodes[cand[1]].total_work
                                                      : nodes[cand[1]].total_req;
                    win = t1 < t0;
                } else {
                    win = l1 + (rule->unit == LM_WORK ? cost[1] : 0) <
                          l0 + (rule->unit == LM_WORK ? cost[0] : 0);
                }
            } else if (rule->choice == LM_SCORE) {
                win = l1 + rule->beta * cost[1] < l0 + rule->beta * cost[0];
            }
        }
        lm_node *n = &nodes[cand[win]];
        rm_match_result mr;
        rm_insert_result ir;
        rm_cache_match(&n->cache, NULL, "m", 1, r->tokens, r->n, 1, 0, now, &mr);
        rm_hotset_add(&n->hot, "m", 1, r->tokens, r->n, now);
        rm_cache_result rc2 =
            rm_cache_insert(&n->cache, NULL, "m", 1, r->tokens, r->n, mr.lease_id, now, &ir);
        errors += rc2 != RM_CACHE_OK;
        if (mr.lease_id)
            rm_cache_release(&n->cache, NULL, mr.lease_id);
        double done = (double)r->n - (double)mr.matched_tokens + out;
        lm_load(n, now, env->half_life_ms);
        n->load += rule->unit == LM_WORK ? done : 2; /* requests: Match + pinned Insert */
        n->total_work += done;
        n->total_req += 1;
        mean_cost = mean_cost > 0 ? mean_cost + (done - mean_cost) / 64 : done;
        sum_work += done;
        n_req += 1;
        spills += spilled;
        q += r->n;
        h += mr.matched_tokens;
        work[cand[win]] += (double)r->n - (double)mr.matched_tokens + (double)r->output_tokens;
        reqs[cand[win]] += 1;
    }
    double wmax = 0, wsum = 0, rmax = 0;
    for (int j = 0; j < LM_NODES; j++) {
        wmax = work[j] > wmax ? work[j] : wmax;
        wsum += work[j];
        rmax = reqs[j] > rmax ? reqs[j] : rmax;
        rm_cache_destroy(&nodes[j].cache);
        rm_hotset_destroy(&nodes[j].hot);
    }
    rm_ring_free(&ring);
    free(hot);
    return (lm_outcome){(double)h / (double)q, rmax / ((double)w->n / LM_NODES),
                        wsum > 0 ? wmax / (wsum / LM_NODES) : 0, spills, errors};
}

#endif
