/* kv_events.h -- decoder for the KV-cache events inference engines publish.
 *
 * vLLM (--kv-events-config), SGLang and TensorRT-LLM publish the same
 * ZeroMQ stream: PUB frames [topic, seq as 8-byte big-endian, payload],
 * payload a MessagePack EventBatch of BlockStored / BlockRemoved /
 * AllBlocksCleared events, in either the positional (array) or the keyed
 * (map) encoding. node/KV_EVENTS.md has the wire format as read from the
 * engines' sources, release by release.
 *
 * This module is pure: bytes in, a decoded batch out, no I/O, no globals.
 * It accepts every encoding listed there, ignores fields and trailing
 * elements it does not know, skips (and counts) events of unknown types,
 * and refuses anything else with a result code and a reason
 * (rm_kv_strerror). It never reads outside the given bytes and allocates
 * only what the decoded batch holds, within the caps below.
 *
 * Hashes become 64-bit values whatever their wire type:
 *   - msgpack unsigned integers (vLLM's default, VLLM_KV_EVENTS_USE_INT_
 *     BLOCK_HASHES=1) as they are;
 *   - negative integers (SGLang's signed int64 hashes) as the same 64 bits;
 *   - bin (vLLM with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0: the raw 32-byte
 *     sha256 or 16-byte xxh3-128 block hash) by rm_kv_hash_bytes, which is
 *     the conversion vLLM applies itself in integer mode, so one engine's
 *     block has the same 64-bit hash in both modes. */
#ifndef RM_KV_EVENTS_H
#define RM_KV_EVENTS_H

#include <stddef.h>
#include <stdint.h>

/* Caps on one batch. A payload over RM_KV_MAX_PAYLOAD, or a batch with
 * more events, hashes or tokens in total, or a LoRA name longer than
 * RM_KV_MAX_NAME, is refused with RM_KV_ERR_LIMIT. A decoded batch holds
 * at most about 50 MiB (the three arrays full); a real engine step is
 * kilobytes. */
#define RM_KV_MAX_PAYLOAD    (16u << 20)
#define RM_KV_MAX_EVENTS     65536u
#define RM_KV_MAX_HASHES     (1u << 20)
#define RM_KV_MAX_TOKENS     (1u << 22)
#define RM_KV_MAX_NAME       1024u
#define RM_KV_MAX_BLOCK_SIZE 65536u

/* The replay end marker's sequence number: eight 0xff bytes. */
#define RM_KV_SEQ_END UINT64_MAX

typedef enum {
    RM_KV_OK = 0,
    RM_KV_ERR_FRAMES,  /* wrong number of frames, or a seq frame that is not 8 bytes */
    RM_KV_ERR_MSGPACK, /* the payload is not complete, valid MessagePack */
    RM_KV_ERR_SCHEMA,  /* valid MessagePack that is not an event batch */
    RM_KV_ERR_LIMIT,   /* over one of the caps above */
    RM_KV_ERR_NOMEM,
} rm_kv_result;

const char *rm_kv_strerror(rm_kv_result r);

typedef enum {
    RM_KV_BLOCK_STORED = 1,
    RM_KV_BLOCK_REMOVED,
    RM_KV_ALL_CLEARED,
} rm_kv_event_type;

/* Where the blocks live. Releases before `medium` existed send none (GPU
 * then). vLLM: "GPU", "CPU", "STORAGE"; SGLang: "GPU", "CPU_PINNED",
 * "DISK", "EXTERNAL". */
typedef enum {
    RM_KV_MEDIUM_NONE = 0, /* absent or nil */
    RM_KV_MEDIUM_GPU,
    RM_KV_MEDIUM_CPU,      /* "CPU", "CPU_PINNED" */
    RM_KV_MEDIUM_DISK,     /* "DISK", "STORAGE" */
    RM_KV_MEDIUM_EXTERNAL, /* "EXTERNAL" */
    RM_KV_MEDIUM_OTHER,    /* any other string */
} rm_kv_medium;

typedef struct rm_kv_event {
    rm_kv_event_type type;
    rm_kv_medium medium;
    /* BlockStored, BlockRemoved: the blocks, in the engine's order. */
    const uint64_t *hashes;
    uint32_t n_hashes;
    /* BlockStored: every block's tokens concatenated, block_size each in
     * hashes order when the engine has them (vLLM sends none for blocks
     * offloaded to CPU; the consumer checks n_tokens == n_hashes *
     * block_size before using them). */
    const uint32_t *tokens;
    uint32_t n_tokens;
    uint32_t block_size; /* BlockStored: 1..RM_KV_MAX_BLOCK_SIZE */
    uint64_t parent;     /* BlockStored with has_parent: the block before hashes[0] */
    int64_t lora_id;     /* with has_lora_id */
    int32_t group_idx;   /* KV cache group (vLLM); -1 when not sent (then 0) */
    uint8_t has_parent;
    uint8_t has_lora_id;
    /* The engine hashed more than the tokens into these blocks: vLLM's
     * extra_keys has a non-nil entry (multimodal inputs, LoRA name,
     * cache_salt, prompt embeddings) or SGLang's metadata (cache_salt). */
    uint8_t has_extra_keys;
    const char *lora_name; /* NUL-terminated, NULL when nil or absent */
} rm_kv_event;

typedef struct rm_kv_batch {
    uint64_t seq;    /* from the frame; rm_kv_decode_payload leaves it alone */
    double ts;       /* the engine's wall clock, seconds */
    int64_t dp_rank; /* data_parallel_rank (vLLM) / attn_dp_rank (SGLang), -1 if not sent */
    rm_kv_event *events;
    uint32_t n_events;
    uint32_t n_unknown;     /* events of a type this decoder does not know: skipped */
    uint32_t n_unsupported; /* known events in a shape we cannot use (token ids that are
                             * not integers, e.g. SGLang DSv4 token pairs): skipped */
    size_t bytes;           /* heap bytes the batch holds (queue accounting) */
    /* private: one allocation each, reused by the next decode into this batch */
    uint64_t *hash_buf;
    uint32_t *token_buf;
    char *name_buf;
    size_t event_cap, hash_cap, token_cap, name_cap;
} rm_kv_batch;

void rm_kv_batch_init(rm_kv_batch *b);
void rm_kv_batch_free(rm_kv_batch *b); /* frees the arrays; b can be decoded into again */

/* Decodes one EventBatch payload into b (its previous contents are
 * replaced; b->seq is not touched). On error b holds no events. */
rm_kv_result rm_kv_decode_payload(const void *payload, size_t len, rm_kv_batch *b);

typedef struct rm_kv_frame {
    const void *data;
    size_t len;
} rm_kv_frame;

/* An 8-byte big-endian sequence frame. */
rm_kv_result rm_kv_parse_seq(const rm_kv_frame *f, uint64_t *seq);

/* A PUB message: exactly [topic, seq, payload]. Sets b->seq too. When only
 * the payload is bad, *seq_out (if not NULL) still gets the sequence
 * number, so the caller can tell a bad batch from a lost one. */
rm_kv_result rm_kv_decode_pub(const rm_kv_frame *frames, size_t n, rm_kv_batch *b,
                              uint64_t *seq_out);

/* A reply on the replay DEALER socket, as received (empty delimiter frame
 * first): [b"", seq, payload] (vLLM <= 0.10, SGLang) or [b"", topic, seq,
 * payload] (later vLLM, TensorRT-LLM). Sets *seq and points *payload at
 * the payload frame; *seq == RM_KV_SEQ_END is the end marker. */
rm_kv_result rm_kv_parse_replay(const rm_kv_frame *frames, size_t n, uint64_t *seq,
                                rm_kv_frame *payload);

/* A bin hash as 64 bits: the big-endian value of its last min(n, 8) bytes,
 * i.e. int.from_bytes(h, "big") & (2**64 - 1), the value vLLM publishes
 * for the same block in integer mode (maybe_convert_block_hash in
 * vllm/v1/core/kv_cache_utils.py). n == 0 gives 0. */
uint64_t rm_kv_hash_bytes(const uint8_t *p, size_t n);

/* ---- sequence rules (pure; the subscriber feeds them) -------------------- */

typedef enum {
    RM_KV_SEQ_NEXT,     /* the one expected: apply it */
    RM_KV_SEQ_GAP,      /* later than expected: [expected, seq) were lost */
    RM_KV_SEQ_RESTART,  /* earlier than the live stream has been: the engine restarted
                         * (numbering begins again at 0 in a new process), everything
                         * mirrored is stale */
    RM_KV_SEQ_REPLAYED, /* earlier than expected but not than the live stream has been:
                         * the live copy of a batch a replay poll already took (the
                         * poll's answer overtook it); skip it */
} rm_kv_seq_verdict;

/* A batch numbered seq arrives on the PUB socket when expected is the next
 * one due (0 before anything arrived: an engine numbers from 0, so a first
 * batch above 0 is a gap the replay buffer may still fill) and live_next
 * the one after the last the PUB socket itself delivered (0 before any):
 * batches in [live_next, expected) were taken from the replay socket and
 * may still arrive live. */
rm_kv_seq_verdict rm_kv_seq_classify(uint64_t expected, uint64_t live_next, uint64_t seq);

typedef enum {
    RM_KV_REPLAY_TAKE, /* the batch expected: apply it, expect the next */
    RM_KV_REPLAY_SKIP, /* already applied (the engine resends everything >= start) */
    RM_KV_REPLAY_HOLE, /* later than expected: the engine's buffer no longer has the
                        * batches in between; the gap cannot be filled */
} rm_kv_replay_verdict;

rm_kv_replay_verdict rm_kv_replay_classify(uint64_t expected, uint64_t seq);

#endif
