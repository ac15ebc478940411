/* worker_probe.h -- what a node mirroring its inference worker learns of it
 * over HTTP (--worker-url), every interval:
 *
 *   GET /v1/models   the model it serves (the first entry's id): the
 *                    namespace its KV events go to, unless
 *                    --worker-namespace names one;
 *   GET /metrics     its KV cache's geometry, vllm:cache_config_info's
 *                    block_size and num_gpu_blocks labels (the mirror's
 *                    pool is sized from them), and the identity of its
 *                    process: process_start_time_seconds, and
 *                    vllm:prefix_cache_queries_total, which only a new
 *                    process sets back. A restart empties the engine's
 *                    cache without a word on the event stream until the
 *                    new process publishes, so the node learns it here.
 *
 * The probe runs on a thread of its own (blocking sockets, each look
 * bounded by timeout_ms) and hands every look to report() on that thread;
 * the node posts it to its owner thread. The parsing is pure and tested
 * apart (rm_worker_look_metrics, rm_worker_look_models,
 * rm_worker_restarted). */
#ifndef RM_WORKER_PROBE_H
#define RM_WORKER_PROBE_H

#include <stddef.h>
#include <stdint.h>

typedef struct rm_worker_look {
    uint64_t stamp;          /* the caller's stamp() just before the look */
    int reachable;           /* /metrics answered 200 */
    uint32_t block_size;     /* 0: unknown */
    uint64_t num_gpu_blocks; /* 0: unknown */
    double start_time;       /* process_start_time_seconds; 0: unknown */
    int has_queries;
    double queries;  /* vllm:prefix_cache_queries_total (summed over engines) */
    char model[256]; /* "" unknown (or not asked) */
    char why[160];   /* !reachable: what failed */
} rm_worker_look;

/* Fills the /metrics figures of out (the others are left alone) from a
 * page of the Prometheus text format. */
void rm_worker_look_metrics(const char *text, size_t len, rm_worker_look *out);

/* The first model's id in a /v1/models document into model (cap bytes).
 * Returns 0, or -1 when there is none. */
int rm_worker_look_models(const char *json, size_t len, char *model, size_t cap);

/* Whether the worker's process changed between two looks that both
 * reached it: its start time moved, or its query counter went back. */
int rm_worker_restarted(const rm_worker_look *before, const rm_worker_look *now);

/* One GET of http://host:port/path, bounded by timeout_ms in all. Returns
 * 0 with the status and the body (malloc'd, NUL-terminated, *len bytes,
 * at most max_bytes), or -1 with a reason in err. */
int rm_http_get(const char *host, int port, const char *path, int timeout_ms, size_t max_bytes,
                int *status, char **body, size_t *len, char *err, size_t errlen);

/* Called on the probe's thread; the look is the callee's (free it). */
typedef void (*rm_worker_report_fn)(void *ctx, rm_worker_look *look);
typedef uint64_t (*rm_worker_stamp_fn)(void *ctx);

typedef struct rm_worker_probe_config {
    const char *url;      /* http://HOST:PORT */
    uint32_t interval_ms; /* between looks */
    uint32_t timeout_ms;  /* for each GET */
    int want_model;       /* ask /v1/models too */
    rm_worker_report_fn report;
    rm_worker_stamp_fn stamp; /* may be NULL */
    void *ctx;
} rm_worker_probe_config;

typedef struct rm_worker_probe rm_worker_probe;

/* Starts the thread; the first look is at once. Returns NULL with a
 * reason in err (a URL that is not http://HOST:PORT). */
rm_worker_probe *rm_worker_probe_start(const rm_worker_probe_config *cfg, char *err, size_t errlen);

/* Stops asking for the model (it is known). Any thread. */
void rm_worker_probe_model_known(rm_worker_probe *p);

/* Stops the thread (a look in progress ends within its timeout) and frees
 * p. No report() runs after it returns. NULL is ignored. */
void rm_worker_probe_stop(rm_worker_probe *p);

#endif
