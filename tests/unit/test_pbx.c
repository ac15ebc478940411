/* Unit tests for common/pbx.c: the token-array codec (packed and unpacked,
 * across the decoder's 4 KiB read boundary, limits, malformed varints) and
 * decoding from single- and multi-slice gRPC byte buffers. */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <string.h>

#include "check.h"
#include "pbx.h"
#include "radixmesh.pb.h"
#include "util.h"

static grpc_byte_buffer *split_bb(const uint8_t *p, size_t n, size_t pieces)
{
    grpc_slice sl[16];
    size_t k = 0, off = 0;
    for (size_t i = 0; i < pieces; i++) {
        size_t take = i + 1 == pieces ? n - off : n / pieces;
        sl[k++] = grpc_slice_from_copied_buffer((const char *)p + off, take);
        off += take;
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(sl, k);
    for (size_t i = 0; i < k; i++)
        grpc_slice_unref(sl[i]);
    return bb;
}

static int decode_match(const uint8_t *p, size_t n, size_t pieces, size_t max, rm_tokens *t,
                        char *err)
{
    grpc_byte_buffer *bb = split_bb(p, n, pieces);
    radixmesh_v1_MatchRequest r = radixmesh_v1_MatchRequest_init_zero;
    memset(t, 0, sizeof *t);
    t->max = max;
    rm_pb_tokens_decoder(&r.tokens, t);
    int ok = rm_pb_decode_bb(bb, radixmesh_v1_MatchRequest_fields, &r, err, 256);
    pb_release(radixmesh_v1_MatchRequest_fields, &r);
    grpc_byte_buffer_destroy(bb);
    return ok;
}

static void test_roundtrip_sizes(void)
{
    size_t sizes[] = {0, 1, 15, 1000, 4095, 4096, 4097, 70000, 300000};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        uint32_t *v = rm_xmalloc(sizeof(uint32_t) * (n + 1));
        for (size_t i = 0; i < n; i++) /* 1..5-byte varints, all mixed */
            v[i] = (uint32_t)(rm_mix64(i + n) >> (rm_mix64(i) % 33));
        radixmesh_v1_MatchRequest r = radixmesh_v1_MatchRequest_init_zero;
        rm_tokens_view view = {v, n};
        rm_pb_tokens_encoder(&r.tokens, &view);
        r.namespace = "ns";
        grpc_byte_buffer *bb = rm_pb_encode_bb(radixmesh_v1_MatchRequest_fields, &r);
        REQUIRE(bb);
        grpc_byte_buffer_reader rd;
        grpc_byte_buffer_reader_init(&rd, bb);
        grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        grpc_byte_buffer_destroy(bb);
        for (size_t pieces = 1; pieces <= 3; pieces++) {
            rm_tokens t;
            char err[256];
            CHECK(decode_match(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all), pieces, 1 << 20,
                               &t, err));
            CHECK_EQ(t.n, n);
            CHECK(n == 0 || memcmp(t.v, v, n * sizeof *v) == 0);
            rm_tokens_free(&t);
        }
        grpc_slice_unref(all);
        free(v);
    }
}

static void test_unpacked_and_limits(void)
{
    /* field 2 as three unpacked varints: 1, 300, 2^32-1 */
    const uint8_t unpacked[] = {0x10, 0x01, 0x10, 0xac, 0x02, 0x10, 0xff, 0xff, 0xff, 0xff, 0x0f};
    rm_tokens t;
    char err[256];
    CHECK(decode_match(unpacked, sizeof unpacked, 1, 10, &t, err));
    CHECK_EQ(t.n, 3);
    CHECK_EQ(t.v[0], 1);
    CHECK_EQ(t.v[1], 300);
    CHECK_EQ(t.v[2], 0xffffffffu);
    rm_tokens_free(&t);
    CHECK(!decode_match(unpacked, sizeof unpacked, 1, 2, &t, err));
    CHECK(t.too_many);
    rm_tokens_free(&t);
    /* packed run of 3 with a limit of 2 */
    const uint8_t packed[] = {0x12, 0x03, 0x01, 0x02, 0x03};
    CHECK(!decode_match(packed, sizeof packed, 1, 2, &t, err));
    CHECK(t.too_many);
    rm_tokens_free(&t);
    CHECK(decode_match(packed, sizeof packed, 1, 3, &t, err));
    CHECK_EQ(t.n, 3);
    rm_tokens_free(&t);
}

static void test_malformed(void)
{
    rm_tokens t;
    char err[256];
    /* packed run whose last varint never ends */
    const uint8_t trunc[] = {0x12, 0x02, 0x01, 0x80};
    CHECK(!decode_match(trunc, sizeof trunc, 1, 100, &t, err));
    CHECK(strstr(err, "malformed") != NULL);
    rm_tokens_free(&t);
    /* an 11-byte varint */
    const uint8_t overlong[] = {0x12, 0x0b, 0xff, 0xff, 0xff, 0xff, 0xff,
                                0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    CHECK(!decode_match(overlong, sizeof overlong, 1, 100, &t, err));
    rm_tokens_free(&t);
    /* length prefix past the end */
    const uint8_t past[] = {0x12, 0x7f, 0x01};
    CHECK(!decode_match(past, sizeof past, 1, 100, &t, err));
    rm_tokens_free(&t);
}

int main(void)
{
    grpc_init();
    RUN(test_roundtrip_sizes);
    RUN(test_unpacked_and_limits);
    RUN(test_malformed);
    grpc_shutdown();
    return rm_t_report();
}
