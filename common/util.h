/* util.h -- allocation that aborts on out-of-memory, clocks, hashing.
 *
 * A daemon that cannot allocate a few bytes of metadata cannot keep its
 * accounting right, so it stops with a message instead of limping on. */
#ifndef RM_UTIL_H
#define RM_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* malloc/calloc/realloc/strndup that abort with a message on failure. */
void *rm_xmalloc(size_t n);
void *rm_xcalloc(size_t n, size_t size);
void *rm_xrealloc(void *p, size_t n);

/* Room for element n of a growing array p of elem-byte elements holding
 * *cap: when n == *cap it grows to twice *cap (first when *cap is 0), and
 * *cap says so. Returns the array (p itself if it had room); aborts, as
 * rm_xrealloc, if the size would overflow or memory runs out. Use:
 *
 *     v->items = rm_xgrow(v->items, v->n, &v->cap, sizeof *v->items, 64);
 *     v->items[v->n++] = x;
 *
 * Inline, so that the room check costs what the hand-written one did (the
 * token decoder calls it once a token); rm_xgrow_full grows. */
void *rm_xgrow_full(void *p, size_t n, size_t *cap, size_t elem, size_t first);
static inline void *rm_xgrow(void *p, size_t n, size_t *cap, size_t elem, size_t first)
{
    return n < *cap ? p : rm_xgrow_full(p, n, cap, elem, first);
}
char *rm_xstrndup(const char *s, size_t n);

/* Monotonic clock in milliseconds / nanoseconds (CLOCK_MONOTONIC). */
uint64_t rm_now_ms(void);
uint64_t rm_now_ns(void);
/* Wall clock in milliseconds since the epoch (CLOCK_REALTIME): for figures
 * that other processes, on other machines, read as of the same instant. */
uint64_t rm_wall_ms(void);

/* 64-bit hash of n token ids. Deterministic across processes and machines
 * for the same seed (no pointer or per-process salt goes in unless the
 * caller passes one as seed). Not cryptographic. */
uint64_t rm_hash_u32s(const uint32_t *v, size_t n, uint64_t seed);

/* 64-bit finaliser: a bijective mix of x (splitmix64 constants). */
static inline uint64_t rm_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* A growing string: rm_sbuf_printf appends, p is malloc'd (owner frees). */
typedef struct rm_sbuf {
    char *p;
    size_t len, cap;
} rm_sbuf;

void rm_sbuf_printf(rm_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends n bytes (any bytes, NULs included); p stays NUL-terminated. */
void rm_sbuf_append(rm_sbuf *b, const void *bytes, size_t n);

/* a followed by b, in a's (grown) buffer; frees b. Both malloc'd. */
char *rm_str_join_free(char *a, char *b);

#define RM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
