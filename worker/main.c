/* radixmesh-worker: the reference worker. With --http it serves
 * OpenAI-compatible completions (worker/server.h); else it runs one prompt
 * through rm_engine and prints the result as one JSON line
 * (worker/README.md). */
#include <errno.h>
#include <grpc/grpc.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytetok.h"
#include "engine.h"
#include "fdbudget.h"
#include "flags.h"
#include "log.h"
#include "model.h"
#include "rpc_client.h"
#include "server.h"
#include "signals.h"
#include "tls.h"
#include "util.h"

/* "1,2,3" -> ids; returns the count or -1 on a malformed list. */
static long parse_ids(const char *s, uint32_t **out)
{
    size_t cap = 16, n = 0;
    uint32_t *v = rm_xmalloc(cap * sizeof *v);
    while (*s) {
        char *end;
        unsigned long x = strtoul(s, &end, 10);
        if (end == s || x > UINT32_MAX || (*end && *end != ',')) {
            free(v);
            return -1;
        }
        if (n == cap)
            v = rm_xrealloc(v, (cap *= 2) * sizeof *v);
        v[n++] = (uint32_t)x;
        s = *end ? end + 1 : end;
    }
    *out = v;
    return (long)n;
}

/* What main acquires, in this order; release() gives back whatever of it
 * is held, in reverse, so that every way out (a bad flag, --save,
 * --describe, serving, one prompt) leaves memcheck nothing to report. */
typedef struct held {
    rm_tls tls;
    char *token;
    uint32_t *ids;
    rm_model m;
    int model_loaded, grpc_started;
    rm_engine *e;
} held;

static int release(held *h, int rc)
{
    rm_engine_free(h->e);
    if (h->grpc_started)
        grpc_shutdown();
    if (h->model_loaded)
        rm_model_free(&h->m);
    free(h->ids);
    free(h->token);
    rm_tls_free(&h->tls);
    return rc;
}

/* rm_flags_fail (usage, exit 2) once h is released. */
__attribute__((noreturn)) static void fail(held *h, const rm_flagset *fs, const char *why)
{
    release(h, 2);
    rm_flags_fail(fs, "%s", why);
}

int main(int argc, char **argv)
{
    uint64_t seed = 1, layers = 4, d_model = 256, heads = 8, vocab = 8192, max_context = 4096;
    uint64_t max_tokens = 16, sample_seed = 0, cache_timeout = 5000, read_chunk = 1024;
    double temperature = 0, top_p = 1;
    int cache_router = 0, describe = 0;
    const char *weights = NULL, *save = NULL, *model_name = "radixmesh-ref", *cache = "none";
    const char *prompt = NULL, *prompt_tokens = NULL, *log_level = "info";
    const char *cache_ca = NULL, *cache_cert = NULL, *cache_key = NULL, *cache_token = NULL;
    rm_wserver_config sc;
    rm_wserver_config_defaults(&sc);
    sc.listen = NULL;
    const rm_flag flags[] = {
        {"seed", RM_FLAG_AT(&seed), "weight generator seed (without --weights)", 0, 0},
        {"layers", RM_FLAG_AT(&layers), "transformer blocks (without --weights)", 1, 1024},
        {"d-model", RM_FLAG_AT(&d_model), "model width (without --weights)", 1, 16384},
        {"heads", RM_FLAG_AT(&heads),
         "attention heads (with --weights: when the file's metadata has no n_head)", 1, 16384},
        {"vocab", RM_FLAG_AT(&vocab), "vocabulary size, >= 256 for text (without --weights)", 1,
         1u << 24},
        {"max-context", RM_FLAG_AT(&max_context),
         "longest sequence, prompt + output (with --weights: at most the file's positions)", 1,
         1u << 20},
        {"weights", RM_FLAG_AT(&weights), "GPT-2 safetensors file (F32) instead of a seed", 0, 0},
        {"save-weights", RM_FLAG_AT(&save), "write the model's weights to FILE and exit", 0, 0},
        {"describe", RM_FLAG_AT(&describe),
         "print the model's shape, KV bytes per token (its node's --kv-bytes-per-token) and "
         "cache namespace as JSON, and exit",
         0, 0},
        {"model-name", RM_FLAG_AT(&model_name), "model name (first part of the cache namespace)", 0,
         0},
        {"cache", RM_FLAG_AT(&cache), "KV cache: none, or a node's HOST:PORT", 0, 0},
        {"cache-router", RM_FLAG_AT(&cache_router),
         "--cache is a router: Route each prompt, then use the chosen node", 0, 0},
        {"cache-timeout-ms", RM_FLAG_AT(&cache_timeout), "deadline of each cache call", 1, 600000},
        {"read-chunk-tokens", RM_FLAG_AT(&read_chunk), "tokens per ReadKV call", 1, 1u << 20},
        {"cache-tls-ca", RM_FLAG_AT(&cache_ca),
         "speak TLS to the cache, verifying it with this PEM CA", 0, 0},
        {"cache-tls-cert", RM_FLAG_AT(&cache_cert),
         "PEM client certificate shown to the cache (mTLS; needs --cache-tls-ca)", 0, 0},
        {"cache-tls-key", RM_FLAG_AT(&cache_key), "PEM private key of --cache-tls-cert", 0, 0},
        {"cache-token-file", RM_FLAG_AT(&cache_token),
         "send the bearer token in this file to the cache (its --auth-token-file)", 0, 0},
        {"http", RM_FLAG_AT(&sc.listen),
         "serve OpenAI-compatible completions on HOST:PORT (port 0: any free port)", 0, 0},
        {"max-waiting", RM_FLAG_AT(&sc.max_waiting),
         "--http requests waiting for the engine at most (more get 503 with Retry-After)", 1,
         1u << 20},
        {"max-connections", RM_FLAG_AT(&sc.max_connections),
         "--http connections at most (more get 503 and are closed; lowered to fit the open-files "
         "limit)",
         1, 1000000},
        {"max-body-bytes", RM_FLAG_AT(&sc.max_body_bytes), "larger request bodies get 413", 1024,
         1u << 30},
        {"max-header-bytes", RM_FLAG_AT(&sc.max_header_bytes),
         "larger request heads get 431 (at most 80 KiB, http-parser's own bound)", 1024, 80u << 10},
        {"request-timeout-ms", RM_FLAG_AT(&sc.request_timeout_ms),
         "a request (head and body) must arrive within this (else 408)", 100, 3600000},
        {"idle-timeout-ms", RM_FLAG_AT(&sc.idle_timeout_ms),
         "close a kept-alive connection idle this long, or a client that takes nothing of its "
         "response this long (its request is cancelled)",
         100, 86400000},
        {"drain-timeout-ms", RM_FLAG_AT(&sc.drain_timeout_ms),
         "on SIGTERM, requests in progress get this long before they are cancelled", 0, 3600000},
        {"prompt", RM_FLAG_AT(&prompt), "text prompt (byte-level tokens: byte b is id b)", 0, 0},
        {"prompt-tokens", RM_FLAG_AT(&prompt_tokens), "prompt as token ids: 1,2,3", 0, 0},
        {"max-tokens", RM_FLAG_AT(&max_tokens), "tokens to generate at most", 1, 1u << 20},
        {"temperature", RM_FLAG_AT(&temperature), "0: greedy; > 0: seeded sampling", 0, 0},
        {"top-p", RM_FLAG_AT(&top_p), "nucleus sampling mass, (0, 1]", 0, 0},
        {"sample-seed", RM_FLAG_AT(&sample_seed), "sampling seed", 0, 0},
        {"log-level", RM_FLAG_AT(&log_level), "debug, info, warn or error", 0, 0},
    };
    rm_flagset fs = {"radixmesh-worker",
                     "--http HOST:PORT | --prompt TEXT | --prompt-tokens IDS [options]",
                     "RADIXMESH", flags, (int)RM_ARRAY_LEN(flags)};
    rm_flags_parse(&fs, argc, argv, NULL, 0, NULL);
    rm_log_level lv;
    if (rm_log_parse_level(log_level, &lv) != 0)
        rm_flags_fail(&fs, "bad --log-level %s", log_level);
    rm_log_set_level(lv);
    if (!(temperature >= 0) || !(top_p > 0 && top_p <= 1))
        rm_flags_fail(&fs, "--temperature must be >= 0 and --top-p in (0, 1]");
    if (!save && !describe && (!!prompt + !!prompt_tokens + !!sc.listen) != 1)
        rm_flags_fail(&fs, "give exactly one of --http, --prompt and --prompt-tokens");
    /* As the daemons' --http: the soft limit raised, and the cap lowered
     * to leave the worker's own descriptors their reserve (fdbudget.h). */
    rm_fd_plan fds;
    if (sc.listen) {
        if (rm_fd_budget(sc.max_connections, "--max-connections", 0, &fds, "worker") != 0)
            return 1;
        sc.max_connections = fds.http_max;
    }
    if ((cache_cert || cache_key) && !cache_ca)
        rm_flags_fail(&fs, "--cache-tls-cert/--cache-tls-key need --cache-tls-ca (the cache's CA)");
    held h = {0};
    char err[256];
    if (rm_tls_load(&h.tls, cache_cert, cache_key, cache_ca, 0, err, sizeof err) != 0)
        fail(&h, &fs, err);
    if (cache_token && !(h.token = rm_read_token_file(cache_token, err, sizeof err))) {
        char why[300];
        snprintf(why, sizeof why, "--cache-token-file: %s", err);
        fail(&h, &fs, why);
    }

    long n = 0;
    if (prompt) {
        h.ids = rm_xmalloc((strlen(prompt) + 1) * sizeof *h.ids);
        n = (long)rm_bytetok_encode(prompt, strlen(prompt), h.ids);
    } else if (prompt_tokens && (n = parse_ids(prompt_tokens, &h.ids)) < 0) {
        fail(&h, &fs, "--prompt-tokens must be comma-separated token ids");
    }

    rm_model *m = &h.m;
    rm_model_err me;
    if (weights) {
        me = rm_model_load(m, weights, (uint32_t)heads, (uint32_t)max_context, err, sizeof err);
    } else {
        rm_model_config c = {(uint32_t)layers, (uint32_t)d_model, (uint32_t)heads, (uint32_t)vocab,
                             (uint32_t)max_context};
        me = rm_model_init_seeded(m, &c, seed, err, sizeof err);
        if (me == RM_MODEL_ECONFIG)
            fail(&h, &fs, err);
    }
    if (me != RM_MODEL_OK) {
        rm_log(RM_LOG_ERROR, "worker", "%s: %s", rm_model_strerror(me), err);
        return release(&h, 1);
    }
    h.model_loaded = 1;
    rm_log(RM_LOG_INFO, "worker",
           "model: %u layers, d_model %u, %u heads, vocab %u, max context %u, %zu KV bytes/token",
           m->cfg.layers, m->cfg.d_model, m->cfg.heads, m->cfg.vocab, m->cfg.max_context,
           rm_model_kv_bytes(&m->cfg));
    if (save) {
        me = rm_model_save(m, save, err, sizeof err);
        if (me != RM_MODEL_OK)
            rm_log(RM_LOG_ERROR, "worker", "%s", err);
        return release(&h, me == RM_MODEL_OK ? 0 : 1);
    }
    rm_engine_config ec = {
        cache,  cache_router, (int)cache_timeout, (uint32_t)read_chunk, 0, model_name,
        &h.tls, h.token};
    /* Serving: SIGTERM drains, taken by the loop (signals.h); before the
     * first thread starts, so that every thread inherits the mask. */
    if (sc.listen && rm_signals_block() != 0)
        rm_log(RM_LOG_WARN, "worker", "cannot block SIGTERM: %s", strerror(errno));
    grpc_init(); /* the cache clients' */
    h.grpc_started = 1;
    rm_engine *e = h.e = rm_engine_new(m, &ec, err, sizeof err);
    if (!e)
        fail(&h, &fs, err);
    if (describe) {
        json_t *d = json_pack(
            "{s:s, s:i, s:i, s:i, s:i, s:i, s:I, s:s}", "model_name", model_name, "layers",
            (int)m->cfg.layers, "d_model", (int)m->cfg.d_model, "heads", (int)m->cfg.heads, "vocab",
            (int)m->cfg.vocab, "max_context", (int)m->cfg.max_context, "kv_bytes_per_token",
            (json_int_t)rm_model_kv_bytes(&m->cfg), "namespace", rm_engine_namespace(e));
        char *text = json_dumps(d, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(d);
        return release(&h, 0);
    }
    if (sc.listen) {
        rm_log(RM_LOG_INFO, "worker", "cache: %s%s%s, namespace %s", cache,
               cache_router ? " (a router)" : "", h.tls.ca ? " over TLS" : "",
               rm_engine_namespace(e));
        rm_api_model am = {model_name, m->cfg.vocab, m->cfg.max_context};
        h.e = NULL; /* rm_wserver_run frees it */
        return release(&h, rm_wserver_run(&sc, &am, e));
    }

    rm_gen_params gp = {0};
    gp.prompt = h.ids;
    gp.n_prompt = (size_t)n;
    gp.max_tokens = (uint32_t)max_tokens;
    gp.temperature = (float)temperature;
    gp.top_p = (float)top_p;
    gp.seed = sample_seed;
    rm_gen_result r;
    rm_gen_err ge = rm_engine_generate(e, &gp, &r);
    int rc = 0;
    if (ge != RM_GEN_OK) {
        fprintf(stderr, "radixmesh-worker: %s: %s\n", rm_gen_strerror(ge), r.detail);
        rc = 1;
    } else {
        if (r.cache_error)
            rm_log(RM_LOG_WARN, "worker", "cache not used: %s", r.cache_msg);
        json_t *toks = json_array();
        for (size_t i = 0; i < r.n_tokens; i++)
            json_array_append_new(toks, json_integer(r.tokens[i]));
        rm_sbuf text = {0};
        rm_bytetok_decode(r.tokens, r.n_tokens, &text);
        static const char *const finish[] = {"length", "context", "cancelled"};
        json_t *out = json_pack(
            "{s:o, s:s#, s:s, s:{s:i, s:i, s:i}, s:{s:f, s:f, s:f, s:f, s:f}, s:{s:I, s:I, s:b, "
            "s:s, s:s}}",
            "tokens", toks, "text", text.p ? text.p : "", text.len, "finish_reason",
            finish[r.finish], "usage", "prompt_tokens", (int)r.prompt_tokens, "cached_tokens",
            (int)r.cached_tokens, "completion_tokens", (int)r.n_tokens, "ms", "ttft",
            r.ttft_ns / 1e6, "total", r.total_ns / 1e6, "match", r.match_ns / 1e6, "readkv",
            r.readkv_ns / 1e6, "prefill", r.prefill_ns / 1e6, "cache", "kv_bytes_read",
            (json_int_t)r.kv_bytes_read, "kv_bytes_written", (json_int_t)r.kv_bytes_written,
            "error", r.cache_error, "message", r.cache_msg, "namespace", rm_engine_namespace(e));
        char *s = json_dumps(out, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(out);
        free(text.p);
        rm_gen_result_free(&r);
    }
    return release(&h, rc);
}
