/* bench_shadow: what the issue-16 estimators cost and how close they come.
 *
 * Each workload goes through 8 in-process nodes (tests/bench/
 * shadow_cluster.h: session-hash placement, pools = capacity x the trace's
 * distinct pages / 8, page 16, LRU). Printed per workload:
 *   - accuracy: the cluster's hit ratio with every pool scaled by 0.25-4x,
 *     estimated (each node's rm_shadow) and exact (the node's cache code at
 *     that size), the 2x point against a second replay with doubled pools,
 *     the router's ideal and infinite estimates against exact;
 *   - CPU per request: the node's own Match+Insert (rm_cache, in process:
 *     no RPC, no decoding) against its estimator in the same run, and the
 *     router's two estimators; the ratio is the goal's figure (<= 0.10);
 *   - memory per node and per router, and the sampling rates.
 *
 * Usage: bench_shadow [--trace chat|agentic|builtin|FILE]... [--seed N]
 *                     [--requests N] [--block-tokens 64] [--capacity PCT]
 *                     [--budget BYTES] [--max-rate R] [--min-sample N]
 *                     [--policy lru|lfu]
 * (--max-rate 1 --min-sample 1: the rate memory allows; --max-rate R
 * --min-sample 1: R exactly, where memory allows)
 * Without --trace: chat, agentic, builtin and, when it is there,
 * ../shared/traces/mooncake_synthetic_trace.jsonl. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pbx.h"
#include "radixmesh.pb.h"
#include "shadow_cluster.h"
#include "workload.h"

#define MOONCAKE "../shared/traces/mooncake_synthetic_trace.jsonl"

/* What a node also does for every token of every request before its
 * cache sees it: decode the Match and the Insert request from the wire
 * (pbx's token decoder, as node_server.c does; gRPC's own work is not
 * counted). Requests in batches of up to 1 MiB of tokens, encoded
 * untimed, then decoded twice (Match, Insert) on the thread's CPU clock;
 * best of `rounds`. */
static uint64_t decode_ns(const rm_trace *t, int rounds)
{
    uint64_t best = UINT64_MAX;
    size_t cap = 0;
    uint8_t *buf = NULL;
    size_t *len = NULL, nlen = 0;
    for (int round = 0; round < rounds; round++) {
        uint64_t ns = 0;
        for (size_t b = 0; b < t->n;) {
            size_t e = b, tokens = 0;
            while (e < t->n && (e == b || tokens + t->req[e].n <= (1u << 18)))
                tokens += t->req[e++].n;
            if (tokens * 5 + 64 * (e - b) > cap) {
                cap = tokens * 5 + 64 * (e - b);
                buf = rm_xrealloc(buf, cap);
            }
            if (e - b > nlen) {
                nlen = e - b;
                len = rm_xrealloc(len, nlen * sizeof *len);
            }
            size_t off = 0;
            for (size_t i = b; i < e; i++) {
                radixmesh_v1_MatchRequest m = radixmesh_v1_MatchRequest_init_zero;
                m.namespace = "m";
                m.lease = true;
                rm_tokens_view v = {t->req[i].tokens, t->req[i].n};
                rm_pb_tokens_encoder(&m.tokens, &v);
                pb_ostream_t os = pb_ostream_from_buffer(buf + off, cap - off);
                if (!pb_encode(&os, radixmesh_v1_MatchRequest_fields, &m))
                    exit(1);
                len[i - b] = os.bytes_written;
                off += os.bytes_written;
            }
            uint64_t t0 = sc_thread_ns();
            for (int twice = 0; twice < 2; twice++) {
                off = 0;
                for (size_t i = b; i < e; i++) {
                    radixmesh_v1_MatchRequest m = radixmesh_v1_MatchRequest_init_zero;
                    rm_tokens toks = {.max = SIZE_MAX};
                    rm_pb_tokens_decoder(&m.tokens, &toks);
                    pb_istream_t is = pb_istream_from_buffer(buf + off, len[i - b]);
                    if (!pb_decode(&is, radixmesh_v1_MatchRequest_fields, &m) ||
                        toks.n != t->req[i].n)
                        exit(1);
                    pb_release(radixmesh_v1_MatchRequest_fields, &m);
                    rm_tokens_free(&toks);
                    off += len[i - b];
                }
            }
            ns += sc_thread_ns() - t0;
            b = e;
        }
        best = ns < best ? ns : best;
    }
    free(buf);
    free(len);
    return best;
}

static void row(const char *name, const rm_trace *t, const sc_options *o)
{
    sc_figures f;
    sc_run(t, o, &f);
    printf("\n%s: %zu requests, %.1f M tokens, %llu distinct pages, pool %llu pages/node, "
           "R node %.3g-%.3g, router %.3g / infinite %.3g\n",
           name, f.requests, (double)f.tokens / 1e6, (unsigned long long)f.distinct_pages,
           (unsigned long long)f.pool_pages, f.rate_min, f.rate_max, f.router_rate,
           f.router_inf_rate);
    printf("  %-10s %-9s %-9s %-9s %s\n", "memory", "estimate", "exact", "error", "worst node");
    for (int k = 0; k < SC_FACTORS; k++)
        printf("  %-10.2f %-9.4f %-9.4f %+-9.4f %.4f\n", sc_factor[k], f.est[k], f.exact[k],
               f.est[k] - f.exact[k], f.node_err[k]);
    printf("  2x replay  %-9.4f (estimate - replay %+.4f)   achieved %.4f (1x exact %.4f)\n",
           f.real2x, f.est[3] - f.real2x, f.achieved, f.exact[2]);
    printf("  ideal      %-9.4f %-9.4f %+.4f\n", f.ideal_est, f.ideal_exact,
           f.ideal_est - f.ideal_exact);
    printf("  infinite   %-9.4f %-9.4f %+.4f\n", f.inf_est, f.inf_exact, f.inf_est - f.inf_exact);
    sc_cpu cpu;
    sc_time(t, o, f.pool_pages, 3, &cpu);
    double n = (double)f.requests;
    uint64_t dec = decode_ns(t, 3);
    double tok = (double)f.tokens;
    printf("  CPU per request (best of 3): node Match+Insert %.2f us (%.3f ns/token), + decoding "
           "both requests %.2f us\n",
           (double)cpu.ns_node / n / 1e3, (double)cpu.ns_node / tok,
           (double)(cpu.ns_node + dec) / n / 1e3);
    printf("    node estimator %.2f us (%.3f ns/token): ratio %.3f to Match+Insert, %.3f with "
           "decoding\n",
           (double)cpu.ns_node_shadow / n / 1e3, (double)cpu.ns_node_shadow / tok,
           (double)cpu.ns_node_shadow / (double)cpu.ns_node,
           (double)cpu.ns_node_shadow / (double)(cpu.ns_node + dec));
    printf("    router estimators (ideal + infinite) %.2f us (%.3f ns/token)\n",
           (double)cpu.ns_router_shadow / n / 1e3, (double)cpu.ns_router_shadow / tok);
    printf("  memory: node estimator %zu B (max of 8), router %zu B\n", f.node_mem_max,
           f.router_mem);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *traces[8];
    int ntraces = 0;
    uint64_t seed = 42;
    size_t requests = 0, block = 64;
    sc_options o = {0.10, 0, 0, 0, 0, RM_EVICT_LRU};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--trace") && v && ntraces < 8)
            traces[ntraces++] = argv[++i];
        else if (!strcmp(a, "--seed") && v)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--requests") && v)
            requests = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--block-tokens") && v)
            block = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--capacity") && v)
            o.capacity = atof(argv[++i]) / 100;
        else if (!strcmp(a, "--policy") && v && (!strcmp(v, "lru") || !strcmp(v, "lfu")))
            o.policy = !strcmp(argv[++i], "lfu") ? RM_EVICT_LFU : RM_EVICT_LRU;
        else if (!strcmp(a, "--min-sample") && v)
            o.min_sample = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "--max-rate") && v)
            o.max_rate = atof(argv[++i]);
        else if (!strcmp(a, "--budget") && v)
            o.node_budget = o.router_budget = strtoull(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_shadow [--trace chat|agentic|builtin|FILE]... [--seed N] "
                            "[--requests N] [--block-tokens 64] [--capacity PCT] [--budget BYTES] "
                            "[--max-rate R] [--min-sample N] [--policy lru|lfu]\n");
            return 2;
        }
    }
    if (!ntraces) {
        traces[ntraces++] = "chat";
        traces[ntraces++] = "agentic";
        traces[ntraces++] = "builtin";
        if (access(MOONCAKE, R_OK) == 0)
            traces[ntraces++] = MOONCAKE;
        else
            printf("(%s absent: Mooncake skipped)\n", MOONCAKE);
    }
    printf("bench_shadow: 8 nodes, session-hash placement, capacity %.0f%% of distinct pages, "
           "page %d, blocks of %zu tokens, seed %llu, %s\n",
           o.capacity * 100, SC_PAGE, block, (unsigned long long)seed,
           o.policy == RM_EVICT_LFU ? "LFU" : "LRU");
    for (int i = 0; i < ntraces; i++) {
        rm_trace t;
        char err[256];
        if (rm_workload_trace(traces[i], seed, requests, block, &t, err, sizeof err) != 0) {
            fprintf(stderr, "bench_shadow: %s\n", err);
            return 1;
        }
        row(traces[i], &t, &o);
        rm_trace_free(&t);
    }
    return 0;
}
