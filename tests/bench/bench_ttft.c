/* bench_ttft -- seed 001's experiment on the reference worker: time to
 * first token without a cache and with the prompt's shared prefix in the
 * cluster, as the prefix grows; plus the A/B figure.
 *
 *   bench_ttft PATH/TO/radixmesh-node [--quick] [--reps N] [--svg FILE]
 *
 * Model: the documented defaults (4 layers, d_model 256, 8 heads, vocab
 * 8192, seed 1), max context 4,160 so the 4k prefix takes a suffix. A real
 * radixmesh-node on 127.0.0.1 (port 0) with --kv-bytes-per-token 8192
 * --page-tokens 16 holds the KV. For each prefix length: one request warms
 * the cluster with prefix + its own suffix; then, per repetition, a fresh
 * 16-token suffix goes to a worker without cache and to one with the
 * cluster (interleaved, medians reported), whose first tokens and logits
 * must be identical. A/B: a fresh 1,536-token prompt on worker A (cold
 * cluster: computes and writes), then on worker B. */
#include <grpc/grpc.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../integration/daemon.h"
#include "bench_util.h"
#include "engine.h"
#include "util.h"

enum { SUFFIX = 16 };

static rm_model model;

static rm_engine *engine(const char *cache)
{
    rm_engine_config c = {cache, 0, 10000, 0, 0, "bench-ttft"};
    char err[200];
    rm_engine *e = rm_engine_new(&model, &c, err, sizeof err);
    if (!e) {
        fprintf(stderr, "engine: %s\n", err);
        exit(1);
    }
    return e;
}

static void fill(uint32_t *p, uint32_t n, uint64_t seed)
{
    for (uint32_t i = 0; i < n; i++)
        p[i] = (uint32_t)(rm_mix64(seed * 1000003 + i) % model.cfg.vocab);
}

static void run(rm_engine *e, const uint32_t *p, uint32_t n, rm_gen_result *r)
{
    rm_gen_params gp = {p, n, 1, 0, 1, 0, NULL, NULL, NULL};
    if (rm_engine_generate(e, &gp, r) != RM_GEN_OK) {
        fprintf(stderr, "generate failed: %s\n", r->detail);
        exit(1);
    }
    if (r->cache_error) {
        fprintf(stderr, "cache error: %s\n", r->cache_msg);
        exit(1);
    }
}

static double median_ms(uint64_t *v, int n)
{
    bench_sort_u64(v, (size_t)n);
    return (n % 2 ? (double)v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0) / 1e6;
}

typedef struct row {
    uint32_t prefix;
    double nocache_ms, cache_ms, readkv_ms, prefill_ms, kv_mib;
    uint32_t cached;
    int identical;
} row;

/* Prefix length vs TTFT, both series, linear axes; no external tools. */
static void write_svg(const char *path, const row *rows, int n)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return;
    }
    const double W = 660, H = 420, L = 70, R = 50, T = 64, B = 50;
    /* Log y axis, whole decades: both series stay readable. */
    double xmax = 4096, lo = 1e300, hi = 0;
    for (int i = 0; i < n; i++) {
        lo = rows[i].cache_ms < lo ? rows[i].cache_ms : lo;
        hi = rows[i].nocache_ms > hi ? rows[i].nocache_ms : hi;
    }
    const double ymin = pow(10, floor(log10(lo > 0.1 ? lo : 0.1))), ymax = pow(10, ceil(log10(hi)));
#define X(v) (L + (v) / xmax * (W - L - R))
#define Y(v) (H - B - (log10(v) - log10(ymin)) / (log10(ymax) - log10(ymin)) * (H - T - B))
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%.0f\" y=\"22\" font-size=\"15\">Time to first token vs shared prefix "
            "(reference worker, radixmesh-node KV)</text>\n",
            W, H, L);
    for (double y = ymin; y <= ymax * 1.001; y *= 10)
        fprintf(f,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g %s</text>\n",
                L, W - R, Y(y), Y(y), L - 6, Y(y) + 4, y >= 1000 ? y / 1000 : y,
                y >= 1000 ? "s" : "ms");
    for (int x = 0; x <= 4096; x += 1024)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d</text>\n", X(x),
                H - B + 18, x);
    fprintf(f,
            "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
            "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">shared prefix (tokens; + %d "
            "unique)</text>\n"
            "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">TTFT "
            "(log scale)</text>\n",
            L, W - R, H - B, H - B, L, L, T, H - B, (L + W - R) / 2, H - 12, SUFFIX,
            (T + H - B) / 2);
    const char *color[2] = {"#d62728", "#1f77b4"};
    const char *label[2] = {"no cache (full prefill)", "prefix KV from the cluster"};
    for (int sidx = 0; sidx < 2; sidx++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                color[sidx]);
        for (int i = 0; i < n; i++)
            fprintf(f, "%.1f,%.1f ", X(rows[i].prefix),
                    Y(sidx ? rows[i].cache_ms : rows[i].nocache_ms));
        fprintf(f, "\"/>\n");
        for (int i = 0; i < n; i++) {
            double v = sidx ? rows[i].cache_ms : rows[i].nocache_ms;
            fprintf(f,
                    "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>"
                    "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\" font-size=\"10\">%.0f</text>\n",
                    X(rows[i].prefix), Y(v), color[sidx], X(rows[i].prefix) + 5, Y(v) - 6,
                    color[sidx], v);
        }
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"3\" fill=\"%s\"/>"
                "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                L + 230 * sidx, 40.0, color[sidx], L + 18 + 230 * sidx, 45.0, label[sidx]);
    }
#undef X
#undef Y
    fprintf(f, "</svg>\n");
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s NODE_BIN [--quick] [--reps N] [--svg FILE]\n", argv[0]);
        return 2;
    }
    int quick = 0, reps = 3;
    const char *svg = "bench_ttft.svg";
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--svg") && i + 1 < argc)
            svg = argv[++i];
    }
    if (quick)
        reps = 1;
    if (reps < 1 || reps > 50)
        reps = 3;
    signal(SIGPIPE, SIG_IGN);
    grpc_init();
    rm_model_config cfg = RM_MODEL_CONFIG_DEFAULT;
    cfg.max_context = 4096 + 64;
    char err[200];
    if (rm_model_init_seeded(&model, &cfg, 1, err, sizeof err) != RM_MODEL_OK) {
        fprintf(stderr, "model: %s\n", err);
        return 1;
    }
    test_daemon node;
    const char *nargv[] = {argv[1], "--kv-bytes-per-token", "8192",   "--page-tokens",
                           "16",    "--pool-tokens",        "131072", "--shutdown-delay-ms",
                           "0",     "--log-level",          "warn",   NULL};
    if (td_start(&node, nargv) != 0) {
        fprintf(stderr, "cannot start %s\n", argv[1]);
        return 1;
    }
    rm_engine *nocache = engine("none"), *warm = engine(node.addr), *cached = engine(node.addr);
    printf("== TTFT with and without the cluster's KV (bench_ttft%s, %d rep%s, median; "
           "load average %.2f at start) ==\n",
           quick ? " --quick" : "", reps, reps > 1 ? "s" : "", bench_loadavg());
    printf("model: 4 layers, d_model 256, 8 heads, vocab 8192 (%zu KV bytes/token), fp32, one "
           "thread; node page 16\n\n",
           rm_model_kv_bytes(&model.cfg));
    printf("| shared prefix | prompt | TTFT no cache | TTFT cluster KV | ratio | cached tokens | "
           "KV read | ReadKV | ReadKV rate | rest's prefill | same first token + logits |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    const uint32_t prefixes[] = {128, 512, 1024, 2048, 4096};
    const int nprefix = quick ? 3 : 5;
    row rows[5];
    uint32_t *p = rm_xmalloc((4096 + 64) * sizeof *p);
    uint64_t *tn = rm_xcalloc((size_t)reps, sizeof *tn), *tc = rm_xcalloc((size_t)reps, 8);
    uint64_t *trd = rm_xcalloc((size_t)reps, 8), *tpf = rm_xcalloc((size_t)reps, 8);
    for (int k = 0; k < nprefix; k++) {
        const uint32_t P = prefixes[k], n = P + SUFFIX;
        row *rw = &rows[k];
        memset(rw, 0, sizeof *rw);
        rw->prefix = P;
        rw->identical = 1;
        fill(p, P, P);
        fill(p + P, SUFFIX, 1000000 + P);
        rm_gen_result r, rc;
        run(warm, p, n, &r);
        rm_gen_result_free(&r);
        for (int i = 0; i < reps; i++) {
            fill(p + P, SUFFIX, 2000000 + (uint64_t)P * 100 + (uint64_t)i);
            run(nocache, p, n, &r);
            run(cached, p, n, &rc);
            tn[i] = r.ttft_ns;
            tc[i] = rc.ttft_ns;
            trd[i] = rc.readkv_ns;
            tpf[i] = rc.prefill_ns;
            rw->cached = rc.cached_tokens;
            rw->kv_mib = rc.kv_bytes_read / 1048576.0;
            rw->identical &=
                r.tokens[0] == rc.tokens[0] && r.first_logits_hash == rc.first_logits_hash;
            rm_gen_result_free(&r);
            rm_gen_result_free(&rc);
        }
        rw->nocache_ms = median_ms(tn, reps);
        rw->cache_ms = median_ms(tc, reps);
        rw->readkv_ms = median_ms(trd, reps);
        rw->prefill_ms = median_ms(tpf, reps);
        printf("| %u | %u | %.1f ms | %.1f ms | **%.3f** | %u | %.2f MiB | %.2f ms | %.0f MiB/s | "
               "%.1f ms | %s |\n",
               P, n, rw->nocache_ms, rw->cache_ms, rw->cache_ms / rw->nocache_ms, rw->cached,
               rw->kv_mib, rw->readkv_ms,
               rw->readkv_ms > 0 ? rw->kv_mib / (rw->readkv_ms / 1e3) : 0, rw->prefill_ms,
               rw->identical ? "yes" : "**NO**");
        fflush(stdout);
    }
    write_svg(svg, rows, nprefix);
    printf("\nplot: %s\n", svg);

    /* The goal: 1.5k tokens on A, then on B sharing the cluster. */
    rm_engine *a = engine(node.addr), *b = engine(node.addr);
    const uint32_t n = 1536;
    for (int i = 0; i < reps; i++) {
        fill(p, n, 3000000 + (uint64_t)i);
        rm_gen_result ra, rb;
        run(a, p, n, &ra);
        run(b, p, n, &rb);
        tn[i] = ra.ttft_ns;
        tc[i] = rb.ttft_ns;
        trd[i] = rb.cached_tokens;
        if (ra.tokens[0] != rb.tokens[0] || ra.first_logits_hash != rb.first_logits_hash)
            printf("A and B differ!\n");
        rm_gen_result_free(&ra);
        rm_gen_result_free(&rb);
    }
    double ta = median_ms(tn, reps), tb = median_ms(tc, reps);
    printf("\nA/B, a fresh 1,536-token prompt: TTFT on A (cold cluster, computes + writes) "
           "%.1f ms, on B (same prompt, KV from the cluster) %.1f ms: B/A = **%.3f** (goal <= "
           "0.5); B cached %llu tokens\n",
           ta, tb, tb / ta, (unsigned long long)trd[0]);
    printf("load average at the end: %.2f\n", bench_loadavg());
    rm_engine_free(a);
    rm_engine_free(b);
    rm_engine_free(nocache);
    rm_engine_free(warm);
    rm_engine_free(cached);
    free(p);
    free(tn);
    free(tc);
    free(trd);
    free(tpf);
    td_stop(&node, SIGTERM, 10000);
    rm_model_free(&model);
    grpc_shutdown();
    return 0;
}
