/* trace.h -- request traces for replay, analysis and benchmarks.
 *
 * Two line formats, one JSON object or array per line:
 *   Mooncake:      {"timestamp": ms, "input_length": n, "hash_ids": [id, ...]}
 *   token arrays:  [t0, t1, ...]   or   {"tokens": [...], "timestamp": ms}
 * A Mooncake block id becomes block_tokens deterministic token ids (same id,
 * same tokens, on every machine); the last block is partial per
 * input_length, scaled by block_tokens/512. Shared prefixes of the token
 * sequences are therefore exactly the trace's. */
#ifndef RM_TRACE_H
#define RM_TRACE_H

#include <stddef.h>
#include <stdint.h>

typedef struct rm_trace_req {
    uint32_t *tokens;
    size_t n;
    uint64_t timestamp_ms;
    uint64_t conversation; /* requests with equal values must keep their order */
} rm_trace_req;

typedef struct rm_trace {
    rm_trace_req *req;
    size_t n;
    uint64_t unique_blocks; /* Mooncake traces: distinct block ids */
    uint64_t total_tokens;
} rm_trace;

/* Loads up to limit requests (0: all) from path. Returns 0, or -1 with
 * "path:line: reason" in err (unreadable file, malformed line). */
int rm_trace_load(const char *path, size_t block_tokens, size_t limit, rm_trace *t, char *err,
                  size_t errlen);

/* A built-in workload for machines without a trace: system prompts shared
 * by many requests, few-shot prompts, multi-turn chats (each turn resends
 * the conversation) and RAG documents, interleaved like concurrent users,
 * with timestamps 10 ms apart. Deterministic for a seed. */
void rm_trace_generate(rm_trace *t, size_t requests, uint64_t seed);

void rm_trace_free(rm_trace *t);

#endif
