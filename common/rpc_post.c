/* rpc_post.c -- work posted to the server thread from other threads
 * (rm_rpc_server_post): a FIFO under a lock, and a call on a lame channel
 * whose completion wakes the server's queue to run it. */
#include <grpc/support/time.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_server_internal.h"
#include "util.h"

typedef struct posted {
    rm_post_fn fn;
    void *arg;
    struct posted *next;
} posted;

static void on_wake(rm_cq_tag *tag, int ok)
{
    rm_rpc_server *s = (rm_rpc_server *)((char *)tag - offsetof(rm_rpc_server, wake));
    (void)ok;
    pthread_mutex_lock(&s->post_mu);
    grpc_slice_unref(s->wake.details);
    grpc_call_unref(s->wake.call);
    posted *list = s->post_head;
    s->post_head = NULL;
    s->post_tail = &s->post_head;
    s->wake_pending = 0;
    pthread_mutex_unlock(&s->post_mu);
    while (list) {
        posted *next = list->next;
        list->fn(list->arg);
        free(list);
        list = next;
    }
}

/* Starts a wake call; post_mu is held. Returns 0 or -1. */
static int start_wake(rm_rpc_server *s)
{
    wake_call *w = &s->wake;
    w->details = grpc_empty_slice();
    grpc_slice method = grpc_slice_from_static_string("/radixmesh.internal/Wake");
    w->call = grpc_channel_create_call(s->wake_ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, method,
                                       NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[1].data.recv_status_on_client.status = &w->status;
    ops[1].data.recv_status_on_client.status_details = &w->details;
    ops[1].data.recv_status_on_client.trailing_metadata = NULL;
    if (grpc_call_start_batch(w->call, ops, 2, &w->base, NULL) != GRPC_CALL_OK) {
        grpc_call_unref(w->call);
        return -1;
    }
    return 0;
}

int rm_rpc_server_post(rm_rpc_server *s, rm_post_fn fn, void *arg)
{
    posted *p = rm_xmalloc(sizeof *p);
    *p = (posted){fn, arg, NULL};
    pthread_mutex_lock(&s->post_mu);
    int rc = -1;
    if (!s->post_closed && (s->wake_pending || start_wake(s) == 0)) {
        s->wake_pending = 1;
        *s->post_tail = p;
        s->post_tail = &p->next;
        rc = 0;
    }
    pthread_mutex_unlock(&s->post_mu);
    if (rc)
        free(p);
    return rc;
}

void rpc_post_init(rm_rpc_server *s)
{
    pthread_mutex_init(&s->post_mu, NULL);
    s->post_tail = &s->post_head;
    s->wake_ch = grpc_lame_client_channel_create(NULL, GRPC_STATUS_UNAVAILABLE, "wake-up");
    s->wake.base.fn = on_wake;
}

void rpc_post_close(rm_rpc_server *s)
{
    pthread_mutex_lock(&s->post_mu);
    s->post_closed = 1;
    grpc_completion_queue_shutdown(s->cq);
    pthread_mutex_unlock(&s->post_mu);
}

void rpc_post_destroy(rm_rpc_server *s)
{
    grpc_channel_destroy(s->wake_ch);
    pthread_mutex_destroy(&s->post_mu);
}
