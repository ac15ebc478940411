/* proxy.c -- the Router service's calls: Route, Match, Insert and
 * Release. Match and Route peek at two candidates and choose; Match,
 * Insert and Release are forwarded to a node and retried once elsewhere
 * when the node does not answer. */
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pbx.h"
#include "router_internal.h"
#include "util.h"

/* One forwarded call, from its start to the client's answer. A Match
 * starts with its choice (ch) and is forwarded by the choice's end. */
typedef struct proxy {
    rm_router *r;
    rm_rpc_call *call;
    rt_method kind;      /* RT_MATCH, RT_INSERT or RT_RELEASE */
    grpc_slice req;      /* bytes to forward */
    grpc_slice fallback; /* Insert without its lease, for another node */
    int has_fallback;
    uint64_t key;
    rnode *node; /* holds a reference; NULL while a Match chooses */
    int attempts;
    int cut;      /* the call to node had its client's deadline (rt_client_call_timeout) */
    rt_choice ch; /* RT_MATCH: its choice (ch.arg is the proxy) */
} proxy;

static void on_forward_reply(void *ctx, grpc_status_code st, grpc_byte_buffer *reply,
                             const char *details);

/* A call to forward to node n (already charged with it in flight; NULL
 * for a Match until its choice ends); takes req and fallback (a
 * grpc_empty_slice() when has_fallback is 0). */
static proxy *proxy_new(rm_router *r, rm_rpc_call *call, rt_method kind, grpc_slice req,
                        grpc_slice fallback, int has_fallback, uint64_t key, rnode *n)
{
    proxy *p = rm_xmalloc(sizeof *p);
    *p = (proxy){.r = r,
                 .call = call,
                 .kind = kind,
                 .req = req,
                 .fallback = fallback,
                 .has_fallback = has_fallback,
                 .key = key,
                 .node = n ? rt_node_ref(n) : NULL};
    return p;
}

static void proxy_free(proxy *p)
{
    grpc_slice_unref(p->req);
    if (p->has_fallback)
        grpc_slice_unref(p->fallback);
    if (p->node)
        rt_node_unref(p->node);
    free(p);
}

/* Why no node could take a call: a node refusing the router's own token
 * is a configuration error the client should not mistake for its own
 * (its token was fine) nor for an outage. */
void rt_no_node_reason(const rm_router *r, char *msg, size_t len)
{
    const rnode *refusing = NULL;
    uint32_t up = 0, refuse = 0;
    for (uint32_t i = 0; i < r->nnodes; i++) {
        const rnode *n = r->nodes[i];
        if (!n->id || !n->confirmed || n->draining)
            continue;
        up++;
        if (n->auth_rejected) {
            refuse++;
            refusing = n;
        }
    }
    if (refusing && refuse == up)
        snprintf(msg, len,
                 "no cache node accepts the router's credentials (%s answers UNAUTHENTICATED): "
                 "check the router's --node-token-file",
                 refusing->id);
    else if (refusing)
        snprintf(msg, len,
                 "no healthy cache node: %s rejects the router's credentials (check the router's "
                 "--node-token-file), the others are down or unreachable",
                 refusing->id);
    else
        snprintf(msg, len, "no healthy cache node: every node is down or unreachable");
}

static const char late[] = "the call's deadline passed before a cache node could answer it";

/* Answers DEADLINE_EXCEEDED, without asking a node, when the client's
 * deadline leaves no time for a node call. Returns 1 if it did. */
static int past_deadline(const rm_router *r, rm_rpc_call *call)
{
    int cut;
    if (rt_client_call_timeout(r, call, &cut) > 0)
        return 0;
    rm_rpc_call_finish(call, GRPC_STATUS_DEADLINE_EXCEEDED, late, NULL);
    return 1;
}

/* Sends p to p->node within the client's deadline. */
static void forward(proxy *p)
{
    int timeout = rt_client_call_timeout(p->r, p->call, &p->cut);
    if (timeout == 0) { /* a Match whose peeks took the client's time */
        p->node->inflight--;
        if (p->kind == RT_MATCH && p->attempts == 0)
            rt_settle_charge(&p->ch, p->node, 0);
        rm_rpc_call_finish(p->call, GRPC_STATUS_DEADLINE_EXCEEDED, late, NULL);
        proxy_free(p);
        return;
    }
    p->attempts++;
    if (rt_node_call(p->r, p->node, p->kind, p->req, timeout, on_forward_reply, p) != 0) {
        /* Refused only while the server's queue shuts down. */
        p->node->inflight--;
        if (p->kind == RT_MATCH && p->attempts == 1)
            rt_settle_charge(&p->ch, p->node, 0);
        rm_rpc_call_finish(p->call, GRPC_STATUS_UNAVAILABLE, "router is shutting down", NULL);
        proxy_free(p);
    }
}

static void on_forward_reply(void *ctx, grpc_status_code st, grpc_byte_buffer *reply,
                             const char *details)
{
    proxy *p = ctx;
    rm_router *r = p->r;
    rnode *n = p->node;
    if (n->inflight)
        n->inflight--;
    /* The attempt that was charged. A node counts a Match only once it
     * accepted it (its limits passed): an answer other than OK was not
     * counted, and neither, for all we know, was a call that failed. */
    if (p->kind == RT_MATCH && p->attempts == 1)
        rt_settle_charge(&p->ch, n, st == GRPC_STATUS_OK);
    int failed = rt_is_transport_failure(st), auth = st == GRPC_STATUS_UNAUTHENTICATED;
    if (!failed)
        rt_note_auth(r, n, st, details);
    rt_note(r, n, rt_outcome(r, st, p->cut), details);
    if (st == GRPC_STATUS_OK) {
        rm_rpc_call_finish(p->call, GRPC_STATUS_OK, NULL, grpc_byte_buffer_copy(reply));
        proxy_free(p);
        return;
    }
    if (!failed && !auth) { /* the node's own answer: pass it on */
        rm_rpc_call_finish(p->call, st, details, NULL);
        proxy_free(p);
        return;
    }
    char msg[512];
    if (p->cut && st == GRPC_STATUS_DEADLINE_EXCEEDED) {
        /* The client's deadline passed, not the node's time: no other node
         * could answer in time either (and this one is not blamed). */
        snprintf(msg, sizeof msg, "%s (node %s: %s)", late, n->id, details);
        rm_rpc_call_finish(p->call, GRPC_STATUS_DEADLINE_EXCEEDED, msg, NULL);
        proxy_free(p);
        return;
    }
    /* A transport failure, or the node refusing the router's token: the
     * client's own call was fine, so it gets another node or UNAVAILABLE,
     * never the router's UNAUTHENTICATED as if its token were wrong. */
    if (auth)
        snprintf(msg, sizeof msg,
                 "node %s rejected the router's credentials (%s): check the router's "
                 "--node-token-file",
                 n->id, details);
    if (p->kind == RT_RELEASE && auth) {
        rm_rpc_call_finish(p->call, GRPC_STATUS_UNAVAILABLE, msg, NULL);
        proxy_free(p);
        return;
    }
    if (p->kind == RT_RELEASE) {
        /* The lease lived on a node that is gone or hung: it dies with the
         * node or expires by TTL. Nothing is left to release. */
        rm_rpc_call_finish(
            p->call, GRPC_STATUS_OK, NULL,
            rm_pb_encode_bb(radixmesh_v1_ReleaseReply_fields, &(radixmesh_v1_ReleaseReply){0}));
        proxy_free(p);
        return;
    }
    if (p->attempts < 2 && past_deadline(r, p->call)) { /* no time for a retry */
        proxy_free(p);
        return;
    }
    rnode *next = p->attempts < 2 ? rt_pick(r, p->key, n, 1, NULL) : NULL;
    if (!next) {
        if (!auth)
            snprintf(msg, sizeof msg,
                     "no healthy cache node could serve the call (last: %s at %s: %s)", n->id,
                     n->address, details);
        rm_rpc_call_finish(p->call, GRPC_STATUS_UNAVAILABLE, msg, NULL);
        proxy_free(p);
        return;
    }
    r->retries++;
    r->failovers++;
    rm_log(RM_LOG_INFO, "router", "retrying on %s after %s failed: %s", next->id, n->id, details);
    if (p->has_fallback) { /* the lease belonged to the failed node */
        grpc_slice_unref(p->req);
        p->req = grpc_slice_ref(p->fallback);
    }
    p->node = rt_node_ref(next);
    rt_node_unref(n);
    forward(p);
}

/* Copies a request's bytes into one slice (kept for a retry). */
static grpc_slice request_bytes(grpc_byte_buffer *req)
{
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, req);
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    return s;
}

/* A Match's bytes with output_tokens set to out: a field appended to an
 * encoded message overrides an earlier one of the same number, so the
 * client's bytes are kept as they are (takes req). */
static grpc_slice with_output(grpc_slice req, double out)
{
    uint8_t extra[8];
    size_t k = 0, len = GRPC_SLICE_LENGTH(req);
    uint32_t v = out < 4294967295.0 ? (uint32_t)out : UINT32_MAX;
    extra[k++] = (uint8_t)(radixmesh_v1_MatchRequest_output_tokens_tag << 3); /* varint */
    do {
        extra[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        extra[k++] |= v ? 0x80 : 0;
    } while (v);
    grpc_slice s = grpc_slice_malloc(len + k);
    memcpy(GRPC_SLICE_START_PTR(s), GRPC_SLICE_START_PTR(req), len);
    memcpy(GRPC_SLICE_START_PTR(s) + len, extra, k);
    grpc_slice_unref(req);
    return s;
}

/* Decodes req (a message with tokens: cb is its tokens field, decoded
 * into toks) into msg. Returns 1, or 0 after answering INVALID_ARGUMENT. */
static int decoded(const rm_router *r, rm_rpc_call *call, grpc_byte_buffer *req,
                   const pb_msgdesc_t *desc, void *msg, pb_callback_t *cb, rm_tokens *toks)
{
    char err[256];
    toks->max = r->cfg.max_request_tokens;
    rm_pb_tokens_decoder(cb, toks);
    if (rm_pb_decode_bb(req, desc, msg, err, sizeof err))
        return 1;
    if (toks->too_many)
        snprintf(err, sizeof err, "request has more than %" PRIu64 " tokens (--max-request-tokens)",
                 r->cfg.max_request_tokens);
    rm_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, err, NULL);
    return 0;
}

/* ns, or "" for a request that names none; NULL after answering
 * INVALID_ARGUMENT for one longer than any node takes (a Route must not
 * answer with a node that then refuses the request). */
static const char *namespace_of(rm_rpc_call *call, const char *ns)
{
    if (!ns)
        return "";
    if (strlen(ns) <= RM_NAMESPACE_MAX_BYTES)
        return ns;
    char err[64];
    snprintf(err, sizeof err, "namespace is longer than %u bytes", RM_NAMESPACE_MAX_BYTES);
    rm_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, err, NULL);
    return NULL;
}

static void no_node(rm_router *r, rm_rpc_call *call)
{
    char msg[256];
    rt_no_node_reason(r, msg, sizeof msg);
    rm_rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, msg, NULL);
}

/* ---- choosing between two candidates ------------------------------------- */

static void decide(rt_choice *ch)
{
    rnode *n = rt_node_ref(rt_decide(ch)); /* the callee's */
    rt_charge_choice(ch, n);
    for (int i = 0; i < ch->ncand; i++)
        rt_node_unref(ch->cand[i]);
    ch->ncand = 0;
    ch->done(ch, n);
}

static void on_peek(void *ctx, grpc_status_code st, grpc_byte_buffer *reply, const char *details)
{
    struct rt_peek *pk = ctx;
    rt_choice *ch = pk->ch;
    rnode *n = ch->cand[pk->idx];
    if (!rt_is_transport_failure(st))
        rt_note_auth(ch->r, n, st, details);
    rt_note(ch->r, n, rt_outcome(ch->r, st, ch->cut), details);
    ch->cached[pk->idx] = -1;
    if (st == GRPC_STATUS_OK) {
        radixmesh_v1_MatchReply rep = radixmesh_v1_MatchReply_init_zero;
        char err[64];
        if (rm_pb_decode_bb(reply, radixmesh_v1_MatchReply_fields, &rep, err, sizeof err))
            ch->cached[pk->idx] = rep.matched_tokens;
        pb_release(radixmesh_v1_MatchReply_fields, &rep);
    }
    if (--ch->waiting == 0)
        decide(ch);
}

void rt_choose(rt_choice *ch, const char *ns, const uint32_t *tokens, size_t ntokens)
{
    rm_router *r = ch->r;
    if (ch->ncand == 0) {
        ch->done(ch, NULL);
        return;
    }
    for (int i = 0; i < ch->ncand; i++) /* until decide */
        rt_node_ref(ch->cand[i]);
    if (ch->ncand == 1) {
        decide(ch);
        return;
    }
    radixmesh_v1_MatchRequest pm = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens_view view = {tokens, ntokens};
    pm.namespace = (char *)ns;
    rm_pb_tokens_encoder(&pm.tokens, &view);
    pm.peek = true;
    grpc_byte_buffer *bb = rm_pb_encode_bb(radixmesh_v1_MatchRequest_fields, &pm);
    grpc_slice bytes = request_bytes(bb);
    grpc_byte_buffer_destroy(bb);
    ch->waiting = 2;
    int timeout = rt_client_call_timeout(r, ch->client, &ch->cut);
    for (int i = 0; i < 2; i++) {
        ch->pk[i] = (struct rt_peek){ch, i};
        if (timeout == 0 ||
            rt_node_call(r, ch->cand[i], RT_MATCH, bytes, timeout, on_peek, &ch->pk[i]) != 0) {
            ch->cached[i] = -1;
            ch->waiting--;
        }
    }
    grpc_slice_unref(bytes);
    if (ch->waiting == 0)
        decide(ch);
}

/* ---- the calls -------------------------------------------------------------- */

void rt_do_insert(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req)
{
    rm_router *r = ctx;
    radixmesh_v1_InsertRequest m = radixmesh_v1_InsertRequest_init_zero;
    rm_tokens toks = {0};
    if (!decoded(r, call, req, radixmesh_v1_InsertRequest_fields, &m, &m.tokens, &toks) ||
        past_deadline(r, call))
        goto out;
    const char *ns = namespace_of(call, m.namespace);
    if (!ns)
        goto out;
    uint32_t kt;
    uint64_t key = rm_router_key(r, ns, toks.v, toks.n, &kt);
    rt_budget(r, rm_shadow_insert, ns, toks.v, toks.n);
    /* The same insert without lease or pin, for any other node. */
    radixmesh_v1_InsertRequest plain = radixmesh_v1_InsertRequest_init_zero;
    rm_tokens_view view = {toks.v, toks.n};
    plain.namespace = (char *)ns;
    rm_pb_tokens_encoder(&plain.tokens, &view);
    grpc_byte_buffer *pbb = rm_pb_encode_bb(radixmesh_v1_InsertRequest_fields, &plain);
    grpc_slice fallback = request_bytes(pbb);
    grpc_byte_buffer_destroy(pbb);
    rnode *n = NULL;
    grpc_slice bytes;
    if (m.node_id && *m.node_id) {
        rnode *pin = rt_find_by_id(r, m.node_id);
        if (pin && rt_on_ring(pin)) {
            /* Pinned: the node that answered Match holds the lease, whatever
             * the ring or the loads say now. Still counted as load. */
            n = pin;
            rt_charge(r, n, 1, 0, 0);
            bytes = request_bytes(req);
        }
    }
    if (!n) {
        /* Not pinned, or its node is gone: cache it where the key goes now,
         * without the lease (which only the old node knew). */
        n = rt_pick(r, key, NULL, 1, NULL);
        if (!n) {
            grpc_slice_unref(fallback);
            no_node(r, call);
            goto out;
        }
        bytes = (m.lease_id && !(m.node_id && *m.node_id)) ? request_bytes(req)
                                                           : grpc_slice_ref(fallback);
    }
    forward(proxy_new(r, call, RT_INSERT, bytes, fallback, 1, key, n));
out:
    pb_release(radixmesh_v1_InsertRequest_fields, &m);
    rm_tokens_free(&toks);
}

void rt_do_release(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req)
{
    rm_router *r = ctx;
    radixmesh_v1_ReleaseRequest m = radixmesh_v1_ReleaseRequest_init_zero;
    char err[256];
    if (!rm_pb_decode_bb(req, radixmesh_v1_ReleaseRequest_fields, &m, err, sizeof err)) {
        rm_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, err, NULL);
    } else if (!m.node_id || !*m.node_id) {
        rm_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                           "Release needs node_id: the node_id of the Match reply", NULL);
    } else {
        rnode *n = rt_find_by_id(r, m.node_id);
        if (!n && !rt_was_member(r, m.node_id)) {
            snprintf(err, sizeof err, "unknown node '%.100s'", m.node_id);
            rm_rpc_call_finish(call, GRPC_STATUS_NOT_FOUND, err, NULL);
        } else if (n && n->auth_rejected) {
            snprintf(err, sizeof err,
                     "node %.100s rejects the router's credentials: check the router's "
                     "--node-token-file",
                     n->id);
            rm_rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, err, NULL);
        } else if (!n || !rt_on_ring(n)) {
            /* Removed, down or hung: its leases die with it or expire by
             * their TTL. */
            rm_rpc_call_finish(
                call, GRPC_STATUS_OK, NULL,
                rm_pb_encode_bb(radixmesh_v1_ReleaseReply_fields, &(radixmesh_v1_ReleaseReply){0}));
        } else if (!past_deadline(r, call)) {
            n->inflight++;
            forward(
                proxy_new(r, call, RT_RELEASE, request_bytes(req), grpc_empty_slice(), 0, 0, n));
        }
    }
    pb_release(radixmesh_v1_ReleaseRequest_fields, &m);
}

/* Chooses a node for the decoded Match or Route of call, whose reply is
 * expected to be `output` tokens long. */
static void choose(rm_router *r, rm_rpc_call *call, rt_choice *ch, rt_choice_done_fn done,
                   void *arg, int proxied, const char *ns, const rm_tokens *toks, double output)
{
    ch->r = r;
    ch->done = done;
    ch->arg = arg;
    ch->client = call;
    ch->proxied = proxied;
    ch->prompt_tokens = toks->n;
    ch->output = output;
    ch->key = rm_router_key(r, ns, toks->v, toks->n, &ch->key_tokens);
    rt_budget(r, rm_shadow_match, ns, toks->v, toks->n);
    ch->ncand = (int)rt_candidates(r, ch->key, NULL, ch->cand, r->cfg.choices, &ch->spilled, 0);
    rt_choose(ch, ns, toks->v, toks->n);
}

/* A Match's choice ended: forward it to the node chosen. */
static void match_chosen(rt_choice *ch, rnode *n)
{
    proxy *p = ch->arg;
    if (!n) {
        no_node(p->r, p->call);
        proxy_free(p);
        return;
    }
    p->node = n;
    p->key = ch->key;
    forward(p);
}

void rt_do_match(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req)
{
    rm_router *r = ctx;
    radixmesh_v1_MatchRequest m = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens toks = {0};
    const char *ns;
    if (!decoded(r, call, req, radixmesh_v1_MatchRequest_fields, &m, &m.tokens, &toks))
        goto out;
    if (m.peek) {
        rm_rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                           "peek is for nodes; ask the router with Route", NULL);
    } else if (!past_deadline(r, call) && (ns = namespace_of(call, m.namespace))) {
        double out = rt_expected_output(r, ns, m.output_tokens);
        grpc_slice bytes = request_bytes(req);
        if (!m.output_tokens && out >= 1) /* the node counts the router's estimate */
            bytes = with_output(bytes, out);
        proxy *p = proxy_new(r, call, RT_MATCH, bytes, grpc_empty_slice(), 0, 0, NULL);
        choose(r, call, &p->ch, match_chosen, p, 1, ns, &toks, out);
    }
out:
    pb_release(radixmesh_v1_MatchRequest_fields, &m);
    rm_tokens_free(&toks);
}

/* A Route's choice ended: the answer is the node chosen. */
static void route_chosen(rt_choice *ch, rnode *n)
{
    rm_rpc_call *call = ch->arg;
    if (n) {
        radixmesh_v1_RouteReply rep = radixmesh_v1_RouteReply_init_zero;
        rep.node_id = n->id;
        rep.address = n->address;
        rep.key_tokens = ch->key_tokens;
        rep.spilled = ch->spilled;
        rm_rpc_call_finish(call, GRPC_STATUS_OK, NULL,
                           rm_pb_encode_bb(radixmesh_v1_RouteReply_fields, &rep));
        rt_node_unref(n);
    } else {
        no_node(ch->r, call);
    }
    free(ch);
}

void rt_do_route(void *ctx, rm_rpc_call *call, grpc_byte_buffer *req)
{
    rm_router *r = ctx;
    radixmesh_v1_RouteRequest m = radixmesh_v1_RouteRequest_init_zero;
    rm_tokens toks = {0};
    if (decoded(r, call, req, radixmesh_v1_RouteRequest_fields, &m, &m.tokens, &toks) &&
        !past_deadline(r, call)) {
        const char *ns = namespace_of(call, m.namespace);
        if (ns)
            choose(r, call, rm_xcalloc(1, sizeof(rt_choice)), route_chosen, call, 0, ns, &toks,
                   rt_expected_output(r, ns, m.output_tokens));
    }
    pb_release(radixmesh_v1_RouteRequest_fields, &m);
    rm_tokens_free(&toks);
}
