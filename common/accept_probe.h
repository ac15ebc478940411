/* accept_probe.h -- does the daemon's gRPC listener still accept?
 *
 * gRPC 1.51 stops accepting for good once accept4 fails (EMFILE: see
 * fdbudget.h) while calls on open connections carry on, so nothing else
 * notices. The probe opens a TCP connection to the daemon's own gRPC
 * port and every interval asks the kernel (sock_diag, for that one
 * connection) whether the server's end of it was accepted: a socket still
 * in the accept queue has no inode. Once it was, the next probe opens; one
 * still waiting after `needed` looks makes the listener "stuck", which the
 * daemons publish as /readyz 503. The same connection is looked at again
 * rather than a new one opened: a starved listener takes it late (and
 * counts as accepting), a wedged one never. The probe speaks no TLS and sends no bytes, so it works the
 * same with TLS, mTLS and tokens; the server closes it as a failed
 * handshake.
 *
 * Owner: the daemon's gRPC thread (its tick). */
#ifndef RM_ACCEPT_PROBE_H
#define RM_ACCEPT_PROBE_H

#include <stdint.h>

typedef enum {
    RM_LOOK_ACCEPTED, /* the probe connection reached the server */
    RM_LOOK_WAITING,  /* still in the accept queue, or never connected */
    RM_LOOK_UNKNOWN,  /* could not look (no descriptor, no sock_diag) */
} rm_probe_look;

/* The rule (pure): updates *misses with one look and returns whether the
 * listener counts as accepting, i.e. fewer than `needed` looks in a row
 * found the probe connection waiting. An unknown look changes nothing. */
int rm_accept_judge(rm_probe_look look, unsigned *misses, unsigned needed);

typedef struct rm_accept_probe rm_accept_probe;

/* A probe of the listener bound for listen ("HOST:PORT" as given; a
 * wildcard or "localhost" host is probed on loopback) at the bound port.
 * NULL, with a warning logged under module, when the address cannot be
 * probed. */
rm_accept_probe *rm_accept_probe_create(const char *listen, int port, uint32_t interval_ms,
                                        unsigned needed, const char *module);

/* One step from the tick: looks and reconnects once per interval.
 * Returns 1 while the listener counts as accepting (NULL p: always),
 * 0 while it is stuck. Logs when that changes. */
int rm_accept_probe_tick(rm_accept_probe *p, uint64_t now_ms);

void rm_accept_probe_destroy(rm_accept_probe *p);

#endif
