/* outlier.h -- when a cache node leaves the ring: the router's ejection rule.
 *
 * Pure decisions, no I/O and no clock: the router (node_link.c, proxy.c)
 * feeds every result it gets from a node (health checks, Stats polls,
 * peeks, forwarded calls) through rm_outlier_classify and
 * rm_outlier_record and applies what they return. The rule follows
 * Envoy's outlier detection:
 *
 *   - a node is ejected only after `eject_after` consecutive failures
 *     (unreachable, reset, deadline); any answer from it resets the count;
 *   - a failure of a call that was out while the router itself stalled
 *     (its loop did not run: stopped, starved, blocked) is not counted --
 *     its deadline measured the router, not the node -- and resets nothing;
 *     nor is a call whose deadline was cut short to its client's own (less
 *     than the router's --call-timeout-ms) when that deadline passes: it
 *     measured the client's patience, not the node;
 *   - at most `max_ejected_share` of the members are ejected at a time
 *     (one may always be); a node that reached eject_after beyond that is
 *     kept on the ring, failing (not healthy), until room is made;
 *   - when fewer than `panic_threshold` of the members are healthy, the
 *     ring takes every member as if healthy (Envoy's healthy_panic_threshold):
 *     so many failing at once says more about the router or the network
 *     than about the nodes, and a routed call still has a chance (it is
 *     retried once elsewhere) where an empty ring has none.
 *
 * An explicit NOT_SERVING answer (a draining node) is not a failure: the
 * caller takes that node out at once, outside this rule. Members are the
 * nodes that answered SERVING at least once and are not draining. */
#ifndef RM_OUTLIER_H
#define RM_OUTLIER_H

#include <stdint.h>

typedef struct rm_outlier_config {
    uint32_t eject_after;     /* consecutive failures that eject, >= 1 */
    double max_ejected_share; /* of the members, [0, 1]; at least one may be ejected */
    double panic_threshold;   /* healthy share below which all members route, [0, 1] */
} rm_outlier_config;

/* eject_after 3, max_ejected_share 0.5, panic_threshold 0.5 (see
 * router/README.md, "Health and failover", for why). */
void rm_outlier_config_defaults(rm_outlier_config *c);

/* What one result from a node counts as. */
typedef enum {
    RM_OUTLIER_ANSWERED, /* any reply, the node's own error status included */
    RM_OUTLIER_FAILED,   /* a transport failure: counted */
    RM_OUTLIER_IGNORED,  /* the router stalled, or the client's deadline cut the call */
} rm_outlier_outcome;

/* failed: the call failed at the transport (no answer from the node);
 * router_stalled: the router's loop stalled while the call was out;
 * client_deadline: it failed at a deadline its client set, shorter than
 * the router's own. */
rm_outlier_outcome rm_outlier_classify(int failed, int router_stalled, int client_deadline);

/* Per-node state, owned by the caller (zero-initialised: healthy). */
typedef struct rm_outlier_node {
    uint32_t failures; /* consecutive counted failures */
    int ejected;
} rm_outlier_node;

/* What rm_outlier_record changed. */
typedef enum {
    RM_OUTLIER_SAME,    /* nothing to apply */
    RM_OUTLIER_EJECT,   /* the node leaves the ring now */
    RM_OUTLIER_RESTORE, /* an ejected node answered: it returns */
    RM_OUTLIER_KEPT,    /* it reached eject_after, but the share is used up */
} rm_outlier_change;

/* Applies one outcome to n. members: nodes the rule applies to (n
 * included); ejected: how many of them are ejected now. */
rm_outlier_change rm_outlier_record(const rm_outlier_config *c, rm_outlier_node *n,
                                    rm_outlier_outcome o, uint32_t members, uint32_t ejected);

/* Whether one more of `members` may be ejected while `ejected` are. */
int rm_outlier_may_eject(const rm_outlier_config *c, uint32_t members, uint32_t ejected);

/* Healthy: neither ejected nor at eject_after failures (kept by the cap). */
int rm_outlier_healthy(const rm_outlier_config *c, const rm_outlier_node *n);

/* Panic: fewer than panic_threshold of the members are healthy. */
int rm_outlier_panic(const rm_outlier_config *c, uint32_t healthy, uint32_t members);

/* On the ring: not ejected, or anything in panic. */
int rm_outlier_routable(const rm_outlier_node *n, int panic);

#endif
