/* radixmesh analyze: what prefix sharing would buy, offline.
 *
 * All requests go into one radix tree (no eviction). Every request ends on a
 * node boundary (edges are split where a request ends), so after a second
 * pass that counts, for each node, the requests whose path passes through
 * it, a node's count is exactly the number of requests that contain its
 * whole prefix. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "flags.h"
#include "radix.h"
#include "trace.h"
#include "util.h"

typedef struct preset {
    const char *name;
    uint64_t layers, kv_heads, head_dim, dtype_bytes;
} preset;

/* Published model configs (num_hidden_layers, num_key_value_heads,
 * head_dim), bf16 KV. */
static const preset presets[] = {
    {"llama-3-8b", 32, 8, 128, 2},
    {"llama-3-70b", 80, 8, 128, 2},
    {"qwen2.5-7b", 28, 4, 128, 2},
};

typedef struct tnode {
    const rm_radix_node *n;
    size_t depth; /* tokens from the root to the end of this node */
} tnode;

typedef struct kids {
    const rm_radix_node **v;
    size_t n, cap;
} kids;

/* Children of every node, for drawing: the tree keeps none itself. */
typedef struct tree_index {
    const rm_radix_node **all;
    kids *children; /* parallel to all */
    size_t n;
    kids roots; /* children of the namespace roots */
} tree_index;

/* "224 B", "1.50 MiB", "933.55 GiB". */
static const char *fmt_bytes(double b, char *buf, size_t len)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.2f %s" : "%.0f %s", b, units[u]);
    return buf;
}

static int ptr_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const void *const *)a, y = (uintptr_t) * (const void *const *)b;
    return x < y ? -1 : x > y;
}

static void collect(void *ctx, const rm_radix_node *n)
{
    tree_index *ix = ctx;
    ix->all[ix->n++] = n;
}

static void kid_push(kids *k, const rm_radix_node *n)
{
    k->v = rm_xgrow(k->v, k->n, &k->cap, sizeof *k->v, 4);
    k->v[k->n++] = n;
}

static int by_hits_desc(const void *a, const void *b)
{
    const rm_radix_node *x = *(const rm_radix_node *const *)a,
                        *y = *(const rm_radix_node *const *)b;
    return x->hits < y->hits ? 1 : x->hits > y->hits ? -1 : 0;
}

static kids *children_of(tree_index *ix, const rm_radix_node *n)
{
    if (!n->parent->parent)
        return &ix->roots;
    const rm_radix_node **p = bsearch(&n->parent, ix->all, ix->n, sizeof *ix->all, ptr_cmp);
    return &ix->children[p - ix->all];
}

static void build_index(const rm_radix *t, tree_index *ix)
{
    memset(ix, 0, sizeof *ix);
    ix->all = rm_xmalloc(sizeof *ix->all * (t->nodes + 1));
    rm_radix_foreach(t, collect, ix);
    qsort(ix->all, ix->n, sizeof *ix->all, ptr_cmp);
    ix->children = rm_xcalloc(ix->n + 1, sizeof *ix->children);
    for (size_t i = 0; i < ix->n; i++)
        kid_push(children_of(ix, ix->all[i]), ix->all[i]);
    /* (Leaves have no array at all: qsort must not see a NULL one.) */
    if (ix->roots.n > 1)
        qsort(ix->roots.v, ix->roots.n, sizeof *ix->roots.v, by_hits_desc);
    for (size_t i = 0; i < ix->n; i++)
        if (ix->children[i].n > 1)
            qsort(ix->children[i].v, ix->children[i].n, sizeof *ix->children[i].v, by_hits_desc);
}

static void free_index(tree_index *ix)
{
    for (size_t i = 0; i < ix->n; i++)
        free(ix->children[i].v);
    free(ix->children);
    free(ix->roots.v);
    free(ix->all);
}

static void draw(tree_index *ix, const kids *k, const rm_radix *t, int level, int max_level,
                 const char *indent)
{
    size_t show = k->n < 5 ? k->n : 5;
    for (size_t i = 0; i < show; i++) {
        const rm_radix_node *n = k->v[i];
        int last = i + 1 == show && show == k->n;
        const uint32_t *tok = rm_radix_node_tokens(n);
        printf("%s%s [%zu tokens: %u %u %u ...] x%u requests\n", indent, last ? "`--" : "|--",
               (size_t)n->npages * t->page_tokens, tok[0], tok[1 % t->page_tokens],
               tok[2 % t->page_tokens], n->hits);
        if (level + 1 < max_level) {
            char sub[256];
            /* Each level adds 4 columns; a tree deeper than sub holds is cut. */
            int w = snprintf(sub, sizeof sub, "%s%s", indent, last ? "    " : "|   ");
            if (w < 0 || (size_t)w >= sizeof sub)
                continue;
            const rm_radix_node **p = bsearch(&n, ix->all, ix->n, sizeof *ix->all, ptr_cmp);
            draw(ix, &ix->children[p - ix->all], t, level + 1, max_level, sub);
        }
    }
    if (show < k->n)
        printf("%s`-- ... %zu more branches\n", indent, k->n - show);
}

/* Returns 0, or -1 after saying on stderr why the chart is not written. */
static int write_svg(const char *path, const double *without, const double *with, size_t n,
                     double bytes_per_token)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "radixmesh analyze: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    const double W = 720, H = 400, L = 70, B = 50, R = 20, T = 40;
    double ymax = without[n - 1] * bytes_per_token / (1u << 30);
    if (ymax <= 0)
        ymax = 1;
    fprintf(f,
            "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' "
            "font-family='sans-serif' font-size='12'>\n"
            "<rect width='100%%' height='100%%' fill='white'/>\n"
            "<text x='%.0f' y='24' font-size='15'>KV memory as requests grow: without vs with "
            "prefix sharing</text>\n"
            "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f' stroke='black'/>\n"
            "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f' stroke='black'/>\n"
            "<text x='%.0f' y='%.0f' text-anchor='middle'>requests (%zu)</text>\n"
            "<text x='14' y='%.0f' transform='rotate(-90 14 %.0f)' "
            "text-anchor='middle'>GiB of KV</text>\n",
            W, H, L, L, H - B, W - R, H - B, L, T, L, H - B, (L + W - R) / 2, H - 12, n,
            (T + H - B) / 2, (T + H - B) / 2);
    for (int i = 0; i <= 4; i++) {
        double y = H - B - (H - B - T) * i / 4.0;
        fprintf(f, "<text x='%.0f' y='%.0f' text-anchor='end'>%.1f</text>\n", L - 6, y + 4,
                ymax * i / 4.0);
    }
    const char *colors[2] = {"#d9534f", "#2a7ae2"};
    const double *series[2] = {without, with};
    for (int s = 0; s < 2; s++) {
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' points='", colors[s]);
        size_t step = n > 600 ? n / 600 : 1;
        for (size_t i = 0; i < n; i += step) {
            double x = L + (W - R - L) * (double)(i + 1) / (double)n;
            double y = H - B - (H - B - T) * (series[s][i] * bytes_per_token / (1u << 30)) / ymax;
            fprintf(f, "%.1f,%.1f ", x, y);
        }
        fprintf(f, "'/>\n<text x='%.0f' y='%.0f' fill='%s'>%s sharing: %.2f GiB</text>\n", L + 10,
                T + 16.0 + 16 * s, colors[s], s ? "with" : "without",
                series[s][n - 1] * bytes_per_token / (1u << 30));
    }
    fprintf(f, "</svg>\n");
    int failed = ferror(f);
    if (fclose(f) != 0 || failed) {
        fprintf(stderr, "radixmesh analyze: write error on %s\n", path);
        return -1;
    }
    return 0;
}

/* Tokens a shared prefix saves: (requests - 1) x its length. */
static int by_saving(const void *a, const void *b)
{
    const tnode *x = a, *y = b;
    double sx = (double)(x->n->hits - 1) * (double)x->depth;
    double sy = (double)(y->n->hits - 1) * (double)y->depth;
    return sx < sy ? 1 : sx > sy ? -1 : 0;
}

int rm_cmd_analyze(int argc, char **argv)
{
    const char *model = "llama-3-8b", *svg = NULL;
    uint64_t block = 512, limit = 0, page = 16, top = 10, depth = 3;
    uint64_t layers = 0, kv_heads = 0, head_dim = 0, dtype_bytes = 0;
    const rm_flag flags[] = {
        {"block-tokens", RM_FLAG_AT(&block), "tokens per Mooncake block", 1, 65536},
        {"limit", RM_FLAG_AT(&limit), "analyze at most N requests (0: all)", 0, 0},
        {"page-tokens", RM_FLAG_AT(&page), "sharing granularity (a KV page)", 1, 65536},
        {"model", RM_FLAG_AT(&model), "geometry preset: llama-3-8b, llama-3-70b, qwen2.5-7b", 0, 0},
        {"layers", RM_FLAG_AT(&layers), "model layers (overrides the preset)", 0, 4096},
        {"kv-heads", RM_FLAG_AT(&kv_heads), "KV heads (overrides the preset)", 0, 4096},
        {"head-dim", RM_FLAG_AT(&head_dim), "head dimension (overrides the preset)", 0, 65536},
        {"dtype-bytes", RM_FLAG_AT(&dtype_bytes), "bytes per KV element (overrides)", 0, 16},
        {"top", RM_FLAG_AT(&top), "how many shared prefixes to list", 0, 1000},
        {"depth", RM_FLAG_AT(&depth), "levels of the tree picture", 0, 16},
        {"svg", RM_FLAG_AT(&svg), "write a chart of memory with/without sharing here", 0, 0},
    };
    rm_flagset fs = {"radixmesh analyze", "FILE [options]", "RADIXMESH", flags,
                     (int)RM_ARRAY_LEN(flags)};
    const char *pos[1];
    int npos = 0;
    rm_flags_parse(&fs, argc, argv, pos, 1, &npos);
    if (npos != 1)
        rm_flags_fail(&fs, "give one trace FILE (Mooncake JSONL or JSONL of token arrays)");
    const preset *p = NULL;
    for (size_t i = 0; i < RM_ARRAY_LEN(presets); i++)
        if (!strcmp(model, presets[i].name))
            p = &presets[i];
    if (!p)
        rm_flags_fail(&fs, "--model: unknown preset '%s' (llama-3-8b, llama-3-70b, qwen2.5-7b)",
                      model);
    preset g = *p;
    if (layers)
        g.layers = layers;
    if (kv_heads)
        g.kv_heads = kv_heads;
    if (head_dim)
        g.head_dim = head_dim;
    if (dtype_bytes)
        g.dtype_bytes = dtype_bytes;
    double bpt = 2.0 * (double)(g.layers * g.kv_heads * g.head_dim * g.dtype_bytes); /* K and V */

    rm_trace t;
    char err[512];
    if (rm_trace_load(pos[0], block, limit, &t, err, sizeof err) != 0) {
        fprintf(stderr, "radixmesh analyze: %s\n", err);
        return 2;
    }
    rm_radix tree;
    rm_radix_init(&tree, (uint32_t)page, RM_EVICT_LRU, 1);
    rm_radix_node *root;
    rm_radix_root(&tree, "", 0, 1, &root);
    double *without = rm_xmalloc(sizeof(double) * (t.n + 1));
    double *with = rm_xmalloc(sizeof(double) * (t.n + 1));
    uint64_t total = 0, unique = 0, next_page = 0;
    uint32_t *pages = NULL;
    size_t pages_cap = 0;
    for (size_t i = 0; i < t.n; i++) {
        const rm_trace_req *r = &t.req[i];
        size_t aligned = r->n / page * page;
        rm_radix_node *last;
        size_t have = rm_radix_match(&tree, root, r->tokens, aligned, RM_MATCH_SPLIT, 0, &last);
        size_t np = (aligned - have) / page;
        if (np > pages_cap) {
            pages_cap = np;
            pages = rm_xrealloc(pages, sizeof *pages * pages_cap);
        }
        for (size_t k = 0; k < np; k++)
            pages[k] = (uint32_t)next_page++; /* ids only: no pool behind them */
        if (np)
            rm_radix_attach(&tree, last, r->tokens + have, pages, (uint32_t)np, 0);
        total += r->n;
        unique += (aligned - have) + (r->n - aligned); /* a partial page is never shared */
        without[i] = (double)total;
        with[i] = (double)unique;
    }
    /* Second pass: count the requests through each node. */
    for (size_t i = 0; i < t.n; i++) {
        rm_radix_node *last;
        rm_radix_match(&tree, root, t.req[i].tokens, t.req[i].n / page * page, RM_MATCH_HIT, 0,
                       &last);
    }
    char b1[32], b2[32];
    printf("%zu requests, %" PRIu64 " prompt tokens, %" PRIu64 " unique (page %" PRIu64
           ")\ndedup ratio (shareable / total tokens): %.4f\n",
           t.n, total, unique, page, total ? (double)(total - unique) / (double)total : 0.0);
    printf("KV memory at %s geometry (%" PRIu64 " layers x %" PRIu64 " KV heads x %" PRIu64
           " dims x %" PRIu64 " B, K+V = %.0f B/token):\n  without sharing %s, with "
           "sharing %s (%.1f%% saved)\n",
           p->name, g.layers, g.kv_heads, g.head_dim, g.dtype_bytes, bpt,
           fmt_bytes((double)total * bpt, b1, sizeof b1),
           fmt_bytes((double)unique * bpt, b2, sizeof b2),
           total ? 100.0 * (double)(total - unique) / (double)total : 0.0);

    tree_index ix;
    build_index(&tree, &ix);
    /* Top shared prefixes: deepest node of each request count, by count. */
    tnode *shared = rm_xmalloc(sizeof *shared * (ix.n + 1));
    size_t ns = 0;
    for (size_t i = 0; i < ix.n; i++)
        if (ix.all[i]->hits >= 2)
            shared[ns++] = (tnode){ix.all[i], rm_radix_depth_tokens(&tree, ix.all[i])};
    qsort(shared, ns, sizeof *shared, by_saving);
    printf("\ntop shared prefixes (requests x prefix tokens):\n");
    size_t shown = 0;
    for (size_t i = 0; i < ns && shown < top; i++) {
        /* A prefix shared by exactly as many requests as its only child
         * adds nothing new: show the longest form of each sharing group. */
        kids *k = &ix.children[(const rm_radix_node **)bsearch(&shared[i].n, ix.all, ix.n,
                                                               sizeof *ix.all, ptr_cmp) -
                               ix.all];
        if (k->n == 1 && k->v[0]->hits == shared[i].n->hits)
            continue;
        printf("  %6u requests share a %zu-token prefix\n", shared[i].n->hits, shared[i].depth);
        shown++;
    }
    printf("\nradix tree, top %" PRIu64 " levels (x = requests through the node):\nroot\n", depth);
    if (depth)
        draw(&ix, &ix.roots, &tree, 0, (int)depth, "");
    int rc = 0;
    if (svg && t.n) {
        if (write_svg(svg, without, with, t.n, bpt) == 0)
            printf("\nchart written to %s\n", svg);
        else
            rc = 1;
    }
    free(shared);
    free_index(&ix);
    free(pages);
    free(without);
    free(with);
    rm_radix_destroy(&tree);
    rm_trace_free(&t);
    return rc;
}
