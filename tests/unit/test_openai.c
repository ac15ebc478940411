/* Unit tests for router/openai.c and router/worker_metrics.c: what routes an
 * OpenAI-style request, the errors bad ones get, and the workers' own
 * prefix-cache figures read from their /metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "openai.h"
#include "textkey.h"
#include "worker_metrics.h"

static int parse(const char *body, rm_openai_kind kind, char **ns, uint32_t **t, size_t *n,
                 char *err)
{
    return rm_openai_prompt(body, strlen(body), kind, 1000, ns, t, n, NULL, err, 256);
}

static void test_token_ids_and_batches(void)
{
    char *ns, err[256];
    uint32_t *t;
    size_t n;
    CHECK_EQ(parse("{\"model\":\"llama\",\"prompt\":[1,2,4294967295]}", RM_OPENAI_COMPLETIONS, &ns,
                   &t, &n, err),
             0);
    CHECK_EQ(n, 3);
    CHECK(!strcmp(ns, "llama"));
    CHECK(t[0] == 1 && t[1] == 2 && t[2] == 4294967295u);
    free(ns);
    free(t);
    /* A batch routes by its first prompt. */
    CHECK_EQ(
        parse("{\"model\":\"m\",\"prompt\":[[7,8],[9]]}", RM_OPENAI_COMPLETIONS, &ns, &t, &n, err),
        0);
    CHECK(n == 2 && t[0] == 7 && t[1] == 8);
    free(ns);
    free(t);
}

static void test_text_prompt_and_chat(void)
{
    char *ns, err[256];
    uint32_t *t, *u;
    size_t n, m;
    CHECK_EQ(
        parse("{\"model\":\"m\",\"prompt\":\"abcdefgh\"}", RM_OPENAI_COMPLETIONS, &ns, &t, &n, err),
        0);
    CHECK(!strcmp(ns, "m#text"));
    CHECK_EQ(n, 2);
    CHECK_EQ(t[0], rm_textkey_chunk_id((const unsigned char *)"abcd", 4));
    free(ns);
    free(t);
    /* A later turn of a chat starts with the earlier turn's tokens. */
    const char *turn1 = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be "
                        "brief, be kind.\"},{\"role\":\"user\",\"content\":\"hi\"}]}";
    const char *turn2 =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief, be "
        "kind.\"},{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":["
        "{\"type\":\"text\",\"text\":\"hello\"}]},{\"role\":\"user\",\"content\":null}]}";
    CHECK_EQ(parse(turn1, RM_OPENAI_CHAT, &ns, &t, &n, err), 0);
    free(ns);
    CHECK_EQ(parse(turn2, RM_OPENAI_CHAT, &ns, &u, &m, err), 0);
    free(ns);
    /* "system\x1fBe brief, be kind.\x1euser\x1fhi\x1e" is 35 bytes: 8 full
     * chunks are shared, the 9th (short in turn 1) is not. */
    CHECK_EQ(n, 9);
    CHECK(m > n);
    CHECK(!memcmp(t, u, 8 * sizeof *t));
    free(t);
    free(u);
}

static void test_errors(void)
{
    const struct {
        const char *body;
        rm_openai_kind kind;
        const char *says;
    } cases[] = {
        {"{not json", RM_OPENAI_COMPLETIONS, "not valid JSON"},
        {"[1,2]", RM_OPENAI_COMPLETIONS, "JSON object"},
        {"{\"model\":\"m\"}", RM_OPENAI_COMPLETIONS, "'prompt' is required"},
        {"{\"model\":\"m\",\"prompt\":[1,-1]}", RM_OPENAI_COMPLETIONS, "prompt[1]"},
        {"{\"model\":\"m\",\"prompt\":[1,2.5]}", RM_OPENAI_COMPLETIONS, "prompt[1]"},
        {"{\"model\":\"m\",\"prompt\":{}}", RM_OPENAI_COMPLETIONS, "'prompt' must be"},
        {"{\"model\":7,\"prompt\":\"x\"}", RM_OPENAI_COMPLETIONS, "'model' must be a string"},
        {"{\"model\":\"m\"}", RM_OPENAI_CHAT, "'messages' is required"},
        {"{\"messages\":{}}", RM_OPENAI_CHAT, "must be an array"},
        {"{\"messages\":[{\"content\":\"x\"}]}", RM_OPENAI_CHAT, "messages[0]"},
        {"{\"messages\":[{\"role\":\"u\",\"content\":3}]}", RM_OPENAI_CHAT, "messages[0].content"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *ns = (char *)1, err[256] = "";
        uint32_t *t = (uint32_t *)1;
        size_t n = 1;
        CHECK_EQ(parse(cases[i].body, cases[i].kind, &ns, &t, &n, err), -1);
        CHECK(ns == NULL && t == NULL && n == 0);
        if (!strstr(err, cases[i].says))
            fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, err, cases[i].says);
        CHECK(strstr(err, cases[i].says) != NULL);
    }
    char *doc = rm_openai_error("bad \"thing\"", "invalid_request_error", NULL);
    CHECK(!strcmp(doc, "{\"error\":{\"message\":\"bad \\\"thing\\\"\",\"type\":\"invalid_request_"
                       "error\",\"param\":null,\"code\":null}}"));
    free(doc);
}

static int reply_of(const char *body, rm_openai_kind kind, char **text, size_t *len)
{
    return rm_openai_reply_text(body, strlen(body), kind, text, len);
}

static void test_reply_text(void)
{
    char *text;
    size_t len;
    CHECK_EQ(reply_of("{\"choices\":[{\"index\":0,\"text\":\" world\"}]}", RM_OPENAI_COMPLETIONS,
                      &text, &len),
             0);
    CHECK(len == 6 && !strcmp(text, " world"));
    free(text);
    CHECK_EQ(
        reply_of("{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                 "\"content\":\"Hi \\u00e9\"}},{\"index\":1,\"message\":{\"content\":\"x\"}}]}",
                 RM_OPENAI_CHAT, &text, &len),
        0);
    CHECK(len == 5 && !strcmp(text, "Hi \xc3\xa9")); /* choice 0 only, UTF-8 */
    free(text);
    /* A stream: CRLF or LF lines, comments and event names ignored, the
     * role-only first chunk and other choices skipped, [DONE] ends it. */
    const char *sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n"
                      ": keep-alive\r\n\r\n"
                      "event: message\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":"
                      "\"Hel\"}}]}\r\n\r\n"
                      "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"XX\"}}]}\n\n"
                      "data:{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n"
                      "data: [DONE]\n\n";
    CHECK_EQ(reply_of(sse, RM_OPENAI_CHAT, &text, &len), 0);
    CHECK(len == 5 && !strcmp(text, "Hello"));
    free(text);
    CHECK_EQ(reply_of("data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"text\":"
                      "\"b\"}]}\n\n",
                      RM_OPENAI_COMPLETIONS, &text, &len),
             0);
    CHECK(!strcmp(text, "ab"));
    free(text);
    /* No generated text: an error document, a tool call, a chunk that is
     * not JSON, a body that is neither. */
    CHECK_EQ(reply_of("{\"error\":{\"message\":\"x\"}}", RM_OPENAI_CHAT, &text, &len), -1);
    CHECK_EQ(reply_of("{\"choices\":[{\"index\":0,\"message\":{\"content\":null,"
                      "\"tool_calls\":[]}}]}",
                      RM_OPENAI_CHAT, &text, &len),
             -1);
    CHECK_EQ(reply_of("data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {oops\n\n",
                      RM_OPENAI_COMPLETIONS, &text, &len),
             -1);
    CHECK_EQ(reply_of("not json", RM_OPENAI_COMPLETIONS, &text, &len), -1);
}

/* Fed in pieces of every size, a stream or a document reads the same as
 * whole; the byte bound gives up rather than grow. */
static void test_reply_in_pieces(void)
{
    const char *sse = ": hello\n\nevent: message\r\ndata: {\"choices\":[{\"index\":0,\"delta\":"
                      "{\"content\":\"Hel\"}}]}\r\n\r\ndata: {\"choices\":[{\"index\":0,"
                      "\"delta\":{\"content\":\"lo\"}}]}\n\ndata: [DONE]";
    const char *doc = " \n{\"choices\":[{\"index\":0,\"message\":{\"content\":\"Hello\"}}]}";
    const char *bodies[2] = {sse, doc};
    for (int b = 0; b < 2; b++) {
        size_t len = strlen(bodies[b]);
        for (size_t piece = 1; piece <= len; piece++) {
            rm_openai_reply r;
            rm_openai_reply_init(&r, RM_OPENAI_CHAT, 1 << 20);
            for (size_t at = 0; at < len; at += piece)
                rm_openai_reply_feed(&r, bodies[b] + at, len - at < piece ? len - at : piece);
            char *text;
            size_t n;
            int rc = rm_openai_reply_finish(&r, &text, &n);
            rm_openai_reply_free(&r);
            CHECK_EQ(rc, 0);
            if (rc == 0) {
                CHECK(n == 5 && !strcmp(text, "Hello"));
                free(text);
            }
        }
    }
    /* Bounds: generated text, one stream line, one document. */
    rm_openai_reply r;
    char *text;
    size_t n;
    rm_openai_reply_init(&r, RM_OPENAI_CHAT, 64);
    const char *line = "data: {\"choices\":[{\"delta\":{\"content\":\"abcdef\"}}]}\n\n";
    for (int i = 0; i < 20; i++)
        rm_openai_reply_feed(&r, line, strlen(line));
    CHECK(r.bad && r.text.len <= 64 + 6); /* it stopped keeping text */
    CHECK_EQ(rm_openai_reply_finish(&r, &text, &n), -1);
    rm_openai_reply_free(&r);
    rm_openai_reply_init(&r, RM_OPENAI_CHAT, 64);
    rm_openai_reply_feed(&r, "data: ", 6);
    for (int i = 0; i < 20; i++)
        rm_openai_reply_feed(&r, "xxxxxxxxxx", 10);
    CHECK(r.bad && r.buf.len <= 64); /* a line without end is not kept either */
    CHECK_EQ(rm_openai_reply_finish(&r, &text, &n), -1);
    rm_openai_reply_free(&r);
    rm_openai_reply_init(&r, RM_OPENAI_COMPLETIONS, 16);
    rm_openai_reply_feed(&r, doc + 2, strlen(doc) - 2);
    CHECK_EQ(rm_openai_reply_finish(&r, &text, &n), -1);
    rm_openai_reply_free(&r);
}

/* The key property: prompt + reply is, but for its last (possibly short)
 * pseudo-token, a prefix of the next turn's prompt, and it is what
 * rendering prompt and reply together from scratch gives. */
static void test_continue_prefixes_next_turn(void)
{
    char *ns, *ns2, err[256];
    uint32_t *t, *u, *x;
    size_t n, m, nx;
    rm_openai_end end;
    const char *turn1 = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be "
                        "brief.\"},{\"role\":\"user\",\"content\":\"hi there\"}]}";
    const char *turn2 = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be "
                        "brief.\"},{\"role\":\"user\",\"content\":\"hi there\"},{\"role\":"
                        "\"assistant\",\"content\":\"Hello! How can I help?\"},{\"role\":"
                        "\"user\",\"content\":\"tell me more\"}]}";
    const char *reply = "Hello! How can I help?";
    CHECK_EQ(rm_openai_prompt(turn1, strlen(turn1), RM_OPENAI_CHAT, 1000, &ns, &t, &n, &end, err,
                              sizeof err),
             0);
    CHECK(end.text && end.key.ntail > 0); /* the prompt ends inside a chunk */
    CHECK_EQ(rm_openai_continue(RM_OPENAI_CHAT, t, n, &end, reply, strlen(reply), 1000, &x, &nx),
             0);
    CHECK_EQ(parse(turn2, RM_OPENAI_CHAT, &ns2, &u, &m, err), 0);
    CHECK(nx > n + 5 && m > nx); /* the reply added tokens */
    CHECK_EQ(memcmp(x, u, (nx - 1) * sizeof *x), 0);
    CHECK_EQ(memcmp(t, x, (n - 1) * sizeof *t), 0);
    /* From scratch: the same stream fed at once. */
    rm_textkey k;
    rm_textkey_init(&k, 1000);
    const char *stream = "system\x1f"
                         "Be brief.\x1euser\x1fhi there\x1e"
                         "assistant\x1fHello! How can I help?\x1e";
    rm_textkey_feed(&k, stream, strlen(stream));
    rm_textkey_finish(&k);
    CHECK(k.n == nx && !memcmp(k.v, x, nx * sizeof *x));
    rm_textkey_free(&k);
    free(ns), free(ns2), free(t), free(u), free(x);
    /* Completions: the text continues the prompt; a cap holds. */
    const char *c1 = "{\"model\":\"m\",\"prompt\":\"Once upon a time\"}";
    const char *c2 = "{\"model\":\"m\",\"prompt\":\"Once upon a time, there was a fox.\"}";
    CHECK_EQ(rm_openai_prompt(c1, strlen(c1), RM_OPENAI_COMPLETIONS, 1000, &ns, &t, &n, &end, err,
                              sizeof err),
             0);
    CHECK(end.key.ntail == 0 && n == 4); /* 16 bytes: whole chunks */
    CHECK_EQ(
        rm_openai_continue(RM_OPENAI_COMPLETIONS, t, n, &end, ", there was", 11, 1000, &x, &nx), 0);
    CHECK_EQ(parse(c2, RM_OPENAI_COMPLETIONS, &ns2, &u, &m, err), 0);
    CHECK(nx == 7 && m > nx);
    CHECK_EQ(memcmp(x, u, (nx - 1) * sizeof *x), 0);
    free(x);
    CHECK_EQ(rm_openai_continue(RM_OPENAI_COMPLETIONS, t, n, &end, ", there was", 11, 5, &x, &nx),
             0);
    CHECK(nx == 5 && !memcmp(x, u, 5 * sizeof *x));
    free(ns), free(ns2), free(t), free(u), free(x);
    /* Token ids cannot be continued by text. */
    const char *ids = "{\"model\":\"m\",\"prompt\":[1,2,3]}";
    CHECK_EQ(rm_openai_prompt(ids, strlen(ids), RM_OPENAI_COMPLETIONS, 1000, &ns, &t, &n, &end, err,
                              sizeof err),
             0);
    CHECK(!end.text);
    CHECK_EQ(rm_openai_continue(RM_OPENAI_COMPLETIONS, t, n, &end, "x", 1, 1000, &x, &nx), -1);
    free(ns), free(t);
}

/* What the gateway asks a worker's /tokenize, and reads from its answer. */
static void test_tokenize_body_and_reply(void)
{
    const char *chat = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                       "\"stream\":true,\"max_tokens\":9,\"chat_template_kwargs\":{\"x\":1}}";
    char *b = rm_openai_tokenize_body(chat, strlen(chat), RM_OPENAI_CHAT);
    REQUIRE(b != NULL);
    CHECK(!strcmp(b, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                     "\"chat_template_kwargs\":{\"x\":1},\"add_generation_prompt\":true}"));
    free(b);
    const char *chat2 = "{\"model\":\"m\",\"messages\":[],\"add_generation_prompt\":false}";
    b = rm_openai_tokenize_body(chat2, strlen(chat2), RM_OPENAI_CHAT);
    CHECK(b && strstr(b, "\"add_generation_prompt\":false"));
    free(b);
    const char *cmpl = "{\"model\":\"m\",\"prompt\":[\"first\",\"second\"],\"temperature\":0}";
    b = rm_openai_tokenize_body(cmpl, strlen(cmpl), RM_OPENAI_COMPLETIONS);
    CHECK(b && !strcmp(b, "{\"model\":\"m\",\"prompt\":\"first\"}"));
    free(b);
    /* Token ids need no asking; malformed bodies get nothing. */
    const char *none[] = {"{\"prompt\":[1,2]}", "{\"prompt\":3}", "[]", "not json"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
        CHECK(rm_openai_tokenize_body(none[i], strlen(none[i]), RM_OPENAI_COMPLETIONS) == NULL);
    CHECK(rm_openai_tokenize_body("{\"messages\":{}}", 15, RM_OPENAI_CHAT) == NULL);

    uint32_t *t;
    size_t n;
    char err[256];
    const char *ok = "{\"tokens\":[1,67,4294967295],\"count\":3,\"max_model_len\":4096}";
    CHECK_EQ(rm_openai_tokens_reply(ok, strlen(ok), 10, &t, &n, err, sizeof err), 0);
    CHECK_EQ(n, 3);
    CHECK(t && t[0] == 1 && t[1] == 67 && t[2] == 4294967295u);
    free(t);
    CHECK_EQ(rm_openai_tokens_reply(ok, strlen(ok), 2, &t, &n, err, sizeof err), 0);
    CHECK_EQ(n, 2); /* at most max_tokens */
    free(t);
    CHECK_EQ(rm_openai_tokens_reply("{\"tokens\":[]}", 13, 10, &t, &n, err, sizeof err), 0);
    CHECK(n == 0 && t == NULL);
    const char *bad[] = {"{\"tokens\":[1,-2]}", "{\"count\":1}", "<html>", "{\"tokens\":[1.5]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK_EQ(rm_openai_tokens_reply(bad[i], strlen(bad[i]), 10, &t, &n, err, sizeof err), -1);
        CHECK(err[0] != '\0');
    }
}

static void test_worker_metrics(void)
{
    const char *vllm = "# HELP vllm:prefix_cache_queries_total x\n"
                       "# TYPE vllm:prefix_cache_queries_total counter\n"
                       "vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"a }b\"} 1000.0\n"
                       "vllm:prefix_cache_queries_total{engine=\"1\",model_name=\"a\"} 3000\n"
                       "vllm:prefix_cache_hits_total{engine=\"0\"} 250.0 1700000000000\n"
                       "vllm:prefix_cache_hits_total{engine=\"1\"} 750\n"
                       "vllm:prefix_cache_hits_created{engine=\"1\"} 17e8\n"
                       "vllm:num_requests_running 3\n";
    rm_worker_figures f;
    CHECK_EQ(rm_worker_metrics_parse(vllm, strlen(vllm), &f), 1);
    CHECK_EQ(f.has_counts, 1);
    CHECK_EQ(f.query_tokens, 4000);
    CHECK_EQ(f.hit_tokens, 1000);
    CHECK(f.hit_rate > 0.2499 && f.hit_rate < 0.2501);
    const char *sgl = "sglang:cache_hit_rate{model_name=\"q\"} 0.5\n"
                      "sglang:cache_hit_rate{model_name=\"r\"} 0.25\n";
    CHECK_EQ(rm_worker_metrics_parse(sgl, strlen(sgl), &f), 1);
    CHECK_EQ(f.has_counts, 0);
    CHECK(f.hit_rate > 0.3749 && f.hit_rate < 0.3751);
    /* Absurd counters (found by fuzz_gateway) saturate instead of
     * overflowing the conversion. */
    const char *huge = "vllm:prefix_cache_hits_total 2.9e62\n"
                       "vllm:prefix_cache_queries_total 1e308\n"
                       "vllm:prefix_cache_queries_total 1e308\n";
    CHECK_EQ(rm_worker_metrics_parse(huge, strlen(huge), &f), 1);
    CHECK(f.hit_tokens == UINT64_MAX && f.query_tokens == UINT64_MAX);
    const char *none = "up 1\nvllm:prefix_cache_hits_total{x=\"unterminated 5\n";
    CHECK_EQ(rm_worker_metrics_parse(none, strlen(none), &f), 0);
    CHECK(f.hit_rate < 0);
    CHECK(f.running < 0 && f.waiting < 0 && f.kv_usage < 0);
}

/* The reply's declared bound, which placement counts as expected work:
 * max_completion_tokens first, else max_tokens; none, zero or not an
 * integer is 0. */
static void test_declared_reply_length(void)
{
    static const struct {
        const char *body;
        uint32_t want;
    } cases[] = {
        {"{\"model\":\"m\",\"prompt\":\"hi\",\"max_tokens\":300}", 300},
        {"{\"model\":\"m\",\"prompt\":[1,2,3],\"max_tokens\":7}", 7},
        {"{\"prompt\":\"hi\",\"max_tokens\":300,\"max_completion_tokens\":40}", 40},
        {"{\"prompt\":\"hi\"}", 0},
        {"{\"prompt\":\"hi\",\"max_tokens\":0}", 0},
        {"{\"prompt\":\"hi\",\"max_tokens\":-5}", 0},
        {"{\"prompt\":\"hi\",\"max_tokens\":\"300\"}", 0},
        {"{\"prompt\":\"hi\",\"max_tokens\":99999999999}", UINT32_MAX},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *ns, err[256];
        uint32_t *t;
        size_t n;
        rm_openai_end end;
        CHECK_EQ(rm_openai_prompt(cases[i].body, strlen(cases[i].body), RM_OPENAI_COMPLETIONS, 1000,
                                  &ns, &t, &n, &end, err, sizeof err),
                 0);
        CHECK_EQ(end.max_reply, cases[i].want);
        free(ns), free(t);
    }
}

/* What a worker is busy with: vLLM's and SGLang's names, requests summed
 * over engines, the KV cache's fill averaged; absent figures are -1. */
static void test_worker_load_figures(void)
{
    const char *vllm = "vllm:num_requests_running{engine=\"0\"} 3\n"
                       "vllm:num_requests_running{engine=\"1\"} 2\n"
                       "vllm:num_requests_waiting{engine=\"0\"} 4\n"
                       "vllm:kv_cache_usage_perc{engine=\"0\"} 0.5\n"
                       "vllm:kv_cache_usage_perc{engine=\"1\"} 1.0\n";
    rm_worker_figures f;
    CHECK_EQ(rm_worker_metrics_parse(vllm, strlen(vllm), &f), 1);
    CHECK(f.running == 5 && f.waiting == 4);
    CHECK(f.kv_usage > 0.7499 && f.kv_usage < 0.7501);
    CHECK_EQ(f.has_counts, 0);
    CHECK(f.hit_rate < 0);
    const char *old = "vllm:gpu_cache_usage_perc 0.25\n";
    CHECK_EQ(rm_worker_metrics_parse(old, strlen(old), &f), 1);
    CHECK(f.kv_usage > 0.2499 && f.kv_usage < 0.2501);
    CHECK(f.running < 0 && f.waiting < 0);
    const char *sgl = "sglang:num_running_reqs{model_name=\"q\"} 7\n"
                      "sglang:num_queue_reqs{model_name=\"q\"} 0\n"
                      "sglang:token_usage{model_name=\"q\"} 0.96\n";
    CHECK_EQ(rm_worker_metrics_parse(sgl, strlen(sgl), &f), 1);
    CHECK(f.running == 7 && f.waiting == 0);
    CHECK(f.kv_usage > 0.9599 && f.kv_usage < 0.9601);
}

int main(void)
{
    RUN(test_token_ids_and_batches);
    RUN(test_text_prompt_and_chat);
    RUN(test_errors);
    RUN(test_reply_text);
    RUN(test_reply_in_pieces);
    RUN(test_continue_prefixes_next_turn);
    RUN(test_worker_metrics);
    RUN(test_tokenize_body_and_reply);
    RUN(test_worker_load_figures);
    RUN(test_declared_reply_length);
    return rm_t_report();
}
