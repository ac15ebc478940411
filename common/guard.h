/* guard.h -- decision rules of the node's resource guards, kept apart from
 * the I/O that feeds them (each has its own unit test): when a KV stream has
 * held pages too long, when refusals are worth a log line, and which part
 * of a gRPC peer string names the caller's address. */
#ifndef RM_GUARD_H
#define RM_GUARD_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    RM_STREAM_KEEP = 0,
    RM_STREAM_IDLE,          /* waited on its client longer than the idle bound */
    RM_STREAM_LEASE_EXPIRED, /* the lease a ReadKV streams under has run out */
} rm_stream_verdict;

/* What to do with a KV stream now.
 *   waiting_since_ms  when it began waiting on its client (a receive asked
 *                     for, a send started); 0: not waiting (times are > 0)
 *   idle_ms           the idle bound; 0: none
 *   lease_expires_ms  end of the lease whose pages it holds; UINT64_MAX: none
 * An expired lease wins over idleness (it is the reason to tell). */
rm_stream_verdict rm_guard_stream(uint64_t now_ms, uint64_t waiting_since_ms, uint64_t idle_ms,
                                  uint64_t lease_expires_ms);

const char *rm_stream_verdict_str(rm_stream_verdict v);

/* At most one summary line per interval for a running count of events
 * (refusals), instead of one line per request. Zero-initialise, then set
 * interval_ms. */
typedef struct rm_log_limit {
    uint64_t interval_ms;
    uint64_t last_ms; /* when the last line was due; 0: never */
    uint64_t logged;  /* the total at that line */
} rm_log_limit;

/* total: the event count so far. Returns how many events the line due now
 * should report (and records it), or 0 when there is nothing new or the
 * last line is younger than interval_ms. The first event is reported at
 * once. */
uint64_t rm_log_limit_due(rm_log_limit *l, uint64_t total, uint64_t now_ms);

/* The address part of a gRPC peer string, without the port:
 *   "ipv4:10.0.0.5:41234" -> "10.0.0.5",
 *   "ipv6:[::1]:5000" or "ipv6:%5B::1%5D:5000" -> "::1";
 * anything else ("unix:/run/x.sock", ...) is kept whole. Writes at most
 * cap-1 bytes and a NUL (cap > 0); returns the length written. */
size_t rm_peer_address(const char *peer, char *out, size_t cap);

#endif
