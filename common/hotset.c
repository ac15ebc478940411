#include "hotset.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prefix_key.h"
#include "util.h"

uint32_t rm_hotset_depth(uint32_t block_tokens)
{
    uint32_t d = block_tokens ? RM_HOT_MAX_TOKENS / block_tokens : 1;
    return d < 1 ? 1 : d > RM_HOT_MAX_BLOCKS ? RM_HOT_MAX_BLOCKS : d;
}

size_t rm_hotset_capacity(uint32_t max_blocks)
{
    size_t cap = 4096;
    while (cap < (size_t)max_blocks * 4)
        cap *= 2;
    return cap;
}

int rm_hotset_init(rm_hotset *h, uint32_t block_tokens, uint32_t max_blocks, double cold_share,
                   uint64_t half_life_ms, size_t capacity, uint64_t now_ms)
{
    memset(h, 0, sizeof *h);
    if (!block_tokens || !max_blocks || !half_life_ms || capacity < 16 || cold_share <= 0)
        return -EINVAL;
    size_t cap = 16;
    while (cap < capacity)
        cap *= 2;
    h->block_tokens = block_tokens;
    h->max_blocks = max_blocks;
    h->cold_share = cold_share;
    h->half_life_ms = half_life_ms;
    h->epoch_ms = now_ms;
    h->scale = 1.0;
    h->slots = rm_xcalloc(cap, sizeof *h->slots);
    h->mask = cap - 1;
    return 0;
}

void rm_hotset_destroy(rm_hotset *h)
{
    free(h->slots);
    memset(h, 0, sizeof *h);
}

/* Weight of an event at now_ms relative to the epoch: 2^((now-epoch)/hl).
 * Growing weights instead of shrinking every count keeps updates O(1);
 * everything is rescaled when the weight gets large. */
static double weight(const rm_hotset *h, uint64_t now_ms)
{
    uint64_t dt = now_ms > h->epoch_ms ? now_ms - h->epoch_ms : 0;
    return exp2((double)dt / (double)h->half_life_ms);
}

static void rescale(rm_hotset *h, uint64_t now_ms)
{
    double w = weight(h, now_ms);
    for (size_t i = 0; i <= h->mask; i++)
        if (h->slots[i].hash) {
            h->slots[i].count /= w;
            h->slots[i].lead_count /= w;
            h->slots[i].other /= w;
        }
    h->total /= w;
    h->epoch_ms = now_ms;
}

static rm_hot_entry *find(rm_hotset *h, uint64_t hash, int create)
{
    if (hash == 0)
        hash = 1; /* 0 marks empty slots */
    for (size_t i = hash & h->mask;; i = (i + 1) & h->mask) {
        rm_hot_entry *e = &h->slots[i];
        if (e->hash == hash)
            return e;
        if (!e->hash) {
            if (!create)
                return NULL;
            memset(e, 0, sizeof *e);
            e->hash = hash;
            h->used++;
            return e;
        }
    }
}

/* Rebuilds the table with the entries keep() accepts (rebuilding keeps
 * probe chains valid). */
static void rebuild(rm_hotset *h, int (*keep)(const rm_hot_entry *, const void *), const void *arg)
{
    size_t cap = h->mask + 1;
    rm_hot_entry *old = h->slots;
    h->slots = rm_xcalloc(cap, sizeof *h->slots);
    h->used = 0;
    for (size_t i = 0; i < cap; i++)
        if (old[i].hash && keep(&old[i], arg))
            *find(h, old[i].hash, 1) = old[i];
    free(old);
}

static int at_least(const rm_hot_entry *e, const void *arg)
{
    return e->count >= *(const double *)arg;
}

/* Warmest first; among equal counts the shallowest, so a chain loses its
 * deepest blocks first and never keeps a block without its parent. */
static int warmest_first(const void *a, const void *b)
{
    const rm_hot_entry *x = *(const rm_hot_entry *const *)a, *y = *(const rm_hot_entry *const *)b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return x->blocks > y->blocks ? 1 : x->blocks < y->blocks ? -1 : 0;
}

/* Makes room: drops entries colder than the cold threshold, then (if the
 * table is still over half full) those under twice it. At low traffic even
 * that can keep everything -- 16 long requests in a window give every
 * prefix of each a 1/16 share -- and a full table would make find() probe
 * forever, so last of all only the warmest half stays. Ending at most half
 * full, the next purge is a quarter of the table's inserts away: purges
 * cost O(1) per insert however deep the chains (one that freed a single
 * slot each time would rebuild the table on every block of a long prompt). */
static void purge(rm_hotset *h)
{
    size_t cap = h->mask + 1;
    double cut = h->cold_share * h->total;
    rebuild(h, at_least, &cut);
    if (h->used * 2 > cap) {
        cut *= 2;
        rebuild(h, at_least, &cut);
    }
    if (h->used * 2 > cap) {
        rm_hot_entry **order = rm_xmalloc(sizeof *order * h->used);
        size_t n = 0;
        for (size_t i = 0; i < cap; i++)
            if (h->slots[i].hash)
                order[n++] = &h->slots[i];
        qsort(order, n, sizeof *order, warmest_first);
        size_t k = n / 2;
        rm_hot_entry *kept = rm_xmalloc(sizeof *kept * (k + 1));
        for (size_t i = 0; i < k; i++)
            kept[i] = *order[i];
        free(order);
        memset(h->slots, 0, sizeof *h->slots * cap);
        h->used = 0;
        for (size_t i = 0; i < k; i++)
            *find(h, kept[i].hash, 1) = kept[i];
        free(kept);
    }
}

/* The checkpoint hashes of a continuation of `avail` tokens after the
 * prefix `parent`. Returns how many quarters it covers (0..4). */
static uint32_t checkpoints(const rm_hotset *h, uint64_t parent, const uint32_t *t, size_t avail,
                            uint64_t cp[RM_HOT_CHECKPOINTS])
{
    uint32_t k = 0;
    for (; k < RM_HOT_CHECKPOINTS; k++) {
        size_t len = (size_t)h->block_tokens * (k + 1) / RM_HOT_CHECKPOINTS;
        if (len == 0)
            len = 1;
        if (len > avail)
            break;
        cp[k] = rm_prefix_chain(parent, t, len);
    }
    return k;
}

/* A request carrying e's prefix continued as cp[0..known). */
static void continued(rm_hot_entry *e, const uint64_t *cp, uint32_t known, double w)
{
    if (known == 0)
        return;
    uint32_t common = known < e->lead_known ? known : e->lead_known;
    if (e->lead_known && !memcmp(cp, e->lead, common * sizeof *cp)) {
        e->lead_count += w; /* the leader, possibly seen further now */
        if (known > e->lead_known) {
            memcpy(e->lead, cp, known * sizeof *cp);
            e->lead_known = known;
        }
    } else if (e->lead_count <= e->other) {
        /* The others outweigh the leader: the newcomer leads, and the old
         * leader's weight joins the others. */
        e->other += e->lead_count;
        memcpy(e->lead, cp, known * sizeof *cp);
        e->lead_known = known;
        e->lead_count = w;
    } else {
        e->other += w;
    }
}

void rm_hotset_add(rm_hotset *h, const char *ns, size_t ns_len, const uint32_t *tokens, size_t n,
                   uint64_t now_ms)
{
    double w = weight(h, now_ms);
    if (w > 1e12) {
        rescale(h, now_ms);
        w = 1.0;
    }
    h->total += w;
    uint64_t hash = rm_prefix_ns_hash(ns, ns_len);
    size_t B = h->block_tokens, blocks = n / B;
    if (blocks > h->max_blocks)
        blocks = h->max_blocks;
    for (size_t b = 0; b <= blocks; b++) {
        uint64_t parent = hash;
        if (b < blocks)
            hash = rm_prefix_chain(parent, tokens + b * B, B);
        rm_hot_entry *p = b ? find(h, parent, 0) : NULL;
        if (p && b < blocks && p->lead_known == RM_HOT_CHECKPOINTS &&
            p->lead[RM_HOT_CHECKPOINTS - 1] == hash) {
            p->lead_count += w; /* the leader's whole block: no quarters needed */
        } else if (p && (b < blocks || b < h->max_blocks)) {
            /* The next block, or the short tail after the last one: many
             * short questions after one prompt branch too. */
            uint64_t cp[RM_HOT_CHECKPOINTS];
            continued(p, cp, checkpoints(h, parent, tokens + b * B, n - b * B, cp), w);
        }
        if (b == blocks)
            break;
        if (h->used * 4 >= (h->mask + 1) * 3)
            purge(h);
        rm_hot_entry *e = find(h, hash, 1);
        e->blocks = (uint32_t)(b + 1);
        e->count += w;
        if (e->count < h->cold_share * h->total)
            break; /* deeper prefixes are rarer still */
    }
}

static int branches(const rm_hot_entry *e)
{
    return e->other >= RM_HOT_BRANCH_SHARE * e->count && e->other > 0;
}

/* Branch points first; then most shared first; among equals (a chain whose
 * blocks all travel together) the deepest first. */
static int by_share(const void *a, const void *b)
{
    const rm_hot_entry *x = a, *y = b;
    if (branches(x) != branches(y))
        return branches(y) - branches(x);
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return x->blocks < y->blocks ? 1 : x->blocks > y->blocks ? -1 : 0;
}

size_t rm_hotset_top(const rm_hotset *h, double min_share, uint64_t now_ms, rm_hot_entry *out,
                     size_t cap, double *total)
{
    double w = weight(h, now_ms);
    *total = h->total / w;
    double cut = min_share * h->total;
    size_t nq = 0;
    rm_hot_entry *q = rm_xmalloc(sizeof *q * (h->used + 1));
    for (size_t i = 0; i <= h->mask; i++) {
        const rm_hot_entry *e = &h->slots[i];
        if (e->hash && e->count > 0 && e->count >= cut)
            q[nq++] = *e;
    }
    qsort(q, nq, sizeof *q, by_share);
    size_t k = nq < cap ? nq : cap;
    for (size_t i = 0; i < k; i++) {
        out[i] = q[i];
        out[i].count = q[i].count / w;
        out[i].lead_count = q[i].lead_count / w;
        out[i].other = q[i].other / w;
    }
    free(q);
    return k;
}
