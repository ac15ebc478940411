/* nodes_dns.c -- --nodes-dns: the resolver thread and applying its lists
 * to the router (see nodes_dns.h). */
#include "nodes_dns.h"

#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "flags.h"
#include "log.h"
#include "util.h"

struct rm_nodes_dns {
    char host[256];
    int port;
    uint32_t interval_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    char **addrs; /* latest list, "ip:port" */
    size_t naddrs;
    uint64_t generation, applied;
    int stop;     /* set by the main thread: atomic accesses only */
    char **known; /* addresses currently in the membership (router thread) */
    size_t nknown;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void *dns_loop(void *p)
{
    rm_nodes_dns *d = p;
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

void rm_nodes_dns_apply(rm_nodes_dns *dns, rm_router *r)
{
    pthread_mutex_lock(&dns->mu);
    if (dns->generation == dns->applied) {
        pthread_mutex_unlock(&dns->mu);
        return;
    }
    dns->applied = dns->generation;
    for (size_t i = 0; i < dns->naddrs; i++) {
        int have = 0;
        for (size_t k = 0; k < dns->nknown; k++)
            have |= !strcmp(dns->known[k], dns->addrs[i]);
        if (!have && rm_router_add_node(r, NULL, dns->addrs[i]) == 0)
            rm_log(RM_LOG_INFO, "router", "discovered node address %s", dns->addrs[i]);
    }
    for (size_t k = 0; k < dns->nknown; k++) {
        int still = 0;
        for (size_t i = 0; i < dns->naddrs; i++)
            still |= !strcmp(dns->known[k], dns->addrs[i]);
        if (!still)
            rm_router_remove_node(r, dns->known[k]);
        free(dns->known[k]);
    }
    free(dns->known);
    dns->known = rm_xmalloc(sizeof *dns->known * (dns->naddrs + 1));
    dns->nknown = dns->naddrs;
    for (size_t i = 0; i < dns->naddrs; i++)
        dns->known[i] = rm_xstrndup(dns->addrs[i], strlen(dns->addrs[i]));
    pthread_mutex_unlock(&dns->mu);
}

rm_nodes_dns *rm_nodes_dns_start(const char *name_port, uint32_t interval_ms)
{
    rm_nodes_dns *d = rm_xcalloc(1, sizeof *d);
    if (rm_parse_hostport(name_port, d->host, sizeof d->host, &d->port)) {
        free(d);
        return NULL;
    }
    d->interval_ms = interval_ms;
    pthread_mutex_init(&d->mu, NULL);
    pthread_create(&d->thread, NULL, dns_loop, d);
    return d;
}

void rm_nodes_dns_stop(rm_nodes_dns *d)
{
    if (!d)
        return;
    __atomic_store_n(&d->stop, 1, __ATOMIC_RELEASE);
    pthread_join(d->thread, NULL);
    for (size_t i = 0; i < d->naddrs; i++)
        free(d->addrs[i]);
    free(d->addrs);
    for (size_t i = 0; i < d->nknown; i++)
        free(d->known[i]);
    free(d->known);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
