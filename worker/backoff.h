/* backoff.h -- when to try a cache endpoint again after it failed.
 *
 * A node that is down answers at once (connection refused), but one that
 * hangs costs every request the whole cache deadline. After a transport
 * failure (unreachable, deadline exceeded) the endpoint is skipped for a
 * delay that starts at RM_BACKOFF_MIN_MS and doubles per consecutive
 * failure up to RM_BACKOFF_MAX_MS; the first success clears it. Requests
 * made meanwhile compute everything themselves, as for any cache failure.
 *
 * Pure: the caller passes the clock and owns the state. */
#ifndef RM_BACKOFF_H
#define RM_BACKOFF_H

#include <stdint.h>

enum { RM_BACKOFF_MIN_MS = 1000, RM_BACKOFF_MAX_MS = 30000 };

typedef struct rm_backoff {
    uint64_t until_ms; /* skip before this time */
    uint32_t delay_ms; /* the last delay; 0: healthy */
} rm_backoff;

/* 1 if the endpoint may be tried at now_ms. */
int rm_backoff_allows(const rm_backoff *b, uint64_t now_ms);

/* Records the outcome of a try at now_ms: transport_failed 1 extends the
 * delay, 0 clears it. */
void rm_backoff_record(rm_backoff *b, uint64_t now_ms, int transport_failed);

#endif
