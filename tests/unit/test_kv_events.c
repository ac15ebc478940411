/* test_kv_events.c -- the msgpack reader and the KV-event decoder.
 *
 * The payloads kv_vectors.h names are built as vLLM (0.9, 0.10, 0.11, a
 * map-envelope main, latest main) and SGLang (old, current) build them, by
 * tests/fuzz/make_kv_events.py; the "basic" scenario there is checked here
 * against one expectation in every style and hash type.
 *
 * Usage: test_kv_events CORPUS_DIR   (tests/fuzz/corpus/kv_events) */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kv_events.h"
#include "kv_vectors.h"
#include "msgpack_reader.h"

#define H1 0x0123456789ABCDEFull
#define H2 0xFEDCBA9876543210ull
#define H3 42ull

static const struct kv_vector *vec(const char *name)
{
    for (size_t i = 0; i < sizeof kv_vectors / sizeof kv_vectors[0]; i++)
        if (!strcmp(kv_vectors[i].name, name))
            return &kv_vectors[i];
    fprintf(stderr, "no vector %s\n", name);
    exit(1);
}

static rm_kv_result decode_vec(const char *name, rm_kv_batch *b)
{
    const struct kv_vector *v = vec(name);
    return rm_kv_decode_payload(v->data, v->len, b);
}

/* ---- the msgpack reader ---------------------------------------------------- */

static rm_mp_result read1(const void *buf, size_t n, rm_mp_value *v, size_t *used)
{
    rm_mp_reader r;
    rm_mp_init(&r, buf, n);
    rm_mp_result rc = rm_mp_read(&r, v);
    *used = n - rm_mp_left(&r);
    return rc;
}

static void test_mp_scalars(void)
{
    static const struct {
        const char *bytes;
        size_t n;
        rm_mp_type type;
        uint64_t u;
        int64_t i;
    } cases[] = {
        {"\x00", 1, RM_MP_UINT, 0, 0},
        {"\x7f", 1, RM_MP_UINT, 127, 0},
        {"\xe0", 1, RM_MP_INT, 0, -32},
        {"\xff", 1, RM_MP_INT, 0, -1},
        {"\xcc\xff", 2, RM_MP_UINT, 255, 0},
        {"\xcd\x01\x00", 3, RM_MP_UINT, 256, 0},
        {"\xce\xff\xff\xff\xff", 5, RM_MP_UINT, UINT32_MAX, 0},
        {"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, RM_MP_UINT, UINT64_MAX, 0},
        {"\xd0\x80", 2, RM_MP_INT, 0, -128},
        {"\xd0\x05", 2, RM_MP_UINT, 5, 0}, /* a positive int8 is an unsigned value */
        {"\xd1\x80\x00", 3, RM_MP_INT, 0, -32768},
        {"\xd2\xff\xff\xff\xfe", 5, RM_MP_INT, 0, -2},
        {"\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9, RM_MP_INT, 0, INT64_MIN},
        {"\xd3\x7f\xff\xff\xff\xff\xff\xff\xff", 9, RM_MP_UINT, INT64_MAX, 0},
        {"\xc0", 1, RM_MP_NIL, 0, 0},
        {"\xc3", 1, RM_MP_BOOL, 0, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        rm_mp_value v;
        size_t used;
        CHECK_EQ(read1(cases[k].bytes, cases[k].n, &v, &used), RM_MP_OK);
        CHECK_EQ(used, cases[k].n);
        CHECK_EQ(v.type, cases[k].type);
        if (v.type == RM_MP_UINT)
            CHECK(v.v.u == cases[k].u);
        if (v.type == RM_MP_INT)
            CHECK(v.v.i == cases[k].i);
        /* Every strict prefix is truncated, never read past. */
        for (size_t n = 0; n < cases[k].n; n++)
            CHECK_EQ(read1(cases[k].bytes, n, &v, &used), RM_MP_TRUNCATED);
    }
    rm_mp_value v;
    size_t used;
    CHECK_EQ(read1("\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00", 9, &v, &used), RM_MP_OK);
    CHECK(v.type == RM_MP_FLOAT && v.v.f == 1.5);
    CHECK_EQ(read1("\xca\x40\x20\x00\x00", 5, &v, &used), RM_MP_OK);
    CHECK(v.type == RM_MP_FLOAT && v.v.f == 2.5);
    CHECK_EQ(read1("\xc1", 1, &v, &used), RM_MP_INVALID);
    CHECK(strlen(rm_mp_strerror(RM_MP_INVALID)) > 0);
}

static void test_mp_strings_and_ext(void)
{
    rm_mp_value v;
    size_t used;
    CHECK_EQ(read1("\xa3"
                   "abc",
                   4, &v, &used),
             RM_MP_OK);
    CHECK(rm_mp_str_eq(&v, "abc") && !rm_mp_str_eq(&v, "ab") && used == 4);
    CHECK_EQ(read1("\xd9\x02hi", 4, &v, &used), RM_MP_OK);
    CHECK(rm_mp_str_eq(&v, "hi"));
    CHECK_EQ(read1("\xda\x00\x01x", 4, &v, &used), RM_MP_OK);
    CHECK(rm_mp_str_eq(&v, "x"));
    CHECK_EQ(read1("\xdb\x00\x00\x00\x00", 5, &v, &used), RM_MP_OK);
    CHECK(rm_mp_str_eq(&v, ""));
    CHECK_EQ(read1("\xc4\x02\x01\x02", 4, &v, &used), RM_MP_OK);
    CHECK(v.type == RM_MP_BIN && v.v.bytes.n == 2 && v.v.bytes.p[1] == 2);
    CHECK_EQ(read1("\xc5\x00\x01\x09", 4, &v, &used), RM_MP_OK);
    CHECK(v.type == RM_MP_BIN && v.v.bytes.n == 1);
    CHECK_EQ(read1("\xc6\x00\x00\x00\x01\x09", 6, &v, &used), RM_MP_OK);
    CHECK(v.type == RM_MP_BIN && v.v.bytes.n == 1 && used == 6);
    CHECK_EQ(read1("\xd4\x05\xaa", 3, &v, &used), RM_MP_OK);
    CHECK(v.type == RM_MP_EXT && v.ext_type == 5 && v.v.bytes.n == 1);
    CHECK_EQ(read1("\xd8\xff"
                   "0123456789abcdef",
                   18, &v, &used),
             RM_MP_OK);
    CHECK(v.type == RM_MP_EXT && v.ext_type == -1 && v.v.bytes.n == 16);
    CHECK_EQ(read1("\xc7\x01\x02\x03", 4, &v, &used), RM_MP_OK);
    CHECK(v.type == RM_MP_EXT && v.ext_type == 2 && v.v.bytes.n == 1 && used == 4);
    /* Lengths past the end. */
    CHECK_EQ(read1("\xa5"
                   "ab",
                   3, &v, &used),
             RM_MP_TRUNCATED);
    CHECK_EQ(read1("\xc6\xff\xff\xff\xff", 5, &v, &used), RM_MP_TRUNCATED);
    CHECK_EQ(read1("\xc9\x00\x00\x00\x01", 5, &v, &used), RM_MP_TRUNCATED);
}

/* Header counts are checked against the bytes left before anyone relies on
 * them: the 5-byte message that makes msgpack-c allocate tens of GiB is a
 * truncated value here. */
static void test_mp_containers(void)
{
    rm_mp_value v;
    size_t used;
    CHECK_EQ(read1("\xdd\xff\xff\xff\xff", 5, &v, &used), RM_MP_TRUNCATED);
    CHECK_EQ(read1("\xdf\x10\x00\x00\x00", 5, &v, &used), RM_MP_TRUNCATED);
    CHECK_EQ(read1("\x92\x01", 2, &v, &used), RM_MP_TRUNCATED);
    CHECK_EQ(read1("\x81\x01", 2, &v, &used), RM_MP_TRUNCATED); /* a map needs 2 per pair */
    CHECK_EQ(read1("\x92\x01\x02", 3, &v, &used), RM_MP_OK);
    CHECK(v.type == RM_MP_ARRAY && v.v.count == 2 && used == 1);
    CHECK_EQ(read1("\xdc\x00\x01\x00", 4, &v, &used), RM_MP_OK);
    CHECK(v.type == RM_MP_ARRAY && v.v.count == 1 && used == 3);
    CHECK_EQ(read1("\xde\x00\x01\x00\x00", 5, &v, &used), RM_MP_OK);
    CHECK(v.type == RM_MP_MAP && v.v.count == 1);

    /* skip: nested containers without recursion, exactly one value. */
    static const unsigned char nested[] = {0x92, 0x81, 0xa1, 'k',  0x93, 0x01, 0xc0,
                                           0x91, 0x90, 0xcd, 0x01, 0x00, 0x07};
    rm_mp_reader r;
    rm_mp_init(&r, nested, sizeof nested);
    CHECK_EQ(rm_mp_skip(&r), RM_MP_OK);
    CHECK_EQ(rm_mp_left(&r), 1);
    for (size_t n = 0; n < sizeof nested - 1; n++) {
        rm_mp_init(&r, nested, n);
        CHECK_EQ(rm_mp_skip(&r), RM_MP_TRUNCATED);
    }
    /* Deep nesting: 100000 one-element arrays around a nil. */
    size_t deep = 100000;
    unsigned char *d = malloc(deep + 1);
    REQUIRE(d);
    memset(d, 0x91, deep);
    d[deep] = 0xc0;
    rm_mp_init(&r, d, deep + 1);
    CHECK_EQ(rm_mp_skip(&r), RM_MP_OK);
    CHECK_EQ(rm_mp_left(&r), 0);
    free(d);
}

/* ---- the decoder on engine payloads ---------------------------------------- */

static void check_basic(const char *name)
{
    rm_kv_batch b;
    rm_kv_batch_init(&b);
    int no_rank = strstr(name, "0_9") || strstr(name, "sglang_old");
    int no_medium = no_rank;
    int has_name = strstr(name, "0_11") || strstr(name, "map") || strstr(name, "latest");
    rm_kv_result rc = decode_vec(name, &b);
    if (rc != RM_KV_OK)
        fprintf(stderr, "%s: %s\n", name, rm_kv_strerror(rc));
    CHECK_EQ(rc, RM_KV_OK);
    CHECK_EQ(b.n_events, 4);
    CHECK_EQ(b.n_unknown, 0);
    CHECK_EQ(b.n_unsupported, 0);
    CHECK(b.ts == 1700000000.25);
    CHECK_EQ(b.dp_rank, no_rank ? -1 : 3);
    if (b.n_events != 4) {
        rm_kv_batch_free(&b);
        return;
    }
    rm_kv_medium med = no_medium ? RM_KV_MEDIUM_NONE : RM_KV_MEDIUM_GPU;
    const rm_kv_event *e = b.events;
    CHECK_EQ(e[0].type, RM_KV_BLOCK_STORED);
    CHECK_EQ(e[0].n_hashes, 2);
    CHECK(e[0].hashes[0] == H1 && e[0].hashes[1] == H2);
    CHECK(!e[0].has_parent);
    CHECK_EQ(e[0].n_tokens, 32);
    for (uint32_t i = 0; i < 32 && i < e[0].n_tokens; i++)
        CHECK_EQ(e[0].tokens[i], i);
    CHECK_EQ(e[0].block_size, 16);
    CHECK(!e[0].has_lora_id && !e[0].lora_name && !e[0].has_extra_keys);
    CHECK_EQ(e[0].medium, med);
    CHECK_EQ(e[0].group_idx, -1);

    CHECK_EQ(e[1].type, RM_KV_BLOCK_STORED);
    CHECK(e[1].n_hashes == 1 && e[1].hashes[0] == H3);
    CHECK(e[1].has_parent && e[1].parent == H2);
    CHECK(e[1].n_tokens == 16 && e[1].tokens[0] == 1000 && e[1].tokens[15] == 1015);
    CHECK(e[1].has_lora_id && e[1].lora_id == 7);
    if (has_name)
        CHECK(e[1].lora_name && !strcmp(e[1].lora_name, "sql-lora"));
    else
        CHECK(!e[1].lora_name);

    CHECK_EQ(e[2].type, RM_KV_BLOCK_REMOVED);
    CHECK(e[2].n_hashes == 1 && e[2].hashes[0] == H1);
    CHECK_EQ(e[2].medium, med);
    CHECK_EQ(e[3].type, RM_KV_ALL_CLEARED);
    CHECK_EQ(e[3].n_hashes, 0);
    rm_kv_batch_free(&b);
}

static void test_basic_every_engine(void)
{
    int n = 0;
    for (size_t i = 0; i < sizeof kv_vectors / sizeof kv_vectors[0]; i++)
        if (!strncmp(kv_vectors[i].name, "basic_", 6)) {
            check_basic(kv_vectors[i].name);
            n++;
        }
    CHECK_EQ(n, 12); /* 5 vLLM styles x (uint, bytes) + 2 SGLang (int64) */
}

static void test_unknown_and_unsupported(void)
{
    rm_kv_batch b;
    rm_kv_batch_init(&b);
    const char *unknown[] = {"unknown_type_map", "unknown_type_array"};
    for (int k = 0; k < 2; k++) {
        CHECK_EQ(decode_vec(unknown[k], &b), RM_KV_OK);
        CHECK_EQ(b.n_unknown, 1);
        CHECK_EQ(b.n_events, 1);
        CHECK(b.n_events == 1 && b.events[0].type == RM_KV_BLOCK_STORED &&
              b.events[0].hashes[0] == 5);
    }
    CHECK_EQ(decode_vec("token_pairs_sglang", &b), RM_KV_OK);
    CHECK_EQ(b.n_unsupported, 1);
    CHECK_EQ(b.n_events, 1);
    CHECK(b.n_events == 1 && b.events[0].n_tokens == 16 && b.events[0].tokens[15] == 15);
    rm_kv_batch_free(&b);
}

static void test_groups_media_extra(void)
{
    rm_kv_batch b;
    rm_kv_batch_init(&b);
    CHECK_EQ(decode_vec("group1_and_cpu_map", &b), RM_KV_OK);
    REQUIRE(b.n_events == 3);
    CHECK_EQ(b.events[0].group_idx, 1);
    CHECK_EQ(b.events[0].medium, RM_KV_MEDIUM_GPU);
    CHECK_EQ(b.events[1].medium, RM_KV_MEDIUM_CPU);
    CHECK_EQ(b.events[1].n_tokens, 0); /* vLLM's offload events carry no tokens */
    CHECK_EQ(b.events[1].group_idx, -1);
    CHECK_EQ(b.events[2].type, RM_KV_BLOCK_REMOVED);
    CHECK_EQ(b.events[2].medium, RM_KV_MEDIUM_CPU);
    CHECK_EQ(b.events[2].group_idx, 0);

    CHECK_EQ(decode_vec("group1_array", &b), RM_KV_OK);
    REQUIRE(b.n_events == 2);
    CHECK_EQ(b.events[0].group_idx, 1);
    CHECK_EQ(b.events[1].group_idx, 1);
    CHECK(!b.events[0].has_extra_keys);

    CHECK_EQ(decode_vec("extra_keys_map", &b), RM_KV_OK);
    REQUIRE(b.n_events == 1);
    CHECK(b.events[0].has_extra_keys);
    CHECK_EQ(decode_vec("salted_sglang", &b), RM_KV_OK);
    REQUIRE(b.n_events == 1);
    CHECK(b.events[0].has_extra_keys);
    CHECK(b.events[0].hashes[0] == 5 && b.events[0].n_tokens == 16);

    CHECK_EQ(decode_vec("map_envelope_extra", &b), RM_KV_OK);
    REQUIRE(b.n_events == 1);
    CHECK(b.ts == 12.5);
    CHECK_EQ(b.dp_rank, 1);
    CHECK(b.events[0].has_parent && b.events[0].parent == 77);
    CHECK_EQ(b.events[0].medium, RM_KV_MEDIUM_NONE);

    CHECK_EQ(decode_vec("hash_extremes", &b), RM_KV_OK);
    REQUIRE(b.n_events == 1 && b.events[0].n_hashes == 6);
    const uint64_t *h = b.events[0].hashes;
    CHECK(h[0] == 0 && h[1] == UINT64_MAX && h[2] == UINT64_MAX);
    CHECK(h[3] == 0x8000000000000000ull);
    CHECK(h[4] == 0x08090a0b0c0d0e0full); /* a 16-byte hash: its low 8 bytes */
    CHECK(h[5] == 7);

    CHECK_EQ(decode_vec("empty", &b), RM_KV_OK);
    CHECK_EQ(b.n_events, 0);
    rm_kv_batch_free(&b);
}

static void test_hash_bytes(void)
{
    uint8_t h[32];
    for (int i = 0; i < 32; i++)
        h[i] = (uint8_t)i;
    CHECK(rm_kv_hash_bytes(h, 32) == 0x18191a1b1c1d1e1full);
    CHECK(rm_kv_hash_bytes(h + 30, 2) == 0x1e1f);
    CHECK(rm_kv_hash_bytes(h, 0) == 0);
}

/* ---- malformed input --------------------------------------------------------- */

static void test_truncations_and_trailing(void)
{
    rm_kv_batch b;
    rm_kv_batch_init(&b);
    for (size_t i = 0; i < sizeof kv_vectors / sizeof kv_vectors[0]; i++) {
        const struct kv_vector *v = &kv_vectors[i];
        int bad = 0;
        for (size_t n = 0; n < v->len; n++)
            bad += rm_kv_decode_payload(v->data, n, &b) != RM_KV_ERR_MSGPACK;
        CHECK_EQ(bad, 0);
        CHECK_EQ(b.n_events, 0);
        unsigned char *more = malloc(v->len + 1);
        REQUIRE(more);
        memcpy(more, v->data, v->len);
        more[v->len] = 0xc0;
        CHECK_EQ(rm_kv_decode_payload(more, v->len + 1, &b), RM_KV_ERR_MSGPACK);
        free(more);
    }
    rm_kv_batch_free(&b);
}

static rm_kv_result dec_bytes(const char *bytes, size_t n)
{
    rm_kv_batch b;
    rm_kv_batch_init(&b);
    rm_kv_result rc = rm_kv_decode_payload(bytes, n, &b);
    rm_kv_batch_free(&b);
    return rc;
}
#define DEC(lit) dec_bytes(lit, sizeof lit - 1)

static void test_schema_errors(void)
{
    CHECK_EQ(DEC("\xa1x"), RM_KV_ERR_SCHEMA);            /* a string */
    CHECK_EQ(DEC("\x91\x01"), RM_KV_ERR_SCHEMA);         /* [ts] only */
    CHECK_EQ(DEC("\x92\xa1x\x90"), RM_KV_ERR_SCHEMA);    /* ts a string */
    CHECK_EQ(DEC("\x92\x01\x01"), RM_KV_ERR_SCHEMA);     /* events not an array */
    CHECK_EQ(DEC("\x93\x01\x90\xff"), RM_KV_ERR_SCHEMA); /* dp rank -1 */
    CHECK_EQ(DEC("\x81\xa2ts\x01"), RM_KV_ERR_SCHEMA);   /* map without events */
    CHECK_EQ(DEC("\x82\xa6"
                 "events\x90\xa6"
                 "events\x90"),
             RM_KV_ERR_SCHEMA);                              /* twice */
    CHECK_EQ(DEC("\x81\x01\x90"), RM_KV_ERR_SCHEMA);         /* a key not a string */
    CHECK_EQ(DEC("\x92\x01\x91\x01"), RM_KV_ERR_SCHEMA);     /* an event that is an int */
    CHECK_EQ(DEC("\x92\x01\x91\x90"), RM_KV_ERR_SCHEMA);     /* an empty event */
    CHECK_EQ(DEC("\x92\x01\x91\x91\x01"), RM_KV_ERR_SCHEMA); /* a tag not a string */
    /* BlockStored with too few fields, then with block_size 0 */
    CHECK_EQ(DEC("\x92\x01\x91\x94\xab"
                 "BlockStored\x90\xc0\x90"),
             RM_KV_ERR_SCHEMA);
    CHECK_EQ(DEC("\x92\x01\x91\x95\xab"
                 "BlockStored\x90\xc0\x90\x00"),
             RM_KV_ERR_SCHEMA);
    CHECK_EQ(DEC("\x92\x01\x91\x95\xab"
                 "BlockStored\x90\xc0\x90\x10"),
             RM_KV_OK);
    /* a hash that is a string, a nil, an empty bin */
    CHECK_EQ(DEC("\x92\x01\x91\x92\xac"
                 "BlockRemoved\x91\xa1x"),
             RM_KV_ERR_SCHEMA);
    CHECK_EQ(DEC("\x92\x01\x91\x92\xac"
                 "BlockRemoved\x91\xc0"),
             RM_KV_ERR_SCHEMA);
    CHECK_EQ(DEC("\x92\x01\x91\x92\xac"
                 "BlockRemoved\x91\xc4\x00"),
             RM_KV_ERR_SCHEMA);
    CHECK_EQ(DEC("\x92\x01\x91\x92\xac"
                 "BlockRemoved\x91\xc4\x01\x01"),
             RM_KV_OK);
    /* medium a number, group_idx negative */
    CHECK_EQ(DEC("\x92\x01\x91\x93\xac"
                 "BlockRemoved\x90\x01"),
             RM_KV_ERR_SCHEMA);
    CHECK_EQ(DEC("\x92\x01\x91\x94\xac"
                 "BlockRemoved\x90\xc0\xff"),
             RM_KV_ERR_SCHEMA);
    /* keyed: no type, a type that is not a string, a BlockStored without token_ids */
    CHECK_EQ(DEC("\x92\x01\x91\x81\xa1x\x01"), RM_KV_ERR_SCHEMA);
    CHECK_EQ(DEC("\x92\x01\x91\x81\xa4type\x01"), RM_KV_ERR_SCHEMA);
    CHECK_EQ(DEC("\x92\x01\x91\x83\xa4type\xab"
                 "BlockStored\xac"
                 "block_hashes\x90\xaa"
                 "block_size\x10"),
             RM_KV_ERR_SCHEMA);
    CHECK_EQ(DEC("\x92\x01\x91\x81\xa4type\xac"
                 "BlockRemoved"),
             RM_KV_ERR_SCHEMA);
    CHECK_EQ(DEC("\x92\x01\x91\x81\xa4type\xb0"
                 "AllBlocksCleared"),
             RM_KV_OK);
    /* an unknown keyed type is skipped whatever its fields hold */
    CHECK_EQ(DEC("\x92\x01\x91\x82\xac"
                 "block_hashes\xa1x\xa4type\xa3New"),
             RM_KV_OK);
}

static void test_limits(void)
{
    /* A LoRA name over RM_KV_MAX_NAME. */
    static const char head[] = "\x92\x01\x91\x98\xab"
                               "BlockStored\x90\xc0\x90\x10\xc0\xc0\xda\x04\x01";
    size_t h = sizeof head - 1;
    unsigned char *p = malloc(h + 1025);
    REQUIRE(p);
    memcpy(p, head, h);
    memset(p + h, 'a', 1025);
    rm_kv_batch b;
    rm_kv_batch_init(&b);
    CHECK_EQ(rm_kv_decode_payload(p, h + 1025, &b), RM_KV_ERR_LIMIT);
    p[h - 2] = 0x04, p[h - 1] = 0x00; /* exactly 1024: accepted */
    CHECK_EQ(rm_kv_decode_payload(p, h + 1024, &b), RM_KV_OK);
    CHECK(b.n_events == 1 && strlen(b.events[0].lora_name) == 1024);
    free(p);

    /* More hashes, tokens or events than the caps, each in a payload of a
     * few MiB: refused before anything is allocated for them. */
    size_t n, big = RM_KV_MAX_TOKENS + 64;
    p = malloc(big);
    REQUIRE(p);
    /* BlockRemoved with RM_KV_MAX_HASHES + 1 hashes */
    n = 0;
    memcpy(p,
           "\x92\x01\x91\x92\xac"
           "BlockRemoved\xdd",
           18);
    n = 18;
    uint32_t cnt = RM_KV_MAX_HASHES + 1;
    p[n++] = cnt >> 24, p[n++] = cnt >> 16, p[n++] = cnt >> 8, p[n++] = cnt;
    memset(p + n, 0x01, cnt);
    n += cnt;
    CHECK_EQ(rm_kv_decode_payload(p, n, &b), RM_KV_ERR_LIMIT);
    CHECK_EQ(rm_kv_decode_payload(p, n - 1, &b), RM_KV_ERR_MSGPACK); /* one short: truncated */
    /* BlockStored with RM_KV_MAX_TOKENS + 1 tokens */
    memcpy(p,
           "\x92\x01\x91\x95\xab"
           "BlockStored\x90\xc0\xdd",
           19);
    n = 19;
    cnt = RM_KV_MAX_TOKENS + 1;
    p[n++] = cnt >> 24, p[n++] = cnt >> 16, p[n++] = cnt >> 8, p[n++] = cnt;
    memset(p + n, 0x01, cnt);
    n += cnt;
    p[n++] = 0x10;
    CHECK_EQ(rm_kv_decode_payload(p, n, &b), RM_KV_ERR_LIMIT);
    /* RM_KV_MAX_EVENTS + 1 AllBlocksCleared */
    memcpy(p, "\x92\x01\xdd", 3);
    n = 3;
    cnt = RM_KV_MAX_EVENTS + 1;
    p[n++] = cnt >> 24, p[n++] = cnt >> 16, p[n++] = cnt >> 8, p[n++] = cnt;
    for (uint32_t i = 0; i < cnt; i++) {
        memcpy(p + n,
               "\x91\xb0"
               "AllBlocksCleared",
               18);
        n += 18;
    }
    CHECK_EQ(rm_kv_decode_payload(p, n, &b), RM_KV_ERR_LIMIT);
    /* ... and exactly RM_KV_MAX_EVENTS is fine */
    p[6] = (uint8_t)(cnt - 1);
    CHECK_EQ(rm_kv_decode_payload(p, n - 18, &b), RM_KV_OK);
    CHECK_EQ(b.n_events, RM_KV_MAX_EVENTS);
    /* A payload over RM_KV_MAX_PAYLOAD is not even parsed. */
    CHECK_EQ(rm_kv_decode_payload(p, (size_t)RM_KV_MAX_PAYLOAD + 1, &b), RM_KV_ERR_LIMIT);
    free(p);

    /* The hostile 5-byte header: refused, nothing allocated. */
    rm_kv_batch_free(&b);
    CHECK_EQ(rm_kv_decode_payload("\x92\x01\xdd\xff\xff\xff\xff", 7, &b), RM_KV_ERR_MSGPACK);
    CHECK_EQ(b.bytes, 0);
    CHECK(b.events == NULL && b.hash_buf == NULL);
    rm_kv_batch_free(&b);
}

/* A batch decoded into again keeps its arrays when they are big enough and
 * replaces them when not; the old contents are gone either way. */
static void test_batch_reuse(void)
{
    rm_kv_batch b;
    rm_kv_batch_init(&b);
    CHECK_EQ(decode_vec("basic_vllm_latest_uint", &b), RM_KV_OK);
    size_t bytes = b.bytes;
    CHECK(bytes >= 4 * sizeof(rm_kv_event) + 3 * 8 + 48 * 4);
    CHECK_EQ(decode_vec("empty", &b), RM_KV_OK);
    CHECK_EQ(b.n_events, 0);
    CHECK_EQ(b.bytes, bytes);
    CHECK_EQ(decode_vec("hash_extremes", &b), RM_KV_OK);
    CHECK(b.bytes > bytes); /* 6 hashes did not fit in 3 */
    CHECK_EQ(DEC("\x92\x01\x91\x01"), RM_KV_ERR_SCHEMA);
    CHECK_EQ(rm_kv_decode_payload("\x92\x01\x91\x01", 4, &b), RM_KV_ERR_SCHEMA);
    CHECK_EQ(b.n_events, 0);
    rm_kv_batch_free(&b);
}

/* ---- frames and sequence rules ------------------------------------------------ */

static void test_frames(void)
{
    const struct kv_vector *v = vec("basic_vllm_latest_uint");
    rm_kv_frame f[4] = {{"kv", 2}, {"\0\0\0\0\0\0\x01\x02", 8}, {v->data, v->len}};
    rm_kv_batch b;
    rm_kv_batch_init(&b);
    uint64_t seq = 0;
    CHECK_EQ(rm_kv_decode_pub(f, 3, &b, &seq), RM_KV_OK);
    CHECK(seq == 0x102 && b.seq == 0x102 && b.n_events == 4);
    CHECK_EQ(rm_kv_decode_pub(f, 2, &b, NULL), RM_KV_ERR_FRAMES);
    CHECK_EQ(b.n_events, 0);
    rm_kv_frame shortseq[3] = {{"", 0}, {"\0\0\0\0\0\0\x01", 7}, {v->data, v->len}};
    CHECK_EQ(rm_kv_decode_pub(shortseq, 3, &b, NULL), RM_KV_ERR_FRAMES);
    /* A bad payload still tells its sequence number. */
    rm_kv_frame badpay[3] = {{"", 0}, {"\0\0\0\0\0\0\0\x09", 8}, {"\xc1", 1}};
    seq = 0;
    CHECK_EQ(rm_kv_decode_pub(badpay, 3, &b, &seq), RM_KV_ERR_MSGPACK);
    CHECK_EQ(seq, 9);

    rm_kv_frame pay;
    rm_kv_frame old[3] = {{"", 0}, {"\0\0\0\0\0\0\0\x05", 8}, {v->data, v->len}};
    CHECK_EQ(rm_kv_parse_replay(old, 3, &seq, &pay), RM_KV_OK);
    CHECK(seq == 5 && pay.data == v->data && pay.len == v->len);
    rm_kv_frame newer[4] = {{"", 0}, {"topic", 5}, {"\0\0\0\0\0\0\0\x06", 8}, {"x", 1}};
    CHECK_EQ(rm_kv_parse_replay(newer, 4, &seq, &pay), RM_KV_OK);
    CHECK(seq == 6 && pay.len == 1);
    rm_kv_frame end_old[3] = {{"", 0}, {"\xff\xff\xff\xff\xff\xff\xff\xff", 8}, {"", 0}};
    CHECK_EQ(rm_kv_parse_replay(end_old, 3, &seq, &pay), RM_KV_OK);
    CHECK(seq == RM_KV_SEQ_END && pay.len == 0);
    rm_kv_frame end_new[4] = {{"", 0}, {"", 0}, {"\xff\xff\xff\xff\xff\xff\xff\xff", 8}, {"", 0}};
    CHECK_EQ(rm_kv_parse_replay(end_new, 4, &seq, &pay), RM_KV_OK);
    CHECK(seq == RM_KV_SEQ_END);
    rm_kv_frame nodelim[3] = {{"x", 1}, {"\0\0\0\0\0\0\0\x05", 8}, {"", 0}};
    CHECK_EQ(rm_kv_parse_replay(nodelim, 3, &seq, &pay), RM_KV_ERR_FRAMES);
    CHECK_EQ(rm_kv_parse_replay(old, 2, &seq, &pay), RM_KV_ERR_FRAMES);
    CHECK(strlen(rm_kv_strerror(RM_KV_ERR_FRAMES)) > 0);
    rm_kv_batch_free(&b);
}

static void test_seq_rules(void)
{
    CHECK_EQ(rm_kv_seq_classify(0, 0, 0), RM_KV_SEQ_NEXT);
    CHECK_EQ(rm_kv_seq_classify(0, 0, 5), RM_KV_SEQ_GAP); /* joined late: 0..4 to replay */
    CHECK_EQ(rm_kv_seq_classify(7, 7, 7), RM_KV_SEQ_NEXT);
    CHECK_EQ(rm_kv_seq_classify(7, 7, 9), RM_KV_SEQ_GAP);
    CHECK_EQ(rm_kv_seq_classify(7, 7, 0), RM_KV_SEQ_RESTART);
    CHECK_EQ(rm_kv_seq_classify(7, 7, 6), RM_KV_SEQ_RESTART);
    CHECK_EQ(rm_kv_seq_classify(UINT64_MAX - 1, UINT64_MAX - 1, 3), RM_KV_SEQ_RESTART);
    /* A replay poll took 5 and 6 before their live copies came: those are
     * skipped, anything below what the live stream showed is a restart. */
    CHECK_EQ(rm_kv_seq_classify(7, 5, 5), RM_KV_SEQ_REPLAYED);
    CHECK_EQ(rm_kv_seq_classify(7, 5, 6), RM_KV_SEQ_REPLAYED);
    CHECK_EQ(rm_kv_seq_classify(7, 5, 4), RM_KV_SEQ_RESTART);
    CHECK_EQ(rm_kv_seq_classify(7, 5, 7), RM_KV_SEQ_NEXT);
    CHECK_EQ(rm_kv_replay_classify(4, 4), RM_KV_REPLAY_TAKE);
    CHECK_EQ(rm_kv_replay_classify(4, 2), RM_KV_REPLAY_SKIP);
    CHECK_EQ(rm_kv_replay_classify(4, 5), RM_KV_REPLAY_HOLE);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    kvv_load(argv[1]);
    RUN(test_mp_scalars);
    RUN(test_mp_strings_and_ext);
    RUN(test_mp_containers);
    RUN(test_basic_every_engine);
    RUN(test_unknown_and_unsupported);
    RUN(test_groups_media_extra);
    RUN(test_hash_bytes);
    RUN(test_truncations_and_trailing);
    RUN(test_schema_errors);
    RUN(test_limits);
    RUN(test_batch_reuse);
    RUN(test_frames);
    RUN(test_seq_rules);
    kvv_free();
    return rm_t_report();
}
