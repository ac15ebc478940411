/* charges.h -- what a router has sent a node that the node has not counted
 * yet: its unconfirmed charges, and their expiry.
 *
 * Each routing decision charges the chosen node its cost at once (prompt
 * tokens the node must compute, expected reply tokens), so that a burst
 * between two Stats polls does not all go to one node. The charge goes
 * when the node's own figures include it: a forwarded Match's when the
 * node answers it (rm_charges_settle), a Route's when the node's request
 * count shows it (rm_charges_confirm). A Route whose client never calls
 * the node (it gave up, failed, was cancelled) is never counted: kept
 * forever, such charges grew without bound with the share of Routes
 * abandoned, and drowned the nodes' real, decaying work. So charges live
 * in two generations and expire:
 *
 *     charged:  |--- old ---|--- cur ---|
 *               ^           ^           ^ now
 *               dropped     cur_since_ms
 *
 * Once a generation is half a ttl old (ttl_ms / 2 since cur_since_ms, seen
 * on the next call), old is dropped, cur becomes old and a new cur starts:
 * a charge lives between ttl/2 and ttl (longer only while no call comes).
 * A node counts a Match within a call's latency and reports within a poll
 * interval, so a ttl well past both drops only charges that no Match will
 * confirm. Confirmations take from old first: a node counts requests in
 * about the order they were sent.
 *
 * Pure: no clock (the caller passes now_ms), no I/O. One owner: the
 * router's event-loop thread, like the rest of a node's record. */
#ifndef RM_CHARGES_H
#define RM_CHARGES_H

#include <stdint.h>

typedef struct rm_charge_sum {
    double prompt, output, requests;
} rm_charge_sum;

typedef struct rm_charges {
    rm_charge_sum cur, old;
    uint64_t cur_since_ms;
    double expired_requests; /* charges dropped unconfirmed, since start */
} rm_charges;

/* Adds one request's charge (prompt tokens, expected reply tokens). */
void rm_charges_add(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms, double prompt, double output);

/* The node counted `requests` more of ours (a report): as many charges
 * go, old ones first, each generation's sums in proportion. */
void rm_charges_confirm(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms, double requests);

/* One request whose cost is known (a forwarded Match the node answered or
 * that failed): its charge goes exactly, from old first. When the last
 * charge goes, the sums go to exactly zero (not a rounding rest). */
void rm_charges_settle(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms, double prompt,
                       double output);

/* Both generations' sums (expired ones not dropped until the next call
 * that takes now_ms). */
rm_charge_sum rm_charges_total(const rm_charges *c);

#endif
