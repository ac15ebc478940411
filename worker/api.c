#include "api.h"

#include <jansson.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytetok.h"
#include "prom.h"
#include "util.h"

/* Text prompts are answered in printable ASCII (see rm_gen_params). */
enum { DEFAULT_MAX_TOKENS = 16, TEXT_REPLY_LO = 32, TEXT_REPLY_HI = 127 };

void rm_api_error_set(rm_api_error *e, int status, const char *type, const char *param,
                      const char *fmt, ...)
{
    e->status = status;
    e->type = type;
    e->param = param;
    e->code = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

#define BAD(param, ...) rm_api_error_set(e, 400, "invalid_request_error", param, __VA_ARGS__)

void rm_api_completion_free(rm_api_completion *c)
{
    free(c->prompt);
    c->prompt = NULL;
    c->n_prompt = 0;
}

/* The prompt: text, or token ids (a batch of one is its element). */
static int read_prompt(json_t *p, rm_api_completion *c, rm_api_error *e)
{
    if (json_is_array(p) && json_array_size(p) &&
        (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0)))) {
        if (json_array_size(p) != 1) {
            BAD("prompt", "batched prompts are not supported: send one prompt per request");
            return -1;
        }
        p = json_array_get(p, 0);
    }
    if (json_is_string(p)) {
        size_t n = json_string_length(p);
        c->prompt = rm_xmalloc((n ? n : 1) * sizeof *c->prompt);
        c->n_prompt = rm_bytetok_encode(json_string_value(p), n, c->prompt);
        c->text = 1;
        return 0;
    }
    if (!json_is_array(p)) {
        BAD("prompt", "prompt must be a string or an array of token ids");
        return -1;
    }
    size_t n = json_array_size(p);
    c->prompt = rm_xmalloc((n ? n : 1) * sizeof *c->prompt);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(p, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > (json_int_t)UINT32_MAX) {
            BAD("prompt", "prompt element %zu is not a token id (an integer >= 0)", i);
            rm_api_completion_free(c);
            return -1;
        }
        c->prompt[i] = (uint32_t)json_integer_value(v);
    }
    c->n_prompt = n;
    return 0;
}

/* obj's field name, or NULL when it is absent or null: either way the
 * field's default stands (OpenAI's clients send null for "not set"). */
static json_t *given(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    return v && !json_is_null(v) ? v : NULL;
}

/* Every field's check: a value v that is given must be what ok says, else
 * a 400 naming the field ("name must be what"). Returns -1 then, else 0. */
static int check(const json_t *v, int ok, const char *name, const char *what, rm_api_error *e)
{
    if (!v || ok)
        return 0;
    BAD(name, "%s must be %s", name, what);
    return -1;
}

/* A boolean field: *out keeps its default when the field is not given. */
static int bool_field(json_t *obj, const char *name, int *out, rm_api_error *e)
{
    json_t *v = given(obj, name);
    if (check(v, json_is_boolean(v), name, "true or false", e))
        return -1;
    if (v)
        *out = json_is_true(v);
    return 0;
}

/* The fields other than the prompt, checked one by one: the first bad one
 * is the one the 400 names. */
static int read_fields(json_t *req, const rm_api_model *m, uint64_t default_seed,
                       rm_api_completion *c, rm_api_error *e)
{
    json_t *model = given(req, "model"), *n = given(req, "n"), *mt = given(req, "max_tokens");
    if (check(model, json_is_string(model), "model", "a string", e))
        return -1;
    if (model && strcmp(json_string_value(model), m->name)) {
        rm_api_error_set(e, 404, "invalid_request_error", "model",
                         "The model `%.100s` does not exist (this worker serves `%.100s`).",
                         json_string_value(model), m->name);
        e->code = "model_not_found";
        return -1;
    }
    if (check(n, json_is_integer(n) && json_integer_value(n) == 1, "n",
              "1: this worker generates one choice per request", e) ||
        check(mt, json_is_integer(mt) && json_integer_value(mt) >= 1, "max_tokens",
              "an integer >= 1", e))
        return -1;
    json_int_t max_tokens = mt ? json_integer_value(mt) : DEFAULT_MAX_TOKENS;
    c->params.max_tokens = max_tokens > (json_int_t)UINT32_MAX ? UINT32_MAX : (uint32_t)max_tokens;
    json_t *t = given(req, "temperature"), *p = given(req, "top_p");
    if (check(t, json_is_number(t), "temperature", "a number", e) ||
        check(p, json_is_number(p), "top_p", "a number", e))
        return -1;
    double temperature = t ? json_number_value(t) : 1, top_p = p ? json_number_value(p) : 1;
    /* The sampler takes a float: 1e308 is finite here, past a float there. */
    if (check(t, temperature >= 0 && temperature <= FLT_MAX, "temperature", "a finite number >= 0",
              e) ||
        check(p, top_p > 0 && top_p <= 1, "top_p", "in (0, 1]", e))
        return -1;
    c->params.temperature = (float)temperature;
    c->params.top_p = (float)top_p;
    json_t *seed = given(req, "seed");
    if (check(seed, json_is_integer(seed), "seed", "an integer", e))
        return -1;
    c->params.seed = seed ? (uint64_t)json_integer_value(seed) : default_seed;
    if (bool_field(req, "stream", &c->stream, e) ||
        bool_field(req, "return_token_ids", &c->return_token_ids, e))
        return -1;
    json_t *so = json_object_get(req, "stream_options");
    if (c->stream && json_is_object(so) && bool_field(so, "include_usage", &c->include_usage, e))
        return -1;
    return 0;
}

int rm_api_parse_completion(const char *body, size_t len, const rm_api_model *m,
                            uint64_t default_seed, rm_api_completion *out, rm_api_error *e)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *req = json_loadb(body, len, JSON_ALLOW_NUL, &jerr);
    if (!req) {
        BAD(NULL, "malformed JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        return -1;
    }
    int rc = -1;
    json_t *prompt = json_object_get(req, "prompt");
    if (!json_is_object(req)) {
        BAD(NULL, "the body must be a JSON object");
    } else if (!prompt || json_is_null(prompt)) {
        BAD("prompt", "prompt is required");
    } else if (read_fields(req, m, default_seed, out, e) == 0 && read_prompt(prompt, out, e) == 0) {
        out->params.sample_lo = out->text ? TEXT_REPLY_LO : 0;
        out->params.sample_hi = out->text ? TEXT_REPLY_HI : 0;
        out->params.prompt = out->prompt;
        out->params.n_prompt = out->n_prompt;
        rm_model_config mc = {0, 0, 0, m->vocab, m->max_context};
        char detail[160];
        rm_gen_err ge = rm_gen_check(&mc, &out->params, detail, sizeof detail);
        out->params.prompt = NULL;
        out->params.n_prompt = 0;
        if (ge == RM_GEN_OK)
            rc = 0;
        else
            BAD(ge == RM_GEN_EPARAM ? NULL : "prompt", "%s: %s", rm_gen_strerror(ge), detail);
    }
    if (rc)
        rm_api_completion_free(out);
    json_decref(req);
    return rc;
}

/* json's compact text, malloc'd, and its length; json is released. */
static char *dump(json_t *j, const char *before, const char *after, size_t *len)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    rm_sbuf b = {0};
    rm_sbuf_printf(&b, "%s%s%s", before, s ? s : "{}", after);
    free(s);
    *len = b.len;
    return b.p;
}

static json_t *ids_json(const uint32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static json_t *usage_json(const rm_api_usage *u)
{
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)u->prompt_tokens,
                     "completion_tokens", (json_int_t)u->completion_tokens, "total_tokens",
                     (json_int_t)u->prompt_tokens + u->completion_tokens, "prompt_tokens_details",
                     "cached_tokens", (json_int_t)u->cached_tokens);
}

/* {"id", "object", "created", "model", "choices": [choice]} */
static json_t *envelope(const rm_api_meta *m, json_t *choices)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:o, s:n}", "id", m->id, "object", "text_completion",
                     "created", (json_int_t)m->created, "model", m->model, "choices", choices,
                     "system_fingerprint");
}

static json_t *choice(const char *text, size_t text_len, const uint32_t *ids, size_t n,
                      int with_ids, const char *finish)
{
    json_t *c = json_pack("{s:i, s:s#, s:n, s:o}", "index", 0, "text", text ? text : "", text_len,
                          "logprobs", "finish_reason", finish ? json_string(finish) : json_null());
    if (c && with_ids)
        json_object_set_new(c, "token_ids", ids_json(ids, n));
    return c;
}

char *rm_api_completion_json(const rm_api_meta *m, const char *text, size_t text_len,
                             const uint32_t *ids, size_t n, int with_ids, const char *finish,
                             const rm_api_usage *u, size_t *len)
{
    json_t *choices = json_array();
    json_array_append_new(choices, choice(text, text_len, ids, n, with_ids, finish));
    json_t *j = envelope(m, choices);
    json_object_set_new(j, "usage", usage_json(u));
    return dump(j, "", "", len);
}

char *rm_api_stream_event(const rm_api_meta *m, const char *text, size_t text_len,
                          const uint32_t *ids, size_t n, int with_ids, const char *finish,
                          size_t *len)
{
    json_t *choices = json_array();
    json_array_append_new(choices, choice(text, text_len, ids, n, with_ids, finish));
    return dump(envelope(m, choices), "data: ", "\n\n", len);
}

char *rm_api_stream_usage_event(const rm_api_meta *m, const rm_api_usage *u, size_t *len)
{
    json_t *j = envelope(m, json_array());
    json_object_set_new(j, "usage", usage_json(u));
    return dump(j, "data: ", "\n\n", len);
}

char *rm_api_error_json(const rm_api_error *e, size_t *len)
{
    json_t *j = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", e->message, "type",
                          e->type ? e->type : "invalid_request_error", "param",
                          e->param ? json_string(e->param) : json_null(), "code",
                          e->code ? json_string(e->code) : json_null());
    return dump(j, "", "\n", len);
}

char *rm_api_models_json(const rm_api_model *m, long long created, size_t *len)
{
    json_t *j =
        json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:s, s:I}]}", "object", "list", "data", "id",
                  m->name, "object", "model", "created", (json_int_t)created, "owned_by",
                  "radixmesh", "root", m->name, "max_model_len", (json_int_t)m->max_context);
    return dump(j, "", "\n", len);
}

const char *rm_api_finish_reason(rm_finish f)
{
    return f == RM_FINISH_CANCELLED ? "abort" : "length";
}

char *rm_api_metrics(const char *model, const rm_api_figures *f)
{
    rm_sbuf b = {0};
    rm_sbuf_append(&b, "", 0);
    char l[320] = "";
    rm_prom_label(l, sizeof l, "model_name", model);
    const rm_engine_stats *s = &f->engine;
    const rm_prom_row vllm[] = {
        {"vllm:num_requests_running", "gauge", "Requests the engine is running (0 or 1).",
         (double)s->running},
        {"vllm:num_requests_waiting", "gauge", "Requests waiting for the engine.",
         (double)f->waiting},
        {"vllm:prefix_cache_queries_total", "counter",
         "Prompt tokens looked up in the prefix cache (the cluster).",
         (double)s->prompt_tokens_total},
        {"vllm:prefix_cache_hits_total", "counter",
         "Prompt tokens whose KV came from the prefix cache (the cluster).",
         (double)s->cached_tokens_total},
        {"vllm:prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
         (double)s->prompt_tokens_total},
        {"vllm:generation_tokens_total", "counter", "Tokens generated.",
         (double)s->generated_tokens_total},
    };
    rm_prom_rows(&b, vllm, RM_ARRAY_LEN(vllm), l);
    const char *reasons[] = {"length", "abort"};
    double counts[] = {(double)(f->finished_total - f->cancelled_total),
                       (double)f->cancelled_total};
    rm_prom_split(&b, "vllm:request_success_total", "counter",
                  "Finished requests by finish reason.", l, "finished_reason", reasons, counts,
                  RM_ARRAY_LEN(counts));
    const rm_prom_row own[] = {
        {"radixmesh_worker_requests_total", "counter",
         "Completions finished (cancelled ones included).", (double)f->finished_total},
        {"radixmesh_worker_requests_cancelled_total", "counter",
         "Completions stopped because the client left or the worker shut down.",
         (double)f->cancelled_total},
        {"radixmesh_worker_requests_queue_full_total", "counter",
         "Completions refused with 503 because --max-waiting requests were waiting.",
         (double)f->refused_full_total},
        {"radixmesh_worker_requests_bad_total", "counter",
         "Completion requests refused with a 4xx (bad JSON, fields, prompt).",
         (double)f->refused_bad_total},
        {"radixmesh_worker_cache_errors_total", "counter",
         "Requests whose cache use failed (computed without the cluster's KV).",
         (double)s->cache_errors_total},
        {"radixmesh_worker_kv_read_bytes_total", "counter", "KV bytes read from the cluster.",
         (double)s->kv_bytes_read_total},
        {"radixmesh_worker_kv_written_bytes_total", "counter", "KV bytes written to the cluster.",
         (double)s->kv_bytes_written_total},
        {"radixmesh_worker_http_connections", "gauge", "Open HTTP connections.",
         (double)f->connections},
        {"radixmesh_worker_http_refused_connections_total", "counter",
         "HTTP connections refused at --max-connections.", (double)f->refused_connections},
        {"radixmesh_worker_http_timeouts_total", "counter",
         "HTTP connections closed by a timeout (request, idle or stalled reader).",
         (double)f->timeouts_total},
    };
    rm_prom_rows(&b, own, RM_ARRAY_LEN(own), l);
    return b.p;
}
