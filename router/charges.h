/* charges.h -- what a router has sent a node that the node has not counted
 * yet: its unconfirmed charges, and the expiry of those nothing may ever
 * confirm.
 *
 * Each routing decision charges the chosen node its cost at once (prompt
 * tokens the node must compute, expected reply tokens), so that a burst
 * between two Stats polls does not all go to one node. The charge goes
 * when the node's own figures include it:
 *
 *   held     forwarded Matches and gateway requests: the router sees them
 *            end and settles a forwarded Match exactly (rm_charges_settle);
 *   cur/old  Routes: the client calls the node itself, and only the
 *            node's request count shows it did.
 *
 * A report confirms as many charges as the node counted requests, taking
 * the same share of every charge (rm_charges_confirm): the sums do not
 * depend on where generations begin, so two replicas given the same
 * requests and reports hold the same sums. A Route whose client never
 * calls the node (it gave up, failed, was cancelled) is never counted:
 * kept forever, such charges grew without bound with the share of Routes
 * abandoned. So Routes' charges live in two generations and expire:
 *
 *     charged:  |--- old ---|--- cur ---|
 *               ^           ^           ^ now
 *               dropped     cur_since_ms
 *
 * Once cur is half a ttl old (seen on the next call that passes now_ms),
 * what is left of old is dropped, cur becomes old and a new cur starts: a
 * Route's charge lives between ttl/2 and ttl (longer only while no call
 * comes). A node counts a Match within a call's latency and reports within
 * a poll interval, so a ttl well past both drops only charges that no
 * Match will confirm. ttl 0: never.
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
    rm_charge_sum held;     /* settled by the router itself: never expire */
    rm_charge_sum cur, old; /* Routes', expiring */
    uint64_t cur_since_ms;
    double expired_requests; /* Routes' charges dropped unconfirmed, since start */
} rm_charges;

typedef enum { RM_CHARGE_HELD = 0, RM_CHARGE_EXPIRES = 1 } rm_charge_kind;

/* Adds one request's charge (prompt tokens, expected reply tokens). */
void rm_charges_add(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms, rm_charge_kind kind,
                    double prompt, double output);

/* The node counted `requests` more of ours (a report): every charge loses
 * the same share, requests / all charged requests (all of it when the node
 * counted as many or more: other routers' requests count too). */
void rm_charges_confirm(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms, double requests);

/* One held request whose cost is known (a forwarded Match the node
 * answered, or that failed) leaves: exactly its cost, and exactly zero when
 * it was the last. Returns 1, or 0 when less than one held charge was left
 * (a report confirmed it first, or all but a share of it: the share goes
 * too). */
int rm_charges_settle(rm_charges *c, double prompt, double output);

/* All three sums (expired Routes' not dropped until the next call that
 * passes now_ms). */
rm_charge_sum rm_charges_total(const rm_charges *c);

#endif
