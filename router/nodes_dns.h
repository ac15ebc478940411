/* nodes_dns.h -- --nodes-dns: the router's members from the A records of
 * a name (e.g. a headless Service).
 *
 * A resolver thread re-reads the records every interval (getaddrinfo
 * blocks, and the server loop must not); the router's thread applies each
 * new list in its tick: addresses that appeared join (their ids learnt
 * from Stats), those that went leave. Owner of the applied membership:
 * the router's thread; the list in between is guarded by a mutex. */
#ifndef RM_NODES_DNS_H
#define RM_NODES_DNS_H

#include <stdint.h>

#include "router.h"

typedef struct rm_nodes_dns rm_nodes_dns;

/* Starts resolving name_port ("NAME:PORT") every interval_ms. Returns
 * NULL when it is not NAME:PORT. */
rm_nodes_dns *rm_nodes_dns_start(const char *name_port, uint32_t interval_ms);

/* Router thread: brings r's members in line with the latest list (nothing
 * to do when no new list came). */
void rm_nodes_dns_apply(rm_nodes_dns *d, rm_router *r);

/* Stops and joins the resolver, frees d. NULL is ignored. */
void rm_nodes_dns_stop(rm_nodes_dns *d);

#endif
