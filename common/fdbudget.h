/* fdbudget.h -- file descriptors: the process limit, and each listener's
 * share of it.
 *
 * gRPC core 1.51 has no cap on incoming connections (no channel argument
 * for it; the resource quota bounds memory and threads only), and once its
 * accept4 fails with EMFILE its listener never accepts again: on_read in
 * tcp_server_posix.cc stops re-arming itself on any error but EAGAIN
 * (grpc/grpc#20418; upstream retries since grpc/grpc#33656, 1.57). So the
 * daemons raise their soft limit to the hard one at start and keep their
 * libuv listeners (--http, the gateway) under caps that leave gRPC, and
 * the daemon's own files, a reserve. accept_probe.h watches for the day
 * gRPC still runs out. */
#ifndef RM_FDBUDGET_H
#define RM_FDBUDGET_H

#include <stddef.h>
#include <stdint.h>

/* Descriptors a daemon uses besides connections: stdio, epoll and event
 * fds, gRPC's and libuv's internals, channels to nodes, files it reads. */
#define RM_FD_BASE 64
/* A gateway's descriptors besides one per client connection and one per
 * request's worker connection: kept-alive worker connections (64), scrapes,
 * and connections refused at the cap while their 503 lingers (32). */
#define RM_FD_GATEWAY_FIXED 128

typedef struct rm_fd_plan {
    uint64_t limit;       /* the soft RLIMIT_NOFILE in force */
    uint64_t reserved;    /* RM_FD_BASE + gRPC's share: max(64, limit / 4) */
    uint64_t http_max;    /* --http connections at most (0: no --http) */
    uint64_t gateway_max; /* gateway client connections at most (0: no gateway) */
} rm_fd_plan;

/* The rule, a pure function: what remains of limit after the reserve goes
 * to the listeners that are on (wanted > 0), each getting at most what it
 * wants: --http a quarter of it when a gateway shares it (all of it
 * otherwise), the gateway the rest at two descriptors per connection
 * after RM_FD_GATEWAY_FIXED. Returns 0, or -1 with the reason in err when
 * the limit leaves a listener that is on no connection at all. */
int rm_fd_plan_make(uint64_t limit, uint64_t http_wanted, uint64_t gateway_wanted, rm_fd_plan *out,
                    char *err, size_t errlen);

/* Raises the soft RLIMIT_NOFILE to the hard limit (as far as the system
 * lets it). Returns the soft limit now in force; *before (may be NULL) is
 * the one found. */
uint64_t rm_fd_raise_limit(uint64_t *before);

/* For a daemon (or the worker) at start: raises the limit, makes the
 * plan and logs it under module (a warning naming http_flag, the flag
 * that set http_wanted, or --gateway-max-connections when a listener's
 * cap was lowered to fit). Returns 0, or -1 after logging why. */
int rm_fd_budget(uint64_t http_wanted, const char *http_flag, uint64_t gateway_wanted,
                 rm_fd_plan *out, const char *module);

#endif
