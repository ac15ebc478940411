#include "hotset.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prefix_key.h"
#include "util.h"

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
        if (h->slots[i].hash)
            h->slots[i].count /= w;
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
            e->hash = hash;
            e->count = 0;
            h->used++;
            return e;
        }
    }
}

/* Drops cold entries (rebuilding the table keeps probe chains valid). */
static void purge(rm_hotset *h)
{
    size_t cap = h->mask + 1;
    rm_hot_entry *old = h->slots;
    h->slots = rm_xcalloc(cap, sizeof *h->slots);
    h->used = 0;
    double cut = h->cold_share * h->total;
    for (size_t i = 0; i < cap; i++) {
        if (old[i].hash && old[i].count >= cut) {
            rm_hot_entry *e = find(h, old[i].hash, 1);
            *e = old[i];
        }
    }
    free(old);
    /* Everything kept is hot-ish; if that still fills the table, the
     * threshold is too low for it: keep only the warmer half. */
    if (h->used * 4 > cap * 3) {
        old = h->slots;
        h->slots = rm_xcalloc(cap, sizeof *h->slots);
        h->used = 0;
        for (size_t i = 0; i < cap; i++)
            if (old[i].hash && old[i].count >= 2 * cut)
                *find(h, old[i].hash, 1) = old[i];
        free(old);
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
    size_t blocks = n / h->block_tokens;
    if (blocks > h->max_blocks)
        blocks = h->max_blocks;
    for (size_t b = 0; b < blocks; b++) {
        hash = rm_prefix_chain(hash, tokens + b * h->block_tokens, h->block_tokens);
        if (h->used * 4 >= (h->mask + 1) * 3)
            purge(h);
        rm_hot_entry *e = find(h, hash, 1);
        e->blocks = (uint32_t)(b + 1);
        e->count += w;
        if (e->count < h->cold_share * h->total)
            break; /* deeper prefixes are rarer still */
    }
}

/* Most shared first; among equals (a chain whose blocks all travel
 * together) the deepest first. */
static int by_share(const void *a, const void *b)
{
    const rm_hot_entry *x = a, *y = b;
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
    }
    free(q);
    return k;
}
