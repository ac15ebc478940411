/* node_kv.c -- radixmesh.v1.CacheNode/ReadKV and /WriteKV: the streams
 * that carry KV bytes straight out of and into the pool's pages, and the
 * bounds the tick holds them to (idle client, lease end).
 *
 * Runs on the node's owner thread (node_server.h). */
#include <grpc/slice.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guard.h"
#include "list.h"
#include "log.h"
#include "node_internal.h"
#include "util.h"

/* ---- KV streams: the list the tick bounds ------------------------------- */

static void stream_add(rm_node *n, kv_stream *s, rm_rpc_call *call, rm_kv_pin *pin)
{
    s->call = call;
    s->pin = pin;
    s->listed = 1;
    RM_LIST_ADD(n->streams, s, prev, next);
}

/* Takes s off the list (idempotent): once a stream ends its call, nothing
 * it waits on is the client's to bound any more. */
static void stream_del(rm_node *n, kv_stream *s)
{
    if (!s->listed)
        return;
    RM_LIST_DEL(n->streams, s, prev, next);
    s->listed = 0;
    s->next = s->prev = NULL;
}

/* Ends a listed stream's call with status code and msg. */
static void stream_finish(rm_node *n, kv_stream *s, grpc_status_code code, const char *msg,
                          grpc_byte_buffer *final)
{
    stream_del(n, s);
    rm_rpc_call_finish(s->call, code, msg, final);
}

/* ---- ReadKV: server streaming ------------------------------------------ */

typedef struct read_state {
    kv_stream guard; /* first: the tick sees read and write states alike */
    rm_kv_pin pin;
    size_t next, end; /* token range still to send */
} read_state;

/* One KVChunk as header bytes followed by slices that point straight into
 * the pinned pages: the KV bytes are never copied on the node. */
static grpc_byte_buffer *kv_chunk(rm_node *n, read_state *st, size_t from, size_t count)
{
    uint64_t kvb = rm_cache_kv_bytes_per_token(&n->cache);
    uint32_t pt = rm_cache_page_tokens(&n->cache);
    radixmesh_v1_KVChunk hdr = radixmesh_v1_KVChunk_init_zero;
    hdr.token_offset = (uint32_t)from;
    hdr.token_count = (uint32_t)count;
    uint8_t head[64];
    pb_ostream_t os = pb_ostream_from_buffer(head, sizeof head);
    uint64_t bytes = count * kvb;
    if (!pb_encode(&os, radixmesh_v1_KVChunk_fields, &hdr) ||
        !pb_encode_tag(&os, PB_WT_STRING, radixmesh_v1_KVChunk_kv_tag) ||
        !pb_encode_varint(&os, bytes))
        return NULL;
    size_t nslices = 1 + (count + pt - 1) / pt + 1;
    grpc_slice *slices = rm_xmalloc(sizeof *slices * nslices);
    size_t k = 0;
    slices[k++] = grpc_slice_from_copied_buffer((const char *)head, os.bytes_written);
    for (size_t t = from; t < from + count;) {
        size_t in_page = pt - t % pt;
        if (in_page > from + count - t)
            in_page = from + count - t;
        const uint8_t *p = rm_cache_pin_kv(&n->cache, &st->pin, t);
        slices[k++] = grpc_slice_from_static_buffer(p, in_page * kvb);
        t += in_page;
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(slices, k);
    for (size_t i = 0; i < k; i++)
        grpc_slice_unref(slices[i]);
    free(slices);
    return bb;
}

static void read_send_next(rm_node *n, rm_rpc_call *call, read_state *st)
{
    if (st->next >= st->end) {
        stream_finish(n, &st->guard, GRPC_STATUS_OK, NULL, NULL);
        return;
    }
    uint64_t kvb = rm_cache_kv_bytes_per_token(&n->cache);
    size_t per = n->cfg.kv_chunk_bytes / kvb;
    if (per == 0)
        per = 1;
    size_t count = st->end - st->next < per ? st->end - st->next : per;
    grpc_byte_buffer *bb = kv_chunk(n, st, st->next, count);
    if (!bb) {
        stream_finish(n, &st->guard, GRPC_STATUS_INTERNAL, "cannot encode KV chunk", NULL);
        return;
    }
    st->next += count;
    /* A send completes once the client has taken the bytes: waiting for
     * that is waiting on the client. */
    st->guard.waiting_since_ms = rm_now_ms();
    rm_rpc_call_send(call, bb);
}

void node_read_kv(void *ctx, rm_rpc_call *call, rm_call_event ev, grpc_byte_buffer *msg, int ok)
{
    rm_node *n = ctx;
    read_state *st = rm_rpc_call_user(call);
    char err[256] = "";
    switch (ev) {
    case RM_CALL_EV_START: {
        radixmesh_v1_ReadKVRequest r = radixmesh_v1_ReadKVRequest_init_zero;
        grpc_status_code code =
            node_decode(n, msg, radixmesh_v1_ReadKVRequest_fields, &r, NULL, err, sizeof err);
        uint64_t lease = r.lease_id;
        uint32_t start = r.start_token, max = r.max_tokens;
        pb_release(radixmesh_v1_ReadKVRequest_fields, &r);
        if (code != GRPC_STATUS_OK) {
            rm_rpc_call_finish(call, code, err, NULL);
            return;
        }
        st = rm_xcalloc(1, sizeof *st);
        node_caller nc;
        const rm_cache_caller *who = node_caller_of(call, &nc);
        rm_cache_result rc = rm_cache_pin_lease(&n->cache, who, lease, &st->pin);
        if (rc) {
            free(st);
            node_cache_subject subj = {
                .lease_id = lease, .who = who, .kv_hint = "no KV bytes to read"};
            code = node_cache_error(n, rc, &subj, err, sizeof err);
            rm_rpc_call_finish(call, code, err, NULL);
            return;
        }
        rm_rpc_call_set_user(call, st);
        stream_add(n, &st->guard, call, &st->pin);
        uint32_t pt = rm_cache_page_tokens(&n->cache);
        size_t have = st->pin.npages * pt;
        if (start % pt || start > have) {
            snprintf(err, sizeof err,
                     "start_token %u must be a multiple of %u and at most the leased %zu tokens",
                     start, pt, have);
            stream_finish(n, &st->guard, GRPC_STATUS_INVALID_ARGUMENT, err, NULL);
            return;
        }
        st->next = start;
        st->end = max && start + (size_t)max < have ? start + (size_t)max : have;
        read_send_next(n, call, st);
        return;
    }
    case RM_CALL_EV_SENT:
        st->guard.waiting_since_ms = 0;
        if (!ok) {
            stream_finish(n, &st->guard, GRPC_STATUS_CANCELLED, "client went away", NULL);
            return;
        }
        read_send_next(n, call, st);
        return;
    case RM_CALL_EV_DONE:
        /* Only now: a send cancelled a moment ago may still have pointed
         * gRPC at the pinned pages. */
        if (st) {
            stream_del(n, &st->guard);
            rm_cache_unpin(&n->cache, &st->pin);
            free(st);
        }
        return;
    case RM_CALL_EV_MESSAGE: return;
    }
}

/* ---- WriteKV: client streaming ------------------------------------------ */

typedef enum { WRITE_AWAIT_HEADER, WRITE_STREAMING, WRITE_DONE } write_phase;

typedef struct write_state {
    kv_stream guard; /* first: the tick sees read and write states alike */
    write_phase phase;
    rm_node *node;
    rm_kv_write w;
    int begun;
    uint64_t received, expected; /* KV bytes */
    uint8_t *stash;              /* first message's kv, before the write began */
    size_t stash_len;
    int overflow;
} write_state;

/* Copies len bytes of the sequence's KV stream into the reserved pages,
 * skipping tokens the node already holds. */
static void write_bytes(write_state *ws, const uint8_t *src, pb_istream_t *s, size_t len)
{
    rm_node *n = ws->node;
    uint64_t kvb = rm_cache_kv_bytes_per_token(&n->cache);
    uint32_t pt = rm_cache_page_tokens(&n->cache);
    while (len) {
        size_t token = ws->w.kv_start + ws->received / kvb;
        size_t off = ws->received % kvb;
        size_t run = (pt - token % pt) * kvb - off; /* to the end of this page */
        if (run > len)
            run = len;
        uint8_t *dst = rm_cache_write_dest(&n->cache, &ws->w, token);
        if (src) {
            if (dst)
                memcpy(dst + off, src, run);
            src += run;
        } else if (!pb_read(s, dst ? dst + off : NULL, run)) {
            return;
        }
        ws->received += run;
        len -= run;
    }
}

static bool decode_kv(pb_istream_t *s, const pb_field_t *f, void **arg)
{
    (void)f;
    write_state *ws = *arg;
    size_t len = s->bytes_left;
    if (!ws->begun) {
        ws->stash = rm_xrealloc(ws->stash, ws->stash_len + len + 1);
        if (!pb_read(s, ws->stash + ws->stash_len, len))
            return false;
        ws->stash_len += len;
        return true;
    }
    if (ws->received + len > ws->expected) {
        ws->overflow = 1;
        PB_RETURN_ERROR(s, "more KV bytes than the sequence needs");
    }
    write_bytes(ws, NULL, s, len);
    return s->bytes_left == 0;
}

/* Asks for the next message; from now on the stream waits on its client. */
static void write_recv(write_state *ws, rm_rpc_call *call)
{
    ws->guard.waiting_since_ms = rm_now_ms();
    rm_rpc_call_recv(call);
}

/* Returns the reserved pages and ends the write (the call is not touched). */
static void write_drop(write_state *ws)
{
    if (ws->begun) {
        rm_cache_write_abort(&ws->node->cache, &ws->w);
        ws->begun = 0;
    }
    ws->phase = WRITE_DONE;
}

static void write_fail(write_state *ws, rm_rpc_call *call, grpc_status_code code, const char *msg)
{
    (void)call;
    write_drop(ws);
    stream_finish(ws->node, &ws->guard, code, msg, NULL);
}

static void write_header(write_state *ws, rm_rpc_call *call, grpc_byte_buffer *msg)
{
    rm_node *n = ws->node;
    char err[256] = "";
    radixmesh_v1_WriteKVChunk r = radixmesh_v1_WriteKVChunk_init_zero;
    rm_tokens toks = {0};
    r.kv.funcs.decode = decode_kv;
    r.kv.arg = ws;
    grpc_status_code code = node_decode_seq(n, msg, radixmesh_v1_WriteKVChunk_fields, &r, &r.tokens,
                                            &r.namespace, &toks, err, sizeof err);
    if (code != GRPC_STATUS_OK) {
        write_fail(ws, call, code, err);
        goto out;
    }
    const char *ns = node_ns_or_empty(r.namespace);
    node_caller nc;
    const rm_cache_caller *who = r.lease_id ? node_caller_of(call, &nc) : NULL;
    rm_cache_result rc = rm_cache_write_begin(&n->cache, who, ns, strlen(ns), toks.v, toks.n,
                                              r.kv_start_token, r.lease_id, rm_now_ms(), &ws->w);
    if (rc) {
        node_cache_subject subj = {.lease_id = r.lease_id,
                                   .who = who,
                                   .kv_start = r.kv_start_token,
                                   .kv_hint = "use Insert"};
        if (rc == RM_CACHE_PREFIX_SHORT) /* the client resends from what the node holds */
            subj.have = rm_cache_peek(&n->cache, ns, strlen(ns), toks.v, toks.n);
        code = node_cache_error(n, rc, &subj, err, sizeof err);
        write_fail(ws, call, code, err);
        goto out;
    }
    ws->begun = 1;
    node_budget(n, rm_shadow_insert, ns, &toks);
    ws->expected = (ws->w.ntokens - ws->w.kv_start) * rm_cache_kv_bytes_per_token(&n->cache);
    ws->phase = WRITE_STREAMING;
    if (ws->stash_len > ws->expected) {
        write_fail(ws, call, GRPC_STATUS_INVALID_ARGUMENT, "more KV bytes than the sequence needs");
        goto out;
    }
    write_bytes(ws, ws->stash, NULL, ws->stash_len);
    write_recv(ws, call);
out:
    free(ws->stash);
    ws->stash = NULL;
    ws->stash_len = 0;
    pb_release(radixmesh_v1_WriteKVChunk_fields, &r);
    rm_tokens_free(&toks);
}

static void write_chunk(write_state *ws, rm_rpc_call *call, grpc_byte_buffer *msg)
{
    rm_node *n = ws->node;
    char err[256] = "";
    radixmesh_v1_WriteKVChunk r = radixmesh_v1_WriteKVChunk_init_zero;
    r.kv.funcs.decode = decode_kv;
    r.kv.arg = ws;
    /* Later messages carry only kv; a tokens field here is skipped. */
    if (!rm_pb_decode_bb(msg, radixmesh_v1_WriteKVChunk_fields, &r, err, sizeof err)) {
        pb_release(radixmesh_v1_WriteKVChunk_fields, &r);
        write_fail(ws, call, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    pb_release(radixmesh_v1_WriteKVChunk_fields, &r);
    (void)n;
    write_recv(ws, call);
}

static void write_end(write_state *ws, rm_rpc_call *call)
{
    rm_node *n = ws->node;
    char err[256];
    if (ws->received != ws->expected) {
        snprintf(err, sizeof err,
                 "stream ended after %" PRIu64 " KV bytes, %" PRIu64 " expected (%" PRIu64
                 " bytes per token); nothing was cached",
                 ws->received, ws->expected, rm_cache_kv_bytes_per_token(&n->cache));
        write_fail(ws, call, GRPC_STATUS_INVALID_ARGUMENT, err);
        return;
    }
    rm_insert_result ir;
    rm_cache_result rc = rm_cache_write_commit(&n->cache, &ws->w, rm_now_ms(), &ir);
    ws->begun = 0;
    ws->phase = WRITE_DONE;
    if (rc) {
        grpc_status_code code = node_cache_error(
            n, rc, &(node_cache_subject){.lease_id = ws->w.lease_id}, err, sizeof err);
        stream_finish(n, &ws->guard, code, err, NULL);
        return;
    }
    (void)call;
    radixmesh_v1_InsertReply rep = radixmesh_v1_InsertReply_init_zero;
    node_fill_insert_reply(n, &ir, &rep);
    grpc_byte_buffer *bb = rm_pb_encode_bb(radixmesh_v1_InsertReply_fields, &rep);
    stream_finish(n, &ws->guard, bb ? GRPC_STATUS_OK : GRPC_STATUS_INTERNAL,
                  bb ? NULL : "cannot encode reply", bb);
}

void node_write_kv(void *ctx, rm_rpc_call *call, rm_call_event ev, grpc_byte_buffer *msg, int ok)
{
    rm_node *n = ctx;
    write_state *ws = rm_rpc_call_user(call);
    (void)ok;
    switch (ev) {
    case RM_CALL_EV_START:
        ws = rm_xcalloc(1, sizeof *ws);
        ws->node = n;
        ws->phase = WRITE_AWAIT_HEADER;
        rm_rpc_call_set_user(call, ws);
        stream_add(n, &ws->guard, call, NULL);
        write_recv(ws, call);
        return;
    case RM_CALL_EV_MESSAGE:
        ws->guard.waiting_since_ms = 0;
        if (ws->phase == WRITE_DONE)
            return;
        if (!msg) {
            if (ws->phase == WRITE_AWAIT_HEADER)
                write_fail(ws, call, GRPC_STATUS_INVALID_ARGUMENT,
                           "WriteKV stream ended before its first message");
            else
                write_end(ws, call);
            return;
        }
        if (ws->phase == WRITE_AWAIT_HEADER)
            write_header(ws, call, msg);
        else
            write_chunk(ws, call, msg);
        return;
    case RM_CALL_EV_DONE:
        if (ws) {
            stream_del(n, &ws->guard);
            if (ws->begun)
                rm_cache_write_abort(&n->cache, &ws->w);
            free(ws->stash);
            free(ws);
        }
        return;
    case RM_CALL_EV_SENT: return;
    }
}

/* ---- stream bounds ----------------------------------------------------- */

/* Ends s from the server side: the pages it holds are the reason. A
 * write's reservation goes back at once; a read's pin at DONE, once gRPC
 * has let go of the send that points into the pages. */
static void cancel_stream(rm_node *n, kv_stream *s, rm_stream_verdict v, uint64_t now_ms)
{
    char msg[320];
    unsigned long long idle = (unsigned long long)n->cfg.kv_stream_idle_ms;
    if (!s->pin) {
        write_state *ws = (write_state *)s;
        uint32_t pages = ws->begun ? ws->w.npages : 0;
        write_drop(ws);
        snprintf(msg, sizeof msg,
                 "WriteKV received nothing for %llu ms (--kv-stream-idle-ms): cancelled, its %u "
                 "reserved pages returned, nothing cached",
                 idle, pages);
    } else if (v == RM_STREAM_LEASE_EXPIRED) {
        read_state *st = (read_state *)s;
        snprintf(msg, sizeof msg,
                 "the lease ended %llu ms ago, before ReadKV finished (a read lasts no longer than "
                 "its lease's TTL): cancelled at token %zu of %zu, pages unpinned",
                 (unsigned long long)(now_ms - rm_cache_pin_expires(&n->cache, s->pin)), st->next,
                 st->end);
    } else {
        snprintf(msg, sizeof msg,
                 "ReadKV's client took no data for %llu ms (--kv-stream-idle-ms): cancelled, "
                 "pages unpinned",
                 idle);
    }
    snprintf(n->last_cancel, sizeof n->last_cancel, "%.150s", msg);
    n->streams_cancelled_total++;
    stream_del(n, s);
    rm_rpc_call_cancel(s->call, GRPC_STATUS_DEADLINE_EXCEEDED, msg); /* may free s */
}

void node_check_streams(rm_node *n, uint64_t now_ms)
{
    kv_stream *next;
    for (kv_stream *s = n->streams; s; s = next) {
        next = s->next; /* cancelling s may free it, never another stream */
        uint64_t lease_end = s->pin ? rm_cache_pin_expires(&n->cache, s->pin) : UINT64_MAX;
        rm_stream_verdict v =
            rm_guard_stream(now_ms, s->waiting_since_ms, n->cfg.kv_stream_idle_ms, lease_end);
        if (v != RM_STREAM_KEEP)
            cancel_stream(n, s, v, now_ms);
    }
}
