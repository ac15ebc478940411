#include "shadow.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nh.h"
#include "prefix_key.h"
#include "shadow_internal.h"
#include "util.h"

#define NIL UINT32_MAX
/* Mixed into the per-page key hash so it differs from the chain step. */
#define PAGE_SALT  0x9e3779b97f4a7c15ULL
#define CHAIN_SALT 0x5851f42d4c957f2dULL
#define DECIDE_MUL 0x2545f4914f6cdd1dULL
#define NH_SEED    0x7368616430773130ULL

static const double node_factors[] = {0.25, 0.5, 1, 2, 4};

/* The bounds shadow.h states: the entry, then up to 4 table slots of 4 B. */
_Static_assert(sizeof(rm_shadow_lnode) + 16 == RM_SHADOW_LRU_ENTRY_BYTES, "LRU entry bytes");
_Static_assert(sizeof(rm_shadow_entry) + sizeof(rm_shadow_slot) + 16 == RM_SHADOW_ENTRY_BYTES,
               "priority entry bytes");

const char *rm_shadow_strerror(rm_shadow_result r)
{
    switch (r) {
    case RM_SHADOW_OK: return "ok";
    case RM_SHADOW_BAD_CONFIG:
        return "bad shadow configuration (page size 0, a factor not positive, too many factors)";
    case RM_SHADOW_NO_POOL: return "shadow caches need a pool size (pages > 0)";
    case RM_SHADOW_BUDGET_SMALL: return "shadow memory budget too small for one entry per cache";
    }
    return "unknown shadow result";
}

/* ---- policies ---------------------------------------------------------- */

static double prio_lfu(const rm_shadow_touch *t, const void *arg)
{
    (void)arg;
    return t->hits;
}

rm_shadow_policy rm_shadow_policy_of(rm_evict_policy p)
{
    rm_shadow_policy out = {p == RM_EVICT_LFU ? prio_lfu : NULL, NULL};
    return out;
}

int rm_shadow_models(rm_evict_policy p)
{
    switch (p) {
    case RM_EVICT_LRU:
    case RM_EVICT_LFU: return 1;
    default: return 0;
    }
}

void rm_shadow_config_node(rm_shadow_config *c, uint32_t page_tokens, uint64_t pool_pages,
                           rm_evict_policy policy)
{
    memset(c, 0, sizeof *c);
    c->page_tokens = page_tokens;
    c->pool_pages = pool_pages;
    c->nfactors = RM_ARRAY_LEN(node_factors);
    memcpy(c->factors, node_factors, sizeof node_factors);
    c->policy = rm_shadow_policy_of(policy);
    c->budget_bytes = RM_SHADOW_DEFAULT_BUDGET;
}

void rm_shadow_config_router(rm_shadow_config *c, uint32_t page_tokens, uint64_t total_pool_pages,
                             rm_evict_policy policy)
{
    memset(c, 0, sizeof *c);
    c->page_tokens = page_tokens;
    c->pool_pages = total_pool_pages;
    c->nfactors = 1;
    c->factors[0] = 1;
    c->infinite = 1;
    c->policy = rm_shadow_policy_of(policy);
    c->budget_bytes = RM_SHADOW_DEFAULT_BUDGET / 2;
    c->infinite_budget_bytes = RM_SHADOW_DEFAULT_BUDGET / 2;
}

/* ---- one bounded cache: table ------------------------------------------ */

static inline uint64_t key_of(const rm_shadow_cache *c, uint32_t e)
{
    return c->nodes ? c->nodes[e].key : c->entries[e].key;
}

static uint32_t table_find(const rm_shadow_cache *c, uint64_t key)
{
    for (size_t i = key & c->mask;; i = (i + 1) & c->mask) {
        uint32_t v = c->table[i];
        if (!v)
            return NIL;
        if (key_of(c, v - 1) == key)
            return v - 1;
    }
}

static void table_put(rm_shadow_cache *c, uint64_t key, uint32_t entry)
{
    size_t i = key & c->mask;
    while (c->table[i])
        i = (i + 1) & c->mask;
    c->table[i] = entry + 1;
}

static void table_del(rm_shadow_cache *c, uint64_t key)
{
    size_t i = key & c->mask;
    while (key_of(c, c->table[i] - 1) != key)
        i = (i + 1) & c->mask;
    /* Backward-shift deletion: pull later members of the cluster into the
     * hole when their home slot does not lie cyclically in (hole, them]. */
    for (size_t j = i;;) {
        c->table[i] = 0;
        for (;;) {
            j = (j + 1) & c->mask;
            if (!c->table[j])
                return;
            size_t home = key_of(c, c->table[j] - 1) & c->mask;
            if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                break;
        }
        c->table[i] = c->table[j];
        i = j;
    }
}

/* ---- one bounded cache: 4-ary heap of eviction order -------------------- */

static int slot_less(const rm_shadow_slot *a, const rm_shadow_slot *b)
{
    if (a->pri != b->pri)
        return a->pri < b->pri;
    if (a->seq != b->seq)
        return a->seq < b->seq;
    return a->rank < b->rank;
}

static void slot_set(rm_shadow_cache *c, uint32_t i, const rm_shadow_slot *s)
{
    c->heap[i] = *s;
    c->entries[s->entry].pos = i;
}

static void sift_up(rm_shadow_cache *c, uint32_t i)
{
    rm_shadow_slot s = c->heap[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 4;
        if (!slot_less(&s, &c->heap[p]))
            break;
        slot_set(c, i, &c->heap[p]);
        i = p;
    }
    slot_set(c, i, &s);
}

static void sift_down(rm_shadow_cache *c, uint32_t i)
{
    rm_shadow_slot s = c->heap[i];
    for (;;) {
        uint32_t first = 4 * i + 1;
        if (first >= c->hlen)
            break;
        uint32_t best = first, end = first + 4 < c->hlen ? first + 4 : c->hlen;
        for (uint32_t k = first + 1; k < end; k++)
            if (slot_less(&c->heap[k], &c->heap[best]))
                best = k;
        if (!slot_less(&c->heap[best], &s))
            break;
        slot_set(c, i, &c->heap[best]);
        i = best;
    }
    slot_set(c, i, &s);
}

/* Moves heap slot i (< hlen) out of the heap to position hlen-1, the first
 * of the access's own slots, and restores the heap. */
static void heap_take(rm_shadow_cache *c, uint32_t i)
{
    uint32_t last = c->hlen - 1;
    if (i != last) {
        rm_shadow_slot s = c->heap[i];
        slot_set(c, i, &c->heap[last]);
        slot_set(c, last, &s);
    }
    c->hlen = last;
    if (i < last) {
        if (i > 0 && slot_less(&c->heap[i], &c->heap[(i - 1) / 4]))
            sift_up(c, i);
        else
            sift_down(c, i);
    }
}

/* Returns the access's slots to the heap: the access is over. */
static void heap_release(rm_shadow_cache *c)
{
    while (c->hlen < c->len) {
        uint32_t i = c->hlen++;
        sift_up(c, i);
    }
    c->dropping = 0;
}

static void cache_alloc(rm_shadow_cache *c, uint32_t cap, int recency)
{
    c->cap = cap;
    c->len = c->hlen = c->used = 0;
    c->head = c->tail = c->acc_head = c->acc_tail = c->free_head = NIL;
    if (recency) {
        c->nodes = rm_xmalloc(sizeof *c->nodes * cap);
    } else {
        c->entries = rm_xmalloc(sizeof *c->entries * cap);
        c->heap = rm_xmalloc(sizeof *c->heap * cap);
    }
    size_t slots = rm_shadow_table_slots(cap);
    c->table = rm_xcalloc(slots, sizeof *c->table);
    c->mask = (uint32_t)(slots - 1);
}

static void cache_free(rm_shadow_cache *c)
{
    free(c->entries);
    free(c->heap);
    free(c->nodes);
    free(c->table);
    c->entries = NULL;
    c->heap = NULL;
    c->nodes = NULL;
    c->table = NULL;
}

/* ---- recency engine: LRU as a list ------------------------------------- */

static void list_unlink(rm_shadow_cache *c, uint32_t e)
{
    rm_shadow_lnode *n = &c->nodes[e];
    if (n->prev != NIL)
        c->nodes[n->prev].next = n->next;
    else
        c->head = n->next;
    if (n->next != NIL)
        c->nodes[n->next].prev = n->prev;
    else
        c->tail = n->prev;
}

/* The access's list runs deepest first: each page goes in front of the
 * (shallower) ones before it, so appended at the end of the access it puts
 * deeper pages on the older side. */
static void access_push(rm_shadow_cache *c, uint32_t e)
{
    rm_shadow_lnode *n = &c->nodes[e];
    n->in_access = 1;
    n->prev = NIL;
    n->next = c->acc_head;
    if (c->acc_head != NIL)
        c->nodes[c->acc_head].prev = e;
    else
        c->acc_tail = e;
    c->acc_head = e;
}

static void list_drop_head(rm_shadow_cache *c)
{
    uint32_t e = c->head;
    list_unlink(c, e);
    table_del(c, c->nodes[e].key);
    c->nodes[e].next = c->free_head;
    c->free_head = e;
    c->len--;
}

static int lru_access(const rm_shadow *s, rm_shadow_cache *c, uint64_t key)
{
    uint32_t e = table_find(c, key);
    if (e != NIL) {
        rm_shadow_lnode *n = &c->nodes[e];
        n->seq = (uint32_t)s->seq;
        if (!n->in_access) {
            list_unlink(c, e);
            access_push(c, e);
        }
        return 1;
    }
    if (c->dropping)
        return 0;
    if (c->len == c->cap) {
        if (c->head == NIL) {
            c->dropping = 1;
            return 0;
        }
        /* A leaf edge goes whole (see cache_access). */
        uint32_t seq = c->nodes[c->head].seq;
        uint16_t born = c->nodes[c->head].born;
        do
            list_drop_head(c);
        while (c->head != NIL && c->nodes[c->head].seq == seq && c->nodes[c->head].born == born);
    }
    if (c->free_head != NIL) {
        e = c->free_head;
        c->free_head = c->nodes[e].next;
    } else {
        e = c->used++;
    }
    c->len++;
    c->nodes[e] = (rm_shadow_lnode){key, NIL, NIL, (uint32_t)s->seq, (uint16_t)s->seq, 0};
    access_push(c, e);
    table_put(c, key, e);
    return 0;
}

/* The access is over: its pages become the most recent, deepest oldest. */
static void lru_release(rm_shadow_cache *c)
{
    for (uint32_t e = c->acc_head; e != NIL; e = c->nodes[e].next)
        c->nodes[e].in_access = 0;
    if (c->acc_head != NIL) {
        if (c->tail != NIL)
            c->nodes[c->tail].next = c->acc_head;
        else
            c->head = c->acc_head;
        c->nodes[c->acc_head].prev = c->tail;
        c->tail = c->acc_tail;
    }
    c->acc_head = c->acc_tail = NIL;
    c->dropping = 0;
}

/* Points key's table slot, which holds entry `from`, at entry `to`. */
static void table_move(rm_shadow_cache *c, uint64_t key, uint32_t from, uint32_t to)
{
    size_t i = key & c->mask;
    while (c->table[i] != from + 1)
        i = (i + 1) & c->mask;
    c->table[i] = to + 1;
}

/* Evicts the lowest entry of the heap; entries and slots stay dense. */
static void drop_min(rm_shadow_cache *c)
{
    uint32_t e = c->heap[0].entry, last = c->len - 1;
    c->inflation = c->heap[0].pri;
    heap_take(c, 0); /* its slot is now heap[hlen] */
    if (c->hlen != last)
        slot_set(c, c->hlen, &c->heap[last]);
    table_del(c, c->entries[e].key);
    if (e != last) {
        c->entries[e] = c->entries[last];
        table_move(c, c->entries[e].key, last, e);
        c->heap[c->entries[e].pos].entry = e;
    }
    c->len = last;
}

/* One sampled page of the current access. Returns 1 on a hit. */
static int cache_access(const rm_shadow *s, rm_shadow_cache *c, uint64_t key, uint32_t depth,
                        int count)
{
    rm_shadow_touch t = {0, depth, c->inflation};
    rm_shadow_slot fresh = {0, s->seq, UINT32_MAX - depth, 0};
    uint32_t e = table_find(c, key);
    if (e != NIL) {
        rm_shadow_entry *en = &c->entries[e];
        if (count && en->hits != UINT16_MAX)
            en->hits++;
        t.hits = en->hits;
        fresh.pri = s->cfg.policy.priority(&t, s->cfg.policy.arg);
        fresh.entry = e;
        if (en->pos < c->hlen)
            heap_take(c, en->pos);
        slot_set(c, en->pos, &fresh);
        return 1;
    }
    if (c->dropping)
        return 0;
    if (c->len == c->cap) {
        if (c->hlen == 0) {
            /* Everything cached belongs to this access: the node drops
             * the pages that do not fit, keeping the prefix. */
            c->dropping = 1;
            return 0;
        }
        /* The node evicts a leaf edge whole: the pages one access inserted
         * and every later access touched alike (same last access) go
         * with the victim. They are next in order: same access, shallower. */
        rm_shadow_slot v = c->heap[0];
        uint16_t born = c->entries[v.entry].born;
        drop_min(c);
        while (c->hlen && c->heap[0].seq == v.seq && c->entries[c->heap[0].entry].born == born)
            drop_min(c);
        t.inflation = c->inflation;
    }
    fresh.pri = s->cfg.policy.priority(&t, s->cfg.policy.arg);
    /* The access's slots sit at [hlen, len): append to them. */
    e = c->len++;
    c->entries[e] = (rm_shadow_entry){key, 0, (uint16_t)s->seq, 0};
    fresh.entry = e;
    slot_set(c, e, &fresh);
    table_put(c, key, e);
    return 0;
}

/* ---- init / sizing ------------------------------------------------------ */

rm_shadow_result rm_shadow_init(rm_shadow *s, const rm_shadow_config *cfg)
{
    memset(s, 0, sizeof *s);
    if (cfg->page_tokens == 0 || cfg->nfactors > RM_SHADOW_MAX_FACTORS)
        return RM_SHADOW_BAD_CONFIG;
    for (uint32_t i = 0; i < cfg->nfactors; i++)
        if (!(cfg->factors[i] > 0) || !isfinite(cfg->factors[i]))
            return RM_SHADOW_BAD_CONFIG;
    if (cfg->nfactors && cfg->pool_pages == 0)
        return RM_SHADOW_NO_POOL;
    s->cfg = *cfg;
    if (!s->cfg.budget_bytes)
        s->cfg.budget_bytes = RM_SHADOW_DEFAULT_BUDGET;
    if (!s->cfg.infinite_budget_bytes)
        s->cfg.infinite_budget_bytes = RM_SHADOW_DEFAULT_BUDGET;
    if (!(s->cfg.max_rate > 0))
        s->cfg.max_rate = RM_SHADOW_DEFAULT_MAX_RATE;
    if (s->cfg.max_rate > 1)
        s->cfg.max_rate = 1;
    if (!s->cfg.min_sample)
        s->cfg.min_sample = RM_SHADOW_DEFAULT_MIN_SAMPLE;
    uint64_t limit = rm_shadow_rate_limit(&s->cfg, cfg->pool_pages);
    if (s->cfg.nfactors) {
        s->threshold = rm_shadow_choose_threshold(&s->cfg, cfg->pool_pages, limit);
        if (!s->threshold)
            return RM_SHADOW_BUDGET_SMALL;
    }
    size_t inf_slots = 0;
    if (s->cfg.infinite) {
        inf_slots = 4;
        while (inf_slots * 2 * sizeof(uint64_t) <= s->cfg.infinite_budget_bytes)
            inf_slots *= 2;
        if (inf_slots * sizeof(uint64_t) > s->cfg.infinite_budget_bytes)
            return RM_SHADOW_BUDGET_SMALL;
    }
    s->pool_pages = cfg->pool_pages;
    for (uint32_t i = 0; i < s->cfg.nfactors; i++) {
        s->caches[i].factor = s->cfg.factors[i];
        cache_alloc(&s->caches[i],
                    (uint32_t)rm_shadow_cap_at(s->cfg.factors[i], s->pool_pages, s->threshold),
                    !s->cfg.policy.priority);
    }
    if (inf_slots) {
        s->inf_keys = rm_xcalloc(inf_slots, sizeof *s->inf_keys);
        s->inf_mask = inf_slots - 1;
        s->inf_max = inf_slots / 2;
        /* The same sample as the bounded caches: ideal and infinite then
         * see the same pages until the infinite one's budget fills. */
        s->inf_threshold = s->cfg.nfactors ? s->threshold : limit;
    }
    uint32_t pt = s->cfg.page_tokens;
    s->group_pages = pt >= RM_SHADOW_GROUP_TOKENS ? 1 : RM_SHADOW_GROUP_TOKENS / pt;
    size_t nkeys = (size_t)s->group_pages * (pt + (pt & 1));
    s->nh_keys = rm_xmalloc(sizeof *s->nh_keys * nkeys);
    s->nh = rm_nh_pick();
    for (size_t i = 0; i < nkeys; i++)
        s->nh_keys[i] = (uint32_t)(rm_mix64(NH_SEED + i * PAGE_SALT) >> 32);
    return RM_SHADOW_OK;
}

void rm_shadow_destroy(rm_shadow *s)
{
    for (uint32_t i = 0; i < s->cfg.nfactors; i++)
        cache_free(&s->caches[i]);
    free(s->inf_keys);
    free(s->nh_keys);
    memset(s, 0, sizeof *s);
}

static int slot_cmp(const void *a, const void *b)
{
    return slot_less(a, b) ? -1 : slot_less(b, a) ? 1 : 0;
}

/* Rebuilds cache c at a new capacity keeping the entries sampled under the
 * (new) threshold, the last to be evicted first. Between accesses. */
static void cache_resize(rm_shadow_cache *c, uint64_t threshold, uint32_t cap)
{
    if (c->nodes) {
        rm_shadow_lnode *old = c->nodes;
        uint32_t tail = c->tail;
        free(c->table);
        cache_alloc(c, cap, 1);
        /* From the most recent back; the kept ones are pushed in front. */
        uint32_t first = NIL;
        for (uint32_t e = tail; e != NIL && c->len < cap; e = old[e].prev) {
            if ((old[e].key >> 32) >= threshold)
                continue;
            uint32_t k = c->used++;
            c->nodes[k] = old[e];
            c->nodes[k].prev = NIL;
            c->nodes[k].next = first;
            if (first != NIL)
                c->nodes[first].prev = k;
            else
                c->tail = k;
            first = k;
            c->len++;
            table_put(c, c->nodes[k].key, k);
        }
        c->head = first;
        free(old);
        return;
    }
    uint32_t m = 0;
    for (uint32_t i = 0; i < c->len; i++)
        if ((c->entries[c->heap[i].entry].key >> 32) < threshold)
            c->heap[m++] = c->heap[i];
    /* Ascending order is a valid heap; the lowest go when over cap. */
    qsort(c->heap, m, sizeof *c->heap, slot_cmp);
    uint32_t from = m > cap ? m - cap : 0;
    rm_shadow_entry *old = c->entries;
    rm_shadow_slot *kept = c->heap;
    free(c->table);
    c->entries = NULL;
    c->heap = NULL;
    cache_alloc(c, cap, 0);
    c->len = c->hlen = m - from;
    for (uint32_t i = 0; i < c->len; i++) {
        rm_shadow_slot sl = kept[from + i];
        c->entries[i] = old[sl.entry];
        sl.entry = i;
        slot_set(c, i, &sl);
        table_put(c, c->entries[i].key, i);
    }
    free(old);
    free(kept);
}

rm_shadow_result rm_shadow_set_pool(rm_shadow *s, uint64_t pool_pages)
{
    if (!s->cfg.nfactors)
        return RM_SHADOW_OK;
    if (pool_pages == 0)
        return RM_SHADOW_NO_POOL;
    uint64_t limit = rm_shadow_rate_limit(&s->cfg, pool_pages);
    uint64_t t = rm_shadow_choose_threshold(&s->cfg, pool_pages,
                                            limit < s->threshold ? limit : s->threshold);
    if (!t)
        t = 1; /* caps of 1 always fit what init accepted */
    s->threshold = t;
    s->pool_pages = pool_pages;
    s->cfg.pool_pages = pool_pages;
    for (uint32_t i = 0; i < s->cfg.nfactors; i++)
        cache_resize(&s->caches[i], t,
                     (uint32_t)rm_shadow_cap_at(s->caches[i].factor, pool_pages, t));
    return RM_SHADOW_OK;
}

double rm_shadow_rate(const rm_shadow *s)
{
    return (double)s->threshold / (double)RATE_ONE;
}

double rm_shadow_infinite_rate(const rm_shadow *s)
{
    return s->inf_keys ? (double)s->inf_threshold / (double)RATE_ONE : 0;
}

uint32_t rm_shadow_capacity(const rm_shadow *s, uint32_t i)
{
    return i < s->cfg.nfactors ? s->caches[i].cap : 0;
}

size_t rm_shadow_memory_bytes(const rm_shadow *s)
{
    size_t b = 0;
    for (uint32_t i = 0; i < s->cfg.nfactors; i++)
        b += rm_shadow_cache_bytes(s->caches[i].cap, !s->cfg.policy.priority);
    if (s->inf_keys)
        b += (s->inf_mask + 1) * sizeof *s->inf_keys;
    return b;
}

/* ---- the access ---------------------------------------------------------- */

static void visit(rm_shadow *s, uint64_t key, uint64_t u, uint32_t depth, int count)
{
    if (u < s->threshold && s->cfg.nfactors) {
        double w = (double)RATE_ONE / (double)s->threshold;
        if (count) {
            s->counts.samples++;
            s->counts.pages += w;
        }
        for (uint32_t i = 0; i < s->cfg.nfactors; i++) {
            rm_shadow_cache *c = &s->caches[i];
            int hit = c->nodes ? lru_access(s, c, key) : cache_access(s, c, key, depth, count);
            if (hit && count)
                s->counts.hits[i] += w;
        }
    }
    if (s->inf_keys && u < s->inf_threshold) {
        double w = (double)RATE_ONE / (double)s->inf_threshold;
        int hit = rm_shadow_inf_access(s, key);
        if (count) {
            s->counts.inf_samples++;
            s->counts.inf_pages += w;
            if (hit)
                s->counts.inf_hits += w;
        }
    }
}

/* The chain value after a group whose NH is sum. A bijection of
 * chain ^ sum (an odd multiplier, then an xorshift), so two prefixes get
 * equal values only if their chain ^ sum agree; the product's top half,
 * the next group's sampling value, depends on every bit of it. One
 * multiply instead of rm_mix64's two: the step is serial across a
 * request's groups. */
static inline uint64_t chain_step(uint64_t chain, uint64_t sum)
{
    uint64_t x = (chain ^ sum ^ CHAIN_SALT) * 0xd6e8feb86659fd93ULL;
    return x ^ (x >> 32);
}

static void access(rm_shadow *s, const char *ns, size_t ns_len, const uint32_t *tokens, size_t n,
                   int count)
{
    uint32_t pt = s->cfg.page_tokens;
    size_t npages = n / pt;
    if (count) {
        s->counts.requests++;
        s->counts.query_tokens += n;
        s->counts.aligned_tokens += npages * pt;
    }
    if (npages == 0)
        return;
    s->seq++;
    uint64_t top = s->threshold > s->inf_threshold ? s->threshold : s->inf_threshold;
    uint64_t chain = rm_prefix_ns_hash(ns, ns_len);
    for (size_t p = 0; p < npages; p += s->group_pages) {
        uint32_t g = npages - p < s->group_pages ? (uint32_t)(npages - p) : s->group_pages;
        const uint32_t *t = tokens + p * pt;
        /* A page is sampled by a hash of its identity -- the chain before
         * its group and the group's tokens through the page's end -- so
         * two pages share a decision only if they share their whole
         * prefix (SHARDS samples keys by hash). One multiply decides; the
         * key of a sampled page takes a full mix. */
        uint64_t nhs[RM_SHADOW_GROUP_TOKENS], sum = 0;
        s->nh.pages(t, s->nh_keys, pt, g, nhs);
        for (uint32_t j = 0; j < g; j++) {
            sum += nhs[j];
            uint64_t id = chain ^ sum ^ (j + 1) * PAGE_SALT;
            uint64_t u = (id * DECIDE_MUL) >> 32;
            if (u < top) {
                uint64_t key = u << 32 | (uint32_t)rm_mix64(id);
                visit(s, key ? key : 1, u, (uint32_t)(p + j), count);
            }
        }
        chain = chain_step(chain, sum);
    }
    for (uint32_t i = 0; i < s->cfg.nfactors; i++) {
        if (s->caches[i].nodes)
            lru_release(&s->caches[i]);
        else
            heap_release(&s->caches[i]);
    }
}

/* What rm_shadow_insert compares with recent Matches: the namespace, the
 * length and five tokens spread over the request (never 0). */
static uint64_t fingerprint(const char *ns, size_t ns_len, const uint32_t *tokens, size_t n)
{
    uint64_t h = rm_mix64(rm_prefix_ns_hash(ns, ns_len) ^ (uint64_t)n * PAGE_SALT);
    const size_t at[] = {0, n / 4, n / 2, n - n / 4 - 1, n - 1};
    for (size_t i = 0; i < RM_ARRAY_LEN(at); i++)
        h = rm_mix64(h ^ tokens[at[i]]);
    return h ? h : 1;
}

void rm_shadow_match(rm_shadow *s, const char *ns, size_t ns_len, const uint32_t *tokens, size_t n)
{
    if (n >= s->cfg.page_tokens) {
        uint64_t f = fingerprint(ns, ns_len, tokens, n);
        s->recent[f & (RM_SHADOW_RECENT - 1)] = f;
    }
    access(s, ns, ns_len, tokens, n, 1);
}

void rm_shadow_insert(rm_shadow *s, const char *ns, size_t ns_len, const uint32_t *tokens, size_t n)
{
    if (n < s->cfg.page_tokens)
        return; /* caches nothing */
    uint64_t f = fingerprint(ns, ns_len, tokens, n);
    if (s->recent[f & (RM_SHADOW_RECENT - 1)] == f) {
        s->counts.repeats++;
        return;
    }
    access(s, ns, ns_len, tokens, n, 0);
}

/* ---- read-out ------------------------------------------------------------ */

static double window_ratio(double hits, double pages, uint64_t aligned, uint64_t query)
{
    if (query == 0)
        return NAN;
    if (aligned == 0)
        return 0;
    if (!(pages > 0))
        return NAN;
    return hits / pages * ((double)aligned / (double)query);
}

double rm_shadow_hit_ratio(const rm_shadow_counts *now, const rm_shadow_counts *then, uint32_t i)
{
    static const rm_shadow_counts zero;
    if (!then)
        then = &zero;
    if (i >= RM_SHADOW_MAX_FACTORS)
        return NAN;
    return window_ratio(now->hits[i] - then->hits[i], now->pages - then->pages,
                        now->aligned_tokens - then->aligned_tokens,
                        now->query_tokens - then->query_tokens);
}

double rm_shadow_infinite_hit_ratio(const rm_shadow_counts *now, const rm_shadow_counts *then)
{
    static const rm_shadow_counts zero;
    if (!then)
        then = &zero;
    return window_ratio(now->inf_hits - then->inf_hits, now->inf_pages - then->inf_pages,
                        now->aligned_tokens - then->aligned_tokens,
                        now->query_tokens - then->query_tokens);
}

double rm_shadow_hit_tokens(const rm_shadow_counts *now, const rm_shadow_counts *then, uint32_t i)
{
    double r = rm_shadow_hit_ratio(now, then, i);
    uint64_t q = now->query_tokens - (then ? then->query_tokens : 0);
    return isnan(r) ? 0 : r * (double)q;
}
