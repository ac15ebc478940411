/* libFuzzer target: every request decoder the daemons run on untrusted
 * bytes. The first input byte picks the message (as the node or router
 * would decode it: token arrays through the fast packed-varint callback
 * with a cap, KV bytes through a callback); the rest is the wire message.
 * A decoded token array is re-encoded and decoded again and must come back
 * identical (a differential check of the fast decoder against the
 * encoder). */
#include <grpc/byte_buffer.h>
#include <grpc/slice.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb.h"
#include "pbx.h"
#include "radixmesh.pb.h"

static bool count_kv(pb_istream_t *s, const pb_field_t *f, void **arg)
{
    (void)f;
    size_t *total = *arg;
    uint8_t buf[256];
    while (s->bytes_left) {
        size_t take = s->bytes_left < sizeof buf ? s->bytes_left : sizeof buf;
        if (!pb_read(s, buf, take))
            return false;
        *total += take;
    }
    return true;
}

static grpc_byte_buffer *wrap(const uint8_t *p, size_t n)
{
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)p, n);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Re-encodes toks in a MatchRequest and decodes it again. */
static void round_trip(const rm_tokens *toks)
{
    radixmesh_v1_MatchRequest m = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens_view view = {toks->v, toks->n};
    rm_pb_tokens_encoder(&m.tokens, &view);
    grpc_byte_buffer *bb = rm_pb_encode_bb(radixmesh_v1_MatchRequest_fields, &m);
    if (!bb)
        abort();
    radixmesh_v1_MatchRequest back = radixmesh_v1_MatchRequest_init_zero;
    rm_tokens again = {0};
    again.max = toks->max;
    rm_pb_tokens_decoder(&back.tokens, &again);
    char err[128];
    if (!rm_pb_decode_bb(bb, radixmesh_v1_MatchRequest_fields, &back, err, sizeof err))
        abort();
    if (again.n != toks->n || (toks->n && memcmp(again.v, toks->v, toks->n * sizeof *toks->v)))
        abort();
    pb_release(radixmesh_v1_MatchRequest_fields, &back);
    rm_tokens_free(&again);
    grpc_byte_buffer_destroy(bb);
}

/* A request message as a daemon decodes it: where its token array and
 * its KV bytes are (callback fields; -1: none). The first input byte picks
 * one; the order is the seed corpus's. */
typedef struct request_kind {
    const pb_msgdesc_t *fields;
    size_t size;
    ptrdiff_t tokens, kv;
} request_kind;

#define AT(type, field) ((ptrdiff_t)offsetof(type, field))

static const request_kind kinds[] = {
    {radixmesh_v1_MatchRequest_fields, sizeof(radixmesh_v1_MatchRequest),
     AT(radixmesh_v1_MatchRequest, tokens), -1},
    {radixmesh_v1_InsertRequest_fields, sizeof(radixmesh_v1_InsertRequest),
     AT(radixmesh_v1_InsertRequest, tokens), -1},
    {radixmesh_v1_ReleaseRequest_fields, sizeof(radixmesh_v1_ReleaseRequest), -1, -1},
    {radixmesh_v1_ReadKVRequest_fields, sizeof(radixmesh_v1_ReadKVRequest), -1, -1},
    {radixmesh_v1_WriteKVChunk_fields, sizeof(radixmesh_v1_WriteKVChunk),
     AT(radixmesh_v1_WriteKVChunk, tokens), AT(radixmesh_v1_WriteKVChunk, kv)},
    {radixmesh_v1_RouteRequest_fields, sizeof(radixmesh_v1_RouteRequest),
     AT(radixmesh_v1_RouteRequest, tokens), -1},
    {radixmesh_v1_StatsRequest_fields, sizeof(radixmesh_v1_StatsRequest), -1, -1},
    {radixmesh_v1_ClusterStatsRequest_fields, sizeof(radixmesh_v1_ClusterStatsRequest), -1, -1},
    {grpc_health_v1_HealthCheckRequest_fields, sizeof(grpc_health_v1_HealthCheckRequest), -1, -1},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const request_kind *k = &kinds[data[0] % (sizeof kinds / sizeof kinds[0])];
    /* Every field of these messages starts zeroed (their _init_zero). */
    _Alignas(max_align_t) uint8_t msg[1024];
    if (k->size > sizeof msg)
        abort();
    memset(msg, 0, k->size);
    grpc_byte_buffer *bb = wrap(data + 1, size - 1);
    rm_tokens toks = {0};
    toks.max = 1u << 16;
    size_t kv = 0;
    char err[256];
    if (k->tokens >= 0)
        rm_pb_tokens_decoder((pb_callback_t *)(void *)(msg + k->tokens), &toks);
    if (k->kv >= 0) {
        pb_callback_t *cb = (pb_callback_t *)(void *)(msg + k->kv);
        cb->funcs.decode = count_kv;
        cb->arg = &kv;
    }
    bool ok = rm_pb_decode_bb(bb, k->fields, msg, err, sizeof err);
    pb_release(k->fields, msg);
    if (toks.n > toks.max || kv > size)
        abort();
    if (!ok && !err[0])
        abort(); /* a rejected request always says why */
    if (ok && k->tokens >= 0)
        round_trip(&toks);
    rm_tokens_free(&toks);
    grpc_byte_buffer_destroy(bb);
    return 0;
}
