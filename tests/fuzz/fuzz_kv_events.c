/* libFuzzer target: the KV-event decoder (common/kv_events.c) and the
 * msgpack reader under it. The input is a payload as an engine's PUB
 * socket would deliver it; it is also cut into frames for the PUB and
 * replay framings. Whatever the input, decoding must not crash or read
 * outside it, must stay within the caps, and a batch that decodes must be
 * self-consistent. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv_events.h"

static void check_batch(const rm_kv_batch *b)
{
    size_t hashes = 0, tokens = 0;
    if (b->n_events > RM_KV_MAX_EVENTS)
        abort();
    for (uint32_t i = 0; i < b->n_events; i++) {
        const rm_kv_event *e = &b->events[i];
        if (e->type < RM_KV_BLOCK_STORED || e->type > RM_KV_ALL_CLEARED)
            abort();
        if ((e->n_hashes && !e->hashes) || (e->n_tokens && !e->tokens))
            abort();
        /* Touch every element: ASan checks they lie inside the batch. */
        for (uint32_t k = 0; k < e->n_hashes; k++)
            hashes += e->hashes[k] & 1;
        for (uint32_t k = 0; k < e->n_tokens; k++)
            tokens += e->tokens[k] & 1;
        if (e->type == RM_KV_BLOCK_STORED &&
            (e->block_size < 1 || e->block_size > RM_KV_MAX_BLOCK_SIZE))
            abort();
        if (e->lora_name && strlen(e->lora_name) > RM_KV_MAX_NAME)
            abort();
        if (e->group_idx < -1)
            abort();
    }
    if (hashes > RM_KV_MAX_HASHES || tokens > RM_KV_MAX_TOKENS || b->dp_rank < -1)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rm_kv_batch b;
    rm_kv_batch_init(&b);
    rm_kv_result rc = rm_kv_decode_payload(data, size, &b);
    if (rc == RM_KV_OK)
        check_batch(&b);
    else if (b.n_events != 0 || !rm_kv_strerror(rc)[0])
        abort();

    /* The same bytes as frames: [topic, first 8 bytes, the rest]. */
    size_t cut = size < 8 ? size : 8;
    rm_kv_frame f[4] = {{"", 0}, {data, cut}, {data + cut, size - cut}};
    uint64_t seq = 0;
    rc = rm_kv_decode_pub(f, 3, &b, &seq);
    if (rc == RM_KV_OK)
        check_batch(&b);
    rm_kv_frame pay;
    rm_kv_frame r4[4] = {{"", 0}, {"t", 1}, {data, cut}, {data + cut, size - cut}};
    if (rm_kv_parse_replay(f, 3, &seq, &pay) == RM_KV_OK &&
        (pay.data != data + cut || pay.len != size - cut))
        abort();
    if (rm_kv_parse_replay(r4, 4, &seq, &pay) == RM_KV_OK && pay.len != size - cut)
        abort();
    rm_kv_batch_free(&b);
    return 0;
}
