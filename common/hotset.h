/* hotset.h -- which request prefixes a large share of recent traffic shares.
 *
 * Each Match feeds its request's block-chained prefix hashes (prefix_key.h)
 * in order, stopping at the first prefix that is cold: a prefix is never
 * more common than its parent, so nothing deeper can be hot. Counts decay
 * exponentially (half-life half_life_ms), and so does the request total, so
 * count/total is the share of recent requests that carry the prefix.
 *
 * Each entry also records how the requests that carry it continue (see
 * rm_hot_entry), which tells a shared prompt from one long conversation.
 *
 * The table is fixed-size; when it fills, entries colder than the cold
 * threshold are dropped (then, if need be, the coldest until it is half
 * full). A request's work is linear in the depth of its warm prefix (one
 * hash and one lookup per block), never in the table; a purge is linear in
 * the table and frees a quarter of it at least, so it costs O(1) per entry
 * added. Memory is the table's, fixed at init.
 *
 * Not thread-safe: the cache's owner thread feeds and reads it. */
#ifndef RM_HOTSET_H
#define RM_HOTSET_H

#include <stddef.h>
#include <stdint.h>

/* Besides how many requests carry a prefix, an entry keeps where they go
 * next: the leading continuation and the weight of the requests continuing
 * through it versus through anything else. A common system prompt is
 * followed by many conversations (much "other"); the history of one
 * conversation only by its own next turn (none), however much of the
 * traffic that conversation is.
 *
 * A continuation is known by hashes of its first 1/4, 2/4, 3/4 and 4/4
 * block (RM_HOT_CHECKPOINTS): a request that ends a few tokens into the
 * next block -- this turn, before the next turn extends it -- is known to
 * its last whole quarter, and agrees with a continuation sharing those
 * quarters. Tails under a quarter block say nothing and are not counted.
 * The leader is a one-slot heavy hitter: a challenger takes over once the
 * others outweigh it (the old leader's weight then counts as other), so a
 * leader that stopped being used is displaced as counts decay. */
#define RM_HOT_CHECKPOINTS 4

typedef struct rm_hot_entry {
    uint64_t hash;                     /* 0: empty slot */
    uint32_t blocks;                   /* prefix length in blocks */
    double count;                      /* decayed, in units of the current scale */
    double lead_count;                 /* requests that continued through the leader (same units) */
    double other;                      /* requests that continued otherwise */
    uint64_t lead[RM_HOT_CHECKPOINTS]; /* the leader's quarter-block hashes */
    uint32_t lead_known;               /* how many of them are known; 0: no leader yet */
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

/* How deep a node's sketch and a router's keys look: prompts shared by
 * many requests (tool definitions, long system prompts) reach tens of
 * thousands of tokens, and the key must get past them. In blocks:
 * rm_hotset_depth. */
#define RM_HOT_MAX_TOKENS 131072u
#define RM_HOT_MAX_BLOCKS 16384u /* 64k tokens even at 4-token blocks */

/* RM_HOT_MAX_TOKENS in blocks of block_tokens (> 0): at least 1, at most
 * RM_HOT_MAX_BLOCKS. */
uint32_t rm_hotset_depth(uint32_t block_tokens);

/* Table slots for a sketch max_blocks deep: room for a few hot chains that
 * deep (four times the depth), at least 4,096. */
size_t rm_hotset_capacity(uint32_t max_blocks);

/* capacity: table slots (power of two is used). Returns 0 or -EINVAL. */
int rm_hotset_init(rm_hotset *h, uint32_t block_tokens, uint32_t max_blocks, double cold_share,
                   uint64_t half_life_ms, size_t capacity, uint64_t now_ms);
void rm_hotset_destroy(rm_hotset *h);

/* Counts one request of n tokens in namespace ns. */
void rm_hotset_add(rm_hotset *h, const char *ns, size_t ns_len, const uint32_t *tokens, size_t n,
                   uint64_t now_ms);

/* Copies up to cap entries whose share >= min_share into out, with count,
 * lead_count, other and *total normalised to "requests in the recent
 * window" (decayed as of now_ms). Branch points first -- entries at least
 * RM_HOT_BRANCH_SHARE of whose requests went on other than through the
 * leader, the only ones a router can find hot -- then the rest; within
 * each, most shared first, deepest first among equal counts. So when cap
 * truncates, what goes is the inside of long unbranched chains (a deep
 * shared prompt is one chain of hundreds of blocks, and its end is what
 * matters), then the rarest. Returns the count. */
#define RM_HOT_BRANCH_SHARE 0.05
size_t rm_hotset_top(const rm_hotset *h, double min_share, uint64_t now_ms, rm_hot_entry *out,
                     size_t cap, double *total);

#endif
