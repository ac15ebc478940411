/* Integration test: the reference worker's engine against real nodes.
 * Usage: test_worker PATH/TO/radixmesh-node PATH/TO/radixmesh-router
 *                    PATH/TO/radixmesh-worker
 *
 * Default model (4 layers, d_model 256, 8 heads, vocab 8192: 8,192 KV bytes
 * per token), node page 16:
 *   - a 1,536-token prompt on worker A (cold cluster), then on worker B
 *     (same cluster), and on worker C (no cache): identical tokens and
 *     first-token logits; B reports >= 1,520 cached tokens and read their
 *     KV; the node's counters agree. A's and B's TTFT are printed (the
 *     issue's figure), not asserted;
 *   - the same through a router (Route, then the chosen node);
 *   - the node SIGKILLed after B's first ReadKV part, and a node SIGSTOPped
 *     after Match: B still answers with identical tokens, 0 cached, and
 *     counts a cache error; bounded by the cache deadline;
 *   - bad input (token >= vocab, prompt > max context, empty, max_tokens 0)
 *     fails with its error before anything reaches the node;
 *   - tokens stream to on_token in order, and a stop from it cancels;
 *   - the CLI's bad flags exit 2, a bad prompt exits 1. */
#include <signal.h>

#include "cache_client.h"
#include "check.h"
#include "cluster_wait.h"
#include "daemon.h"
#include "engine.h"
#include "util.h"

static const char *node_bin, *router_bin, *worker_bin;
static rm_model model;

/* A node for the default model (8192 KV bytes per token) or another. */
static void start_node(test_daemon *d, const char *id, const char *kv_bytes)
{
    const char *argv[] = {node_bin, "--node-id",
                          id,       "--kv-bytes-per-token",
                          kv_bytes, "--page-tokens",
                          "16",     "--pool-tokens",
                          "65536",  "--shutdown-delay-ms",
                          "0",      "--log-level",
                          "warn",   NULL};
    REQUIRE(td_start(d, argv) == 0);
}

static rm_engine *engine(const char *cache, int router, int timeout_ms)
{
    rm_engine_config c = {cache, router, timeout_ms, 128, 0, "test-model"};
    char err[200];
    rm_engine *e = rm_engine_new(&model, &c, err, sizeof err);
    REQUIRE(e);
    return e;
}

static uint32_t *prompt_of(uint32_t n, uint64_t seed)
{
    uint32_t *p = rm_xmalloc(n * sizeof *p);
    for (uint32_t i = 0; i < n; i++)
        p[i] = (uint32_t)(rm_mix64(seed + i) % model.cfg.vocab);
    return p;
}

static rm_gen_params params(const uint32_t *p, size_t n)
{
    /* Seeded sampling, so the tokens depend on the logits' exact values. */
    return (rm_gen_params){p, n, 8, 1.0f, 0.95f, 1234, NULL, NULL, NULL};
}

static void gen(rm_engine *e, const rm_gen_params *p, rm_gen_result *r)
{
    REQUIRE(rm_engine_generate(e, p, r) == RM_GEN_OK);
}

static int same_tokens(const rm_gen_result *a, const rm_gen_result *b)
{
    return a->n_tokens == b->n_tokens && a->first_logits_hash == b->first_logits_hash &&
           !memcmp(a->tokens, b->tokens, a->n_tokens * sizeof *a->tokens);
}

static void node_stats(const char *addr, radixmesh_v1_NodeStats *st)
{
    rm_cache_client cc;
    char msg[200];
    REQUIRE(rm_cc_init(&cc, addr, 5000) == 0);
    REQUIRE(rm_cc_stats(&cc, st, msg, sizeof msg) == GRPC_STATUS_OK);
    rm_cc_close(&cc);
}

/* SIGSTOPs the node once Match has answered. */
static void stop_after_match(void *arg, rm_cache_event ev, uint32_t tokens)
{
    (void)tokens;
    if (ev == RM_CACHE_MATCHED)
        kill(*(pid_t *)arg, SIGSTOP);
}

/* A node, workers A and B on it, C without cache, and a prompt. */
typedef struct trio {
    test_daemon node;
    rm_engine *a, *b, *c;
    uint32_t *p;
} trio;

static void trio_start(trio *t, const char *node_id, uint32_t n, uint64_t seed)
{
    start_node(&t->node, node_id, "8192");
    t->a = engine(t->node.addr, 0, 5000);
    t->b = engine(t->node.addr, 0, 5000);
    t->c = engine("none", 0, 5000);
    t->p = prompt_of(n, seed);
}

static void trio_free(trio *t)
{
    rm_engine_free(t->a);
    rm_engine_free(t->b);
    rm_engine_free(t->c);
    free(t->p);
}

static void test_prompt_moves_from_a_to_b_through_the_cluster(void)
{
    const uint32_t n = 1536;
    trio t;
    trio_start(&t, "n1", n, 1);
    test_daemon node = t.node;
    rm_engine *a = t.a, *b = t.b, *c = t.c;
    uint32_t *p = t.p;
    rm_gen_params gp = params(p, n);
    rm_gen_result ra, rb, rc;
    gen(a, &gp, &ra);
    gen(b, &gp, &rb);
    gen(c, &gp, &rc);
    printf("1,536-token prompt: TTFT A (cold cluster) %.1f ms, B (cluster KV) %.1f ms "
           "(ReadKV %.1f ms, %.1f MiB), no cache %.1f ms; B/A = %.3f\n",
           ra.ttft_ns / 1e6, rb.ttft_ns / 1e6, rb.readkv_ns / 1e6, rb.kv_bytes_read / 1048576.0,
           rc.ttft_ns / 1e6, (double)rb.ttft_ns / (double)ra.ttft_ns);
    CHECK(!ra.cache_error && !rb.cache_error);
    CHECK(same_tokens(&ra, &rc));
    CHECK(same_tokens(&rb, &rc));
    CHECK_EQ(ra.cached_tokens, 0);
    CHECK(rb.cached_tokens >= 1520);
    CHECK_EQ(rb.cached_tokens, n - 1); /* the last position is always computed */
    CHECK_EQ(rb.kv_bytes_read, (uint64_t)n * 8192);
    /* A wrote the full pages of prompt + generated-but-last (1,543 -> 1,536). */
    CHECK_EQ(ra.kv_bytes_written, (uint64_t)n * 8192);
    CHECK_EQ(rb.kv_bytes_written, 0);
    radixmesh_v1_NodeStats st;
    node_stats(node.addr, &st);
    CHECK_EQ(st.match_requests_total, 2);
    CHECK_EQ(st.query_tokens_total, 2 * n);
    CHECK_EQ(st.hit_tokens_total, n);
    CHECK_EQ(st.inserted_tokens_total, n);
    CHECK_EQ(st.active_leases, 0);
    pb_release(radixmesh_v1_NodeStats_fields, &st);
    rm_engine_stats es;
    rm_engine_stats_get(b, &es);
    CHECK_EQ(es.requests_total, 1);
    CHECK_EQ(es.prompt_tokens_total, n);
    CHECK_EQ(es.cached_tokens_total, rb.cached_tokens);
    CHECK_EQ(es.kv_bytes_read_total, rb.kv_bytes_read);
    CHECK_EQ(es.cache_errors_total, 0);
    CHECK_EQ(es.running, 0);

    /* A follow-up turn (the prompt, the answer, more text) reuses what A
     * wrote, generated tokens included, on a worker with the cache. */
    uint32_t *turn = rm_xmalloc((n + 64) * sizeof *turn);
    memcpy(turn, p, n * sizeof *p);
    memcpy(turn + n, ra.tokens, 7 * sizeof *turn);
    for (uint32_t i = n + 7; i < n + 64; i++)
        turn[i] = i % 300;
    rm_gen_params tp = params(turn, n + 64);
    rm_gen_result rt, rt0;
    gen(a, &tp, &rt);
    gen(c, &tp, &rt0);
    CHECK_EQ(rt.cached_tokens, n);
    CHECK(same_tokens(&rt, &rt0));
    rm_gen_result_free(&rt);
    rm_gen_result_free(&rt0);
    free(turn);

    /* A node stopped (SIGSTOP) after Match: ReadKV waits out the deadline,
     * B recomputes and answers the same. While the node is backed off the
     * next request does not wait again; once it is back, the cache is used
     * again (polled with a deadline: the backoff is 1 s). */
    rm_engine *slow = engine(node.addr, 0, 1000);
    rm_gen_result rs;
    rm_gen_params sp = params(p, n);
    sp.on_cache = stop_after_match;
    sp.arg = &node.pid;
    uint64_t t0 = rm_now_ms();
    gen(slow, &sp, &rs);
    uint64_t took = rm_now_ms() - t0;
    printf("node stopped after Match: answered in %llu ms (%s)\n", (unsigned long long)took,
           rs.cache_msg);
    CHECK(rs.cache_error);
    CHECK_EQ(rs.cache_status, GRPC_STATUS_DEADLINE_EXCEEDED);
    CHECK_EQ(rs.cached_tokens, 0);
    CHECK(same_tokens(&rs, &rc));
    rm_gen_result_free(&rs);
    sp.on_cache = NULL;
    gen(slow, &sp, &rs);
    printf("next request while backing off: %s\n", rs.cache_msg);
    CHECK(rs.cache_error && strstr(rs.cache_msg, "skipped") != NULL);
    CHECK(same_tokens(&rs, &rc));
    rm_gen_result_free(&rs);
    kill(node.pid, SIGCONT);
    int recovered = 0, tries = 0;
    for (uint64_t deadline = rm_now_ms() + 30000; !recovered && rm_now_ms() < deadline; tries++) {
        gen(slow, &sp, &rs);
        recovered = !rs.cache_error && rs.cached_tokens == n - 1 && same_tokens(&rs, &rc);
        rm_gen_result_free(&rs);
    }
    printf("cache used again after %d requests\n", tries);
    CHECK(recovered);
    rm_engine_stats_get(slow, &es);
    CHECK_EQ(es.cache_errors_total, (uint64_t)tries + 1);
    rm_engine_free(slow);

    rm_gen_result_free(&ra);
    rm_gen_result_free(&rb);
    rm_gen_result_free(&rc);
    trio_free(&t);
    CHECK_EQ(td_stop(&node, SIGTERM, 10000), 0);
}

/* SIGKILLs the node after the first ReadKV part arrived. */
static void kill_mid_read(void *arg, rm_cache_event ev, uint32_t tokens)
{
    test_daemon *d = arg;
    if (ev == RM_CACHE_READ_PART && d->pid > 0) {
        printf("killing the node after %u of the prefix's tokens arrived\n", tokens);
        td_stop(d, SIGKILL, 5000);
    }
}

static void test_node_killed_mid_readkv(void)
{
    const uint32_t n = 600;
    trio t;
    trio_start(&t, "n2", n, 2);
    rm_engine *b = t.b;
    rm_gen_params gp = params(t.p, n);
    rm_gen_result ra, rb, rc;
    gen(t.a, &gp, &ra);
    gen(t.c, &gp, &rc);
    gp.on_cache = kill_mid_read;
    gp.arg = &t.node;
    uint64_t t0 = rm_now_ms();
    gen(b, &gp, &rb);
    printf("node killed mid-ReadKV: answered in %llu ms, %llu KV bytes had arrived (%s)\n",
           (unsigned long long)(rm_now_ms() - t0), (unsigned long long)rb.kv_bytes_read,
           rb.cache_msg);
    CHECK_EQ(ra.kv_bytes_written, (uint64_t)n / 16 * 16 * 8192);
    CHECK(rb.cache_error);
    CHECK(rb.kv_bytes_read >= 128 * 8192); /* it was mid-read */
    CHECK(rb.kv_bytes_read < (uint64_t)n / 16 * 16 * 8192);
    CHECK_EQ(rb.cached_tokens, 0);
    CHECK(same_tokens(&rb, &rc));
    rm_engine_stats es;
    rm_engine_stats_get(b, &es);
    CHECK_EQ(es.cache_errors_total, 1);
    CHECK_EQ(es.cached_tokens_total, 0);
    /* The next request on B, the node still gone: answered, counted. */
    gp.on_cache = NULL;
    rm_gen_result r2;
    gen(b, &gp, &r2);
    CHECK(r2.cache_error);
    CHECK(strstr(r2.cache_msg, "skipped") != NULL); /* backing off: no new attempt */
    CHECK(same_tokens(&r2, &rc));
    rm_engine_stats_get(b, &es);
    CHECK_EQ(es.cache_errors_total, 2);
    CHECK_EQ(es.requests_total, 2);
    rm_gen_result_free(&r2);
    rm_gen_result_free(&ra);
    rm_gen_result_free(&rb);
    rm_gen_result_free(&rc);
    trio_free(&t);
}

static void test_through_a_router(void)
{
    test_daemon node, router;
    start_node(&node, "r1", "8192");
    char nodes[128];
    snprintf(nodes, sizeof nodes, "r1=%s", node.addr);
    const char *argv[] = {
        router_bin,    "--nodes", nodes, "--health-interval-ms", "200", "--shutdown-delay-ms", "0",
        "--log-level", "warn",    NULL};
    rm_cache_client rc;
    REQUIRE(cw_start_router(&router, argv, &rc, 5000, 1, 20000));
    rm_cc_close(&rc);
    rm_engine *a = engine(router.addr, 1, 5000), *b = engine(router.addr, 1, 5000);
    const uint32_t n = 300;
    uint32_t *p = prompt_of(n, 3);
    rm_gen_params gp = params(p, n);
    rm_gen_result ra, rb;
    gen(a, &gp, &ra);
    gen(b, &gp, &rb);
    CHECK(!ra.cache_error && !rb.cache_error);
    CHECK_EQ(rb.cached_tokens, n / 16 * 16);
    CHECK(!strcmp(rb.node_id, "r1"));
    CHECK(same_tokens(&ra, &rb));
    rm_gen_result_free(&ra);
    rm_gen_result_free(&rb);
    rm_engine_free(a);
    rm_engine_free(b);
    free(p);
    CHECK_EQ(td_stop(&router, SIGTERM, 10000), 0);
    CHECK_EQ(td_stop(&node, SIGTERM, 10000), 0);
}

/* A node with another KV size is not used (and says why). */
static void test_node_with_other_kv_size_is_refused(void)
{
    test_daemon node;
    start_node(&node, "kv4096", "4096");
    rm_engine *e = engine(node.addr, 0, 5000);
    uint32_t *p = prompt_of(40, 4);
    rm_gen_params gp = params(p, 40);
    rm_gen_result r;
    gen(e, &gp, &r);
    CHECK(r.cache_error);
    CHECK(strstr(r.cache_msg, "--kv-bytes-per-token 8192") != NULL);
    CHECK_EQ(r.n_tokens, 8);
    rm_gen_result_free(&r);
    rm_engine_free(e);
    free(p);
    CHECK_EQ(td_stop(&node, SIGTERM, 10000), 0);
}

static void test_bad_input_is_refused_before_the_cluster(void)
{
    test_daemon node;
    start_node(&node, "n3", "8192");
    rm_engine *e = engine(node.addr, 0, 5000);
    const uint32_t n = model.cfg.max_context + 1;
    uint32_t *p = prompt_of(n, 5);
    rm_gen_result r;
    rm_gen_params gp = params(p, n);
    CHECK_EQ(rm_engine_generate(e, &gp, &r), RM_GEN_ECONTEXT);
    CHECK(strstr(r.detail, "4097") != NULL);
    p[3] = model.cfg.vocab;
    gp.n_prompt = 10;
    CHECK_EQ(rm_engine_generate(e, &gp, &r), RM_GEN_ETOKEN);
    CHECK(strstr(r.detail, "8192") != NULL);
    p[3] = 1;
    gp.n_prompt = 0;
    CHECK_EQ(rm_engine_generate(e, &gp, &r), RM_GEN_EEMPTY);
    gp.n_prompt = 10;
    gp.max_tokens = 0;
    CHECK_EQ(rm_engine_generate(e, &gp, &r), RM_GEN_EPARAM);
    gp.max_tokens = 4;
    gp.top_p = 2;
    CHECK_EQ(rm_engine_generate(e, &gp, &r), RM_GEN_EPARAM);
    for (int k = RM_GEN_OK; k <= RM_GEN_EPARAM; k++)
        CHECK(strlen(rm_gen_strerror((rm_gen_err)k)) > 0);
    radixmesh_v1_NodeStats st;
    node_stats(node.addr, &st);
    CHECK_EQ(st.match_requests_total, 0);
    pb_release(radixmesh_v1_NodeStats_fields, &st);
    rm_engine_stats es;
    rm_engine_stats_get(e, &es);
    CHECK_EQ(es.requests_total, 0);
    /* A prompt of exactly max_context gives one token, then stops. */
    gp = params(p, model.cfg.max_context);
    gp.max_tokens = 5;
    rm_engine *c = engine("none", 0, 5000);
    CHECK_EQ(rm_engine_generate(c, &gp, &r), RM_GEN_OK);
    CHECK_EQ(r.n_tokens, 1);
    CHECK_EQ(r.finish, RM_FINISH_CONTEXT);
    rm_gen_result_free(&r);
    rm_engine_free(c);
    rm_engine_free(e);
    free(p);
    CHECK_EQ(td_stop(&node, SIGTERM, 10000), 0);
}

typedef struct sink {
    uint32_t got[16];
    size_t n, stop_after;
} sink;

static int collect(void *arg, uint32_t token)
{
    sink *k = arg;
    k->got[k->n++] = token;
    return k->n == k->stop_after;
}

/* Tokens reach on_token as they are chosen, in order; a nonzero return
 * stops the request (a client that left), which still writes its KV. */
static void test_tokens_stream_and_cancel(void)
{
    test_daemon node;
    start_node(&node, "n4", "8192");
    rm_engine *e = engine(node.addr, 0, 5000), *c = engine("none", 0, 5000);
    uint32_t *p = prompt_of(100, 6);
    rm_gen_params gp = params(p, 100);
    gp.max_tokens = 10;
    sink all = {{0}, 0, 0}, some = {{0}, 0, 3};
    rm_gen_result full, cut;
    gp.on_token = collect;
    gp.arg = &all;
    gen(c, &gp, &full);
    CHECK_EQ(full.finish, RM_FINISH_LENGTH);
    CHECK_EQ(all.n, 10);
    CHECK(!memcmp(all.got, full.tokens, 10 * sizeof *all.got));
    gp.arg = &some;
    gen(e, &gp, &cut);
    CHECK_EQ(cut.finish, RM_FINISH_CANCELLED);
    CHECK_EQ(cut.n_tokens, 3);
    CHECK(!memcmp(cut.tokens, full.tokens, 3 * sizeof *cut.tokens));
    CHECK(!cut.cache_error);
    CHECK_EQ(cut.kv_bytes_written, 96 * 8192); /* 100 + 2 positions: 6 full pages */
    rm_gen_result_free(&full);
    rm_gen_result_free(&cut);
    rm_engine_free(e);
    rm_engine_free(c);
    free(p);
    CHECK_EQ(td_stop(&node, SIGTERM, 10000), 0);
}

static void test_cli_flags(void)
{
    const char *bad[][4] = {
        {"--layers", "0", "--prompt", "x"},      {"--heads", "7", "--prompt", "x"},
        {"--cache", "nowhere", "--prompt", "x"}, {"--temperature", "-1", "--prompt", "x"},
        {"--top-p", "0", "--prompt", "x"},       {"--prompt-tokens", "1,x", NULL, NULL},
        {"--max-tokens", "1", NULL, NULL}};
    for (size_t i = 0; i < RM_ARRAY_LEN(bad); i++) {
        const char *args[5] = {bad[i][0], bad[i][1], bad[i][2], bad[i][3], NULL};
        CHECK(td_exits_2(worker_bin, args));
    }
    const char *tiny[] = {worker_bin, "--layers", "1",   "--d-model",       "32",    "--heads",
                          "2",        "--vocab",  "300", "--prompt-tokens", "1,300", NULL};
    int st = td_exit_status(tiny);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    const char *good[] = {worker_bin, "--layers",    "1",       "--d-model", "32",
                          "--heads",  "2",           "--vocab", "300",       "--prompt",
                          "hi",       "--log-level", "error",   NULL};
    st = td_exit_status(good);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s NODE_BIN ROUTER_BIN WORKER_BIN\n", argv[0]);
        return 2;
    }
    node_bin = argv[1];
    router_bin = argv[2];
    worker_bin = argv[3];
    signal(SIGPIPE, SIG_IGN);
    grpc_init();
    rm_model_config cfg = RM_MODEL_CONFIG_DEFAULT;
    char err[200];
    REQUIRE(rm_model_init_seeded(&model, &cfg, 1, err, sizeof err) == RM_MODEL_OK);
    RUN(test_prompt_moves_from_a_to_b_through_the_cluster);
    RUN(test_node_killed_mid_readkv);
    RUN(test_through_a_router);
    RUN(test_node_with_other_kv_size_is_refused);
    RUN(test_bad_input_is_refused_before_the_cluster);
    RUN(test_tokens_stream_and_cancel);
    RUN(test_cli_flags);
    rm_model_free(&model);
    grpc_shutdown();
    return rm_t_report();
}
