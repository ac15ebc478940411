/* Unit tests for worker/api.c (and the admission rule of worker/infer.h):
 * completion requests are read with OpenAI's defaults, unknown fields
 * ignored, every bad field refused with a 400 naming it (a wrong model
 * 404); the answers have OpenAI's shapes (usage with total_tokens and
 * prompt_tokens_details.cached_tokens, SSE events, errors); /metrics
 * carries vLLM's names and the gateway's reader (router/worker_metrics.h)
 * finds the worker's hit and query tokens in it. */
#include <jansson.h>
#include <string.h>

#include "api.h"
#include "check.h"
#include "infer.h"
#include "worker_metrics.h"

static const rm_api_model model = {"ref", 512, 64};

static int parse(const char *body, rm_api_completion *c, rm_api_error *e)
{
    return rm_api_parse_completion(body, strlen(body), &model, 777, c, e);
}

/* The status of a body that must be refused, and its param. */
static void refused(const char *body, int status, const char *param)
{
    rm_api_completion c;
    rm_api_error e;
    int rc = parse(body, &c, &e);
    CHECK_EQ(rc, -1);
    if (rc == 0) {
        fprintf(stderr, "accepted: %s\n", body);
        rm_api_completion_free(&c);
        return;
    }
    CHECK_EQ(e.status, status);
    int same = param ? e.param && !strcmp(e.param, param) : !e.param;
    if (!same)
        fprintf(stderr, "%s: param %s, expected %s (%s)\n", body, e.param ? e.param : "null",
                param ? param : "null", e.message);
    CHECK(same);
    CHECK(e.message[0]);
}

static void test_text_prompt_with_openai_defaults(void)
{
    rm_api_completion c;
    rm_api_error e;
    REQUIRE(parse("{\"prompt\": \"Hi\\u0000!\", \"unknown\": [1, {}], \"user\": \"x\"}", &c, &e) ==
            0);
    CHECK_EQ(c.n_prompt, 4);
    CHECK(c.prompt[0] == 'H' && c.prompt[1] == 'i' && c.prompt[2] == 0 && c.prompt[3] == '!');
    CHECK(c.text);
    CHECK(c.params.sample_lo == 32 && c.params.sample_hi == 127);
    CHECK_EQ(c.params.max_tokens, 16);
    CHECK(c.params.temperature == 1 && c.params.top_p == 1);
    CHECK_EQ(c.params.seed, 777);
    CHECK(!c.stream && !c.include_usage && !c.return_token_ids);
    CHECK(c.params.prompt == NULL); /* the caller points it at its own copy */
    rm_api_completion_free(&c);
}

static void test_token_prompt_and_fields(void)
{
    rm_api_completion c;
    rm_api_error e;
    REQUIRE(parse("{\"model\": \"ref\", \"prompt\": [[5, 0, 511]], \"max_tokens\": 3, "
                  "\"temperature\": 0, \"top_p\": 0.5, \"seed\": -1, \"n\": 1, \"stream\": true, "
                  "\"stream_options\": {\"include_usage\": true}, \"return_token_ids\": true}",
                  &c, &e) == 0);
    CHECK_EQ(c.n_prompt, 3);
    CHECK(c.prompt[0] == 5 && c.prompt[1] == 0 && c.prompt[2] == 511);
    CHECK(!c.text);
    CHECK(c.params.sample_lo == 0 && c.params.sample_hi == 0);
    CHECK_EQ(c.params.max_tokens, 3);
    CHECK(c.params.temperature == 0 && c.params.top_p == 0.5f);
    CHECK(c.params.seed == UINT64_MAX);
    CHECK(c.stream && c.include_usage && c.return_token_ids);
    rm_api_completion_free(&c);
    /* include_usage counts only for a stream; nulls are the defaults. */
    REQUIRE(
        parse("{\"prompt\": [1], \"stream_options\": {\"include_usage\": true}, \"max_tokens\": "
              "null, \"seed\": null, \"model\": null}",
              &c, &e) == 0);
    CHECK(!c.include_usage);
    CHECK_EQ(c.params.max_tokens, 16);
    rm_api_completion_free(&c);
    /* A prompt of exactly max_context tokens is served. */
    char body[512] = "{\"prompt\": [";
    for (int i = 0; i < 64; i++)
        strcat(body, i ? ",1" : "1");
    strcat(body, "]}");
    REQUIRE(parse(body, &c, &e) == 0);
    CHECK_EQ(c.n_prompt, 64);
    rm_api_completion_free(&c);
}

static void test_bad_requests_name_the_field(void)
{
    refused("{\"prompt\": [1, 2", 400, NULL);
    refused("not json", 400, NULL);
    refused("[1, 2]", 400, NULL);
    refused("{}", 400, "prompt");
    refused("{\"prompt\": null}", 400, "prompt");
    refused("{\"prompt\": 5}", 400, "prompt");
    refused("{\"prompt\": \"\"}", 400, "prompt");
    refused("{\"prompt\": []}", 400, "prompt");
    refused("{\"prompt\": [1, 512]}", 400, "prompt");
    refused("{\"prompt\": [1, -1]}", 400, "prompt");
    refused("{\"prompt\": [1, 2.5]}", 400, "prompt");
    refused("{\"prompt\": [1, \"a\"]}", 400, "prompt");
    refused("{\"prompt\": [\"a\", \"b\"]}", 400, "prompt");
    refused("{\"prompt\": [[1], [2]]}", 400, "prompt");
    refused("{\"prompt\": \"0123456789012345678901234567890123456789012345678901234567890123"
            "4\"}",
            400, "prompt"); /* 65 tokens > max_context 64 */
    refused("{\"prompt\": \"a\", \"max_tokens\": 0}", 400, "max_tokens");
    refused("{\"prompt\": \"a\", \"max_tokens\": 1.5}", 400, "max_tokens");
    refused("{\"prompt\": \"a\", \"temperature\": -0.1}", 400, "temperature");
    refused("{\"prompt\": \"a\", \"temperature\": \"hot\"}", 400, "temperature");
    /* finite as a double, infinite as the float the sampler uses */
    refused("{\"prompt\": \"a\", \"temperature\": 1e308}", 400, "temperature");
    refused("{\"prompt\": \"a\", \"top_p\": 0}", 400, "top_p");
    refused("{\"prompt\": \"a\", \"top_p\": 1.01}", 400, "top_p");
    refused("{\"prompt\": \"a\", \"seed\": 1.5}", 400, "seed");
    refused("{\"prompt\": \"a\", \"stream\": 1}", 400, "stream");
    refused("{\"prompt\": \"a\", \"n\": 2}", 400, "n");
    refused("{\"prompt\": \"a\", \"model\": 3}", 400, "model");
    rm_api_completion c;
    rm_api_error e;
    REQUIRE(parse("{\"prompt\": \"a\", \"model\": \"gpt-4\"}", &c, &e) == -1);
    CHECK_EQ(e.status, 404);
    CHECK(e.code && !strcmp(e.code, "model_not_found"));
    CHECK(strstr(e.message, "gpt-4") != NULL);
}

static json_t *load(const char *s, size_t len)
{
    json_error_t err;
    json_t *j = json_loadb(s, len, JSON_ALLOW_NUL, &err);
    REQUIRE(j);
    return j;
}

static void test_answers_have_openai_shapes(void)
{
    rm_api_meta m = {"cmpl-1", "ref", 1700000000};
    rm_api_usage u = {10, 3, 8};
    const uint32_t ids[3] = {'o', 'k', 300};
    size_t len;
    char *s = rm_api_completion_json(&m, "ok<|300|>", 9, ids, 3, 1, "length", &u, &len);
    json_t *j = load(s, len);
    CHECK(!strcmp(json_string_value(json_object_get(j, "object")), "text_completion"));
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    CHECK(!strcmp(json_string_value(json_object_get(ch, "text")), "ok<|300|>"));
    CHECK(!strcmp(json_string_value(json_object_get(ch, "finish_reason")), "length"));
    CHECK_EQ(json_array_size(json_object_get(ch, "token_ids")), 3);
    json_t *us = json_object_get(j, "usage");
    CHECK_EQ(json_integer_value(json_object_get(us, "prompt_tokens")), 10);
    CHECK_EQ(json_integer_value(json_object_get(us, "completion_tokens")), 3);
    CHECK_EQ(json_integer_value(json_object_get(us, "total_tokens")), 13);
    CHECK_EQ(json_integer_value(
                 json_object_get(json_object_get(us, "prompt_tokens_details"), "cached_tokens")),
             8);
    json_decref(j);
    free(s);
    /* Without return_token_ids there are none. */
    s = rm_api_completion_json(&m, "ok", 2, ids, 2, 0, "length", &u, &len);
    j = load(s, len);
    CHECK(!json_object_get(json_array_get(json_object_get(j, "choices"), 0), "token_ids"));
    json_decref(j);
    free(s);

    s = rm_api_stream_event(&m, "k", 1, ids + 1, 1, 0, NULL, &len);
    CHECK(len > 8 && !strncmp(s, "data: ", 6) && !strcmp(s + len - 2, "\n\n"));
    j = load(s + 6, len - 8);
    ch = json_array_get(json_object_get(j, "choices"), 0);
    CHECK(json_is_null(json_object_get(ch, "finish_reason")));
    CHECK(!strcmp(json_string_value(json_object_get(ch, "text")), "k"));
    json_decref(j);
    free(s);
    s = rm_api_stream_usage_event(&m, &u, &len);
    j = load(s + 6, len - 8);
    CHECK_EQ(json_array_size(json_object_get(j, "choices")), 0);
    CHECK_EQ(json_integer_value(json_object_get(json_object_get(j, "usage"), "total_tokens")), 13);
    json_decref(j);
    free(s);

    rm_api_error e;
    rm_api_error_set(&e, 400, "invalid_request_error", "prompt", "bad %s", "thing");
    s = rm_api_error_json(&e, &len);
    j = load(s, len);
    json_t *err = json_object_get(j, "error");
    CHECK(!strcmp(json_string_value(json_object_get(err, "message")), "bad thing"));
    CHECK(!strcmp(json_string_value(json_object_get(err, "param")), "prompt"));
    CHECK(json_is_null(json_object_get(err, "code")));
    json_decref(j);
    free(s);

    s = rm_api_models_json(&model, 1, &len);
    j = load(s, len);
    json_t *d = json_array_get(json_object_get(j, "data"), 0);
    CHECK(!strcmp(json_string_value(json_object_get(d, "id")), "ref"));
    CHECK_EQ(json_integer_value(json_object_get(d, "max_model_len")), 64);
    json_decref(j);
    free(s);
    CHECK(!strcmp(rm_api_finish_reason(RM_FINISH_CONTEXT), "length"));
    CHECK(!strcmp(rm_api_finish_reason(RM_FINISH_CANCELLED), "abort"));
}

static void test_metrics_read_by_the_gateway_as_vllm(void)
{
    rm_api_figures f = {0};
    f.engine.prompt_tokens_total = 3072;
    f.engine.cached_tokens_total = 1535;
    f.engine.running = 1;
    f.waiting = 2;
    f.finished_total = 5;
    f.cancelled_total = 1;
    char *text = rm_api_metrics("ref \"x\"", &f);
    rm_worker_figures wf;
    CHECK(rm_worker_metrics_parse(text, strlen(text), &wf));
    CHECK(wf.has_counts);
    CHECK_EQ(wf.hit_tokens, 1535);
    CHECK_EQ(wf.query_tokens, 3072);
    CHECK(strstr(text, "vllm:num_requests_running{model_name=\"ref \\\"x\\\"\"} 1\n"));
    CHECK(strstr(text, "vllm:num_requests_waiting{model_name=\"ref \\\"x\\\"\"} 2\n"));
    CHECK(strstr(text, "finished_reason=\"length\"} 4\n"));
    CHECK(strstr(text, "finished_reason=\"abort\"} 1\n"));
    CHECK(strstr(text, "# TYPE vllm:prefix_cache_hits_total counter\n"));
    free(text);
}

static void test_queue_admits_up_to_max_waiting(void)
{
    CHECK(rm_infer_admits(0, 1));
    CHECK(!rm_infer_admits(1, 1));
    CHECK(rm_infer_admits(63, 64));
    CHECK(!rm_infer_admits(64, 64));
}

int main(void)
{
    RUN(test_text_prompt_with_openai_defaults);
    RUN(test_token_prompt_and_fields);
    RUN(test_bad_requests_name_the_field);
    RUN(test_answers_have_openai_shapes);
    RUN(test_metrics_read_by_the_gateway_as_vllm);
    RUN(test_queue_admits_up_to_max_waiting);
    return rm_t_report();
}
