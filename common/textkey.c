#include "textkey.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

void rm_textkey_init(rm_textkey *k, size_t max)
{
    memset(k, 0, sizeof *k);
    k->max = max;
}

uint32_t rm_textkey_chunk_id(const unsigned char *chunk, size_t len)
{
    uint64_t w = 0;
    for (size_t i = 0; i < len; i++)
        w |= (uint64_t)chunk[i] << (8 * i);
    return (uint32_t)rm_mix64(w | (uint64_t)len << 32);
}

static void emit(rm_textkey *k, const unsigned char *chunk, size_t len)
{
    if (k->n >= k->max)
        return;
    k->v = rm_xgrow(k->v, k->n, &k->cap, sizeof *k->v, 256);
    k->v[k->n++] = rm_textkey_chunk_id(chunk, len);
}

void rm_textkey_feed(rm_textkey *k, const void *bytes, size_t len)
{
    const unsigned char *p = bytes;
    while (len && k->n < k->max) {
        size_t take = RM_TEXTKEY_CHUNK - k->ncarry;
        if (take > len)
            take = len;
        memcpy(k->carry + k->ncarry, p, take);
        k->ncarry += take;
        p += take;
        len -= take;
        if (k->ncarry == RM_TEXTKEY_CHUNK) {
            emit(k, k->carry, RM_TEXTKEY_CHUNK);
            k->ncarry = 0;
        }
    }
}

void rm_textkey_finish(rm_textkey *k)
{
    if (k->ncarry)
        emit(k, k->carry, k->ncarry);
    k->ncarry = 0;
}

void rm_textkey_mark(const rm_textkey *k, rm_textkey_end *end)
{
    memcpy(end->tail, k->carry, k->ncarry);
    end->ntail = k->ncarry;
    end->tail_emitted = k->ncarry && k->n < k->max;
}

void rm_textkey_resume(rm_textkey *k, size_t max, const uint32_t *tokens, size_t n,
                       const rm_textkey_end *end)
{
    rm_textkey_init(k, max);
    size_t full = n - (end->tail_emitted && n ? 1 : 0);
    if (full > max)
        full = max;
    k->cap = full + 256;
    k->v = rm_xmalloc(k->cap * sizeof *k->v);
    if (full)
        memcpy(k->v, tokens, full * sizeof *tokens);
    k->n = full;
    if (end->tail_emitted) {
        memcpy(k->carry, end->tail, end->ntail);
        k->ncarry = end->ntail;
    }
}

void rm_textkey_free(rm_textkey *k)
{
    free(k->v);
    k->v = NULL;
    k->n = k->cap = 0;
}
