/* placement.c -- where a request may go: node load (in flight plus
 * decayed recent work), the candidates under the bounded-load rule,
 * charging the chosen node, and the rules of placement.h. */
#include "placement.h"

#include <math.h>

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
    if (c[w].gone && !c[!w].gone)
        w = !w;
    return w;
}

/* ---- feeding them from the nodes ------------------------------------------ */

double rt_node_load(const rm_router *r, rnode *n, uint64_t now)
{
    if (now > n->recent_ms) {
        n->recent = rm_place_decay(n->recent, now - n->recent_ms, r->cfg.load_half_life_ms);
        n->recent_ms = now;
    }
    return n->inflight + n->recent;
}

typedef struct pick_ctx {
    rm_router *r;
    double capacity;
    uint64_t now;
} pick_ctx;

static int under_bound(void *ctx, uint32_t m)
{
    pick_ctx *p = ctx;
    return rt_node_load(p->r, p->r->nodes[m], p->now) + 1 <= p->capacity;
}

/* Up to k nodes for key, clockwise, that are under the bounded-load rule
 * (skipping exclude). Charges nothing. Returns how many (0: empty ring). */
size_t rt_candidates(rm_router *r, uint64_t key, rnode *exclude, rnode **out, size_t k,
                     int *spilled, int gateway)
{
    uint64_t now = rm_now_ms();
    double total = 0;
    uint32_t up = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (gateway ? rt_has_worker(n) : rt_on_ring(n)) {
            total += rt_node_load(r, n, now);
            up++;
        }
    }
    if (!up)
        return 0;
    pick_ctx ctx = {r, rm_place_capacity(r->cfg.load_factor, total, up, r->cfg.load_floor), now};
    uint32_t ex = UINT32_MAX;
    for (uint32_t i = 0; exclude && i < r->nnodes; i++)
        if (r->nodes[i] == exclude)
            ex = i;
    uint32_t idx[2];
    size_t got = rm_ring_pick_n(gateway ? &r->gw_ring : &r->ring, key, under_bound, &ctx, ex, idx,
                                k > 2 ? 2 : k, spilled);
    for (size_t i = 0; i < got; i++)
        out[i] = r->nodes[idx[i]];
    return got;
}

/* Charges node n with one unit of load (and a forwarded call in flight).
 * `decision` marks a routing decision for a new request (Match, Route): only
 * those count as routed requests; an Insert or a retry is load alone. */
void rt_charge(rm_router *r, rnode *n, int proxied, int spilled, int decision)
{
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

/* One node for key under the bounded-load rule, charged as load (not as a
 * new routed request: callers are Insert and retries). NULL: none up. */
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

/* Requests a node has served, as it reports them (all routers' traffic),
 * plus what this router sent it since. Every replica reads the same
 * reports, so they place new conversations alike. */
double rt_served(const rnode *n)
{
    return (n->have_stats ? (double)n->stats.match_requests_total : 0.0) + n->pending;
}

int rt_decide(rnode *const *cand, const int64_t *cached, int n, uint32_t key_tokens)
{
    rm_place_candidate c[2] = {{0}};
    for (int i = 0; i < n && i < 2; i++)
        c[i] = (rm_place_candidate){cached[i], rt_served(cand[i]), cand[i]->removed};
    return rm_place_decide(c, n, key_tokens);
}
