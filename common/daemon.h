/* daemon.h -- what radixmesh-node and radixmesh-router share around their
 * gRPC server, so that each main.c keeps only its own flags, checks and
 * hooks:
 *
 * - the shared flags (--listen, --tls-*, --require-client-cert,
 *   --auth-token-file, --http and its caps, --config, --log-level,
 *   --shutdown-delay-ms, --drain-timeout-ms, --max-concurrent-streams) and
 *   their checks, in one table with the daemon's own;
 * - start-up: the fd budget, TLS material, the SIGTERM/SIGHUP flags, the
 *   gRPC server with its token, the accept probe, --http;
 * - the tick around the daemon's own: a SIGHUP reload (re-read the file,
 *   check --log-level and the daemon's live flags, apply, adopt, warn about
 *   what needs a restart), publishing for --http every 500 ms, and the
 *   SIGTERM sequence (rm_daemon_phase_at);
 * - the teardown.
 *
 * A daemon's main:
 *
 *   rm_daemon_init(&d, &spec, flags, n, argc, argv);   exits 2 on a bad flag
 *   ...its own checks (rm_flags_fail(&d.fs, ...)), its config...
 *   rm_daemon_prepare(&d, 0, NULL);             fd budget, TLS, signals, grpc_init
 *   ...create its object...
 *   srv = rm_daemon_server(&d, max_receive_bytes);
 *   rm_daemon_listen(&d, register(obj, srv));   LISTENING, the accept probe
 *   rm_daemon_start(&d, &hooks, obj, id);       publish, --http
 *   rm_daemon_run(&d);                          until SIGTERM's sequence ends
 *   ...destroy its object...
 *   return rm_daemon_exit(&d);
 *
 * Owner: main's thread until rm_daemon_run, then the gRPC server thread
 * (every hook runs there). --http handlers run on the HTTP thread and read
 * only what is published. One rm_daemon per process (signal flags). */
#ifndef RM_DAEMON_H
#define RM_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#include "accept_probe.h"
#include "flags.h"
#include "http.h"
#include "rpc_server.h"
#include "tls.h"

/* The shared flags' values: set by rm_daemon_init (the command line,
 * $RADIXMESH_*, --config) and checked there. */
typedef struct rm_daemon_opts {
    const char *listen, *http, *config, *log_level;
    const char *tls_cert, *tls_key, *tls_ca, *token_file;
    int require_client_cert, http_auth;
    rm_http_config http_cfg; /* auth_token set by rm_daemon_server */
    uint32_t shutdown_delay_ms, drain_timeout_ms, max_streams;
} rm_daemon_opts;

/* A daemon's own help text for one of the shared flags. */
typedef struct rm_daemon_help {
    const char *flag, *help;
} rm_daemon_help;

/* What a daemon is (its program is radixmesh-<module>). */
typedef struct rm_daemon_spec {
    const char *module;         /* log module, also the metrics' identity label ("node") */
    const char *synopsis;       /* usage line after the program's name */
    const char *listen;         /* --listen's default */
    const rm_daemon_help *help; /* texts replacing shared ones (--config's: what reloads);
                                   ends with {NULL} */
} rm_daemon_spec;

/* What a SIGHUP applies of the daemon's own flags. */
typedef struct rm_daemon_reload {
    /* --log-level of next already checked: checks next's live values;
     * returns 0, or -1 with the reason in err and nothing changed (what
     * can only be checked by applying it, a membership list, is applied
     * whole or not at all). */
    int (*check)(void *ctx, const rm_flagset *next, char *err, size_t errlen);
    /* Then applies them (next's log level is in force) and logs what it
     * did. live is the running table (point a string flag at a copy the
     * daemon keeps: next's strings are freed after the reload). */
    void (*apply)(void *ctx, const rm_flagset *live, const rm_flagset *next);
    const char *const *flags; /* the numbers apply applied: adopted into live */
    size_t nflags;
} rm_daemon_reload;

/* The daemon's part of the tick, reload and publishing; each gets the ctx
 * given to rm_daemon_start. Every hook may be NULL but publish. */
typedef struct rm_daemon_hooks {
    /* Every tick, first: the daemon's housekeeping. */
    void (*tick)(void *ctx, uint64_t now_ms);
    rm_daemon_reload reload;
    /* What --http publishes, every 500 ms: the daemon's Prometheus text in
     * *metrics (the server's RPC and --http figures follow it) and
     * /api/cluster in *json (left NULL: none), both malloc'd. Returns
     * whether the daemon is ready by its own measure (/readyz also needs
     * the listener accepting and no SIGTERM). */
    int (*publish)(void *ctx, char **metrics, char **json);
    /* SIGTERM: the health service's status goes NOT_SERVING. */
    void (*set_serving)(void *ctx, int serving);
    /* After --shutdown-delay-ms, every tick until it returns 1 or
     * --drain-timeout-ms passed: asks the daemon's own work (a gateway's
     * requests) to finish; returns whether it has. NULL: nothing to wait
     * for. */
    int (*drained)(void *ctx);
    /* After the server loop ended, before the server is destroyed: stops
     * what still uses it (a gateway). */
    void (*stop)(void *ctx);
    /* --http paths of its own; ctx is the rm_published to fall back on
     * with rm_http_serve_published. NULL: only those. */
    rm_http_handler http;
} rm_daemon_hooks;

typedef struct rm_daemon {
    rm_daemon_opts o;
    rm_flagset fs;  /* every flag: for rm_flags_fail and reloads */
    char host[256]; /* --listen's host */
    rm_tls tls;     /* from rm_daemon_prepare on */
    char *token;    /* --auth-token-file's, from rm_daemon_server on; NULL: none */
    rm_rpc_server *srv;
    uint64_t max_receive_bytes, reserve; /* srv's gRPC message limit, and its non-token part */
    /* Private. */
    const rm_daemon_spec *spec;
    const rm_daemon_hooks *hooks;
    void *ctx;
    rm_flag *flags;
    char prog[64];
    char **config_block;
    /* The flags' values before the start's parse, and after it (before the
     * daemon's own adjustments): what a reload starts from, and what it
     * compares with to name the changes that need a restart. */
    rm_flagset defaults, started;
    int argc;
    char **argv;
    char log_level[16]; /* the reloaded level's name (the file's text is freed) */
    char labels[300];
    char hostname[256];
    rm_published pub;
    int publishing; /* --http is on */
    uint64_t published_at, term_at;
    int stopping; /* SIGTERM or SIGINT taken (rm_signals_take in the tick) */
    rm_http_server *hs;
    rm_accept_probe *probe; /* NULL: not watched */
    int accepting;
} rm_daemon;

/* Parses env, argv and --config into the daemon's own flags (listed in
 * --help after --listen) and the shared ones, sets the log level and
 * checks the shared flags. Exits 2 with usage on a bad flag (0 after
 * --help, --version). spec is kept. */
void rm_daemon_init(rm_daemon *d, const rm_daemon_spec *spec, const rm_flag *flags, size_t nflags,
                    int argc, char **argv);

/* After the daemon's own checks: the fd budget (gateway_wanted: its
 * gateway's connection cap, 0: none; its share goes to *gateway_max, which
 * may be NULL then), the TLS files (a bad one exits 2), the SIGTERM/SIGHUP
 * flags, grpc_init. Returns 0, or -1 after logging why. */
int rm_daemon_prepare(rm_daemon *d, uint64_t gateway_wanted, uint64_t *gateway_max);

/* The gRPC server: messages up to max_receive_bytes (of which reserve is
 * what a request holds besides its tokens: rm_daemon_tokens_fitting), at most
 * --max-concurrent-streams calls per connection, --auth-token-file's token
 * required (an unreadable file exits 2). Register methods on it next. */
rm_rpc_server *rm_daemon_server(rm_daemon *d, uint64_t max_receive_bytes, uint64_t reserve);

/* The most tokens one request may carry within a gRPC message limit of
 * max_receive_bytes: 5 varint bytes a token, `reserve` bytes kept for the
 * rest of the message (the node's KV slice of a WriteKV, namespaces). */
uint64_t rm_daemon_tokens_fitting(uint64_t max_receive_bytes, uint64_t reserve);

/* For a reload's check: gRPC's message limit is fixed when the server is
 * made, so a --max-request-tokens above what it holds cannot apply live.
 * Returns 0 if requests of max_tokens fit d's server, else -1 with err
 * saying so (the reload is then rejected and the running limit stays). */
int rm_daemon_check_request_tokens(const rm_daemon *d, uint64_t max_tokens, char *err,
                                   size_t errlen);

/* The token in path for flag (its name in the message when the file cannot
 * be read: exits 2 with usage). Caller frees. */
char *rm_daemon_read_token(const rm_daemon *d, const char *path, const char *flag);

/* Binds --listen (printing LISTENING) and starts watching that it accepts.
 * registered is what registering the daemon's methods on d->srv returned
 * (nonzero: logged, nothing bound). Returns the bound port, or -1 after
 * logging why. */
int rm_daemon_listen(rm_daemon *d, int registered);

/* The daemon's id: id when given, else the host name (kept in d), else
 * fallback. */
const char *rm_daemon_id(rm_daemon *d, const char *id, const char *fallback);

/* From here on the hooks run with ctx (hooks is kept; id is the value of
 * the metrics' identity label): publishes a first time and starts --http
 * when asked for. Returns 0, or -1 after logging why. */
int rm_daemon_start(rm_daemon *d, const rm_daemon_hooks *hooks, void *ctx, const char *id);

/* Serves until the SIGTERM sequence ends, then stops --http, the probe
 * and the server (the hooks' stop first). */
void rm_daemon_run(rm_daemon *d);

/* After the daemon destroyed its own objects: frees the rest, shuts gRPC
 * down, logs "stopped". Returns main's exit code, 0. */
int rm_daemon_exit(rm_daemon *d);

/* Where the SIGTERM sequence stands. */
typedef enum {
    RM_DAEMON_SERVING,     /* no SIGTERM */
    RM_DAEMON_NOT_SERVING, /* health says NOT_SERVING; calls still accepted */
    RM_DAEMON_DRAINING,    /* the daemon's own work is asked to finish */
    RM_DAEMON_DRAIN_OVER,  /* --drain-timeout-ms passed too: stop regardless */
} rm_daemon_phase;

/* The sequence (pure): for SIGTERM seen at term_ms (0: none) and now_ms,
 * NOT_SERVING for delay_ms (routers and kubelet stop sending), then
 * draining for drain_ms. The server loop ends from DRAINING on once the
 * daemon's own work finished (its in-flight calls get --drain-timeout-ms
 * of their own from rm_rpc_server_run). */
rm_daemon_phase rm_daemon_phase_at(uint64_t term_ms, uint64_t now_ms, uint32_t delay_ms,
                                   uint32_t drain_ms);

#endif
