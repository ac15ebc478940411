#include "worker_metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prom.h"

enum { M_HITS, M_QUERIES, M_RATE, M_RUNNING, M_WAITING, M_KV, M_NONE };

static const struct {
    const char *name;
    int kind;
} known[] = {
    {"vllm:prefix_cache_hits_total", M_HITS},
    {"vllm:prefix_cache_queries_total", M_QUERIES},
    {"vllm:gpu_prefix_cache_hits_total", M_HITS},
    {"vllm:gpu_prefix_cache_queries_total", M_QUERIES},
    {"vllm:gpu_prefix_cache_hit_rate", M_RATE},
    {"sglang:cache_hit_rate", M_RATE},
    {"vllm:num_requests_running", M_RUNNING},
    {"vllm:num_requests_waiting", M_WAITING},
    {"vllm:kv_cache_usage_perc", M_KV},
    {"vllm:gpu_cache_usage_perc", M_KV},
    {"sglang:num_running_reqs", M_RUNNING},
    {"sglang:num_queue_reqs", M_WAITING},
    {"sglang:token_usage", M_KV},
};

static int kind_of(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i].name) == len && !memcmp(known[i].name, name, len))
            return known[i].kind;
    return M_NONE;
}

/* A counter's value as an integer: a page may claim anything, and casting
 * a double beyond 2^64 (or infinity, from a sum) is undefined. */
static uint64_t to_u64(double v)
{
    return v >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t)v;
}

int rm_worker_metrics_parse(const char *text, size_t len, rm_worker_figures *f)
{
    double sum[M_NONE] = {0};
    int seen[M_NONE] = {0}, rates = 0, kvs = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        rm_prom_line l;
        if (rm_prom_parse_line(p, le, &l) == 0) {
            int k = kind_of(l.name, l.name_len);
            double v = l.value;
            if (k != M_NONE && isfinite(v) && v >= 0) {
                sum[k] += v;
                seen[k] = 1;
                rates += k == M_RATE;
                kvs += k == M_KV;
            }
        }
        p = le + 1;
    }
    f->has_counts = seen[M_HITS] && seen[M_QUERIES];
    f->hit_tokens = f->has_counts ? to_u64(sum[M_HITS]) : 0;
    f->query_tokens = f->has_counts ? to_u64(sum[M_QUERIES]) : 0;
    if (f->has_counts && f->query_tokens)
        f->hit_rate = (double)f->hit_tokens / (double)f->query_tokens;
    else if (rates)
        f->hit_rate = sum[M_RATE] / rates;
    else
        f->hit_rate = -1;
    /* Several engines behind one worker: their requests add up, their
     * caches' fill is the mean. */
    f->running = seen[M_RUNNING] ? sum[M_RUNNING] : -1;
    f->waiting = seen[M_WAITING] ? sum[M_WAITING] : -1;
    f->kv_usage = kvs ? sum[M_KV] / kvs : -1;
    return f->has_counts || rates || seen[M_RUNNING] || seen[M_WAITING] || kvs;
}
