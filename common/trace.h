/* trace.h -- request traces for replay, analysis and benchmarks.
 *
 * Two line formats, one JSON object or array per line:
 *   Mooncake:      {"timestamp": ms, "input_length": n, "output_length": m,
 *                   "hash_ids": [id, ...]}
 *   token arrays:  [t0, t1, ...]   or   {"tokens": [...], "timestamp": ms,
 *                   "output_length": m}
 * A Mooncake block id becomes block_tokens deterministic token ids (same id,
 * same tokens, on every machine); the last block is partial per
 * input_length, scaled by block_tokens/512. Shared prefixes of the token
 * sequences are therefore exactly the trace's. output_length (optional, 0
 * when absent) is the reply's length: scaled the same way on Mooncake lines
 * (rounded down, at least 1 if nonzero), as given on token-array lines.
 *
 * Either kind of line may carry "session": an integer naming the
 * conversation the request belongs to (the workload generators write it).
 * Without it a Mooncake request's conversation is its first block id and a
 * token array's the hash of its first block_tokens tokens. */
#ifndef RM_TRACE_H
#define RM_TRACE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct rm_trace_req {
    uint32_t *tokens;
    size_t n;
    uint64_t timestamp_ms;
    uint64_t conversation;  /* requests with equal values must keep their order */
    uint64_t output_tokens; /* the reply's length in tokens; 0: not given */
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
 * the conversation and the 192-token reply, the requests' output_tokens)
 * and RAG documents, interleaved like concurrent users, with timestamps
 * 10 ms apart. Deterministic for a seed. */
void rm_trace_generate(rm_trace *t, size_t requests, uint64_t seed);

void rm_trace_free(rm_trace *t);

/* Distinct conversations of t; *over (may be NULL) gets how many of them
 * have a request longer than `tokens` (e.g. larger than a node's pool). */
size_t rm_trace_conversations(const rm_trace *t, uint64_t tokens, size_t *over);

/* The count token ids of Mooncake block `id` at any block size (a shorter
 * block is a prefix of a longer one): what a loaded trace holds. */
void rm_trace_block_tokens(uint32_t *out, uint64_t id, size_t count);

/* ---- traces in Mooncake form ------------------------------------------
 * What the workload generators (workload.h) make: block ids of 512-token
 * blocks, lengths in tokens at that size. Written out, they are Mooncake
 * lines plus "session"; turned into token sequences at any block size,
 * they give exactly what loading the written lines gives. */

typedef struct rm_block_req {
    uint64_t timestamp_ms;
    uint64_t input_length, output_length; /* tokens, at 512-token blocks */
    uint64_t session;                     /* requests of one session keep their order */
    uint64_t *hash_ids;                   /* owned by the trace */
    size_t nblocks;
} rm_block_req;

typedef struct rm_block_trace {
    rm_block_req *req;
    size_t n, cap;
} rm_block_trace;

/* Appends a request, copying ids[0..nblocks). Returns it (valid until the
 * next push). */
rm_block_req *rm_block_trace_push(rm_block_trace *bt, uint64_t timestamp_ms, uint64_t input_length,
                                  uint64_t output_length, uint64_t session, const uint64_t *ids,
                                  size_t nblocks);

/* Orders requests by timestamp; equal timestamps keep their push order. */
void rm_block_trace_sort(rm_block_trace *bt);

/* Drops every request after the first n. */
void rm_block_trace_truncate(rm_block_trace *bt, size_t n);

/* Distinct block ids over all requests. */
uint64_t rm_block_trace_unique(const rm_block_trace *bt);

/* One Mooncake line per request (with "session"). Returns 0 or -1 on a
 * write error. */
int rm_block_trace_write(const rm_block_trace *bt, FILE *f);

/* Token sequences at block_tokens per block, as rm_trace_load would make
 * them from the written lines. */
void rm_trace_from_blocks(rm_trace *t, const rm_block_trace *bt, size_t block_tokens);

void rm_block_trace_free(rm_block_trace *bt);

#endif
