/* libFuzzer target: every request decoder the daemons run on untrusted
 * bytes. The first input byte picks the message (as the node or router
 * would decode it: token arrays through the fast packed-varint callback
 * with a cap, KV bytes through a callback); the rest is the wire message.
 * A decoded token array is re-encoded and decoded again and must come back
 * identical (a differential check of the fast decoder against the
 * encoder). */
#include <grpc/byte_buffer.h>
#include <grpc/slice.h>
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    grpc_byte_buffer *bb = wrap(data + 1, size - 1);
    rm_tokens toks = {0};
    toks.max = 1u << 16;
    size_t kv = 0;
    char err[256];
    int tokens_field = 1;
    bool ok;
    switch (data[0] % 9) {
    case 0: {
        radixmesh_v1_MatchRequest m = radixmesh_v1_MatchRequest_init_zero;
        rm_pb_tokens_decoder(&m.tokens, &toks);
        ok = rm_pb_decode_bb(bb, radixmesh_v1_MatchRequest_fields, &m, err, sizeof err);
        pb_release(radixmesh_v1_MatchRequest_fields, &m);
        break;
    }
    case 1: {
        radixmesh_v1_InsertRequest m = radixmesh_v1_InsertRequest_init_zero;
        rm_pb_tokens_decoder(&m.tokens, &toks);
        ok = rm_pb_decode_bb(bb, radixmesh_v1_InsertRequest_fields, &m, err, sizeof err);
        pb_release(radixmesh_v1_InsertRequest_fields, &m);
        break;
    }
    case 2: {
        radixmesh_v1_ReleaseRequest m = radixmesh_v1_ReleaseRequest_init_zero;
        ok = rm_pb_decode_bb(bb, radixmesh_v1_ReleaseRequest_fields, &m, err, sizeof err);
        pb_release(radixmesh_v1_ReleaseRequest_fields, &m);
        tokens_field = 0;
        break;
    }
    case 3: {
        radixmesh_v1_ReadKVRequest m = radixmesh_v1_ReadKVRequest_init_zero;
        ok = rm_pb_decode_bb(bb, radixmesh_v1_ReadKVRequest_fields, &m, err, sizeof err);
        pb_release(radixmesh_v1_ReadKVRequest_fields, &m);
        tokens_field = 0;
        break;
    }
    case 4: {
        radixmesh_v1_WriteKVChunk m = radixmesh_v1_WriteKVChunk_init_zero;
        rm_pb_tokens_decoder(&m.tokens, &toks);
        m.kv.funcs.decode = count_kv;
        m.kv.arg = &kv;
        ok = rm_pb_decode_bb(bb, radixmesh_v1_WriteKVChunk_fields, &m, err, sizeof err);
        pb_release(radixmesh_v1_WriteKVChunk_fields, &m);
        break;
    }
    case 5: {
        radixmesh_v1_RouteRequest m = radixmesh_v1_RouteRequest_init_zero;
        rm_pb_tokens_decoder(&m.tokens, &toks);
        ok = rm_pb_decode_bb(bb, radixmesh_v1_RouteRequest_fields, &m, err, sizeof err);
        pb_release(radixmesh_v1_RouteRequest_fields, &m);
        break;
    }
    case 6: {
        radixmesh_v1_StatsRequest m = radixmesh_v1_StatsRequest_init_zero;
        ok = rm_pb_decode_bb(bb, radixmesh_v1_StatsRequest_fields, &m, err, sizeof err);
        pb_release(radixmesh_v1_StatsRequest_fields, &m);
        tokens_field = 0;
        break;
    }
    case 7: {
        radixmesh_v1_ClusterStatsRequest m = radixmesh_v1_ClusterStatsRequest_init_zero;
        ok = rm_pb_decode_bb(bb, radixmesh_v1_ClusterStatsRequest_fields, &m, err, sizeof err);
        pb_release(radixmesh_v1_ClusterStatsRequest_fields, &m);
        tokens_field = 0;
        break;
    }
    default: {
        grpc_health_v1_HealthCheckRequest m = grpc_health_v1_HealthCheckRequest_init_zero;
        ok = rm_pb_decode_bb(bb, grpc_health_v1_HealthCheckRequest_fields, &m, err, sizeof err);
        pb_release(grpc_health_v1_HealthCheckRequest_fields, &m);
        tokens_field = 0;
        break;
    }
    }
    if (toks.n > toks.max || kv > size)
        abort();
    if (!ok && !err[0])
        abort(); /* a rejected request always says why */
    if (ok && tokens_field)
        round_trip(&toks);
    rm_tokens_free(&toks);
    grpc_byte_buffer_destroy(bb);
    return 0;
}
