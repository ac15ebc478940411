/* radixmesh-router: the cluster's front door. See router/README.md; the
 * scaffolding it shares with the node is common/daemon.h. */
#include <grpc/grpc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "dashboard.h"
#include "flags.h"
#include "gateway.h"
#include "log.h"
#include "nodes_dns.h"
#include "router.h"
#include "util.h"

/* The choices of string flags, in the order of the values they stand for
 * (rm_load_unit, rm_key_mode, rm_gateway_config.tokenize). */
static const char *const load_units[] = {"work", "requests"};
static const char *const key_modes[] = {"adaptive", "fixed"};
static const char *const tokenizers[] = {"none", "worker"};

/* What a config reload applies: checked, then tuned (--nodes, a string,
 * is kept by reload_apply itself). */
static const char *const live_flags[] = {"load-factor", "call-timeout-ms", "max-request-tokens",
                                         "nodes"};

typedef struct router_main {
    const rm_daemon *d;
    const char *id;
    rm_router *router;
    rm_nodes_dns *dns;         /* NULL with --nodes */
    rm_gateway *gw;            /* NULL without --gateway */
    uint64_t gw_prompt_tokens; /* its prompt limit: --max-request-tokens at start */
    char *nodes;               /* the static membership now (malloc'd), NULL with --nodes-dns */
    uint64_t sampled_at;
    int changed; /* membership changes of the reload being applied */
} router_main;

/* SIGHUP: the load factor is checked, and a new --nodes list applied (it
 * is checked whole first: on a bad entry nothing changes). */
static int reload_check(void *ctx, const rm_flagset *next, char *err, size_t errlen)
{
    router_main *m = ctx;
    const char *nodes = *(const char **)rm_flags_value(next, "nodes");
    double load_factor = *(double *)rm_flags_value(next, "load-factor");
    m->changed = 0;
    if (!(load_factor > 1.0)) {
        snprintf(err, errlen, "--load-factor must be > 1 (got %g)", load_factor);
        return -1;
    }
    if (rm_daemon_check_request_tokens(
            m->d, *(uint64_t *)rm_flags_value(next, "max-request-tokens"), err, errlen) != 0)
        return -1;
    if (!m->nodes && nodes) {
        snprintf(err, errlen, "--nodes: this router discovers nodes with --nodes-dns");
        return -1;
    }
    if (m->nodes && !nodes) {
        snprintf(err, errlen,
                 "--nodes: the config no longer names the members (a start "
                 "without them would refuse to run)");
        return -1;
    }
    if (m->nodes && nodes && strcmp(nodes, m->nodes) != 0) {
        m->changed = rm_router_set_static_nodes(m->router, nodes, err, errlen);
        if (m->changed < 0)
            return -1;
        free(m->nodes);
        m->nodes = rm_xstrndup(nodes, strlen(nodes));
    }
    return 0;
}

static void reload_apply(void *ctx, const rm_flagset *live, const rm_flagset *next)
{
    router_main *m = ctx;
    double load_factor = *(double *)rm_flags_value(next, "load-factor");
    uint64_t max_req = *(uint64_t *)rm_flags_value(next, "max-request-tokens");
    rm_router_set_tuning(m->router, load_factor,
                         *(uint32_t *)rm_flags_value(next, "call-timeout-ms"), max_req);
    if (m->gw && max_req != m->gw_prompt_tokens)
        rm_log(RM_LOG_WARN, "router",
               "--max-request-tokens %llu applies to gRPC requests; the gateway's prompts stay "
               "limited to %llu tokens until a restart",
               (unsigned long long)max_req, (unsigned long long)m->gw_prompt_tokens);
    rm_log(RM_LOG_INFO, "router",
           "config reloaded from %s (%d membership changes, log level %s, load factor %.2f)",
           m->d->o.config, m->changed, *(const char **)rm_flags_value(next, "log-level"),
           load_factor);
    if (m->nodes)
        *(const char **)rm_flags_value(live, "nodes") = m->nodes;
}

static void tick(void *ctx, uint64_t now_ms)
{
    router_main *m = ctx;
    if (m->dns)
        rm_nodes_dns_apply(m->dns, m->router);
    rm_router_tick(m->router, now_ms);
    if (now_ms - m->sampled_at >= 1000) {
        m->sampled_at = now_ms;
        rm_router_sample(m->router, now_ms);
    }
}

/* For --http: the router's and its gateway's metrics (the scaffold adds
 * the RPC and HTTP figures) and /api/cluster; ready with a node to route
 * to. */
static int publish(void *ctx, char **metrics, char **json)
{
    router_main *m = ctx;
    *metrics = rm_router_metrics(m->router);
    if (m->gw)
        *metrics = rm_str_join_free(*metrics, rm_gateway_metrics(m->gw, m->id));
    *json = rm_router_cluster_json(m->router);
    return rm_router_healthy_nodes(m->router) > 0;
}

static void set_serving(void *ctx, int serving)
{
    rm_router_set_serving(((router_main *)ctx)->router, serving);
}

/* The gateway's requests (streams that may run for minutes) finish before
 * the server stops: they need its thread to route and release their load. */
static int drained(void *ctx)
{
    router_main *m = ctx;
    if (!m->gw)
        return 1;
    rm_gateway_drain(m->gw);
    return !rm_gateway_active(m->gw);
}

static void stop(void *ctx)
{
    rm_gateway_stop(((router_main *)ctx)->gw);
}

/* HTTP thread: the dashboard and what the server thread published. */
static void http_handler(void *ctx, const char *path, rm_http_response *out)
{
    if (!strcmp(path, "/") || !strcmp(path, "/index.html")) {
        out->status = 200;
        out->content_type = "text/html; charset=utf-8";
        out->len = strlen(rm_dashboard_html);
        out->body = rm_xstrndup(rm_dashboard_html, out->len);
        return;
    }
    rm_http_serve_published(ctx, path, out);
}

static const rm_daemon_help help[] = {
    {"drain-timeout-ms", "then wait this long for in-flight calls"},
    {"http", "serve the dashboard (/), /api/cluster, /metrics, /healthz, /readyz on HOST:PORT"},
    {"tls-cert", "serve gRPC over TLS with this PEM certificate (also shown to TLS nodes)"},
    {"tls-ca", "PEM CA that client certificates must chain to (presented ones are verified), and "
               "for the nodes: set, node channels use TLS"},
    {"auth-token-file", "require 'authorization: Bearer <token>' from clients (health is exempt)"},
    {"config", "flags from FILE (name = value per line; the command line wins); SIGHUP re-reads it "
               "and applies --nodes, --log-level, --load-factor, --call-timeout-ms, "
               "--max-request-tokens"},
    {NULL, NULL},
};

static const rm_daemon_spec spec = {
    "router", "--listen HOST:PORT (--nodes LIST | --nodes-dns NAME:PORT)", "127.0.0.1:7000", help};

int main(int argc, char **argv)
{
    rm_router_config cfg;
    rm_router_config_defaults(&cfg);
    cfg.router_id = NULL; /* the host name unless given */
    const char *nodes = NULL, *nodes_dns = NULL, *key_mode = "adaptive", *load_unit = "work";
    const char *node_token_file = NULL, *gateway = NULL, *hit_budget = "on";
    const char *tokenize = "none";
    rm_gateway_config gwc;
    rm_gateway_config_defaults(&gwc);
    rm_breaker_config *brk = &cfg.worker_breaker;
    uint32_t dns_interval = 5000;
    const rm_flag flags[] = {
        {"router-id", RM_FLAG_AT(&cfg.router_id), "this replica's name (default: host name)", 0, 0},
        {"nodes", RM_FLAG_AT(&nodes), "static members: id=host:port,id=host:port,...", 0, 0},
        {"nodes-dns", RM_FLAG_AT(&nodes_dns),
         "members from the A records of NAME:PORT (e.g. a headless Service)", 0, 0},
        {"dns-interval-ms", RM_FLAG_AT(&dns_interval), "how often --nodes-dns is re-read", 100,
         3600000},
        {"load-unit", RM_FLAG_AT(&load_unit),
         "what load counts: work (prompt tokens a node must compute + expected reply tokens x "
         "--decode-weight), or requests (the rule before work, for comparison)",
         0, 0},
        {"decode-weight", RM_FLAG_AT(&cfg.decode_weight),
         "work of one reply token, in prompt tokens (1: the count replay and the benchmarks "
         "report as work)",
         0, 0},
        {"load-factor", RM_FLAG_AT(&cfg.load_factor),
         "bounded load: a node whose load would pass this x the average load takes no request "
         "another node can take",
         0, 0},
        {"load-floor", RM_FLAG_AT(&cfg.load_floor),
         "in average requests: nodes whose load is below this are never skipped (0: "
         "1/(load-factor - 1)^2, 100 at the default 1.1)",
         0, 0},
        {"load-half-life-ms", RM_FLAG_AT(&cfg.load_half_life_ms),
         "--load-unit requests: half-life of a node's recently routed requests (by work, the "
         "nodes' "
         "own figures halve every 30 s)",
         10, 3600000},
        {"vnodes", RM_FLAG_AT(&cfg.vnodes), "ring points per node", 1, 65536},
        {"choices", RM_FLAG_AT(&cfg.choices),
         "ring candidates peeked per request (2: go where the prefix is cached, else to the "
         "less loaded cache)",
         1, 2},
        {"key-mode", RM_FLAG_AT(&key_mode), "adaptive, or fixed (hash of the first N tokens)", 0,
         0},
        {"key-block-tokens", RM_FLAG_AT(&cfg.key_block_tokens),
         "block size of routing keys (= the nodes' --hot-block-tokens)", 1, 1u << 20},
        {"max-key-blocks", RM_FLAG_AT(&cfg.max_key_blocks),
         "keys look at most this many blocks deep (0: as deep as the nodes' hot-prefix "
         "sketches, 131,072 tokens)",
         0, 16384},
        {"hot-share", RM_FLAG_AT(&cfg.hot_share),
         "share of traffic that makes a prefix hot; 0 = max(0.02, 0.5/nodes)", 0, 0},
        {"fixed-key-tokens", RM_FLAG_AT(&cfg.fixed_key_tokens), "N for --key-mode fixed", 1,
         1u << 24},
        {"call-timeout-ms", RM_FLAG_AT(&cfg.call_timeout_ms), "deadline of each call to a node", 10,
         600000},
        {"health-interval-ms", RM_FLAG_AT(&cfg.health_interval_ms), "node health-check period", 50,
         600000},
        {"eject-after-failures", RM_FLAG_AT(&cfg.outlier.eject_after),
         "consecutive failed calls or health checks that take a node off the ring (failures "
         "while the router itself stalled do not count)",
         1, 1000},
        {"max-ejected-share", RM_FLAG_AT(&cfg.outlier.max_ejected_share),
         "at most this share of the nodes is off the ring for failures (one always may be)", 0, 0},
        {"panic-threshold", RM_FLAG_AT(&cfg.outlier.panic_threshold),
         "below this share of healthy nodes, route to every node as if healthy (0: never)", 0, 0},
        {"stats-interval", RM_FLAG_AT(&cfg.stats_interval_ms), "node Stats poll period in ms", 50,
         600000},
        {"charge-ttl-ms", RM_FLAG_AT(&cfg.charge_ttl_ms),
         "a Route's cost stays on the node chosen until the node counts it, at most this (half "
         "to all of it): its client may never call the node (0: 60 s, and never under 4 x "
         "(--call-timeout-ms + --stats-interval))",
         0, 86400000},
        {"max-request-tokens", RM_FLAG_AT(&cfg.max_request_tokens), "tokens per request at most", 1,
         1u << 26},
        {"hit-budget", RM_FLAG_AT(&hit_budget),
         "on or off: estimate what one cache of the nodes' summed pools, and an unbounded one, "
         "would hit on this router's traffic (sampled, <= 1 MiB), in ClusterStats, /metrics, "
         "/api/cluster",
         0, 0},
        {"node-token-file", RM_FLAG_AT(&node_token_file),
         "token presented to the nodes (default: --auth-token-file's)", 0, 0},
        {"gateway", RM_FLAG_AT(&gateway),
         "serve an OpenAI-compatible HTTP gateway to the nodes' workers on HOST:PORT", 0, 0},
        {"gateway-max-body-bytes", RM_FLAG_AT(&gwc.max_body_bytes), "larger request bodies get 413",
         1, 1u << 30},
        {"gateway-max-header-bytes", RM_FLAG_AT(&gwc.max_header_bytes),
         "larger request heads get 431 (at most 80 KiB, http-parser's own bound)", 256, 80 << 10},
        {"gateway-connect-timeout-ms", RM_FLAG_AT(&gwc.connect_timeout_ms),
         "connecting to a worker", 10, 600000},
        {"gateway-first-byte-timeout-ms", RM_FLAG_AT(&gwc.first_byte_timeout_ms),
         "request sent -> the worker's response head, at most (504 or once more elsewhere; "
         "counts as the worker's failure). A non-streamed completion's head comes when it is "
         "done: raise this for long ones",
         10, 86400000},
        {"gateway-upstream-timeout-ms", RM_FLAG_AT(&gwc.upstream_timeout_ms),
         "worker silence between bytes once its response has begun (not counted while a slow "
         "client pauses the stream); the client's connection is cut",
         10, 86400000},
        {"gateway-client-timeout-ms", RM_FLAG_AT(&gwc.client_timeout_ms),
         "time to send a request (408), and idle keep-alive lifetime", 10, 86400000},
        {"gateway-max-connections", RM_FLAG_AT(&gwc.max_connections),
         "open client connections at most (more get 503 and are closed)", 1, 1000000},
        {"gateway-max-buffered-bytes", RM_FLAG_AT(&gwc.max_buffered_bytes),
         "request bytes held in all (bodies, pipelined read-ahead); beyond, 503 with "
         "Retry-After (>= --gateway-max-body-bytes)",
         1u << 20, (uint64_t)1 << 40},
        {"gateway-tokenize", RM_FLAG_AT(&tokenize),
         "none: route text prompts on pseudo-tokens; worker: on the engine's token ids, asked "
         "of a worker's POST /tokenize first (the namespace of nodes with --worker-kv-events)",
         0, 0},
        {"gateway-tokenize-timeout-ms", RM_FLAG_AT(&gwc.tokenize_timeout_ms),
         "with --gateway-tokenize worker: how long to wait for /tokenize before routing on "
         "pseudo-tokens",
         1, 600000},
        {"gateway-breaker-failures", RM_FLAG_AT(&brk->failures),
         "consecutive failed requests (no connection, timeout, broken response) that take a "
         "worker out of gateway routing",
         1, 1000},
        {"gateway-breaker-cooldown-ms", RM_FLAG_AT(&brk->cooldown_ms),
         "then one trial request after this long; a failed trial doubles it (up to 32x), an "
         "answered one puts the worker back",
         100, 3600000},
        {"worker-scrape-interval-ms", RM_FLAG_AT(&gwc.scrape_interval_ms),
         "how often workers' /metrics are read (0: never)", 0, 3600000},
    };
    rm_daemon d;
    rm_daemon_init(&d, &spec, flags, RM_ARRAY_LEN(flags), argc, argv);
    const rm_flagset *fs = &d.fs;
    if (!nodes == !nodes_dns)
        rm_flags_fail(fs, "give exactly one of --nodes and --nodes-dns");
    if (!(cfg.load_factor > 1.0))
        rm_flags_fail(fs, "--load-factor must be > 1 (got %g)", cfg.load_factor);
    if (!(cfg.load_floor >= 0))
        rm_flags_fail(fs, "--load-floor must be >= 0 (got %g)", cfg.load_floor);
    if (!(cfg.decode_weight >= 0 && cfg.decode_weight <= 1e6))
        rm_flags_fail(fs, "--decode-weight must be within [0, 1e6] (got %g)", cfg.decode_weight);
    cfg.load_unit = (rm_load_unit)rm_flags_choice(fs, "load-unit", load_unit, load_units,
                                                  RM_ARRAY_LEN(load_units));
    if (cfg.hot_share < 0 || cfg.hot_share > 1)
        rm_flags_fail(fs, "--hot-share must be within [0, 1] (got %g)", cfg.hot_share);
    if (!(cfg.outlier.max_ejected_share >= 0 && cfg.outlier.max_ejected_share <= 1))
        rm_flags_fail(fs, "--max-ejected-share must be within [0, 1] (got %g)",
                      cfg.outlier.max_ejected_share);
    if (!(cfg.outlier.panic_threshold >= 0 && cfg.outlier.panic_threshold <= 1))
        rm_flags_fail(fs, "--panic-threshold must be within [0, 1] (got %g)",
                      cfg.outlier.panic_threshold);
    cfg.key_mode =
        (rm_key_mode)rm_flags_choice(fs, "key-mode", key_mode, key_modes, RM_ARRAY_LEN(key_modes));
    cfg.hit_budget = rm_flags_on_off(fs, "hit-budget", hit_budget);
    uint64_t ttl_floor = rm_router_charge_ttl_floor(&cfg);
    if (cfg.charge_ttl_ms && cfg.charge_ttl_ms < ttl_floor)
        rm_flags_fail(fs,
                      "--charge-ttl-ms must be at least 4 x (--call-timeout-ms + "
                      "--stats-interval) = %llu (got %u)",
                      (unsigned long long)ttl_floor, cfg.charge_ttl_ms);
    char gw_host[256];
    int gw_port;
    if (gateway && rm_parse_hostport(gateway, gw_host, sizeof gw_host, &gw_port))
        rm_flags_fail(fs, "--gateway: expected HOST:PORT, got '%s'", gateway);
    if (gwc.max_buffered_bytes < gwc.max_body_bytes)
        rm_flags_fail(fs,
                      "--gateway-max-buffered-bytes (%zu) must be at least "
                      "--gateway-max-body-bytes (%zu)",
                      gwc.max_buffered_bytes, gwc.max_body_bytes);
    gwc.listen = gateway;
    gwc.tokenize =
        rm_flags_choice(fs, "gateway-tokenize", tokenize, tokenizers, RM_ARRAY_LEN(tokenizers));
    gwc.max_prompt_tokens = cfg.max_request_tokens;
    brk->max_cooldown_ms = brk->cooldown_ms * 32;
    uint64_t gw_max;
    if (rm_daemon_prepare(&d, gateway ? gwc.max_connections : 0, &gw_max) != 0)
        return 1;
    if (gateway)
        gwc.max_connections = (uint32_t)gw_max;
    cfg.router_id = rm_daemon_id(&d, cfg.router_id, "router");
    cfg.node_tls = &d.tls;
    router_main m = {.d = &d, .id = cfg.router_id, .router = rm_router_create(&cfg)};
    char err[512];
    if (nodes && rm_router_set_static_nodes(m.router, nodes, err, sizeof err) < 0) {
        rm_router_destroy(m.router);
        grpc_shutdown();
        rm_flags_fail(fs, "%s", err);
    }
    if (nodes_dns && !(m.dns = rm_nodes_dns_start(nodes_dns, dns_interval))) {
        rm_router_destroy(m.router);
        grpc_shutdown();
        rm_flags_fail(fs, "--nodes-dns: expected NAME:PORT, got '%s'", nodes_dns);
    }
    rm_rpc_server *srv = rm_daemon_server(&d, cfg.max_request_tokens * 5 + (1u << 20), 1u << 20);
    const char *nt = node_token_file ? node_token_file : d.o.token_file;
    if (nt) {
        char *t = rm_daemon_read_token(&d, nt, "--node-token-file");
        rm_rpc_server_set_client_token(srv, t);
        free(t);
    }
    gwc.auth_token = d.o.http_cfg.auth_token; /* --http-auth: the gateway's too */
    int bound = rm_daemon_listen(&d, rm_router_register(m.router, srv));
    if (bound < 0)
        return 1;
    rm_log(RM_LOG_INFO, "router",
           "router %s listening on %s:%d (%s keys, load in %s, load factor %.2f)", cfg.router_id,
           d.host, bound, key_mode, load_unit, cfg.load_factor);
    m.nodes = nodes ? rm_xstrndup(nodes, strlen(nodes)) : NULL;
    static const rm_daemon_hooks hooks = {
        .tick = tick,
        .reload = {reload_check, reload_apply, live_flags, RM_ARRAY_LEN(live_flags)},
        .publish = publish,
        .set_serving = set_serving,
        .drained = drained,
        .stop = stop,
        .http = http_handler,
    };
    if (rm_daemon_start(&d, &hooks, &m, cfg.router_id) != 0)
        return 1;
    if (gateway) {
        int gp;
        m.gw_prompt_tokens = gwc.max_prompt_tokens;
        if (!(m.gw = rm_gateway_start(&gwc, m.router, &gp, err, sizeof err))) {
            rm_log(RM_LOG_ERROR, "router", "--gateway: %s", err);
            return 1;
        }
        rm_log(RM_LOG_INFO, "router", "OpenAI-compatible gateway on http://%s:%d/", gw_host, gp);
        printf("GATEWAY %s:%d\n", gw_host, gp);
        fflush(stdout);
    }
    rm_daemon_run(&d);
    rm_nodes_dns_stop(m.dns);
    rm_router_destroy(m.router);
    free(m.nodes);
    return rm_daemon_exit(&d);
}
