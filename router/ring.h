/* ring.h -- consistent hashing with virtual points and a bounded-load walk.
 *
 * Each member gets vnodes * weight points at hash(member id, i); a key maps
 * to the first point clockwise from hash(key). Points depend only on member
 * ids, so two processes with the same membership build the same ring, and
 * removing one of N members moves only the keys that were on its points
 * (about 1/N of them).
 *
 *        key ──▶ ●──────○──────●──────◐──▶ (clockwise)
 *                A      B      A      C       first acceptable member wins
 *
 * Bounded load (Mirrokni et al., "Consistent Hashing with Bounded Loads"):
 * the walk skips members the caller's accept function rejects (over the
 * load bound) and takes the next distinct member. */
#ifndef RM_RING_H
#define RM_RING_H

#include <stddef.h>
#include <stdint.h>

typedef struct rm_ring_point {
    uint64_t hash;
    uint32_t member;
} rm_ring_point;

typedef struct rm_ring {
    rm_ring_point *pts;
    size_t npts;
    uint32_t nmembers; /* members with points (those marked up) */
    uint32_t capacity; /* highest member index + 1 */
} rm_ring;

/* Builds the ring over members [0, n) whose up[i] is nonzero. ids[i] is the
 * stable member id, weights[i] >= 1 multiplies vnodes. Replaces any previous
 * content of r (start from a zeroed rm_ring). */
void rm_ring_build(rm_ring *r, const char *const *ids, const uint32_t *weights, const int *up,
                   uint32_t n, uint32_t vnodes);
void rm_ring_free(rm_ring *r);

/* Returns 1 if member may take one more request. */
typedef int (*rm_ring_accept_fn)(void *ctx, uint32_t member);

/* The member for key: the first member clockwise from it that accept()
 * takes and that is not `exclude` (UINT32_MAX: none). If accept rejects all,
 * the first non-excluded member. *spilled (may be NULL) says whether the
 * key's own member was passed over. Returns -1 on an empty ring. */
int64_t rm_ring_pick(const rm_ring *r, uint64_t key, rm_ring_accept_fn accept, void *ctx,
                     uint32_t exclude, int *spilled);

/* Like rm_ring_pick, but collects up to k distinct members that accept()
 * takes, in walk order, into out. If none is accepted, out[0] is the first
 * non-excluded member. Returns how many were stored (0 on an empty ring). */
size_t rm_ring_pick_n(const rm_ring *r, uint64_t key, rm_ring_accept_fn accept, void *ctx,
                      uint32_t exclude, uint32_t *out, size_t k, int *spilled);

/* The point hash of a member's i-th virtual point (exposed for tests). */
uint64_t rm_ring_point_hash(const char *id, uint32_t i);

#endif
