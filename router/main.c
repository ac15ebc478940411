/* radixmesh-router: the cluster's front door. See router/README.md. */
#include <grpc/grpc.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accept_probe.h"
#include "dashboard.h"
#include "fdbudget.h"
#include "flags.h"
#include "gateway.h"
#include "http.h"
#include "log.h"
#include "router.h"
#include "rpc_client.h"
#include "rpc_server.h"
#include "util.h"

static volatile int got_term, got_hup;

/* --nodes-dns: a resolver thread re-reads the A records; the server thread
 * picks up each new list in its tick (getaddrinfo blocks, the server loop
 * must not). */
typedef struct dns_state {
    char host[256];
    int port;
    uint32_t interval_ms;
    pthread_mutex_t mu;
    char **addrs; /* latest list, "ip:port" */
    size_t naddrs;
    uint64_t generation, applied;
    int stop; /* set by the main thread: atomic accesses only */
} dns_state;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void *dns_loop(void *p)
{
    dns_state *d = p;
    while (!__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE)) {
        struct addrinfo hints = {0}, *res = NULL;
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        char **list = NULL;
        size_t n = 0;
        if (getaddrinfo(d->host, NULL, &hints, &res) == 0) {
            for (struct addrinfo *a = res; a; a = a->ai_next) {
                char ip[64];
                if (getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof ip, NULL, 0, NI_NUMERICHOST))
                    continue;
                char buf[96];
                snprintf(buf, sizeof buf, "%s:%d", ip, d->port);
                int dup = 0;
                for (size_t i = 0; i < n; i++)
                    dup |= !strcmp(list[i], buf);
                if (dup)
                    continue;
                list = rm_xrealloc(list, sizeof *list * (n + 1));
                list[n++] = rm_xstrndup(buf, strlen(buf));
            }
            freeaddrinfo(res);
            if (n)
                qsort(list, n, sizeof *list, cmp_str);
            pthread_mutex_lock(&d->mu);
            for (size_t i = 0; i < d->naddrs; i++)
                free(d->addrs[i]);
            free(d->addrs);
            d->addrs = list;
            d->naddrs = n;
            d->generation++;
            pthread_mutex_unlock(&d->mu);
        } else {
            rm_log(RM_LOG_WARN, "router", "cannot resolve %s", d->host);
        }
        for (uint32_t waited = 0;
             waited < d->interval_ms && !__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE); waited += 100)
            usleep(100 * 1000); /* a resolver's pacing, not synchronisation */
    }
    return NULL;
}

typedef struct daemon_state {
    rm_rpc_server *srv;
    rm_published *pub; /* NULL without --http */
    uint64_t published_at, sampled_at;
    rm_router *router;
    const char *router_id;
    dns_state *dns;
    char **known; /* addresses currently in the membership (DNS mode) */
    size_t nknown;
    uint64_t shutdown_delay_ms, term_at, drain_timeout_ms;
    rm_gateway *gw; /* NULL without --gateway */
    /* Config reloads (SIGHUP): the live flags and the command line that
     * keeps winning over the file. */
    const rm_flagset *fs;
    const char *config;
    int argc;
    char **argv;
    char log_level[16];
    char *nodes;            /* the static membership now (malloc'd), NULL with --nodes-dns */
    rm_http_server *hs;     /* NULL without --http */
    rm_accept_probe *probe; /* is gRPC still accepting? NULL: not watched */
    int accepting;
} daemon_state;

/* SIGHUP: re-reads --config and applies what can change while serving: the
 * static node list, log level, load factor, call timeout, request limit. An
 * invalid file changes nothing. */
static void reload(daemon_state *d)
{
    rm_flagset next;
    char *block, err[512];
    if (rm_flags_reload_logged(d->fs, d->config, d->argc, d->argv, &next, &block, "router"))
        return;
    const char *lvl_name = *(const char **)rm_flags_value(&next, "log-level");
    const char *nodes = *(const char **)rm_flags_value(&next, "nodes");
    double load_factor = *(double *)rm_flags_value(&next, "load-factor");
    uint32_t timeout = *(uint32_t *)rm_flags_value(&next, "call-timeout-ms");
    uint64_t max_req = *(uint64_t *)rm_flags_value(&next, "max-request-tokens");
    rm_log_level lvl;
    err[0] = '\0';
    if (rm_log_parse_level(lvl_name, &lvl))
        snprintf(err, sizeof err, "--log-level: expected debug, info, warn or error, got '%s'",
                 lvl_name);
    else if (!(load_factor > 1.0))
        snprintf(err, sizeof err, "--load-factor must be > 1 (got %g)", load_factor);
    else if (!d->nodes && nodes)
        snprintf(err, sizeof err, "--nodes: this router discovers nodes with --nodes-dns");
    int changed = 0;
    if (!err[0] && d->nodes && nodes && strcmp(nodes, d->nodes) != 0) {
        changed = rm_router_set_static_nodes(d->router, nodes, err, sizeof err);
        if (changed >= 0) {
            free(d->nodes);
            d->nodes = rm_xstrndup(nodes, strlen(nodes));
        }
    }
    if (err[0]) {
        rm_log(RM_LOG_ERROR, "router", "config reload rejected, keeping the old one: %s", err);
    } else {
        rm_log_set_level(lvl);
        rm_router_set_tuning(d->router, load_factor, timeout, max_req);
        rm_log(RM_LOG_INFO, "router",
               "config reloaded from %s (%d membership changes, log level %s, load factor %.2f)",
               d->config, changed, lvl_name, load_factor);
        static const char *const live[] = {"load-factor", "call-timeout-ms", "max-request-tokens"};
        rm_flags_keep_str(d->fs, &next, "log-level", d->log_level, sizeof d->log_level);
        if (d->nodes)
            *(const char **)rm_flags_value(d->fs, "nodes") = d->nodes;
        rm_flags_adopt(d->fs, &next, live, RM_ARRAY_LEN(live), d->config, "router");
    }
    rm_flags_scratch_free(&next);
    free(block);
}

static void apply_dns(daemon_state *d)
{
    dns_state *dns = d->dns;
    pthread_mutex_lock(&dns->mu);
    if (dns->generation == dns->applied) {
        pthread_mutex_unlock(&dns->mu);
        return;
    }
    dns->applied = dns->generation;
    for (size_t i = 0; i < dns->naddrs; i++) {
        int have = 0;
        for (size_t k = 0; k < d->nknown; k++)
            have |= !strcmp(d->known[k], dns->addrs[i]);
        if (!have && rm_router_add_node(d->router, NULL, dns->addrs[i]) == 0)
            rm_log(RM_LOG_INFO, "router", "discovered node address %s", dns->addrs[i]);
    }
    for (size_t k = 0; k < d->nknown; k++) {
        int still = 0;
        for (size_t i = 0; i < dns->naddrs; i++)
            still |= !strcmp(d->known[k], dns->addrs[i]);
        if (!still)
            rm_router_remove_node(d->router, d->known[k]);
        free(d->known[k]);
    }
    free(d->known);
    d->known = rm_xmalloc(sizeof *d->known * (dns->naddrs + 1));
    d->nknown = dns->naddrs;
    for (size_t i = 0; i < dns->naddrs; i++)
        d->known[i] = rm_xstrndup(dns->addrs[i], strlen(dns->addrs[i]));
    pthread_mutex_unlock(&dns->mu);
}

/* HTTP thread: the dashboard and what the owner thread published. */
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

static void publish(daemon_state *d)
{
    char labels[300];
    snprintf(labels, sizeof labels, "router=\"%s\"", d->router_id);
    char *metrics =
        rm_str_join_free(rm_router_metrics(d->router), rm_rpc_server_metrics(d->srv, labels));
    if (d->gw)
        metrics = rm_str_join_free(metrics, rm_gateway_metrics(d->gw, d->router_id));
    metrics = rm_str_join_free(metrics, rm_http_metrics(d->hs, labels));
    rm_published_set(d->pub, metrics, rm_router_cluster_json(d->router),
                     !got_term && rm_router_healthy_nodes(d->router) > 0 && d->accepting);
}

static int tick(void *ctx, uint64_t now_ms)
{
    daemon_state *d = ctx;
    if (got_hup) {
        got_hup = 0;
        reload(d);
    }
    if (d->dns)
        apply_dns(d);
    rm_router_tick(d->router, now_ms);
    if (!got_term) {
        d->accepting = rm_accept_probe_tick(d->probe, now_ms);
    } else if (d->probe) {
        /* The listener goes away on purpose now; and gRPC's shutdown waits
         * for every connection, the probe's silent one included. */
        rm_accept_probe_destroy(d->probe);
        d->probe = NULL;
    }
    if (now_ms - d->sampled_at >= 1000) {
        d->sampled_at = now_ms;
        rm_router_sample(d->router, now_ms);
    }
    if (d->pub && (now_ms - d->published_at >= 500 || got_term)) {
        d->published_at = now_ms;
        publish(d);
    }
    if (got_term && !d->term_at) {
        d->term_at = now_ms;
        rm_router_set_serving(d->router, 0);
        rm_log(RM_LOG_INFO, "router", "SIGTERM: health NOT_SERVING, draining in %llu ms",
               (unsigned long long)d->shutdown_delay_ms);
    }
    if (!d->term_at || now_ms - d->term_at < d->shutdown_delay_ms)
        return 0;
    /* The gateway's requests (streams that may run for minutes) finish
     * first: they need this thread to route and to release their load. */
    if (d->gw) {
        rm_gateway_drain(d->gw);
        if (rm_gateway_active(d->gw) &&
            now_ms - d->term_at < d->shutdown_delay_ms + d->drain_timeout_ms)
            return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    rm_router_config cfg;
    rm_router_config_defaults(&cfg);
    cfg.router_id = NULL; /* the host name unless given */
    const char *listen = "127.0.0.1:7000", *nodes = NULL, *nodes_dns = NULL;
    const char *key_mode = "adaptive", *log_level = "info", *http = NULL;
    const char *token_file = NULL, *node_token_file = NULL;
    const char *tls_cert = NULL, *tls_key = NULL, *tls_ca = NULL, *gateway = NULL;
    const char *config = NULL;
    int require_client_cert = 0, http_auth = 0;
    rm_http_config hc;
    rm_http_config_defaults(&hc);
    rm_gateway_config gwc;
    rm_gateway_config_defaults(&gwc);
    rm_breaker_config *brk = &cfg.worker_breaker;
    uint32_t dns_interval = 5000, shutdown_delay = 1000, drain_timeout = 10000, max_streams = 0;
    const rm_flag flags[] = {
        {"listen", RM_FLAG_STR, &listen, "gRPC address HOST:PORT (port 0: any free port)", 0, 0},
        {"router-id", RM_FLAG_STR, &cfg.router_id, "this replica's name (default: host name)", 0,
         0},
        {"nodes", RM_FLAG_STR, &nodes, "static members: id=host:port,id=host:port,...", 0, 0},
        {"nodes-dns", RM_FLAG_STR, &nodes_dns,
         "members from the A records of NAME:PORT (e.g. a headless Service)", 0, 0},
        {"dns-interval-ms", RM_FLAG_U32, &dns_interval, "how often --nodes-dns is re-read", 100,
         3600000},
        {"load-factor", RM_FLAG_DOUBLE, &cfg.load_factor,
         "bounded load: skip nodes above this x the average load", 0, 0},
        {"load-floor", RM_FLAG_DOUBLE, &cfg.load_floor,
         "nodes below this load (in-flight + recent requests) are never skipped", 0, 0},
        {"load-half-life-ms", RM_FLAG_U32, &cfg.load_half_life_ms,
         "half-life of the 'recent routed requests' part of a node's load", 10, 600000},
        {"vnodes", RM_FLAG_U32, &cfg.vnodes, "ring points per node", 1, 65536},
        {"choices", RM_FLAG_U32, &cfg.choices,
         "ring candidates peeked per request (2: go where the prefix is cached, else to the "
         "less loaded cache)",
         1, 2},
        {"key-mode", RM_FLAG_STR, &key_mode, "adaptive, or fixed (hash of the first N tokens)", 0,
         0},
        {"key-block-tokens", RM_FLAG_U32, &cfg.key_block_tokens,
         "block size of routing keys (= the nodes' --hot-block-tokens)", 1, 1u << 20},
        {"max-key-blocks", RM_FLAG_U32, &cfg.max_key_blocks,
         "keys look at most this many blocks deep", 1, 1024},
        {"hot-share", RM_FLAG_DOUBLE, &cfg.hot_share,
         "share of traffic that makes a prefix hot; 0 = max(0.02, 0.5/nodes)", 0, 0},
        {"fixed-key-tokens", RM_FLAG_U32, &cfg.fixed_key_tokens, "N for --key-mode fixed", 1,
         1u << 24},
        {"call-timeout-ms", RM_FLAG_U32, &cfg.call_timeout_ms, "deadline of each call to a node",
         10, 600000},
        {"health-interval-ms", RM_FLAG_U32, &cfg.health_interval_ms, "node health-check period", 50,
         600000},
        {"eject-after-failures", RM_FLAG_U32, &cfg.outlier.eject_after,
         "consecutive failed calls or health checks that take a node off the ring (failures "
         "while the router itself stalled do not count)",
         1, 1000},
        {"max-ejected-share", RM_FLAG_DOUBLE, &cfg.outlier.max_ejected_share,
         "at most this share of the nodes is off the ring for failures (one always may be)", 0, 0},
        {"panic-threshold", RM_FLAG_DOUBLE, &cfg.outlier.panic_threshold,
         "below this share of healthy nodes, route to every node as if healthy (0: never)", 0, 0},
        {"stats-interval", RM_FLAG_U32, &cfg.stats_interval_ms, "node Stats poll period in ms", 50,
         600000},
        {"max-request-tokens", RM_FLAG_U64, &cfg.max_request_tokens, "tokens per request at most",
         1, 1u << 26},
        {"max-concurrent-streams", RM_FLAG_U32, &max_streams,
         "calls in progress per client connection at most (0: gRPC's default)", 0, INT32_MAX},
        {"shutdown-delay-ms", RM_FLAG_U32, &shutdown_delay,
         "on SIGTERM, report NOT_SERVING this long before refusing new calls", 0, 600000},
        {"drain-timeout-ms", RM_FLAG_U32, &drain_timeout, "then wait this long for in-flight calls",
         0, 600000},
        {"http", RM_FLAG_STR, &http,
         "serve the dashboard (/), /api/cluster, /metrics, /healthz, /readyz on HOST:PORT", 0, 0},
        RM_HTTP_FLAGS(hc, http_auth),
        {"tls-cert", RM_FLAG_STR, &tls_cert,
         "serve gRPC over TLS with this PEM certificate (also shown to TLS nodes)", 0, 0},
        {"tls-key", RM_FLAG_STR, &tls_key, "PEM private key of --tls-cert", 0, 0},
        {"tls-ca", RM_FLAG_STR, &tls_ca,
         "PEM CA that client certificates must chain to (presented ones are verified), and for "
         "the nodes: set, node channels use TLS",
         0, 0},
        {"require-client-cert", RM_FLAG_BOOL, &require_client_cert,
         "mTLS: refuse clients without a certificate signed by --tls-ca", 0, 0},
        {"auth-token-file", RM_FLAG_STR, &token_file,
         "require 'authorization: Bearer <token>' from clients (health is exempt)", 0, 0},
        {"node-token-file", RM_FLAG_STR, &node_token_file,
         "token presented to the nodes (default: --auth-token-file's)", 0, 0},
        {"config", RM_FLAG_STR, &config,
         "flags from FILE (name = value per line; the command line wins); SIGHUP re-reads it and "
         "applies --nodes, --log-level, --load-factor, --call-timeout-ms, --max-request-tokens",
         0, 0},
        {"gateway", RM_FLAG_STR, &gateway,
         "serve an OpenAI-compatible HTTP gateway to the nodes' workers on HOST:PORT", 0, 0},
        {"gateway-max-body-bytes", RM_FLAG_SIZE, &gwc.max_body_bytes,
         "larger request bodies get 413", 1, 1u << 30},
        {"gateway-max-header-bytes", RM_FLAG_SIZE, &gwc.max_header_bytes,
         "larger request heads get 431 (at most 80 KiB, http-parser's own bound)", 256, 80 << 10},
        {"gateway-connect-timeout-ms", RM_FLAG_U32, &gwc.connect_timeout_ms,
         "connecting to a worker", 10, 600000},
        {"gateway-first-byte-timeout-ms", RM_FLAG_U32, &gwc.first_byte_timeout_ms,
         "request sent -> the worker's response head, at most (504 or once more elsewhere; "
         "counts as the worker's failure). A non-streamed completion's head comes when it is "
         "done: raise this for long ones",
         10, 86400000},
        {"gateway-upstream-timeout-ms", RM_FLAG_U32, &gwc.upstream_timeout_ms,
         "worker silence between bytes once its response has begun (not counted while a slow "
         "client pauses the stream); the client's connection is cut",
         10, 86400000},
        {"gateway-client-timeout-ms", RM_FLAG_U32, &gwc.client_timeout_ms,
         "time to send a request (408), and idle keep-alive lifetime", 10, 86400000},
        {"gateway-max-connections", RM_FLAG_U32, &gwc.max_connections,
         "open client connections at most (more get 503 and are closed)", 1, 1000000},
        {"gateway-max-buffered-bytes", RM_FLAG_SIZE, &gwc.max_buffered_bytes,
         "request bytes held in all (bodies, pipelined read-ahead); beyond, 503 with "
         "Retry-After (>= --gateway-max-body-bytes)",
         1u << 20, (uint64_t)1 << 40},
        {"gateway-breaker-failures", RM_FLAG_U32, &brk->failures,
         "consecutive failed requests (no connection, timeout, broken response) that take a "
         "worker out of gateway routing",
         1, 1000},
        {"gateway-breaker-cooldown-ms", RM_FLAG_U32, &brk->cooldown_ms,
         "then one trial request after this long; a failed trial doubles it (up to 32x), an "
         "answered one puts the worker back",
         100, 3600000},
        {"worker-scrape-interval-ms", RM_FLAG_U32, &gwc.scrape_interval_ms,
         "how often workers' /metrics are read (0: never)", 0, 3600000},
        {"log-level", RM_FLAG_STR, &log_level, "debug, info, warn or error", 0, 0},
    };
    rm_flagset fs = {"radixmesh-router",
                     "--listen HOST:PORT (--nodes LIST | --nodes-dns NAME:PORT)", "RADIXMESH",
                     flags, (int)RM_ARRAY_LEN(flags)};
    rm_flags_parse(&fs, argc, argv, NULL, 0, NULL);
    char **config_block = config ? rm_flags_apply_config(&fs, config, argc, argv) : NULL;
    rm_log_level lvl;
    if (rm_log_parse_level(log_level, &lvl))
        rm_flags_fail(&fs, "--log-level: expected debug, info, warn or error, got '%s'", log_level);
    rm_log_set_level(lvl);
    if (!nodes == !nodes_dns)
        rm_flags_fail(&fs, "give exactly one of --nodes and --nodes-dns");
    if (!(cfg.load_factor > 1.0))
        rm_flags_fail(&fs, "--load-factor must be > 1 (got %g)", cfg.load_factor);
    if (cfg.hot_share < 0 || cfg.hot_share > 1)
        rm_flags_fail(&fs, "--hot-share must be within [0, 1] (got %g)", cfg.hot_share);
    if (!(cfg.outlier.max_ejected_share >= 0 && cfg.outlier.max_ejected_share <= 1))
        rm_flags_fail(&fs, "--max-ejected-share must be within [0, 1] (got %g)",
                      cfg.outlier.max_ejected_share);
    if (!(cfg.outlier.panic_threshold >= 0 && cfg.outlier.panic_threshold <= 1))
        rm_flags_fail(&fs, "--panic-threshold must be within [0, 1] (got %g)",
                      cfg.outlier.panic_threshold);
    if (!strcmp(key_mode, "adaptive"))
        cfg.key_mode = RM_KEY_ADAPTIVE;
    else if (!strcmp(key_mode, "fixed"))
        cfg.key_mode = RM_KEY_FIXED;
    else
        rm_flags_fail(&fs, "--key-mode: expected adaptive or fixed, got '%s'", key_mode);
    char host[256], gw_host[256];
    int port, gw_port;
    if (rm_parse_hostport(listen, host, sizeof host, &port))
        rm_flags_fail(&fs, "--listen: expected HOST:PORT, got '%s'", listen);
    if (gateway && rm_parse_hostport(gateway, gw_host, sizeof gw_host, &gw_port))
        rm_flags_fail(&fs, "--gateway: expected HOST:PORT, got '%s'", gateway);
    gwc.listen = gateway;
    if (gwc.max_buffered_bytes < gwc.max_body_bytes)
        rm_flags_fail(&fs,
                      "--gateway-max-buffered-bytes (%zu) must be at least "
                      "--gateway-max-body-bytes (%zu)",
                      gwc.max_buffered_bytes, gwc.max_body_bytes);
    brk->max_cooldown_ms = brk->cooldown_ms * 32;
    if (http_auth && !token_file)
        rm_flags_fail(&fs, "--http-auth needs --auth-token-file (the token it requires)");
    rm_fd_plan fds;
    if (rm_fd_budget(http ? hc.max_connections : 0, gateway ? gwc.max_connections : 0, &fds,
                     "router") != 0)
        return 1;
    hc.max_connections = fds.http_max;
    if (gateway)
        gwc.max_connections = (uint32_t)fds.gateway_max;
    gwc.max_prompt_tokens = cfg.max_request_tokens;
    char hostname[256];
    if (!cfg.router_id) {
        if (gethostname(hostname, sizeof hostname) != 0)
            snprintf(hostname, sizeof hostname, "router");
        hostname[sizeof hostname - 1] = '\0';
        cfg.router_id = hostname;
    }
    const char *router_id = cfg.router_id;
    if (cfg.load_floor < 1)
        rm_flags_fail(&fs, "--load-floor must be >= 1 (got %g)", cfg.load_floor);

    rm_tls tls;
    char tls_err[512];
    if (rm_tls_load(&tls, tls_cert, tls_key, tls_ca, require_client_cert, tls_err, sizeof tls_err))
        rm_flags_fail(&fs, "%s", tls_err);
    cfg.node_tls = &tls;
    grpc_init();
    rm_router *r = rm_router_create(&cfg);
    dns_state dns;
    memset(&dns, 0, sizeof dns);
    pthread_t dns_thread;
    int dns_running = 0;
    char err[512];
    if (nodes && rm_router_set_static_nodes(r, nodes, err, sizeof err) < 0) {
        rm_router_destroy(r);
        grpc_shutdown();
        rm_flags_fail(&fs, "%s", err);
    }
    if (nodes_dns) {
        if (rm_parse_hostport(nodes_dns, dns.host, sizeof dns.host, &dns.port)) {
            rm_router_destroy(r);
            grpc_shutdown();
            rm_flags_fail(&fs, "--nodes-dns: expected NAME:PORT, got '%s'", nodes_dns);
        }
        dns.interval_ms = dns_interval;
        pthread_mutex_init(&dns.mu, NULL);
        pthread_create(&dns_thread, NULL, dns_loop, &dns);
        dns_running = 1;
    }
    rm_install_term_flag(&got_term);
    rm_install_hup_flag(&got_hup);

    rm_rpc_server *srv =
        rm_rpc_server_create_limited(cfg.max_request_tokens * 5 + (1u << 20), max_streams);
    char terr[256], *token = NULL; /* the clients' token, kept for --http-auth */
    const char *tfiles[2] = {token_file, node_token_file ? node_token_file : token_file};
    for (int i = 0; i < 2; i++) {
        if (!tfiles[i])
            continue;
        char *t = rm_read_token_file(tfiles[i], terr, sizeof terr);
        if (!t)
            rm_flags_fail(&fs, "%s: %s", i ? "--node-token-file" : "--auth-token-file", terr);
        if (i) {
            rm_rpc_server_set_client_token(srv, t);
            free(t);
        } else {
            rm_rpc_server_require_token(srv, t);
            token = t;
        }
    }
    hc.auth_token = gwc.auth_token = http_auth ? token : NULL;
    if (rm_router_register(r, srv) != 0) {
        rm_log(RM_LOG_ERROR, "router", "cannot register methods");
        return 1;
    }
    int bound = rm_rpc_server_announce(srv, listen, "router", &tls);
    if (bound < 0)
        return 1;
    rm_log(RM_LOG_INFO, "router", "router %s listening on %s:%d (%s keys, load factor %.2f)",
           router_id, host, bound, key_mode, cfg.load_factor);
    daemon_state d = {srv,
                      NULL,
                      0,
                      0,
                      r,
                      router_id,
                      nodes_dns ? &dns : NULL,
                      NULL,
                      0,
                      shutdown_delay,
                      0,
                      drain_timeout,
                      NULL,
                      &fs,
                      config,
                      argc,
                      argv,
                      "",
                      nodes ? rm_xstrndup(nodes, strlen(nodes)) : NULL,
                      NULL,
                      NULL,
                      1};
    d.probe = rm_accept_probe_create(listen, bound, 1000, 3, "router");
    rm_published pub;
    rm_published_init(&pub);
    if (http) {
        d.pub = &pub; /* published before the HTTP line, as on the nodes */
        publish(&d);
        if (!(d.hs = rm_http_start_announced(http, &hc, http_handler, &pub, "router")))
            return 1;
    }
    if (gateway) {
        char gerr[256];
        int gp;
        if (!(d.gw = rm_gateway_start(&gwc, r, &gp, gerr, sizeof gerr))) {
            rm_log(RM_LOG_ERROR, "router", "--gateway: %s", gerr);
            return 1;
        }
        rm_log(RM_LOG_INFO, "router", "OpenAI-compatible gateway on http://%s:%d/", gw_host, gp);
        printf("GATEWAY %s:%d\n", gw_host, gp);
        fflush(stdout);
    }
    rm_rpc_server_run(srv, 50, tick, &d, drain_timeout);
    rm_gateway_stop(d.gw);
    rm_http_stop(d.hs);
    rm_accept_probe_destroy(d.probe);
    free(token);
    rm_published_destroy(&pub);
    rm_rpc_server_destroy(srv);
    if (dns_running) {
        __atomic_store_n(&dns.stop, 1, __ATOMIC_RELEASE);
        pthread_join(dns_thread, NULL);
        for (size_t i = 0; i < dns.naddrs; i++)
            free(dns.addrs[i]);
        free(dns.addrs);
    }
    for (size_t i = 0; i < d.nknown; i++)
        free(d.known[i]);
    free(d.known);
    rm_router_destroy(r);
    rm_tls_free(&tls);
    grpc_shutdown();
    free(d.nodes);
    free(config_block);
    rm_log(RM_LOG_INFO, "router", "stopped");
    return 0;
}
