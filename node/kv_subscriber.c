/* kv_subscriber.c -- see kv_subscriber.h; the wire format and the engines'
 * behaviour it relies on are in node/KV_EVENTS.md. */
#include "kv_subscriber.h"

#include "log.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* A message with more frames than this is not one of ours: the rest are
 * read and dropped. */
#define MAX_FRAMES 8

struct rm_kv_sub {
    rm_kv_sub_config cfg;
    char *endpoint, *replay_endpoint, *topic;
    void *zctx, *sub, *dealer;
    pthread_t thread;
    int started_thread;

    /* Subscriber thread only. */
    uint64_t expected;       /* the next sequence number due */
    uint64_t live_next;      /* one past the last the SUB socket delivered: a replay poll
                              * may take [live_next, expected) before their live copies */
    uint64_t quiet_since_ms; /* the last batch or replay poll */
    int delivered_any;       /* a batch was handed over since the start */
    int need_resync;         /* a RESYNC must go out before the next batch */
    rm_kv_resync_reason pending_reason;

    /* Written by the subscriber thread (queued: also by rm_kv_sub_done),
     * read by anyone. */
    _Atomic uint64_t received, batches, events_seen, events_applied, unknown_events,
        unsupported_events, malformed, gaps, replays, replay_polls, replayed, replay_failures,
        restarts, resyncs, drops, last_seq, queued, queued_bytes;
    _Atomic int has_seq;
    _Atomic uint64_t restart_hint; /* rm_kv_sub_engine_restarted: restarts_seen + 1, 0: none */
};

#define INC(s, f, n) atomic_fetch_add_explicit(&(s)->f, (n), memory_order_relaxed)
#define GET(s, f)    atomic_load_explicit(&(s)->f, memory_order_relaxed)

const char *rm_kv_resync_reason_str(rm_kv_resync_reason r)
{
    switch (r) {
    case RM_KV_RESYNC_RESTART: return "engine restarted";
    case RM_KV_RESYNC_GAP: return "batches lost and not replayable";
    case RM_KV_RESYNC_START: return "joined after the engine's first batches, not replayable";
    case RM_KV_RESYNC_DROP: return "owner behind, batches dropped";
    }
    return "unknown";
}

/* ---- messages ------------------------------------------------------------ */

typedef struct msgset {
    zmq_msg_t m[MAX_FRAMES];
    rm_kv_frame f[MAX_FRAMES];
    size_t n;
    int too_many;
} msgset;

static void msgset_close(msgset *ms)
{
    for (size_t i = 0; i < ms->n; i++)
        zmq_msg_close(&ms->m[i]);
    ms->n = 0;
}

/* Reads every frame of one message (all are there once the first is).
 * Returns 0, or -1 with errno (ETERM when the subscriber stops). */
static int recv_all(void *sock, msgset *ms)
{
    ms->n = 0;
    ms->too_many = 0;
    for (;;) {
        zmq_msg_t scratch, *m = ms->n < MAX_FRAMES ? &ms->m[ms->n] : &scratch;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, 0) < 0) {
            int e = errno;
            zmq_msg_close(m);
            msgset_close(ms);
            errno = e;
            return -1;
        }
        int more = zmq_msg_more(m);
        if (m == &scratch) {
            zmq_msg_close(m);
            ms->too_many = 1;
        } else {
            ms->f[ms->n].data = zmq_msg_data(m);
            ms->f[ms->n].len = zmq_msg_size(m);
            ms->n++;
        }
        if (!more)
            return 0;
    }
}

/* ---- handing items to the owner ---------------------------------------------- */

static void item_free(rm_kv_item *it)
{
    rm_kv_batch_free(&it->batch);
    free(it);
}

static void log_malformed(rm_kv_sub *s, rm_kv_result rc, const char *where)
{
    uint64_t n = INC(s, malformed, 1) + 1;
    if ((n & (n - 1)) == 0) /* the 1st, 2nd, 4th, 8th...: a stream of garbage stays readable */
        rm_log(RM_LOG_WARN, "kv-events", "%s from %s skipped: %s (%llu so far)", where, s->endpoint,
               rm_kv_strerror(rc), (unsigned long long)n);
}

static void request_resync(rm_kv_sub *s, rm_kv_resync_reason why)
{
    if (s->need_resync)
        return;
    s->need_resync = 1;
    s->pending_reason = why;
}

/* Hands the pending RESYNC over if the owner has room for an item. */
static void try_emit_resync(rm_kv_sub *s)
{
    if (!s->need_resync || GET(s, queued) >= s->cfg.queue_max)
        return;
    rm_kv_item *it = rm_xcalloc(1, sizeof *it);
    it->kind = RM_KV_ITEM_RESYNC;
    it->reason = s->pending_reason;
    it->bytes = sizeof *it;
    rm_kv_batch_init(&it->batch);
    INC(s, queued, 1);
    INC(s, queued_bytes, it->bytes);
    uint64_t n = INC(s, resyncs, 1) + 1;
    rm_kv_resync_reason why = it->reason;
    if (s->cfg.deliver(s->cfg.ctx, it) != 0) {
        atomic_fetch_sub(&s->queued, 1);
        atomic_fetch_sub(&s->queued_bytes, sizeof *it);
        atomic_fetch_sub(&s->resyncs, 1);
        item_free(it);
        return; /* still pending: tried again on the next message or poll timeout */
    }
    s->need_resync = 0;
    rm_log(RM_LOG_WARN, "kv-events", "%s: mirror resync #%llu (%s)", s->endpoint,
           (unsigned long long)n, rm_kv_resync_reason_str(why));
}

static void drop(rm_kv_sub *s, rm_kv_item *it)
{
    INC(s, drops, 1);
    item_free(it);
}

static void deliver_batch(rm_kv_sub *s, rm_kv_item *it)
{
    try_emit_resync(s);
    if (s->need_resync) { /* nothing may overtake the resync */
        drop(s, it);
        return;
    }
    uint64_t q = GET(s, queued), qb = GET(s, queued_bytes);
    /* An empty queue always takes one item, however large (it is capped by
     * the decoder), so a big batch cannot wedge the stream. */
    if (q >= s->cfg.queue_max || (q > 0 && qb + it->bytes > s->cfg.queue_max_bytes)) {
        drop(s, it);
        request_resync(s, RM_KV_RESYNC_DROP);
        return;
    }
    /* Counted before the owner can see the item, so that whoever has seen
     * an item also sees it counted. */
    uint32_t n_events = it->batch.n_events, unknown = it->batch.n_unknown,
             unsupported = it->batch.n_unsupported;
    size_t bytes = it->bytes;
    INC(s, queued, 1);
    INC(s, queued_bytes, bytes);
    INC(s, batches, 1);
    INC(s, events_seen, n_events);
    INC(s, unknown_events, unknown);
    INC(s, unsupported_events, unsupported);
    if (s->cfg.deliver(s->cfg.ctx, it) != 0) {
        atomic_fetch_sub(&s->queued, 1);
        atomic_fetch_sub(&s->queued_bytes, bytes);
        atomic_fetch_sub(&s->batches, 1);
        atomic_fetch_sub(&s->events_seen, n_events);
        atomic_fetch_sub(&s->unknown_events, unknown);
        atomic_fetch_sub(&s->unsupported_events, unsupported);
        drop(s, it);
        request_resync(s, RM_KV_RESYNC_DROP);
        return;
    }
    s->delivered_any = 1;
}

/* Decodes a payload whose sequence number is due and hands it over;
 * a payload that does not decode is counted and skipped. */
static void take(rm_kv_sub *s, uint64_t seq, const rm_kv_frame *payload, int replayed)
{
    rm_kv_item *it = rm_xcalloc(1, sizeof *it);
    it->kind = RM_KV_ITEM_BATCH;
    it->replayed = replayed;
    rm_kv_batch_init(&it->batch);
    rm_kv_result rc = rm_kv_decode_payload(payload->data, payload->len, &it->batch);
    s->expected = seq + 1;
    atomic_store_explicit(&s->last_seq, seq, memory_order_relaxed);
    atomic_store_explicit(&s->has_seq, 1, memory_order_relaxed);
    if (rc != RM_KV_OK) {
        item_free(it);
        log_malformed(s, rc, replayed ? "replayed batch" : "batch");
        return;
    }
    it->batch.seq = seq;
    it->bytes = sizeof *it + it->batch.bytes;
    if (replayed)
        INC(s, replayed, 1);
    deliver_batch(s, it);
}

/* ---- replay ------------------------------------------------------------------- */

static int dealer_open(rm_kv_sub *s, char *err, size_t errlen)
{
    int zero = 0;
    int64_t maxmsg = RM_KV_MAX_PAYLOAD;
    s->dealer = zmq_socket(s->zctx, ZMQ_DEALER);
    if (!s->dealer || zmq_setsockopt(s->dealer, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(s->dealer, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
        zmq_connect(s->dealer, s->replay_endpoint)) {
        if (err)
            snprintf(err, errlen, "--worker-kv-replay %s: %s", s->replay_endpoint,
                     zmq_strerror(errno));
        if (s->dealer)
            zmq_close(s->dealer);
        s->dealer = NULL;
        return -1;
    }
    return 0;
}

/* Replies still on their way to an abandoned request would be read as the
 * answer to the next one: a fresh socket drops them. */
static void dealer_reset(rm_kv_sub *s)
{
    zmq_close(s->dealer);
    s->dealer = NULL;
    if (dealer_open(s, NULL, 0) != 0)
        rm_log(RM_LOG_WARN, "kv-events", "replay socket %s: cannot reopen: %s", s->replay_endpoint,
               zmq_strerror(errno));
}

/* Asks the replay socket for [expected, upto) and hands those batches over.
 * Returns 0 when expected reached upto. upto UINT64_MAX (a poll): whatever
 * it has from expected on; then 0 when its end marker came, and a batch
 * later than expected (the batches before it are gone from its buffer too)
 * resyncs and goes on from there. */
static int replay(rm_kv_sub *s, uint64_t upto)
{
    int poll = upto == UINT64_MAX;
    if (!s->dealer || (!poll && upto - s->expected > s->cfg.replay_max))
        return -1;
    if (poll)
        INC(s, replay_polls, 1);
    else
        INC(s, replays, 1);
    uint64_t from = s->expected;
    uint8_t start[8];
    for (int i = 0; i < 8; i++)
        start[i] = (uint8_t)(s->expected >> (56 - 8 * i));
    if (zmq_send(s->dealer, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(s->dealer, start, sizeof start, ZMQ_DONTWAIT) < 0) {
        dealer_reset(s);
        return -1;
    }
    uint64_t deadline = rm_now_ms() + (uint64_t)s->cfg.replay_timeout_ms;
    int ended = 0;
    while (s->expected < upto) {
        uint64_t now = rm_now_ms();
        if (now >= deadline)
            break;
        zmq_pollitem_t it = {s->dealer, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)(deadline - now)) <= 0)
            break; /* timeout, or stopping */
        msgset ms;
        if (recv_all(s->dealer, &ms) < 0)
            break;
        uint64_t seq;
        rm_kv_frame payload;
        rm_kv_result rc = rm_kv_parse_replay(ms.f, ms.n, &seq, &payload);
        if (rc != RM_KV_OK || ms.too_many) {
            msgset_close(&ms);
            log_malformed(s, RM_KV_ERR_FRAMES, "replay reply");
            break;
        }
        if (seq == RM_KV_SEQ_END) {
            msgset_close(&ms);
            ended = 1;
            break;
        }
        rm_kv_replay_verdict v = rm_kv_replay_classify(s->expected, seq);
        if (v == RM_KV_REPLAY_HOLE && poll) {
            INC(s, replay_failures, 1);
            request_resync(s, s->delivered_any ? RM_KV_RESYNC_GAP : RM_KV_RESYNC_START);
            v = RM_KV_REPLAY_TAKE;
        }
        if (v == RM_KV_REPLAY_TAKE && poll && s->expected == from)
            INC(s, gaps, 1); /* lost on the wire, found by the poll (counted before the owner
                                can see the batch) */
        if (v == RM_KV_REPLAY_TAKE)
            take(s, seq, &payload, 1);
        msgset_close(&ms);
        if (v == RM_KV_REPLAY_HOLE)
            break;
    }
    if (!ended)
        dealer_reset(s);
    return poll ? (ended ? 0 : -1) : s->expected == upto ? 0 : -1;
}

/* Batches [expected, upto) are missing: replay them, or give up on them. */
static void fill_gap(rm_kv_sub *s, uint64_t upto)
{
    uint64_t from = s->expected;
    if (replay(s, upto) == 0) {
        rm_log(RM_LOG_DEBUG, "kv-events", "%s: batches %llu..%llu recovered by replay", s->endpoint,
               (unsigned long long)from, (unsigned long long)(upto - 1));
        return;
    }
    INC(s, replay_failures, 1);
    request_resync(s, s->delivered_any ? RM_KV_RESYNC_GAP : RM_KV_RESYNC_START);
    s->expected = upto;
}

/* ---- the live stream ---------------------------------------------------------- */

static void on_live(rm_kv_sub *s, msgset *ms)
{
    uint64_t seq;
    INC(s, received, 1);
    if (ms->too_many || ms->n != 3 || rm_kv_parse_seq(&ms->f[1], &seq) != RM_KV_OK) {
        log_malformed(s, RM_KV_ERR_FRAMES, "message");
        return;
    }
    rm_kv_seq_verdict v = rm_kv_seq_classify(s->expected, s->live_next, seq);
    s->live_next = seq + 1;
    switch (v) {
    case RM_KV_SEQ_REPLAYED:
        rm_log(RM_LOG_DEBUG, "kv-events", "%s: batch %llu came live after its replay: skipped",
               s->endpoint, (unsigned long long)seq);
        return;
    case RM_KV_SEQ_RESTART:
        INC(s, restarts, 1);
        rm_log(RM_LOG_WARN, "kv-events",
               "%s: sequence went back from %llu to %llu: engine restarted", s->endpoint,
               (unsigned long long)(s->expected - 1), (unsigned long long)seq);
        request_resync(s, RM_KV_RESYNC_RESTART);
        s->expected = 0;
        if (seq > 0) { /* the new process's first batches: replayable like any gap */
            INC(s, gaps, 1);
            fill_gap(s, seq);
        }
        break;
    case RM_KV_SEQ_GAP:
        INC(s, gaps, 1);
        fill_gap(s, seq);
        break;
    case RM_KV_SEQ_NEXT: break;
    }
    take(s, seq, &ms->f[2], 0);
}

/* How long the live socket may stay quiet before the next thing to do:
 * a pending resync looks for room often; a replay poll is due after
 * replay_poll_ms (once a first batch gave a number to ask from). */
static long quiet_timeout(rm_kv_sub *s, uint64_t now)
{
    long t = -1;
    if (s->dealer && s->cfg.replay_poll_ms > 0 && GET(s, has_seq)) {
        uint64_t due = s->quiet_since_ms + (uint64_t)s->cfg.replay_poll_ms;
        t = due > now ? (long)(due - now) : 0;
    }
    if (s->need_resync && (t < 0 || t > 50))
        t = 50;
    return t;
}

/* The owner's word that the engine restarted (rm_kv_sub_engine_restarted),
 * taken unless the stream said so itself meanwhile. */
static void take_restart_hint(rm_kv_sub *s)
{
    uint64_t hint = atomic_exchange(&s->restart_hint, 0);
    if (!hint || GET(s, restarts) != hint - 1)
        return;
    INC(s, restarts, 1);
    rm_log(RM_LOG_INFO, "kv-events", "%s: the engine restarted: expecting its batches from 0",
           s->endpoint);
    s->expected = 0;
    s->live_next = 0;
}

static void *run(void *arg)
{
    rm_kv_sub *s = arg;
    s->quiet_since_ms = rm_now_ms();
    for (;;) {
        take_restart_hint(s);
        try_emit_resync(s);
        zmq_pollitem_t it = {s->sub, 0, ZMQ_POLLIN, 0};
        uint64_t now = rm_now_ms();
        int r = zmq_poll(&it, 1, quiet_timeout(s, now));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break; /* ETERM: rm_kv_sub_stop */
        }
        now = rm_now_ms();
        if (r == 0) {
            if (s->dealer && s->cfg.replay_poll_ms > 0 && GET(s, has_seq) &&
                now - s->quiet_since_ms >= (uint64_t)s->cfg.replay_poll_ms) {
                replay(s, UINT64_MAX);
                s->quiet_since_ms = rm_now_ms();
            }
            continue;
        }
        s->quiet_since_ms = now;
        msgset ms;
        if (recv_all(s->sub, &ms) < 0) {
            if (errno == ETERM)
                break;
            continue;
        }
        on_live(s, &ms);
        msgset_close(&ms);
    }
    zmq_close(s->sub);
    s->sub = NULL;
    if (s->dealer)
        zmq_close(s->dealer);
    s->dealer = NULL;
    return NULL;
}

/* ---- lifecycle ----------------------------------------------------------------- */

rm_kv_sub *rm_kv_sub_start(const rm_kv_sub_config *cfg, char *err, size_t errlen)
{
    if (!cfg->endpoint || !cfg->endpoint[0] || !cfg->deliver) {
        snprintf(err, errlen, "kv subscriber: %s", cfg->deliver ? "no endpoint" : "no deliver");
        return NULL;
    }
    rm_kv_sub *s = rm_xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    if (!s->cfg.queue_max)
        s->cfg.queue_max = 256;
    if (!s->cfg.queue_max_bytes)
        s->cfg.queue_max_bytes = (size_t)64 << 20;
    if (!s->cfg.replay_max)
        s->cfg.replay_max = 10000;
    if (s->cfg.replay_timeout_ms <= 0)
        s->cfg.replay_timeout_ms = 2000;
    if (s->cfg.rcvhwm <= 0)
        s->cfg.rcvhwm = 1000;
    if (s->cfg.replay_poll_ms == 0)
        s->cfg.replay_poll_ms = 1000;
    s->endpoint = rm_xstrndup(cfg->endpoint, strlen(cfg->endpoint));
    const char *topic = cfg->topic ? cfg->topic : "";
    s->topic = rm_xstrndup(topic, strlen(topic));
    if (cfg->replay_endpoint && cfg->replay_endpoint[0])
        s->replay_endpoint = rm_xstrndup(cfg->replay_endpoint, strlen(cfg->replay_endpoint));
    s->cfg.endpoint = s->endpoint;
    s->cfg.replay_endpoint = s->replay_endpoint;
    s->cfg.topic = s->topic;

    s->zctx = zmq_ctx_new();
    int zero = 0;
    int64_t maxmsg = RM_KV_MAX_PAYLOAD;
    if (!s->zctx || !(s->sub = zmq_socket(s->zctx, ZMQ_SUB)) ||
        zmq_setsockopt(s->sub, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(s->sub, ZMQ_RCVHWM, &s->cfg.rcvhwm, sizeof s->cfg.rcvhwm) ||
        zmq_setsockopt(s->sub, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
        zmq_setsockopt(s->sub, ZMQ_SUBSCRIBE, s->topic, strlen(s->topic)) ||
        zmq_connect(s->sub, s->endpoint)) {
        snprintf(err, errlen, "--worker-kv-events %s: %s", s->endpoint, zmq_strerror(errno));
        rm_kv_sub_destroy(s);
        return NULL;
    }
    if (s->replay_endpoint && dealer_open(s, err, errlen) != 0) {
        rm_kv_sub_destroy(s);
        return NULL;
    }
    if (pthread_create(&s->thread, NULL, run, s) != 0) {
        snprintf(err, errlen, "kv subscriber: cannot start its thread");
        rm_kv_sub_destroy(s);
        return NULL;
    }
    s->started_thread = 1;
    return s;
}

void rm_kv_sub_done(rm_kv_sub *s, rm_kv_item *item, uint64_t applied)
{
    INC(s, events_applied, applied);
    atomic_fetch_sub(&s->queued_bytes, item->bytes);
    atomic_fetch_sub(&s->queued, 1);
    item_free(item);
}

void rm_kv_sub_engine_restarted(rm_kv_sub *s, uint64_t restarts_seen)
{
    atomic_store(&s->restart_hint, restarts_seen + 1);
}

void rm_kv_sub_stats_get(rm_kv_sub *s, rm_kv_sub_stats *o)
{
    o->received = GET(s, received);
    o->batches = GET(s, batches);
    o->events_seen = GET(s, events_seen);
    o->events_applied = GET(s, events_applied);
    o->unknown_events = GET(s, unknown_events);
    o->unsupported_events = GET(s, unsupported_events);
    o->malformed = GET(s, malformed);
    o->gaps = GET(s, gaps);
    o->replays = GET(s, replays);
    o->replay_polls = GET(s, replay_polls);
    o->replayed = GET(s, replayed);
    o->replay_failures = GET(s, replay_failures);
    o->restarts = GET(s, restarts);
    o->resyncs = GET(s, resyncs);
    o->drops = GET(s, drops);
    o->last_seq = GET(s, last_seq);
    o->queued = GET(s, queued);
    o->queued_bytes = GET(s, queued_bytes);
    o->has_seq = GET(s, has_seq);
}

void rm_kv_sub_stop(rm_kv_sub *s)
{
    if (!s || !s->zctx)
        return;
    zmq_ctx_shutdown(s->zctx); /* the thread's zmq_poll returns ETERM */
    if (s->started_thread)
        pthread_join(s->thread, NULL);
    s->started_thread = 0;
    if (s->sub)
        zmq_close(s->sub);
    if (s->dealer)
        zmq_close(s->dealer);
    s->sub = s->dealer = NULL;
    zmq_ctx_term(s->zctx);
    s->zctx = NULL;
}

void rm_kv_sub_destroy(rm_kv_sub *s)
{
    if (!s)
        return;
    rm_kv_sub_stop(s);
    free(s->endpoint);
    free(s->replay_endpoint);
    free(s->topic);
    free(s);
}
