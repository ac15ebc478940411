/* placement.h -- the router's placement rules, as pure functions.
 *
 * Where a request goes is decided in two steps (router/README.md, "Ring
 * and bounded load", "Two candidates per request"):
 *
 *   1. the key's first two nodes on the ring whose load stays under the
 *      bound: load + 1 <= rm_place_capacity(...) (ring.h walks, skipping
 *      the others);
 *   2. of those, rm_place_decide: credit from the key block on, the longer
 *      cached prefix wins, ties to the node that served fewer.
 *
 * No clock, no I/O, no router state: placement.c feeds them from the nodes
 * (their peeks, loads and Stats) and applies what they return. */
#ifndef RM_PLACEMENT_H
#define RM_PLACEMENT_H

#include <stdint.h>

/* recent (decayed load) dt_ms later, halving every half_life_ms (> 0). */
double rm_place_decay(double recent, uint64_t dt_ms, uint32_t half_life_ms);

/* The bounded-load capacity of each of `up` (> 0) nodes carrying `total`
 * load: ceil(load_factor * (total + 1) / up), but never below floor. Near
 * zero load the plain bound is 1 or 2 and would force round-robin, which
 * protects nothing and costs affinity (and makes replicas' decisions hinge
 * on microseconds of decay). */
double rm_place_capacity(double load_factor, double total, uint32_t up, double floor);

/* The credit a node gets for holding `cached` tokens of a request keyed on
 * its first key_tokens: 0 unless it holds the whole key block, then 1 plus
 * what it holds beyond. -1 (a failed peek) stays -1. The key block is what
 * sets the request apart (it lies past any cluster-hot prefix); anything
 * shorter is text every request behind a common prompt shares, cached (or
 * soon cached) everywhere, and counting it sent every new conversation
 * behind such a prompt to the first nodes that held the prompt. */
int64_t rm_place_credit(int64_t cached, uint32_t key_tokens);

/* What the router knows of one candidate when it decides. */
typedef struct rm_place_candidate {
    int64_t cached; /* tokens of the request the node holds (its peek); -1: peek failed */
    double served;  /* requests it has served, as every replica sees them */
    int gone;       /* it left the membership while it was peeked */
} rm_place_candidate;

/* Which of the n (1 or 2) candidates takes the request, 0 or 1: the one
 * whose peek answered when the other's failed (both failed: the first);
 * else the higher credit; on equal credit (a new conversation) the one
 * that served fewer (equal: the first). A winner gone meanwhile yields to
 * the other if it is still a member. Continuing conversations keep their
 * node; new ones even out the load. */
int rm_place_decide(const rm_place_candidate *c, int n, uint32_t key_tokens);

#endif
