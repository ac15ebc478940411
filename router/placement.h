/* placement.h -- the router's placement rules, as pure functions.
 *
 * Load is counted in work by default (router/README.md, "Work-balanced
 * placement"): a request's cost on a node is the prompt tokens the node
 * does not hold plus its expected reply tokens times a decode weight, and a
 * node's load is the cost of what it was sent, decayed. Where a request
 * goes is decided in three steps:
 *
 *   1. its key's first two nodes on the ring, peeked for the cached prefix
 *      (rm_place_cost: its cost on each);
 *   2. rm_place_decide_work: of those the bound admits (load + cost within
 *      rm_place_work_capacity), the longer cached prefix from the key block
 *      on (rm_place_credit), ties to the one less loaded after the request;
 *   3. neither admitted: the first node past them on the ring that admits
 *      the request as a miss (a spill), else the less loaded of the two.
 *
 * --load-unit requests keeps the rule before work (for comparison): the
 * ring walk skips nodes over rm_place_capacity in requests, and
 * rm_place_decide chooses by credit, then requests served.
 *
 * No clock, no I/O, no router state: placement.c feeds them from the nodes
 * (their peeks, work counters and Stats) and applies what they return. */
#ifndef RM_PLACEMENT_H
#define RM_PLACEMENT_H

#include <stdint.h>

/* recent (decayed load) dt_ms later, halving every half_life_ms (> 0). */
double rm_place_decay(double recent, uint64_t dt_ms, uint32_t half_life_ms);

/* The credit a node gets for holding `cached` tokens of a request keyed on
 * its first key_tokens: 0 unless it holds the whole key block, then 1 plus
 * what it holds beyond. -1 (a failed peek) stays -1. The key block is what
 * sets the request apart (it lies past any cluster-hot prefix); anything
 * shorter is text every request behind a common prompt shares, cached (or
 * soon cached) everywhere, and counting it sent every new conversation
 * behind such a prompt to the first nodes that held the prompt. */
int64_t rm_place_credit(int64_t cached, uint32_t key_tokens);

/* ---- work (the default) ---------------------------------------------------- */

/* What a request costs a node holding `cached` of its prompt_tokens (-1: a
 * failed peek, counted as nothing held): the prompt tokens it must compute,
 * plus output_tokens (expected) times decode_weight. */
double rm_place_cost(uint64_t prompt_tokens, int64_t cached, double output_tokens,
                     double decode_weight);

/* The reply length to expect: what the client declared (> 0), else the
 * moving average of its namespace (> 0), else of all namespaces, else 0;
 * never more than max (> 0; a request's tokens at most): a client that
 * declares 4 billion reply tokens would otherwise mark its node busy for
 * many half-lives, and drag the mean request cost -- the bound's floor --
 * with it. */
double rm_place_output(uint32_t declared, double ns_average, double all_average, double max);

/* One more sample x into a moving average (0: none yet): the first sets it,
 * each later one moves it 1/16 of the way. */
double rm_place_average(double average, double x);

/* The bound on a node's load when it takes a request costing `cost`, with
 * `up` (> 0) nodes carrying `total`: load_factor times their mean load
 * after the request, but never below floor_requests average requests'
 * work (mean_cost each). Under the floor a node is never turned away: with
 * a handful of requests in the window, a share above the factor is chance,
 * not overload, and bounding it would force round-robin. */
double rm_place_work_capacity(double load_factor, double total, double cost, uint32_t up,
                              double floor_requests, double mean_cost);

/* The floor that load_factor calls for when none is configured: the number
 * of requests k whose count varies by 1/sqrt(k) = load_factor - 1 by chance
 * alone, i.e. 1 / (load_factor - 1)^2 (16 at 1.25), at least 1. */
double rm_place_auto_floor(double load_factor);

/* What a gateway worker is busy with, in work units: at least what this
 * router has in flight there (own_inflight, its requests' costs), and at
 * least the requests the worker reports running and waiting (from every
 * router: < 0 unknown) at mean_cost each. */
double rm_place_backlog(double own_inflight, double running, double waiting, double mean_cost);

/* A worker that queues requests (waiting > 0) with its KV cache full
 * (kv_usage >= RM_PLACE_KV_FULL; < 0: unknown) would only queue more:
 * the bound turns it away while another node can take the request. */
#define RM_PLACE_KV_FULL 0.95
int rm_place_saturated(double waiting, double kv_usage);

/* What the router knows of one candidate when it decides. */
typedef struct rm_place_candidate {
    int64_t cached; /* tokens of the request the node holds (its peek); -1: peek failed */
    double served;  /* --load-unit requests: requests served, as every replica sees them */
    int gone;       /* it left the membership while it was peeked */
    /* work */
    double load;   /* decayed work (plus a gateway worker's backlog) */
    double cost;   /* the request's cost there (rm_place_cost) */
    double cap;    /* its bound (rm_place_work_capacity for this cost) */
    int saturated; /* rm_place_saturated */
} rm_place_candidate;

/* 1 if the bound admits c: not saturated, and load + cost <= cap. */
int rm_place_admits(const rm_place_candidate *c);

/* Which of the n (1 or 2) candidates takes the request, 0 or 1, or -1 when
 * the bound admits neither (the caller then spills past them, see step 3,
 * and falls back to rm_place_least when nothing else admits it). Of the
 * admitted: the one whose peek answered when the other's failed; else the
 * higher credit; else rm_place_least. A winner gone meanwhile yields to
 * the other if it is still a member. Continuing conversations keep their
 * node unless it is over the bound even counting what it saves them; new
 * ones go where the work is least. */
int rm_place_decide_work(const rm_place_candidate *c, int n, uint32_t key_tokens, double margin);

/* Of n (1 or 2) candidates, the second only if its load + cost is lower by
 * more than margin (>= 0), else the first (the key's own node); a gone
 * one yields to the other. The margin -- one average request's work --
 * keeps the choice from hinging on noise: replicas see each other's
 * latest work only at the nodes' next report, and a near-tie read two
 * ways sends them on different paths. */
int rm_place_least(const rm_place_candidate *c, int n, double margin);

/* ---- requests (--load-unit requests, the rule before work) --------------- */

/* The bounded-load capacity of each of `up` (> 0) nodes carrying `total`
 * load: ceil(load_factor * (total + 1) / up), but never below floor. Near
 * zero load the plain bound is 1 or 2 and would force round-robin, which
 * protects nothing and costs affinity (and makes replicas' decisions hinge
 * on microseconds of decay). */
double rm_place_capacity(double load_factor, double total, uint32_t up, double floor);

/* Which of the n (1 or 2) candidates takes the request, 0 or 1: the one
 * whose peek answered when the other's failed (both failed: the first);
 * else the higher credit; on equal credit (a new conversation) the one
 * that served fewer (equal: the first). A winner gone meanwhile yields to
 * the other if it is still a member. */
int rm_place_decide(const rm_place_candidate *c, int n, uint32_t key_tokens);

#endif
