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

/* The header byte's fixed part: how many bytes of length/value follow it. */
static int width_of(uint8_t c)
{
    switch (c) {
    case 0xc4: /* bin8 */
    case 0xc7: /* ext8 */
    case 0xcc: /* uint8 */
    case 0xd0: /* int8 */
    case 0xd9: /* str8 */ return 1;
    case 0xc5:
    case 0xc8:
    case 0xcd:
    case 0xd1:
    case 0xda:
    case 0xdc: /* array16 */
    case 0xde: /* map16 */ return 2;
    case 0xc6:
    case 0xc9:
    case 0xca: /* float32 */
    case 0xce:
    case 0xd2:
    case 0xdb:
    case 0xdd:
    case 0xdf: return 4;
    case 0xcb: /* float64 */
    case 0xcf:
    case 0xd3: return 8;
    default: return 0;
    }
}

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
        int w = width_of(c);
        if (end - p < w)
            return RM_MP_TRUNCATED;
        uint64_t x = be(p, w);
        p += w;
        next = p;
        switch (c) {
        case 0xc4:
        case 0xc5:
        case 0xc6: rc = take_bytes(v, RM_MP_BIN, p, end, x, &next); break;
        case 0xc7:
        case 0xc8:
        case 0xc9:
            if (end - p < 1)
                return RM_MP_TRUNCATED;
            v->ext_type = (int8_t)p[0];
            rc = take_bytes(v, RM_MP_EXT, p + 1, end, x, &next);
            break;
        case 0xca: {
            uint32_t bits = (uint32_t)x;
            float f;
            memcpy(&f, &bits, sizeof f);
            v->type = RM_MP_FLOAT;
            v->v.f = f;
            break;
        }
        case 0xcb:
            v->type = RM_MP_FLOAT;
            memcpy(&v->v.f, &x, sizeof x);
            break;
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf:
            v->type = RM_MP_UINT;
            v->v.u = x;
            break;
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3: {
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
        case 0xd9:
        case 0xda:
        case 0xdb: rc = take_bytes(v, RM_MP_STR, p, end, x, &next); break;
        case 0xdc:
        case 0xdd: rc = take_count(v, RM_MP_ARRAY, p, end, x); break;
        case 0xde:
        case 0xdf: rc = take_count(v, RM_MP_MAP, p, end, x); break;
        default: return RM_MP_INVALID; /* unreachable: every byte is covered above */
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
