#include "accept_probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "flags.h"
#include "log.h"
#include "util.h"

struct rm_accept_probe {
    struct sockaddr_storage target;
    socklen_t target_len;
    int port;
    uint32_t interval_ms;
    unsigned needed, misses;
    int fd;             /* the probe connection, -1: none */
    uint64_t looked_ms; /* when fd was opened or last looked at */
    int accepting;
    const char *module;
};

int rm_accept_judge(rm_probe_look look, unsigned *misses, unsigned needed)
{
    if (look == RM_LOOK_ACCEPTED)
        *misses = 0;
    else if (look == RM_LOOK_WAITING && *misses < needed)
        (*misses)++;
    return *misses < needed;
}

/* The address a client of listen reaches it on. */
static int resolve(const char *listen, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    int ignored;
    if (rm_parse_hostport(listen, host, sizeof host, &ignored) != 0)
        return -1;
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    if (!*h || !strcmp(h, "0.0.0.0") || !strcmp(h, "::") || !strcmp(h, "localhost"))
        h = "127.0.0.1";
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(h, ps, &hints, &res) != 0 || !res)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

rm_accept_probe *rm_accept_probe_create(const char *listen, int port, uint32_t interval_ms,
                                        unsigned needed, const char *module)
{
    rm_accept_probe *p = rm_xcalloc(1, sizeof *p);
    if (resolve(listen, port, &p->target, &p->target_len) != 0) {
        rm_log(RM_LOG_WARN, module,
               "cannot probe the gRPC listener at %s: readiness does not "
               "watch it",
               listen);
        free(p);
        return NULL;
    }
    p->port = port;
    p->interval_ms = interval_ms;
    p->needed = needed;
    p->fd = -1;
    p->accepting = 1;
    p->module = module;
    return p;
}

/* Asks sock_diag for the server's end of the probe connection: local =
 * the probe's peer, remote = the probe's own address. */
static rm_probe_look server_end(int probe)
{
    struct sockaddr_storage me, peer;
    socklen_t ml = sizeof me, pl = sizeof peer;
    int soerr = 0;
    socklen_t el = sizeof soerr;
    if (getsockopt(probe, SOL_SOCKET, SO_ERROR, &soerr, &el) != 0 || soerr)
        return RM_LOOK_WAITING; /* refused: nothing listens */
    if (getpeername(probe, (struct sockaddr *)&peer, &pl) != 0)
        return errno == ENOTCONN ? RM_LOOK_WAITING : RM_LOOK_UNKNOWN; /* SYN unanswered */
    if (getsockname(probe, (struct sockaddr *)&me, &ml) != 0)
        return RM_LOOK_UNKNOWN;
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 r;
    } req;
    memset(&req, 0, sizeof req);
    req.nlh.nlmsg_len = sizeof req;
    req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.nlh.nlmsg_flags = NLM_F_REQUEST;
    req.r.sdiag_family = (uint8_t)me.ss_family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = ~0u;
    req.r.id.idiag_cookie[0] = req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    if (me.ss_family == AF_INET) {
        const struct sockaddr_in *a = (void *)&me, *b = (void *)&peer;
        req.r.id.idiag_sport = b->sin_port;
        req.r.id.idiag_dport = a->sin_port;
        memcpy(req.r.id.idiag_src, &b->sin_addr, 4);
        memcpy(req.r.id.idiag_dst, &a->sin_addr, 4);
    } else {
        const struct sockaddr_in6 *a = (void *)&me, *b = (void *)&peer;
        req.r.id.idiag_sport = b->sin6_port;
        req.r.id.idiag_dport = a->sin6_port;
        memcpy(req.r.id.idiag_src, &b->sin6_addr, 16);
        memcpy(req.r.id.idiag_dst, &a->sin6_addr, 16);
    }
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0)
        return RM_LOOK_UNKNOWN;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    struct timeval tv = {1, 0};
    setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    rm_probe_look look = RM_LOOK_UNKNOWN;
    long buf[1024]; /* aligned for nlmsghdr */
    if (sendto(nl, &req, sizeof req, 0, (struct sockaddr *)&kernel, sizeof kernel) ==
        (ssize_t)sizeof req) {
        ssize_t n = recv(nl, buf, sizeof buf, 0);
        const struct nlmsghdr *h = (const struct nlmsghdr *)buf;
        if (n >= (ssize_t)sizeof *h && NLMSG_OK(h, (size_t)n)) {
            if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY &&
                h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
                const struct inet_diag_msg *m = NLMSG_DATA(h);
                /* A listener answers when the connection itself is gone
                 * (inet_lookup falls back to it): no verdict then. */
                if (m->idiag_state != TCP_LISTEN)
                    look = m->idiag_inode ? RM_LOOK_ACCEPTED : RM_LOOK_WAITING;
            } else if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                /* Gone: the server accepted it and closed it already. */
                if (e->error == -ENOENT)
                    look = RM_LOOK_ACCEPTED;
            }
        }
    }
    close(nl);
    return look;
}

int rm_accept_probe_tick(rm_accept_probe *p, uint64_t now_ms)
{
    if (!p)
        return 1;
    if (p->fd >= 0 && now_ms - p->looked_ms < p->interval_ms)
        return p->accepting;
    if (p->fd >= 0) {
        rm_probe_look look = server_end(p->fd);
        int was = p->accepting;
        p->accepting = rm_accept_judge(look, &p->misses, p->needed);
        if (was && !p->accepting)
            rm_log(RM_LOG_ERROR, p->module,
                   "gRPC is not accepting connections on port %d: a probe connection waited "
                   "%u ms unaccepted (gRPC 1.51 does not recover once it ran out of file "
                   "descriptors); /readyz fails, restart the daemon",
                   p->port, p->misses * p->interval_ms);
        else if (!was && p->accepting)
            rm_log(RM_LOG_INFO, p->module, "gRPC accepts connections on port %d again", p->port);
        if (look == RM_LOOK_WAITING) {
            /* The same connection waits on: a wedged listener never takes
             * it, a starved one (a busy machine, valgrind) takes it late,
             * and that resets the count. New probes each waiting an
             * interval would count a slow listener as a stuck one. */
            p->looked_ms = now_ms;
            return p->accepting;
        }
        close(p->fd);
        p->fd = -1;
    }
    int fd = socket(p->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0) /* a failure shows in the next look */
        (void)!connect(fd, (struct sockaddr *)&p->target, p->target_len);
    p->fd = fd; /* none (out of descriptors): try again next tick */
    p->looked_ms = now_ms;
    return p->accepting;
}

void rm_accept_probe_destroy(rm_accept_probe *p)
{
    if (!p)
        return;
    if (p->fd >= 0)
        close(p->fd);
    free(p);
}
