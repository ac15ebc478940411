/* bench_router: routing quality on a live cluster, against baselines from
 * the same run.
 *
 *  A. The Mooncake trace (../shared/traces/mooncake_synthetic_trace.jsonl)
 *     replayed in order through a router in front of 8 nodes, each node's
 *     pool = 10% of the trace's unique blocks / 8. Baseline: an ideal single
 *     LRU cache with the same total capacity (the same cache code, in
 *     process). Also plain fixed-N hashing.
 *  B. A generated chat workload where 80% of conversations open with one
 *     1024-token system prompt (the case fixed-N keys get wrong).
 *  C. Router overhead: Match through the router (3 nodes) vs a bare gRPC-core
 *     server answering the same request with a MatchReply-sized message, same
 *     async client; Route latency p50/p99 vs that server's unary latency.
 *
 * Per mode: token hit rate (client-side; the cluster's own ClusterStats
 * totals are checked equal), ratio to ideal, max/mean requests per node,
 * max/mean work per node (the prompt tokens the serving node did not hold
 * plus the reply's tokens: what its GPU would compute), spills, errors (the
 * first one quoted). Usage:
 *   bench_router NODE_BIN ROUTER_BIN [--trace agentic|chat|builtin|FILE] [--seed N]
 *                [--requests N] [--block-tokens 64] [--quick] [--node-arg ARG]...
 *                [--default-only]
 * --node-arg passes ARG to every node of table A and B (e.g. --node-arg
 * --eviction --node-arg lfu-da); --default-only runs the default routing
 * mode only.
 * With --trace, only table A, on that trace (a workload name generates it:
 * workload.h; --requests 0 = its default, or all of a file). */
#include <grpc/grpc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../integration/cluster_wait.h"
#include "../integration/daemon.h"
#include "cache.h"
#include "cache_client.h"
#include "pbx.h"
#include "trace.h"
#include "util.h"
#include "workload.h"
#include "bench_util.h"
#include "lru_baseline.h"

#define NODES 8
#define PAGE  16

static const char *node_bin, *router_bin;
static const char *node_args[16]; /* --node-arg */
static int nnode_args, default_only;

/* 80% of conversations share one 1024-token system prompt; 5 turns each,
 * interleaved 16 conversations at a time like concurrent users. */
static void gen_chat(rm_trace *w, int convs)
{
    memset(w, 0, sizeof *w);
    enum { SYSP = 1024, TURN = 160, TURNS = 5, LIVE = 16 };
    w->req = rm_xcalloc((size_t)convs * TURNS, sizeof *w->req);
    for (int base = 0; base < convs; base += LIVE)
        for (int turn = 0; turn < TURNS; turn++)
            for (int c = base; c < base + LIVE && c < convs; c++) {
                rm_trace_req *r = &w->req[w->n++];
                int shared = (rm_mix64((uint64_t)c) % 10) < 8;
                r->n = SYSP + (size_t)(turn + 1) * TURN;
                r->tokens = rm_xmalloc(sizeof(uint32_t) * r->n);
                rm_trace_block_tokens(r->tokens, shared ? 1 : 1000000 + (uint64_t)c, SYSP);
                for (int t = 0; t <= turn; t++)
                    rm_trace_block_tokens(r->tokens + SYSP + (size_t)t * TURN,
                                          2000000 + (uint64_t)c * 100 + (uint64_t)t, TURN);
            }
}

typedef struct result {
    double hit, cluster_hit, max_mean, work_max_mean, secs;
    uint64_t spills, errors, failovers, retries;
    size_t aborted_at; /* 0: ran to the end */
    char first_error[160];
} result;

static void record_error(result *res, const char *what, const char *msg)
{
    if (!res->errors++)
        snprintf(res->first_error, sizeof res->first_error, "%s: %.140s", what, msg);
}

/* Extra router flags for every run (--router-flags, space-separated). */
static const char *extra_flags = "";

static result run_cluster(const rm_trace *w, uint64_t pool_tokens, const char *mode_flags)
{
    test_daemon nodes[NODES], router;
    char list[2048], pool[32];
    snprintf(pool, sizeof pool, "%llu", (unsigned long long)pool_tokens);
    const char *flags[32] = {"--pool-tokens",       pool, "--page-tokens", "16",
                             "--shutdown-delay-ms", "0",  "--log-level",   "warn"};
    for (int k = 0; k < nnode_args; k++) /* --node-arg: e.g. an eviction policy */
        flags[8 + k] = node_args[k];
    if (td_start_nodes(nodes, NODES, node_bin, "node-", flags, list, sizeof list))
        exit(1);
    const char *rargv[64] = {router_bin, "--nodes",          list,  "--health-interval-ms",
                             "200",      "--stats-interval", "250", "--shutdown-delay-ms",
                             "0",        "--log-level",      "warn"};
    size_t na = 11;
    char rflags[1024], *save = NULL;
    snprintf(rflags, sizeof rflags, "%s %s", mode_flags, extra_flags);
    for (char *t = strtok_r(rflags, " ", &save); t && na < 62; t = strtok_r(NULL, " ", &save))
        rargv[na++] = t;
    rargv[na] = NULL;
    rm_cache_client cc;
    if (!cw_start_router(&router, rargv, &cc, 10000, NODES, 15000))
        exit(1);
    result res = {0};
    uint64_t q = 0, h = 0, per[NODES] = {0}, work[NODES] = {0};
    char msg[256];
    uint64_t t0 = rm_now_ns();
    size_t failing = 0; /* Matches failed in a row */
    for (size_t i = 0; i < w->n; i++) {
        const rm_trace_req *r = &w->req[i];
        rm_cc_match_reply m;
        rm_cc_insert_reply ir;
        uint32_t out = r->output_tokens < UINT32_MAX ? (uint32_t)r->output_tokens : UINT32_MAX;
        if (rm_cc_match_out(&cc, "m", r->tokens, r->n, 1, 0, out, &m, msg, sizeof msg)) {
            record_error(&res, "Match", msg);
            /* A cluster that answers nothing would take hours of timeouts. */
            if (++failing == 50) {
                res.aborted_at = i + 1;
                break;
            }
            continue;
        }
        failing = 0;
        /* The request was served (and counted by the node) even if its
         * prompt then cannot be cached. */
        if (rm_cc_insert(&cc, "m", r->tokens, r->n, m.lease_id, m.node_id, &ir, msg, sizeof msg))
            record_error(&res, "Insert", msg);
        if (rm_cc_release(&cc, m.lease_id, m.node_id, msg, sizeof msg))
            record_error(&res, "Release", msg);
        q += r->n;
        h += m.matched_tokens;
        int id = atoi(m.node_id + 5);
        if (id >= 0 && id < NODES) {
            per[id]++;
            work[id] += r->n - m.matched_tokens + r->output_tokens;
        }
    }
    res.secs = (double)(rm_now_ns() - t0) / 1e9;
    res.hit = (double)h / (double)q;
    uint64_t max = 0, sum = 0, wmax = 0, wsum = 0;
    for (int i = 0; i < NODES; i++) {
        max = per[i] > max ? per[i] : max;
        sum += per[i];
        wmax = work[i] > wmax ? work[i] : wmax;
        wsum += work[i];
    }
    res.max_mean = (double)max / ((double)sum / NODES);
    res.work_max_mean = wsum ? (double)wmax / ((double)wsum / NODES) : 0;
    /* The cluster's own counters must reach exactly the client's; if they
     * never do (nodes lost), the last ones still tell spills and failovers. */
    long long deadline = td_now_ms() + 10000;
    int equal = 0;
    while (!equal && td_now_ms() < deadline) {
        rm_cc_cluster c;
        if (rm_cc_cluster_stats(&cc, &c, msg, sizeof msg) == 0) {
            equal = c.cs.query_tokens_total == q;
            res.cluster_hit = equal ? c.cs.hit_rate : -1;
            res.spills = c.cs.spills_total;
            res.failovers = c.cs.failovers_total;
            res.retries = c.cs.retries_total;
        }
        rm_cc_cluster_free(&c);
    }
    rm_cc_close(&cc);
    td_stop(&router, SIGTERM, 10000);
    for (int i = 0; i < NODES; i++)
        td_stop(&nodes[i], SIGTERM, 10000);
    return res;
}

static void report(const char *name, const result *r, double ideal)
{
    char cluster[32] = "totals differ";
    if (r->cluster_hit >= 0)
        snprintf(cluster, sizeof cluster, "says %.4f", r->cluster_hit);
    printf("   %-25s hit %.4f (cluster %s) = %.3f of ideal; max/mean requests %.3f, "
           "work %.3f; spills %llu; errors %llu; %.1f s\n",
           name, r->hit, cluster, r->hit / ideal, r->max_mean, r->work_max_mean,
           (unsigned long long)r->spills, (unsigned long long)r->errors, r->secs);
    if (r->failovers || r->retries)
        printf("   %-25s nodes taken off the ring %llu times, calls retried %llu\n", "",
               (unsigned long long)r->failovers, (unsigned long long)r->retries);
    if (r->errors)
        printf("   %-25s first error: %s\n", "", r->first_error);
    if (r->aborted_at)
        printf("   %-25s ABORTED after request %zu: 50 Matches failed in a row\n", "",
               r->aborted_at);
}

/* The routing modes compared: the default (work-balanced), the rule before
 * issue 15 (load in requests, 1 s half-life, keys 128 blocks deep), one
 * choice, fixed keys. --modes picks some by name. */
static const struct {
    const char *name, *flags;
} modes[] = {
    {"work", ""},
    {"requests", "--load-unit requests --load-half-life-ms 1000 --load-factor 1.25 "
                 "--max-key-blocks 128"},
    {"one-choice", "--choices 1"},
    {"fixed-64", "--key-mode fixed --fixed-key-tokens 64 --choices 1"},
    {"fixed-512", "--key-mode fixed --fixed-key-tokens 512 --choices 1"},
};
static const char *only_modes = NULL; /* comma-separated names; NULL: all */

static const char *const mode_titles[] = {"work-balanced (default)", "request-balanced (before)",
                                          "work, 1 choice", "fixed first 64 tokens",
                                          "fixed first 512 tokens"};

static void run_modes(const rm_trace *w, uint64_t node_pool_tokens, double ideal)
{
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        if (default_only && i > 0)
            break;
        if (only_modes) {
            char want[64];
            snprintf(want, sizeof want, ",%s,", modes[i].name);
            char list[512];
            snprintf(list, sizeof list, ",%s,", only_modes);
            if (!strstr(list, want))
                continue;
        }
        result res = run_cluster(w, node_pool_tokens, modes[i].flags);
        report(mode_titles[i], &res, ideal);
        fflush(stdout);
    }
}

/* p50 and p99 of `count` sequential unary calls of req to method. */
static void latency(const char *addr, const char *method, grpc_slice req, int count, double *p50,
                    double *p99)
{
    rm_rpc_client cl;
    rm_rpc_client_init(&cl, addr);
    void *m = rm_rpc_client_method(&cl, method);
    uint64_t *ns = rm_xmalloc(sizeof *ns * (size_t)count);
    char msg[256];
    for (int i = 0; i < count; i++) {
        grpc_slice s = grpc_slice_ref(req);
        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1), *reply = NULL;
        grpc_slice_unref(s);
        uint64_t t0 = rm_now_ns();
        rm_rpc_unary(&cl, m, bb, 5000, &reply, msg, sizeof msg);
        ns[i] = rm_now_ns() - t0;
        grpc_byte_buffer_destroy(bb);
        if (reply)
            grpc_byte_buffer_destroy(reply);
    }
    bench_sort_u64(ns, (size_t)count);
    *p50 = (double)ns[count / 2] / 1e3;
    *p99 = (double)ns[count * 99 / 100] / 1e3;
    free(ns);
    rm_rpc_client_close(&cl);
}

static void bench_overhead(const char *self, int quick)
{
    test_daemon nodes[3], router, echo_srv;
    char list[512];
    const char *flags[] = {"--shutdown-delay-ms", "0", "--log-level", "warn", NULL};
    if (td_start_nodes(nodes, 3, node_bin, "node-", flags, list, sizeof list))
        exit(1);
    const char *rargv[] = {
        router_bin,    "--nodes", list, "--health-interval-ms", "200", "--shutdown-delay-ms", "0",
        "--log-level", "warn",    NULL};
    const char *eargv[] = {self, "--serve-echo", "/radixmesh.v1.Router/Match", NULL};
    rm_cache_client cc;
    if (!cw_start_router(&router, rargv, &cc, 10000, 3, 15000) || td_start(&echo_srv, eargv))
        exit(1);
    /* 640-token requests: 8 shared 512-token prefixes + 128 unique tokens. */
    uint32_t tok[640];
    char msg[256];
    for (int p = 0; p < 8; p++) {
        rm_trace_block_tokens(tok, 7000 + (uint64_t)p, 512);
        rm_cc_insert_reply ir;
        rm_cc_insert(&cc, "m", tok, 512, 0, NULL, &ir, msg, sizeof msg);
    }
    rm_trace_block_tokens(tok, 7003, 512);
    rm_trace_block_tokens(tok + 512, 99999, 128);
    grpc_slice req = match_request_slice("m", tok, 640);
    rm_cc_match_reply m;
    rm_cc_match(&cc, "m", tok, 640, 0, 0, &m, msg, sizeof msg);
    radixmesh_v1_MatchReply rep = radixmesh_v1_MatchReply_init_zero;
    rep.matched_tokens = m.matched_tokens;
    rep.node_id = m.node_id;
    pb_get_encoded_size(&echo_reply_len, radixmesh_v1_MatchReply_fields, &rep);
    int errors = 0;
    double sec = quick ? 1.0 : 2.0, best_r = 0, best_e = 0;
    for (int round = 0; round < 2; round++) {
        double e = drive(echo_srv.addr, "/radixmesh.v1.Router/Match", req, 64, sec, &errors);
        double rr = drive(router.addr, "/radixmesh.v1.Router/Match", req, 64, sec, &errors);
        best_e = e > best_e ? e : best_e;
        best_r = rr > best_r ? rr : best_r;
    }
    printf("C. Match through the router (3 nodes, 2 choices), 64 in flight: %.0f calls/s; bare "
           "gRPC-core server %.0f calls/s -> ratio %.3f; %d errors\n",
           best_r, best_e, best_r / best_e, errors);
    /* Route: the same tokens as a RouteRequest (fields 1 and 2 coincide). */
    double rp50, rp99, ep50, ep99;
    int n = quick ? 500 : 2000;
    latency(router.addr, "/radixmesh.v1.Router/Route", req, n, &rp50, &rp99);
    latency(echo_srv.addr, "/radixmesh.v1.Router/Match", req, n, &ep50, &ep99);
    printf("   Route latency p50 %.0f us, p99 %.0f us; bare server p50 %.0f us, p99 %.0f us -> "
           "ratios %.2f, %.2f\n",
           rp50, rp99, ep50, ep99, rp50 / ep50, rp99 / ep99);
    grpc_slice_unref(req);
    rm_cc_close(&cc);
    td_stop(&echo_srv, SIGKILL, 5000);
    td_stop(&router, SIGTERM, 10000);
    for (int i = 0; i < 3; i++)
        td_stop(&nodes[i], SIGTERM, 10000);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--serve-echo"))
        return serve_echo(argv[2]);
    if (argc < 3) {
        fprintf(stderr,
                "usage: bench_router NODE_BIN ROUTER_BIN [--trace agentic|chat|builtin|FILE] "
                "[--seed N] [--requests N] [--block-tokens B] [--quick] [--node-arg ARG]... "
                "[--default-only] [--modes work,requests,one-choice,fixed-64,fixed-512] "
                "[--router-flags \"...\"]\n");
        return 2;
    }
    node_bin = argv[1];
    router_bin = argv[2];
    const char *trace = "../shared/traces/mooncake_synthetic_trace.jsonl";
    size_t B = 64, limit = 0;
    uint64_t seed = 42;
    int quick = 0, only_trace = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--trace") && i + 1 < argc)
            trace = argv[++i], only_trace = 1;
        else if (!strcmp(argv[i], "--block-tokens") && i + 1 < argc && atoi(argv[i + 1]) > 0)
            B = (size_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--requests") && i + 1 < argc)
            limit = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--quick"))
            quick = 1, limit = limit ? limit : 1000;
        else if (!strcmp(argv[i], "--modes") && i + 1 < argc)
            only_modes = argv[++i];
        else if (!strcmp(argv[i], "--router-flags") && i + 1 < argc)
            extra_flags = argv[++i];
        else if (!strcmp(argv[i], "--node-arg") && i + 1 < argc &&
                 nnode_args < (int)RM_ARRAY_LEN(node_args))
            node_args[nnode_args++] = argv[++i];
        else if (!strcmp(argv[i], "--default-only"))
            default_only = 1;
        else {
            fprintf(stderr, "bench_router: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    grpc_init();
    rm_trace w;
    char err[512];
    if (rm_workload_trace(trace, seed, limit, B, &w, err, sizeof err) == 0) {
        /* Each node: 10% of the trace's unique blocks / 8, in tokens. */
        uint64_t node_tokens = w.unique_blocks * B / 10 / NODES;
        uint64_t node_pages = (node_tokens + PAGE - 1) / PAGE;
        double ideal = single_lru_hit(&w, PAGE, node_pages * NODES);
        size_t over, convs = rm_trace_conversations(&w, node_pages * PAGE, &over);
        if (rm_workload_known(trace))
            printf("A. %s workload, seed %llu: ", trace, (unsigned long long)seed);
        else
            printf("A. trace %s: ", trace);
        printf("%zu requests, %llu unique blocks, %zu tokens/block; node pool %llu tokens x %d; "
               "%zu of %zu conversations have a request larger than a node's pool\n"
               "   ideal single LRU (%llu tokens): hit %.4f\n",
               w.n, (unsigned long long)w.unique_blocks, B, (unsigned long long)node_tokens, NODES,
               over, convs, (unsigned long long)(node_pages * NODES * PAGE), ideal);
        fflush(stdout);
        run_modes(&w, node_pages * PAGE, ideal);
        rm_trace_free(&w);
    } else {
        printf("A. trace skipped: %s\n", err);
    }
    if (only_trace) {
        grpc_shutdown();
        return 0;
    }
    rm_trace chat;
    gen_chat(&chat, quick ? 160 : 480);
    double ideal = single_lru_hit(&chat, PAGE, 1u << 22);
    printf("B. chat, 80%% behind one 1024-token system prompt: %zu requests; ideal LRU hit "
           "%.4f\n",
           chat.n, ideal);
    run_modes(&chat, 1u << 22, ideal);
    rm_trace_free(&chat);
    bench_overhead(argv[0], quick);
    grpc_shutdown();
    return 0;
}
