/* kv_events.c -- see kv_events.h; the wire format is in node/KV_EVENTS.md.
 *
 * A payload is decoded twice by the same code: the first pass validates it
 * and counts events, hashes, tokens and name bytes; the batch's arrays are
 * then sized exactly and the second pass fills them. So the memory a batch
 * takes is what it holds, never a count announced on the wire. */
#include "kv_events.h"

#include "msgpack_reader.h"

#include <stdlib.h>
#include <string.h>

const char *rm_kv_strerror(rm_kv_result r)
{
    switch (r) {
    case RM_KV_OK: return "ok";
    case RM_KV_ERR_FRAMES:
        return "not a KV event message (wrong frames, or a sequence frame not 8 bytes)";
    case RM_KV_ERR_MSGPACK:
        return "payload is not valid MessagePack (truncated, reserved byte or trailing bytes)";
    case RM_KV_ERR_SCHEMA:
        return "payload is not a KV event batch (a field of the wrong type or missing)";
    case RM_KV_ERR_LIMIT:
        return "KV event batch over a size cap (payload, events, hashes, tokens or name)";
    case RM_KV_ERR_NOMEM: return "out of memory decoding a KV event batch";
    }
    return "unknown KV event result";
}

uint64_t rm_kv_hash_bytes(const uint8_t *p, size_t n)
{
    size_t from = n > 8 ? n - 8 : 0;
    uint64_t x = 0;
    for (size_t i = from; i < n; i++)
        x = x << 8 | p[i];
    return x;
}

void rm_kv_batch_init(rm_kv_batch *b)
{
    memset(b, 0, sizeof *b);
    b->dp_rank = -1;
}

void rm_kv_batch_free(rm_kv_batch *b)
{
    free(b->events);
    free(b->hash_buf);
    free(b->token_buf);
    free(b->name_buf);
    uint64_t seq = b->seq;
    rm_kv_batch_init(b);
    b->seq = seq;
}

/* ---- decoding ------------------------------------------------------------ */

typedef struct dec {
    rm_mp_reader r;
    rm_kv_batch *b;
    int fill; /* 0: validate and count; 1: write into b's arrays */
    size_t n_events, n_hashes, n_tokens, n_name;
    uint32_t n_unknown, n_unsupported;
} dec;

#define TRY(x)                                                                                     \
    do {                                                                                           \
        rm_kv_result rc_ = (x);                                                                    \
        if (rc_ != RM_KV_OK)                                                                       \
            return rc_;                                                                            \
    } while (0)

static rm_kv_result rd(dec *d, rm_mp_value *v)
{
    return rm_mp_read(&d->r, v) == RM_MP_OK ? RM_KV_OK : RM_KV_ERR_MSGPACK;
}

static rm_kv_result skip(dec *d)
{
    return rm_mp_skip(&d->r) == RM_MP_OK ? RM_KV_OK : RM_KV_ERR_MSGPACK;
}

/* Skips the elements of a container whose header v was just read. */
static rm_kv_result skip_body(dec *d, const rm_mp_value *v)
{
    uint64_t n = v->type == RM_MP_ARRAY ? v->v.count
                 : v->type == RM_MP_MAP ? 2 * (uint64_t)v->v.count
                                        : 0;
    for (uint64_t i = 0; i < n; i++)
        TRY(skip(d));
    return RM_KV_OK;
}

static rm_kv_result hash_of(const rm_mp_value *v, uint64_t *h)
{
    switch (v->type) {
    case RM_MP_UINT: *h = v->v.u; return RM_KV_OK;
    case RM_MP_INT: /* SGLang: signed int64, the same 64 bits */
        *h = (uint64_t)v->v.i;
        return RM_KV_OK;
    case RM_MP_BIN:
        if (v->v.bytes.n == 0)
            return RM_KV_ERR_SCHEMA;
        *h = rm_kv_hash_bytes(v->v.bytes.p, v->v.bytes.n);
        return RM_KV_OK;
    default: return RM_KV_ERR_SCHEMA;
    }
}

/* A list's header: its length, which with the `used` elements the batch's
 * earlier lists hold must stay within max (the batch's cap). */
static rm_kv_result list(dec *d, size_t used, size_t max, uint32_t *n)
{
    rm_mp_value v;
    TRY(rd(d, &v));
    if (v.type != RM_MP_ARRAY)
        return RM_KV_ERR_SCHEMA;
    if (used + v.v.count > max)
        return RM_KV_ERR_LIMIT;
    *n = v.v.count;
    return RM_KV_OK;
}

static rm_kv_result hash_list(dec *d, const uint64_t **out, uint32_t *n)
{
    TRY(list(d, d->n_hashes, RM_KV_MAX_HASHES, n));
    uint64_t *dst = d->fill && *n ? d->b->hash_buf + d->n_hashes : NULL;
    for (uint32_t i = 0; i < *n; i++) {
        rm_mp_value e;
        uint64_t h;
        TRY(rd(d, &e));
        TRY(hash_of(&e, &h));
        if (dst)
            dst[i] = h;
    }
    *out = dst;
    d->n_hashes += *n;
    return RM_KV_OK;
}

/* Token ids: unsigned 32-bit integers. Anything else in the list makes the
 * event unusable (*bad), not the batch malformed: SGLang's DSv4 path sends
 * (token, next_token) pairs. */
static rm_kv_result token_list(dec *d, const uint32_t **out, uint32_t *n, int *bad)
{
    TRY(list(d, d->n_tokens, RM_KV_MAX_TOKENS, n));
    uint32_t *dst = d->fill && *n ? d->b->token_buf + d->n_tokens : NULL;
    for (uint32_t i = 0; i < *n; i++) {
        rm_mp_value e;
        TRY(rd(d, &e));
        if (e.type == RM_MP_UINT && e.v.u <= UINT32_MAX) {
            if (dst)
                dst[i] = (uint32_t)e.v.u;
        } else {
            *bad = 1;
            TRY(skip_body(d, &e));
        }
    }
    *out = dst;
    d->n_tokens += *n;
    return RM_KV_OK;
}

static rm_kv_result opt_hash(dec *d, uint64_t *h, uint8_t *has)
{
    rm_mp_value v;
    TRY(rd(d, &v));
    *has = v.type != RM_MP_NIL;
    return *has ? hash_of(&v, h) : RM_KV_OK;
}

static rm_kv_result opt_int(dec *d, int64_t *x, uint8_t *has)
{
    rm_mp_value v;
    TRY(rd(d, &v));
    *has = 1;
    if (v.type == RM_MP_NIL)
        *has = 0;
    else if (v.type == RM_MP_UINT && v.v.u <= INT64_MAX)
        *x = (int64_t)v.v.u;
    else if (v.type == RM_MP_INT)
        *x = v.v.i;
    else
        return RM_KV_ERR_SCHEMA;
    return RM_KV_OK;
}

static rm_kv_result block_size(dec *d, uint32_t *bs)
{
    rm_mp_value v;
    TRY(rd(d, &v));
    if (v.type != RM_MP_UINT || v.v.u < 1 || v.v.u > RM_KV_MAX_BLOCK_SIZE)
        return RM_KV_ERR_SCHEMA;
    *bs = (uint32_t)v.v.u;
    return RM_KV_OK;
}

/* An optional index (a KV cache group, a data-parallel rank): nil is -1,
 * anything else must be an integer in [0, max]. */
static rm_kv_result opt_index(dec *d, int64_t max, int64_t *x)
{
    rm_mp_value v;
    TRY(rd(d, &v));
    if (v.type == RM_MP_NIL)
        *x = -1;
    else if (v.type == RM_MP_UINT && v.v.u <= (uint64_t)max)
        *x = (int64_t)v.v.u;
    else
        return RM_KV_ERR_SCHEMA;
    return RM_KV_OK;
}

static rm_kv_result group(dec *d, int32_t *g)
{
    int64_t x;
    TRY(opt_index(d, INT32_MAX, &x));
    *g = (int32_t)x;
    return RM_KV_OK;
}

static rm_kv_medium medium_of(const rm_mp_value *v)
{
    static const struct {
        const char *s;
        rm_kv_medium m;
    } names[] = {{"GPU", RM_KV_MEDIUM_GPU},        {"CPU", RM_KV_MEDIUM_CPU},
                 {"CPU_PINNED", RM_KV_MEDIUM_CPU}, {"DISK", RM_KV_MEDIUM_DISK},
                 {"STORAGE", RM_KV_MEDIUM_DISK},   {"EXTERNAL", RM_KV_MEDIUM_EXTERNAL}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (rm_mp_str_eq(v, names[i].s))
            return names[i].m;
    return RM_KV_MEDIUM_OTHER;
}

static rm_kv_result medium(dec *d, rm_kv_medium *m)
{
    rm_mp_value v;
    TRY(rd(d, &v));
    if (v.type == RM_MP_NIL)
        *m = RM_KV_MEDIUM_NONE;
    else if (v.type == RM_MP_STR)
        *m = medium_of(&v);
    else
        return RM_KV_ERR_SCHEMA;
    return RM_KV_OK;
}

/* A string already read as v: copied NUL-terminated into the name arena. */
static rm_kv_result name_from(dec *d, const rm_mp_value *v, const char **out)
{
    if (v->v.bytes.n > RM_KV_MAX_NAME)
        return RM_KV_ERR_LIMIT;
    if (d->fill) {
        char *dst = d->b->name_buf + d->n_name;
        memcpy(dst, v->v.bytes.p, v->v.bytes.n);
        dst[v->v.bytes.n] = '\0';
        *out = dst;
    }
    d->n_name += v->v.bytes.n + 1;
    return RM_KV_OK;
}

/* vLLM's extra_keys: one entry per block, nil when the block's hash covers
 * only its tokens. Any other entry (or an extra_keys of another shape)
 * means it covers more. */
static rm_kv_result extra_keys(dec *d, uint8_t *has)
{
    rm_mp_value v;
    TRY(rd(d, &v));
    if (v.type == RM_MP_NIL)
        return RM_KV_OK;
    if (v.type != RM_MP_ARRAY) {
        *has = 1;
        return skip_body(d, &v);
    }
    for (uint32_t i = 0; i < v.v.count; i++) {
        rm_mp_value e;
        TRY(rd(d, &e));
        if (e.type != RM_MP_NIL) {
            *has = 1;
            TRY(skip_body(d, &e));
        }
    }
    return RM_KV_OK;
}

static rm_kv_event_type type_of(const rm_mp_value *tag)
{
    if (rm_mp_str_eq(tag, "BlockStored"))
        return RM_KV_BLOCK_STORED;
    if (rm_mp_str_eq(tag, "BlockRemoved"))
        return RM_KV_BLOCK_REMOVED;
    if (rm_mp_str_eq(tag, "AllBlocksCleared"))
        return RM_KV_ALL_CLEARED;
    return 0;
}

/* Positional event (msgspec array_like): [tag, field...] in declaration
 * order, trailing defaults omitted by omit_defaults. The positions past
 * medium differ by engine: vLLM has lora_name, extra_keys, group_idx;
 * SGLang a metadata map (BlockStoredWithMetadata). */
static rm_kv_result event_array(dec *d, uint32_t n, rm_kv_event *e, int *usable)
{
    rm_mp_value tag;
    if (n < 1)
        return RM_KV_ERR_SCHEMA;
    TRY(rd(d, &tag));
    if (tag.type != RM_MP_STR)
        return RM_KV_ERR_SCHEMA;
    e->type = type_of(&tag);
    uint32_t known = 1; /* elements this type defines, tag included */
    int bad = 0;
    if (e->type == RM_KV_BLOCK_STORED) {
        if (n < 5)
            return RM_KV_ERR_SCHEMA;
        TRY(hash_list(d, &e->hashes, &e->n_hashes));
        TRY(opt_hash(d, &e->parent, &e->has_parent));
        TRY(token_list(d, &e->tokens, &e->n_tokens, &bad));
        TRY(block_size(d, &e->block_size));
        if (n > 5)
            TRY(opt_int(d, &e->lora_id, &e->has_lora_id));
        if (n > 6)
            TRY(medium(d, &e->medium));
        if (n > 7) {
            rm_mp_value v;
            TRY(rd(d, &v));
            if (v.type == RM_MP_STR) {
                TRY(name_from(d, &v, &e->lora_name));
            } else if (v.type == RM_MP_MAP) { /* SGLang metadata: {"cache_salt": ...} */
                e->has_extra_keys |= v.v.count > 0;
                TRY(skip_body(d, &v));
            } else if (v.type != RM_MP_NIL) {
                return RM_KV_ERR_SCHEMA;
            }
        }
        if (n > 8)
            TRY(extra_keys(d, &e->has_extra_keys));
        if (n > 9)
            TRY(group(d, &e->group_idx));
        known = 10;
    } else if (e->type == RM_KV_BLOCK_REMOVED) {
        if (n < 2)
            return RM_KV_ERR_SCHEMA;
        TRY(hash_list(d, &e->hashes, &e->n_hashes));
        if (n > 2)
            TRY(medium(d, &e->medium));
        if (n > 3)
            TRY(group(d, &e->group_idx));
        known = 4;
    }
    for (uint32_t i = known < n ? known : n; i < n; i++)
        TRY(skip(d));
    if (!e->type)
        d->n_unknown++;
    else if (bad)
        d->n_unsupported++;
    *usable = e->type && !bad;
    return RM_KV_OK;
}

/* Keyed event (msgspec tag=True without array_like): {"type": tag, field:
 * value...}, fields equal to their default left out (omit_defaults). The
 * tag is found first so that the fields are read by the type's rules
 * whatever the key order, and an unknown type is skipped unread. */
static rm_kv_result event_map(dec *d, uint32_t n, rm_kv_event *e, int *usable)
{
    rm_mp_reader start = d->r;
    for (uint32_t k = 0; k < n && !e->type; k++) {
        rm_mp_value key, val;
        TRY(rd(d, &key));
        if (key.type != RM_MP_STR)
            return RM_KV_ERR_SCHEMA;
        if (!rm_mp_str_eq(&key, "type")) {
            TRY(skip(d));
            continue;
        }
        TRY(rd(d, &val));
        if (val.type != RM_MP_STR)
            return RM_KV_ERR_SCHEMA;
        e->type = type_of(&val);
        if (!e->type) {
            d->n_unknown++;
            for (uint64_t rest = 2 * (uint64_t)(n - k - 1); rest; rest--)
                TRY(skip(d));
            *usable = 0;
            return RM_KV_OK;
        }
    }
    if (!e->type)
        return RM_KV_ERR_SCHEMA; /* no "type" */
    d->r = start;
    int have_hashes = 0, have_tokens = 0, have_bs = 0, bad = 0;
    int stored = e->type == RM_KV_BLOCK_STORED, removed = e->type == RM_KV_BLOCK_REMOVED;
    for (uint32_t k = 0; k < n; k++) {
        rm_mp_value key;
        TRY(rd(d, &key)); /* a string: checked by the first loop */
        if ((stored || removed) && rm_mp_str_eq(&key, "block_hashes")) {
            TRY(hash_list(d, &e->hashes, &e->n_hashes));
            have_hashes = 1;
        } else if ((stored || removed) && rm_mp_str_eq(&key, "medium")) {
            TRY(medium(d, &e->medium));
        } else if ((stored || removed) && rm_mp_str_eq(&key, "group_idx")) {
            TRY(group(d, &e->group_idx));
        } else if (stored && rm_mp_str_eq(&key, "parent_block_hash")) {
            TRY(opt_hash(d, &e->parent, &e->has_parent));
        } else if (stored && rm_mp_str_eq(&key, "token_ids")) {
            TRY(token_list(d, &e->tokens, &e->n_tokens, &bad));
            have_tokens = 1;
        } else if (stored && rm_mp_str_eq(&key, "block_size")) {
            TRY(block_size(d, &e->block_size));
            have_bs = 1;
        } else if (stored && rm_mp_str_eq(&key, "lora_id")) {
            TRY(opt_int(d, &e->lora_id, &e->has_lora_id));
        } else if (stored && rm_mp_str_eq(&key, "lora_name")) {
            rm_mp_value v;
            TRY(rd(d, &v));
            if (v.type == RM_MP_STR)
                TRY(name_from(d, &v, &e->lora_name));
            else if (v.type != RM_MP_NIL)
                return RM_KV_ERR_SCHEMA;
        } else if (stored && rm_mp_str_eq(&key, "extra_keys")) {
            TRY(extra_keys(d, &e->has_extra_keys));
        } else {
            TRY(skip(d)); /* "type", and every field we do not use or know */
        }
    }
    if ((stored && (!have_hashes || !have_tokens || !have_bs)) || (removed && !have_hashes))
        return RM_KV_ERR_SCHEMA;
    if (bad)
        d->n_unsupported++;
    *usable = !bad;
    return RM_KV_OK;
}

static rm_kv_result event(dec *d)
{
    rm_mp_value v;
    rm_kv_event e;
    memset(&e, 0, sizeof e);
    e.group_idx = -1;
    int usable = 0;
    TRY(rd(d, &v));
    if (v.type == RM_MP_ARRAY)
        TRY(event_array(d, v.v.count, &e, &usable));
    else if (v.type == RM_MP_MAP)
        TRY(event_map(d, v.v.count, &e, &usable));
    else
        return RM_KV_ERR_SCHEMA;
    if (!usable)
        return RM_KV_OK;
    if (d->n_events >= RM_KV_MAX_EVENTS)
        return RM_KV_ERR_LIMIT;
    if (d->fill)
        d->b->events[d->n_events] = e;
    d->n_events++;
    return RM_KV_OK;
}

static rm_kv_result events(dec *d)
{
    rm_mp_value v;
    TRY(rd(d, &v));
    if (v.type != RM_MP_ARRAY)
        return RM_KV_ERR_SCHEMA;
    for (uint32_t i = 0; i < v.v.count; i++)
        TRY(event(d));
    return RM_KV_OK;
}

static rm_kv_result number(dec *d, double *x)
{
    rm_mp_value v;
    TRY(rd(d, &v));
    if (v.type == RM_MP_FLOAT)
        *x = v.v.f;
    else if (v.type == RM_MP_UINT)
        *x = (double)v.v.u;
    else if (v.type == RM_MP_INT)
        *x = (double)v.v.i;
    else
        return RM_KV_ERR_SCHEMA;
    return RM_KV_OK;
}

/* EventBatch: [ts, events, dp_rank] (array_like; vLLM <= 0.9 and old
 * SGLang have no third element), or {"ts", "events", "data_parallel_rank"}
 * where the envelope is not array_like. */
static rm_kv_result batch(dec *d, double *ts, int64_t *dp)
{
    rm_mp_value v;
    TRY(rd(d, &v));
    if (v.type == RM_MP_ARRAY) {
        if (v.v.count < 2)
            return RM_KV_ERR_SCHEMA;
        TRY(number(d, ts));
        TRY(events(d));
        if (v.v.count >= 3)
            TRY(opt_index(d, INT64_MAX, dp));
        for (uint32_t i = 3; i < v.v.count; i++)
            TRY(skip(d));
    } else if (v.type == RM_MP_MAP) {
        int have_events = 0;
        for (uint32_t k = 0; k < v.v.count; k++) {
            rm_mp_value key;
            TRY(rd(d, &key));
            if (key.type != RM_MP_STR)
                return RM_KV_ERR_SCHEMA;
            if (rm_mp_str_eq(&key, "ts")) {
                TRY(number(d, ts));
            } else if (rm_mp_str_eq(&key, "events")) {
                if (have_events)
                    return RM_KV_ERR_SCHEMA; /* the second would count the first's twice */
                TRY(events(d));
                have_events = 1;
            } else if (rm_mp_str_eq(&key, "data_parallel_rank") ||
                       rm_mp_str_eq(&key, "attn_dp_rank")) {
                TRY(opt_index(d, INT64_MAX, dp));
            } else {
                TRY(skip(d));
            }
        }
        if (!have_events)
            return RM_KV_ERR_SCHEMA;
    } else {
        return RM_KV_ERR_SCHEMA;
    }
    if (rm_mp_left(&d->r))
        return RM_KV_ERR_MSGPACK; /* bytes after the batch */
    return RM_KV_OK;
}

/* Grows *buf to hold n elements of size sz (kept when big enough). */
static int reserve(void **buf, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap)
        return 0;
    void *p = malloc(n * sz);
    if (!p)
        return -1;
    free(*buf);
    *buf = p;
    *cap = n;
    return 0;
}

rm_kv_result rm_kv_decode_payload(const void *payload, size_t len, rm_kv_batch *b)
{
    b->n_events = b->n_unknown = b->n_unsupported = 0;
    b->ts = 0;
    b->dp_rank = -1;
    if (len > RM_KV_MAX_PAYLOAD)
        return RM_KV_ERR_LIMIT;
    dec d;
    memset(&d, 0, sizeof d);
    d.b = b;
    rm_mp_init(&d.r, payload, len);
    double ts = 0;
    int64_t dp = -1;
    TRY(batch(&d, &ts, &dp));

    if (reserve((void **)&b->events, &b->event_cap, d.n_events, sizeof *b->events) ||
        reserve((void **)&b->hash_buf, &b->hash_cap, d.n_hashes, sizeof *b->hash_buf) ||
        reserve((void **)&b->token_buf, &b->token_cap, d.n_tokens, sizeof *b->token_buf) ||
        reserve((void **)&b->name_buf, &b->name_cap, d.n_name, 1))
        return RM_KV_ERR_NOMEM;
    b->bytes = b->event_cap * sizeof *b->events + b->hash_cap * sizeof *b->hash_buf +
               b->token_cap * sizeof *b->token_buf + b->name_cap;

    size_t n_events = d.n_events;
    memset(&d, 0, sizeof d);
    d.b = b;
    d.fill = 1;
    rm_mp_init(&d.r, payload, len);
    rm_kv_result rc = batch(&d, &ts, &dp);
    if (rc != RM_KV_OK || d.n_events != n_events)
        abort(); /* the same bytes through the same code: cannot differ */
    b->ts = ts;
    b->dp_rank = dp;
    b->n_events = (uint32_t)d.n_events;
    b->n_unknown = d.n_unknown;
    b->n_unsupported = d.n_unsupported;
    return RM_KV_OK;
}

/* ---- frames -------------------------------------------------------------- */

rm_kv_result rm_kv_parse_seq(const rm_kv_frame *f, uint64_t *seq)
{
    if (f->len != 8)
        return RM_KV_ERR_FRAMES;
    const uint8_t *p = f->data;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = x << 8 | p[i];
    *seq = x;
    return RM_KV_OK;
}

rm_kv_result rm_kv_decode_pub(const rm_kv_frame *frames, size_t n, rm_kv_batch *b,
                              uint64_t *seq_out)
{
    uint64_t seq;
    b->n_events = b->n_unknown = b->n_unsupported = 0;
    if (n != 3)
        return RM_KV_ERR_FRAMES;
    TRY(rm_kv_parse_seq(&frames[1], &seq));
    b->seq = seq;
    if (seq_out)
        *seq_out = seq;
    return rm_kv_decode_payload(frames[2].data, frames[2].len, b);
}

rm_kv_result rm_kv_parse_replay(const rm_kv_frame *frames, size_t n, uint64_t *seq,
                                rm_kv_frame *payload)
{
    if ((n != 3 && n != 4) || frames[0].len != 0)
        return RM_KV_ERR_FRAMES;
    TRY(rm_kv_parse_seq(&frames[n - 2], seq));
    *payload = frames[n - 1];
    return RM_KV_OK;
}

/* ---- sequence rules -------------------------------------------------------- */

rm_kv_seq_verdict rm_kv_seq_classify(uint64_t expected, uint64_t live_next, uint64_t seq)
{
    if (seq == expected)
        return RM_KV_SEQ_NEXT;
    if (seq > expected)
        return RM_KV_SEQ_GAP;
    return seq >= live_next ? RM_KV_SEQ_REPLAYED : RM_KV_SEQ_RESTART;
}

rm_kv_replay_verdict rm_kv_replay_classify(uint64_t expected, uint64_t seq)
{
    if (seq == expected)
        return RM_KV_REPLAY_TAKE;
    return seq < expected ? RM_KV_REPLAY_SKIP : RM_KV_REPLAY_HOLE;
}
