/* bench_placement: how much of one LRU cache eight LRU caches of an eighth of
 * its size reach under placement rules a router could and could not
 * implement (an oracle is a strong rule, not a proof of the best one).
 *
 * bench_router's table A measures the live router on the Mooncake trace.
 * This replays the same trace through eight in-process caches (the node's
 * own cache code, same page size and capacities) to separate what placement
 * loses from what splitting the capacity loses:
 *
 *   ring-1       consistent hashing of the first 64 tokens (fixed-64 keys)
 *   ring-2       the key's first two ring members; the longer cached prefix
 *                wins, then the one that served fewer requests (the router's
 *                default rule, modelled without its load bound)
 *   oracle       every cache's longest match is known: the longest wins;
 *                ties, new prefixes included, go to the cache whose LRU tail
 *                is oldest (the one whose capacity is least in use). No
 *                router can know this without asking every node each time.
 *   oracle+move  as oracle, but when the winner's LRU tail is three times
 *                younger than the oldest tail, the request goes to that
 *                oldest cache and the prefix found elsewhere counts as a hit
 *                (as if its KV were copied between nodes)
 *
 *   session-2    as ring-2, keyed by the request's conversation (the trace's
 *                "session", a Mooncake request's first block): a key that
 *                tells every conversation apart and never splits one, what
 *                the router's adaptive key aims at
 *
 * at capacities of 5-50% of the trace's unique blocks, each over six
 * layouts (see below). Ratios are to the single LRU
 * of the same total capacity, measured in the same run. Then, at 10%, per
 * rule: the ratio, max/mean requests and max/mean work per cache (work:
 * the prompt tokens a cache did not hold plus the reply's tokens, what its
 * GPU would compute) and Inserts that found every page pinned.
 *
 * The eight caches evict by --eviction (default lru); the detail then also
 * gives one cache of that policy and the total size ("single"). The
 * baseline stays the single leaf-first LRU. --seq-share caps what one
 * sequence may cache in a cache (rm_cache_config.max_sequence_pct).
 *
 * Usage: bench_placement [--trace agentic|chat|builtin|FILE] [--seed N]
 *                        [--requests N] [--block-tokens 64] [--capacity PCT]
 *                        [--eviction lru|lfu|lfu-da|gdsf] [--seq-share PCT] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "live_model.h"
#include "lru_baseline.h"
#include "prefix_key.h"
#include "ring.h"
#include "trace.h"
#include "workload.h"

#define CACHES 8
#define PAGE   16
#define KEY    64
_Static_assert(CACHES <= LM_NODES, "lm_ring_build names at most LM_NODES members");

/* Layout l: ring node names layouts[l] and caches l pages (at most 0.3%)
 * larger. The nudge shows how much a result owes to chance: the oracles do
 * not look at names, yet move by up to 0.03 with it. */
static const char *const layouts[] = {"node-", "n", "radixmesh-node-", "cache-", "x", "worker-"};
enum { LAYOUTS = sizeof layouts / sizeof *layouts };

typedef enum {
    RULE_RING1,
    RULE_RING2,
    RULE_SESSION2,
    RULE_ORACLE,
    RULE_ORACLE_MOVE,
    RULE_COUNT
} rule;
static const char *const rule_names[RULE_COUNT] = {"ring-1", "ring-2", "session-2", "oracle",
                                                   "oracle+move"};

typedef struct outcome {
    double hit, max_mean, work_max_mean;
    uint64_t errors; /* Inserts that found no page to take */
} outcome;

static rm_evict_policy policy = RM_EVICT_LRU;
static uint32_t seq_share;

static rm_cache_config cache_config(uint64_t pages)
{
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = PAGE;
    cfg.pool_pages = pages;
    cfg.policy = policy;
    cfg.max_sequence_pct = seq_share;
    return cfg;
}

static void cache_open(rm_cache *c, uint64_t pages)
{
    rm_cache_config cfg = cache_config(pages);
    if (rm_cache_init(c, &cfg) != RM_CACHE_OK) {
        fprintf(stderr, "bench_placement: cannot make a %llu-page cache\n",
                (unsigned long long)pages);
        exit(1);
    }
}

/* Requests since the cache's LRU tail was last used; an empty or fully free
 * cache counts as older than any tail. */
static uint64_t tail_age(const rm_cache *c, uint64_t now)
{
    const rm_radix_node *v = rm_radix_next_victim(&c->tree);
    return v ? now - v->last_ms : UINT64_MAX;
}

static uint32_t choose(rule how, rm_cache *c, const rm_ring *ring, const uint64_t *served,
                       const rm_trace_req *r, uint64_t now, size_t *moved_hit)
{
    *moved_hit = 0;
    if (how == RULE_RING1 || how == RULE_RING2 || how == RULE_SESSION2) {
        uint64_t key = how == RULE_SESSION2 ? rm_mix64(r->conversation)
                                            : rm_prefix_chain(rm_prefix_ns_hash("m", 1), r->tokens,
                                                              r->n < KEY ? r->n : KEY);
        uint32_t cand[2];
        size_t k = rm_ring_pick_n(ring, key, NULL, NULL, UINT32_MAX, cand,
                                  how == RULE_RING1 ? 1 : 2, NULL);
        if (k < 2)
            return cand[0];
        size_t a = rm_cache_peek(&c[cand[0]], "m", 1, r->tokens, r->n);
        size_t b = rm_cache_peek(&c[cand[1]], "m", 1, r->tokens, r->n);
        return b > a || (b == a && served[cand[1]] < served[cand[0]]) ? cand[1] : cand[0];
    }
    size_t have[CACHES], best = 0;
    for (int j = 0; j < CACHES; j++) {
        have[j] = rm_cache_peek(&c[j], "m", 1, r->tokens, r->n);
        best = have[j] > best ? have[j] : best;
    }
    uint32_t pick = 0, coldest = 0;
    for (uint32_t j = 0; j < CACHES; j++) {
        if (have[j] > have[pick] ||
            (have[j] == have[pick] && tail_age(&c[j], now) > tail_age(&c[pick], now)))
            pick = j;
        if (tail_age(&c[j], now) > tail_age(&c[coldest], now))
            coldest = j;
    }
    if (how == RULE_ORACLE_MOVE && coldest != pick) {
        uint64_t a = tail_age(&c[pick], now), b = tail_age(&c[coldest], now);
        if (b == UINT64_MAX || a < b / 3) {
            *moved_hit = best - have[coldest];
            return coldest;
        }
    }
    return pick;
}

static outcome simulate(const rm_trace *w, uint64_t pages, rule how, int layout)
{
    rm_cache c[CACHES];
    for (int j = 0; j < CACHES; j++)
        cache_open(&c[j], pages);
    rm_ring ring = {0};
    lm_ring_build(&ring, layouts[layout], CACHES);
    uint64_t served[CACHES] = {0}, work[CACHES] = {0}, q = 0, h = 0, errors = 0;
    for (size_t i = 0; i < w->n; i++) {
        const rm_trace_req *r = &w->req[i];
        size_t moved_hit;
        uint32_t j = choose(how, c, &ring, served, r, i, &moved_hit);
        rm_match_result mr;
        rm_insert_result ir;
        rm_cache_match(&c[j], NULL, "m", 1, r->tokens, r->n, 0, 0, i, &mr);
        errors += rm_cache_insert(&c[j], NULL, "m", 1, r->tokens, r->n, 0, i, &ir) != RM_CACHE_OK;
        q += r->n;
        h += mr.matched_tokens + moved_hit;
        served[j]++;
        work[j] += r->n - mr.matched_tokens - moved_hit + r->output_tokens;
    }
    uint64_t max = 0, wmax = 0, wsum = 0;
    for (int j = 0; j < CACHES; j++) {
        max = served[j] > max ? served[j] : max;
        wmax = work[j] > wmax ? work[j] : wmax;
        wsum += work[j];
        rm_cache_destroy(&c[j]);
    }
    rm_ring_free(&ring);
    return (outcome){(double)h / (double)q, (double)max / ((double)w->n / CACHES),
                     wsum ? (double)wmax / ((double)wsum / CACHES) : 0, errors};
}

static uint64_t capacity_pages(const rm_trace *w, size_t block, double fraction)
{
    uint64_t tokens = (uint64_t)((double)(w->unique_blocks * block) * fraction / CACHES);
    return (tokens + PAGE - 1) / PAGE;
}

/* One row of the table: the single LRU, then each rule's ratio range. */
static void capacity_row(const rm_trace *w, size_t block, double fraction)
{
    uint64_t pages = capacity_pages(w, block, fraction);
    double one[LAYOUTS];
    for (int l = 0; l < LAYOUTS; l++)
        one[l] = single_lru_hit(w, PAGE, (pages + (uint64_t)l) * CACHES);
    printf("   %-9.0f %-8.4f", fraction * 100, one[0]);
    for (int r = 0; r < RULE_COUNT; r++) {
        double lo = 1e9, hi = 0, worst_mm = 0;
        for (int l = 0; l < LAYOUTS; l++) {
            outcome o = simulate(w, pages + (uint64_t)l, (rule)r, l);
            double ratio = o.hit / one[l];
            lo = ratio < lo ? ratio : lo;
            hi = ratio > hi ? ratio : hi;
            worst_mm = o.max_mean > worst_mm ? o.max_mean : worst_mm;
        }
        char cell[64];
        snprintf(cell, sizeof cell, "%.3f-%.3f (%.2f)", lo, hi, worst_mm);
        printf(" %-22s", cell);
    }
    printf("\n");
}

/* Per rule at one capacity, layout 0: ratio, balance of requests and of
 * work, errors. */
static void capacity_detail(const rm_trace *w, size_t block, double fraction)
{
    uint64_t pages = capacity_pages(w, block, fraction);
    double one = single_lru_hit(w, PAGE, pages * CACHES);
    size_t over, convs = rm_trace_conversations(w, pages * PAGE, &over);
    printf("   at %.0f%% (layout %s*): single LRU hit %.4f; each cache %llu tokens; %zu of %zu "
           "conversations have a request larger than one cache\n",
           fraction * 100, layouts[0], one, (unsigned long long)(pages * PAGE), over, convs);
    printf("   %-12s %-8s %-9s %-14s %-14s %s\n", "rule", "hit", "ratio", "max/mean req",
           "max/mean work", "insert errors");
    for (int r = 0; r < RULE_COUNT; r++) {
        outcome o = simulate(w, pages, (rule)r, 0);
        printf("   %-12s %-8.4f %-9.3f %-14.3f %-14.3f %llu\n", rule_names[r], o.hit, o.hit / one,
               o.max_mean, o.work_max_mean, (unsigned long long)o.errors);
    }
    rm_cache_config one_cfg = cache_config(pages * CACHES);
    double single = single_cache_hit(w, &one_cfg);
    printf("   %-12s %-8.4f %-9.3f (one %s cache of the total size)\n", "single", single,
           single / one, rm_evict_policy_name(policy));
}

/* E. The live rule and its alternatives on the modelled cluster, a row a
 * rule. The columns are lm_rule's fields in order (live_model.h says what
 * each means; 0 in the last three keeps the environment's):
 *   name, unit, choice, factor, floor, beta, tie_total, key, choices, post, margin,
 *   half_life_ms, max_key_blocks, hot_max_blocks */
static const lm_rule live_rules[] = {
    {"requests (before)", LM_REQUESTS, LM_PREFIX, 1.25, 32, 0, 1, 0, 2, 0, 0, 1000, 128, 256},
    {"requests, deep keys", LM_REQUESTS, LM_PREFIX, 1.25, 32, 0, 1, 0, 2, 0, 0, 1000, 0, 0},
    {"work, walk bound 1.25", LM_WORK, LM_PREFIX, 1.25, 16, 0, 0, 0, 2, 0, 0, 0, 0, 0},
    {"work, least L+cost", LM_WORK, LM_SCORE, 1.25, 16, 1, 0, 0, 2, 1, 0, 0, 0, 0},
    {"work, no bound", LM_WORK, LM_LIVE, 1e9, 1, 0, 0, 0, 2, 0, 1, 0, 0, 0},
    {"work 1.25, margin 1", LM_WORK, LM_LIVE, 1.25, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0},
    {"work 1.1, margin 0", LM_WORK, LM_LIVE, 1.1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0},
    {"work 1.1, 1 s half-life", LM_WORK, LM_LIVE, 1.1, 0, 0, 0, 0, 2, 0, 1, 1000, 0, 0},
    {"work 1.1, margin 1 (default)", LM_WORK, LM_LIVE, 1.1, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0},
};

static void live_table(const rm_trace *w, size_t block, double fraction, double rate,
                       const char *only)
{
    uint64_t pages = capacity_pages(w, block, fraction);
    double one = single_lru_hit(w, PAGE, pages * CACHES);
    lm_env env = {rate, 30000, 250, 10000, 0, rm_hotset_depth(64), 256, 1.0, "node-"};
    const char *e = getenv("LM_ENV"); /* research knobs: hl,maxkey,hotdepth,report */
    static char layout[32];
    if (e && sscanf(e, "%u,%u,%u,%zu,%31[^,],%u,%u", &env.half_life_ms, &env.max_key_blocks,
                    &env.hot_max_blocks, &env.hot_report, layout, &env.hot_half_life_ms,
                    &env.stats_ms) >= 5)
        env.layout = layout;
    printf("E. live rule model at %.0f%%, %.0f requests/s, half-life %u ms, key depth %u, hot "
           "depth %u: single LRU %.4f\n",
           fraction * 100, rate, env.half_life_ms, env.max_key_blocks, env.hot_max_blocks, one);
    printf("   %-28s %-8s %-7s %-8s %-8s %-7s %s\n", "rule", "hit", "ratio", "req m/m", "work m/m",
           "spills", "errors");
    lm_rule extra[32];
    size_t nextra = 0;
    const char *spec = getenv("LM_RULES"); /* "u,ch,c,floor,beta,tie,post;..." */
    for (const char *p = spec; p && *p && nextra < 32;) {
        lm_rule *x = &extra[nextra];
        int u, ch;
        memset(x, 0, sizeof *x);
        if (sscanf(p, "%d,%d,%lf,%lf,%lf,%d,%d,%lf,%u", &u, &ch, &x->factor, &x->floor, &x->beta,
                   &x->tie_total, &x->post, &x->margin, &x->half_life_ms) < 7)
            break;
        x->unit = (lm_unit)u;
        x->choice = (lm_choice)ch;
        x->choices = 2;
        char *nm = malloc(64);
        size_t len = strcspn(p, ";");
        snprintf(nm, 64, "%.*s", (int)len, p);
        x->name = nm;
        nextra++;
        p += len;
        if (*p == ';')
            p++;
    }
    size_t nrules = nextra ? nextra : sizeof live_rules / sizeof *live_rules;
    for (size_t i = 0; i < nrules; i++) {
        const lm_rule *rl = nextra ? &extra[i] : &live_rules[i];
        if (only && !strstr(rl->name, only))
            continue;
        lm_outcome o = lm_simulate(w, pages, rl, &env);
        printf("   %-28s %-8.4f %-7.3f %-8.3f %-8.3f %-7llu %llu\n", rl->name, o.hit, o.hit / one,
               o.req_mm, o.work_mm, (unsigned long long)o.spills, (unsigned long long)o.errors);
        fflush(stdout);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_placement [--trace agentic|chat|builtin|FILE] [--seed N] "
            "[--requests N] [--block-tokens B] [--capacity PCT] "
            "[--eviction lru|lfu|lfu-da|gdsf] [--seq-share PCT] [--live RATE [--rule NAME]]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *trace = "../shared/traces/mooncake_synthetic_trace.jsonl";
    size_t block = 64, requests = 0;
    uint64_t seed = 42;
    double capacity = 0, rate = 200;
    int live = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--trace"))
            trace = argv[++i];
        else if (!strcmp(argv[i], "--block-tokens") && atoi(argv[i + 1]) > 0)
            block = (size_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed"))
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--requests"))
            requests = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--capacity") && atof(argv[i + 1]) > 0)
            capacity = atof(argv[++i]) / 100;
        else if (!strcmp(argv[i], "--live") && atof(argv[i + 1]) > 0)
            live = 1, rate = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rule"))
            only = argv[++i];
        else if (!strcmp(argv[i], "--eviction") && !rm_evict_policy_parse(argv[i + 1], &policy))
            i++;
        else if (!strcmp(argv[i], "--seq-share") && atoi(argv[i + 1]) > 0 &&
                 atoi(argv[i + 1]) <= 100)
            seq_share = (uint32_t)atoi(argv[++i]);
        else
            usage();
    }
    rm_trace w;
    char err[512];
    if (rm_workload_trace(trace, seed, requests, block, &w, err, sizeof err)) {
        printf("D. placement ceiling skipped: %s\n", err);
        return 0;
    }
    if (live) {
        live_table(&w, block, capacity > 0 ? capacity : 0.10, rate, only);
        rm_trace_free(&w);
        return 0;
    }
    static const double fractions[] = {0.05, 0.10, 0.15, 0.20, 0.30, 0.50};
    printf("D. placement ceiling (%s%s): %zu requests, %llu unique blocks of %zu tokens; 8 "
           "in-process %s caches vs one LRU of their total size; ratio to that single LRU, "
           "min-max over %d layouts (worst max/mean requests)\n",
           trace, rm_workload_known(trace) ? ", generated" : "", w.n,
           (unsigned long long)w.unique_blocks, block, rm_evict_policy_name(policy), LAYOUTS);
    if (seq_share)
        printf("   a sequence caches at most %u%% of a cache\n", seq_share);
    printf("   %-9s %-8s", "capacity%", "1 LRU");
    for (int r = 0; r < RULE_COUNT; r++)
        printf(" %-22s", rule_names[r]);
    printf("\n");
    if (capacity > 0) {
        capacity_row(&w, block, capacity);
    } else {
        for (size_t f = 0; f < sizeof fractions / sizeof *fractions; f++)
            capacity_row(&w, block, fractions[f]);
    }
    capacity_detail(&w, block, capacity > 0 ? capacity : 0.10);
    rm_trace_free(&w);
    return 0;
}
