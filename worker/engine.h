/* engine.h -- text generation on an rm_model whose prompt KV comes from a
 * radixmesh cluster when it has it.
 *
 * One request (rm_engine_generate):
 *   1. with a cache: Match the prompt with a lease (through a router: Route
 *      first, then talk to the chosen node directly), ReadKV the matched
 *      pages into the KV buffer in calls of read_chunk_tokens;
 *   2. prefill only the positions past the cached prefix (at least the last
 *      prompt token, whose logits give the first token);
 *   3. sample up to max_tokens tokens, stopping at max_context;
 *   4. WriteKV the full pages past the matched prefix (prompt and generated
 *      tokens whose KV exists), Release the lease.
 * Any failing cache call (node down, timeout, short read, a node storing
 * another KV size) makes the request compute everything itself and skip
 * the cache for the rest of it: the answer is the same, only slower; the
 * result and the counters say so. KV layout and bit-identity: model.h.
 *
 * Namespace: "<model_name>/<16 hex digits of the model digest>", so KV of
 * different weights, shapes or forward arithmetic is never shared.
 *
 * Threads: an engine belongs to one thread (it owns the KV buffer and the
 * cache clients; requests run one at a time). rm_engine_stats may be called
 * from any thread. */
#ifndef RM_ENGINE_H
#define RM_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

struct rm_tls;

typedef struct rm_engine_config {
    const char *cache;          /* NULL or "none": no cache; else HOST:PORT */
    int cache_router;           /* cache names a router (Route, then the node) */
    int cache_timeout_ms;       /* deadline of each cache call; 0: 5000 */
    uint32_t read_chunk_tokens; /* tokens per ReadKV call; 0: 1024 */
    uint32_t lease_ttl_ms;      /* 0: the node's default */
    const char *model_name;     /* NULL: "radixmesh-ref" */
    /* Towards the cache (node or router, and the nodes a router names):
     * TLS verified with tls's CA (NULL or no CA: plaintext; a certificate
     * in it is shown for mTLS), and a bearer token (NULL: none). Both are
     * read at each connection, so they must outlive the engine. */
    const struct rm_tls *tls;
    const char *token;
} rm_engine_config;

typedef enum rm_gen_err {
    RM_GEN_OK = 0,
    RM_GEN_EEMPTY,   /* the prompt has no tokens */
    RM_GEN_ETOKEN,   /* a prompt token id >= vocab */
    RM_GEN_ECONTEXT, /* the prompt is longer than max_context */
    RM_GEN_EPARAM,   /* max_tokens 0, temperature < 0 or not finite, top_p outside (0, 1] */
} rm_gen_err;

const char *rm_gen_strerror(rm_gen_err e);

typedef enum rm_finish {
    RM_FINISH_LENGTH,    /* max_tokens generated */
    RM_FINISH_CONTEXT,   /* the sequence reached max_context */
    RM_FINISH_CANCELLED, /* on_token asked to stop */
} rm_finish;

/* Points in a request's cache traffic, reported to on_cache (tests use it
 * to inject failures at an exact moment; a server can log progress). */
typedef enum rm_cache_event {
    RM_CACHE_MATCHED,   /* Match answered; tokens = matched tokens */
    RM_CACHE_READ_PART, /* one ReadKV call done; tokens = tokens read so far */
} rm_cache_event;

typedef struct rm_gen_params {
    const uint32_t *prompt;
    size_t n_prompt;
    uint32_t max_tokens; /* >= 1 */
    float temperature;   /* 0: greedy */
    float top_p;         /* (0, 1]; 0 is taken as 1 */
    uint64_t seed;       /* sampling RNG seed: same seed, same tokens */
    /* Called with each token as it is chosen (may be NULL); returning
     * nonzero stops the generation (RM_FINISH_CANCELLED). */
    int (*on_token)(void *arg, uint32_t token);
    void (*on_cache)(void *arg, rm_cache_event ev, uint32_t tokens);
    void *arg;
    /* Tokens are chosen among ids [sample_lo, sample_hi) only (sample_hi
     * 0: up to the vocabulary's end; a range outside it is the whole
     * vocabulary). The server answers text prompts with [32, 127), the
     * printable ASCII bytes, so a reply is plain text that comes back as
     * the same tokens in the client's next turn. Logits are computed as
     * always. */
    uint32_t sample_lo, sample_hi;
} rm_gen_params;

typedef struct rm_gen_result {
    uint32_t *tokens; /* malloc'd; rm_gen_result_free */
    size_t n_tokens;
    rm_finish finish;
    uint32_t prompt_tokens;
    uint32_t cached_tokens; /* prompt positions whose KV came from the cluster */
    uint64_t ttft_ns;       /* start -> first token (cache I/O and prefill included) */
    uint64_t total_ns;      /* start -> last token, WriteKV and Release included */
    uint64_t match_ns;      /* Route + Match */
    uint64_t readkv_ns;     /* all ReadKV calls */
    uint64_t prefill_ns;    /* the forward pass over the uncached positions */
    uint64_t writekv_ns;
    uint64_t kv_bytes_read; /* received, a failed read's partial bytes included */
    uint64_t kv_bytes_written;
    uint64_t first_logits_hash; /* of the logits that chose the first token */
    int cache_error;            /* a cache call failed (msg in cache_msg) */
    int cache_status;           /* its gRPC status */
    char cache_msg[256];
    char node_id[128]; /* the node that served the cache calls */
    char detail[160];  /* for a rm_gen_err: what exactly was wrong */
} rm_gen_result;

void rm_gen_result_free(rm_gen_result *r);

/* Whether p is a request the engine of a model with configuration c runs
 * (what rm_engine_generate checks first): RM_GEN_OK, or the error with
 * what exactly was wrong in detail. A server checks with it before it
 * queues a request, so a refused one is answered at once. */
rm_gen_err rm_gen_check(const rm_model_config *c, const rm_gen_params *p, char *detail, size_t len);

/* Counters since the engine started. cached / prompt tokens are what vLLM
 * exports as prefix_cache_hits / prefix_cache_queries. */
typedef struct rm_engine_stats {
    uint64_t requests_total; /* finished, errors excluded */
    uint64_t prompt_tokens_total;
    uint64_t cached_tokens_total;
    uint64_t generated_tokens_total;
    uint64_t cache_errors_total; /* requests whose cache use failed */
    uint64_t kv_bytes_read_total, kv_bytes_written_total;
    uint32_t running; /* 1 while a request runs */
} rm_engine_stats;

typedef struct rm_engine rm_engine;

/* An engine on m (which must outlive it). cfg is copied. Connections are
 * made lazily, so a cluster that is down now does not stop the start.
 * Returns NULL with the reason in err (bad cache address). */
rm_engine *rm_engine_new(const rm_model *m, const rm_engine_config *cfg, char *err, size_t errlen);
void rm_engine_free(rm_engine *e);

/* The cache namespace this engine uses. */
const char *rm_engine_namespace(const rm_engine *e);

/* Runs one request. On RM_GEN_OK r holds the tokens and figures (free with
 * rm_gen_result_free); on an error r->detail says what was wrong and
 * nothing was computed or sent to the cluster. */
rm_gen_err rm_engine_generate(rm_engine *e, const rm_gen_params *p, rm_gen_result *r);

void rm_engine_stats_get(rm_engine *e, rm_engine_stats *out);

#endif
