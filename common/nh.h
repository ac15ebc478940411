/* nh.h -- the NH hash (UMAC, RFC 4418's inner layer) over token ids.
 *
 *   NH(t, k) = sum over pairs i of (t[2i] + k[2i]) * (t[2i+1] + k[2i+1])
 *
 * with the additions mod 2^32 and the products and the sum mod 2^64; an
 * odd last token is paired with the key after it alone, (t + k[n-1]) *
 * k[n]. For two different inputs of the same length and random keys, the
 * sums collide with probability at most 2^-32 (NH is 2^-32-almost-
 * universal); it is not a MAC and resists no one who knows the keys.
 *
 * Every version returns the same sums: the products are independent, so
 * they vectorise (SSE2 on every x86-64, AVX2 where the CPU has it, chosen
 * by rm_nh_pick). Pure; no global state. */
#ifndef RM_NH_H
#define RM_NH_H

#include <stddef.h>
#include <stdint.h>

/* NH of t[0..n) under keys k[0..n) (k[0..n] when n is odd). */
typedef uint64_t (*rm_nh_fn)(const uint32_t *t, const uint32_t *k, size_t n);

/* Per page: out[j] = NH(t + j*page, k + j*kstride, page) for j < npages,
 * kstride being page rounded up to even (so k holds npages * kstride keys). */
typedef void (*rm_nh_pages_fn)(const uint32_t *t, const uint32_t *k, size_t page, size_t npages,
                               uint64_t *out);

typedef struct rm_nh_impl {
    const char *name;
    rm_nh_fn one;
    rm_nh_pages_fn pages;
} rm_nh_impl;

/* The plain C version: the reference. */
uint64_t rm_nh_scalar(const uint32_t *t, const uint32_t *k, size_t n);

/* The fastest version this CPU runs. */
rm_nh_impl rm_nh_pick(void);

/* Every version this build has that the CPU runs, the reference first:
 * fills out (up to cap) and returns how many there are. For tests. */
size_t rm_nh_all(rm_nh_impl *out, size_t cap);

#endif
