/* radix.h -- page-aligned radix tree over token ids (RadixAttention style).
 *
 * Every namespace has its own root; namespaces never share nodes. An edge
 * holds a whole number of pages: `npages * page_tokens` token ids plus the
 * pool page id that stores each page's KV. Keys are compared page by page,
 * so a match is always a multiple of page_tokens.
 *
 *   root("llama-3-8b")
 *     |
 *     +-- [sys prompt: 32 pages] --+-- [chat A: 3 pages]      <- leaf
 *     |                            +-- [chat B: 5 pages]      <- leaf
 *     +-- [few-shot: 8 pages]                                 <- leaf
 *
 * Inserting "sys prompt + chat C" walks the shared edge and attaches a new
 * leaf; inserting something that diverges in page 10 of "sys prompt" first
 * splits that edge into [10 pages] -> [22 pages].
 *
 * Children are not stored in per-node lists: a single open-addressing table
 * maps (parent, first page of the child's edge) to the child. Lookups cost
 * one hash of page_tokens ids, and a node with 100k children costs no more
 * than one with two.
 *
 * Reference counting: lock_ref counts holders (leases, in-flight inserts,
 * KV streams) of a node *and all its ancestors*. Pages of nodes with
 * lock_ref == 0 are evictable, the others protected. Only leaves with
 * lock_ref == 0 can be evicted; they live in a binary heap ordered by the
 * eviction policy (below), so every access, lock and eviction costs
 * O(log leaves).
 *
 * Eviction policies. A node's frequency f is 1 + its hits: the request
 * that computed it, then every Match that reached it (RM_MATCH_HIT on the
 * path, a partly matched edge included: the edge is the unit). Inserts
 * and writes do not count: in the protocol each request's Insert follows
 * its own Match, which counted it already, so an Insert that only
 * re-inserts cached pages is an access for LRU's clock but not a hit.
 *
 *   LRU     last access (the tick of the last match or attach reaching it)
 *   LFU     hits, then last access. No aging: old popularity never fades.
 *   LFU-DA  LFU with dynamic aging (Arlitt et al. 2000): priority
 *           K = L + f, set when a node is attached or hit, where L, the
 *           tree's age, is the largest K evicted so far. A leaf hit long
 *           ago carries an old, low L and goes before one hit recently, so
 *           popularity fades as the cache turns over, without a timer.
 *   GDSF    Greedy-Dual-Size-Frequency: K = L + f * cost / size, cost being
 *           what recomputing the leaf would take and size its pages. A
 *           leaf is only evicted once its parent is cached, so recomputing
 *           it is prefilling its s tokens on top of a cached prefix of d0:
 *           token i costs its weights' FLOPs plus attention over the d0 + i
 *           tokens before it, cost = s * (1 + (d0 + s/2) / D), where D is
 *           the depth at which attention costs as much as the weights
 *           (2 * params / (4 * layers * hidden): 30.5k tokens for an
 *           8B Llama, 53k for a 70B; RM_GDSF_ATTN_TOKENS). Per page,
 *           cost/size = 1 + mean depth / D: a deep page of a long session
 *           is worth up to (1 + depth/D) shallow ones. With cost/size
 *           constant GDSF would be LFU-DA; by depth it is not.
 *
 * In each, ties go to the least recently used. K is fixed-point
 * (RM_PRIO_ONE = frequency 1 at depth 0). A leaf that was internal when it
 * was last hit may carry a K below L; L never decreases.
 *
 * The tree does not own the pool: pages come in via rm_radix_attach and go
 * out through the free callback of rm_radix_evict / rm_radix_expire.
 * Not thread-safe: one owner thread (see node/README.md). */
#ifndef RM_RADIX_H
#define RM_RADIX_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    RM_EVICT_LRU = 0,
    RM_EVICT_LFU = 1,
    RM_EVICT_LFU_DA = 2,
    RM_EVICT_GDSF = 3,
    RM_EVICT_NPOLICIES
} rm_evict_policy;

/* Fixed-point unit of priorities: frequency 1 of a page at depth 0. */
#define RM_PRIO_ONE 65536u
/* GDSF's D: the prompt depth, in tokens, at which a token's attention costs
 * as much as its weights (see above). A power of two: RM_PRIO_ONE / (2D)
 * is then 1 and the weight is exact in integers. */
#define RM_GDSF_ATTN_TOKENS 32768u

/* The policy's name as --eviction spells it ("lru", "lfu", "lfu-da",
 * "gdsf"), or NULL when p is out of range. */
const char *rm_evict_policy_name(rm_evict_policy p);

/* Parses a policy name. Returns 0, or -EINVAL (out untouched). */
int rm_evict_policy_parse(const char *name, rm_evict_policy *out);

/* GDSF's cost/size of an edge of s tokens starting d0 tokens deep, in
 * RM_PRIO_ONE units: RM_PRIO_ONE * (1 + (d0 + s/2) / D). LFU-DA's is
 * RM_PRIO_ONE at any depth. Saturates instead of wrapping. */
uint64_t rm_evict_weight(rm_evict_policy p, uint64_t d0_tokens, uint64_t s_tokens);

#define RM_RADIX_NOT_IN_HEAP UINT32_MAX

typedef struct rm_radix_node rm_radix_node;
struct rm_radix_node {
    rm_radix_node *parent; /* NULL for a namespace root */
    uint32_t *key;         /* npages*page_tokens tokens, then npages page ids */
    uint32_t npages;
    uint32_t nchildren;
    uint32_t lock_ref;
    uint32_t heap_idx; /* slot in the evictable-leaf heap or RM_RADIX_NOT_IN_HEAP */
    uint32_t hits;     /* Matches that reached it (saturating) */
    uint32_t ns;       /* namespace index */
    uint64_t last_tick;
    uint64_t last_ms;
    uint64_t hash; /* child-table hash of (parent, first page) */
    uint64_t prio; /* LFU-DA and GDSF: K, set at attach and at each hit */
};

typedef struct rm_radix_slot {
    uint64_t hash;
    rm_radix_node *node; /* NULL: empty slot */
} rm_radix_slot;

typedef struct rm_radix_ns {
    char *name;
    size_t len;
    rm_radix_node *root; /* NULL: a free slot (its namespace was reclaimed) */
} rm_radix_ns;

typedef struct rm_radix {
    uint32_t page_tokens;
    rm_evict_policy policy;
    uint64_t tick;

    rm_radix_ns *ns; /* ns[0..ns_len): live namespaces and free slots */
    uint32_t nns;    /* live namespaces */
    uint32_t ns_len, ns_cap, max_ns;

    rm_radix_slot *slots; /* child table, power-of-two size */
    size_t slot_mask, slot_used;

    rm_radix_node **heap; /* evictable leaves */
    uint32_t heap_len, heap_cap;
    uint64_t age; /* LFU-DA and GDSF: L, the largest K rm_radix_evict took */

    uint64_t evictable_pages, protected_pages, nodes, key_bytes;
} rm_radix;

/* Callback receiving pages that left the tree; they belong to the callee. */
typedef void (*rm_radix_free_fn)(void *ctx, const uint32_t *pages, uint32_t n);

/* Returns 0 or -EINVAL (page_tokens == 0, max_namespaces == 0, policy out
 * of range). */
int rm_radix_init(rm_radix *t, uint32_t page_tokens, rm_evict_policy policy,
                  uint32_t max_namespaces);

/* Frees every node. Pages still in the tree are not reported anywhere: call
 * it together with rm_pool_destroy. */
void rm_radix_destroy(rm_radix *t);

/* Root of namespace `name` (len bytes, any bytes allowed). With create, makes
 * it if missing. Returns 0, -ENOENT (absent, !create) or -ENOSPC (namespace
 * limit reached: rm_radix_reclaim may free a slot). The root belongs to the
 * tree; its ns index is the namespace's slot, reused only after a reclaim. */
int rm_radix_root(rm_radix *t, const char *name, size_t len, int create, rm_radix_node **root);

/* Frees every namespace whose root has no children and no references (no
 * cached pages, nothing locked under it), so that its slot counts against
 * max_namespaces no more. Their root pointers become invalid: call it only
 * where no unlocked, childless root is held. Returns how many were freed. */
uint32_t rm_radix_reclaim(rm_radix *t);

enum {
    RM_MATCH_SPLIT = 1, /* split a partly matched edge so *last ends at the match */
    RM_MATCH_TOUCH = 2, /* record an access (LRU clock, TTL time) on the path */
    RM_MATCH_HIT = 4,   /* count a hit on the path (LFU, LFU-DA, GDSF) */
    /* split a partly matched edge only where the query goes on with a
     * different page (an insert must attach there); a query that merely
     * ends inside an edge leaves it whole */
    RM_MATCH_SPLIT_DIVERGE = 8,
};

/* Longest cached prefix of tokens[0..n) under root, in whole pages. Sets
 * *last to the deepest node that lies entirely inside the match (root when
 * nothing matched); with RM_MATCH_SPLIT that node ends exactly at the match.
 * Returns the matched token count. */
size_t rm_radix_match(rm_radix *t, rm_radix_node *root, const uint32_t *tokens, size_t n, int flags,
                      uint64_t now_ms, rm_radix_node **last);

/* Adds a leaf under parent holding npages pages: tokens[0..npages*page_tokens)
 * and pages[0..npages) (page ids now owned by the tree). The parent must have
 * no child starting with the same page, which holds after a RM_MATCH_SPLIT
 * match that stopped at parent. Returns the leaf, or NULL (errno EEXIST) when
 * that precondition is broken. Aborts on out-of-memory. */
rm_radix_node *rm_radix_attach(rm_radix *t, rm_radix_node *parent, const uint32_t *tokens,
                               const uint32_t *pages, uint32_t npages, uint64_t now_ms);

/* Adds / drops one reference on node and each ancestor, moving pages between
 * evictable and protected as counts cross zero. */
void rm_radix_lock(rm_radix *t, rm_radix_node *node);
void rm_radix_unlock(rm_radix *t, rm_radix_node *node);

/* Evicts unreferenced leaves in policy order until at least want_pages pages
 * were freed or nothing is evictable. Parents that become unreferenced leaves
 * join the candidates. Raises the age L to each victim's K (LFU-DA, GDSF).
 * Returns the pages freed (handed to free_fn). */
uint64_t rm_radix_evict(rm_radix *t, uint64_t want_pages, rm_radix_free_fn free_fn, void *ctx);

/* The leaf rm_radix_evict would take first, or NULL when nothing is
 * evictable. Its last_ms is the cache's LRU tail: how long an idle entry
 * currently survives (placement studies compare it across caches). */
static inline const rm_radix_node *rm_radix_next_victim(const rm_radix *t)
{
    return t->heap_len ? t->heap[0] : NULL;
}

/* Evicts every unreferenced leaf last accessed before cutoff_ms, repeatedly
 * (a parent that becomes such a leaf goes too). Leaves the age L alone:
 * expiry is not replacement. Returns pages freed. */
uint64_t rm_radix_expire(rm_radix *t, uint64_t cutoff_ms, rm_radix_free_fn free_fn, void *ctx);

/* Tokens from the namespace root to the end of node (0 for a root). */
size_t rm_radix_depth_tokens(const rm_radix *t, const rm_radix_node *node);

/* Copies the page ids from the root down to node into out (capacity cap
 * pages). Returns the number of pages on the path (even if > cap). */
size_t rm_radix_path_pages(const rm_radix *t, const rm_radix_node *node, uint32_t *out, size_t cap);

/* Checks every structural and accounting invariant: child table <-> parent
 * links and counts, heap order and membership (exactly the unreferenced
 * leaves), evictable/protected sums, and lock_ref of each node: equal to the
 * sum over its children plus its direct holders when held[] lists one entry
 * per reference taken with rm_radix_lock (pass held != NULL, even with
 * nheld == 0), else merely >= the children's sum. If pages_seen (one byte per
 * pool page, zeroed by the caller) is given, each tree page is counted there
 * so the caller can cross-check the pool. Returns 0 or -EINVAL with a reason
 * in err. */
int rm_radix_check(const rm_radix *t, const rm_radix_node *const *held, size_t nheld,
                   uint8_t *pages_seen, size_t npool_pages, char *err, size_t errlen);

/* Calls fn for every non-root node (order unspecified). fn must not modify
 * the tree. */
void rm_radix_foreach(const rm_radix *t, void (*fn)(void *ctx, const rm_radix_node *node),
                      void *ctx);

/* Bytes of heap memory the tree uses for its metadata (nodes, keys, tables). */
size_t rm_radix_metadata_bytes(const rm_radix *t);

/* Tokens of node's own edge (npages * page_tokens of them). */
static inline const uint32_t *rm_radix_node_tokens(const rm_radix_node *node)
{
    return node->key;
}

/* Page ids of node's own edge. */
static inline const uint32_t *rm_radix_node_pages(const rm_radix *t, const rm_radix_node *node)
{
    /* The root has no key (NULL): offsetting NULL, even by 0, is UB. */
    return node->key ? node->key + (size_t)node->npages * t->page_tokens : NULL;
}

#endif
