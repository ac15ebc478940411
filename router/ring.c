#include "ring.h"

#include <stdlib.h>
#include <string.h>

#include "prefix_key.h"
#include "util.h"

uint64_t rm_ring_point_hash(const char *id, uint32_t i)
{
    return rm_hash_bytes(id, strlen(id), 0x72696e67ULL + i * 0x9e3779b97f4a7c15ULL);
}

static int point_cmp(const void *a, const void *b)
{
    const rm_ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->member < y->member ? -1 : x->member > y->member; /* total order */
}

void rm_ring_build(rm_ring *r, const char *const *ids, const uint32_t *weights, const int *up,
                   uint32_t n, uint32_t vnodes)
{
    free(r->pts);
    memset(r, 0, sizeof *r);
    size_t total = 0;
    for (uint32_t m = 0; m < n; m++)
        if (up[m])
            total += (size_t)vnodes * (weights[m] ? weights[m] : 1);
    r->pts = rm_xmalloc(sizeof *r->pts * (total + 1));
    r->capacity = n;
    for (uint32_t m = 0; m < n; m++) {
        if (!up[m])
            continue;
        r->nmembers++;
        uint32_t np = vnodes * (weights[m] ? weights[m] : 1);
        for (uint32_t i = 0; i < np; i++) {
            r->pts[r->npts].hash = rm_ring_point_hash(ids[m], i);
            r->pts[r->npts].member = m;
            r->npts++;
        }
    }
    qsort(r->pts, r->npts, sizeof *r->pts, point_cmp);
}

void rm_ring_free(rm_ring *r)
{
    free(r->pts);
    memset(r, 0, sizeof *r);
}

size_t rm_ring_pick_n(const rm_ring *r, uint64_t key, rm_ring_accept_fn accept, void *ctx,
                      uint32_t exclude, uint32_t *out, size_t k, int *spilled)
{
    if (spilled)
        *spilled = 0;
    if (r->npts == 0 || k == 0)
        return 0;
    /* First point with hash >= key (wrapping to 0). */
    size_t lo = 0, hi = r->npts;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->pts[mid].hash < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint8_t seen_small[256];
    uint8_t *seen = r->capacity <= sizeof seen_small ? seen_small : rm_xmalloc(r->capacity);
    memset(seen, 0, r->capacity);
    int64_t first = -1;
    size_t got = 0;
    uint32_t distinct = 0;
    for (size_t i = 0; i < r->npts && distinct < r->nmembers && got < k; i++) {
        uint32_t m = r->pts[(lo + i) % r->npts].member;
        if (seen[m])
            continue;
        seen[m] = 1;
        distinct++;
        if (m == exclude)
            continue;
        if (first < 0)
            first = m;
        if (!accept || accept(ctx, m))
            out[got++] = m;
    }
    if (seen != seen_small)
        free(seen);
    if (got == 0 && first >= 0)
        out[got++] = (uint32_t)first;
    if (spilled)
        *spilled = got > 0 && (int64_t)out[0] != first;
    return got;
}

int64_t rm_ring_pick(const rm_ring *r, uint64_t key, rm_ring_accept_fn accept, void *ctx,
                     uint32_t exclude, int *spilled)
{
    uint32_t m;
    return rm_ring_pick_n(r, key, accept, ctx, exclude, &m, 1, spilled) ? (int64_t)m : -1;
}
