/* kv_mirror.c -- see kv_mirror.h. */
#include "kv_mirror.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ptrtab.h"
#include "util.h"

/* What the engine told about one block it holds. */
typedef struct kv_block {
    uint64_t hash;
    uint64_t parent; /* with has_parent */
    uint8_t has_parent;
    uint32_t tokens[]; /* page_tokens of them */
} kv_block;

struct rm_kv_mirror {
    rm_kv_mirror_config cfg;
    char *ns;
    rm_ptrtab blocks; /* kv_block by hash */
    rm_kv_mirror_stats st;
    /* Scratch, reused: a chain of blocks and a token path. */
    kv_block **path;
    size_t path_cap;
    uint32_t *toks;
    size_t toks_cap;
};

static uint64_t block_key(const void *e)
{
    return rm_mix64(((const kv_block *)e)->hash);
}

static size_t block_bytes(const rm_kv_mirror *m)
{
    return offsetof(kv_block, tokens) + sizeof(uint32_t) * m->cfg.page_tokens;
}

static kv_block *find(const rm_kv_mirror *m, uint64_t hash)
{
    const rm_ptrtab *t = &m->blocks;
    for (size_t i = rm_mix64(hash) & t->mask; t->slots[i]; i = (i + 1) & t->mask) {
        kv_block *b = t->slots[i];
        if (b->hash == hash)
            return b;
    }
    return NULL;
}

rm_kv_mirror *rm_kv_mirror_new(const rm_kv_mirror_config *cfg)
{
    rm_kv_mirror *m = rm_xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    if (!m->cfg.max_blocks)
        m->cfg.max_blocks = 1u << 20;
    if (!m->cfg.media)
        m->cfg.media = RM_KV_MEDIUM_BIT(RM_KV_MEDIUM_NONE) | RM_KV_MEDIUM_BIT(RM_KV_MEDIUM_GPU);
    rm_ptrtab_init(&m->blocks, 64, block_key);
    return m;
}

static void drop_all(rm_kv_mirror *m)
{
    for (size_t i = 0; i <= m->blocks.mask; i++)
        free(m->blocks.slots[i]);
    rm_ptrtab_destroy(&m->blocks);
    rm_ptrtab_init(&m->blocks, 64, block_key);
}

void rm_kv_mirror_free(rm_kv_mirror *m)
{
    if (!m)
        return;
    drop_all(m);
    rm_ptrtab_destroy(&m->blocks);
    free(m->ns);
    free(m->path);
    free(m->toks);
    free(m);
}

const char *rm_kv_mirror_namespace(const rm_kv_mirror *m)
{
    return m->ns;
}

void rm_kv_mirror_set_max_blocks(rm_kv_mirror *m, uint64_t max_blocks)
{
    m->cfg.max_blocks = max_blocks ? max_blocks : 1u << 20;
}

static void clear_tree(rm_kv_mirror *m, rm_cache *c)
{
    int busy;
    if (m->ns)
        rm_cache_clear_namespace(c, m->ns, strlen(m->ns), &busy);
}

void rm_kv_mirror_set_namespace(rm_kv_mirror *m, rm_cache *c, const char *ns)
{
    if (m->ns && !strcmp(m->ns, ns))
        return;
    clear_tree(m, c);
    free(m->ns);
    m->ns = rm_xstrndup(ns, strlen(ns));
}

void rm_kv_mirror_clear(rm_kv_mirror *m, rm_cache *c, int resync)
{
    drop_all(m);
    clear_tree(m, c);
    if (resync)
        m->st.resyncs++;
    else
        m->st.clears++;
}

/* The blocks from the first one down to hash (none when !has), root
 * first, into m->path. Returns how many, or -1 when one on the way is not
 * recorded -- or the chain is longer than the records, a loop only
 * hostile input can make. */
static long chain(rm_kv_mirror *m, int has, uint64_t hash)
{
    size_t k = 0;
    while (has) {
        kv_block *b = find(m, hash);
        if (!b || k >= m->blocks.n)
            return -1;
        m->path = rm_xgrow(m->path, k, &m->path_cap, sizeof *m->path, 64);
        m->path[k++] = b;
        has = b->has_parent;
        hash = b->parent;
    }
    for (size_t i = 0; i < k / 2; i++) {
        kv_block *t = m->path[i];
        m->path[i] = m->path[k - 1 - i];
        m->path[k - 1 - i] = t;
    }
    return (long)k;
}

/* The token path of m->path[0..k) followed by extra[0..nextra), in
 * m->toks. Returns its length. */
static size_t path_tokens(rm_kv_mirror *m, size_t k, const uint32_t *extra, size_t nextra)
{
    uint32_t pt = m->cfg.page_tokens;
    size_t n = k * pt + nextra;
    if (n > m->toks_cap) {
        m->toks_cap = n;
        m->toks = rm_xrealloc(m->toks, sizeof *m->toks * m->toks_cap);
    }
    for (size_t i = 0; i < k; i++)
        memcpy(m->toks + i * pt, m->path[i]->tokens, sizeof *m->toks * pt);
    if (nextra)
        memcpy(m->toks + k * pt, extra, sizeof *m->toks * nextra);
    return n;
}

static void record(rm_kv_mirror *m, uint64_t hash, int has_parent, uint64_t parent,
                   const uint32_t *tokens)
{
    kv_block *b = rm_xmalloc(block_bytes(m));
    b->hash = hash;
    b->parent = has_parent ? parent : 0;
    b->has_parent = (uint8_t)(has_parent != 0);
    memcpy(b->tokens, tokens, sizeof(uint32_t) * m->cfg.page_tokens);
    rm_ptrtab_add(&m->blocks, b);
    m->st.stored_blocks++;
}

/* Whether the engine's tokens alone say what ev's blocks are: else they
 * cannot be placed in the tree (counted). */
static int usable(rm_kv_mirror *m, const rm_kv_event *ev)
{
    if (ev->group_idx > 0) {
        m->st.skipped_group++;
        return 0;
    }
    if ((unsigned)ev->medium >= 32 || !(m->cfg.media & RM_KV_MEDIUM_BIT(ev->medium))) {
        m->st.skipped_medium++;
        return 0;
    }
    if (ev->type == RM_KV_BLOCK_STORED &&
        (ev->has_extra_keys || ev->lora_name || (ev->has_lora_id && ev->lora_id != 0))) {
        m->st.skipped_keyed++;
        return 0;
    }
    return 1;
}

static int apply_stored(rm_kv_mirror *m, rm_cache *c, const rm_kv_event *ev, uint64_t now_ms)
{
    uint32_t pt = m->cfg.page_tokens;
    if (ev->block_size != pt) {
        m->st.block_size_mismatches++;
        m->st.last_block_size = ev->block_size;
        return 0;
    }
    if ((uint64_t)ev->n_tokens != (uint64_t)ev->n_hashes * pt) {
        m->st.no_tokens++; /* e.g. blocks offloaded to CPU come without their tokens */
        return 0;
    }
    long k = chain(m, ev->has_parent, ev->parent);
    for (uint32_t i = 0; i < ev->n_hashes; i++) {
        if (find(m, ev->hashes[i]))
            continue;
        if (m->blocks.n >= m->cfg.max_blocks) {
            m->st.full += ev->n_hashes - i;
            break;
        }
        record(m, ev->hashes[i], i ? 1 : ev->has_parent, i ? ev->hashes[i - 1] : ev->parent,
               ev->tokens + (size_t)i * pt);
    }
    if (k < 0) {
        m->st.unknown_parent++;
        return 0;
    }
    size_t n = path_tokens(m, (size_t)k, ev->tokens, ev->n_tokens);
    rm_insert_result ir;
    rm_cache_result rc = rm_cache_insert(c, NULL, m->ns, strlen(m->ns), m->toks, n, 0, now_ms, &ir);
    m->st.dropped_tokens += rc == RM_CACHE_OK ? ir.dropped_tokens : n - ir.cached_tokens;
    return 1;
}

static int apply_removed(rm_kv_mirror *m, rm_cache *c, const rm_kv_event *ev)
{
    int any = 0;
    for (uint32_t i = 0; i < ev->n_hashes; i++) {
        kv_block *b = find(m, ev->hashes[i]);
        if (!b) {
            m->st.unknown_removed++;
            continue;
        }
        /* A broken chain is not in the tree: it left with its ancestor. */
        long k = chain(m, 1, b->hash);
        if (k > 0) {
            int busy;
            size_t n = path_tokens(m, (size_t)k, NULL, 0);
            rm_cache_remove_page(c, m->ns, strlen(m->ns), m->toks, n, &busy);
            m->st.busy += busy;
        }
        rm_ptrtab_del(&m->blocks, b);
        free(b);
        m->st.removed_blocks++;
        any = 1;
    }
    return any;
}

int rm_kv_mirror_apply(rm_kv_mirror *m, rm_cache *c, const rm_kv_event *ev, uint64_t now_ms)
{
    int applied = 0;
    if (!m->ns)
        return 0;
    switch (ev->type) {
    case RM_KV_BLOCK_STORED: applied = usable(m, ev) && apply_stored(m, c, ev, now_ms); break;
    case RM_KV_BLOCK_REMOVED: applied = usable(m, ev) && apply_removed(m, c, ev); break;
    case RM_KV_ALL_CLEARED:
        rm_kv_mirror_clear(m, c, 0);
        applied = 1;
        break;
    }
    m->st.applied += applied;
    return applied;
}

void rm_kv_mirror_stats_get(const rm_kv_mirror *m, rm_kv_mirror_stats *out)
{
    *out = m->st;
    out->blocks = m->blocks.n;
    out->bytes = m->blocks.n * block_bytes(m) + (m->blocks.mask + 1) * sizeof(void *) +
                 m->path_cap * sizeof *m->path + m->toks_cap * sizeof *m->toks;
}
