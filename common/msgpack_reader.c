/* msgpack_reader.c -- see msgpack_reader.h. Format: the MessagePack
 * specification (github.com/msgpack/msgpack/blob/master/spec.md). */
#include "msgpack_reader.h"

#include <string.h>

void rm_mp_init(rm_mp_reader *r, const void *buf, size_t len)
{
    r->p = buf;
    r->end = r->p + len;
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t x = 0;
    for (int i = 0; i < n; i++)
        x = x << 8 | p[i];
    return x;
}

/* The formats 0xc4..0xdf (fixext 0xd4..0xd8 aside: rm_mp_read takes them first):
 * what the value is, and how many bytes of length (bin, ext, str, array,
 * map) or of value (numbers) follow the header byte. The spec's table. */
typedef struct fmt {
    rm_mp_type type;
    int width;
} fmt;

#define FIXED_FIRST 0xc4
static const fmt fixed[] = {
    {RM_MP_BIN, 1},   {RM_MP_BIN, 2},   {RM_MP_BIN, 4},  /* 0xc4 bin 8/16/32 */
    {RM_MP_EXT, 1},   {RM_MP_EXT, 2},   {RM_MP_EXT, 4},  /* 0xc7 ext 8/16/32 */
    {RM_MP_FLOAT, 4}, {RM_MP_FLOAT, 8},                  /* 0xca float 32/64 */
    {RM_MP_UINT, 1},  {RM_MP_UINT, 2},  {RM_MP_UINT, 4}, /* 0xcc uint 8/16/32 */
    {RM_MP_UINT, 8},                                     /* 0xcf uint 64 */
    {RM_MP_INT, 1},   {RM_MP_INT, 2},   {RM_MP_INT, 4},  /* 0xd0 int 8/16/32 */
    {RM_MP_INT, 8},                                      /* 0xd3 int 64 */
    {RM_MP_NIL, 0},   {RM_MP_NIL, 0},   {RM_MP_NIL, 0},  /* 0xd4 fixext 1/2/4 (read apart) */
    {RM_MP_NIL, 0},   {RM_MP_NIL, 0},                    /* 0xd7 fixext 8/16 (read apart) */
    {RM_MP_STR, 1},   {RM_MP_STR, 2},   {RM_MP_STR, 4},  /* 0xd9 str 8/16/32 */
    {RM_MP_ARRAY, 2}, {RM_MP_ARRAY, 4},                  /* 0xdc array 16/32 */
    {RM_MP_MAP, 2},   {RM_MP_MAP, 4},                    /* 0xde map 16/32 */
};
_Static_assert(sizeof fixed / sizeof fixed[0] == 0xe0 - FIXED_FIRST, "one entry per format");

/* Sets the string-like payload (n bytes after the header) or fails. */
static rm_mp_result take_bytes(rm_mp_value *v, rm_mp_type t, const uint8_t *q, const uint8_t *end,
                               uint64_t n, const uint8_t **next)
{
    if (n > (uint64_t)(end - q))
        return RM_MP_TRUNCATED;
    v->type = t;
    v->v.bytes.p = q;
    v->v.bytes.n = (uint32_t)n;
    *next = q + n;
    return RM_MP_OK;
}

/* Container header: each element needs at least one byte, so a count that
 * cannot fit in what is left is refused before anyone trusts it. */
static rm_mp_result take_count(rm_mp_value *v, rm_mp_type t, const uint8_t *q, const uint8_t *end,
                               uint64_t n)
{
    uint64_t need = t == RM_MP_MAP ? 2 * n : n;
    if (need > (uint64_t)(end - q))
        return RM_MP_TRUNCATED;
    v->type = t;
    v->v.count = (uint32_t)n;
    return RM_MP_OK;
}

rm_mp_result rm_mp_read(rm_mp_reader *r, rm_mp_value *v)
{
    const uint8_t *p = r->p, *end = r->end;
    if (p >= end)
        return RM_MP_TRUNCATED;
    uint8_t c = *p++;
    const uint8_t *next = p;
    rm_mp_result rc = RM_MP_OK;
    if (c <= 0x7f) {
        v->type = RM_MP_UINT;
        v->v.u = c;
    } else if (c >= 0xe0) {
        v->type = RM_MP_INT;
        v->v.i = (int8_t)c;
    } else if (c <= 0x8f) {
        rc = take_count(v, RM_MP_MAP, p, end, c & 0x0f);
    } else if (c <= 0x9f) {
        rc = take_count(v, RM_MP_ARRAY, p, end, c & 0x0f);
    } else if (c <= 0xbf) {
        rc = take_bytes(v, RM_MP_STR, p, end, c & 0x1f, &next);
    } else if (c == 0xc0) {
        v->type = RM_MP_NIL;
    } else if (c == 0xc1) {
        return RM_MP_INVALID;
    } else if (c == 0xc2 || c == 0xc3) {
        v->type = RM_MP_BOOL;
        v->v.b = c == 0xc3;
    } else if (c >= 0xd4 && c <= 0xd8) { /* fixext 1/2/4/8/16: type byte + data */
        uint64_t n = (uint64_t)1 << (c - 0xd4);
        if (end - p < 1)
            return RM_MP_TRUNCATED;
        v->ext_type = (int8_t)p[0];
        rc = take_bytes(v, RM_MP_EXT, p + 1, end, n, &next);
    } else {
        const fmt *f = &fixed[c - FIXED_FIRST];
        int w = f->width;
        if (end - p < w)
            return RM_MP_TRUNCATED;
        uint64_t x = be(p, w);
        p += w;
        next = p;
        switch (f->type) {
        case RM_MP_BIN:
        case RM_MP_STR: rc = take_bytes(v, f->type, p, end, x, &next); break;
        case RM_MP_EXT:
            if (end - p < 1)
                return RM_MP_TRUNCATED;
            v->ext_type = (int8_t)p[0];
            rc = take_bytes(v, RM_MP_EXT, p + 1, end, x, &next);
            break;
        case RM_MP_ARRAY:
        case RM_MP_MAP: rc = take_count(v, f->type, p, end, x); break;
        case RM_MP_FLOAT:
            v->type = RM_MP_FLOAT;
            if (w == 4) {
                uint32_t bits = (uint32_t)x;
                float f32;
                memcpy(&f32, &bits, sizeof f32);
                v->v.f = f32;
            } else {
                memcpy(&v->v.f, &x, sizeof x);
            }
            break;
        case RM_MP_UINT:
            v->type = RM_MP_UINT;
            v->v.u = x;
            break;
        case RM_MP_INT: {
            /* Sign-extend from w bytes. */
            int shift = 64 - 8 * w;
            int64_t s = (int64_t)(x << shift) >> shift;
            if (s >= 0) {
                v->type = RM_MP_UINT;
                v->v.u = (uint64_t)s;
            } else {
                v->type = RM_MP_INT;
                v->v.i = s;
            }
            break;
        }
        default: return RM_MP_INVALID; /* unreachable: fixed holds no other type */
        }
    }
    if (rc != RM_MP_OK)
        return rc;
    r->p = next;
    return RM_MP_OK;
}

rm_mp_result rm_mp_skip(rm_mp_reader *r)
{
    /* Values still to skip. Every count was checked against the bytes left,
     * so this stays below twice the buffer's size. */
    uint64_t pending = 1;
    while (pending) {
        rm_mp_value v;
        rm_mp_result rc = rm_mp_read(r, &v);
        if (rc != RM_MP_OK)
            return rc;
        pending--;
        if (v.type == RM_MP_ARRAY)
            pending += v.v.count;
        else if (v.type == RM_MP_MAP)
            pending += 2 * (uint64_t)v.v.count;
    }
    return RM_MP_OK;
}

int rm_mp_str_eq(const rm_mp_value *v, const char *lit)
{
    size_t n = strlen(lit);
    return v->type == RM_MP_STR && v->v.bytes.n == n && (n == 0 || !memcmp(v->v.bytes.p, lit, n));
}

const char *rm_mp_strerror(rm_mp_result r)
{
    switch (r) {
    case RM_MP_OK: return "ok";
    case RM_MP_TRUNCATED: return "msgpack value runs past the end of the message";
    case RM_MP_INVALID: return "msgpack reserved byte 0xc1";
    }
    return "unknown msgpack result";
}
