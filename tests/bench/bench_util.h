/* bench_util.h -- pieces the benchmarks share: a bare gRPC-core baseline
 * server (same framework as the daemons, decodes nothing), an async load
 * driver that keeps N unary calls in flight from one thread, and the
 * sorting and load-average figures their reports print. */
#ifndef RM_BENCH_UTIL_H
#define RM_BENCH_UTIL_H

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pbx.h"
#include "radixmesh.pb.h"
#include "rpc_client.h"
#include "rpc_server.h"
#include "util.h"

static inline double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

static inline int bench_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static inline void bench_sort_u64(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, bench_cmp_u64);
}

/* The 1-minute load average, -1 if unknown: timings are read next to it. */
static inline double bench_loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f && fscanf(f, "%lf", &l) != 1)
        l = -1;
    if (f)
        fclose(f);
    return l;
}

/* Reply size of the baseline server (set to the real reply's size). */
static size_t echo_reply_len = 16;

static inline grpc_status_code echo(void *ctx, grpc_byte_buffer *req, grpc_byte_buffer **reply,
                                    char *msg, size_t len)
{
    (void)ctx;
    (void)msg;
    (void)len;
    /* Read the request like a real handler must, reply with MatchReply's size. */
    grpc_byte_buffer_reader r;
    grpc_byte_buffer_reader_init(&r, req);
    grpc_slice all = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    grpc_slice out = grpc_slice_sub(
        all, 0, GRPC_SLICE_LENGTH(all) < echo_reply_len ? GRPC_SLICE_LENGTH(all) : echo_reply_len);
    *reply = grpc_raw_byte_buffer_create(&out, 1);
    grpc_slice_unref(out);
    grpc_slice_unref(all);
    return GRPC_STATUS_OK;
}

/* Serves the baseline on a free port (prints LISTENING) for `path`. */
static inline int serve_echo(const char *path)
{
    grpc_init();
    rm_rpc_server *s = rm_rpc_server_create(NULL);
    rm_rpc_method m = {.path = path, .kind = RM_RPC_UNARY, .unary = echo};
    rm_rpc_server_add_method(s, &m);
    if (rm_rpc_server_announce(s, "127.0.0.1:0", "echo", NULL) < 0)
        return 1;
    rm_rpc_server_run(s, 1000, NULL, NULL, 1000);
    return 0;
}

typedef struct async_call {
    grpc_call *call;
    grpc_byte_buffer *resp;
    grpc_metadata_array md, tmd;
    grpc_status_code status;
    grpc_slice details;
} async_call;

typedef struct driver {
    rm_rpc_client cl;
    grpc_completion_queue *cq;
    void *method;
    grpc_slice req;
} driver;

static inline void call_start(driver *d, async_call *c)
{
    grpc_metadata_array_init(&c->md);
    grpc_metadata_array_init(&c->tmd);
    c->resp = NULL;
    c->call =
        grpc_channel_create_registered_call(d->cl.ch, NULL, GRPC_PROPAGATE_DEFAULTS, d->cq,
                                            d->method, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_slice s = grpc_slice_ref(d->req);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op ops[6];
    rm_rpc_unary_ops(ops, bb, &c->md, &c->resp, &c->tmd, &c->status, &c->details);
    if (grpc_call_start_batch(c->call, ops, 6, c, NULL) != GRPC_CALL_OK)
        abort();
    grpc_byte_buffer_destroy(bb);
}

/* Returns 1 if the call succeeded. */
static inline int call_done(async_call *c, int success)
{
    int ok = success && c->status == GRPC_STATUS_OK && c->resp;
    if (c->resp)
        grpc_byte_buffer_destroy(c->resp);
    rm_rpc_unary_release(c->call, &c->md, &c->tmd, c->details);
    return ok;
}

/* Keeps `depth` Match calls in flight on one queue for `seconds`; returns
 * completed calls per second. */
static inline double drive(const char *addr, const char *method, grpc_slice req, int depth,
                           double seconds, int *errors)
{
    driver d;
    rm_rpc_client_init(&d.cl, addr);
    d.cq = grpc_completion_queue_create_for_next(NULL);
    d.method = rm_rpc_client_method(&d.cl, method);
    d.req = req;
    async_call *calls = rm_xcalloc((size_t)depth, sizeof *calls);
    uint64_t done = 0, start = rm_now_ns(), stop = start + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < depth; i++)
        call_start(&d, &calls[i]);
    int inflight = depth;
    while (inflight > 0) {
        grpc_event ev = grpc_completion_queue_next(d.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        async_call *c = ev.tag;
        inflight--;
        if (!call_done(c, ev.success))
            (*errors)++;
        done++;
        if (rm_now_ns() < stop) {
            call_start(&d, c);
            inflight++;
        }
    }
    double rate = (double)done / secs(rm_now_ns() - start);
    grpc_completion_queue_shutdown(d.cq);
    while (grpc_completion_queue_next(d.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(d.cq);
    free(calls);
    rm_rpc_client_close(&d.cl);
    return rate;
}

/* The encoded MatchRequest for tokens, as one slice to send many times. */
static inline grpc_slice match_request_slice(const char *ns, const uint32_t *tok, size_t n)
{
    radixmesh_v1_MatchRequest r = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens_view v = {tok, n};
    r.namespace = (char *)ns;
    rm_pb_tokens_encoder(&r.tokens, &v);
    grpc_byte_buffer *bb = rm_pb_encode_bb(radixmesh_v1_MatchRequest_fields, &r);
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, bb);
    grpc_slice req = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    grpc_byte_buffer_destroy(bb);
    return req;
}

#endif
