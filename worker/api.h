/* api.h -- the OpenAI-compatible bodies of the worker's HTTP server: a
 * completion request read and checked, and what the server answers (a
 * completion, its Server-Sent Events, errors, the model list, /metrics).
 * Pure functions of their arguments (no I/O, no engine), each with its
 * unit test (tests/unit/test_api.c).
 *
 * POST /v1/completions fields (others are ignored, as OpenAI's and vLLM's
 * servers ignore what they do not know):
 *   model          optional; when given, the served name (else 404)
 *   prompt         text (byte-level tokens: byte b is id b) or token ids;
 *                  a batch of one is that prompt, larger batches are 400
 *   max_tokens     integer >= 1, default 16 (OpenAI's)
 *   temperature    >= 0, default 1 (0: greedy)
 *   top_p          (0, 1], default 1
 *   seed           integer; absent: the server draws one (as OpenAI)
 *   n              1 if given
 *   stream         Server-Sent Events; stream_options.include_usage adds
 *                  a last event with the usage
 *   return_token_ids  choices carry "token_ids" (vLLM's name)
 * Text prompts are answered in printable ASCII (rm_gen_params.sample_lo/hi
 * 32..126), so the reply is plain text and comes back as the same tokens in
 * the client's next turn. */
#ifndef RM_API_H
#define RM_API_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

typedef struct rm_api_model {
    const char *name; /* the served model name */
    uint32_t vocab, max_context;
} rm_api_model;

/* An OpenAI-style error: {"error":{"message","type","param","code"}}. */
typedef struct rm_api_error {
    int status;        /* HTTP status */
    const char *type;  /* "invalid_request_error", ... */
    const char *param; /* the field at fault, or NULL */
    const char *code;  /* e.g. "model_not_found", or NULL */
    char message[256];
} rm_api_error;

/* Fills e (message printf-style). */
void rm_api_error_set(rm_api_error *e, int status, const char *type, const char *param,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

typedef struct rm_api_completion {
    uint32_t *prompt; /* malloc'd; rm_api_completion_free */
    size_t n_prompt;
    int text; /* the prompt was text */
    /* max_tokens, temperature, top_p, seed, sample_lo/hi; prompt unset. */
    rm_gen_params params;
    int stream, include_usage, return_token_ids;
} rm_api_completion;

/* Reads and checks a /v1/completions body against model m (the prompt with
 * rm_gen_check, so it is what the engine runs). default_seed is the seed
 * of a request that names none. Returns 0, or -1 with e filled (nothing
 * to free). */
int rm_api_parse_completion(const char *body, size_t len, const rm_api_model *m,
                            uint64_t default_seed, rm_api_completion *out, rm_api_error *e);
void rm_api_completion_free(rm_api_completion *c);

/* What every answer of one request repeats. */
typedef struct rm_api_meta {
    const char *id, *model;
    long long created; /* Unix seconds */
} rm_api_meta;

typedef struct rm_api_usage {
    uint32_t prompt_tokens, completion_tokens, cached_tokens;
} rm_api_usage;

/* Bodies, malloc'd (the caller frees), their length in *len. text must be
 * UTF-8 (rm_bytetok_text); ids are added as "token_ids" when with_ids. */
char *rm_api_completion_json(const rm_api_meta *m, const char *text, size_t text_len,
                             const uint32_t *ids, size_t n, int with_ids, const char *finish,
                             const rm_api_usage *u, size_t *len);

/* One event "data: {...}\n\n" of a stream: a piece of text (the tokens
 * ids[0, n) made), finish_reason null until the last (finish non-NULL). */
char *rm_api_stream_event(const rm_api_meta *m, const char *text, size_t text_len,
                          const uint32_t *ids, size_t n, int with_ids, const char *finish,
                          size_t *len);

/* The usage event (choices empty), as OpenAI sends for include_usage. */
char *rm_api_stream_usage_event(const rm_api_meta *m, const rm_api_usage *u, size_t *len);

/* The event that ends a stream. */
#define RM_API_STREAM_DONE "data: [DONE]\n\n"

char *rm_api_error_json(const rm_api_error *e, size_t *len);

/* GET /v1/models: the one served model. */
char *rm_api_models_json(const rm_api_model *m, long long created, size_t *len);

/* The finish_reason of an engine result ("length" also for a sequence
 * that reached the maximum context, as vLLM says; "abort" if cancelled). */
const char *rm_api_finish_reason(rm_finish f);

/* What /metrics shows. */
typedef struct rm_api_figures {
    rm_engine_stats engine;
    uint64_t waiting;
    uint64_t finished_total;      /* completions that ended, cancelled ones included */
    uint64_t cancelled_total;     /* stopped because the client left (or a drain) */
    uint64_t refused_full_total;  /* 503: the queue was full */
    uint64_t refused_bad_total;   /* 4xx answers to completion requests */
    uint64_t connections;         /* open HTTP connections */
    uint64_t refused_connections; /* over --max-connections */
    uint64_t timeouts_total;      /* connections closed by a timeout */
} rm_api_figures;

/* Prometheus text: vLLM's names for what the gateway reads
 * (vllm:prefix_cache_queries_total = prompt tokens, ..._hits_total =
 * cached tokens, vllm:num_requests_running / _waiting), labelled
 * model_name as vLLM does, then the worker's own radixmesh_worker_*
 * figures. Caller frees. */
char *rm_api_metrics(const char *model, const rm_api_figures *f);

#endif
