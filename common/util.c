#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <time.h>

static void oom(size_t n)
{
    fprintf(stderr, "radixmesh: out of memory allocating %zu bytes\n", n);
    abort();
}

void *rm_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *rm_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *rm_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

void *rm_xgrow_full(void *p, size_t n, size_t *cap, size_t elem, size_t first)
{
    size_t want = *cap ? *cap * 2 : first;
    if (want <= n || want > SIZE_MAX / elem) {
        fprintf(stderr, "radixmesh: an array of %zu-byte elements cannot grow past %zu\n", elem, n);
        abort();
    }
    *cap = want;
    return rm_xrealloc(p, want * elem);
}

char *rm_xstrndup(const char *s, size_t n)
{
    char *d = rm_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

uint64_t rm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t rm_now_ms(void)
{
    return rm_now_ns() / 1000000ULL;
}

uint64_t rm_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000ULL + (uint64_t)ts.tv_nsec / 1000000ULL;
}

uint64_t rm_hash_u32s(const uint32_t *v, size_t n, uint64_t seed)
{
    /* Two tokens per 64-bit lane step; multiply-xorshift keeps it a few
     * cycles per token while every input bit reaches every output bit
     * through the final rm_mix64. */
    uint64_t h = seed ^ (0x9e3779b97f4a7c15ULL * (n + 1));
    size_t i = 0;
    for (; i + 1 < n; i += 2) {
        uint64_t w = (uint64_t)v[i] | ((uint64_t)v[i + 1] << 32);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    if (i < n) {
        h = (h ^ v[i]) * 0xc4ceb9fe1a85ec53ULL;
        h ^= h >> 32;
    }
    return rm_mix64(h);
}

void rm_sbuf_printf(rm_sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)n + 256;
        b->p = rm_xrealloc(b->p, b->cap);
    }
}

void rm_sbuf_append(rm_sbuf *b, const void *bytes, size_t n)
{
    if (!b->p || b->cap - b->len <= n) {
        b->cap = b->cap * 2 + n + 256;
        b->p = rm_xrealloc(b->p, b->cap);
    }
    if (n)
        memcpy(b->p + b->len, bytes, n);
    b->len += n;
    b->p[b->len] = '\0';
}

char *rm_str_join_free(char *a, char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    a = rm_xrealloc(a, la + lb + 1);
    memcpy(a + la, b, lb + 1);
    free(b);
    return a;
}
