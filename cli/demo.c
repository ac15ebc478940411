/* radixmesh demo / stats: the classic prefix-sharing scenarios against a
 * live node, using the client cycle Match(lease) -> Insert(lease) -> Release. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache_client.h"
#include "tls.h"
#include "cli.h"
#include "flags.h"
#include "hit_budget.h"
#include "util.h"

/* Llama-3-8B: 32 layers x 8 KV heads x 128 dims x (K+V) x 2 bytes (bf16). */
#define KV_BYTES_PER_TOKEN (32ull * 8 * 128 * 2 * 2)

typedef struct scenario_stats {
    uint64_t requests, query_tokens, hit_tokens, inserted_tokens;
} scenario_stats;

/* Deterministic pseudo-token ids: the same (stream, index) -> the same id. */
static void fill(uint32_t *out, size_t n, uint64_t stream)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (uint32_t)(rm_mix64(stream * 1000003ull + i) % 128000);
}

static int one_request(rm_cache_client *cc, const char *ns, const uint32_t *tok, size_t n,
                       scenario_stats *st)
{
    char msg[256];
    rm_cc_match_reply m;
    int rc = rm_cc_match(cc, ns, tok, n, 1, 0, &m, msg, sizeof msg);
    if (rc) {
        fprintf(stderr, "radixmesh demo: Match failed (%d): %s\n", rc, msg);
        return -1;
    }
    /* (An inference server would now prefill tokens [matched, n) only.) */
    rm_cc_insert_reply ir;
    rc = rm_cc_insert(cc, ns, tok, n, m.lease_id, NULL, &ir, msg, sizeof msg);
    if (rc) {
        fprintf(stderr, "radixmesh demo: Insert failed (%d): %s\n", rc, msg);
        return -1;
    }
    rc = rm_cc_release(cc, m.lease_id, NULL, msg, sizeof msg);
    if (rc) {
        fprintf(stderr, "radixmesh demo: Release failed (%d): %s\n", rc, msg);
        return -1;
    }
    st->requests++;
    st->query_tokens += n;
    st->hit_tokens += m.matched_tokens;
    st->inserted_tokens += ir.inserted_tokens;
    return 0;
}

static void report(const char *name, const scenario_stats *s)
{
    double gib = 1024.0 * 1024 * 1024;
    double without = (double)s->query_tokens * KV_BYTES_PER_TOKEN / gib;
    double with = (double)s->inserted_tokens * KV_BYTES_PER_TOKEN / gib;
    printf("%-28s %5" PRIu64 " req %8" PRIu64 " tokens  hit rate %5.1f%%  KV %6.2f GiB -> %5.2f "
           "GiB (saves %4.1f%%)\n",
           name, s->requests, s->query_tokens,
           s->query_tokens ? 100.0 * (double)s->hit_tokens / (double)s->query_tokens : 0.0, without,
           with, without > 0 ? 100.0 * (1 - with / without) : 0.0);
}

static void add(scenario_stats *total, const scenario_stats *s)
{
    total->requests += s->requests;
    total->query_tokens += s->query_tokens;
    total->hit_tokens += s->hit_tokens;
    total->inserted_tokens += s->inserted_tokens;
}

int rm_cmd_demo(int argc, char **argv)
{
    const char *node = "127.0.0.1:7001";
    uint64_t users = 32;
    const rm_flag flags[] = {
        {"node", RM_FLAG_AT(&node), "cache node address HOST:PORT", 0, 0},
        {"users", RM_FLAG_AT(&users), "requests per scenario (scale)", 1, 100000},
    };
    rm_flagset fs = {"radixmesh demo", "--node HOST:PORT", "RADIXMESH", flags,
                     (int)RM_ARRAY_LEN(flags)};
    rm_flags_parse(&fs, argc, argv, NULL, 0, NULL);
    rm_cache_client cc;
    if (rm_cc_init(&cc, node, 10000) != 0) {
        fprintf(stderr, "radixmesh demo: cannot create a channel to %s\n", node);
        return 1;
    }
    enum { SYS = 1024, QUESTION = 64, SHOT = 768, TAIL = 100, REPLY = 64, TURN = 48 };
    uint32_t *tok = rm_xmalloc(sizeof(uint32_t) * 65536);
    scenario_stats s1 = {0}, s2 = {0}, s3 = {0}, total = {0};
    int rc = 0;
    printf("radixmesh demo against node %s (KV sized as Llama-3-8B, %llu KiB/token)\n\n", node,
           KV_BYTES_PER_TOKEN / 1024);

    /* 1. One system prompt shared by every request. */
    for (uint64_t u = 0; u < users && !rc; u++) {
        fill(tok, SYS, 1);
        fill(tok + SYS, QUESTION, 1000 + u);
        rc = one_request(&cc, "demo", tok, SYS + QUESTION, &s1);
    }
    if (!rc)
        report("shared system prompt", &s1);

    /* 2. Four few-shot prompts, each reused by a quarter of the requests. */
    for (uint64_t u = 0; u < users && !rc; u++) {
        fill(tok, SHOT, 2 + u % 4);
        fill(tok + SHOT, TAIL, 2000 + u);
        rc = one_request(&cc, "demo", tok, SHOT + TAIL, &s2);
    }
    if (!rc)
        report("few-shot examples (4 sets)", &s2);

    /* 3. Multi-turn chats: each turn resends the whole conversation. */
    uint64_t chats = users / 8 ? users / 8 : 1;
    for (uint64_t c = 0; c < chats && !rc; c++) {
        size_t len = 0;
        fill(tok, SYS, 1); /* chats open with the shared system prompt too */
        len = SYS;
        for (int turn = 0; turn < 8 && !rc; turn++) {
            fill(tok + len, TURN, 3000 + c * 100 + (uint64_t)turn);
            len += TURN;
            rc = one_request(&cc, "demo", tok, len, &s3);
            fill(tok + len, REPLY, 5000 + c * 100 + (uint64_t)turn);
            len += REPLY;
        }
    }
    if (!rc)
        report("multi-turn chat", &s3);

    if (!rc) {
        add(&total, &s1);
        add(&total, &s2);
        add(&total, &s3);
        printf("\n");
        report("all scenarios", &total);
        char msg[256];
        radixmesh_v1_NodeStats ns;
        if (rm_cc_stats(&cc, &ns, msg, sizeof msg) == 0) {
            printf("node %s: hit tokens %" PRIu64 " / query tokens %" PRIu64 " = %.1f%%, pool "
                   "%" PRIu64 "/%" PRIu64 " pages used, %" PRIu64 " leases open\n",
                   ns.node_id, ns.hit_tokens_total, ns.query_tokens_total,
                   ns.query_tokens_total
                       ? 100.0 * (double)ns.hit_tokens_total / (double)ns.query_tokens_total
                       : 0.0,
                   ns.pool_pages - ns.free_pages, ns.pool_pages, ns.active_leases);
            pb_release(radixmesh_v1_NodeStats_fields, &ns);
        } else {
            fprintf(stderr, "radixmesh demo: Stats failed: %s\n", msg);
            rc = -1;
        }
    }
    free(tok);
    rm_cc_close(&cc);
    return rc ? 1 : 0;
}

static void print_node_stats(const radixmesh_v1_NodeStats *s)
{
    printf("node_id %s\nversion %s\nserving %d\nmatch_requests_total %" PRIu64
           "\nquery_tokens_total %" PRIu64 "\nhit_tokens_total %" PRIu64
           "\ninserted_tokens_total %" PRIu64 "\nevicted_tokens_total %" PRIu64
           "\ndropped_tokens_total %" PRIu64 "\npage_tokens %u\npool_pages %" PRIu64
           "\nfree_pages %" PRIu64 "\nevictable_pages %" PRIu64 "\nprotected_pages %" PRIu64
           "\nactive_leases %" PRIu64 "\ntree_nodes %" PRIu64 "\nmetadata_bytes %" PRIu64 "\n",
           s->node_id, s->version, s->serving, s->match_requests_total, s->query_tokens_total,
           s->hit_tokens_total, s->inserted_tokens_total, s->evicted_tokens_total,
           s->dropped_tokens_total, s->page_tokens, s->pool_pages, s->free_pages,
           s->evictable_pages, s->protected_pages, s->active_leases, s->tree_nodes,
           s->metadata_bytes);
    cli_budget_print_node(s);
}

static double pct(uint64_t a, uint64_t b)
{
    return b ? 100.0 * (double)a / (double)b : 0.0;
}

/* The cluster table: one line of totals, one row per node. */
static int print_cluster(rm_cache_client *cc)
{
    rm_cc_cluster c;
    char msg[256];
    if (rm_cc_cluster_stats(cc, &c, msg, sizeof msg) != 0) {
        fprintf(stderr, "radixmesh stats: %s\n", msg);
        rm_cc_cluster_free(&c);
        return -1;
    }
    const radixmesh_v1_ClusterStats *s = &c.cs;
    printf("cluster via router %s: %u/%zu nodes healthy, hit rate %.1f%% (%" PRIu64 " / %" PRIu64
           " tokens)\nrouted %" PRIu64 ", spills %" PRIu64 ", failovers %" PRIu64
           ", hot prefixes %u (share >= %.3f)\n\n",
           s->router_id, s->healthy_nodes, c.nnodes, 100.0 * s->hit_rate, s->hit_tokens_total,
           s->query_tokens_total, s->routed_requests_total, s->spills_total, s->failovers_total,
           s->hot_prefixes, s->hot_share);
    cli_budget_print_cluster(s);
    /* LOAD is in the router's unit: work tokens (decayed), or requests. */
    printf("%-16s %-6s %7s %10s %10s %9s %7s %12s %12s %7s %10s\n", "NODE", "HEALTH", "HIT",
           "MATCHES", "ROUTED", "POOL", "USED", "EVICTED TOK", "DROPPED TOK", "LEASES", "LOAD");
    for (size_t i = 0; i < c.nnodes; i++) {
        const radixmesh_v1_NodeStats *n = &c.nodes[i];
        uint64_t used = n->pool_pages - n->free_pages;
        printf("%-16.16s %-6s %6.1f%% %10" PRIu64 " %10" PRIu64 " %9" PRIu64 " %6.1f%% %12" PRIu64
               " %12" PRIu64 " %7" PRIu64 " %10.1f\n",
               n->node_id, n->healthy ? "up" : "DOWN",
               pct(n->hit_tokens_total, n->query_tokens_total), n->match_requests_total,
               n->routed_requests, n->pool_pages, pct(used, n->pool_pages), n->evicted_tokens_total,
               n->dropped_tokens_total, n->active_leases, n->load);
    }
    rm_cc_cluster_free(&c);
    return 0;
}

int rm_cmd_stats(int argc, char **argv)
{
    const char *node = NULL, *router = NULL;
    rm_cli_conn conn = {0};
    int watch = 0;
    uint64_t interval = 1000;
    const rm_flag flags[] = {
        {"node", RM_FLAG_AT(&node), "a cache node's address HOST:PORT", 0, 0},
        {"router", RM_FLAG_AT(&router), "a router's address HOST:PORT (the cluster table)", 0, 0},
        {"watch", RM_FLAG_AT(&watch), "refresh the table in place until interrupted", 0, 0},
        {"interval-ms", RM_FLAG_AT(&interval), "refresh period with --watch", 100, 3600000},
        RM_CLI_CONN_FLAGS(conn),
    };
    rm_flagset fs = {"radixmesh stats", "(--router HOST:PORT [--watch] | --node HOST:PORT)",
                     "RADIXMESH", flags, (int)RM_ARRAY_LEN(flags)};
    rm_flags_parse(&fs, argc, argv, NULL, 0, NULL);
    if (!node == !router)
        rm_flags_fail(&fs, "give exactly one of --node and --router");
    if (watch && !router)
        rm_flags_fail(&fs, "--watch needs --router");
    rm_cache_client cc;
    char *token;
    rm_tls tls;
    rm_cli_conn_load(&conn, &fs, &tls, &token);
    int init = router ? rm_cc_init_router_tls(&cc, router, 5000, &tls)
                      : rm_cc_init_tls(&cc, node, 5000, &tls);
    rm_tls_free(&tls);
    if (init != 0)
        return 1;
    rm_rpc_client_set_token(&cc.rpc, token);
    free(token);
    int rc = 0;
    if (node) {
        char msg[256];
        radixmesh_v1_NodeStats s;
        if (rm_cc_stats(&cc, &s, msg, sizeof msg) != 0) {
            fprintf(stderr, "radixmesh stats: %s: %s\n", node, msg);
            rc = 1;
        } else {
            print_node_stats(&s);
        }
        pb_release(radixmesh_v1_NodeStats_fields, &s);
    } else {
        do {
            if (watch)
                printf("\033[H\033[2J"); /* redraw in place */
            if (print_cluster(&cc) != 0) {
                rc = 1;
                break;
            }
            fflush(stdout);
            if (watch) {
                struct timespec ts = {(time_t)(interval / 1000), (long)(interval % 1000) * 1000000};
                nanosleep(&ts, NULL); /* the refresh period */
            }
        } while (watch);
    }
    rm_cc_close(&cc);
    return rc;
}
