/* nh.h -- the NH hash (UMAC, RFC 4418's inner layer) over token ids.
 *
 *   NH(t, k) = sum over pairs i of (t[2i] + k[2i]) * (t[2i+1] + k[2i+1])
 *
 * with the additions mod 2^32 and the products and sum mod 2^64; an odd
 * last token is multiplied by (its key + 0)'s partner key k[n]. For two
 * different inputs of the same length and random keys, the sums collide
 * with probability at most 2^-32 (NH is 2^-32-almost-universal); it is not
 * a MAC and not meant to resist chosen inputs once the keys are known.
 *
 * Every implementation returns the same sum: the products are independent,
 * so it vectorises (SSE2 on every x86-64, AVX2 where the CPU has it, picked
 * once by rm_nh_pick). k must hold n + 1 keys when n is odd, n otherwise.
 * Pure; no global state. */
#ifndef RM_NH_H
#define RM_NH_H

#include <stddef.h>
#include <stdint.h>

typedef uint64_t (*rm_nh_fn)(const uint32_t *t, const uint32_t *k, size_t n);

/* The plain C version (the reference). */
uint64_t rm_nh_scalar(const uint32_t *t, const uint32_t *k, size_t n);

/* The fastest version this CPU runs. */
rm_nh_fn rm_nh_pick(void);

/* Every version this build has, for tests: fills out (up to cap) and
 * returns how many the CPU runs. */
size_t rm_nh_all(rm_nh_fn *out, size_t cap);

#endif
