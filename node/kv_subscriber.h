/* kv_subscriber.h -- follows one inference engine's KV-cache event stream.
 *
 * A thread of its own holds a ZeroMQ SUB socket connected to the engine's
 * event publisher (vLLM --kv-events-config endpoint, SGLang likewise) and,
 * optionally, a DEALER connected to its replay ROUTER. It decodes every
 * batch (common/kv_events.h), checks the sequence numbers and hands the
 * owner of the mirror a stream of items, in order:
 *
 *   BATCH   the next batch, exactly once, in sequence order -- whether it
 *           came live or was fetched again from the replay socket;
 *   RESYNC  what the owner mirrors can no longer be trusted: clear it and
 *           rebuild from the batches that follow.
 *
 * When resyncs happen (each counted, with its reason):
 *   RESTART  a sequence number went back below what the live stream had
 *            shown (a live copy of a batch a replay poll took first is
 *            skipped, not a restart): the engine restarted, its
 *            cache is empty and its numbering began again at 0. The batches
 *            of the new process that were missed are asked of the replay
 *            socket as for any gap.
 *   GAP      batches were lost on the wire and the replay socket could not
 *            supply them (none configured, gap over replay_max, its buffer
 *            no longer holds them, no answer within replay_timeout_ms).
 *            A loss is seen when a later batch arrives, or -- with a replay
 *            socket -- when it is polled after replay_poll_ms of quiet.
 *   START    the same when joining an engine that has published already.
 *   DROP     the owner was behind: queue_max items or queue_max_bytes were
 *            waiting, so a batch was dropped (counted), and the mirror is
 *            incomplete from then on. The resync is handed over as soon as
 *            there is room; batches arriving before that are dropped too.
 * A message that does not decode is counted (malformed) and skipped; the
 * sequence moves past it. Events of types the decoder does not know are
 * counted and left out of their batch.
 *
 * Threads: the subscriber thread calls deliver(); the owner calls
 * rm_kv_sub_done() for each item it took, from any thread. Nothing else
 * is shared. Memory: at most queue_max items / queue_max_bytes wait for
 * the owner, plus what libzmq buffers (rcvhwm messages of at most
 * RM_KV_MAX_PAYLOAD bytes each), plus one batch being decoded. */
#ifndef RM_KV_SUBSCRIBER_H
#define RM_KV_SUBSCRIBER_H

#include <stddef.h>
#include <stdint.h>

#include "kv_events.h"

typedef enum {
    RM_KV_ITEM_BATCH,
    RM_KV_ITEM_RESYNC,
} rm_kv_item_kind;

typedef enum {
    RM_KV_RESYNC_RESTART,
    RM_KV_RESYNC_GAP,
    RM_KV_RESYNC_START,
    RM_KV_RESYNC_DROP,
} rm_kv_resync_reason;

const char *rm_kv_resync_reason_str(rm_kv_resync_reason r);

typedef struct rm_kv_item {
    rm_kv_item_kind kind;
    rm_kv_resync_reason reason; /* RESYNC */
    int replayed;               /* BATCH: fetched from the replay socket */
    rm_kv_batch batch;          /* BATCH: batch.seq is its sequence number */
    size_t bytes;               /* counted against queue_max_bytes */
} rm_kv_item;

/* Called on the subscriber thread with each item, in order. Return 0 to
 * take it (the owner then calls rm_kv_sub_done once it has applied it),
 * -1 to refuse it (e.g. the owner is shutting down): the subscriber frees
 * it and counts a drop, as if the owner were behind. The node's deliver
 * posts the item to its owner thread (rm_rpc_server_post). */
typedef int (*rm_kv_deliver_fn)(void *ctx, rm_kv_item *item);

typedef struct rm_kv_sub_config {
    const char *endpoint;        /* the engine's PUB, e.g. tcp://127.0.0.1:5557; required */
    const char *replay_endpoint; /* its replay ROUTER; NULL: gaps resync at once */
    const char *topic;           /* subscription prefix; NULL or "": every topic */
    uint32_t queue_max;          /* items taken and not yet done; 0: 256 */
    size_t queue_max_bytes;      /* their bytes; 0: 64 MiB */
    uint32_t replay_max;         /* the largest gap asked of the replay socket; 0: 10000
                                  * (vLLM's default buffer_steps) */
    int replay_timeout_ms;       /* for one replay exchange; 0: 2000 */
    /* With a replay socket: after this long without a batch, ask it for
     * anything from the next number due, so that a batch lost last is
     * found without waiting for the next one. 0: 1000; < 0: never. */
    int replay_poll_ms;
    int rcvhwm;               /* SUB receive high-water mark, messages; 0: 1000 */
    rm_kv_deliver_fn deliver; /* required */
    void *ctx;
} rm_kv_sub_config;

typedef struct rm_kv_sub_stats {
    uint64_t received;           /* messages read on the SUB socket */
    uint64_t batches;            /* batches delivered (live and replayed) */
    uint64_t events_seen;        /* events in the delivered batches */
    uint64_t events_applied;     /* as the owner reported in rm_kv_sub_done */
    uint64_t unknown_events;     /* of types the decoder does not know (skipped) */
    uint64_t unsupported_events; /* known, but in a shape we cannot use (skipped) */
    uint64_t malformed;          /* messages or replies that did not decode (skipped) */
    uint64_t gaps;               /* sequence jumps seen on the SUB socket */
    uint64_t replays;            /* replay requests sent for gaps */
    uint64_t replay_polls;       /* replay requests sent after replay_poll_ms of quiet */
    uint64_t replayed;           /* batches recovered from the replay socket */
    uint64_t replay_failures;    /* gaps the replay socket did not fill */
    uint64_t restarts;           /* sequence numbers that went backwards */
    uint64_t resyncs;            /* RESYNC items delivered */
    uint64_t drops;              /* batches dropped: the owner was behind or refused */
    uint64_t last_seq;           /* the last sequence number handled (has_seq) */
    uint64_t queued;             /* items delivered and not yet done */
    uint64_t queued_bytes;
    int has_seq;
} rm_kv_sub_stats;

typedef struct rm_kv_sub rm_kv_sub;

/* Creates the sockets, connects them and starts the thread. Returns NULL
 * with a reason in err (an endpoint libzmq refuses, a missing deliver).
 * Connecting is asynchronous: an engine that is not up yet is waited for. */
rm_kv_sub *rm_kv_sub_start(const rm_kv_sub_config *cfg, char *err, size_t errlen);

/* The owner is finished with item (applied events of its batch were used;
 * 0 for a RESYNC): frees it and makes room. Any thread. */
void rm_kv_sub_done(rm_kv_sub *s, rm_kv_item *item, uint64_t applied);

/* The engine restarted, as the owner learnt elsewhere (the node: its
 * /metrics showed a new process) and has emptied its mirror for it:
 * unless the subscriber has counted a restart of its own since
 * restarts_seen (its stats' restarts), it expects the new process's
 * numbering from 0 -- batches it missed are asked of the replay socket at
 * the next poll -- and counts the restart; no RESYNC is delivered for it.
 * Any thread. */
void rm_kv_sub_engine_restarted(rm_kv_sub *s, uint64_t restarts_seen);

/* A consistent-enough snapshot (each counter read atomically). Any thread. */
void rm_kv_sub_stats_get(rm_kv_sub *s, rm_kv_sub_stats *out);

/* Stops the thread and closes the sockets; no deliver() call is made after
 * it returns. Items already taken stay valid. */
void rm_kv_sub_stop(rm_kv_sub *s);

/* Frees s. Every item it delivered must have been handed back with
 * rm_kv_sub_done first (stop the subscriber, then drain the owner). */
void rm_kv_sub_destroy(rm_kv_sub *s);

#endif
