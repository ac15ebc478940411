/* msgpack_reader.h -- a bounded, zero-copy MessagePack reader.
 *
 * A cursor over one buffer that reads a value's header (and a scalar's or
 * a string's payload) at a time; containers are walked by the caller.
 * Nothing is allocated: strings and binaries point into the buffer, which
 * must outlive them.
 *
 * Why not msgpack-c (Debian libmsgpack-dev, C library "msgpackc" 4.0): its
 * unpacker builds an object tree and allocates an array's or map's element
 * slots from the count in the header, before any element is read. A 5-byte
 * message (0xdd + a 32-bit count) makes it malloc tens of GiB; the C
 * library has no limit API (the C++ one does), so every decoder on an
 * untrusted socket would need a structural pre-walk -- this reader -- in
 * front of it anyway. See node/KV_EVENTS.md ("Dependencies").
 *
 * Bounds: a header whose declared length (str/bin/ext bytes, array
 * elements, map keys + values) cannot fit in the bytes left is refused as
 * truncated, so no count taken from the wire exceeds the buffer's size.
 * rm_mp_skip walks any nesting without recursion. */
#ifndef RM_MSGPACK_READER_H
#define RM_MSGPACK_READER_H

#include <stddef.h>
#include <stdint.h>

typedef struct rm_mp_reader {
    const uint8_t *p, *end;
} rm_mp_reader;

typedef enum {
    RM_MP_OK = 0,
    RM_MP_TRUNCATED, /* the buffer ends inside the value (or a count cannot fit) */
    RM_MP_INVALID,   /* the reserved byte 0xc1 */
} rm_mp_result;

typedef enum {
    RM_MP_NIL,
    RM_MP_BOOL,
    RM_MP_UINT, /* every integer >= 0, whatever its encoding (int8..int64 too) */
    RM_MP_INT,  /* every integer < 0 */
    RM_MP_FLOAT,
    RM_MP_STR,
    RM_MP_BIN,
    RM_MP_EXT,
    RM_MP_ARRAY, /* v.count elements follow */
    RM_MP_MAP,   /* v.count key/value pairs follow */
} rm_mp_type;

typedef struct rm_mp_value {
    rm_mp_type type;
    int8_t ext_type; /* RM_MP_EXT only */
    union {
        int b;
        uint64_t u;
        int64_t i;
        double f;
        uint32_t count;
        struct {
            const uint8_t *p;
            uint32_t n;
        } bytes; /* STR, BIN, EXT: into the buffer */
    } v;
} rm_mp_value;

void rm_mp_init(rm_mp_reader *r, const void *buf, size_t len);

/* Bytes not yet read. */
static inline size_t rm_mp_left(const rm_mp_reader *r)
{
    return (size_t)(r->end - r->p);
}

/* Reads one value's header into *v and advances past it (past the payload
 * too for STR/BIN/EXT). On error the reader does not move. */
rm_mp_result rm_mp_read(rm_mp_reader *r, rm_mp_value *v);

/* Skips one complete value, containers included. On error the reader is
 * left somewhere inside the value. */
rm_mp_result rm_mp_skip(rm_mp_reader *r);

/* 1 if v is a string equal to the NUL-terminated lit. */
int rm_mp_str_eq(const rm_mp_value *v, const char *lit);

const char *rm_mp_strerror(rm_mp_result r);

#endif
