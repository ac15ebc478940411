/* radixmesh workload: writes a generated workload as JSONL, to keep a trace
 * and replay it later (radixmesh replay --trace FILE, the benchmarks'
 * --trace FILE) exactly as `--trace NAME --seed N` generates it in memory.
 *
 * agentic and chat are written as Mooncake lines plus "session"; builtin as
 * token arrays. A summary goes to stderr: sessions, unique blocks, and how
 * many sessions do not fit in one node's pool at the benchmarks' sizing. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "flags.h"
#include "trace.h"
#include "util.h"
#include "workload.h"

/* The benchmarks' cluster: 8 nodes sharing 10% of the unique blocks. */
#define BENCH_NODES 8

static int write_tokens(const rm_trace *t, FILE *f)
{
    for (size_t i = 0; i < t->n; i++) {
        const rm_trace_req *r = &t->req[i];
        fprintf(f,
                "{\"timestamp\": %" PRIu64 ", \"output_length\": %" PRIu64 ", \"session\": %" PRIu64
                ", \"tokens\": [",
                r->timestamp_ms, r->output_tokens, r->conversation);
        for (size_t j = 0; j < r->n; j++)
            fprintf(f, j ? ", %" PRIu32 : "%" PRIu32, r->tokens[j]);
        fputs("]}\n", f);
    }
    return fflush(f) == 0 && !ferror(f) ? 0 : -1;
}

static void summarize(const char *name, uint64_t seed, const rm_block_trace *bt)
{
    uint64_t in = 0, out = 0, span = bt->n ? bt->req[bt->n - 1].timestamp_ms : 0;
    for (size_t i = 0; i < bt->n; i++) {
        in += bt->req[i].input_length;
        out += bt->req[i].output_length;
    }
    /* At one token per block a request's length is its block count. */
    rm_trace blocks;
    rm_trace_from_blocks(&blocks, bt, 1);
    uint64_t pool = blocks.unique_blocks / 10 / BENCH_NODES;
    size_t over, sessions = rm_trace_conversations(&blocks, pool, &over);
    size_t largest = 0;
    for (size_t i = 0; i < blocks.n; i++)
        largest = blocks.req[i].n > largest ? blocks.req[i].n : largest;
    fprintf(stderr,
            "%s, seed %" PRIu64 ": %zu requests in %zu sessions over %.1f min of trace time; "
            "%" PRIu64 " unique 512-token blocks; %" PRIu64 " prompt tokens, %" PRIu64
            " reply tokens\n"
            "at the benchmarks' sizing (%d nodes, pools of 10%% of the unique blocks / %d = "
            "%" PRIu64 " blocks): %zu sessions have a request larger than a node's pool "
            "(largest request: %zu blocks)\n",
            name, seed, bt->n, sessions, (double)span / 60000.0, blocks.unique_blocks, in, out,
            BENCH_NODES, BENCH_NODES, pool, over, largest);
    rm_trace_free(&blocks);
}

int rm_cmd_workload(int argc, char **argv)
{
    uint64_t seed = 42, requests = 0;
    const char *out_path = NULL;
    const rm_flag flags[] = {
        {"seed", RM_FLAG_AT(&seed), "random seed: the same seed gives the same trace", 0, 0},
        {"requests", RM_FLAG_AT(&requests), "requests to generate (0: 4000; builtin 2000)", 0,
         10000000},
        {"out", RM_FLAG_AT(&out_path), "write here instead of stdout", 0, 0},
    };
    rm_flagset fs = {"radixmesh workload", "agentic|chat|builtin [options] > trace.jsonl",
                     "RADIXMESH", flags, (int)RM_ARRAY_LEN(flags)};
    const char *pos[1];
    int npos = 0;
    rm_flags_parse(&fs, argc, argv, pos, 1, &npos);
    if (npos != 1 || !rm_workload_known(pos[0]))
        rm_flags_fail(&fs, "give one workload: agentic, chat or builtin");
    FILE *f = out_path ? fopen(out_path, "w") : stdout;
    if (!f) {
        fprintf(stderr, "radixmesh workload: cannot write %s\n", out_path);
        return 1;
    }
    int rc;
    rm_block_trace bt;
    if (rm_workload_blocks(pos[0], seed, requests, &bt) == 0) {
        summarize(pos[0], seed, &bt);
        rc = rm_block_trace_write(&bt, f);
        rm_block_trace_free(&bt);
    } else {
        rm_trace t;
        rm_trace_generate(&t, requests ? requests : RM_WORKLOAD_BUILTIN_REQUESTS, seed);
        rc = write_tokens(&t, f);
        fprintf(stderr, "%s, seed %" PRIu64 ": %zu requests, %" PRIu64 " prompt tokens\n", pos[0],
                seed, t.n, t.total_tokens);
        rm_trace_free(&t);
    }
    if (out_path && fclose(f) != 0)
        rc = -1;
    if (rc) {
        fprintf(stderr, "radixmesh workload: write error on %s\n", out_path ? out_path : "stdout");
        return 1;
    }
    return 0;
}
