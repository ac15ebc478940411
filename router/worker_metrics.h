/* worker_metrics.h -- the prefix-cache figures of an inference worker's
 * Prometheus /metrics.
 *
 * Recognised (summed over label sets, e.g. several engines):
 *   vLLM v1  vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total
 *            (and the older vllm:gpu_prefix_cache_{hits,queries}_total):
 *            counters in tokens
 *   vLLM v0  vllm:gpu_prefix_cache_hit_rate: a gauge in [0, 1]
 *   SGLang   sglang:cache_hit_rate: a gauge in [0, 1]
 * and what the worker is busy with (placement's backlog, router/README.md
 * "Work-balanced placement"):
 *   vLLM     vllm:num_requests_running, vllm:num_requests_waiting (summed),
 *            vllm:kv_cache_usage_perc (older: vllm:gpu_cache_usage_perc), a
 *            share in [0, 1] (averaged)
 *   SGLang   sglang:num_running_reqs, sglang:num_queue_reqs, sglang:token_usage
 *
 * No library in Debian reads the Prometheus text format from C, and only
 * sample lines of these few names matter, so lines are scanned by
 * common/prom.h's reader: a name, optional {labels} (quoted values may
 * hold '}' or spaces), a value. */
#ifndef RM_WORKER_METRICS_H
#define RM_WORKER_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct rm_worker_figures {
    int has_counts; /* hit/query token counters were found */
    uint64_t hit_tokens, query_tokens;
    double hit_rate;         /* from the counters, else a gauge; -1 if neither */
    double running, waiting; /* requests running / queued; -1: not reported */
    double kv_usage;         /* share of the KV cache in use, [0, 1]; -1: not reported */
} rm_worker_figures;

/* Fills f from a /metrics document. Returns 1 if any figure was found. */
int rm_worker_metrics_parse(const char *text, size_t len, rm_worker_figures *f);

#endif
