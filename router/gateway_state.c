#include "gateway_state.h"

#define BIT(s) (1u << (s))

/* allowed[from]: the states a request in `from` may move to. */
static const unsigned allowed[RM_GW_REQ_NSTATES] = {
    [RM_GW_REQ_NEW] = BIT(RM_GW_REQ_PARSING) | BIT(RM_GW_REQ_TOKENIZING) | BIT(RM_GW_REQ_ROUTING) |
                      BIT(RM_GW_REQ_DONE),
    [RM_GW_REQ_PARSING] = BIT(RM_GW_REQ_TOKENIZING) | BIT(RM_GW_REQ_ROUTING) | BIT(RM_GW_REQ_DONE),
    [RM_GW_REQ_TOKENIZING] = BIT(RM_GW_REQ_ROUTING) | BIT(RM_GW_REQ_DONE),
    [RM_GW_REQ_ROUTING] = BIT(RM_GW_REQ_CONNECTING) | BIT(RM_GW_REQ_DONE),
    [RM_GW_REQ_CONNECTING] = BIT(RM_GW_REQ_WAITING) | BIT(RM_GW_REQ_ROUTING) | BIT(RM_GW_REQ_DONE),
    [RM_GW_REQ_WAITING] = BIT(RM_GW_REQ_STREAMING) | BIT(RM_GW_REQ_ROUTING) |
                          BIT(RM_GW_REQ_CONNECTING) | BIT(RM_GW_REQ_DONE),
    [RM_GW_REQ_STREAMING] = BIT(RM_GW_REQ_DONE),
    [RM_GW_REQ_DONE] = 0,
};

static int valid(rm_gw_req_state s)
{
    return (unsigned)s < RM_GW_REQ_NSTATES;
}

int rm_gw_req_transition_ok(rm_gw_req_state from, rm_gw_req_state to)
{
    return valid(from) && valid(to) && (allowed[from] & BIT(to)) != 0;
}

int rm_gw_req_away(rm_gw_req_state s)
{
    return s == RM_GW_REQ_PARSING || s == RM_GW_REQ_ROUTING;
}

int rm_gw_req_may_retry(rm_gw_req_state s, int attempts)
{
    return (s == RM_GW_REQ_CONNECTING || s == RM_GW_REQ_WAITING) && attempts < RM_GW_MAX_ATTEMPTS;
}

const char *rm_gw_req_state_name(rm_gw_req_state s)
{
    static const char *const names[RM_GW_REQ_NSTATES] = {
        "new", "parsing", "tokenizing", "routing", "connecting", "waiting", "streaming", "done"};
    return valid(s) ? names[s] : "?";
}
