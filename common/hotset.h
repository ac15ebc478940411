/* hotset.h -- which request prefixes a large share of recent traffic shares.
 *
 * Each Match feeds its request's block-chained prefix hashes (prefix_key.h)
 * in order, stopping at the first prefix that is cold: a prefix is never
 * more common than its parent, so nothing deeper can be hot. Counts decay
 * exponentially (half-life half_life_ms), and so does the request total, so
 * count/total is the share of recent requests that carry the prefix.
 *
 * The table is fixed-size; when it fills, entries colder than the cold
 * threshold are dropped. Memory and per-request work are bounded by the
 * depth of the hot prefixes, not by request length.
 *
 * Not thread-safe: the cache's owner thread feeds and reads it. */
#ifndef RM_HOTSET_H
#define RM_HOTSET_H

#include <stddef.h>
#include <stdint.h>

typedef struct rm_hot_entry {
    uint64_t hash;   /* 0: empty slot */
    uint32_t blocks; /* prefix length in blocks */
    double count;    /* decayed, in units of the current scale */
} rm_hot_entry;

typedef struct rm_hotset {
    uint32_t block_tokens, max_blocks;
    double cold_share; /* stop descending below this share */
    uint64_t half_life_ms, epoch_ms;
    double scale; /* weight of one request now, relative to epoch_ms */
    double total; /* decayed request count, same units */
    rm_hot_entry *slots;
    size_t mask, used;
} rm_hotset;

/* capacity: table slots (power of two is used). Returns 0 or -EINVAL. */
int rm_hotset_init(rm_hotset *h, uint32_t block_tokens, uint32_t max_blocks, double cold_share,
                   uint64_t half_life_ms, size_t capacity, uint64_t now_ms);
void rm_hotset_destroy(rm_hotset *h);

/* Counts one request of n tokens in namespace ns. */
void rm_hotset_add(rm_hotset *h, const char *ns, size_t ns_len, const uint32_t *tokens, size_t n,
                   uint64_t now_ms);

/* Copies up to cap entries whose share >= min_share into out, with count
 * and *total normalised to "requests in the recent window" (decayed as of
 * now_ms). Most shared first, deepest first among equal counts, so when cap
 * truncates, what goes is the rarest (and for a chain, never an ancestor
 * before its descendants of the same count). Returns the count. */
size_t rm_hotset_top(const rm_hotset *h, double min_share, uint64_t now_ms, rm_hot_entry *out,
                     size_t cap, double *total);

#endif
