/* rpc_server.c -- the server's own calls: registration, listening, each
 * call's state machine (accept, unary handler or stream events, finish),
 * the run loop with its tick, loop-lag count and shutdown, bearer-token
 * checks, and the calls' latency histograms.
 *
 * Work posted from other threads is rpc_post.c; client calls made on the
 * server's queue are rpc_server_client.c. */
#include "rpc_server.h"

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bearer.h"
#include "guard.h"
#include "log.h"
#include "prom.h"
#include "rpc_server_internal.h"
#include "util.h"

typedef enum { TAG_NEW, TAG_SEND, TAG_RECV, TAG_CLOSE, TAG_FINISH } tag_kind;

typedef struct call_tag {
    rm_cq_tag base; /* first: the queue loop calls base.fn */
    rm_rpc_call *call;
    tag_kind kind;
} call_tag;

/* Lifecycle of one call:
 *
 *   WAITING --accepted--> ACTIVE --finish batch started--> FINISHING
 *      |                                                      |
 *      +--server shut down--> (freed)        all batches done +--> (DONE, freed)
 */
typedef enum { CALL_WAITING, CALL_ACTIVE, CALL_FINISHING } call_state;

/* Latency buckets (seconds): 50 us to 10 s, roughly x2.5 per step. */
static const double buckets[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                 0.025,   0.05,   0.1,     0.25,   0.5,   1,      2.5,   10};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])
_Static_assert(NBUCKETS == RPC_NBUCKETS, "reg_method's histogram has RPC_NBUCKETS buckets");

struct rm_rpc_call {
    rm_rpc_server *srv;
    int method; /* index into srv->methods, -1: unregistered method */
    call_state state;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details;
    grpc_byte_buffer *payload, *send_bb, *recv_bb, *final_bb;
    grpc_slice status_details;
    call_tag t_new, t_send, t_recv, t_close, t_finish;
    int pending; /* batches in flight */
    int sent_initial_md, sending, receiving;
    int cancelled;
    uint64_t accepted_ns;
    void *user;
};

static void request_call(rm_rpc_server *s, int method);
static void on_call_tag(rm_cq_tag *tag, int ok);
static void maybe_done(rm_rpc_call *c);
static int authorized(const rm_rpc_server *s, const rm_rpc_call *c);

rm_rpc_server *rm_rpc_server_create(const grpc_channel_args *args)
{
    rm_rpc_server *s = rm_xcalloc(1, sizeof *s);
    s->server = grpc_server_create(args, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    rpc_post_init(s);
    return s;
}

rm_rpc_server *rm_rpc_server_create_limited(uint64_t max_receive_bytes, uint32_t max_streams)
{
    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = max_receive_bytes > INT32_MAX ? INT32_MAX : (int)max_receive_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[1].value.integer = max_streams > INT32_MAX ? INT32_MAX : (int)max_streams;
    grpc_channel_args ca = {max_streams ? 2u : 1u, args};
    return rm_rpc_server_create(&ca);
}

int rm_rpc_server_announce(rm_rpc_server *s, const char *addr, const char *module,
                           const rm_tls *tls)
{
    int port = rm_rpc_server_listen(s, addr, tls);
    if (port < 0) {
        rm_log(RM_LOG_ERROR, module, "cannot listen on %s", addr);
        return -1;
    }
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(strrchr(addr, ':') - addr), addr);
    printf("LISTENING %s:%d\n", host, port);
    fflush(stdout);
    return port;
}

int rm_rpc_server_add_method(rm_rpc_server *s, const rm_rpc_method *m)
{
    if (s->nmethods == RPC_MAX_METHODS)
        return -1;
    reg_method *r = &s->methods[s->nmethods];
    r->m = *m;
    r->handle = grpc_server_register_method(s->server, m->path, NULL,
                                            m->kind == RM_RPC_CLIENT_STREAMING
                                                ? GRPC_SRM_PAYLOAD_NONE
                                                : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                            0);
    if (!r->handle)
        return -1;
    s->nmethods++;
    return 0;
}

int rm_rpc_server_listen(rm_rpc_server *s, const char *addr, const rm_tls *tls)
{
    grpc_server_credentials *creds = rm_tls_server_creds(tls);
    int port = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    /* gRPC checks a presented client certificate against the CA, so the
     * identity it reports can be trusted (rm_rpc_call_peer). */
    if (port > 0 && rm_tls_enabled(tls) && tls->ca)
        s->verified_clients = 1;
    return port > 0 ? port : -1;
}

size_t rm_rpc_server_active_calls(const rm_rpc_server *s)
{
    return s->active;
}

static rm_rpc_call *call_new(rm_rpc_server *s, int method)
{
    rm_rpc_call *c = rm_xcalloc(1, sizeof *c);
    c->srv = s;
    c->method = method;
    c->state = CALL_WAITING;
    c->status_details = grpc_empty_slice();
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    call_tag *tags[] = {&c->t_new, &c->t_send, &c->t_recv, &c->t_close, &c->t_finish};
    tag_kind kinds[] = {TAG_NEW, TAG_SEND, TAG_RECV, TAG_CLOSE, TAG_FINISH};
    for (int i = 0; i < 5; i++) {
        tags[i]->base.fn = on_call_tag;
        tags[i]->call = c;
        tags[i]->kind = kinds[i];
    }
    return c;
}

static void call_free(rm_rpc_call *c)
{
    if (c->call)
        grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    grpc_byte_buffer *bbs[] = {c->payload, c->send_bb, c->recv_bb, c->final_bb};
    for (int i = 0; i < 4; i++)
        if (bbs[i])
            grpc_byte_buffer_destroy(bbs[i]);
    grpc_slice_unref(c->status_details);
    free(c);
}

static void request_call(rm_rpc_server *s, int method)
{
    rm_rpc_call *c = call_new(s, method);
    grpc_call_error err;
    if (method >= 0)
        err = grpc_server_request_registered_call(
            s->server, s->methods[method].handle, &c->call, &c->deadline, &c->md,
            s->methods[method].m.kind == RM_RPC_CLIENT_STREAMING ? NULL : &c->payload, s->cq, s->cq,
            &c->t_new);
    else
        err = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq,
                                       &c->t_new);
    if (err != GRPC_CALL_OK) {
        rm_log(RM_LOG_ERROR, "rpc", "request_call failed: %s", grpc_call_error_to_string(err));
        call_free(c);
    }
}

static int start(rm_rpc_call *c, grpc_op *ops, size_t n, call_tag *tag)
{
    grpc_call_error err = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (err != GRPC_CALL_OK) {
        rm_log(RM_LOG_ERROR, "rpc", "start_batch failed: %s", grpc_call_error_to_string(err));
        return -1;
    }
    c->pending++;
    return 0;
}

static void add_initial_md(rm_rpc_call *c, grpc_op *ops, size_t *n)
{
    if (c->sent_initial_md)
        return;
    memset(&ops[*n], 0, sizeof ops[*n]);
    ops[*n].op = GRPC_OP_SEND_INITIAL_METADATA;
    (*n)++;
    c->sent_initial_md = 1;
}

void rm_rpc_call_set_user(rm_rpc_call *c, void *user)
{
    c->user = user;
}

void *rm_rpc_call_user(const rm_rpc_call *c)
{
    return c->user;
}

int64_t rm_rpc_call_ms_left(const rm_rpc_call *c)
{
    gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
        return INT64_MAX;
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
    return (int64_t)left.tv_sec * 1000 + left.tv_nsec / 1000000;
}

int rm_rpc_call_send(rm_rpc_call *c, grpc_byte_buffer *bb)
{
    if (c->sending || c->state != CALL_ACTIVE) {
        grpc_byte_buffer_destroy(bb);
        return -1;
    }
    grpc_op ops[2];
    size_t n = 0;
    add_initial_md(c, ops, &n);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
    c->send_bb = bb;
    if (start(c, ops, n, &c->t_send) != 0) {
        c->send_bb = NULL;
        grpc_byte_buffer_destroy(bb);
        return -1;
    }
    c->sending = 1;
    return 0;
}

int rm_rpc_call_recv(rm_rpc_call *c)
{
    if (c->receiving || c->state != CALL_ACTIVE)
        return -1;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    if (start(c, &op, 1, &c->t_recv) != 0)
        return -1;
    c->receiving = 1;
    return 0;
}

static int finish(rm_rpc_call *c, grpc_status_code code, const char *msg, grpc_byte_buffer *final,
                  int with_close)
{
    if (c->state == CALL_FINISHING) {
        if (final)
            grpc_byte_buffer_destroy(final);
        return -1;
    }
    grpc_op ops[4];
    size_t n = 0;
    add_initial_md(c, ops, &n);
    if (final) {
        memset(&ops[n], 0, sizeof ops[n]);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = final;
        n++;
        c->final_bb = final;
    }
    grpc_slice_unref(c->status_details);
    c->status_details = grpc_slice_from_copied_string(msg ? msg : "");
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = msg && *msg ? &c->status_details : NULL;
    n++;
    if (with_close) {
        memset(&ops[n], 0, sizeof ops[n]);
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
        n++;
    }
    c->state = CALL_FINISHING;
    if (start(c, ops, n, &c->t_finish) != 0) {
        /* Nothing will complete for this batch; the call ends with what is
         * already in flight (or now, if nothing is). */
        return -1;
    }
    return 0;
}

int rm_rpc_call_finish(rm_rpc_call *c, grpc_status_code code, const char *msg,
                       grpc_byte_buffer *final)
{
    /* Unary calls watch for the client's close in the finishing batch;
     * streaming calls started a separate close batch when accepted. */
    int unary_async = c->method >= 0 && c->srv->methods[c->method].m.kind == RM_RPC_UNARY_ASYNC;
    if (code != GRPC_STATUS_OK && final) {
        grpc_byte_buffer_destroy(final);
        final = NULL;
    }
    int rc = finish(c, code, msg, final, unary_async);
    if (unary_async)
        maybe_done(c);
    return rc;
}

int rm_rpc_call_cancel(rm_rpc_call *c, grpc_status_code code, const char *msg)
{
    if (c->state != CALL_ACTIVE || c->method < 0)
        return -1;
    rm_rpc_kind kind = c->srv->methods[c->method].m.kind;
    if (kind != RM_RPC_SERVER_STREAMING && kind != RM_RPC_CLIENT_STREAMING)
        return -1; /* an async unary handler has no DONE event to learn of it */
    grpc_call_cancel_with_status(c->call, code, msg ? msg : "", NULL);
    c->state = CALL_FINISHING;
    maybe_done(c);
    return 0;
}

int rm_rpc_call_peer(const rm_rpc_call *c, char *buf, size_t len)
{
    buf[0] = '\0';
    if (c->srv->verified_clients) {
        grpc_auth_context *ctx = grpc_call_auth_context(c->call);
        size_t k = 0;
        if (ctx && grpc_auth_context_peer_is_authenticated(ctx)) {
            grpc_auth_property_iterator it = grpc_auth_context_peer_identity(ctx);
            const grpc_auth_property *p;
            while ((p = grpc_auth_property_iterator_next(&it)) != NULL) {
                if (k && k + 1 < len)
                    buf[k++] = ',';
                for (size_t i = 0; i < p->value_length && k + 1 < len; i++)
                    buf[k++] = p->value[i];
            }
            buf[k] = '\0';
        }
        if (ctx)
            grpc_auth_context_release(ctx);
        if (k > 0)
            return 1;
    }
    char *peer = grpc_call_get_peer(c->call);
    if (!peer)
        return -1;
    rm_peer_address(peer, buf, len);
    gpr_free(peer);
    return 0;
}

static void observe(reg_method *r, uint64_t ns)
{
    double s = (double)ns / 1e9;
    r->count++;
    r->sum += s;
    for (size_t i = 0; i < NBUCKETS; i++)
        if (s <= buckets[i])
            r->le[i]++;
}

static void maybe_done(rm_rpc_call *c)
{
    if (c->state != CALL_FINISHING || c->pending > 0)
        return;
    if (c->method >= 0) {
        observe(&c->srv->methods[c->method], rm_now_ns() - c->accepted_ns);
        const rm_rpc_method *m = &c->srv->methods[c->method].m;
        if (m->kind == RM_RPC_SERVER_STREAMING || m->kind == RM_RPC_CLIENT_STREAMING)
            m->stream(m->ctx, c, RM_CALL_EV_DONE, NULL, 1);
    }
    c->srv->active--;
    call_free(c);
}

static void on_accept(rm_rpc_server *s, rm_rpc_call *c)
{
    if (!s->shutting_down)
        request_call(s, c->method);
    c->state = CALL_ACTIVE;
    c->accepted_ns = rm_now_ns();
    s->active++;
    if (s->token &&
        !(c->method >= 0 &&
          !strncmp(s->methods[c->method].m.path, "/grpc.health.v1.Health/", 23)) &&
        !authorized(s, c)) {
        finish(c, GRPC_STATUS_UNAUTHENTICATED, "missing or invalid bearer token", NULL, 1);
        maybe_done(c);
        return;
    }
    if (c->method < 0) {
        char path[256];
        size_t len = GRPC_SLICE_LENGTH(c->details.method);
        if (len >= sizeof path)
            len = sizeof path - 1;
        memcpy(path, GRPC_SLICE_START_PTR(c->details.method), len);
        path[len] = '\0';
        char msg[320];
        snprintf(msg, sizeof msg, "unknown method %s", path);
        finish(c, GRPC_STATUS_UNIMPLEMENTED, msg, NULL, 1);
        maybe_done(c);
        return;
    }
    const rm_rpc_method *m = &s->methods[c->method].m;
    if (m->kind == RM_RPC_UNARY) {
        char msg[256] = "";
        grpc_byte_buffer *reply = NULL;
        grpc_status_code code;
        if (!c->payload) {
            code = GRPC_STATUS_INVALID_ARGUMENT;
            snprintf(msg, sizeof msg, "missing request message");
        } else {
            code = m->unary(m->ctx, c->payload, &reply, msg, sizeof msg);
        }
        if (code != GRPC_STATUS_OK && reply) {
            grpc_byte_buffer_destroy(reply);
            reply = NULL;
        }
        finish(c, code, msg, reply, 1);
        maybe_done(c);
        return;
    }
    if (m->kind == RM_RPC_UNARY_ASYNC) {
        if (!c->payload) {
            finish(c, GRPC_STATUS_INVALID_ARGUMENT, "missing request message", NULL, 1);
            maybe_done(c);
            return;
        }
        m->unary_async(m->ctx, c, c->payload);
        return; /* the handler finishes the call */
    }
    /* Streaming: watch for the client going away, then hand over. */
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    start(c, &op, 1, &c->t_close);
    if (m->kind == RM_RPC_SERVER_STREAMING && !c->payload) {
        finish(c, GRPC_STATUS_INVALID_ARGUMENT, "missing request message", NULL, 0);
        maybe_done(c);
        return;
    }
    m->stream(m->ctx, c, RM_CALL_EV_START, c->payload, 1);
    maybe_done(c);
}

static void on_call_tag(rm_cq_tag *base, int ok)
{
    call_tag *tag = (call_tag *)base;
    rm_rpc_call *c = tag->call;
    rm_rpc_server *s = c->srv;
    if (tag->kind == TAG_NEW) {
        if (!ok) { /* server shutting down: the requested slot is void */
            call_free(c);
            return;
        }
        on_accept(s, c);
        return;
    }
    c->pending--;
    const rm_rpc_method *m = c->method >= 0 ? &s->methods[c->method].m : NULL;
    switch (tag->kind) {
    case TAG_SEND:
        c->sending = 0;
        if (c->send_bb) {
            grpc_byte_buffer_destroy(c->send_bb);
            c->send_bb = NULL;
        }
        if (c->state == CALL_ACTIVE)
            m->stream(m->ctx, c, RM_CALL_EV_SENT, NULL, ok);
        break;
    case TAG_RECV: {
        c->receiving = 0;
        grpc_byte_buffer *bb = c->recv_bb;
        c->recv_bb = NULL;
        if (c->state == CALL_ACTIVE)
            m->stream(m->ctx, c, RM_CALL_EV_MESSAGE, ok ? bb : NULL, ok);
        if (bb)
            grpc_byte_buffer_destroy(bb);
        break;
    }
    case TAG_CLOSE:
    case TAG_FINISH:
    case TAG_NEW: break;
    }
    maybe_done(c);
}

char *rm_rpc_server_metrics(const rm_rpc_server *s, const char *labels)
{
    rm_sbuf b = {0};
    rm_prom_family(&b, "radixmesh_rpc_duration_seconds", "histogram",
                   "gRPC calls served, from accept to final status.");
    for (int i = 0; i < s->nmethods; i++) {
        const reg_method *r = &s->methods[i];
        const char *name = strrchr(r->m.path, '/');
        char l[400], v[32];
        snprintf(l, sizeof l, "%s", labels);
        rm_prom_label(l, sizeof l, "method", name ? name + 1 : r->m.path);
        for (size_t k = 0; k <= NBUCKETS; k++) {
            if (k < NBUCKETS)
                snprintf(v, sizeof v, "%g", buckets[k]);
            rm_prom_sample_by(&b, "radixmesh_rpc_duration_seconds_bucket", l, "le",
                              k < NBUCKETS ? v : "+Inf",
                              (double)(k < NBUCKETS ? r->le[k] : r->count));
        }
        rm_prom_sample(&b, "radixmesh_rpc_duration_seconds_sum", l, r->sum);
        rm_prom_sample(&b, "radixmesh_rpc_duration_seconds_count", l, (double)r->count);
    }
    rm_prom_metric(&b, "radixmesh_loop_stalls_total", "counter",
                   "Times the server thread did not run for longer than its tick (stopped, "
                   "starved of CPU, a blocking handler).",
                   labels, (double)s->stalls);
    rm_prom_metric(&b, "radixmesh_loop_stalled_seconds_total", "counter",
                   "Time lost to those stalls.", labels, (double)s->stalled_ms / 1000.0);
    return b.p;
}

void rm_rpc_server_request_shutdown(rm_rpc_server *s)
{
    if (s->shutting_down)
        return;
    s->shutting_down = 1;
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
}

void rm_rpc_server_run(rm_rpc_server *s, uint32_t tick_ms, rm_tick_fn tick, void *tick_ctx,
                       uint32_t drain_ms)
{
    grpc_server_start(s->server);
    request_call(s, -1);
    for (int i = 0; i < s->nmethods; i++)
        request_call(s, i);
    uint64_t last_tick = rm_now_ms(), shutdown_at = 0, last_return = last_tick;
    for (;;) {
        gpr_timespec wait =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(tick_ms, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(s->cq, wait, NULL);
        /* Before anything completes: the queue returns at least every
         * tick_ms plus one event's work. A longer gap is time this thread
         * did not run (stopped, starved, a blocking handler); a deadline
         * that expired then says nothing about the peer. */
        uint64_t back = rm_now_ms();
        if (back - last_return > tick_ms + RM_RPC_STALL_MS) {
            s->stalls++;
            s->stalled_ms += back - last_return - tick_ms;
        }
        last_return = back;
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE) {
            if (ev.tag == &s->shutdown_tag) {
                s->shutdown_done = 1;
                rpc_post_close(s);
            } else {
                rm_cq_tag *tag = ev.tag;
                tag->fn(tag, ev.success);
            }
        }
        uint64_t now = rm_now_ms();
        if (now - last_tick >= tick_ms) {
            last_tick = now;
            if (tick && tick(tick_ctx, now) && !s->shutting_down)
                rm_rpc_server_request_shutdown(s);
        }
        if (s->shutting_down && !shutdown_at)
            shutdown_at = now;
        if (s->shutting_down && !s->shutdown_done && !s->cancelled_all &&
            now - shutdown_at >= drain_ms) {
            rm_log(RM_LOG_WARN, "rpc", "drain timeout: cancelling %zu calls", s->active);
            grpc_server_cancel_all_calls(s->server);
            s->cancelled_all = 1;
        }
    }
}

void rm_rpc_server_stall_stats(const rm_rpc_server *s, uint64_t *stalls, uint64_t *stalled_ms)
{
    *stalls = s->stalls;
    *stalled_ms = s->stalled_ms;
}

void rm_rpc_server_require_token(rm_rpc_server *s, const char *token)
{
    free(s->token);
    s->token = token && *token ? strdup(token) : NULL;
}

/* Whether the call carries "authorization: Bearer <token>" (the scheme
 * in any case; see rm_bearer_matches). */
static int authorized(const rm_rpc_server *s, const rm_rpc_call *c)
{
    int ok = 0;
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_metadata *m = &c->md.metadata[i];
        if (!grpc_slice_str_cmp(m->key, "authorization"))
            ok |= rm_bearer_matches(s->token, (const char *)GRPC_SLICE_START_PTR(m->value),
                                    GRPC_SLICE_LENGTH(m->value));
    }
    return ok;
}

void rm_rpc_server_destroy(rm_rpc_server *s)
{
    free(s->token);
    rm_rpc_auth_clear(&s->client_auth);
    grpc_server_destroy(s->server);
    grpc_completion_queue_destroy(s->cq);
    rpc_post_destroy(s);
    free(s);
}
