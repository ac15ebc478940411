/* kv_mirror.h -- an inference engine's prefix cache, mirrored in a node's
 * cache from the engine's own KV-cache events (node/KV_EVENTS.md).
 *
 * The engine names each block by a hash chained through its parent; the
 * node's tree is keyed by token ids. So the mirror keeps, for every block
 * the engine's events say it holds, the block's parent hash and its
 * tokens: a block's whole token path is its ancestors' tokens followed by
 * its own, and that path is what goes into (or out of) the tree.
 *
 *   BlockStored    its blocks are recorded; when the parent's chain is
 *                  whole, the path is inserted into the mirror's namespace
 *                  (blocks held already: nothing changes -- current vLLM
 *                  re-emits them for hits). A parent the mirror does not
 *                  know: counted, the blocks are recorded but not inserted
 *                  (the engine cannot reach them either until the chain is
 *                  whole: its lookups walk a request's blocks from the
 *                  first one).
 *   BlockRemoved   each block and everything cached below it leaves the
 *                  tree (an orphan is unreachable, for the engine as for
 *                  the node); unknown hashes are counted and ignored.
 *   AllBlocksCleared, and a resync: the namespace and the records empty.
 *
 * Applied only when the engine's tokens alone identify a block: KV group
 * 0 (group_idx absent or 0), an accepted medium (default GPU, or none
 * sent), no LoRA (lora_id, lora_name) and no extra hash keys (multimodal
 * inputs, cache_salt...), block_size equal to the node's page, token_ids
 * for every block. Everything else is skipped and counted by reason.
 *
 * Memory per block: one allocation of 20 + 4 x page_tokens bytes (84 at
 * 16 tokens; 96 with malloc's header) and 8 to 16 bytes of table
 * (rm_ptrtab, at most half full): about 110 bytes a block, 7 a token,
 * beside the tree's own ~5 a token. The records never outnumber the
 * blocks the engine holds (each is dropped when the engine drops it) and
 * are capped at max_blocks (more: counted, not recorded).
 *
 * Known limits: a hash the engine holds twice (the same block computed
 * again while its first copy was cached) is one record, so its first
 * BlockRemoved drops it while a copy stays cached; children the engine
 * still holds under a removed block become reachable in the engine again
 * when the block is stored again, but the mirror inserts them only when
 * their own BlockStored comes again.
 *
 * Pure apart from the cache it writes to. Not thread-safe: the node's
 * owner thread. */
#ifndef RM_KV_MIRROR_H
#define RM_KV_MIRROR_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "kv_events.h"

/* One bit per rm_kv_medium. */
#define RM_KV_MEDIUM_BIT(m) (1u << (m))

typedef struct rm_kv_mirror_config {
    uint32_t page_tokens; /* the node's page; the engine's block_size must equal it */
    uint64_t max_blocks;  /* records at most; 0: 1 << 20 */
    uint32_t media;       /* RM_KV_MEDIUM_BIT()s accepted; 0: NONE and GPU */
} rm_kv_mirror_config;

typedef struct rm_kv_mirror_stats {
    uint64_t applied;        /* events applied */
    uint64_t stored_blocks;  /* blocks recorded */
    uint64_t removed_blocks; /* blocks dropped by BlockRemoved */
    uint64_t clears;         /* AllBlocksCleared applied */
    uint64_t resyncs;        /* rm_kv_mirror_clear for a resync */
    /* Events or blocks skipped, by why. */
    uint64_t skipped_group;         /* events: KV cache group other than 0 */
    uint64_t skipped_medium;        /* events: a medium not accepted */
    uint64_t skipped_keyed;         /* events: LoRA or extra hash keys */
    uint64_t block_size_mismatches; /* events: block_size != page_tokens */
    uint64_t no_tokens;             /* events: token_ids not block_size per block */
    uint64_t unknown_parent;        /* events: a parent chain the mirror cannot complete */
    uint64_t unknown_removed;       /* blocks: BlockRemoved of a hash not recorded */
    uint64_t full;                  /* blocks: not recorded, max_blocks reached */
    uint64_t busy;                  /* blocks: referenced in the node (a lease), so kept */
    uint64_t dropped_tokens;        /* tokens the node's pool could not take */
    uint32_t last_block_size;       /* the last block_size refused */
    uint64_t blocks;                /* gauge: records */
    uint64_t bytes;                 /* gauge: their memory */
} rm_kv_mirror_stats;

typedef struct rm_kv_mirror rm_kv_mirror;

rm_kv_mirror *rm_kv_mirror_new(const rm_kv_mirror_config *cfg);
void rm_kv_mirror_free(rm_kv_mirror *m);

/* The namespace the mirror writes to (copied). Set it before the first
 * apply; a different one later empties the old one in c first. */
void rm_kv_mirror_set_namespace(rm_kv_mirror *m, rm_cache *c, const char *ns);
/* NULL until set. */
const char *rm_kv_mirror_namespace(const rm_kv_mirror *m);

/* The cap on records (e.g. after the node's pool grew). */
void rm_kv_mirror_set_max_blocks(rm_kv_mirror *m, uint64_t max_blocks);

/* Applies one event to c (which must have a namespace set). Returns 1 if
 * it was applied, 0 if skipped (counted by reason). */
int rm_kv_mirror_apply(rm_kv_mirror *m, rm_cache *c, const rm_kv_event *ev, uint64_t now_ms);

/* Empties the records and the namespace: counted as a resync when resync,
 * else as AllBlocksCleared. */
void rm_kv_mirror_clear(rm_kv_mirror *m, rm_cache *c, int resync);

void rm_kv_mirror_stats_get(const rm_kv_mirror *m, rm_kv_mirror_stats *out);

#endif
