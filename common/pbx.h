/* pbx.h -- nanopb <-> gRPC byte buffer glue and token-array callbacks.
 *
 * Token arrays travel as packed `repeated uint32`. They are decoded through
 * a callback into a growable array with a size_t count, because nanopb's own
 * arrays are counted in 16-bit pb_size_t in Debian's build. */
#ifndef RM_PBX_H
#define RM_PBX_H

#include <grpc/byte_buffer.h>
#include <pb.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest namespace a request may name, in bytes. Nodes refuse longer
 * ones (INVALID_ARGUMENT), and routers refuse them too, or a Route would
 * answer with a node that then refuses the request. */
#define RM_NAMESPACE_MAX_BYTES 1024

/* Decode target for a tokens field. Set max before decoding; the decoder
 * fails (and sets too_many) instead of growing past it. Free with
 * rm_tokens_free. */
typedef struct rm_tokens {
    uint32_t *v;
    size_t n, cap, max;
    bool too_many;
} rm_tokens;

void rm_tokens_free(rm_tokens *t);

/* Points a pb_callback_t at t for decoding. */
void rm_pb_tokens_decoder(pb_callback_t *cb, rm_tokens *t);

/* Encode source for a tokens field: the caller's array, not copied. */
typedef struct rm_tokens_view {
    const uint32_t *v;
    size_t n;
} rm_tokens_view;

/* Points a pb_callback_t at view for encoding (packed). */
void rm_pb_tokens_encoder(pb_callback_t *cb, const rm_tokens_view *view);

/* Decodes bb into msg (fields: a nanopb descriptor). Reads straight from the
 * buffer's slices. On failure returns false and puts nanopb's reason in err.
 * The caller still owns bb and must pb_release msg either way. */
bool rm_pb_decode_bb(grpc_byte_buffer *bb, const pb_msgdesc_t *fields, void *msg, char *err,
                     size_t errlen);

/* Encodes msg into a new byte buffer owned by the caller, or NULL if nanopb
 * fails (a bug: our messages have no required fields). */
grpc_byte_buffer *rm_pb_encode_bb(const pb_msgdesc_t *fields, const void *msg);

#endif
