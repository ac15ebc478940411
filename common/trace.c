#include "trace.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void rm_trace_block_tokens(uint32_t *out, uint64_t id, size_t count)
{
    for (size_t j = 0; j < count; j++)
        out[j] = (uint32_t)(rm_mix64(id * 1000003ull + j) % 128000);
}

static rm_trace_req *push(rm_trace *t)
{
    t->req = rm_xrealloc(t->req, sizeof *t->req * (t->n + 1));
    rm_trace_req *r = &t->req[t->n++];
    memset(r, 0, sizeof *r);
    return r;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int fail(char *err, size_t errlen, const char *path, size_t line, const char *why)
{
    snprintf(err, errlen, "%s:%zu: %s", path, line, why);
    return -1;
}

/* Mooncake lengths at 512-token blocks scaled to B-token blocks: the last
 * block holds its share of input_length (at least 1 token); the reply is
 * rounded down, but a reply is never scaled away entirely. */
static void mooncake_req(rm_trace_req *r, const uint64_t *ids, size_t nb, uint64_t input_length,
                         uint64_t output_length, size_t B)
{
    long long last512 = (long long)(input_length > (1ull << 62) ? 1ull << 62 : input_length) -
                        512 * (long long)(nb ? nb - 1 : 0);
    last512 = last512 > 512 ? 512 : last512 < 1 ? 1 : last512; /* no overflow below */
    size_t last = (size_t)(last512 * (long long)B / 512);
    last = last == 0 ? 1 : last > B ? B : last;
    r->n = nb ? (nb - 1) * B + last : 0;
    r->tokens = rm_xmalloc(sizeof(uint32_t) * (r->n + 1));
    for (size_t b = 0; b < nb; b++)
        rm_trace_block_tokens(r->tokens + b * B, ids[b], b + 1 == nb ? last : B);
    r->conversation = nb ? ids[0] : 0;
    uint64_t out = output_length * B / 512;
    r->output_tokens = output_length && !out ? 1 : out;
}

/* An optional non-negative integer field: 0 with *v set (absent: dflt), or
 * -1 when present but not such an integer. Bounded so scaling cannot wrap. */
static int opt_count(json_t *o, const char *name, uint64_t dflt, uint64_t *v)
{
    json_t *x = json_is_object(o) ? json_object_get(o, name) : NULL;
    *v = dflt;
    if (!x)
        return 0;
    if (!json_is_integer(x) || json_integer_value(x) < 0 ||
        (uint64_t)json_integer_value(x) > (1ull << 40))
        return -1;
    *v = (uint64_t)json_integer_value(x);
    return 0;
}

/* One line into r. Returns NULL or the reason it is malformed. */
static const char *parse_line(json_t *o, size_t B, rm_trace_req *r, uint64_t **ids, size_t *nids,
                              size_t *ids_cap)
{
    json_t *toks = json_is_array(o) ? o : json_object_get(o, "tokens");
    json_t *hash_ids = json_is_object(o) ? json_object_get(o, "hash_ids") : NULL;
    json_t *ts = json_is_object(o) ? json_object_get(o, "timestamp") : NULL;
    if (ts && (!json_is_integer(ts) || json_integer_value(ts) < 0))
        return "\"timestamp\" must be a non-negative integer (ms)";
    r->timestamp_ms = ts ? (uint64_t)json_integer_value(ts) : 0;
    uint64_t out, session;
    if (opt_count(o, "output_length", 0, &out))
        return "\"output_length\" must be an integer in [0, 2^40]";
    int has_session = json_is_object(o) && json_object_get(o, "session");
    if (opt_count(o, "session", 0, &session))
        return "\"session\" must be an integer in [0, 2^40]";
    if (hash_ids) {
        json_t *len = json_object_get(o, "input_length");
        if (!json_is_array(hash_ids) || !json_is_integer(len) || json_integer_value(len) < 0)
            return "Mooncake lines need \"hash_ids\" (array) and \"input_length\" (integer)";
        size_t nb = json_array_size(hash_ids);
        for (size_t b = 0; b < nb; b++) {
            json_t *id = json_array_get(hash_ids, b);
            if (!json_is_integer(id) || json_integer_value(id) < 0)
                return "\"hash_ids\" must hold non-negative integers";
            *ids = rm_xgrow(*ids, *nids, ids_cap, sizeof **ids, 1024);
            (*ids)[(*nids)++] = (uint64_t)json_integer_value(id);
        }
        mooncake_req(r, *ids + (*nids - nb), nb, (uint64_t)json_integer_value(len), out, B);
        if (has_session)
            r->conversation = session;
        return NULL;
    }
    if (!json_is_array(toks))
        return "expected a Mooncake object, a token array or {\"tokens\": [...]}";
    r->n = json_array_size(toks);
    r->tokens = rm_xmalloc(sizeof(uint32_t) * (r->n + 1));
    for (size_t i = 0; i < r->n; i++) {
        json_t *v = json_array_get(toks, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
            return "token ids must be integers in [0, 2^32)";
        r->tokens[i] = (uint32_t)json_integer_value(v);
    }
    r->conversation = has_session ? session
                      : r->n      ? rm_hash_u32s(r->tokens, r->n < B ? r->n : B, 0)
                                  : 0;
    r->output_tokens = out;
    return NULL;
}

static uint64_t count_unique(uint64_t *ids, size_t nids)
{
    if (nids) /* qsort's array must not be NULL, even when empty */
        qsort(ids, nids, sizeof *ids, cmp_u64);
    uint64_t u = 0;
    for (size_t i = 0; i < nids; i++)
        u += i == 0 || ids[i] != ids[i - 1];
    return u;
}

int rm_trace_load(const char *path, size_t block_tokens_n, size_t limit, rm_trace *t, char *err,
                  size_t errlen)
{
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "r");
    if (!f)
        return fail(err, errlen, path, 0, "cannot open");
    char *line = NULL;
    size_t cap = 0, lineno = 0, nids = 0, ids_cap = 0;
    uint64_t *ids = NULL;
    int rc = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0 && (!limit || t->n < limit)) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len)
            continue; /* blank lines are allowed */
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        if (!o) {
            char why[256];
            snprintf(why, sizeof why, "invalid JSON: %s", jerr.text);
            rc = fail(err, errlen, path, lineno, why);
            break;
        }
        rm_trace_req *r = push(t);
        const char *why = parse_line(o, block_tokens_n, r, &ids, &nids, &ids_cap);
        json_decref(o);
        if (why) {
            rc = fail(err, errlen, path, lineno, why);
            break;
        }
        t->total_tokens += r->n;
    }
    /* getline's error (a directory, an I/O error) is not an end of file. */
    if (!rc && ferror(f)) {
        char why[160];
        snprintf(why, sizeof why, "cannot read: %s", strerror(errno));
        rc = fail(err, errlen, path, lineno, why);
    }
    free(line);
    fclose(f);
    t->unique_blocks = count_unique(ids, nids);
    free(ids);
    if (rc)
        rm_trace_free(t);
    return rc;
}

void rm_trace_generate(rm_trace *t, size_t requests, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    enum { SYSP = 1024, SHOT = 768, DOC = 2048, Q = 96, LIVE = 24 };
    uint64_t rng = seed * 0x9e3779b97f4a7c15ULL + 1;
    typedef struct conv {
        uint64_t id;
        int kind, turn;
        size_t len;
        uint32_t *tok;
    } conv;
    conv live[LIVE];
    memset(live, 0, sizeof live);
    uint64_t next_id = 1;
    for (size_t i = 0; i < requests; i++) {
        rng = rm_mix64(rng);
        conv *c = &live[rng % LIVE];
        if (!c->tok || c->turn >= 6 || c->len > 12000) {
            /* A new user: 50% chat behind the shared system prompt, 20%
             * few-shot (4 prompt sets), 20% RAG over 8 documents, 10% alone. */
            free(c->tok);
            memset(c, 0, sizeof *c);
            c->id = next_id++;
            c->tok = rm_xmalloc(sizeof(uint32_t) * 16384);
            uint64_t k = rm_mix64(c->id ^ seed) % 10;
            c->kind = k < 5 ? 0 : k < 7 ? 1 : k < 9 ? 2 : 3;
            if (c->kind == 0) {
                rm_trace_block_tokens(c->tok, 1, SYSP);
                c->len = SYSP;
            } else if (c->kind == 1) {
                rm_trace_block_tokens(c->tok, 10 + c->id % 4, SHOT);
                c->len = SHOT;
            } else if (c->kind == 2) {
                rm_trace_block_tokens(c->tok, 20 + rm_mix64(c->id) % 8, DOC);
                c->len = DOC;
            }
        }
        /* This turn: the user's message, then (for the next turn) a reply. */
        rm_trace_block_tokens(c->tok + c->len, 1000000 + c->id * 64 + (uint64_t)c->turn * 2, Q);
        c->len += Q;
        rm_trace_req *r = push(t);
        r->n = c->len;
        r->tokens = rm_xmalloc(sizeof(uint32_t) * r->n);
        memcpy(r->tokens, c->tok, sizeof(uint32_t) * r->n);
        r->timestamp_ms = i * 10;
        r->conversation = c->id;
        r->output_tokens = 2 * Q; /* the reply appended below */
        t->total_tokens += r->n;
        rm_trace_block_tokens(c->tok + c->len, 1000000 + c->id * 64 + (uint64_t)c->turn * 2 + 1,
                              2 * Q);
        c->len += 2 * Q;
        c->turn++;
    }
    for (int i = 0; i < LIVE; i++)
        free(live[i].tok);
}

void rm_trace_free(rm_trace *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->req[i].tokens);
    free(t->req);
    memset(t, 0, sizeof *t);
}

typedef struct conv_len {
    uint64_t conversation;
    size_t n;
} conv_len;

static int cmp_conv_len(const void *a, const void *b)
{
    const conv_len *x = a, *y = b;
    return x->conversation < y->conversation ? -1 : x->conversation > y->conversation;
}

size_t rm_trace_conversations(const rm_trace *t, uint64_t tokens, size_t *over)
{
    conv_len *c = rm_xmalloc(sizeof *c * (t->n + 1));
    for (size_t i = 0; i < t->n; i++)
        c[i] = (conv_len){t->req[i].conversation, t->req[i].n};
    if (t->n)
        qsort(c, t->n, sizeof *c, cmp_conv_len);
    size_t convs = 0, big = 0;
    for (size_t i = 0, j; i < t->n; i = j) {
        size_t longest = 0;
        for (j = i; j < t->n && c[j].conversation == c[i].conversation; j++)
            longest = c[j].n > longest ? c[j].n : longest;
        convs++;
        big += longest > tokens;
    }
    free(c);
    if (over)
        *over = big;
    return convs;
}

/* ---- traces in Mooncake form ------------------------------------------ */

rm_block_req *rm_block_trace_push(rm_block_trace *bt, uint64_t timestamp_ms, uint64_t input_length,
                                  uint64_t output_length, uint64_t session, const uint64_t *ids,
                                  size_t nblocks)
{
    bt->req = rm_xgrow(bt->req, bt->n, &bt->cap, sizeof *bt->req, 256);
    rm_block_req *r = &bt->req[bt->n++];
    *r = (rm_block_req){timestamp_ms,
                        input_length,
                        output_length,
                        session,
                        rm_xmalloc(sizeof(uint64_t) * (nblocks + 1)),
                        nblocks};
    if (nblocks)
        memcpy(r->hash_ids, ids, sizeof(uint64_t) * nblocks);
    return r;
}

typedef struct ordered {
    rm_block_req r;
    size_t seq;
} ordered;

static int cmp_ordered(const void *a, const void *b)
{
    const ordered *x = a, *y = b;
    if (x->r.timestamp_ms != y->r.timestamp_ms)
        return x->r.timestamp_ms < y->r.timestamp_ms ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void rm_block_trace_sort(rm_block_trace *bt)
{
    if (!bt->n)
        return;
    ordered *o = rm_xmalloc(sizeof *o * bt->n);
    for (size_t i = 0; i < bt->n; i++)
        o[i] = (ordered){bt->req[i], i};
    qsort(o, bt->n, sizeof *o, cmp_ordered); /* seq breaks ties: stable */
    for (size_t i = 0; i < bt->n; i++)
        bt->req[i] = o[i].r;
    free(o);
}

void rm_block_trace_truncate(rm_block_trace *bt, size_t n)
{
    for (size_t i = n; i < bt->n; i++)
        free(bt->req[i].hash_ids);
    if (n < bt->n)
        bt->n = n;
}

uint64_t rm_block_trace_unique(const rm_block_trace *bt)
{
    size_t nids = 0;
    for (size_t i = 0; i < bt->n; i++)
        nids += bt->req[i].nblocks;
    uint64_t *ids = rm_xmalloc(sizeof *ids * (nids + 1));
    nids = 0;
    for (size_t i = 0; i < bt->n; i++)
        for (size_t b = 0; b < bt->req[i].nblocks; b++)
            ids[nids++] = bt->req[i].hash_ids[b];
    uint64_t u = count_unique(ids, nids);
    free(ids);
    return u;
}

int rm_block_trace_write(const rm_block_trace *bt, FILE *f)
{
    for (size_t i = 0; i < bt->n; i++) {
        const rm_block_req *r = &bt->req[i];
        fprintf(f,
                "{\"timestamp\": %" PRIu64 ", \"input_length\": %" PRIu64
                ", \"output_length\": %" PRIu64 ", \"session\": %" PRIu64 ", \"hash_ids\": [",
                r->timestamp_ms, r->input_length, r->output_length, r->session);
        for (size_t b = 0; b < r->nblocks; b++)
            fprintf(f, b ? ", %" PRIu64 : "%" PRIu64, r->hash_ids[b]);
        fputs("]}\n", f);
    }
    return fflush(f) == 0 && !ferror(f) ? 0 : -1;
}

void rm_trace_from_blocks(rm_trace *t, const rm_block_trace *bt, size_t block_tokens_n)
{
    memset(t, 0, sizeof *t);
    t->req = rm_xcalloc(bt->n + 1, sizeof *t->req);
    for (size_t i = 0; i < bt->n; i++) {
        const rm_block_req *b = &bt->req[i];
        rm_trace_req *r = &t->req[t->n++];
        mooncake_req(r, b->hash_ids, b->nblocks, b->input_length, b->output_length, block_tokens_n);
        r->timestamp_ms = b->timestamp_ms;
        r->conversation = b->session;
        t->total_tokens += r->n;
    }
    t->unique_blocks = rm_block_trace_unique(bt);
}

void rm_block_trace_free(rm_block_trace *bt)
{
    rm_block_trace_truncate(bt, 0);
    free(bt->req);
    memset(bt, 0, sizeof *bt);
}
