#include "engine.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "cache_client.h"
#include "flags.h"
#include "sample.h"
#include "util.h"

/* Connections to the nodes a router sent us to, most recent first; the
 * oldest is closed when a new one is needed. */
enum { MAX_NODES = 8 };

typedef struct node_conn {
    char addr[128];
    rm_cache_client cc;
    uint32_t page_tokens;
    uint64_t kv_bytes; /* the node's --kv-bytes-per-token */
    int checked;       /* page_tokens and kv_bytes read from its Stats */
    rm_backoff bo;     /* skipped after a transport failure */
} node_conn;

struct rm_engine {
    const rm_model *m;
    rm_engine_config cfg;
    char *cache_addr, *model_name;
    char ns[160];
    size_t kvb;
    uint8_t *kv; /* max_context KV records */
    rm_model_scratch *scratch;
    float *logits, *probs;
    uint32_t *idx, *seq;
    rm_cache_client router;
    int router_open;
    rm_backoff router_bo;
    node_conn *nodes[MAX_NODES];
    size_t nnodes;
    pthread_mutex_t mu; /* guards stats: read by other threads */
    rm_engine_stats stats;
};

const char *rm_gen_strerror(rm_gen_err e)
{
    switch (e) {
    case RM_GEN_OK: return "ok";
    case RM_GEN_EEMPTY: return "the prompt is empty";
    case RM_GEN_ETOKEN: return "a prompt token id is outside the vocabulary";
    case RM_GEN_ECONTEXT: return "the prompt is longer than the maximum context";
    case RM_GEN_EPARAM: return "bad sampling parameters";
    }
    return "unknown generation error";
}

void rm_gen_result_free(rm_gen_result *r)
{
    free(r->tokens);
    r->tokens = NULL;
    r->n_tokens = 0;
}

rm_engine *rm_engine_new(const rm_model *m, const rm_engine_config *cfg, char *err, size_t errlen)
{
    const char *cache = cfg->cache && strcmp(cfg->cache, "none") ? cfg->cache : NULL;
    if (cache) {
        char host[128];
        int port;
        if (rm_parse_hostport(cache, host, sizeof host, &port) != 0) {
            snprintf(err, errlen, "cache address '%s' is not HOST:PORT or none", cache);
            return NULL;
        }
    }
    rm_engine *e = rm_xcalloc(1, sizeof *e);
    e->m = m;
    e->cfg = *cfg;
    e->cache_addr = cache ? rm_xstrndup(cache, strlen(cache)) : NULL;
    const char *name = cfg->model_name ? cfg->model_name : "radixmesh-ref";
    e->model_name = rm_xstrndup(name, strlen(name));
    e->cfg.cache = e->cache_addr;
    e->cfg.model_name = e->model_name;
    if (!e->cfg.cache_timeout_ms)
        e->cfg.cache_timeout_ms = 5000;
    if (!e->cfg.read_chunk_tokens)
        e->cfg.read_chunk_tokens = 1024;
    snprintf(e->ns, sizeof e->ns, "%.120s/%016llx", name, (unsigned long long)m->digest);
    e->kvb = rm_model_kv_bytes(&m->cfg);
    e->kv = rm_xmalloc((size_t)m->cfg.max_context * e->kvb);
    e->scratch = rm_model_scratch_new(m);
    e->logits = rm_xmalloc(m->cfg.vocab * sizeof(float));
    e->probs = rm_xmalloc(m->cfg.vocab * sizeof(float));
    e->idx = rm_xmalloc(m->cfg.vocab * sizeof(uint32_t));
    e->seq = rm_xmalloc(((size_t)m->cfg.max_context + 1) * sizeof(uint32_t));
    pthread_mutex_init(&e->mu, NULL);
    return e;
}

static void node_close(node_conn *n)
{
    rm_cc_close(&n->cc);
    free(n);
}

void rm_engine_free(rm_engine *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->nnodes; i++)
        node_close(e->nodes[i]);
    if (e->router_open)
        rm_cc_close(&e->router);
    pthread_mutex_destroy(&e->mu);
    rm_model_scratch_free(e->scratch);
    free(e->kv);
    free(e->logits);
    free(e->probs);
    free(e->idx);
    free(e->seq);
    free(e->cache_addr);
    free(e->model_name);
    free(e);
}

const char *rm_engine_namespace(const rm_engine *e)
{
    return e->ns;
}

void rm_engine_stats_get(rm_engine *e, rm_engine_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    pthread_mutex_unlock(&e->mu);
}

/* Marks the request's cache use failed (the first reason is kept). */
static void cache_fail(rm_gen_result *r, int status, const char *what, const char *msg)
{
    if (r->cache_error)
        return;
    r->cache_error = 1;
    r->cache_status = status;
    snprintf(r->cache_msg, sizeof r->cache_msg, "%s: %s", what, msg);
}

static int transport_failed(const rm_gen_result *r)
{
    return r->cache_error && (r->cache_status == GRPC_STATUS_UNAVAILABLE ||
                              r->cache_status == GRPC_STATUS_DEADLINE_EXCEEDED);
}

/* Fails the request's cache use while b says to wait. */
static int backing_off(const rm_backoff *b, const char *what, rm_gen_result *r)
{
    uint64_t now = rm_now_ms();
    if (rm_backoff_allows(b, now))
        return 0;
    char msg[160];
    snprintf(msg, sizeof msg, "skipped for another %llu ms after a failure",
             (unsigned long long)(b->until_ms - now));
    cache_fail(r, GRPC_STATUS_UNAVAILABLE, what, msg);
    return 1;
}

/* The node connection for addr, opened and checked on first use; *tried
 * is set when the node was contacted (its outcome feeds its backoff). */
static node_conn *node_get(rm_engine *e, const char *addr, rm_gen_result *r, node_conn **tried)
{
    node_conn *n = NULL;
    size_t i = 0;
    for (; i < e->nnodes; i++)
        if (!strcmp(e->nodes[i]->addr, addr))
            break;
    if (i < e->nnodes) {
        n = e->nodes[i];
        memmove(e->nodes + 1, e->nodes, i * sizeof *e->nodes);
    } else {
        if (e->nnodes == MAX_NODES)
            node_close(e->nodes[--e->nnodes]);
        n = rm_xcalloc(1, sizeof *n);
        snprintf(n->addr, sizeof n->addr, "%s", addr);
        if (rm_cc_init_tls(&n->cc, addr, e->cfg.cache_timeout_ms, e->cfg.tls) != 0) {
            free(n);
            cache_fail(r, GRPC_STATUS_UNAVAILABLE, "connect", addr);
            return NULL;
        }
        rm_rpc_client_set_token(&n->cc.rpc, e->cfg.token);
        memmove(e->nodes + 1, e->nodes, e->nnodes * sizeof *e->nodes);
        e->nnodes++;
    }
    e->nodes[0] = n;
    if (backing_off(&n->bo, addr, r))
        return NULL;
    *tried = n;
    if (!n->checked) {
        radixmesh_v1_NodeStats st;
        char msg[200];
        int rc = rm_cc_stats(&n->cc, &st, msg, sizeof msg);
        if (rc == GRPC_STATUS_OK) {
            n->page_tokens = st.page_tokens;
            n->kv_bytes = st.kv_bytes_per_token;
            n->checked = n->page_tokens > 0;
        }
        pb_release(radixmesh_v1_NodeStats_fields, &st);
        if (rc != GRPC_STATUS_OK) {
            cache_fail(r, rc, "Stats", msg);
            return NULL;
        }
    }
    if (!n->checked || n->kv_bytes != e->kvb) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "node %s stores %llu KV bytes per token, the model needs %zu "
                 "(start it with --kv-bytes-per-token %zu)",
                 addr, (unsigned long long)n->kv_bytes, e->kvb, e->kvb);
        cache_fail(r, GRPC_STATUS_FAILED_PRECONDITION, "node", msg);
        return NULL;
    }
    return n;
}

/* The node to use for this prompt: the configured one, or the router's
 * choice. NULL (with r->cache_error) if there is none. */
static node_conn *node_for(rm_engine *e, const uint32_t *prompt, size_t n, rm_gen_result *r,
                           node_conn **tried)
{
    if (!e->cfg.cache_router)
        return node_get(e, e->cache_addr, r, tried);
    if (backing_off(&e->router_bo, e->cache_addr, r))
        return NULL;
    if (!e->router_open) {
        if (rm_cc_init_router_tls(&e->router, e->cache_addr, e->cfg.cache_timeout_ms, e->cfg.tls) !=
            0) {
            cache_fail(r, GRPC_STATUS_UNAVAILABLE, "connect", e->cache_addr);
            return NULL;
        }
        rm_rpc_client_set_token(&e->router.rpc, e->cfg.token);
        e->router_open = 1;
    }
    rm_cc_route_reply rr;
    char msg[200];
    int rc = rm_cc_route(&e->router, e->ns, prompt, n, &rr, msg, sizeof msg);
    if (rc == GRPC_STATUS_OK && !rr.address[0]) {
        rc = GRPC_STATUS_UNAVAILABLE;
        snprintf(msg, sizeof msg, "the router named no node address");
    }
    if (rc != GRPC_STATUS_OK)
        cache_fail(r, rc, "Route", msg);
    rm_backoff_record(&e->router_bo, rm_now_ms(), transport_failed(r));
    return rc == GRPC_STATUS_OK ? node_get(e, rr.address, r, tried) : NULL;
}

/* Match + ReadKV. Returns the number of leading prompt positions whose KV
 * is now in e->kv (0 on any failure); *lease gets the lease to release. */
static uint32_t cache_read(rm_engine *e, node_conn *nc, const rm_gen_params *p, rm_gen_result *r,
                           uint64_t *lease)
{
    char msg[200];
    rm_cc_match_reply mr;
    uint64_t t0 = rm_now_ns();
    int rc = rm_cc_match(&nc->cc, e->ns, p->prompt, p->n_prompt, 1, e->cfg.lease_ttl_ms, &mr, msg,
                         sizeof msg);
    r->match_ns += rm_now_ns() - t0;
    if (rc != GRPC_STATUS_OK) {
        cache_fail(r, rc, "Match", msg);
        return 0;
    }
    *lease = mr.lease_id;
    snprintf(r->node_id, sizeof r->node_id, "%s", mr.node_id);
    uint32_t matched = mr.matched_tokens < p->n_prompt ? mr.matched_tokens : (uint32_t)p->n_prompt;
    if (p->on_cache)
        p->on_cache(p->arg, RM_CACHE_MATCHED, matched);
    t0 = rm_now_ns();
    uint32_t done = 0;
    while (done < matched) {
        uint32_t want =
            matched - done < e->cfg.read_chunk_tokens ? matched - done : e->cfg.read_chunk_tokens;
        size_t got = 0, cap = (size_t)want * e->kvb;
        rc = rm_cc_read_kv(&nc->cc, *lease, done, want, e->kv + (size_t)done * e->kvb, cap, &got,
                           msg, sizeof msg);
        r->kv_bytes_read += got;
        if (rc == GRPC_STATUS_OK && got != cap) {
            rc = GRPC_STATUS_DATA_LOSS;
            snprintf(msg, sizeof msg, "%zu of %zu bytes", got, cap);
        }
        if (rc != GRPC_STATUS_OK) {
            cache_fail(r, rc, "ReadKV", msg);
            break;
        }
        done += want;
        if (p->on_cache)
            p->on_cache(p->arg, RM_CACHE_READ_PART, done);
    }
    r->readkv_ns = rm_now_ns() - t0;
    return r->cache_error ? 0 : matched;
}

/* WriteKV of the full pages of seq[0, len) past kv_start, then Release. */
static void cache_write(rm_engine *e, node_conn *nc, const uint32_t *seq, size_t len,
                        uint32_t kv_start, uint64_t lease, rm_gen_result *r)
{
    char msg[200];
    size_t full = len / nc->page_tokens * nc->page_tokens;
    uint64_t t0 = rm_now_ns();
    if (!r->cache_error && full > kv_start) {
        rm_cc_insert_reply ir;
        size_t bytes = (full - kv_start) * e->kvb;
        int rc = rm_cc_write_kv(&nc->cc, e->ns, seq, full, kv_start, lease,
                                e->kv + (size_t)kv_start * e->kvb, bytes, 1u << 20, &ir, msg,
                                sizeof msg);
        if (rc == GRPC_STATUS_OK)
            r->kv_bytes_written = bytes;
        else
            cache_fail(r, rc, "WriteKV", msg);
    }
    r->writekv_ns = rm_now_ns() - t0;
    /* A node that is gone or hung would only make Release wait out its
     * deadline too; the lease expires there on its own. */
    if (lease && !transport_failed(r)) {
        int rc = rm_cc_release(&nc->cc, lease, NULL, msg, sizeof msg);
        if (rc != GRPC_STATUS_OK)
            cache_fail(r, rc, "Release", msg);
    }
}

rm_gen_err rm_gen_check(const rm_model_config *c, const rm_gen_params *p, char *detail, size_t len)
{
    rm_sample_params sp = {p->temperature, p->top_p ? p->top_p : 1};
    if (!p->n_prompt) {
        snprintf(detail, len, "the prompt has no tokens");
        return RM_GEN_EEMPTY;
    }
    if (p->n_prompt > c->max_context) {
        snprintf(detail, len, "the prompt has %zu tokens, more than the maximum context of %u",
                 p->n_prompt, c->max_context);
        return RM_GEN_ECONTEXT;
    }
    for (size_t i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] >= c->vocab) {
            snprintf(detail, len, "prompt token %zu is %u, outside the vocabulary of %u", i,
                     p->prompt[i], c->vocab);
            return RM_GEN_ETOKEN;
        }
    if (!p->max_tokens || !rm_sample_params_valid(&sp)) {
        snprintf(detail, len, "max_tokens must be >= 1, temperature >= 0, top_p in (0, 1]");
        return RM_GEN_EPARAM;
    }
    return RM_GEN_OK;
}

static uint64_t logits_hash(const float *logits, uint32_t n)
{
    return rm_hash_u32s((const uint32_t *)(const void *)logits, n, 0);
}

rm_gen_err rm_engine_generate(rm_engine *e, const rm_gen_params *p, rm_gen_result *r)
{
    memset(r, 0, sizeof *r);
    rm_gen_err err = rm_gen_check(&e->m->cfg, p, r->detail, sizeof r->detail);
    if (err != RM_GEN_OK)
        return err;
    pthread_mutex_lock(&e->mu);
    e->stats.running = 1;
    pthread_mutex_unlock(&e->mu);

    const rm_model *m = e->m;
    const uint32_t n = (uint32_t)p->n_prompt, maxc = m->cfg.max_context;
    uint64_t t0 = rm_now_ns(), lease = 0;
    uint32_t have = 0; /* leading positions whose KV came from the cluster */
    node_conn *nc = NULL, *tried = NULL;
    if (e->cache_addr) {
        uint64_t tr = rm_now_ns();
        nc = node_for(e, p->prompt, n, r, &tried);
        r->match_ns = rm_now_ns() - tr;
        if (nc)
            have = cache_read(e, nc, p, r, &lease);
    }
    /* The last prompt position is always computed: its logits choose the
     * first token (its KV, if it came from the cluster, is recomputed to
     * the same bits). */
    uint32_t start = have < n ? have : n - 1;
    r->prompt_tokens = n;
    r->cached_tokens = start;
    uint64_t tp = rm_now_ns();
    rm_model_forward(m, e->scratch, e->kv, start, p->prompt + start, n - start, e->logits);
    r->prefill_ns = rm_now_ns() - tp;
    r->first_logits_hash = logits_hash(e->logits, m->cfg.vocab);

    rm_sample_params sp = {p->temperature, p->top_p ? p->top_p : 1};
    rm_rng rng = {p->seed};
    uint32_t hi = p->sample_hi && p->sample_hi < m->cfg.vocab ? p->sample_hi : m->cfg.vocab;
    uint32_t lo = p->sample_lo < hi ? p->sample_lo : 0;
    size_t cap = p->max_tokens < (size_t)maxc - n + 1 ? p->max_tokens : (size_t)maxc - n + 1;
    r->tokens = rm_xmalloc(cap * sizeof *r->tokens);
    r->finish = RM_FINISH_LENGTH;
    for (;;) {
        uint32_t tok = lo + rm_sample(e->logits + lo, hi - lo, &sp, &rng, e->probs, e->idx);
        r->tokens[r->n_tokens++] = tok;
        if (r->n_tokens == 1)
            r->ttft_ns = rm_now_ns() - t0;
        if (p->on_token && p->on_token(p->arg, tok)) {
            r->finish = RM_FINISH_CANCELLED;
            break;
        }
        if (r->n_tokens == p->max_tokens)
            break;
        uint32_t pos = n + (uint32_t)r->n_tokens - 1; /* where tok's KV goes */
        if (pos >= maxc) {
            r->finish = RM_FINISH_CONTEXT;
            break;
        }
        rm_model_forward(m, e->scratch, e->kv, pos, &tok, 1, e->logits);
    }
    if (nc) {
        /* Positions with KV: the prompt and every generated token but the
         * last (never fed back). */
        size_t len = n + r->n_tokens - 1;
        memcpy(e->seq, p->prompt, n * sizeof *e->seq);
        memcpy(e->seq + n, r->tokens, (r->n_tokens - 1) * sizeof *e->seq);
        cache_write(e, nc, e->seq, len, have, lease, r);
    }
    if (tried)
        rm_backoff_record(&tried->bo, rm_now_ms(), transport_failed(r));
    r->total_ns = rm_now_ns() - t0;

    pthread_mutex_lock(&e->mu);
    e->stats.running = 0;
    e->stats.requests_total++;
    e->stats.prompt_tokens_total += n;
    e->stats.cached_tokens_total += r->cached_tokens;
    e->stats.generated_tokens_total += r->n_tokens;
    e->stats.cache_errors_total += r->cache_error != 0;
    e->stats.kv_bytes_read_total += r->kv_bytes_read;
    e->stats.kv_bytes_written_total += r->kv_bytes_written;
    pthread_mutex_unlock(&e->mu);
    return RM_GEN_OK;
}
