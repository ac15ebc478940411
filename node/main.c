/* radixmesh-node: one cache node. See node/README.md for the design; the
 * scaffolding it shares with the router is common/daemon.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "flags.h"
#include "kv_mirror.h"
#include "log.h"
#include "node_server.h"
#include "pbx.h"
#include "util.h"

/* What a config reload applies: checked, then set on the node. */
static const char *const live_flags[] = {"max-request-tokens", "max-leases", "lease-ttl-ms",
                                         "max-lease-ttl-ms"};

typedef struct node_main {
    rm_node *node;
    const rm_daemon *d;
} node_main;

static int reload_check(void *ctx, const rm_flagset *next, char *err, size_t errlen)
{
    node_main *m = ctx;
    uint32_t ttl = *(uint32_t *)rm_flags_value(next, "lease-ttl-ms");
    uint32_t max_ttl = *(uint32_t *)rm_flags_value(next, "max-lease-ttl-ms");
    if (max_ttl < ttl) {
        snprintf(err, errlen, "--max-lease-ttl-ms must be >= --lease-ttl-ms");
        return -1;
    }
    return rm_daemon_check_request_tokens(
        m->d, *(uint64_t *)rm_flags_value(next, "max-request-tokens"), err, errlen);
}

/* SIGHUP: request and lease limits (the log level is the scaffold's). */
static void reload_apply(void *ctx, const rm_flagset *live, const rm_flagset *next)
{
    (void)live;
    node_main *m = ctx;
    const char *lvl_name = *(const char **)rm_flags_value(next, "log-level");
    uint64_t max_req = *(uint64_t *)rm_flags_value(next, "max-request-tokens");
    uint32_t max_leases = *(uint32_t *)rm_flags_value(next, "max-leases");
    rm_node_set_limits(m->node, max_req, max_leases,
                       *(uint32_t *)rm_flags_value(next, "lease-ttl-ms"),
                       *(uint32_t *)rm_flags_value(next, "max-lease-ttl-ms"));
    rm_log(RM_LOG_INFO, "node",
           "config reloaded from %s (log level %s, max %llu request tokens, %llu leases)",
           m->d->o.config, lvl_name, (unsigned long long)max_req, (unsigned long long)max_leases);
}

static void tick(void *ctx, uint64_t now_ms)
{
    rm_node_tick(((node_main *)ctx)->node, now_ms);
}

/* For --http: the node's metrics (the scaffold adds its RPC and HTTP
 * figures); ready while it reports SERVING. */
static int publish(void *ctx, char **metrics, char **json)
{
    (void)json;
    rm_node *node = ((node_main *)ctx)->node;
    *metrics = rm_node_metrics(node);
    return rm_node_serving(node);
}

static void set_serving(void *ctx, int serving)
{
    rm_node_set_serving(((node_main *)ctx)->node, serving);
}

static void stop(void *ctx)
{
    rm_node_mirror_stop(((node_main *)ctx)->node);
}

/* --worker-kv-media: a comma-separated list of media. Returns the bits, or
 * 0 for a name it does not know. */
static uint32_t parse_media(const char *list)
{
    static const struct {
        const char *name;
        rm_kv_medium m;
    } names[] = {{"gpu", RM_KV_MEDIUM_GPU},
                 {"cpu", RM_KV_MEDIUM_CPU},
                 {"disk", RM_KV_MEDIUM_DISK},
                 {"external", RM_KV_MEDIUM_EXTERNAL},
                 {"other", RM_KV_MEDIUM_OTHER}};
    uint32_t bits = RM_KV_MEDIUM_BIT(RM_KV_MEDIUM_NONE);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        size_t i = 0;
        while (i < RM_ARRAY_LEN(names) &&
               !(strlen(names[i].name) == len && !strncmp(names[i].name, p, len)))
            i++;
        if (i == RM_ARRAY_LEN(names))
            return 0;
        bits |= RM_KV_MEDIUM_BIT(names[i].m);
        p += len + (p[len] == ',');
    }
    return bits;
}

static const rm_daemon_help help[] = {
    {"config", "flags from FILE (name = value per line; the command line wins); SIGHUP re-reads it "
               "and applies --log-level, --max-request-tokens, --max-leases and the lease TTLs"},
    {NULL, NULL},
};

static const rm_daemon_spec spec = {"node", "--listen HOST:PORT [options]", "127.0.0.1:7001", help};

int main(int argc, char **argv)
{
    const char *eviction = "lru", *hit_budget = "on";
    rm_node_config cfg;
    memset(&cfg, 0, sizeof cfg);
    rm_cache_config_defaults(&cfg.cache);
    cfg.max_request_tokens = 1048576;
    cfg.kv_stream_idle_ms = 10000;
    cfg.hot_block_tokens = 64;
    cfg.hot_half_life_ms = 10000;
    cfg.max_namespace_bytes = RM_NAMESPACE_MAX_BYTES;
    cfg.kv_chunk_bytes = 1u << 20;
    uint64_t pool_tokens = 1048576, pool_bytes = 0, ttl_s = 0;
    const char *kv_media = "gpu";
    cfg.worker_probe_interval_ms = 2000;
    rm_cache_config *cc = &cfg.cache;
    const rm_flag flags[] = {
        {"node-id", RM_FLAG_AT(&cfg.node_id), "stable node id (default: the host name)", 0, 0},
        {"page-tokens", RM_FLAG_AT(&cc->page_tokens), "tokens per KV page", 1, 65536},
        {"pool-tokens", RM_FLAG_AT(&pool_tokens), "pool size in tokens", 1, 0},
        {"pool-bytes", RM_FLAG_AT(&pool_bytes),
         "pool size in bytes (needs --kv-bytes-per-token; overrides --pool-tokens)", 0, 0},
        {"kv-bytes-per-token", RM_FLAG_AT(&cc->kv_bytes_per_token),
         "KV bytes stored per token; 0 = metadata-only", 0, 64u << 20},
        {"prefault", RM_FLAG_AT(&cc->prefault_kv),
         "fault the whole KV pool in at start (steady write bandwidth, slower start)", 0, 0},
        {"eviction", RM_FLAG_AT(&eviction),
         "eviction policy: lru, lfu, lfu-da (LFU with dynamic aging) or gdsf "
         "(Greedy-Dual-Size-Frequency, deep pages weigh more); node/README.md",
         0, 0},
        {"ttl-seconds", RM_FLAG_AT(&ttl_s), "drop entries idle this long; 0 = never", 0,
         UINT32_MAX},
        {"lease-ttl-ms", RM_FLAG_AT(&cc->default_lease_ttl_ms), "lease TTL when a Match asks for 0",
         1, 0},
        {"max-lease-ttl-ms", RM_FLAG_AT(&cc->max_lease_ttl_ms),
         "longest lease a client may ask for", 1, 0},
        {"max-leases", RM_FLAG_AT(&cc->max_leases), "live leases at most", 1, 0},
        {"max-leases-per-peer", RM_FLAG_AT(&cc->max_leases_per_peer),
         "live leases one caller may hold (its TLS client identity, else its IP address; a "
         "router is one caller); 0 = half of --max-leases",
         0, 0},
        {"max-namespaces", RM_FLAG_AT(&cc->max_namespaces),
         "namespaces in use at most (one with no entries and no leases is reclaimed)", 1, 1u << 20},
        {"max-request-tokens", RM_FLAG_AT(&cfg.max_request_tokens), "tokens per request at most", 1,
         1u << 26},
        {"kv-stream-idle-ms", RM_FLAG_AT(&cfg.kv_stream_idle_ms),
         "cancel a ReadKV/WriteKV that waits this long on its client (and return its pages)", 1,
         86400000},
        {"hot-block-tokens", RM_FLAG_AT(&cfg.hot_block_tokens),
         "block size of hot-prefix tracking (must equal the routers' --key-block-tokens)", 1,
         1u << 20},
        {"hot-half-life-ms", RM_FLAG_AT(&cfg.hot_half_life_ms),
         "half-life of the hot-prefix counts", 100, 86400000},
        {"hit-budget", RM_FLAG_AT(&hit_budget),
         "on or off: estimate what 0.25x-4x this pool would hit on the node's traffic (sampled "
         "miniature caches, <= 1 MiB), in Stats and /metrics",
         0, 0},
        {"worker-url", RM_FLAG_AT(&cfg.worker_url),
         "the inference worker this node mirrors (http://HOST:PORT), reported in Stats for a "
         "gateway router",
         0, 0},
        {"worker-kv-events", RM_FLAG_AT(&cfg.worker_kv_events),
         "mirror the worker's prefix cache exactly from its KV-cache events: its ZeroMQ "
         "publisher (vLLM --kv-events-config endpoint, e.g. tcp://HOST:5557; node/KV_EVENTS.md)",
         0, 0},
        {"worker-kv-replay", RM_FLAG_AT(&cfg.worker_kv_replay),
         "the worker's replay socket (its replay_endpoint): lost event batches are fetched again",
         0, 0},
        {"worker-kv-topic", RM_FLAG_AT(&cfg.worker_kv_topic),
         "the worker's event topic (its kv-events-config topic; default all)", 0, 0},
        {"worker-namespace", RM_FLAG_AT(&cfg.worker_namespace),
         "the namespace the worker's events fill (the routers' for its requests); default: the "
         "model it serves (GET --worker-url/v1/models)",
         0, 0},
        {"worker-kv-media", RM_FLAG_AT(&kv_media),
         "media whose stored blocks count as cached: gpu, cpu, disk, external, other "
         "(comma-separated)",
         0, 0},
        {"worker-probe-interval-ms", RM_FLAG_AT(&cfg.worker_probe_interval_ms),
         "with --worker-kv-events: how often the worker's /metrics is read (its cache size for "
         "the pool, a restart to empty the mirror)",
         100, 3600000},
    };
    rm_daemon d;
    rm_daemon_init(&d, &spec, flags, RM_ARRAY_LEN(flags), argc, argv);
    const rm_flagset *fs = &d.fs;
    if (rm_evict_policy_parse(eviction, &cfg.cache.policy) != 0)
        rm_flags_fail(fs, "--eviction: expected lru, lfu, lfu-da or gdsf, got '%s'", eviction);
    cfg.hit_budget = rm_flags_on_off(fs, "hit-budget", hit_budget);
    uint64_t kv_bytes = cc->kv_bytes_per_token, page_tokens = cc->page_tokens;
    if (pool_bytes && !kv_bytes)
        rm_flags_fail(fs, "--pool-bytes needs --kv-bytes-per-token > 0");
    if (cc->max_lease_ttl_ms < cc->default_lease_ttl_ms)
        rm_flags_fail(fs, "--max-lease-ttl-ms must be >= --lease-ttl-ms");
    uint64_t pages = pool_bytes ? pool_bytes / (kv_bytes * page_tokens)
                                : (pool_tokens + page_tokens - 1) / page_tokens;
    if (pages == 0 || pages >= UINT32_MAX)
        rm_flags_fail(fs, "the pool must hold between 1 and 2^32-2 pages (got %llu)",
                      (unsigned long long)pages);
    cfg.node_id = rm_daemon_id(&d, cfg.node_id, "node");
    if (!*cfg.node_id)
        rm_flags_fail(fs, "--node-id must not be empty");
    cc->pool_pages = pages;
    cc->ttl_ms = ttl_s * 1000;
    char wh[256];
    int wp;
    const char *worker_url = cfg.worker_url;
    if (worker_url && *worker_url && rm_parse_http_url(worker_url, wh, sizeof wh, &wp))
        rm_flags_fail(fs, "--worker-url: expected http://HOST:PORT, got '%s'", worker_url);
    cfg.worker_url = worker_url && *worker_url ? worker_url : NULL;
    if (cfg.worker_kv_events && !*cfg.worker_kv_events)
        cfg.worker_kv_events = NULL;
    if (cfg.worker_kv_replay && !*cfg.worker_kv_replay)
        cfg.worker_kv_replay = NULL;
    if (cfg.worker_namespace && !*cfg.worker_namespace)
        cfg.worker_namespace = NULL;
    if (cfg.worker_kv_replay && !cfg.worker_kv_events)
        rm_flags_fail(fs, "--worker-kv-replay needs --worker-kv-events");
    if (!(cfg.worker_kv_media = parse_media(kv_media)))
        rm_flags_fail(fs, "--worker-kv-media: expected gpu, cpu, disk, external or other, got '%s'",
                      kv_media);
    if (cfg.worker_kv_events && !cfg.worker_namespace && !cfg.worker_url)
        rm_flags_fail(fs, "--worker-kv-events needs --worker-namespace, or --worker-url to learn "
                          "the model the worker serves");
    if (cfg.worker_kv_events && kv_bytes)
        rm_flags_fail(fs, "--worker-kv-events mirrors metadata only: it cannot go with "
                          "--kv-bytes-per-token");
    if (cfg.worker_kv_events && ttl_s)
        rm_flags_fail(fs, "--worker-kv-events: entries leave when the worker drops them, not "
                          "after --ttl-seconds");

    if (rm_daemon_prepare(&d, 0, NULL) != 0)
        return 1;
    node_main m = {rm_node_create(&cfg), &d};
    if (!m.node)
        return 1;
    /* A request may carry max_req tokens of up to 5 varint bytes each, and a
     * WriteKV message a few MiB of KV. */
    rm_rpc_server *srv = rm_daemon_server(&d, cfg.max_request_tokens * 5 + (8u << 20), 8u << 20);
    char err[256];
    if (rm_node_mirror_start(m.node, srv, err, sizeof err) != 0)
        rm_flags_fail(fs, "%s", err);
    int bound = rm_daemon_listen(&d, rm_node_register(m.node, srv));
    if (bound < 0)
        return 1;
    rm_log(RM_LOG_INFO, "node",
           "node %s listening on %s:%d (pool %llu pages x %llu tokens, %s, kv %llu B/token)",
           cfg.node_id, d.host, bound, (unsigned long long)pages, (unsigned long long)page_tokens,
           eviction, (unsigned long long)kv_bytes);
    static const rm_daemon_hooks hooks = {
        .tick = tick,
        .reload = {reload_check, reload_apply, live_flags, RM_ARRAY_LEN(live_flags)},
        .publish = publish,
        .set_serving = set_serving,
        .stop = stop,
    };
    if (rm_daemon_start(&d, &hooks, &m, cfg.node_id) != 0)
        return 1;
    rm_daemon_run(&d);
    rm_node_destroy(m.node);
    return rm_daemon_exit(&d);
}
