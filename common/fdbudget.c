#include "fdbudget.h"

#include <stdio.h>
#include <sys/resource.h>

#include "log.h"

int rm_fd_plan_make(uint64_t limit, uint64_t http_wanted, uint64_t gateway_wanted, rm_fd_plan *out,
                    char *err, size_t errlen)
{
    uint64_t grpc_share = limit / 4 > 64 ? limit / 4 : 64;
    uint64_t reserved = RM_FD_BASE + grpc_share;
    uint64_t avail = limit > reserved ? limit - reserved : 0;
    uint64_t http_share = gateway_wanted ? avail / 4 : avail;
    out->limit = limit;
    out->reserved = reserved;
    out->http_max = http_wanted < http_share ? http_wanted : http_share;
    uint64_t gw_fds = avail - out->http_max;
    uint64_t gw_share = gw_fds > RM_FD_GATEWAY_FIXED ? (gw_fds - RM_FD_GATEWAY_FIXED) / 2 : 0;
    out->gateway_max = gateway_wanted < gw_share ? gateway_wanted : gw_share;
    if ((http_wanted && !out->http_max) || (gateway_wanted && !out->gateway_max)) {
        snprintf(err, errlen,
                 "the open-files limit (RLIMIT_NOFILE %llu) leaves no connection for %s: "
                 "raise it (ulimit -n)",
                 (unsigned long long)limit,
                 http_wanted && !out->http_max ? "--http" : "the gateway");
        return -1;
    }
    return 0;
}

uint64_t rm_fd_raise_limit(uint64_t *before)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        if (before)
            *before = 1024;
        return 1024;
    }
    if (before)
        *before = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = {rl.rlim_max, rl.rlim_max};
        /* An unlimited hard limit is not a number the kernel takes for
         * files (nr_open bounds it): try a large one instead. */
        if (up.rlim_cur == RLIM_INFINITY)
            up.rlim_cur = 1u << 20;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl.rlim_cur = up.rlim_cur;
    }
    return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : rl.rlim_cur;
}

int rm_fd_budget(uint64_t http_wanted, const char *http_flag, uint64_t gateway_wanted,
                 rm_fd_plan *out, const char *module)
{
    uint64_t before, limit = rm_fd_raise_limit(&before);
    char err[256];
    if (rm_fd_plan_make(limit, http_wanted, gateway_wanted, out, err, sizeof err) != 0) {
        rm_log(RM_LOG_ERROR, module, "%s", err);
        return -1;
    }
    rm_log(RM_LOG_INFO, module,
           "file descriptors: limit %llu (soft limit was %llu), %llu kept for gRPC and the "
           "daemon, --http %llu connections, gateway %llu",
           (unsigned long long)limit, (unsigned long long)before, (unsigned long long)out->reserved,
           (unsigned long long)out->http_max, (unsigned long long)out->gateway_max);
    if (out->http_max < http_wanted)
        rm_log(RM_LOG_WARN, module, "%s %llu lowered to %llu to fit the open-files limit",
               http_flag, (unsigned long long)http_wanted, (unsigned long long)out->http_max);
    if (out->gateway_max < gateway_wanted)
        rm_log(RM_LOG_WARN, module,
               "--gateway-max-connections %llu lowered to %llu to fit the open-files limit",
               (unsigned long long)gateway_wanted, (unsigned long long)out->gateway_max);
    return 0;
}
