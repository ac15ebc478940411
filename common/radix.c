#include "radix.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "radix_internal.h"
#include "util.h"

/* ---- child table ------------------------------------------------------ */

uint64_t rm_radix_child_hash(const rm_radix *t, const rm_radix_node *parent,
                             const uint32_t *first_page)
{
    return rm_hash_u32s(first_page, t->page_tokens, rm_mix64((uint64_t)(uintptr_t)parent));
}

static size_t key_len_tokens(const rm_radix *t, const rm_radix_node *n)
{
    return (size_t)n->npages * t->page_tokens;
}

static rm_radix_node *child_find(const rm_radix *t, const rm_radix_node *parent,
                                 const uint32_t *first_page)
{
    uint64_t h = rm_radix_child_hash(t, parent, first_page);
    size_t pt_bytes = (size_t)t->page_tokens * sizeof(uint32_t);
    for (size_t i = h & t->slot_mask;; i = (i + 1) & t->slot_mask) {
        const rm_radix_slot *s = &t->slots[i];
        if (!s->node)
            return NULL;
        if (s->hash == h && s->node->parent == parent &&
            memcmp(s->node->key, first_page, pt_bytes) == 0)
            return s->node;
    }
}

static void slots_put(rm_radix_slot *slots, size_t mask, uint64_t h, rm_radix_node *node)
{
    size_t i = h & mask;
    while (slots[i].node)
        i = (i + 1) & mask;
    slots[i].hash = h;
    slots[i].node = node;
}

static void child_add(rm_radix *t, rm_radix_node *child)
{
    if ((t->slot_used + 1) * 4 > (t->slot_mask + 1) * 3) {
        size_t ncap = (t->slot_mask + 1) * 2;
        rm_radix_slot *ns = rm_xcalloc(ncap, sizeof *ns);
        for (size_t i = 0; i <= t->slot_mask; i++)
            if (t->slots[i].node)
                slots_put(ns, ncap - 1, t->slots[i].hash, t->slots[i].node);
        free(t->slots);
        t->slots = ns;
        t->slot_mask = ncap - 1;
    }
    child->hash = rm_radix_child_hash(t, child->parent, child->key);
    slots_put(t->slots, t->slot_mask, child->hash, child);
    t->slot_used++;
}

/* Removes child's entry (found via the hash saved by child_add).
 * Backward-shift deletion keeps probe chains intact without tombstones. */
static void child_del(rm_radix *t, rm_radix_node *child)
{
    size_t i = child->hash & t->slot_mask;
    while (t->slots[i].node != child) {
        if (!t->slots[i].node)
            abort(); /* the table lost a child: a bug, never bad input */
        i = (i + 1) & t->slot_mask;
    }
    size_t j = i;
    for (;;) {
        j = (j + 1) & t->slot_mask;
        if (!t->slots[j].node)
            break;
        size_t home = t->slots[j].hash & t->slot_mask;
        /* Move j back into the hole at i unless its home lies in (i, j]. */
        int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i].node = NULL;
    t->slots[i].hash = 0;
    t->slot_used--;
}

/* ---- eviction policies ------------------------------------------------ */

const char *rm_evict_policy_name(rm_evict_policy p)
{
    static const char *const names[RM_EVICT_NPOLICIES] = {"lru", "lfu", "lfu-da", "gdsf"};
    return (unsigned)p < RM_EVICT_NPOLICIES ? names[p] : NULL;
}

int rm_evict_policy_parse(const char *name, rm_evict_policy *out)
{
    for (int p = 0; p < RM_EVICT_NPOLICIES; p++) {
        if (!strcmp(name, rm_evict_policy_name((rm_evict_policy)p))) {
            *out = (rm_evict_policy)p;
            return 0;
        }
    }
    return -EINVAL;
}

_Static_assert(RM_PRIO_ONE % (2 * RM_GDSF_ATTN_TOKENS) == 0, "GDSF weight must be exact");

uint64_t rm_evict_weight(rm_evict_policy p, uint64_t d0_tokens, uint64_t s_tokens)
{
    if (p != RM_EVICT_GDSF)
        return RM_PRIO_ONE;
    /* ONE * (1 + (d0 + s/2) / D) = ONE + (2 d0 + s) * ONE / 2D */
    const uint64_t per = RM_PRIO_ONE / (2 * RM_GDSF_ATTN_TOKENS);
    if (d0_tokens > UINT64_MAX / 8 || s_tokens > UINT64_MAX / 8)
        return UINT64_MAX;
    uint64_t mean2 = 2 * d0_tokens + s_tokens;
    return mean2 > (UINT64_MAX - RM_PRIO_ONE) / per ? UINT64_MAX : RM_PRIO_ONE + mean2 * per;
}

/* K = L + f * weight, f = 1 + hits, saturating. */
static uint64_t priority(const rm_radix *t, const rm_radix_node *n, uint64_t d0_tokens)
{
    uint64_t w = rm_evict_weight(t->policy, d0_tokens, (uint64_t)n->npages * t->page_tokens);
    uint64_t f = (uint64_t)n->hits + 1;
    uint64_t fw = w > UINT64_MAX / f ? UINT64_MAX : f * w;
    return fw > UINT64_MAX - t->age ? UINT64_MAX : t->age + fw;
}

static int aging(const rm_radix *t)
{
    return t->policy == RM_EVICT_LFU_DA || t->policy == RM_EVICT_GDSF;
}

/* ---- eviction heap ---------------------------------------------------- */

int rm_radix_heap_less(const rm_radix *t, const rm_radix_node *a, const rm_radix_node *b)
{
    if (t->policy == RM_EVICT_LFU && a->hits != b->hits)
        return a->hits < b->hits;
    if (aging(t) && a->prio != b->prio)
        return a->prio < b->prio;
    return a->last_tick < b->last_tick;
}

static void heap_set(rm_radix *t, uint32_t i, rm_radix_node *n)
{
    t->heap[i] = n;
    n->heap_idx = i;
}

static void heap_up(rm_radix *t, uint32_t i)
{
    rm_radix_node *n = t->heap[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!rm_radix_heap_less(t, n, t->heap[p]))
            break;
        heap_set(t, i, t->heap[p]);
        i = p;
    }
    heap_set(t, i, n);
}

static void heap_down(rm_radix *t, uint32_t i)
{
    rm_radix_node *n = t->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= t->heap_len)
            break;
        if (c + 1 < t->heap_len && rm_radix_heap_less(t, t->heap[c + 1], t->heap[c]))
            c++;
        if (!rm_radix_heap_less(t, t->heap[c], n))
            break;
        heap_set(t, i, t->heap[c]);
        i = c;
    }
    heap_set(t, i, n);
}

static void heap_push(rm_radix *t, rm_radix_node *n)
{
    if (t->heap_len == t->heap_cap) {
        t->heap_cap = t->heap_cap ? t->heap_cap * 2 : 64;
        t->heap = rm_xrealloc(t->heap, sizeof *t->heap * t->heap_cap);
    }
    heap_set(t, t->heap_len++, n);
    heap_up(t, t->heap_len - 1);
}

static void heap_remove(rm_radix *t, rm_radix_node *n)
{
    uint32_t i = n->heap_idx;
    n->heap_idx = RM_RADIX_NOT_IN_HEAP;
    if (--t->heap_len == i)
        return;
    heap_set(t, i, t->heap[t->heap_len]);
    heap_up(t, i);
    heap_down(t, t->heap[i]->heap_idx);
}

/* A node belongs in the heap iff it is an unreferenced non-root leaf. */
static void heap_sync(rm_radix *t, rm_radix_node *n)
{
    int want = n->parent && n->nchildren == 0 && n->lock_ref == 0;
    int in = n->heap_idx != RM_RADIX_NOT_IN_HEAP;
    if (want && !in)
        heap_push(t, n);
    else if (!want && in)
        heap_remove(t, n);
}

/* ---- nodes ------------------------------------------------------------ */

static size_t key_alloc_bytes(const rm_radix *t, uint32_t npages)
{
    return (size_t)npages * (t->page_tokens + 1) * sizeof(uint32_t);
}

static rm_radix_node *node_new(rm_radix *t, rm_radix_node *parent, uint32_t npages)
{
    rm_radix_node *n = rm_xcalloc(1, sizeof *n);
    n->parent = parent;
    n->npages = npages;
    n->heap_idx = RM_RADIX_NOT_IN_HEAP;
    n->ns = parent ? parent->ns : 0;
    n->key = npages ? rm_xmalloc(key_alloc_bytes(t, npages)) : NULL;
    t->key_bytes += key_alloc_bytes(t, npages);
    t->nodes++;
    return n;
}

static void node_free(rm_radix *t, rm_radix_node *n)
{
    t->key_bytes -= key_alloc_bytes(t, n->npages);
    t->nodes--;
    free(n->key);
    free(n);
}

/* Records an access to n, whose edge starts d0_tokens deep. */
static void touch(rm_radix *t, rm_radix_node *n, int flags, uint64_t now_ms, size_t d0_tokens)
{
    if (!(flags & (RM_MATCH_TOUCH | RM_MATCH_HIT)))
        return;
    if (flags & RM_MATCH_TOUCH) {
        n->last_tick = t->tick;
        n->last_ms = now_ms;
    }
    if (flags & RM_MATCH_HIT) {
        if (n->hits != UINT32_MAX)
            n->hits++;
        if (aging(t))
            n->prio = priority(t, n, d0_tokens);
    }
    if (n->heap_idx != RM_RADIX_NOT_IN_HEAP) {
        /* A hit after a split may lower GDSF's K (the edge got shorter,
         * its weight smaller): sift both ways. */
        heap_up(t, n->heap_idx);
        heap_down(t, n->heap_idx);
    }
}

/* Splits n after its first k pages (0 < k < npages):
 *
 *   parent -- n[k0..kN]      =>      parent -- m[k0..k-1] -- n[k..kN]
 *
 * m inherits n's references and access data, so locks held through n still
 * cover m and the accounting does not move. Returns m. */
static rm_radix_node *split(rm_radix *t, rm_radix_node *n, uint32_t k)
{
    uint32_t pt = t->page_tokens;
    uint32_t rest = n->npages - k;
    rm_radix_node *m = node_new(t, n->parent, k);
    memcpy(m->key, n->key, (size_t)k * pt * sizeof(uint32_t));
    memcpy(m->key + (size_t)k * pt, rm_radix_node_pages(t, n), k * sizeof(uint32_t));
    m->lock_ref = n->lock_ref;
    m->hits = n->hits;
    m->prio = n->prio;
    m->last_tick = n->last_tick;
    m->last_ms = n->last_ms;
    m->nchildren = 1;

    child_del(t, n);
    /* Shift n's suffix tokens, then its suffix page ids, to the front. */
    const uint32_t *old_pages = rm_radix_node_pages(t, n);
    memmove(n->key, n->key + (size_t)k * pt, (size_t)rest * pt * sizeof(uint32_t));
    memmove(n->key + (size_t)rest * pt, old_pages + k, rest * sizeof(uint32_t));
    t->key_bytes -= key_alloc_bytes(t, n->npages);
    n->npages = rest;
    n->key = rm_xrealloc(n->key, key_alloc_bytes(t, rest));
    t->key_bytes += key_alloc_bytes(t, rest);
    n->parent = m;
    child_add(t, m);
    child_add(t, n);
    return m;
}

/* ---- public API ------------------------------------------------------- */

int rm_radix_init(rm_radix *t, uint32_t page_tokens, rm_evict_policy policy,
                  uint32_t max_namespaces)
{
    memset(t, 0, sizeof *t);
    if (page_tokens == 0 || max_namespaces == 0 || (unsigned)policy >= RM_EVICT_NPOLICIES)
        return -EINVAL;
    t->page_tokens = page_tokens;
    t->policy = policy;
    t->max_ns = max_namespaces;
    t->slot_mask = 63;
    t->slots = rm_xcalloc(t->slot_mask + 1, sizeof *t->slots);
    return 0;
}

void rm_radix_destroy(rm_radix *t)
{
    for (size_t i = 0; t->slots && i <= t->slot_mask; i++)
        if (t->slots[i].node)
            node_free(t, t->slots[i].node);
    for (uint32_t i = 0; i < t->ns_len; i++) {
        if (t->ns[i].root)
            node_free(t, t->ns[i].root);
        free(t->ns[i].name);
    }
    free(t->ns);
    free(t->slots);
    free(t->heap);
    memset(t, 0, sizeof *t);
}

int rm_radix_root(rm_radix *t, const char *name, size_t len, int create, rm_radix_node **root)
{
    /* Namespaces are few (models x adapters x salts); a linear scan over a
     * short array beats a hash table here and keeps memory flat. */
    uint32_t hole = UINT32_MAX;
    for (uint32_t i = 0; i < t->ns_len; i++) {
        if (!t->ns[i].root) {
            hole = hole == UINT32_MAX ? i : hole;
            continue;
        }
        if (t->ns[i].len == len && memcmp(t->ns[i].name, name, len) == 0) {
            *root = t->ns[i].root;
            return 0;
        }
    }
    if (!create)
        return -ENOENT;
    if (t->nns >= t->max_ns)
        return -ENOSPC;
    if (hole == UINT32_MAX) {
        if (t->ns_len == t->ns_cap) {
            t->ns_cap = t->ns_cap ? t->ns_cap * 2 : 4;
            t->ns = rm_xrealloc(t->ns, sizeof *t->ns * t->ns_cap);
        }
        hole = t->ns_len++;
    }
    rm_radix_ns *ns = &t->ns[hole];
    ns->name = rm_xstrndup(name, len);
    ns->len = len;
    ns->root = node_new(t, NULL, 0);
    ns->root->ns = hole;
    t->nns++;
    *root = ns->root;
    return 0;
}

uint32_t rm_radix_reclaim(rm_radix *t)
{
    uint32_t freed = 0;
    for (uint32_t i = 0; i < t->ns_len; i++) {
        rm_radix_ns *ns = &t->ns[i];
        if (!ns->root || ns->root->nchildren || ns->root->lock_ref)
            continue;
        node_free(t, ns->root);
        free(ns->name);
        memset(ns, 0, sizeof *ns);
        t->nns--;
        freed++;
    }
    /* Trailing free slots go, so lookups scan only up to the last live one. */
    while (t->ns_len > 0 && !t->ns[t->ns_len - 1].root)
        t->ns_len--;
    return freed;
}

size_t rm_radix_match(rm_radix *t, rm_radix_node *root, const uint32_t *tokens, size_t n, int flags,
                      uint64_t now_ms, rm_radix_node **last)
{
    uint32_t pt = t->page_tokens;
    size_t pos = 0;
    rm_radix_node *node = root;
    t->tick++;
    touch(t, root, flags & ~RM_MATCH_HIT, now_ms, 0);
    while (n - pos >= pt) {
        rm_radix_node *child = child_find(t, node, tokens + pos);
        if (!child)
            break;
        /* The first page matched via the table. One memcmp over the rest of
         * the edge is far cheaper than one per page; only on a mismatch do
         * we look for the page where the query diverges. */
        size_t avail_pages = (n - pos) / pt;
        uint32_t k = child->npages < avail_pages ? child->npages : (uint32_t)avail_pages;
        if (k > 1 && memcmp(child->key + pt, tokens + pos + pt,
                            (size_t)(k - 1) * pt * sizeof(uint32_t)) != 0) {
            uint32_t limit = k;
            k = 1;
            while (k < limit && memcmp(child->key + (size_t)k * pt, tokens + pos + (size_t)k * pt,
                                       pt * sizeof(uint32_t)) == 0)
                k++;
        }
        if (k < child->npages) {
            touch(t, child, flags, now_ms, pos);
            pos += (size_t)k * pt;
            int diverged = k < avail_pages;
            if ((flags & RM_MATCH_SPLIT) || ((flags & RM_MATCH_SPLIT_DIVERGE) && diverged))
                node = split(t, child, k);
            break;
        }
        touch(t, child, flags, now_ms, pos);
        node = child;
        pos += key_len_tokens(t, child);
    }
    *last = node;
    return pos;
}

rm_radix_node *rm_radix_attach(rm_radix *t, rm_radix_node *parent, const uint32_t *tokens,
                               const uint32_t *pages, uint32_t npages, uint64_t now_ms)
{
    if (npages == 0 || child_find(t, parent, tokens)) {
        errno = npages == 0 ? EINVAL : EEXIST;
        return NULL;
    }
    uint32_t pt = t->page_tokens;
    rm_radix_node *n = node_new(t, parent, npages);
    memcpy(n->key, tokens, (size_t)npages * pt * sizeof(uint32_t));
    memcpy(n->key + (size_t)npages * pt, pages, npages * sizeof(uint32_t));
    n->last_tick = ++t->tick;
    n->last_ms = now_ms;
    /* Only GDSF weighs by depth: spare the others the walk up. */
    if (aging(t))
        n->prio = priority(t, n, t->policy == RM_EVICT_GDSF ? rm_radix_depth_tokens(t, parent) : 0);
    child_add(t, n);
    parent->nchildren++;
    heap_sync(t, parent);
    t->evictable_pages += npages;
    heap_sync(t, n);
    return n;
}

void rm_radix_lock(rm_radix *t, rm_radix_node *node)
{
    for (rm_radix_node *n = node; n; n = n->parent) {
        if (n->lock_ref++ == 0) {
            t->evictable_pages -= n->npages;
            t->protected_pages += n->npages;
            heap_sync(t, n);
        }
    }
}

void rm_radix_unlock(rm_radix *t, rm_radix_node *node)
{
    for (rm_radix_node *n = node; n; n = n->parent) {
        if (n->lock_ref == 0)
            abort(); /* unbalanced unlock: a bug in the caller */
        if (--n->lock_ref == 0) {
            t->protected_pages -= n->npages;
            t->evictable_pages += n->npages;
            heap_sync(t, n);
        }
    }
}

/* Removes an unreferenced leaf, handing its pages to free_fn. */
static uint32_t remove_leaf(rm_radix *t, rm_radix_node *n, rm_radix_free_fn free_fn, void *ctx)
{
    uint32_t np = n->npages;
    if (n->heap_idx != RM_RADIX_NOT_IN_HEAP)
        heap_remove(t, n);
    child_del(t, n);
    rm_radix_node *parent = n->parent;
    parent->nchildren--;
    t->evictable_pages -= np;
    free_fn(ctx, rm_radix_node_pages(t, n), np);
    node_free(t, n);
    heap_sync(t, parent);
    return np;
}

uint64_t rm_radix_evict(rm_radix *t, uint64_t want_pages, rm_radix_free_fn free_fn, void *ctx)
{
    uint64_t freed = 0;
    while (freed < want_pages && t->heap_len > 0) {
        rm_radix_node *victim = t->heap[0];
        if (aging(t) && victim->prio > t->age)
            t->age = victim->prio;
        freed += remove_leaf(t, victim, free_fn, ctx);
    }
    return freed;
}

uint64_t rm_radix_expire(rm_radix *t, uint64_t cutoff_ms, rm_radix_free_fn free_fn, void *ctx)
{
    /* Collect first: removing entries reshuffles the heap under us. */
    uint32_t nvict = 0;
    rm_radix_node **victims = rm_xmalloc(sizeof *victims * (t->heap_len + 1));
    for (uint32_t i = 0; i < t->heap_len; i++)
        if (t->heap[i]->last_ms < cutoff_ms)
            victims[nvict++] = t->heap[i];
    uint64_t freed = 0;
    for (uint32_t i = 0; i < nvict; i++) {
        rm_radix_node *n = victims[i];
        while (n) {
            rm_radix_node *parent = n->parent;
            freed += remove_leaf(t, n, free_fn, ctx);
            /* Climb while the parent is now itself an idle evictable leaf. */
            n = (parent->heap_idx != RM_RADIX_NOT_IN_HEAP && parent->last_ms < cutoff_ms) ? parent
                                                                                          : NULL;
        }
    }
    free(victims);
    return freed;
}

size_t rm_radix_depth_tokens(const rm_radix *t, const rm_radix_node *node)
{
    size_t d = 0;
    for (const rm_radix_node *n = node; n; n = n->parent)
        d += key_len_tokens(t, n);
    return d;
}

size_t rm_radix_path_pages(const rm_radix *t, const rm_radix_node *node, uint32_t *out, size_t cap)
{
    size_t total = 0;
    for (const rm_radix_node *n = node; n; n = n->parent)
        total += n->npages;
    size_t end = total;
    for (const rm_radix_node *n = node; n; n = n->parent) {
        const uint32_t *pg = rm_radix_node_pages(t, n);
        end -= n->npages;
        for (uint32_t i = 0; i < n->npages; i++)
            if (end + i < cap)
                out[end + i] = pg[i];
    }
    return total;
}

void rm_radix_foreach(const rm_radix *t, void (*fn)(void *ctx, const rm_radix_node *node),
                      void *ctx)
{
    for (size_t i = 0; i <= t->slot_mask; i++)
        if (t->slots[i].node)
            fn(ctx, t->slots[i].node);
}

size_t rm_radix_metadata_bytes(const rm_radix *t)
{
    size_t names = 0;
    for (uint32_t i = 0; i < t->ns_len; i++)
        names += t->ns[i].root ? t->ns[i].len + 1 : 0;
    return t->nodes * sizeof(rm_radix_node) + t->key_bytes +
           (t->slot_mask + 1) * sizeof(rm_radix_slot) + t->heap_cap * sizeof(rm_radix_node *) +
           t->ns_cap * sizeof(rm_radix_ns) + names;
}

/* ---- removing subtrees ------------------------------------------------- */

rm_radix_node *rm_radix_child(const rm_radix *t, const rm_radix_node *parent,
                              const uint32_t *first_page)
{
    return child_find(t, parent, first_page);
}

typedef struct subtree_victim {
    rm_radix_node *node;
    size_t depth; /* nodes below the subtree's top */
} subtree_victim;

static int deeper_first(const void *a, const void *b)
{
    size_t x = ((const subtree_victim *)a)->depth, y = ((const subtree_victim *)b)->depth;
    return x < y ? 1 : x > y ? -1 : 0;
}

uint64_t rm_radix_remove_subtree(rm_radix *t, rm_radix_node *node, rm_radix_free_fn free_fn,
                                 void *ctx)
{
    if (node->parent && node->nchildren == 0)
        return node->lock_ref ? 0 : remove_leaf(t, node, free_fn, ctx);
    /* Unreferenced nodes under node: once everything deeper is gone, each
     * is a leaf (a referenced child would make its parent referenced). */
    subtree_victim *v = rm_xmalloc(sizeof *v * (t->slot_used + 1));
    size_t k = 0;
    for (size_t i = 0; i <= t->slot_mask; i++) {
        rm_radix_node *n = t->slots[i].node;
        if (!n || n->lock_ref)
            continue;
        size_t d = 0;
        const rm_radix_node *p = n;
        while (p && p != node) {
            p = p->parent;
            d++;
        }
        if (p)
            v[k++] = (subtree_victim){n, d};
    }
    qsort(v, k, sizeof *v, deeper_first);
    uint64_t freed = 0;
    for (size_t i = 0; i < k; i++) {
        if (v[i].node->nchildren)
            abort(); /* a referenced child under an unreferenced node: a bug */
        freed += remove_leaf(t, v[i].node, free_fn, ctx);
    }
    free(v);
    return freed;
}
