/* workload_agentic.h -- coding-agent sessions (Claude Code style) as a
 * Mooncake-form trace (trace.h: 512-token block ids, lengths in tokens,
 * timestamps in ms, one "session" per agent).
 *
 * Shape (all lengths in tokens at the trace's 512-token blocks):
 *
 *   client versions   3-5 in use at once; each has a tool-definition prompt
 *                     of 8k-16k (uniform) that every session of that
 *                     version opens with, and a smaller sub-agent prompt of
 *                     2k-6k. One version is dominant: it opens 55-80% of
 *                     sessions, each further version half as many as the
 *                     one before.
 *   main session      opens with its version's tool prompt and a private
 *                     context (project instructions, the first user message)
 *                     for ~20k in all (uniform 15k-25k; at least 3k private).
 *                     Over n requests, n uniform in [lo, hi] with lo 10-20
 *                     and hi 30-50, the context grows to a final size drawn
 *                     log-uniform in [100k-150k, 500k-700k]: each request
 *                     resends the whole context plus the previous reply plus
 *                     a new user/tool message (after sub-agents: also their
 *                     results). Messages are log-normal
 *                     (sigma 0.6-1.0) scaled so the last request reaches the
 *                     final size.
 *   reply             output_length: log-normal, median 250-600, sigma 0.8,
 *                     clipped to [30, 4000].
 *   timing            a request's reply takes output_length / (40-100
 *                     tokens/s); then the next request follows a tool run
 *                     (log-normal, median 2-6 s, sigma 1, clipped 0.3 s-2 min)
 *                     or, with probability 0.10-0.25, a human's think time
 *                     (median 30-90 s, sigma 0.8, clipped 5 s-15 min).
 *   sub-agents        after a main request (not its last), with probability
 *                     0.01-0.04, 1-3 sub-agents start in parallel, each its
 *                     own session: the main session's tool prompt (with
 *                     probability 0.3-0.7) or its version's sub-agent prompt,
 *                     a task message (log-normal median 2.5k, clipped
 *                     500-10k), then 2-10 requests growing by tool results
 *                     (median 3k, sigma 1, clipped 100-30k) and replies, tool
 *                     runs between them; then gone. The main session's next
 *                     request waits for all of them and carries their last
 *                     replies (the results) in its new message.
 *   arrivals          main sessions arrive as a Poisson process whose rate
 *                     keeps 12-32 of them in flight on average (sessions
 *                     last minutes to an hour on the trace clock).
 *
 * Every range above is drawn once per seed (rm_agentic_params_draw), so
 * two seeds differ in the mix, the sizes and the timing, not only in the
 * random draws: a rule tuned on one seed meets other traffic on another.
 *
 * Block ids follow Mooncake: a full block's id stands for its content and
 * everything before it (the tool prompt's full blocks are shared by all
 * sessions that open with it; a session's later requests repeat its earlier
 * full blocks), and a partial last block has an id of its own, used once.
 * Ids count up from 0: the prompts' blocks first, then in the order the
 * sessions are generated.
 *
 * With the benchmarks' sizing (8 nodes, pools = 10% of the trace's unique
 * blocks / 8), the largest sessions do not fit in one node's pool: see
 * rm_agentic_generate's stats and tests/unit/test_workload.c. */
#ifndef RM_WORKLOAD_AGENTIC_H
#define RM_WORKLOAD_AGENTIC_H

#include <stddef.h>
#include <stdint.h>

#include "trace.h"

#define RM_AGENTIC_MAX_VERSIONS 5

typedef struct rm_agentic_params {
    uint32_t versions;
    double version_share[RM_AGENTIC_MAX_VERSIONS]; /* sums to 1, [0] dominant */
    uint32_t tool_prompt_tokens[RM_AGENTIC_MAX_VERSIONS];
    uint32_t sub_prompt_tokens[RM_AGENTIC_MAX_VERSIONS];
    double sub_same_prompt; /* share of sub-agents opening with the full tool prompt */
    double in_flight;       /* main sessions in flight on average */
    uint32_t min_requests, max_requests;
    double final_lo, final_hi; /* final context, log-uniform */
    double msg_sigma;
    double reply_median;
    double decode_tps;
    double tool_median_s, human_share, human_median_s;
    double spawn_prob; /* per main request: sub-agents start */
} rm_agentic_params;

/* The workload's parameters for a seed (see the ranges above). */
void rm_agentic_params_draw(uint64_t seed, rm_agentic_params *p);

/* One session of a generated trace. */
typedef struct rm_agentic_session {
    uint64_t id;            /* the requests' "session" */
    uint64_t parent;        /* a sub-agent's main session; 0 for a main session */
    uint32_t version;       /* client version */
    uint32_t prompt_tokens; /* the prompt it opens with (tool or sub-agent prompt) */
    uint32_t planned;       /* requests it would make; the trace may end first */
    uint32_t requests;      /* of them in the trace */
    uint64_t final_tokens;  /* input_length of its last planned request */
} rm_agentic_session;

typedef struct rm_agentic_info {
    rm_agentic_params params;
    rm_agentic_session
        *sessions; /* every session generated (some may have no request in the trace); owned */
    size_t nsessions;
} rm_agentic_info;

/* The first `requests` requests (by timestamp) of the workload for seed,
 * in bt (which must be empty). info (may be NULL) receives the
 * parameters and sessions; free it with rm_agentic_info_free. */
void rm_agentic_generate(uint64_t seed, size_t requests, rm_block_trace *bt, rm_agentic_info *info);

void rm_agentic_info_free(rm_agentic_info *info);

#endif
