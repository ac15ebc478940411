/* radixmesh-node: one cache node. See node/README.md for the design. */
#include <grpc/grpc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accept_probe.h"
#include "fdbudget.h"
#include "flags.h"
#include "http.h"
#include "log.h"
#include "node_server.h"
#include "rpc_client.h"
#include "rpc_server.h"
#include "util.h"

static volatile int got_term, got_hup;

typedef struct daemon_state {
    rm_rpc_server *srv;
    rm_node *node;
    uint64_t shutdown_delay_ms;
    uint64_t term_at;  /* 0: running */
    rm_published *pub; /* NULL without --http */
    uint64_t published_at;
    /* Config reloads (SIGHUP): the live flags and the command line that
     * keeps winning over the file. */
    const rm_flagset *fs;
    const char *config;
    int argc;
    char **argv;
    char log_level[16];     /* the reloaded level's name (the file's text is freed) */
    rm_http_server *hs;     /* NULL without --http */
    rm_accept_probe *probe; /* is gRPC still accepting? NULL: not watched */
    int accepting;
} daemon_state;

/* SIGHUP: re-reads --config and applies what can change while serving (log
 * level, request and lease limits). An invalid file changes nothing. */
static void reload(daemon_state *d)
{
    rm_flagset next;
    char *block, err[512];
    if (rm_flags_reload_logged(d->fs, d->config, d->argc, d->argv, &next, &block, "node"))
        return;
    const char *lvl_name = *(const char **)rm_flags_value(&next, "log-level");
    uint64_t max_req = *(uint64_t *)rm_flags_value(&next, "max-request-tokens");
    uint64_t max_leases = *(uint64_t *)rm_flags_value(&next, "max-leases");
    uint64_t ttl = *(uint64_t *)rm_flags_value(&next, "lease-ttl-ms");
    uint64_t max_ttl = *(uint64_t *)rm_flags_value(&next, "max-lease-ttl-ms");
    rm_log_level lvl;
    if (rm_log_parse_level(lvl_name, &lvl))
        snprintf(err, sizeof err, "--log-level: expected debug, info, warn or error, got '%s'",
                 lvl_name);
    else if (max_ttl < ttl)
        snprintf(err, sizeof err, "--max-lease-ttl-ms must be >= --lease-ttl-ms");
    else
        err[0] = '\0';
    if (err[0]) {
        rm_log(RM_LOG_ERROR, "node", "config reload rejected, keeping the old one: %s", err);
    } else {
        static const char *const live[] = {"max-request-tokens", "max-leases", "lease-ttl-ms",
                                           "max-lease-ttl-ms"};
        rm_log_set_level(lvl);
        rm_node_set_limits(d->node, max_req, (uint32_t)max_leases, (uint32_t)ttl,
                           (uint32_t)max_ttl);
        rm_log(RM_LOG_INFO, "node",
               "config reloaded from %s (log level %s, max %llu request tokens, %llu leases)",
               d->config, lvl_name, (unsigned long long)max_req, (unsigned long long)max_leases);
        rm_flags_keep_str(d->fs, &next, "log-level", d->log_level, sizeof d->log_level);
        rm_flags_adopt(d->fs, &next, live, RM_ARRAY_LEN(live), d->config, "node");
    }
    rm_flags_scratch_free(&next);
    free(block);
}

/* HTTP thread: serves what the owner thread published. */
static void http_handler(void *ctx, const char *path, rm_http_response *out)
{
    rm_http_serve_published(ctx, path, out);
}

/* The node's metrics followed by its RPC latency histograms and HTTP
 * connection figures. */
static char *metrics_text(daemon_state *d)
{
    char labels[200];
    snprintf(labels, sizeof labels, "node=\"%s\"", rm_node_id(d->node));
    char *m = rm_str_join_free(rm_node_metrics(d->node), rm_rpc_server_metrics(d->srv, labels));
    return rm_str_join_free(m, rm_http_metrics(d->hs, labels));
}

/* Runs on the server thread every tick: cache housekeeping and the SIGTERM
 * sequence (NOT_SERVING first, so routers and kubelet stop sending, then
 * stop accepting and drain). */
static int tick(void *ctx, uint64_t now_ms)
{
    daemon_state *d = ctx;
    if (got_hup) {
        got_hup = 0;
        reload(d);
    }
    rm_node_tick(d->node, now_ms);
    if (!got_term) {
        d->accepting = rm_accept_probe_tick(d->probe, now_ms);
    } else if (d->probe) {
        /* The listener goes away on purpose now; and gRPC's shutdown waits
         * for every connection, the probe's silent one included. */
        rm_accept_probe_destroy(d->probe);
        d->probe = NULL;
    }
    if (d->pub && (now_ms - d->published_at >= 500 || got_term)) {
        d->published_at = now_ms;
        rm_published_set(d->pub, metrics_text(d), NULL,
                         rm_node_serving(d->node) && !got_term && d->accepting);
    }
    if (got_term && !d->term_at) {
        d->term_at = now_ms;
        rm_node_set_serving(d->node, 0);
        rm_log(RM_LOG_INFO, "node", "SIGTERM: health NOT_SERVING, draining in %llu ms",
               (unsigned long long)d->shutdown_delay_ms);
    }
    return d->term_at && now_ms - d->term_at >= d->shutdown_delay_ms;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:7001", *node_id = NULL, *eviction = "lru";
    const char *log_level = "info", *http = NULL, *token_file = NULL, *worker_url = NULL;
    const char *config = NULL;
    const char *tls_cert = NULL, *tls_key = NULL, *tls_ca = NULL;
    int require_client_cert = 0, http_auth = 0;
    int prefault = 0;
    rm_http_config hc;
    rm_http_config_defaults(&hc);
    uint64_t page_tokens = 16, pool_tokens = 1048576, pool_bytes = 0, kv_bytes = 0;
    uint64_t ttl_s = 0, lease_ttl = 30000, max_lease_ttl = 600000, max_leases = 65536;
    uint64_t max_ns = 1024, max_req = 1048576, shutdown_delay = 1000, drain_timeout = 10000;
    uint64_t hot_block = 64, hot_half_life = 10000, max_streams = 0;
    uint64_t max_leases_per_peer = 0, kv_stream_idle = 10000;
    const rm_flag flags[] = {
        {"listen", RM_FLAG_STR, &listen, "gRPC address HOST:PORT (port 0: any free port)", 0, 0},
        {"node-id", RM_FLAG_STR, &node_id, "stable node id (default: the host name)", 0, 0},
        {"page-tokens", RM_FLAG_U64, &page_tokens, "tokens per KV page", 1, 65536},
        {"pool-tokens", RM_FLAG_U64, &pool_tokens, "pool size in tokens", 1, 0},
        {"pool-bytes", RM_FLAG_U64, &pool_bytes,
         "pool size in bytes (needs --kv-bytes-per-token; overrides --pool-tokens)", 0, 0},
        {"kv-bytes-per-token", RM_FLAG_U64, &kv_bytes,
         "KV bytes stored per token; 0 = metadata-only", 0, 64u << 20},
        {"prefault", RM_FLAG_BOOL, &prefault,
         "fault the whole KV pool in at start (steady write bandwidth, slower start)", 0, 0},
        {"eviction", RM_FLAG_STR, &eviction, "eviction policy: lru or lfu", 0, 0},
        {"ttl-seconds", RM_FLAG_U64, &ttl_s, "drop entries idle this long; 0 = never", 0, 0},
        {"lease-ttl-ms", RM_FLAG_U64, &lease_ttl, "lease TTL when a Match asks for 0", 1,
         UINT32_MAX},
        {"max-lease-ttl-ms", RM_FLAG_U64, &max_lease_ttl, "longest lease a client may ask for", 1,
         UINT32_MAX},
        {"max-leases", RM_FLAG_U64, &max_leases, "live leases at most", 1, UINT32_MAX},
        {"max-leases-per-peer", RM_FLAG_U64, &max_leases_per_peer,
         "live leases one caller may hold (its TLS client identity, else its IP address; a "
         "router is one caller); 0 = half of --max-leases",
         0, UINT32_MAX},
        {"max-namespaces", RM_FLAG_U64, &max_ns,
         "namespaces in use at most (one with no entries and no leases is reclaimed)", 1, 1u << 20},
        {"max-request-tokens", RM_FLAG_U64, &max_req, "tokens per request at most", 1, 1u << 26},
        {"kv-stream-idle-ms", RM_FLAG_U64, &kv_stream_idle,
         "cancel a ReadKV/WriteKV that waits this long on its client (and return its pages)", 1,
         86400000},
        {"max-concurrent-streams", RM_FLAG_U64, &max_streams,
         "calls in progress per client connection at most (0: gRPC's default)", 0, INT32_MAX},
        {"shutdown-delay-ms", RM_FLAG_U64, &shutdown_delay,
         "on SIGTERM, report NOT_SERVING this long before refusing new calls", 0, 600000},
        {"drain-timeout-ms", RM_FLAG_U64, &drain_timeout,
         "then wait this long for in-flight calls before cancelling them", 0, 600000},
        {"hot-block-tokens", RM_FLAG_U64, &hot_block,
         "block size of hot-prefix tracking (must equal the routers' --key-block-tokens)", 1,
         1u << 20},
        {"hot-half-life-ms", RM_FLAG_U64, &hot_half_life, "half-life of the hot-prefix counts", 100,
         86400000},
        {"http", RM_FLAG_STR, &http, "serve /metrics, /healthz, /readyz on HOST:PORT", 0, 0},
        RM_HTTP_FLAGS(hc, http_auth),
        {"tls-cert", RM_FLAG_STR, &tls_cert, "serve gRPC over TLS with this PEM certificate", 0, 0},
        {"tls-key", RM_FLAG_STR, &tls_key, "PEM private key of --tls-cert", 0, 0},
        {"tls-ca", RM_FLAG_STR, &tls_ca,
         "PEM CA that client certificates must chain to (presented ones are verified)", 0, 0},
        {"require-client-cert", RM_FLAG_BOOL, &require_client_cert,
         "mTLS: refuse clients without a certificate signed by --tls-ca", 0, 0},
        {"auth-token-file", RM_FLAG_STR, &token_file,
         "require 'authorization: Bearer <token>' (the file's first line) on every RPC but health",
         0, 0},
        {"config", RM_FLAG_STR, &config,
         "flags from FILE (name = value per line; the command line wins); SIGHUP re-reads it "
         "and applies --log-level, --max-request-tokens, --max-leases and the lease TTLs",
         0, 0},
        {"worker-url", RM_FLAG_STR, &worker_url,
         "the inference worker this node mirrors (http://HOST:PORT), reported in Stats for a "
         "gateway router",
         0, 0},
        {"log-level", RM_FLAG_STR, &log_level, "debug, info, warn or error", 0, 0},
    };
    rm_flagset fs = {"radixmesh-node", "--listen HOST:PORT [options]", "RADIXMESH", flags,
                     (int)RM_ARRAY_LEN(flags)};
    rm_flags_parse(&fs, argc, argv, NULL, 0, NULL);
    char **config_block = config ? rm_flags_apply_config(&fs, config, argc, argv) : NULL;

    rm_log_level lvl;
    if (rm_log_parse_level(log_level, &lvl))
        rm_flags_fail(&fs, "--log-level: expected debug, info, warn or error, got '%s'", log_level);
    rm_log_set_level(lvl);
    char host[256];
    int port;
    if (rm_parse_hostport(listen, host, sizeof host, &port))
        rm_flags_fail(&fs, "--listen: expected HOST:PORT, got '%s'", listen);
    rm_node_config cfg;
    memset(&cfg, 0, sizeof cfg);
    rm_cache_config_defaults(&cfg.cache);
    if (!strcmp(eviction, "lru"))
        cfg.cache.policy = RM_EVICT_LRU;
    else if (!strcmp(eviction, "lfu"))
        cfg.cache.policy = RM_EVICT_LFU;
    else
        rm_flags_fail(&fs, "--eviction: expected lru or lfu, got '%s'", eviction);
    if (pool_bytes && !kv_bytes)
        rm_flags_fail(&fs, "--pool-bytes needs --kv-bytes-per-token > 0");
    if (max_lease_ttl < lease_ttl)
        rm_flags_fail(&fs, "--max-lease-ttl-ms must be >= --lease-ttl-ms");
    uint64_t pages = pool_bytes ? pool_bytes / (kv_bytes * page_tokens)
                                : (pool_tokens + page_tokens - 1) / page_tokens;
    if (pages == 0 || pages >= UINT32_MAX)
        rm_flags_fail(&fs, "the pool must hold between 1 and 2^32-2 pages (got %llu)",
                      (unsigned long long)pages);
    char hostname[256];
    if (!node_id) {
        if (gethostname(hostname, sizeof hostname) != 0)
            snprintf(hostname, sizeof hostname, "node");
        hostname[sizeof hostname - 1] = '\0';
        node_id = hostname;
    }
    if (!*node_id)
        rm_flags_fail(&fs, "--node-id must not be empty");
    cfg.node_id = node_id;
    cfg.cache.page_tokens = (uint32_t)page_tokens;
    cfg.cache.pool_pages = pages;
    cfg.cache.kv_bytes_per_token = kv_bytes;
    cfg.cache.prefault_kv = prefault;
    cfg.cache.ttl_ms = ttl_s * 1000;
    cfg.cache.default_lease_ttl_ms = (uint32_t)lease_ttl;
    cfg.cache.max_lease_ttl_ms = (uint32_t)max_lease_ttl;
    cfg.cache.max_leases = (uint32_t)max_leases;
    cfg.cache.max_leases_per_peer = (uint32_t)max_leases_per_peer;
    cfg.kv_stream_idle_ms = kv_stream_idle;
    cfg.cache.max_namespaces = (uint32_t)max_ns;
    cfg.max_request_tokens = max_req;
    cfg.max_namespace_bytes = 1024;
    cfg.kv_chunk_bytes = 1u << 20;
    cfg.hot_block_tokens = (uint32_t)hot_block;
    cfg.hot_half_life_ms = hot_half_life;
    char wh[256];
    int wp;
    if (worker_url && *worker_url && rm_parse_http_url(worker_url, wh, sizeof wh, &wp))
        rm_flags_fail(&fs, "--worker-url: expected http://HOST:PORT, got '%s'", worker_url);
    cfg.worker_url = worker_url && *worker_url ? worker_url : NULL;

    if (http_auth && !token_file)
        rm_flags_fail(&fs, "--http-auth needs --auth-token-file (the token it requires)");
    rm_fd_plan fds;
    if (rm_fd_budget(http ? hc.max_connections : 0, 0, &fds, "node") != 0)
        return 1;
    hc.max_connections = fds.http_max;
    rm_tls tls;
    char tls_err[512];
    if (rm_tls_load(&tls, tls_cert, tls_key, tls_ca, require_client_cert, tls_err, sizeof tls_err))
        rm_flags_fail(&fs, "%s", tls_err);

    rm_install_term_flag(&got_term);
    rm_install_hup_flag(&got_hup);

    grpc_init();
    rm_node *node = rm_node_create(&cfg);
    if (!node)
        return 1;
    /* A request may carry max_req tokens of up to 5 varint bytes each, and a
     * WriteKV message a few MiB of KV. */
    rm_rpc_server *srv =
        rm_rpc_server_create_limited(max_req * 5 + (8u << 20), (uint32_t)max_streams);
    char *token = NULL;
    if (token_file) {
        char err[256];
        if (!(token = rm_read_token_file(token_file, err, sizeof err)))
            rm_flags_fail(&fs, "--auth-token-file: %s", err);
        rm_rpc_server_require_token(srv, token);
    }
    hc.auth_token = http_auth ? token : NULL;
    if (rm_node_register(node, srv) != 0) {
        rm_log(RM_LOG_ERROR, "node", "cannot register methods");
        return 1;
    }
    int bound = rm_rpc_server_announce(srv, listen, "node", &tls);
    if (bound < 0)
        return 1;
    rm_log(RM_LOG_INFO, "node",
           "node %s listening on %s:%d (pool %llu pages x %llu tokens, %s, kv %llu B/token)",
           node_id, host, bound, (unsigned long long)pages, (unsigned long long)page_tokens,
           eviction, (unsigned long long)kv_bytes);

    daemon_state d = {srv,    node, shutdown_delay, 0,  NULL, 0,    &fs,
                      config, argc, argv,           "", NULL, NULL, 1};
    d.probe = rm_accept_probe_create(listen, bound, 1000, 3, "node");
    rm_published pub;
    rm_published_init(&pub);
    if (http) {
        /* Published before the HTTP line: a probe right after it finds
         * the node ready. */
        d.pub = &pub;
        rm_published_set(&pub, metrics_text(&d), NULL, 1);
        if (!(d.hs = rm_http_start_announced(http, &hc, http_handler, &pub, "node")))
            return 1;
    }
    free(token);
    rm_rpc_server_run(srv, 50, tick, &d, (uint32_t)drain_timeout);
    rm_tls_free(&tls);
    rm_http_stop(d.hs);
    rm_accept_probe_destroy(d.probe);
    rm_published_destroy(&pub);
    rm_rpc_server_destroy(srv);
    rm_node_destroy(node);
    grpc_shutdown();
    free(config_block);
    rm_log(RM_LOG_INFO, "node", "stopped");
    return 0;
}
