/* placement.c -- where a request may go: node load (in flight plus
 * decayed recent work), the candidates under the bounded-load rule,
 * charging the chosen node, and the rules of placement.h. */
#include "placement.h"

#include <math.h>
#include <string.h>

#include "prefix_key.h"
#include "router_internal.h"
#include "util.h"

/* ---- the rules (pure) ------------------------------------------------------ */

double rm_place_decay(double recent, uint64_t dt_ms, uint32_t half_life_ms)
{
    return recent * exp2(-(double)dt_ms / half_life_ms);
}

double rm_place_capacity(double load_factor, double total, uint32_t up, double floor)
{
    double cap = ceil(load_factor * (total + 1) / up);
    return cap > floor ? cap : floor;
}

int64_t rm_place_credit(int64_t cached, uint32_t key_tokens)
{
    int64_t key = (int64_t)key_tokens;
    if (cached < 0)
        return -1;
    return cached >= key ? cached - key + 1 : 0;
}

double rm_place_cost(uint64_t prompt_tokens, int64_t cached, double output_tokens,
                     double decode_weight)
{
    double held = cached > 0 ? (double)cached : 0;
    double prompt = (double)prompt_tokens > held ? (double)prompt_tokens - held : 0;
    return prompt + (output_tokens > 0 ? output_tokens * decode_weight : 0);
}

double rm_place_output(uint32_t declared, double ns_average, double all_average, double max)
{
    double x = declared > 0      ? declared
               : ns_average > 0  ? ns_average
               : all_average > 0 ? all_average
                                 : 0;
    return x < max ? x : max;
}

double rm_place_average(double average, double x)
{
    return average > 0 ? average + (x - average) / 16 : x;
}

double rm_place_auto_floor(double load_factor)
{
    double d = load_factor - 1;
    double k = d > 0 ? 1 / (d * d) : 1;
    return k > 1 ? k : 1;
}

double rm_place_work_capacity(double load_factor, double total, double cost, uint32_t up,
                              double floor_requests, double mean_cost)
{
    double cap = load_factor * (total + cost) / up;
    double floor = floor_requests * mean_cost;
    return cap > floor ? cap : floor;
}

double rm_place_backlog(double own_inflight, double running, double waiting, double mean_cost)
{
    double reported = (running > 0 ? running : 0) + (waiting > 0 ? waiting : 0);
    double b = reported * (mean_cost > 0 ? mean_cost : 0);
    return own_inflight > b ? own_inflight : b;
}

int rm_place_saturated(double waiting, double kv_usage)
{
    return waiting > 0 && kv_usage >= RM_PLACE_KV_FULL;
}

int rm_place_admits(const rm_place_candidate *c)
{
    return !c->saturated && c->load + c->cost <= c->cap;
}

/* The member of a pair that yields when the chosen one is gone. */
static int stay(const rm_place_candidate *c, int n, int w)
{
    if (n == 2 && c[w].gone && !c[!w].gone)
        return !w;
    return w;
}

int rm_place_least(const rm_place_candidate *c, int n, double margin)
{
    if (n < 2)
        return 0;
    return stay(c, n, c[1].load + c[1].cost + margin < c[0].load + c[0].cost);
}

int rm_place_decide_work(const rm_place_candidate *c, int n, uint32_t key_tokens, double margin)
{
    int ok0 = rm_place_admits(&c[0]), ok1 = n > 1 && rm_place_admits(&c[1]);
    if (!ok0 && !ok1)
        return -1;
    if (!ok0 || !ok1)
        return stay(c, n, ok1);
    int64_t a = rm_place_credit(c[0].cached, key_tokens);
    int64_t b = rm_place_credit(c[1].cached, key_tokens);
    if (a != b)
        return stay(c, n, b > a);
    return rm_place_least(c, n, margin);
}

int rm_place_decide(const rm_place_candidate *c, int n, uint32_t key_tokens)
{
    if (n < 2)
        return 0;
    int64_t a = rm_place_credit(c[0].cached, key_tokens);
    int64_t b = rm_place_credit(c[1].cached, key_tokens);
    int w;
    if (a < 0 || b < 0)
        w = a < 0 && b >= 0 ? 1 : 0;
    else if (a != b)
        w = b > a;
    else
        w = c[1].served < c[0].served;
    return stay(c, n, w);
}

/* ---- feeding them from the nodes ------------------------------------------ */

static int by_work(const rm_router *r)
{
    return r->cfg.load_unit == RM_LOAD_WORK;
}

/* Decays n's load figures to now. This router's unconfirmed charges are
 * not decayed: they live a report interval or so (or expire, charges.h),
 * and kept as exact sums of the costs charged, two replicas given the same
 * requests in the same order hold the same figures -- a decay read
 * microseconds apart would tell near-ties apart differently, and one
 * differing choice changes every later one. */
static void decay_to(const rm_router *r, rnode *n, uint64_t now)
{
    if (now <= n->recent_ms)
        return;
    uint64_t dt = now - n->recent_ms;
    uint32_t hl = r->cfg.load_half_life_ms;
    n->recent = rm_place_decay(n->recent, dt, hl);
    n->recent_ms = now;
}

uint64_t rm_router_charge_ttl_floor(const rm_router_config *c)
{
    return 4 * ((uint64_t)c->call_timeout_ms + c->stats_interval_ms);
}

/* --charge-ttl-ms (default a minute), never under its floor. main.c
 * refuses an explicit ttl under the floor at start; a reload that
 * lengthens calls raises it here. */
static uint32_t charge_ttl(const rm_router *r)
{
    uint64_t floor = rm_router_charge_ttl_floor(&r->cfg);
    uint64_t ttl = r->cfg.charge_ttl_ms ? r->cfg.charge_ttl_ms : 60000;
    ttl = ttl > floor ? ttl : floor;
    return ttl < UINT32_MAX ? (uint32_t)ttl : UINT32_MAX;
}

double rt_load_floor(const rm_router *r)
{
    return r->cfg.load_floor > 0 ? r->cfg.load_floor : rm_place_auto_floor(r->cfg.load_factor);
}

double rt_mean_cost(const rm_router *r)
{
    double work = 0, requests = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        const rnode *n = r->nodes[i];
        if (!n->have_stats)
            continue;
        work += (double)n->stats.uncached_tokens_total +
                r->cfg.decode_weight * (double)n->stats.output_tokens_total;
        requests += (double)n->stats.match_requests_total;
    }
    return requests > 0 ? work / requests : 0;
}

static double backlog(const rnode *n, double mean_cost)
{
    return rm_place_backlog(n->gw_inflight_work, n->worker_running, n->worker_waiting, mean_cost);
}

/* n's reported work as of the wall clock's now: the same figure, decayed
 * from the same instant, in every replica (reading it at its arrival
 * instead made replicas differ by the decay over each one's call latency,
 * enough to read a near-tie two ways). */
static double node_work(const rm_router *r, const rnode *n)
{
    uint64_t wall = rm_wall_ms();
    uint32_t hl = n->work_half_life_ms ? n->work_half_life_ms : r->cfg.load_half_life_ms;
    return wall > n->work_at ? rm_place_decay(n->work, wall - n->work_at, hl) : n->work;
}

/* Adds x to n's work as of now (until the node's next report replaces it). */
static void add_work(const rm_router *r, rnode *n, double x)
{
    n->work = node_work(r, n) + x;
    n->work_at = rm_wall_ms();
}

static double load_at(const rm_router *r, rnode *n, uint64_t now, double mean_cost)
{
    decay_to(r, n, now);
    if (!by_work(r))
        return n->inflight + n->recent;
    rm_charge_sum pend = rm_charges_total(&n->charges);
    return node_work(r, n) + pend.prompt + r->cfg.decode_weight * pend.output +
           backlog(n, mean_cost);
}

double rt_node_load(const rm_router *r, rnode *n, uint64_t now)
{
    return load_at(r, n, now, by_work(r) ? rt_mean_cost(r) : 0);
}

void rt_confirm_work(const rm_router *r, rnode *n, const radixmesh_v1_NodeStats *next)
{
    decay_to(r, n, rm_now_ms());
    /* The node's own decayed figures: every replica reads the same, so they
     * weigh the nodes alike however long each has known them. */
    n->work = next->recent_uncached_tokens + r->cfg.decode_weight * next->recent_output_tokens;
    n->work_half_life_ms = next->work_half_life_ms;
    n->work_at = next->work_at_unix_ms ? next->work_at_unix_ms : rm_wall_ms();
    /* By work, a first report confirms nothing: no earlier count tells
     * what in it is this router's (by requests it takes the node's whole
     * count, as that rule always did; a forwarded Match settles itself
     * either way, and a Route's charge expires). */
    if (!n->have_stats && by_work(r))
        return;
    /* The requests the node counted since (from any router; by requests,
     * in a first report, all it ever counted) are in its figures now: this
     * router's unconfirmed charges shrink by as many requests, in
     * proportion (the node's count of tokens would not do: a peek and the
     * Match after it may see different prefixes). */
    uint64_t q0 = n->have_stats ? n->stats.match_requests_total : 0;
    uint64_t q1 = next->match_requests_total;
    double dq = q1 >= q0 ? (double)(q1 - q0) : (double)q1; /* a restarted node starts over */
    /* Of those, the ones rt_settle_charge already took off. */
    dq = dq > n->settled_requests ? dq - n->settled_requests : 0;
    n->settled_requests = 0;
    rm_charges_confirm(&n->charges, rm_now_ms(), charge_ttl(r), dq);
}

typedef struct pick_ctx {
    rm_router *r;
    double capacity, mean, cost;
    uint64_t now;
    rnode *skip[2];
} pick_ctx;

static int under_bound(void *ctx, uint32_t m)
{
    pick_ctx *p = ctx;
    rnode *n = p->r->nodes[m];
    return load_at(p->r, n, p->now, p->mean) + 1 <= p->capacity;
}

/* The bound's view of the nodes up: their load in total and how many. */
static uint32_t cluster_load(rm_router *r, int gateway, uint64_t now, double mean, double *total)
{
    uint32_t up = 0;
    *total = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (gateway ? rt_has_worker(n) : rt_on_ring(n)) {
            *total += load_at(r, n, now, mean);
            up++;
        }
    }
    return up;
}

/* Up to k nodes for key, clockwise (skipping exclude): by work, the first
 * k (the bound is applied once their peeks tell the request's cost on
 * each); by requests, the first k under the bound. Charges nothing.
 * Returns how many (0: empty ring). */
size_t rt_candidates(rm_router *r, uint64_t key, rnode *exclude, rnode **out, size_t k,
                     int *spilled, int gateway)
{
    uint64_t now = rm_now_ms();
    double total;
    uint32_t up = cluster_load(r, gateway, now, 0, &total);
    if (!up)
        return 0;
    /* By requests, a request is charged twice (its Match and its Insert). */
    pick_ctx ctx = {r,   rm_place_capacity(r->cfg.load_factor, total, up, 2 * rt_load_floor(r)),
                    0,   0,
                    now, {NULL, NULL}};
    uint32_t ex = UINT32_MAX;
    for (uint32_t i = 0; exclude && i < r->nnodes; i++)
        if (r->nodes[i] == exclude)
            ex = i;
    uint32_t idx[2];
    size_t got =
        rm_ring_pick_n(gateway ? &r->gw_ring : &r->ring, key, by_work(r) ? NULL : under_bound, &ctx,
                       ex, idx, k > 2 ? 2 : k, spilled);
    for (size_t i = 0; i < got; i++)
        out[i] = r->nodes[idx[i]];
    return got;
}

/* Charges node n with one routing decision or forwarded call (and a call
 * in flight when proxied). By requests, each counts one unit of load; by
 * work, the request's cost is charged by rt_decide's caller through
 * rt_charge_choice. `decision` marks a routing decision for a new request
 * (Match, Route): only those count as routed requests; an Insert or a
 * retry is load alone. */
void rt_charge(rm_router *r, rnode *n, int proxied, int spilled, int decision)
{
    if (!by_work(r))
        n->recent += 1;
    if (decision) {
        n->routed++;
        r->routed_total++;
    }
    if (proxied)
        n->inflight++;
    if (spilled)
        r->spills++;
}

/* One node for key (by requests, under the bounded-load rule; by work, the
 * key's own), charged as a call (not as a new routed request: callers are
 * Insert and retries, which bring the node no prefill work of their own).
 * NULL: none up. */
rnode *rt_pick(rm_router *r, uint64_t key, rnode *exclude, int proxied, int *spilled)
{
    rnode *n;
    int sp = 0;
    if (!rt_candidates(r, key, exclude, &n, 1, &sp, 0))
        return NULL;
    rt_charge(r, n, proxied, sp, 0);
    if (spilled)
        *spilled = sp;
    return n;
}

/* ns's slot; claim: take it over from another namespace (a lookup does
 * not: it finds no average). */
static struct rt_output_avg *output_slot(rm_router *r, const char *ns, int claim)
{
    static struct rt_output_avg none;
    uint64_t h = rm_hash_bytes(ns, strlen(ns), 0x6f7574ULL) | 1;
    struct rt_output_avg *a = &r->out_avg[h % RM_ARRAY_LEN(r->out_avg)];
    if (a->ns_hash != h) {
        if (!claim)
            return &none;
        *a = (struct rt_output_avg){h, 0};
    }
    return a;
}

void rt_learn_output(rm_router *r, const char *ns, double seen)
{
    if (seen <= 0)
        return;
    struct rt_output_avg *a = output_slot(r, ns, 1);
    a->avg = rm_place_average(a->avg, seen);
    r->out_avg_all = rm_place_average(r->out_avg_all, seen);
}

double rt_expected_output(rm_router *r, const char *ns, uint32_t declared)
{
    double max = (double)r->cfg.max_request_tokens;
    if (declared > 0) {
        double x = rm_place_output(declared, 0, 0, max);
        rt_learn_output(r, ns, x);
        return x;
    }
    return rm_place_output(0, output_slot(r, ns, 0)->avg, r->out_avg_all, max);
}

/* Requests a node has served, as it reports them (all routers' traffic),
 * plus what this router sent it since. Every replica reads the same
 * reports, so they place new conversations alike. */
double rt_served(const rnode *n)
{
    return (n->have_stats ? (double)n->stats.match_requests_total : 0.0) +
           rm_charges_total(&n->charges).requests;
}

static int spill_ok(void *ctx, uint32_t m)
{
    pick_ctx *p = ctx;
    rnode *n = p->r->nodes[m];
    if (n == p->skip[0] || n == p->skip[1])
        return 0;
    rm_place_candidate c = {.cached = 0,
                            .load = load_at(p->r, n, p->now, p->mean),
                            .cost = p->cost,
                            .cap = p->capacity,
                            .saturated = rm_place_saturated(n->worker_waiting, n->worker_kv)};
    return rm_place_admits(&c);
}

rnode *rt_decide(rt_choice *ch)
{
    rm_router *r = ch->r;
    int n = ch->ncand;
    rm_place_candidate c[2] = {{0}, {0}};
    if (!by_work(r)) {
        for (int i = 0; i < n && i < 2; i++)
            c[i] = (rm_place_candidate){.cached = ch->cached[i],
                                        .served = rt_served(ch->cand[i]),
                                        .gone = ch->cand[i]->removed};
        int w = rm_place_decide(c, n, ch->key_tokens);
        ch->cost = 1;
        return ch->cand[w];
    }
    uint64_t now = rm_now_ms();
    double mean = rt_mean_cost(r), total, d = r->cfg.decode_weight;
    uint32_t up = cluster_load(r, ch->gateway, now, mean, &total);
    double floor = rt_load_floor(r);
    double miss = rm_place_cost(ch->prompt_tokens, 0, ch->output, d);
    int64_t best = -1;
    for (int i = 0; i < n && i < 2; i++) {
        rnode *x = ch->cand[i];
        c[i].cached = ch->cached[i];
        c[i].gone = x->removed;
        c[i].load = load_at(r, x, now, mean);
        c[i].cost = rm_place_cost(ch->prompt_tokens, ch->cached[i], ch->output, d);
        c[i].cap = rm_place_work_capacity(r->cfg.load_factor, total, c[i].cost, up ? up : 1, floor,
                                          mean > 0 ? mean : miss);
        c[i].saturated = rm_place_saturated(x->worker_waiting, x->worker_kv);
        int64_t cr = rm_place_credit(ch->cached[i], ch->key_tokens);
        best = cr > best ? cr : best;
    }
    double margin = mean > 0 ? mean : miss;
    int w = rm_place_decide_work(c, n, ch->key_tokens, margin);
    if (w < 0 && !ch->no_spill && up > (uint32_t)n) {
        /* Neither can take it: the first node past them that can, as a
         * miss (its content unknown, and most likely none of it). */
        pick_ctx ctx = {
            r,
            rm_place_work_capacity(r->cfg.load_factor, total, miss, up, floor, mean > 0 ? mean : miss),
            mean,
            miss,
            now,
            {ch->cand[0], n > 1 ? ch->cand[1] : NULL}};
        uint32_t idx;
        if (rm_ring_pick_n(ch->gateway ? &r->gw_ring : &r->ring, ch->key, spill_ok, &ctx,
                           UINT32_MAX, &idx, 1, NULL) == 1 &&
            spill_ok(&ctx, idx)) {
            ch->spilled = 1;
            ch->cached_chosen = 0;
            ch->cost = miss;
            return r->nodes[idx];
        }
    }
    if (w < 0)
        w = rm_place_least(c, n, margin);
    ch->spilled = rm_place_credit(ch->cached[w], ch->key_tokens) < best;
    ch->cached_chosen = ch->cached[w];
    ch->cost = c[w].cost;
    return ch->cand[w];
}

double rt_charged_prompt(const rt_choice *ch)
{
    double held = ch->cached_chosen > 0 ? (double)ch->cached_chosen : 0;
    return (double)ch->prompt_tokens > held ? (double)ch->prompt_tokens - held : 0;
}

void rt_drop_charge(rm_router *r, rnode *n, double prompt, double output)
{
    if (by_work(r))
        rm_charges_settle(&n->charges, prompt, output);
}

void rt_settle_charge(rt_choice *ch, rnode *n, int counted)
{
    rm_router *r = ch->r;
    double prompt = rt_charged_prompt(ch);
    if (!by_work(r) || !rm_charges_settle(&n->charges, prompt, ch->output))
        return; /* a report confirmed it first */
    decay_to(r, n, rm_now_ms());
    if (counted) { /* in the node's figures from its next report on */
        add_work(r, n, prompt + r->cfg.decode_weight * ch->output);
        n->settled_requests += 1;
    }
}

void rt_charge_choice(rt_choice *ch, rnode *n)
{
    rm_router *r = ch->r;
    rt_charge(r, n, ch->proxied, ch->spilled, 1);
    /* By requests too: what a node has served counts them (rt_served). */
    uint64_t now = rm_now_ms();
    decay_to(r, n, now);
    /* A Route's client calls the node itself, or never does. */
    rm_charges_add(&n->charges, now, charge_ttl(r),
                   ch->proxied ? RM_CHARGE_HELD : RM_CHARGE_EXPIRES, rt_charged_prompt(ch),
                   ch->output);
}
