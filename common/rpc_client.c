#include "rpc_client.h"

#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

#define MAX_MSG (64 * 1024 * 1024)

void rm_rpc_reconnect_args(grpc_arg args[2])
{
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[0].value.integer = 2000;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
    args[1].value.integer = RM_RPC_CONNECT_TIMEOUT_MS;
}

int rm_rpc_client_init(rm_rpc_client *c, const char *target)
{
    return rm_rpc_client_init_tls(c, target, NULL);
}

grpc_channel *rm_rpc_channel_create(const char *target, const rm_tls *tls, int max_send_bytes)
{
    grpc_arg args[4];
    size_t n = 0;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[n++].value.integer = MAX_MSG;
    if (max_send_bytes >= 0) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
        args[n++].value.integer = max_send_bytes;
    }
    rm_rpc_reconnect_args(args + n);
    grpc_channel_args ca = {n + 2, args};
    grpc_channel_credentials *creds = rm_tls_channel_creds(tls);
    grpc_channel *ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    return ch;
}

int rm_rpc_client_init_tls(rm_rpc_client *c, const char *target, const rm_tls *tls)
{
    memset(c, 0, sizeof *c);
    c->ch = rm_rpc_channel_create(target, tls, MAX_MSG);
    if (!c->ch)
        return -1;
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    c->owns_channel = 1;
    return 0;
}

void rm_rpc_client_init_shared(rm_rpc_client *c, const rm_rpc_client *base)
{
    memset(c, 0, sizeof *c);
    c->ch = base->ch;
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    c->owns_channel = 0;
}

void rm_rpc_auth_init(rm_rpc_auth *auth, const char *token)
{
    memset(auth, 0, sizeof *auth);
    if (!token || !*token)
        return;
    size_t tl = strlen(token);
    char *value = malloc(7 + tl);
    if (!value)
        return;
    memcpy(value, "Bearer ", 7);
    memcpy(value + 7, token, tl);
    auth->md.key = grpc_slice_from_static_string("authorization");
    auth->md.value = grpc_slice_from_copied_buffer(value, 7 + tl);
    auth->set = 1;
    free(value);
}

void rm_rpc_auth_clear(rm_rpc_auth *auth)
{
    if (auth->set)
        grpc_slice_unref(auth->md.value);
    memset(auth, 0, sizeof *auth);
}

void rm_rpc_auth_apply(const rm_rpc_auth *auth, grpc_op *op)
{
    if (auth && auth->set) {
        op->data.send_initial_metadata.count = 1;
        op->data.send_initial_metadata.metadata = (grpc_metadata *)&auth->md;
    }
}

void rm_rpc_client_set_token(rm_rpc_client *c, const char *token)
{
    rm_rpc_auth_clear(&c->auth);
    rm_rpc_auth_init(&c->auth, token);
}

void rm_rpc_client_close(rm_rpc_client *c)
{
    rm_rpc_auth_clear(&c->auth);
    if (c->cq) {
        grpc_completion_queue_shutdown(c->cq);
        while (grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(c->cq);
    }
    if (c->ch && c->owns_channel)
        grpc_channel_destroy(c->ch);
    memset(c, 0, sizeof *c);
}

void *rm_rpc_client_method(rm_rpc_client *c, const char *path)
{
    return grpc_channel_register_call(c->ch, path, NULL, NULL);
}

void rm_rpc_unary_ops(grpc_op ops[6], grpc_byte_buffer *req, grpc_metadata_array *md,
                      grpc_byte_buffer **resp, grpc_metadata_array *trailing,
                      grpc_status_code *status, grpc_slice *details)
{
    memset(ops, 0, sizeof(grpc_op) * 6);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = trailing;
    ops[5].data.recv_status_on_client.status = status;
    ops[5].data.recv_status_on_client.status_details = details;
}

void rm_rpc_unary_release(grpc_call *call, grpc_metadata_array *md, grpc_metadata_array *trailing,
                          grpc_slice details)
{
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(md);
    grpc_metadata_array_destroy(trailing);
    grpc_call_unref(call);
}

static gpr_timespec deadline(int timeout_ms)
{
    if (timeout_ms <= 0)
        return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

static int run_batch(rm_rpc_client *c, grpc_call *call, grpc_op *ops, size_t n, void *tag)
{
    if (grpc_call_start_batch(call, ops, n, tag, NULL) != GRPC_CALL_OK)
        return -1;
    grpc_event ev =
        grpc_completion_queue_pluck(c->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success ? 0 : -1;
}

static void copy_details(grpc_slice details, char *msg, size_t msglen)
{
    if (!msg || !msglen)
        return;
    size_t len = GRPC_SLICE_LENGTH(details);
    if (len >= msglen)
        len = msglen - 1;
    memcpy(msg, GRPC_SLICE_START_PTR(details), len);
    msg[len] = '\0';
}

grpc_status_code rm_rpc_unary(rm_rpc_client *c, void *method, grpc_byte_buffer *req, int timeout_ms,
                              grpc_byte_buffer **reply, char *msg, size_t msglen)
{
    *reply = NULL;
    grpc_call *call = grpc_channel_create_registered_call(
        c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, method, deadline(timeout_ms), NULL);
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_byte_buffer *resp = NULL;
    grpc_op ops[6];
    rm_rpc_unary_ops(ops, req, &initial_md, &resp, &trailing_md, &status, &details);
    rm_rpc_auth_apply(&c->auth, &ops[0]);
    if (c->wait_for_ready)
        ops[0].flags |= GRPC_INITIAL_METADATA_WAIT_FOR_READY;
    if (run_batch(c, call, ops, 6, call) != 0) {
        status = GRPC_STATUS_INTERNAL;
        if (msg)
            snprintf(msg, msglen, "client batch failed");
    } else {
        copy_details(details, msg, msglen);
    }
    if (status == GRPC_STATUS_OK && resp)
        *reply = resp;
    else if (resp)
        grpc_byte_buffer_destroy(resp);
    if (status == GRPC_STATUS_OK && !resp) {
        status = GRPC_STATUS_INTERNAL;
        if (msg)
            snprintf(msg, msglen, "OK status without a reply message");
    }
    rm_rpc_unary_release(call, &initial_md, &trailing_md, details);
    return status;
}

int rm_rpc_stream_open(rm_rpc_stream *s, rm_rpc_client *c, void *method, int timeout_ms)
{
    memset(s, 0, sizeof *s);
    s->c = c;
    s->call = grpc_channel_create_registered_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                                  method, deadline(timeout_ms), NULL);
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->details = grpc_empty_slice();
    /* The status op goes in now, so a server that ends the call early
     * (an error mid-stream) is noticed; it completes at rm_rpc_stream_finish. */
    grpc_op ops[1];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    rm_rpc_auth_apply(&c->auth, &ops[0]);
    if (run_batch(c, s->call, ops, 1, s) != 0)
        return -1;
    grpc_op st;
    memset(&st, 0, sizeof st);
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    st.data.recv_status_on_client.status = &s->status;
    st.data.recv_status_on_client.status_details = &s->details;
    if (grpc_call_start_batch(s->call, &st, 1, &s->got_status, NULL) != GRPC_CALL_OK)
        return -1;
    return 0;
}

int rm_rpc_stream_send(rm_rpc_stream *s, grpc_byte_buffer *bb, int last)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_MESSAGE;
    ops[0].data.send_message.send_message = bb;
    ops[1].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    return run_batch(s->c, s->call, ops, last ? 2 : 1, &s->call);
}

int rm_rpc_stream_close_send(rm_rpc_stream *s)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    return run_batch(s->c, s->call, &op, 1, &s->call);
}

int rm_rpc_stream_recv(rm_rpc_stream *s, grpc_byte_buffer **bb)
{
    *bb = NULL;
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!s->asked_initial_md) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
        n++;
        s->asked_initial_md = 1;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = bb;
    n++;
    if (run_batch(s->c, s->call, ops, n, &s->trailing_md) != 0)
        return 0;
    return *bb != NULL;
}

grpc_status_code rm_rpc_stream_finish(rm_rpc_stream *s, char *msg, size_t msglen)
{
    grpc_event ev = grpc_completion_queue_pluck(s->c->cq, &s->got_status,
                                                gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_status_code st = ev.type == GRPC_OP_COMPLETE ? s->status : GRPC_STATUS_INTERNAL;
    copy_details(s->details, msg, msglen);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_call_unref(s->call);
    memset(s, 0, sizeof *s);
    return st;
}
