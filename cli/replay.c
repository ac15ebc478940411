/* radixmesh replay: a trace against a live cluster, through its router.
 *
 * Per request: Match with a lease through the router (declaring the
 * trace's output_length as the reply's expected length, which the router
 * balances as work), Insert pinned to the node that answered, Release. Requests of one conversation
 * (a trace's "session", else a Mooncake request's first block) go to one worker, so with
 * --concurrency > 1 each conversation keeps its order while different ones overlap.
 *
 * Per node it counts requests and work: the prompt tokens the node did not
 * hold (n - matched_tokens) plus the reply's tokens (output_length), what
 * the node's GPU would compute. Balance is max/mean over the nodes that were
 * healthy when the replay began, idle ones included. At the end, the hit
 * budget over the run (hit_budget.h: infinite and ideal exact, offline). */
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache_client.h"
#include "tls.h"
#include "cli.h"
#include "flags.h"
#include "hit_budget.h"
#include "trace.h"
#include "util.h"
#include "workload.h"

#define MAX_NODES 256

typedef struct node_count {
    char id[128];
    uint64_t requests, work;
} node_count;

typedef struct replay {
    const rm_trace *trace;
    const char *router, *ns;
    const char *token; /* bearer token or NULL */
    const rm_tls *tls; /* towards the router; may be NULL */
    uint32_t workers;
    double speed;      /* 0: as fast as possible */
    uint64_t first_ms; /* the trace's earliest timestamp: its clock's 0 */
    uint64_t start_ns;
    atomic_uint_fast64_t done, errors, query, hit;
    atomic_uint finished; /* workers that have returned */
    pthread_mutex_t mu;   /* per-node counts, first error */
    node_count nodes[MAX_NODES];
    size_t nnodes;
    char first_error[256];
    cli_budget *budget; /* the exact ideal and infinite caches */
} replay;

typedef struct worker {
    replay *rp;
    uint32_t index;
} worker;

/* The entry of node `id`, added if new (NULL when the table is full).
 * Called with rp->mu held, or before the workers start. */
static node_count *node_entry(replay *rp, const char *id)
{
    size_t i = 0;
    while (i < rp->nnodes && strcmp(rp->nodes[i].id, id) != 0)
        i++;
    if (i == rp->nnodes && rp->nnodes < MAX_NODES)
        snprintf(rp->nodes[rp->nnodes++].id, sizeof rp->nodes[0].id, "%s", id);
    return i < rp->nnodes ? &rp->nodes[i] : NULL;
}

static void count_node(replay *rp, const char *id, uint64_t work)
{
    pthread_mutex_lock(&rp->mu);
    node_count *nc = node_entry(rp, id);
    if (nc) {
        nc->requests++;
        nc->work += work;
    }
    pthread_mutex_unlock(&rp->mu);
}

static void record_error(replay *rp, const char *what, int st, const char *msg)
{
    atomic_fetch_add(&rp->errors, 1);
    pthread_mutex_lock(&rp->mu);
    if (!rp->first_error[0])
        snprintf(rp->first_error, sizeof rp->first_error, "%s: status %d: %.180s", what, st, msg);
    pthread_mutex_unlock(&rp->mu);
}

/* With --speed, waits until the request's time on the scaled trace clock.
 * This paces the load; it synchronises nothing. */
static void pace(const replay *rp, uint64_t ts_ms)
{
    if (rp->speed <= 0)
        return;
    /* Capped (31 years) so that the conversion cannot overflow. */
    double wait_ns = (double)(ts_ms - rp->first_ms) * 1e6 / rp->speed;
    uint64_t due = rp->start_ns + (wait_ns < 1e18 ? (uint64_t)wait_ns : 1000000000000000000ull);
    uint64_t now = rm_now_ns();
    if (due > now) {
        struct timespec ts = {(time_t)((due - now) / 1000000000ull),
                              (long)((due - now) % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

#define YEAR_MS (365.25 * 86400e3)

/* ms as a reader takes it in at a glance ("50 ms", "3.2 h", "53.9 years"):
 * each unit from twice its size on (years and seconds from once). */
static void duration_text(double ms, char *buf, size_t len)
{
    static const struct {
        double from_ms, unit_ms;
        const char *name;
    } units[] = {{YEAR_MS, YEAR_MS, "years"},
                 {2 * 86400e3, 86400e3, "days"},
                 {2 * 3600e3, 3600e3, "h"},
                 {2 * 60e3, 60e3, "min"},
                 {1e3, 1e3, "s"}};
    for (size_t i = 0; i < RM_ARRAY_LEN(units); i++)
        if (ms >= units[i].from_ms) {
            double x = ms / units[i].unit_ms;
            snprintf(buf, len, x < 1e4 ? "%.1f %s" : "%.3g %s", x, units[i].name);
            return;
        }
    snprintf(buf, len, "%.0f ms", ms);
}

/* With --speed, says how long pacing takes before it starts, and refuses
 * (-1) a replay that would take a year or more: a trace whose clock runs
 * from 0 on some lines and from 1970 on others would otherwise just wait,
 * silently, for decades. Returns 0 to go on. */
static int say_pacing(double speed, uint64_t first_ms, uint64_t last_ms)
{
    if (speed <= 0)
        return 0;
    char span[32], takes[32];
    double ms = (double)(last_ms - first_ms);
    duration_text(ms, span, sizeof span);
    duration_text(ms / speed, takes, sizeof takes);
    if (ms / speed >= YEAR_MS) {
        fprintf(stderr,
                "radixmesh replay: the trace spans %s (timestamps %" PRIu64 " to %" PRIu64
                " ms): at --speed %g pacing it would take %s; %s (--max-speed ignores them)\n",
                span, first_ms, last_ms, speed, takes,
                ms >= YEAR_MS ? "are timestamps from 0 mixed with ones from 1970?"
                              : "is --speed meant to be that small?");
        return -1;
    }
    fprintf(stderr,
            "radixmesh replay: the trace spans %s; at --speed %g the replay takes %s or more\n",
            span, speed, takes);
    return 0;
}

static void *run_worker(void *p)
{
    worker *w = p;
    replay *rp = w->rp;
    rm_cache_client cc;
    if (rm_cc_init_router_tls(&cc, rp->router, 30000, rp->tls) != 0) {
        record_error(rp, "connect", 14, rp->router);
        atomic_fetch_add(&rp->finished, 1);
        return NULL;
    }
    rm_rpc_client_set_token(&cc.rpc, rp->token);
    char msg[256];
    for (size_t i = 0; i < rp->trace->n; i++) {
        const rm_trace_req *r = &rp->trace->req[i];
        if (rm_mix64(r->conversation) % rp->workers != w->index)
            continue;
        pace(rp, r->timestamp_ms);
        rm_cc_match_reply m;
        rm_cc_insert_reply ir;
        uint32_t out = r->output_tokens < UINT32_MAX ? (uint32_t)r->output_tokens : UINT32_MAX;
        int st = rm_cc_match_out(&cc, rp->ns, r->tokens, r->n, 1, 0, out, &m, msg, sizeof msg);
        if (st) {
            record_error(rp, "Match", st, msg);
            continue;
        }
        cli_budget_feed(rp->budget, rp->ns, r->tokens, r->n);
        /* (An inference server would now prefill tokens [matched, n).) */
        st =
            rm_cc_insert(&cc, rp->ns, r->tokens, r->n, m.lease_id, m.node_id, &ir, msg, sizeof msg);
        if (st)
            record_error(rp, "Insert", st, msg);
        st = rm_cc_release(&cc, m.lease_id, m.node_id, msg, sizeof msg);
        if (st)
            record_error(rp, "Release", st, msg);
        count_node(rp, m.node_id, r->n - m.matched_tokens + r->output_tokens);
        atomic_fetch_add(&rp->query, r->n);
        atomic_fetch_add(&rp->hit, m.matched_tokens);
        atomic_fetch_add(&rp->done, 1);
    }
    rm_cc_close(&cc);
    atomic_fetch_add(&rp->finished, 1);
    return NULL;
}

typedef struct totals {
    uint64_t query, hit, spills;
} totals;

/* The cluster's totals; with rp, also enters its healthy nodes there, so
 * that nodes no request reaches count in the balance. */
static int cluster_totals(rm_cache_client *cc, totals *t, replay *rp)
{
    rm_cc_cluster c;
    char msg[256];
    int st = rm_cc_cluster_stats(cc, &c, msg, sizeof msg);
    if (st == 0)
        *t = (totals){c.cs.query_tokens_total, c.cs.hit_tokens_total, c.cs.spills_total};
    for (size_t i = 0; st == 0 && rp && i < c.nnodes; i++)
        if (c.nodes[i].healthy && c.nodes[i].node_id && c.nodes[i].node_id[0])
            node_entry(rp, c.nodes[i].node_id);
    rm_cc_cluster_free(&c);
    return st;
}

/* max/mean of v over the nodes (0 when there is nothing). */
static double max_mean(const replay *rp, int work)
{
    uint64_t max = 0, sum = 0;
    for (size_t i = 0; i < rp->nnodes; i++) {
        uint64_t v = work ? rp->nodes[i].work : rp->nodes[i].requests;
        max = v > max ? v : max;
        sum += v;
    }
    return sum ? (double)max / ((double)sum / (double)rp->nnodes) : 0;
}

static void progress(const replay *rp, int final)
{
    uint64_t done = atomic_load(&rp->done), q = atomic_load(&rp->query);
    double secs = (double)(rm_now_ns() - rp->start_ns) / 1e9;
    double rate = secs > 0 ? (double)done / secs : 0;
    double eta = rate > 0 ? (double)(rp->trace->n - done) / rate : 0;
    fprintf(stderr,
            "\r[replay] %" PRIu64 "/%zu requests  %.0f req/s  hit %.1f%%  errors %" PRIu64
            "  ETA %.0fs   %s",
            done, rp->trace->n, rate, q ? 100.0 * (double)atomic_load(&rp->hit) / (double)q : 0,
            (uint64_t)atomic_load(&rp->errors), eta, final ? "\n" : "");
}

int rm_cmd_replay(int argc, char **argv)
{
    const char *router = NULL, *trace_path = NULL, *ns = "replay";
    rm_cli_conn conn = {0};
    uint64_t block = 512, limit = 0, concurrency = 1, seed = 42;
    double speed = 0, ttft_model = 0;
    int max_speed = 0, json = 0;
    const rm_flag flags[] = {
        {"router", RM_FLAG_AT(&router), "router address HOST:PORT", 0, 0},
        {"trace", RM_FLAG_AT(&trace_path),
         "Mooncake JSONL or JSONL of token arrays, or a generated workload: agentic (coding "
         "agents), chat (a chat fleet), builtin (mixed); see 'radixmesh workload'",
         0, 0},
        {"seed", RM_FLAG_AT(&seed), "seed of a generated workload", 0, 0},
        {"block-tokens", RM_FLAG_AT(&block), "tokens per Mooncake block", 1, 65536},
        {"limit", RM_FLAG_AT(&limit),
         "replay at most N requests (0: all; a generated workload makes N, 0: 4000, builtin 2000)",
         0, 0},
        {"concurrency", RM_FLAG_AT(&concurrency),
         "parallel clients (each conversation stays in order)", 1, 1024},
        {"speed", RM_FLAG_AT(&speed),
         "follow the trace's timestamps, X times faster (default: as fast as possible)", 0, 0},
        {"max-speed", RM_FLAG_AT(&max_speed), "ignore timestamps (the default)", 0, 0},
        {"namespace", RM_FLAG_AT(&ns), "cache namespace of the requests", 0, 0},
        {"ttft-model", RM_FLAG_AT(&ttft_model),
         "prefill throughput in tokens/s: also estimate the TTFT saved", 0, 0},
        {"json", RM_FLAG_AT(&json), "end with the summary as one JSON line on stdout", 0, 0},
        RM_CLI_CONN_FLAGS(conn),
    };
    rm_flagset fs = {"radixmesh replay", "--router HOST:PORT --trace FILE [options]", "RADIXMESH",
                     flags, (int)RM_ARRAY_LEN(flags)};
    rm_flags_parse(&fs, argc, argv, NULL, 0, NULL);
    if (!router || !trace_path)
        rm_flags_fail(&fs, "--router and --trace are required");
    if (speed < 0 || (max_speed && speed > 0))
        rm_flags_fail(&fs, "give either --speed X (X > 0) or --max-speed");
    rm_tls tls;
    char *token;
    rm_cli_conn_load(&conn, &fs, &tls, &token);
    int rc = 1;
    rm_trace trace;
    char err[512];
    if (rm_workload_trace(trace_path, seed, limit, block, &trace, err, sizeof err) != 0) {
        fprintf(stderr, "radixmesh replay: %s\n", err);
        rc = 2;
        goto out_conn;
    }
    /* Traces may count from an epoch (milliseconds since 1970): the
     * clock starts at the earliest request, not at 0. */
    uint64_t first_ms = trace.n ? UINT64_MAX : 0, last_ms = 0;
    for (size_t i = 0; i < trace.n; i++) {
        uint64_t t = trace.req[i].timestamp_ms;
        first_ms = t < first_ms ? t : first_ms;
        last_ms = t > last_ms ? t : last_ms;
    }
    if (say_pacing(speed, first_ms, last_ms) != 0) {
        rc = 2;
        goto out_trace;
    }
    rm_cache_client cc;
    if (rm_cc_init_router_tls(&cc, router, 10000, &tls) != 0)
        goto out_trace;
    rm_rpc_client_set_token(&cc.rpc, token);
    replay rp;
    memset(&rp, 0, sizeof rp);
    totals before = {0}, after = {0};
    if (cluster_totals(&cc, &before, &rp) != 0) {
        fprintf(stderr, "radixmesh replay: cannot reach the router at %s\n", router);
        goto out_cc;
    }
    cli_budget budget;
    cli_budget_begin(&budget, &cc);
    rp.budget = &budget;
    rp.trace = &trace;
    rp.router = router;
    rp.ns = ns;
    rp.workers = (uint32_t)concurrency;
    rp.speed = speed;
    rp.first_ms = first_ms;
    rp.token = token;
    rp.tls = &tls;
    pthread_mutex_init(&rp.mu, NULL);
    rp.start_ns = rm_now_ns();
    pthread_t *th = rm_xmalloc(sizeof *th * concurrency);
    worker *w = rm_xmalloc(sizeof *w * concurrency);
    for (uint32_t i = 0; i < concurrency; i++) {
        w[i] = (worker){&rp, i};
        pthread_create(&th[i], NULL, run_worker, &w[i]);
    }
    /* A progress line every half second while the workers run (the wait
     * only paces the display; pthread_join below is the synchronisation). */
    uint64_t last = 0;
    while (atomic_load(&rp.finished) < concurrency) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (rm_now_ns() - last > 500000000ull) {
            last = rm_now_ns();
            progress(&rp, 0);
        }
    }
    for (uint32_t i = 0; i < concurrency; i++)
        pthread_join(th[i], NULL);
    double wall = (double)(rm_now_ns() - rp.start_ns) / 1e9;
    progress(&rp, 1);
    uint64_t q = atomic_load(&rp.query), h = atomic_load(&rp.hit), done = atomic_load(&rp.done);
    uint64_t errors = atomic_load(&rp.errors);
    /* The cluster's own counters lag by a stats poll: wait (bounded) until
     * they cover our requests. */
    long long deadline = (long long)(rm_now_ns() / 1000000) + 10000;
    while (cluster_totals(&cc, &after, NULL) == 0 && after.query - before.query < q &&
           (long long)(rm_now_ns() / 1000000) < deadline)
        ;
    uint64_t cq = after.query - before.query, ch = after.hit - before.hit;
    double load_mm = max_mean(&rp, 0), work_mm = max_mean(&rp, 1);
    uint64_t work = 0;
    for (size_t i = 0; i < rp.nnodes; i++)
        work += rp.nodes[i].work;
    double rate = q ? (double)h / (double)q : 0;
    printf("replayed %" PRIu64 " requests in %.1f s (%.0f req/s), %" PRIu64 " errors%s%s\n", done,
           wall, (double)done / wall, errors, errors ? ", first: " : "",
           errors ? rp.first_error : "");
    printf("token hit rate %.4f: %" PRIu64 " of %" PRIu64 " prompt tokens came from cache "
           "(prefill saved)\n",
           rate, h, q);
    printf("cluster's own count: %" PRIu64 " hit / %" PRIu64 " query tokens -> %s\n", ch, cq,
           ch == h && cq == q ? "equal to the client's" : "differs (other traffic?)");
    if (ttft_model > 0)
        printf("estimated prefill time saved at %.0f tokens/s: %.1f s\n", ttft_model,
               (double)h / ttft_model);
    printf("requests per node (max/mean %.3f, spills %" PRIu64 "):", load_mm,
           after.spills - before.spills);
    for (size_t i = 0; i < rp.nnodes; i++)
        printf(" %s=%" PRIu64, rp.nodes[i].id, rp.nodes[i].requests);
    printf("\nwork per node, uncached prompt + reply tokens (max/mean %.3f, total %" PRIu64 "):",
           work_mm, work);
    for (size_t i = 0; i < rp.nnodes; i++)
        printf(" %s=%" PRIu64, rp.nodes[i].id, rp.nodes[i].work);
    printf("\n");
    json_t *hb = cli_budget_end(&budget, &cc);
    if (json) {
        json_t *o = json_object(), *per = json_object(), *per_work = json_object();
        for (size_t i = 0; i < rp.nnodes; i++) {
            json_object_set_new(per, rp.nodes[i].id,
                                json_integer((json_int_t)rp.nodes[i].requests));
            json_object_set_new(per_work, rp.nodes[i].id,
                                json_integer((json_int_t)rp.nodes[i].work));
        }
        json_object_set_new(o, "requests", json_integer((json_int_t)done));
        json_object_set_new(o, "errors", json_integer((json_int_t)errors));
        json_object_set_new(o, "token_hit_rate", json_real(rate));
        json_object_set_new(o, "hit_tokens", json_integer((json_int_t)h));
        json_object_set_new(o, "query_tokens", json_integer((json_int_t)q));
        json_object_set_new(o, "prefill_tokens_saved", json_integer((json_int_t)h));
        json_object_set_new(o, "cluster_hit_tokens", json_integer((json_int_t)ch));
        json_object_set_new(o, "cluster_query_tokens", json_integer((json_int_t)cq));
        json_object_set_new(o, "load_max_mean", json_real(load_mm));
        json_object_set_new(o, "per_node", per);
        json_object_set_new(o, "work_tokens", json_integer((json_int_t)work));
        json_object_set_new(o, "work_max_mean", json_real(work_mm));
        json_object_set_new(o, "per_node_work", per_work);
        json_object_set_new(o, "spills", json_integer((json_int_t)(after.spills - before.spills)));
        json_object_set_new(o, "wall_seconds", json_real(wall));
        json_object_set_new(o, "requests_per_second", json_real((double)done / wall));
        if (ttft_model > 0)
            json_object_set_new(o, "ttft_saved_seconds", json_real((double)h / ttft_model));
        if (hb)
            json_object_set(o, "hit_budget", hb);
        char *s = json_dumps(o, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(o);
    }
    json_decref(hb);
    free(th);
    free(w);
    rc = errors ? 1 : 0;
out_cc:
    rm_cc_close(&cc);
out_trace:
    rm_trace_free(&trace);
out_conn:
    rm_tls_free(&tls);
    free(token);
    return rc;
}
