#include "trace.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void block_tokens(uint32_t *out, uint64_t id, size_t count)
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

/* One line into r. Returns NULL or the reason it is malformed. */
static const char *parse_line(json_t *o, size_t B, rm_trace_req *r, uint64_t **ids, size_t *nids,
                              size_t *ids_cap)
{
    json_t *toks = json_is_array(o) ? o : json_object_get(o, "tokens");
    json_t *hash_ids = json_is_object(o) ? json_object_get(o, "hash_ids") : NULL;
    json_t *ts = json_is_object(o) ? json_object_get(o, "timestamp") : NULL;
    if (ts && !json_is_integer(ts))
        return "\"timestamp\" must be an integer (ms)";
    r->timestamp_ms = ts ? (uint64_t)json_integer_value(ts) : 0;
    if (hash_ids) {
        json_t *len = json_object_get(o, "input_length");
        if (!json_is_array(hash_ids) || !json_is_integer(len) || json_integer_value(len) < 0)
            return "Mooncake lines need \"hash_ids\" (array) and \"input_length\" (integer)";
        size_t nb = json_array_size(hash_ids);
        long long in = json_integer_value(len);
        long long last512 = in - 512 * (long long)(nb ? nb - 1 : 0);
        size_t last = (size_t)((last512 > 0 ? last512 : 1) * (long long)B / 512);
        last = last == 0 ? 1 : last > B ? B : last;
        r->n = nb ? (nb - 1) * B + last : 0;
        r->tokens = rm_xmalloc(sizeof(uint32_t) * (r->n + 1));
        for (size_t b = 0; b < nb; b++) {
            json_t *id = json_array_get(hash_ids, b);
            if (!json_is_integer(id) || json_integer_value(id) < 0)
                return "\"hash_ids\" must hold non-negative integers";
            uint64_t v = (uint64_t)json_integer_value(id);
            block_tokens(r->tokens + b * B, v, b + 1 == nb ? last : B);
            if (b == 0)
                r->conversation = v;
            if (*nids == *ids_cap) {
                *ids_cap = *ids_cap ? *ids_cap * 2 : 1024;
                *ids = rm_xrealloc(*ids, sizeof **ids * *ids_cap);
            }
            (*ids)[(*nids)++] = v;
        }
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
    r->conversation = r->n ? rm_hash_u32s(r->tokens, r->n < B ? r->n : B, 0) : 0;
    return NULL;
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
    free(line);
    fclose(f);
    if (nids) /* qsort's array must not be NULL, even when empty */
        qsort(ids, nids, sizeof *ids, cmp_u64);
    for (size_t i = 0; i < nids; i++)
        t->unique_blocks += i == 0 || ids[i] != ids[i - 1];
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
                block_tokens(c->tok, 1, SYSP);
                c->len = SYSP;
            } else if (c->kind == 1) {
                block_tokens(c->tok, 10 + c->id % 4, SHOT);
                c->len = SHOT;
            } else if (c->kind == 2) {
                block_tokens(c->tok, 20 + rm_mix64(c->id) % 8, DOC);
                c->len = DOC;
            }
        }
        /* This turn: the user's message, then (for the next turn) a reply. */
        block_tokens(c->tok + c->len, 1000000 + c->id * 64 + (uint64_t)c->turn * 2, Q);
        c->len += Q;
        rm_trace_req *r = push(t);
        r->n = c->len;
        r->tokens = rm_xmalloc(sizeof(uint32_t) * r->n);
        memcpy(r->tokens, c->tok, sizeof(uint32_t) * r->n);
        r->timestamp_ms = i * 10;
        r->conversation = c->id;
        t->total_tokens += r->n;
        block_tokens(c->tok + c->len, 1000000 + c->id * 64 + (uint64_t)c->turn * 2 + 1, 2 * Q);
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
