/* Unit tests for router/gateway_state.c: which moves a gateway request may
 * make, when it is away on another thread, and when it may be retried. */
#include <string.h>

#include "check.h"
#include "gateway_state.h"

#define NEW        RM_GW_REQ_NEW
#define PARSING    RM_GW_REQ_PARSING
#define TOKENIZING RM_GW_REQ_TOKENIZING
#define ROUTING    RM_GW_REQ_ROUTING
#define CONNECTING RM_GW_REQ_CONNECTING
#define WAITING    RM_GW_REQ_WAITING
#define STREAMING  RM_GW_REQ_STREAMING
#define DONE       RM_GW_REQ_DONE
#define N          ((int)RM_GW_REQ_NSTATES)

/* Every move the gateway makes, and why; any other pair is refused. */
static const struct {
    rm_gw_req_state from, to;
} moves[] = {
    {NEW, PARSING},        /* a large body goes to the threadpool */
    {NEW, TOKENIZING},     /* a text prompt: a worker's /tokenize is asked */
    {NEW, ROUTING},        /* parsed on the gateway thread (or no prompt) */
    {NEW, DONE},           /* malformed JSON: 400 */
    {PARSING, TOKENIZING}, /* parsed, a text prompt */
    {PARSING, ROUTING},    /* parsed */
    {PARSING, DONE},       /* malformed, or the client left meanwhile */
    {TOKENIZING, ROUTING}, /* the engine's token ids came (or not: pseudo-tokens) */
    {TOKENIZING, DONE},    /* the client left meanwhile */
    {ROUTING, CONNECTING}, /* a worker chosen */
    {ROUTING, DONE},       /* none available, the router stopped, the client left */
    {CONNECTING, WAITING}, /* the request is sent */
    {CONNECTING, ROUTING}, /* no connection: retry elsewhere */
    {CONNECTING, DONE},    /* no connection on the last attempt, or the client left */
    {WAITING, STREAMING},  /* the head went to the client */
    {WAITING, ROUTING},    /* 5xx, no head in time, closed: retry elsewhere */
    {WAITING, CONNECTING}, /* a pooled connection was closed: a new one */
    {WAITING, DONE},       /* failed on the last attempt, or the client left */
    {STREAMING, DONE},     /* complete, or cut */
};

static int listed(rm_gw_req_state from, rm_gw_req_state to)
{
    for (size_t i = 0; i < sizeof moves / sizeof moves[0]; i++)
        if (moves[i].from == from && moves[i].to == to)
            return 1;
    return 0;
}

static void test_every_allowed_move(void)
{
    for (size_t i = 0; i < sizeof moves / sizeof moves[0]; i++)
        CHECK(rm_gw_req_transition_ok(moves[i].from, moves[i].to));
}

static void test_every_other_move_is_refused(void)
{
    int refused = 0;
    for (rm_gw_req_state from = 0; from < N; from++)
        for (rm_gw_req_state to = 0; to < N; to++)
            if (!listed(from, to)) {
                CHECK(!rm_gw_req_transition_ok(from, to));
                refused++;
            }
    CHECK_EQ(refused, N * N - (int)(sizeof moves / sizeof moves[0]));
    /* Some that matter, spelled out. */
    CHECK(!rm_gw_req_transition_ok(DONE, DONE));         /* finished twice */
    CHECK(!rm_gw_req_transition_ok(STREAMING, ROUTING)); /* retry after bytes went out */
    CHECK(!rm_gw_req_transition_ok(ROUTING, ROUTING));   /* routed twice at once */
    CHECK(!rm_gw_req_transition_ok(PARSING, PARSING));   /* queued twice */
    CHECK(!rm_gw_req_transition_ok(ROUTING, WAITING));   /* sent without a connection */
    CHECK(!rm_gw_req_transition_ok(NEW, STREAMING));
    /* Out of range either way. */
    CHECK(!rm_gw_req_transition_ok((rm_gw_req_state)N, DONE));
    CHECK(!rm_gw_req_transition_ok(NEW, (rm_gw_req_state)N));
    CHECK(!rm_gw_req_transition_ok((rm_gw_req_state)-1, DONE));
}

static void test_away_only_while_another_thread_has_it(void)
{
    for (rm_gw_req_state s = 0; s < N; s++)
        CHECK_EQ(rm_gw_req_away(s), s == PARSING || s == ROUTING);
}

static void test_retry_before_any_byte_and_once(void)
{
    for (rm_gw_req_state s = 0; s < N; s++) {
        int before_head = s == CONNECTING || s == WAITING;
        CHECK_EQ(rm_gw_req_may_retry(s, 1), before_head);
        CHECK(!rm_gw_req_may_retry(s, RM_GW_MAX_ATTEMPTS));
    }
    CHECK_EQ(RM_GW_MAX_ATTEMPTS, 2);
}

static void test_names(void)
{
    CHECK(!strcmp(rm_gw_req_state_name(RM_GW_REQ_ROUTING), "routing"));
    CHECK(!strcmp(rm_gw_req_state_name(RM_GW_REQ_TOKENIZING), "tokenizing"));
    CHECK(!strcmp(rm_gw_req_state_name(RM_GW_REQ_DONE), "done"));
    CHECK(!strcmp(rm_gw_req_state_name((rm_gw_req_state)N), "?"));
    for (rm_gw_req_state s = 0; s < N; s++)
        CHECK(strcmp(rm_gw_req_state_name(s), "?") != 0);
}

int main(void)
{
    RUN(test_every_allowed_move);
    RUN(test_every_other_move_is_refused);
    RUN(test_away_only_while_another_thread_has_it);
    RUN(test_retry_before_any_byte_and_once);
    RUN(test_names);
    return rm_t_report();
}
