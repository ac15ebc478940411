/* workload_chat.h -- a chat fleet behind one shared system prompt, as a
 * Mooncake-form trace (trace.h: 512-token block ids, lengths in tokens,
 * timestamps in ms, one "session" per conversation).
 *
 * Shape (lengths in tokens at the trace's 512-token blocks):
 *
 *   system prompt   2-4 variants, each 512-2048 tokens (uniform); all
 *                   variants open with the same head (50-90% of the
 *                   shortest variant) and then differ, like one template
 *                   with per-deployment tails. One variant is dominant: it
 *                   opens 50-85% of conversations, each further variant
 *                   half as many as the one before.
 *   conversation    1-20 turns: 1 + a geometric number of further turns
 *                   with mean 2-7, capped at 20. Turn k's request is the
 *                   system prompt, every earlier user message and reply,
 *                   and the new user message.
 *   user message    log-normal, median 40-120, sigma 1.0, clipped [5, 2000].
 *   reply           output_length: log-normal, median 150-400, sigma 0.7,
 *                   clipped [10, 2000]; resent in the next turn.
 *   timing          a reply takes output_length / (30-80 tokens/s); the user
 *                   then thinks (log-normal, median 10-40 s, sigma 1.0,
 *                   clipped 2 s-10 min) before the next turn.
 *   users           conversations arrive as a Poisson process whose rate
 *                   keeps 20-80 of them in flight on average.
 *
 * Every range is drawn once per seed (rm_chat_params_draw). Block ids
 * follow Mooncake, as in workload_agentic.h: the full blocks of the shared
 * head are common to every variant, a variant's further full blocks to its
 * conversations, and a partial last block has an id of its own. */
#ifndef RM_WORKLOAD_CHAT_H
#define RM_WORKLOAD_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "trace.h"

#define RM_CHAT_MAX_VARIANTS 4

typedef struct rm_chat_params {
    uint32_t variants;
    double variant_share[RM_CHAT_MAX_VARIANTS]; /* sums to 1, [0] dominant */
    uint32_t prompt_tokens[RM_CHAT_MAX_VARIANTS];
    uint32_t head_tokens; /* shared by every variant */
    double mean_turns;    /* further turns after the first (geometric mean) */
    double msg_median, reply_median, decode_tps, think_median_s;
    double in_flight; /* conversations in flight on average */
} rm_chat_params;

void rm_chat_params_draw(uint64_t seed, rm_chat_params *p);

typedef struct rm_chat_conversation {
    uint64_t id;       /* the requests' "session" */
    uint32_t variant;  /* its system prompt */
    uint32_t planned;  /* turns it would make; the trace may end first */
    uint32_t requests; /* of them in the trace */
} rm_chat_conversation;

typedef struct rm_chat_info {
    rm_chat_params params;
    rm_chat_conversation *convs; /* every conversation generated; owned */
    size_t nconvs;
} rm_chat_info;

/* The first `requests` requests (by timestamp) of the workload for seed in
 * bt (which must be empty). info (may be NULL) receives the parameters and
 * conversations; free it with rm_chat_info_free. */
void rm_chat_generate(uint64_t seed, size_t requests, rm_block_trace *bt, rm_chat_info *info);

void rm_chat_info_free(rm_chat_info *info);

#endif
