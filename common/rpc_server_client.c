/* rpc_server_client.c -- unary client calls started on the server's own
 * completion queue (rm_rpc_server_client_call), so their replies run on
 * the server thread beside its calls: a router's calls to its nodes. */
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_server_internal.h"
#include "util.h"

typedef struct client_call {
    rm_cq_tag base;
    grpc_call *call;
    grpc_metadata_array md, tmd;
    grpc_status_code status;
    grpc_slice details;
    grpc_byte_buffer *resp;
    rm_rpc_reply_fn cb;
    void *ctx;
    rm_rpc_server *srv;
    uint64_t stalls_at_start; /* s->stalls when the call started */
} client_call;

/* Releases what the call holds: its reply, status details, metadata. */
static void client_call_free(client_call *cc)
{
    if (cc->resp)
        grpc_byte_buffer_destroy(cc->resp);
    rm_rpc_unary_release(cc->call, &cc->md, &cc->tmd, cc->details);
    free(cc);
}

static void on_client_call(rm_cq_tag *tag, int ok)
{
    client_call *cc = (client_call *)tag;
    grpc_status_code st = ok ? cc->status : GRPC_STATUS_UNAVAILABLE;
    char details[512];
    size_t len = GRPC_SLICE_LENGTH(cc->details);
    if (len >= sizeof details)
        len = sizeof details - 1;
    memcpy(details, GRPC_SLICE_START_PTR(cc->details), len);
    details[len] = '\0';
    if (st == GRPC_STATUS_OK && !cc->resp) {
        st = GRPC_STATUS_INTERNAL;
        snprintf(details, sizeof details, "OK status without a reply message");
    }
    cc->srv->reply_stalled = cc->srv->stalls != cc->stalls_at_start;
    cc->cb(cc->ctx, st, st == GRPC_STATUS_OK ? cc->resp : NULL, details);
    cc->srv->reply_stalled = 0;
    client_call_free(cc);
}

int rm_rpc_server_client_call(rm_rpc_server *s, grpc_channel *ch, void *method,
                              grpc_byte_buffer *req, int timeout_ms, rm_rpc_reply_fn cb, void *ctx)
{
    /* Once the queue is shutting down, gRPC aborts on any new operation on
     * it (grpc_cq_begin_op); replies and the tick still run while it
     * drains, and may want to start calls. */
    if (timeout_ms <= 0 || s->post_closed)
        return -1;
    client_call *cc = rm_xcalloc(1, sizeof *cc);
    cc->base.fn = on_client_call;
    cc->cb = cb;
    cc->ctx = ctx;
    cc->srv = s;
    cc->stalls_at_start = s->stalls;
    cc->details = grpc_empty_slice();
    grpc_metadata_array_init(&cc->md);
    grpc_metadata_array_init(&cc->tmd);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    cc->call = grpc_channel_create_registered_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, method,
                                                   deadline, NULL);
    grpc_op ops[6];
    rm_rpc_unary_ops(ops, req, &cc->md, &cc->resp, &cc->tmd, &cc->status, &cc->details);
    rm_rpc_auth_apply(&s->client_auth, &ops[0]);
    if (grpc_call_start_batch(cc->call, ops, 6, &cc->base, NULL) != GRPC_CALL_OK) {
        client_call_free(cc);
        return -1;
    }
    return 0;
}

int rm_rpc_server_reply_stalled(const rm_rpc_server *s)
{
    return s->reply_stalled;
}

void rm_rpc_server_set_client_token(rm_rpc_server *s, const char *token)
{
    rm_rpc_auth_clear(&s->client_auth);
    rm_rpc_auth_init(&s->client_auth, token);
}
