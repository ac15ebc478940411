#include "pbx.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void rm_tokens_free(rm_tokens *t)
{
    free(t->v);
    t->v = NULL;
    t->n = t->cap = 0;
}

static bool push_token(pb_istream_t *s, rm_tokens *t, uint32_t v)
{
    if (t->n >= t->max) {
        t->too_many = true;
        PB_RETURN_ERROR(s, "too many tokens");
    }
    t->v = rm_xgrow(t->v, t->n, &t->cap, sizeof *t->v, 16);
    t->v[t->n++] = v;
    return true;
}

/* Packed run: called once with the whole run (unpacked: once per element).
 * nanopb's own varint reader pulls one byte per stream callback; reading
 * 4 KiB at a time and parsing here is several times faster on the hot
 * Match path. A varint may straddle two reads: its bytes carry over. */
static bool decode_tokens(pb_istream_t *s, const pb_field_t *f, void **arg)
{
    (void)f;
    rm_tokens *t = *arg;
    /* Each varint takes at least one byte, which bounds the growth. */
    size_t room = t->n + (s->bytes_left ? s->bytes_left : 1);
    if (room > t->max)
        room = t->max + 1;
    if (room > t->cap) {
        t->cap = room;
        t->v = rm_xrealloc(t->v, t->cap * sizeof(uint32_t));
    }
    uint8_t buf[4096];
    size_t have = 0;
    while (s->bytes_left) {
        size_t take = sizeof buf - have;
        if (take > s->bytes_left)
            take = s->bytes_left;
        if (!pb_read(s, buf + have, take))
            return false;
        have += take;
        size_t i = 0;
        while (i < have) {
            uint32_t v = 0;
            size_t j = i;
            int done = 0;
            for (unsigned shift = 0; j < have; shift += 7) {
                uint8_t b = buf[j++];
                if (shift < 32)
                    v |= (uint32_t)(b & 0x7f) << shift;
                if (!(b & 0x80)) {
                    done = 1;
                    break;
                }
                if (shift >= 63)
                    PB_RETURN_ERROR(s, "varint overflow");
            }
            if (!done)
                break; /* incomplete: wait for the next read */
            if (!push_token(s, t, v))
                return false;
            i = j;
        }
        memmove(buf, buf + i, have - i);
        have -= i;
    }
    if (have)
        PB_RETURN_ERROR(s, "truncated varint");
    return true;
}

void rm_pb_tokens_decoder(pb_callback_t *cb, rm_tokens *t)
{
    cb->funcs.decode = decode_tokens;
    cb->arg = t;
}

static size_t varint_size(uint32_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static bool encode_tokens(pb_ostream_t *s, const pb_field_t *f, void *const *arg)
{
    const rm_tokens_view *t = *arg;
    if (t->n == 0)
        return true;
    size_t size = 0;
    for (size_t i = 0; i < t->n; i++)
        size += varint_size(t->v[i]);
    if (!pb_encode_tag(s, PB_WT_STRING, f->tag) || !pb_encode_varint(s, size))
        return false;
    for (size_t i = 0; i < t->n; i++)
        if (!pb_encode_varint(s, t->v[i]))
            return false;
    return true;
}

void rm_pb_tokens_encoder(pb_callback_t *cb, const rm_tokens_view *view)
{
    cb->funcs.encode = encode_tokens;
    cb->arg = (void *)view;
}

typedef struct bb_source {
    grpc_byte_buffer_reader reader;
    grpc_slice cur;
    size_t off;
    bool have;
} bb_source;

static bool bb_read(pb_istream_t *s, pb_byte_t *buf, size_t count)
{
    bb_source *b = s->state;
    while (count) {
        if (!b->have || b->off == GRPC_SLICE_LENGTH(b->cur)) {
            if (b->have)
                grpc_slice_unref(b->cur);
            b->have = grpc_byte_buffer_reader_next(&b->reader, &b->cur) != 0;
            b->off = 0;
            if (!b->have)
                return false;
            continue;
        }
        size_t take = GRPC_SLICE_LENGTH(b->cur) - b->off;
        if (take > count)
            take = count;
        if (buf) {
            memcpy(buf, GRPC_SLICE_START_PTR(b->cur) + b->off, take);
            buf += take;
        }
        b->off += take;
        count -= take;
    }
    return true;
}

/* Messages up to this size are made contiguous and decoded from memory:
 * nanopb reads varints a byte at a time, and a per-byte callback into the
 * slice reader costs ~10 ns a byte. Larger ones (KV chunks) stream. */
#define CONTIGUOUS_MAX (256 * 1024)

bool rm_pb_decode_bb(grpc_byte_buffer *bb, const pb_msgdesc_t *fields, void *msg, char *err,
                     size_t errlen)
{
    bb_source src = {.have = false};
    if (!grpc_byte_buffer_reader_init(&src.reader, bb)) {
        snprintf(err, errlen, "unreadable message");
        return false;
    }
    size_t len = grpc_byte_buffer_length(bb);
    bool ok;
    pb_istream_t s;
    if (len <= CONTIGUOUS_MAX) {
        /* readall refs the slice when there is one, copies otherwise. */
        grpc_slice all = grpc_byte_buffer_reader_readall(&src.reader);
        s = pb_istream_from_buffer(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all));
        ok = pb_decode(&s, fields, msg);
        grpc_slice_unref(all);
    } else {
        s = (pb_istream_t){bb_read, &src, len, NULL};
        ok = pb_decode(&s, fields, msg);
        if (src.have)
            grpc_slice_unref(src.cur);
    }
    if (!ok)
        snprintf(err, errlen, "malformed protobuf: %s", PB_GET_ERROR(&s));
    grpc_byte_buffer_reader_destroy(&src.reader);
    return ok;
}

grpc_byte_buffer *rm_pb_encode_bb(const pb_msgdesc_t *fields, const void *msg)
{
    size_t size;
    if (!pb_get_encoded_size(&size, fields, msg))
        return NULL;
    grpc_slice slice = grpc_slice_malloc(size);
    pb_ostream_t s = pb_ostream_from_buffer(GRPC_SLICE_START_PTR(slice), size);
    if (!pb_encode(&s, fields, msg)) {
        grpc_slice_unref(slice);
        return NULL;
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}
