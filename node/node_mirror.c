/* node_mirror.c -- precise mirroring on the node (node/KV_EVENTS.md): the
 * worker's KV events (node/kv_subscriber.h) and its HTTP looks
 * (node/worker_probe.h) applied to the cache through node/kv_mirror.h,
 * the pool sized from the worker, and what the node reports of it.
 *
 * Threads: kv_deliver runs on the subscriber's thread and probe_report on
 * the probe's; each only posts to the owner thread (rm_rpc_server_post).
 * Everything else here runs on the owner thread. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_mirror.h"
#include "kv_subscriber.h"
#include "log.h"
#include "node_internal.h"
#include "prom.h"
#include "worker_probe.h"

#define SKIP_LOG_MS 10000 /* skipped events: one summary line this often at most */

struct node_mirror {
    rm_node *n;
    rm_rpc_server *srv;
    rm_kv_sub *sub;
    rm_worker_probe *probe;
    rm_kv_mirror *m;
    /* Items that came before the namespace was known (the worker's model
     * from its /v1/models), applied in order once it is. The subscriber's
     * own bound (queue_max items not handed back) bounds them. */
    rm_kv_item **deferred;
    size_t ndeferred, cap;
    uint64_t batches, last_seq;
    int has_seq;
    double lag_ms;
    rm_worker_look last; /* the last look that reached the worker */
    int have_look;
    uint64_t worker_cache_tokens, worker_restarts;
    int block_warned, pool_warned;
    rm_log_limit skip_log;
};

typedef struct kv_post {
    node_mirror *nm;
    rm_kv_item *it;
} kv_post;

static rm_cache *cache_of(node_mirror *nm)
{
    return rm_node_cache(nm->n);
}

/* ---- events (owner thread) -------------------------------------------------- */

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void apply_item(node_mirror *nm, rm_kv_item *it)
{
    uint64_t applied = 0;
    if (it->kind == RM_KV_ITEM_RESYNC) {
        rm_kv_mirror_clear(nm->m, cache_of(nm), 1);
    } else {
        uint64_t now = rm_now_ms();
        for (uint32_t i = 0; i < it->batch.n_events; i++)
            applied += (uint64_t)rm_kv_mirror_apply(nm->m, cache_of(nm), &it->batch.events[i], now);
        nm->batches++;
        nm->last_seq = it->batch.seq;
        nm->has_seq = 1;
        if (it->batch.ts > 0)
            nm->lag_ms = wall_ms() - it->batch.ts * 1e3;
    }
    rm_kv_sub_done(nm->sub, it, applied);
}

static void kv_apply(void *arg)
{
    kv_post *p = arg;
    node_mirror *nm = p->nm;
    rm_kv_item *it = p->it;
    free(p);
    if (rm_kv_mirror_namespace(nm->m)) {
        apply_item(nm, it);
        return;
    }
    nm->deferred = rm_xgrow(nm->deferred, nm->ndeferred, &nm->cap, sizeof *nm->deferred, 16);
    nm->deferred[nm->ndeferred++] = it;
}

static int kv_deliver(void *ctx, rm_kv_item *it) /* the subscriber's thread */
{
    node_mirror *nm = ctx;
    kv_post *p = rm_xmalloc(sizeof *p);
    *p = (kv_post){nm, it};
    if (rm_rpc_server_post(nm->srv, kv_apply, p) != 0) {
        free(p);
        return -1; /* shutting down: the subscriber drops it */
    }
    return 0;
}

static void set_namespace(node_mirror *nm, const char *ns, const char *why)
{
    rm_kv_mirror_set_namespace(nm->m, cache_of(nm), ns);
    rm_log(RM_LOG_INFO, "node", "mirroring the worker's KV events into namespace '%s' (%s)", ns,
           why);
    for (size_t i = 0; i < nm->ndeferred; i++)
        apply_item(nm, nm->deferred[i]);
    nm->ndeferred = 0;
}

/* ---- the worker's looks (owner thread) ----------------------------------------- */

/* The pool holds the worker's whole cache, so the mirror never has to
 * evict on its own (it would count in evicted_tokens_total). */
static void size_from(node_mirror *nm, const rm_worker_look *look)
{
    if (!look->block_size || !look->num_gpu_blocks)
        return;
    rm_cache *c = cache_of(nm);
    uint32_t pt = rm_cache_page_tokens(c);
    uint64_t tokens = look->num_gpu_blocks * look->block_size;
    nm->worker_cache_tokens = tokens;
    if (look->block_size != pt && !nm->block_warned) {
        nm->block_warned = 1;
        rm_log(RM_LOG_ERROR, "node",
               "the worker's block_size is %u, --page-tokens %u: its KV events cannot be "
               "mirrored (refused and counted); start the node with --page-tokens %u",
               look->block_size, pt, look->block_size);
    }
    uint64_t want = (tokens + pt - 1) / pt, have = rm_cache_config_get(c)->pool_pages;
    if (want > have) {
        rm_cache_result rc = rm_cache_grow_pool(c, want);
        if (rc == RM_CACHE_OK)
            rm_log(RM_LOG_INFO, "node",
                   "pool grown from %" PRIu64 " to %" PRIu64 " pages: the worker caches %" PRIu64
                   " blocks of %u tokens",
                   have, want, look->num_gpu_blocks, look->block_size);
        else if (!nm->pool_warned)
            rm_log(RM_LOG_WARN, "node",
                   "the pool (%" PRIu64 " pages) is smaller than the worker's cache (%" PRIu64
                   " tokens) and cannot grow (%s): the mirror will evict on its own "
                   "(evicted_tokens_total)",
                   have, tokens, rm_cache_strerror(rc));
        nm->pool_warned |= rc != RM_CACHE_OK;
    }
    uint64_t pages = rm_cache_config_get(c)->pool_pages;
    rm_kv_mirror_set_max_blocks(nm->m, 2 * (pages > want ? pages : want));
}

typedef struct look_post {
    node_mirror *nm;
    rm_worker_look *look;
} look_post;

static void on_look(void *arg)
{
    look_post *p = arg;
    node_mirror *nm = p->nm;
    rm_worker_look *look = p->look;
    free(p);
    if (!look->reachable) {
        free(look);
        return;
    }
    if (!rm_kv_mirror_namespace(nm->m) && look->model[0]) {
        set_namespace(nm, look->model, "the model the worker serves");
        rm_worker_probe_model_known(nm->probe);
    }
    size_from(nm, look);
    if (nm->have_look && rm_worker_restarted(&nm->last, look)) {
        /* A new engine process: its cache is empty. Unless its own events
         * said so since the last look (a sequence that went back), what
         * the mirror holds is stale -- and would count hits the engine
         * cannot have until the new process publishes. */
        rm_kv_sub_stats ss;
        rm_kv_sub_stats_get(nm->sub, &ss);
        if (ss.restarts == nm->last.stamp) {
            nm->worker_restarts++;
            rm_kv_mirror_clear(nm->m, cache_of(nm), 1);
            rm_kv_sub_engine_restarted(nm->sub, ss.restarts);
            rm_log(RM_LOG_WARN, "node",
                   "the worker restarted (its /metrics: a new process): mirror emptied");
        }
    }
    nm->last = *look;
    nm->have_look = 1;
    free(look);
}

static void probe_report(void *ctx, rm_worker_look *look) /* the probe's thread */
{
    node_mirror *nm = ctx;
    look_post *p = rm_xmalloc(sizeof *p);
    *p = (look_post){nm, look};
    if (rm_rpc_server_post(nm->srv, on_look, p) != 0) {
        free(p);
        free(look);
    }
}

/* The subscriber's restart count, stamped on each look before it starts:
 * a restart its events showed after the last look is not the probe's. */
static uint64_t probe_stamp(void *ctx) /* the probe's thread */
{
    node_mirror *nm = ctx;
    rm_kv_sub_stats ss;
    rm_kv_sub_stats_get(nm->sub, &ss);
    return ss.restarts;
}

/* ---- life -------------------------------------------------------------------------- */

int node_mirror_start(rm_node *n, rm_rpc_server *srv, char *err, size_t errlen)
{
    const rm_node_config *cfg = &n->cfg;
    if (!cfg->worker_kv_events)
        return 0;
    node_mirror *nm = rm_xcalloc(1, sizeof *nm);
    nm->n = n;
    nm->srv = srv;
    nm->skip_log.interval_ms = SKIP_LOG_MS;
    uint64_t pages = rm_cache_config_get(&n->cache)->pool_pages;
    nm->m = rm_kv_mirror_new(&(rm_kv_mirror_config){.page_tokens = rm_cache_page_tokens(&n->cache),
                                                    .max_blocks = 2 * pages,
                                                    .media = cfg->worker_kv_media});
    rm_kv_sub_config sc = {.endpoint = cfg->worker_kv_events,
                           .replay_endpoint = cfg->worker_kv_replay,
                           .topic = cfg->worker_kv_topic,
                           .deliver = kv_deliver,
                           .ctx = nm};
    n->mirror = nm;
    if (!(nm->sub = rm_kv_sub_start(&sc, err, errlen))) {
        node_mirror_destroy(n);
        return -1;
    }
    if (cfg->worker_namespace)
        set_namespace(nm, cfg->worker_namespace, "--worker-namespace");
    if (cfg->worker_url) {
        rm_worker_probe_config pc = {.url = cfg->worker_url,
                                     .interval_ms = cfg->worker_probe_interval_ms,
                                     .timeout_ms = 2000,
                                     .want_model = !cfg->worker_namespace,
                                     .report = probe_report,
                                     .stamp = probe_stamp,
                                     .ctx = nm};
        if (!(nm->probe = rm_worker_probe_start(&pc, err, errlen))) {
            node_mirror_destroy(n);
            return -1;
        }
    }
    rm_log(RM_LOG_INFO, "node", "following the worker's KV events at %s%s%s", cfg->worker_kv_events,
           cfg->worker_kv_replay ? ", replay " : "",
           cfg->worker_kv_replay ? cfg->worker_kv_replay : "");
    return 0;
}

void node_mirror_stop(rm_node *n)
{
    node_mirror *nm = n->mirror;
    if (!nm)
        return;
    rm_worker_probe_stop(nm->probe);
    nm->probe = NULL;
    rm_kv_sub_stop(nm->sub);
}

void node_mirror_destroy(rm_node *n)
{
    node_mirror *nm = n->mirror;
    if (!nm)
        return;
    node_mirror_stop(n);
    for (size_t i = 0; i < nm->ndeferred; i++)
        rm_kv_sub_done(nm->sub, nm->deferred[i], 0);
    free(nm->deferred);
    rm_kv_sub_destroy(nm->sub);
    rm_kv_mirror_free(nm->m);
    free(nm);
    n->mirror = NULL;
}

const char *node_mirror_namespace(const rm_node *n)
{
    return n->mirror ? rm_kv_mirror_namespace(n->mirror->m) : NULL;
}

/* ---- what the node tells ---------------------------------------------------------- */

static uint64_t skipped_total(const rm_kv_mirror_stats *ms, const rm_kv_sub_stats *ss)
{
    return ms->skipped_group + ms->skipped_medium + ms->skipped_keyed + ms->block_size_mismatches +
           ms->no_tokens + ms->unknown_parent + ss->unknown_events + ss->unsupported_events;
}

/* n's mirror with its figures and its subscriber's, or NULL when there
 * is none. */
static node_mirror *figures(rm_node *n, rm_kv_mirror_stats *ms, rm_kv_sub_stats *ss)
{
    node_mirror *nm = n->mirror;
    if (nm) {
        rm_kv_mirror_stats_get(nm->m, ms);
        rm_kv_sub_stats_get(nm->sub, ss);
    }
    return nm;
}

void node_mirror_tick(rm_node *n, uint64_t now_ms)
{
    rm_kv_mirror_stats ms;
    rm_kv_sub_stats ss;
    node_mirror *nm = figures(n, &ms, &ss);
    if (!nm)
        return;
    uint64_t k = rm_log_limit_due(&nm->skip_log, skipped_total(&ms, &ss), now_ms);
    if (k)
        rm_log(RM_LOG_WARN, "node",
               "skipped %" PRIu64 " KV event(s) the mirror cannot use; so far: block_size "
               "other than --page-tokens %u: %" PRIu64 " (last %u), unknown parent: %" PRIu64
               ", LoRA or extra keys: %" PRIu64 ", other KV group: %" PRIu64
               ", other medium: %" PRIu64 ", no tokens: %" PRIu64 ", unknown type: %" PRIu64,
               k, rm_cache_page_tokens(&n->cache), ms.block_size_mismatches, ms.last_block_size,
               ms.unknown_parent, ms.skipped_keyed, ms.skipped_group, ms.skipped_medium,
               ms.no_tokens, ss.unknown_events + ss.unsupported_events);
}

void node_mirror_stats(rm_node *n, radixmesh_v1_NodeStats *rep)
{
    rm_kv_mirror_stats ms;
    rm_kv_sub_stats ss;
    node_mirror *nm = figures(n, &ms, &ss);
    if (!nm)
        return;
    const char *ns = rm_kv_mirror_namespace(nm->m);
    rep->kv_events = true;
    rep->kv_namespace = (char *)(ns ? ns : "");
    rep->kv_batches_total = nm->batches;
    rep->kv_events_applied_total = ms.applied;
    rep->kv_events_skipped_total = skipped_total(&ms, &ss);
    rep->kv_gaps_total = ss.gaps;
    rep->kv_replays_total = ss.replays + ss.replay_polls;
    rep->kv_replayed_total = ss.replayed;
    rep->kv_resyncs_total = ms.resyncs;
    rep->kv_drops_total = ss.drops;
    rep->kv_malformed_total = ss.malformed;
    rep->kv_last_seq = nm->last_seq;
    rep->kv_has_seq = nm->has_seq;
    rep->kv_block_size_mismatches_total = ms.block_size_mismatches;
    rep->kv_blocks = ms.blocks;
    rep->worker_cache_tokens = nm->worker_cache_tokens;
    rep->kv_worker_restarts_total = nm->worker_restarts;
    rep->kv_lag_ms = nm->lag_ms;
}

void node_mirror_metrics(rm_node *n, rm_sbuf *b, const char *labels)
{
    rm_kv_mirror_stats ms;
    rm_kv_sub_stats ss;
    node_mirror *nm = figures(n, &ms, &ss);
    if (!nm)
        return;
    const rm_prom_row m[] = {
        {"radixmesh_kv_batches_total", "counter", "Batches of the worker's KV events applied.",
         (double)nm->batches},
        {"radixmesh_kv_events_applied_total", "counter", "KV events applied to the mirror.",
         (double)ms.applied},
        {"radixmesh_kv_gaps_total", "counter", "Event batches lost on the wire (seen).",
         (double)ss.gaps},
        {"radixmesh_kv_replays_total", "counter",
         "Replay requests to the worker (gaps and quiet polls).",
         (double)(ss.replays + ss.replay_polls)},
        {"radixmesh_kv_replayed_total", "counter", "Batches recovered from the replay socket.",
         (double)ss.replayed},
        {"radixmesh_kv_resyncs_total", "counter",
         "Times the mirror was emptied to start again (engine restart, unfillable gap, drops).",
         (double)ms.resyncs},
        {"radixmesh_kv_worker_restarts_total", "counter",
         "Worker restarts its /metrics showed before its events did.", (double)nm->worker_restarts},
        {"radixmesh_kv_drops_total", "counter",
         "Event batches dropped because the node was behind.", (double)ss.drops},
        {"radixmesh_kv_malformed_total", "counter", "Event messages that did not decode.",
         (double)ss.malformed},
        {"radixmesh_kv_block_size_mismatches_total", "counter",
         "Stored-block events refused: block_size differs from --page-tokens.",
         (double)ms.block_size_mismatches},
        {"radixmesh_kv_unknown_parents_total", "counter",
         "Stored-block events whose parent chain the mirror does not hold.",
         (double)ms.unknown_parent},
        {"radixmesh_kv_skipped_events_total", "counter",
         "KV events not applied (unknown type, other group or medium, LoRA, block size...).",
         (double)skipped_total(&ms, &ss)},
        {"radixmesh_kv_last_seq", "gauge", "Sequence number of the last batch applied.",
         (double)nm->last_seq},
        {"radixmesh_kv_blocks", "gauge", "Blocks the mirror holds.", (double)ms.blocks},
        {"radixmesh_kv_mirror_bytes", "gauge", "Memory of the mirror's block records.",
         (double)ms.bytes},
        {"radixmesh_kv_queued_batches", "gauge", "Items delivered and not yet applied.",
         (double)ss.queued},
        {"radixmesh_kv_lag_seconds", "gauge",
         "The last batch: applied this long after the engine stamped it.", nm->lag_ms / 1e3},
        {"radixmesh_kv_foreign_inserts_total", "counter",
         "Inserts into the mirrored namespace, ignored: the worker's events fill it.",
         (double)n->mirror_foreign_inserts},
        {"radixmesh_worker_cache_tokens", "gauge",
         "The worker's KV cache in tokens (num_gpu_blocks x block_size; 0: unknown).",
         (double)nm->worker_cache_tokens},
    };
    rm_prom_rows(b, m, RM_ARRAY_LEN(m), labels);
}
