/* workload.h -- generated workloads by name, and what their generators share.
 *
 * Workloads (each documented in its header):
 *   agentic   coding-agent sessions (workload_agentic.h)
 *   chat      a chat fleet behind a shared system prompt (workload_chat.h)
 *   builtin   the older mixed workload of rm_trace_generate (trace.h)
 * agentic and chat are Mooncake-form traces (512-token block ids), so one
 * trace gives any block size, and `radixmesh workload` can write them as
 * JSONL to replay later. Every generator is deterministic for a seed. */
#ifndef RM_WORKLOAD_H
#define RM_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "trace.h"
#include "workload_rng.h"

/* Requests agentic and chat make when asked for 0: long enough that most
 * of the trace is past the first sessions' start (sessions last tens of
 * minutes of trace time); builtin makes RM_WORKLOAD_BUILTIN_REQUESTS. */
#define RM_WORKLOAD_DEFAULT_REQUESTS 4000
#define RM_WORKLOAD_BUILTIN_REQUESTS 2000

/* 1 if name is a generated workload's name. */
int rm_workload_known(const char *name);

/* Workload `name` (0 requests: RM_WORKLOAD_DEFAULT_REQUESTS) in Mooncake
 * form into bt (zeroed first). Returns 0, or -1 if the name is unknown or
 * the workload is not block-based (builtin). */
int rm_workload_blocks(const char *name, uint64_t seed, size_t requests, rm_block_trace *bt);

/* A trace by name or path: a workload name generates that workload (0
 * requests: its default) at block_tokens per block; anything else is a
 * trace file loaded with rm_trace_load (0 requests: all of it). Returns 0,
 * or -1 with the reason in err. */
int rm_workload_trace(const char *spec, uint64_t seed, size_t requests, size_t block_tokens,
                      rm_trace *t, char *err, size_t errlen);

/* ---- for the generators ----------------------------------------------- */

#define RM_WL_BLOCK 512

/* A prompt many sessions open with: the ids of its full blocks. */
typedef struct rm_wl_prompt {
    uint64_t *ids;
    size_t full;
} rm_wl_prompt;

/* A prompt of `tokens` tokens whose first head->full blocks are head's (NULL:
 * none shared) and the rest new ids from *next_id. */
void rm_wl_prompt_make(rm_wl_prompt *p, uint64_t tokens, const rm_wl_prompt *head,
                       uint64_t *next_id);
void rm_wl_prompt_free(rm_wl_prompt *p);

/* One session's context. It only grows at its end, so a full block keeps
 * its id from the request that first covers it on; the full blocks of its
 * prompt are the prompt's. */
typedef struct rm_wl_context {
    const rm_wl_prompt *prompt;
    uint64_t session;
    uint64_t *ids;
    size_t nfull, cap;
} rm_wl_context;

/* Appends the session's request of `input` tokens (the whole context so
 * far) with its reply length: the full blocks, then, if input is not a
 * whole number of blocks, a partial block with an id of its own. */
void rm_wl_emit(rm_block_trace *bt, uint64_t *next_id, rm_wl_context *c, uint64_t ts_ms,
                uint64_t input, uint64_t output);
void rm_wl_context_free(rm_wl_context *c);

/* Sessions arriving as a Poisson process (mean gap gap_ms, the first at 0):
 * start(ctx, r, i, start_ms) appends session i's requests to bt, drawing
 * from r (its own stream). Stops once `requests` requests come before the
 * next arrival, then orders bt by time and keeps the first `requests`. */
void rm_wl_sessions(rm_block_trace *bt, uint64_t seed, size_t requests, double gap_ms,
                    void (*start)(void *ctx, rm_wl_rng *r, uint64_t i, uint64_t start_ms),
                    void *ctx);

/* The index of the first share whose running sum exceeds u in [0, 1) (the
 * last one when rounding leaves u past the sum). */
uint32_t rm_wl_pick(const double *shares, uint32_t n, double u);

/* shares[0] = first; the others halve in turn and share the rest. */
void rm_wl_halving_shares(double *shares, uint32_t n, double first);

#endif
