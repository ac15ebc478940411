/* daemon.c -- the scaffolding both daemons run their server in: shared
 * flags, start-up, the tick's reload/publish/SIGTERM parts, teardown. */
#include "daemon.h"

#include <grpc/grpc.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "bearer.h"
#include "fdbudget.h"
#include "log.h"
#include "prom.h"
#include "signals.h"
#include "util.h"

/* The shared flags after --listen, in --help order. */
static size_t shared_flags(rm_daemon_opts *o, rm_flag *out)
{
    const rm_flag shared[] = {
        {"max-concurrent-streams", RM_FLAG_AT(&o->max_streams),
         "calls in progress per client connection at most (0: gRPC's default)", 0, INT32_MAX},
        {"shutdown-delay-ms", RM_FLAG_AT(&o->shutdown_delay_ms),
         "on SIGTERM, report NOT_SERVING this long before refusing new calls", 0, 600000},
        {"drain-timeout-ms", RM_FLAG_AT(&o->drain_timeout_ms),
         "then wait this long for in-flight calls before cancelling them", 0, 600000},
        {"http", RM_FLAG_AT(&o->http), "serve /metrics, /healthz, /readyz on HOST:PORT", 0, 0},
        RM_HTTP_FLAGS(o->http_cfg, o->http_auth),
        {"tls-cert", RM_FLAG_AT(&o->tls_cert), "serve gRPC over TLS with this PEM certificate", 0,
         0},
        {"tls-key", RM_FLAG_AT(&o->tls_key), "PEM private key of --tls-cert", 0, 0},
        {"tls-ca", RM_FLAG_AT(&o->tls_ca),
         "PEM CA that client certificates must chain to (presented ones are verified)", 0, 0},
        {"require-client-cert", RM_FLAG_AT(&o->require_client_cert),
         "mTLS: refuse clients without a certificate signed by --tls-ca", 0, 0},
        {"auth-token-file", RM_FLAG_AT(&o->token_file),
         "require 'authorization: Bearer <token>' (the file's first line) on every RPC but health",
         0, 0},
        {"config", RM_FLAG_AT(&o->config),
         "flags from FILE (name = value per line; the command line wins); SIGHUP re-reads it", 0,
         0},
        {"log-level", RM_FLAG_AT(&o->log_level), "debug, info, warn or error", 0, 0},
    };
    if (out)
        memcpy(out, shared, sizeof shared);
    return RM_ARRAY_LEN(shared);
}

void rm_daemon_init(rm_daemon *d, const rm_daemon_spec *spec, const rm_flag *flags, size_t nflags,
                    int argc, char **argv)
{
    memset(d, 0, sizeof *d);
    /* First: every thread started from here on inherits the mask. */
    if (rm_signals_block() != 0)
        rm_log(RM_LOG_WARN, spec->module, "cannot block SIGTERM/SIGHUP: %s", strerror(errno));
    d->spec = spec;
    d->argc = argc;
    d->argv = argv;
    snprintf(d->prog, sizeof d->prog, "radixmesh-%s", spec->module);
    rm_daemon_opts *o = &d->o;
    o->listen = spec->listen;
    o->log_level = "info";
    rm_http_config_defaults(&o->http_cfg);
    o->shutdown_delay_ms = 1000;
    o->drain_timeout_ms = 10000;
    size_t n = 1 + nflags + shared_flags(o, NULL);
    d->flags = rm_xmalloc(n * sizeof *d->flags);
    d->flags[0] = (rm_flag){"listen", RM_FLAG_AT(&o->listen),
                            "gRPC address HOST:PORT (port 0: any free port)", 0, 0};
    memcpy(d->flags + 1, flags, nflags * sizeof *d->flags);
    shared_flags(o, d->flags + 1 + nflags);
    for (const rm_daemon_help *h = spec->help; h && h->flag; h++) {
        size_t k = 0;
        while (k < n && strcmp(d->flags[k].name, h->flag) != 0)
            k++;
        if (k == n) {
            fprintf(stderr, "%s: no flag --%s to describe\n", d->prog, h->flag);
            abort();
        }
        d->flags[k].help = h->help;
    }
    d->fs = (rm_flagset){d->prog, spec->synopsis, "RADIXMESH", d->flags, (int)n};
    rm_flags_scratch(&d->fs, &d->defaults);
    rm_flags_parse(&d->fs, argc, argv, NULL, 0, NULL);
    if (o->config)
        d->config_block = rm_flags_apply_config(&d->fs, o->config, argc, argv);
    rm_flags_scratch(&d->fs, &d->started);
    rm_log_level lvl;
    if (rm_log_parse_level(o->log_level, &lvl))
        rm_flags_fail(&d->fs, "--log-level: expected debug, info, warn or error, got '%s'",
                      o->log_level);
    rm_log_set_level(lvl);
    int port;
    if (rm_parse_hostport(o->listen, d->host, sizeof d->host, &port))
        rm_flags_fail(&d->fs, "--listen: expected HOST:PORT, got '%s'", o->listen);
    if (o->http_auth && !o->token_file)
        rm_flags_fail(&d->fs, "--http-auth needs --auth-token-file (the token it requires)");
}

int rm_daemon_prepare(rm_daemon *d, uint64_t gateway_wanted, uint64_t *gateway_max)
{
    rm_daemon_opts *o = &d->o;
    rm_fd_plan fds;
    if (rm_fd_budget(o->http ? o->http_cfg.max_connections : 0, "--http-max-connections",
                     gateway_wanted, &fds, d->spec->module) != 0)
        return -1;
    o->http_cfg.max_connections = fds.http_max;
    if (gateway_max)
        *gateway_max = fds.gateway_max;
    char err[512];
    if (rm_tls_load(&d->tls, o->tls_cert, o->tls_key, o->tls_ca, o->require_client_cert, err,
                    sizeof err))
        rm_flags_fail(&d->fs, "%s", err);
    grpc_init();
    return 0;
}

char *rm_daemon_read_token(const rm_daemon *d, const char *path, const char *flag)
{
    char err[256];
    char *t = rm_read_token_file(path, err, sizeof err);
    if (!t)
        rm_flags_fail(&d->fs, "%s: %s", flag, err);
    return t;
}

rm_rpc_server *rm_daemon_server(rm_daemon *d, uint64_t max_receive_bytes, uint64_t reserve)
{
    d->srv = rm_rpc_server_create_limited(max_receive_bytes, d->o.max_streams);
    d->max_receive_bytes = max_receive_bytes;
    d->reserve = reserve;
    if (d->o.token_file) {
        d->token = rm_daemon_read_token(d, d->o.token_file, "--auth-token-file");
        rm_rpc_server_require_token(d->srv, d->token);
    }
    d->o.http_cfg.auth_token = d->o.http_auth ? d->token : NULL;
    return d->srv;
}

uint64_t rm_daemon_tokens_fitting(uint64_t max_receive_bytes, uint64_t reserve)
{
    return max_receive_bytes > reserve ? (max_receive_bytes - reserve) / 5 : 0;
}

int rm_daemon_check_request_tokens(const rm_daemon *d, uint64_t max_tokens, char *err,
                                   size_t errlen)
{
    uint64_t fit = rm_daemon_tokens_fitting(d->max_receive_bytes, d->reserve);
    if (max_tokens <= fit)
        return 0;
    snprintf(err, errlen,
             "--max-request-tokens %llu: gRPC's message limit, set at start, holds requests of "
             "%llu tokens at most; a higher limit needs a restart",
             (unsigned long long)max_tokens, (unsigned long long)fit);
    return -1;
}

int rm_daemon_listen(rm_daemon *d, int registered)
{
    if (registered != 0) {
        rm_log(RM_LOG_ERROR, d->spec->module, "cannot register methods");
        return -1;
    }
    int bound = rm_rpc_server_announce(d->srv, d->o.listen, d->spec->module, &d->tls);
    if (bound >= 0)
        d->probe = rm_accept_probe_create(d->o.listen, bound, 1000, 5, d->spec->module);
    return bound;
}

const char *rm_daemon_id(rm_daemon *d, const char *id, const char *fallback)
{
    if (id)
        return id;
    if (gethostname(d->hostname, sizeof d->hostname) != 0)
        snprintf(d->hostname, sizeof d->hostname, "%s", fallback);
    d->hostname[sizeof d->hostname - 1] = '\0';
    return d->hostname;
}

/* SIGHUP: re-reads --config and applies what can change while serving. An
 * invalid file changes nothing. */
static void reload(rm_daemon *d)
{
    const rm_daemon_hooks *h = d->hooks;
    const char *module = d->spec->module;
    rm_flagset next;
    char *block, err[512] = "";
    if (rm_flags_reload_logged(&d->defaults, d->o.config, d->argc, d->argv, &next, &block, module))
        return;
    const char *lvl_name = *(const char **)rm_flags_value(&next, "log-level");
    rm_log_level lvl;
    if (rm_log_parse_level(lvl_name, &lvl))
        snprintf(err, sizeof err, "--log-level: expected debug, info, warn or error, got '%s'",
                 lvl_name);
    else if (h->reload.check && h->reload.check(d->ctx, &next, err, sizeof err) && !err[0])
        snprintf(err, sizeof err, "refused");
    if (err[0]) {
        rm_log(RM_LOG_ERROR, module, "config reload rejected, keeping the old one: %s", err);
    } else {
        rm_log_set_level(lvl);
        if (h->reload.apply)
            h->reload.apply(d->ctx, &d->fs, &next);
        rm_flags_keep_str(&d->fs, &next, "log-level", d->log_level, sizeof d->log_level);
        /* Applied: the daemon's flags, and the log level (ours). */
        const char *applied[64];
        size_t napplied = 0;
        for (size_t i = 0; i < h->reload.nflags && napplied + 1 < RM_ARRAY_LEN(applied); i++)
            applied[napplied++] = h->reload.flags[i];
        applied[napplied++] = "log-level";
        rm_flags_adopt(&d->fs, &d->started, &next, applied, napplied, d->o.config, module);
    }
    rm_flags_scratch_free(&next);
    free(block);
}

/* HTTP thread without paths of the daemon's own. */
static void serve_published(void *ctx, const char *path, rm_http_response *out)
{
    rm_http_serve_published(ctx, path, out);
}

/* When the figures below were taken. The server thread publishes them
 * every 500 ms; an old value says that thread is stuck (the process may
 * still answer /metrics from its HTTP thread). A reader that needs figures
 * counting everything before an instant waits for a later timestamp. */
static char *snapshot_metric(const rm_daemon *d)
{
    rm_sbuf b = {0};
    rm_prom_metric(&b, "radixmesh_snapshot_timestamp_seconds", "gauge",
                   "Unix time at which these figures were taken (every 500 ms).", d->labels,
                   (double)rm_wall_ms() / 1000.0);
    return b.p;
}

static void publish(rm_daemon *d)
{
    char *m = snapshot_metric(d), *own = NULL, *json = NULL;
    int ready = d->hooks->publish(d->ctx, &own, &json);
    m = rm_str_join_free(m, own);
    m = rm_str_join_free(m, rm_rpc_server_metrics(d->srv, d->labels));
    m = rm_str_join_free(m, rm_http_metrics(d->hs, d->labels));
    rm_published_set(&d->pub, m, json, ready && !d->stopping && d->accepting);
}

int rm_daemon_start(rm_daemon *d, const rm_daemon_hooks *hooks, void *ctx, const char *id)
{
    d->hooks = hooks;
    d->ctx = ctx;
    d->accepting = 1;
    rm_prom_label(d->labels, sizeof d->labels, d->spec->module, id);
    rm_published_init(&d->pub);
    if (!d->o.http)
        return 0;
    /* Published before the HTTP line: a probe right after it finds the
     * daemon as it is. */
    d->publishing = 1;
    publish(d);
    d->hs = rm_http_start_announced(d->o.http, &d->o.http_cfg,
                                    hooks->http ? hooks->http : serve_published, &d->pub,
                                    d->spec->module);
    return d->hs ? 0 : -1;
}

rm_daemon_phase rm_daemon_phase_at(uint64_t term_ms, uint64_t now_ms, uint32_t delay_ms,
                                   uint32_t drain_ms)
{
    if (!term_ms)
        return RM_DAEMON_SERVING;
    uint64_t since = now_ms - term_ms;
    if (since < delay_ms)
        return RM_DAEMON_NOT_SERVING;
    return since < (uint64_t)delay_ms + drain_ms ? RM_DAEMON_DRAINING : RM_DAEMON_DRAIN_OVER;
}

/* Server thread, every tick: reload, the daemon's tick, the accept probe,
 * publishing, and the SIGTERM sequence. Nonzero ends the server loop. */
static int tick(void *ctx, uint64_t now_ms)
{
    rm_daemon *d = ctx;
    const rm_daemon_hooks *h = d->hooks;
    unsigned sig = rm_signals_take();
    if (sig & RM_SIG_HUP)
        reload(d);
    if (sig & (RM_SIG_TERM | RM_SIG_INT))
        d->stopping = 1;
    if (h->tick)
        h->tick(d->ctx, now_ms);
    if (!d->stopping) {
        d->accepting = rm_accept_probe_tick(d->probe, now_ms);
    } else if (d->probe) {
        /* The listener goes away on purpose now; and gRPC's shutdown waits
         * for every connection, the probe's silent one included. */
        rm_accept_probe_destroy(d->probe);
        d->probe = NULL;
    }
    if (d->publishing && (now_ms - d->published_at >= 500 || d->stopping)) {
        d->published_at = now_ms;
        publish(d);
    }
    if (d->stopping && !d->term_at) {
        d->term_at = now_ms;
        if (h->set_serving)
            h->set_serving(d->ctx, 0);
        rm_log(RM_LOG_INFO, d->spec->module, "SIGTERM: health NOT_SERVING, draining in %llu ms",
               (unsigned long long)d->o.shutdown_delay_ms);
    }
    rm_daemon_phase p =
        rm_daemon_phase_at(d->term_at, now_ms, d->o.shutdown_delay_ms, d->o.drain_timeout_ms);
    if (p == RM_DAEMON_SERVING || p == RM_DAEMON_NOT_SERVING)
        return 0;
    /* Work of the daemon's own (a gateway's streams, which may run for
     * minutes) finishes first: it may need this thread to the end. */
    int drained = !h->drained || h->drained(d->ctx);
    return drained || p == RM_DAEMON_DRAIN_OVER;
}

void rm_daemon_run(rm_daemon *d)
{
    rm_rpc_server_run(d->srv, 50, tick, d, d->o.drain_timeout_ms);
    if (d->hooks->stop)
        d->hooks->stop(d->ctx);
    rm_http_stop(d->hs);
    rm_accept_probe_destroy(d->probe);
    d->probe = NULL;
    rm_published_destroy(&d->pub);
    rm_rpc_server_destroy(d->srv);
    d->srv = NULL;
}

int rm_daemon_exit(rm_daemon *d)
{
    rm_tls_free(&d->tls);
    grpc_shutdown();
    free(d->token);
    free(d->config_block);
    rm_flags_scratch_free(&d->defaults);
    rm_flags_scratch_free(&d->started);
    free(d->flags);
    rm_log(RM_LOG_INFO, d->spec->module, "stopped");
    return 0;
}
