/* gateway_state.h -- the states of one gateway request and the moves
 * allowed between them (router/gateway.h draws them), as pure rules with
 * their own unit test. The gateway changes a request's state only through
 * its req_set_state(), which checks every move against
 * rm_gw_req_transition_ok: a move the table does not allow is a bug in the
 * gateway, never bad input, and stops the daemon (like the radix tree's
 * own consistency checks) rather than let a request be freed twice or
 * answered after its client went.
 *
 *   from        to
 *   NEW         PARSING (a large body), TOKENIZING (a text prompt, with
 *               --gateway-tokenize worker), ROUTING (parsed here), DONE
 *   PARSING     TOKENIZING, ROUTING, DONE
 *   TOKENIZING  ROUTING (with the engine's token ids, or without), DONE
 *   ROUTING     CONNECTING (a worker found), DONE
 *   CONNECTING  WAITING (sent), ROUTING (a retry), DONE
 *   WAITING     STREAMING (the head went to the client), ROUTING (a retry),
 *               CONNECTING (a kept-alive connection was found closed: a
 *               new one to the same worker), DONE
 *   STREAMING   DONE
 *   DONE        -
 *
 * DONE: answered, failed, or the client gone. */
#ifndef RM_GATEWAY_STATE_H
#define RM_GATEWAY_STATE_H

typedef enum {
    RM_GW_REQ_NEW,        /* read whole; the gateway thread has it */
    RM_GW_REQ_PARSING,    /* its body queued for, or out on, libuv's threadpool */
    RM_GW_REQ_TOKENIZING, /* a worker's /tokenize asked for its prompt's token ids */
    RM_GW_REQ_ROUTING,    /* its job out on the router thread */
    RM_GW_REQ_CONNECTING, /* a worker chosen; its connection being made */
    RM_GW_REQ_WAITING,    /* sent; the worker's final response head not in */
    RM_GW_REQ_STREAMING,  /* the response head went to the client; the body follows */
    RM_GW_REQ_DONE        /* over: being freed */
} rm_gw_req_state;

#define RM_GW_REQ_NSTATES (RM_GW_REQ_DONE + 1)

/* Worker attempts per request: the first, and one retry elsewhere. */
#define RM_GW_MAX_ATTEMPTS 2

/* Whether a request may move from `from` to `to`. */
int rm_gw_req_transition_ok(rm_gw_req_state from, rm_gw_req_state to);

/* Whether another thread has the request (the router thread or the
 * threadpool): the gateway thread must not free or change it until it
 * comes back. */
int rm_gw_req_away(rm_gw_req_state s);

/* Whether a worker's failure in state s, after `attempts` workers were
 * tried, may go to another worker: nothing reached the client yet and an
 * attempt is left. (The client must still be there too: the caller's.) */
int rm_gw_req_may_retry(rm_gw_req_state s, int attempts);

/* "routing", ...; "?" for a value out of range. */
const char *rm_gw_req_state_name(rm_gw_req_state s);

#endif
