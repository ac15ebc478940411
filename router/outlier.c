#include "outlier.h"

#include <math.h>

void rm_outlier_config_defaults(rm_outlier_config *c)
{
    c->eject_after = 3;
    c->max_ejected_share = 0.5;
    c->panic_threshold = 0.5;
}

rm_outlier_outcome rm_outlier_classify(int failed, int router_stalled, int client_deadline)
{
    if (!failed)
        return RM_OUTLIER_ANSWERED;
    return router_stalled || client_deadline ? RM_OUTLIER_IGNORED : RM_OUTLIER_FAILED;
}

int rm_outlier_may_eject(const rm_outlier_config *c, uint32_t members, uint32_t ejected)
{
    double cap = floor(c->max_ejected_share * members + 1e-9);
    return (double)ejected + 1 <= (cap < 1 ? 1 : cap);
}

rm_outlier_change rm_outlier_record(const rm_outlier_config *c, rm_outlier_node *n,
                                    rm_outlier_outcome o, uint32_t members, uint32_t ejected)
{
    switch (o) {
    case RM_OUTLIER_ANSWERED: {
        int was = n->ejected;
        n->failures = 0;
        n->ejected = 0;
        return was ? RM_OUTLIER_RESTORE : RM_OUTLIER_SAME;
    }
    case RM_OUTLIER_IGNORED: return RM_OUTLIER_SAME;
    case RM_OUTLIER_FAILED: break;
    }
    if (n->failures < UINT32_MAX)
        n->failures++;
    if (n->ejected || n->failures < c->eject_after)
        return RM_OUTLIER_SAME;
    if (!rm_outlier_may_eject(c, members, ejected))
        return RM_OUTLIER_KEPT;
    n->ejected = 1;
    return RM_OUTLIER_EJECT;
}

int rm_outlier_healthy(const rm_outlier_config *c, const rm_outlier_node *n)
{
    return !n->ejected && n->failures < c->eject_after;
}

int rm_outlier_panic(const rm_outlier_config *c, uint32_t healthy, uint32_t members)
{
    return members > 0 && (double)healthy < c->panic_threshold * members;
}

int rm_outlier_routable(const rm_outlier_node *n, int panic)
{
    return !n->ejected || panic;
}
