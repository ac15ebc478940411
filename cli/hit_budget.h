/* hit_budget.h -- the hit budget in the CLI (router/README.md, "Hit budget"):
 * `radixmesh stats` shows the cluster's and a node's, `radixmesh replay`
 * prints the budget over its run.
 *
 * Replay's budget is exact where it can be: infinite and ideal come from
 * offline copies of the unbounded cache and of one cache with the healthy
 * nodes' summed pools (their page size and eviction policy; the node's
 * own cache code, common/shadow_exact.h), fed every request the replay
 * sent in the order its Matches were answered. The memory curve is the
 * cluster's estimate over the run (the nodes' estimated hit tokens at each
 * factor, differences of two ClusterStats, routing as it was); achieved
 * and delivered are the cluster's and the workers' own counts over it; the
 * router's live ideal and infinite are shown beside the exact ones. */
#ifndef RM_CLI_HIT_BUDGET_H
#define RM_CLI_HIT_BUDGET_H

#include <jansson.h>
#include <pthread.h>

#include "cache_client.h"
#include "shadow_exact.h"

void cli_budget_print_cluster(const radixmesh_v1_ClusterStats *s);
void cli_budget_print_node(const radixmesh_v1_NodeStats *s);

typedef struct cli_budget {
    rm_cc_cluster before;
    int have_before;
    rm_shadow_exact exact; /* cache 0: the ideal one; plus the unbounded set */
    int exact_on;
    uint64_t ideal_pages;
    pthread_mutex_t mu; /* exact: the replay's workers feed it */
} cli_budget;

/* Before a replay: the cluster's figures now, and the exact caches sized
 * from its healthy nodes (none without: the budget is then the cluster's
 * alone). */
void cli_budget_begin(cli_budget *b, rm_cache_client *cc);

/* A request the replay's Match sent (thread-safe). */
void cli_budget_feed(cli_budget *b, const char *ns, const uint32_t *tokens, size_t n);

/* After the replay (once the cluster's counters cover it): prints the
 * budget over the run and returns it as JSON (the caller's; NULL when the
 * router could not be read). Frees b. */
json_t *cli_budget_end(cli_budget *b, rm_cache_client *cc);

#endif
