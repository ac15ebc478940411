#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* Bumped whenever the forward arithmetic changes: KV computed by another
 * version must land in another cache namespace (it is part of the digest). */
#define RM_MODEL_ARITH_VERSION 1

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* The hot loops get an AVX2 clone picked at load time. Without FMA (the
 * sources build with -ffp-contract=off) AVX2 and SSE2 give the same bits:
 * only the number of lanes changes, never the order of a sum. */
#define RM_HOT __attribute__((target_clones("avx2", "default")))
#else
#define RM_HOT
#endif

/* Eight floats as one value (two SSE registers or one AVX register); the
 * unaligned loads and stores are macros, not functions, because passing a
 * 32-byte vector by value has no fixed ABI without AVX. */
typedef float v8f __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
#define V8_LOAD(p)     ((v8f) * (const v8u *)(const void *)(p))
#define V8_STORE(p, v) (*(v8u *)(void *)(p) = (v))

const char *rm_model_strerror(rm_model_err e)
{
    switch (e) {
    case RM_MODEL_OK: return "ok";
    case RM_MODEL_ECONFIG: return "bad model configuration";
    case RM_MODEL_EIO: return "cannot read or write the weights file";
    case RM_MODEL_EFORMAT: return "not a safetensors file";
    case RM_MODEL_ETENSOR: return "a tensor is missing, not F32 or misshapen";
    case RM_MODEL_ETOKEN: return "token id out of the vocabulary";
    case RM_MODEL_ECONTEXT: return "position past the maximum context";
    }
    return "unknown model error";
}

size_t rm_model_kv_bytes(const rm_model_config *cfg)
{
    return (size_t)2 * cfg->layers * cfg->d_model * sizeof(float);
}

/* ---- tensor table: one description drives generation, loading, saving -- */

enum init_kind { INIT_NORMAL, INIT_RESIDUAL, INIT_ONES, INIT_ZEROS };

typedef struct tensor {
    char name[48];
    float **ptr;
    uint64_t rows, cols; /* rows 0: a vector of cols */
    enum init_kind init;
} tensor;

/* Fills t (capacity 4 + 12 * layers) in arena order; returns the count. */
static size_t tensor_table(rm_model *m, tensor *t)
{
    const uint64_t d = m->cfg.d_model;
    size_t n = 0;
#define T(nm, p, r, c, k) t[n++] = (tensor){nm, p, r, c, k}
    T("wte.weight", &m->wte, m->cfg.vocab, d, INIT_NORMAL);
    T("wpe.weight", &m->wpe, m->positions, d, INIT_NORMAL);
    for (uint32_t l = 0; l < m->cfg.layers; l++) {
        rm_layer *L = &m->layer[l];
        static const char *const names[12] = {
            "ln_1.weight",        "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
            "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
            "mlp.c_fc.weight",    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias"};
        float **ptrs[12] = {&L->ln1_g, &L->ln1_b, &L->attn_w, &L->attn_b, &L->proj_w, &L->proj_b,
                            &L->ln2_g, &L->ln2_b, &L->fc_w,   &L->fc_b,   &L->fc2_w,  &L->fc2_b};
        const uint64_t rows[12] = {0, 0, d, 0, d, 0, 0, 0, d, 0, 4 * d, 0};
        const uint64_t cols[12] = {d, d, 3 * d, 3 * d, d, d, d, d, 4 * d, 4 * d, d, d};
        const enum init_kind kinds[12] = {INIT_ONES,     INIT_ZEROS, INIT_NORMAL,   INIT_ZEROS,
                                          INIT_RESIDUAL, INIT_ZEROS, INIT_ONES,     INIT_ZEROS,
                                          INIT_NORMAL,   INIT_ZEROS, INIT_RESIDUAL, INIT_ZEROS};
        for (int k = 0; k < 12; k++) {
            t[n] = (tensor){"", ptrs[k], rows[k], cols[k], kinds[k]};
            snprintf(t[n].name, sizeof t[n].name, "h.%u.%s", l, names[k]);
            n++;
        }
    }
    T("ln_f.weight", &m->lnf_g, 0, d, INIT_ONES);
    T("ln_f.bias", &m->lnf_b, 0, d, INIT_ZEROS);
#undef T
    return n;
}

static uint64_t tensor_floats(const tensor *t)
{
    return (t->rows ? t->rows : 1) * t->cols;
}

rm_model_err rm_model_check_config(const rm_model_config *c, char *err, size_t errlen)
{
    const char *why = NULL;
    if (!c->layers || c->layers > 1024)
        why = "layers must be 1..1024";
    else if (!c->d_model || c->d_model > 16384)
        why = "d_model must be 1..16384";
    else if (!c->heads || c->d_model % c->heads)
        why = "heads must divide d_model";
    else if (!c->vocab || c->vocab > (1u << 24))
        why = "vocab must be 1..16777216";
    else if (!c->max_context || c->max_context > (1u << 20))
        why = "max_context must be 1..1048576";
    else if ((uint64_t)c->vocab * c->d_model + (uint64_t)c->max_context * c->d_model +
                 12ull * c->layers * c->d_model * c->d_model >
             (1ull << 34))
        why = "the weights would exceed 64 GiB";
    if (why) {
        snprintf(err, errlen, "%s", why);
        return RM_MODEL_ECONFIG;
    }
    return RM_MODEL_OK;
}

/* Lays the tensors out in one arena (positions set by the caller). */
static void model_alloc(rm_model *m)
{
    m->layer = rm_xcalloc(m->cfg.layers, sizeof *m->layer);
    tensor *t = rm_xcalloc(4 + 12 * (size_t)m->cfg.layers, sizeof *t);
    size_t nt = tensor_table(m, t), total = 0;
    for (size_t i = 0; i < nt; i++)
        total += tensor_floats(&t[i]);
    m->arena = rm_xmalloc(total * sizeof(float));
    m->arena_floats = total;
    size_t off = 0;
    for (size_t i = 0; i < nt; i++) {
        *t[i].ptr = m->arena + off;
        off += tensor_floats(&t[i]);
    }
    free(t);
}

static void model_digest(rm_model *m)
{
    const rm_model_config *c = &m->cfg;
    uint32_t shape[6] = {
        RM_MODEL_ARITH_VERSION, c->layers, c->d_model, c->heads, c->vocab, m->positions};
    uint64_t h = rm_hash_u32s(shape, 6, 0x726d2d776f726b65ULL);
    /* The weights as their bit patterns; hashed in 1 Mi-float pieces chained
     * through the seed so any length works. */
    const uint32_t *w = (const uint32_t *)m->arena;
    for (size_t off = 0; off < m->arena_floats; off += 1u << 20) {
        size_t n = m->arena_floats - off < (1u << 20) ? m->arena_floats - off : (1u << 20);
        h = rm_hash_u32s(w + off, n, h);
    }
    m->digest = h;
}

/* N(0, 1) by Irwin-Hall over twelve 24-bit uniforms, summed as integers:
 * every step is exact, so every machine draws the same numbers. */
static uint64_t splitmix(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ULL;
    return rm_mix64(*s);
}

static double normal(uint64_t *s)
{
    int64_t sum = 0;
    for (int i = 0; i < 6; i++) {
        uint64_t r = splitmix(s);
        sum += (int64_t)(r >> 40) + (int64_t)((r >> 16) & 0xffffff);
    }
    return (double)(sum - 6 * (1LL << 24)) / (double)(1 << 24);
}

rm_model_err rm_model_init_seeded(rm_model *m, const rm_model_config *cfg, uint64_t seed, char *err,
                                  size_t errlen)
{
    memset(m, 0, sizeof *m);
    rm_model_err e = rm_model_check_config(cfg, err, errlen);
    if (e != RM_MODEL_OK)
        return e;
    m->cfg = *cfg;
    m->positions = cfg->max_context;
    model_alloc(m);
    tensor *t = rm_xcalloc(4 + 12 * (size_t)cfg->layers, sizeof *t);
    size_t nt = tensor_table(m, t);
    const double std = 0.02, res_std = 0.02 / sqrt(2.0 * cfg->layers);
    for (size_t i = 0; i < nt; i++) {
        uint64_t s = rm_mix64(seed ^ rm_mix64(i + 1));
        float *p = *t[i].ptr;
        uint64_t n = tensor_floats(&t[i]);
        for (uint64_t k = 0; k < n; k++) {
            switch (t[i].init) {
            case INIT_NORMAL: p[k] = (float)(normal(&s) * std); break;
            case INIT_RESIDUAL: p[k] = (float)(normal(&s) * res_std); break;
            case INIT_ONES: p[k] = 1.0f; break;
            case INIT_ZEROS: p[k] = 0.0f; break;
            }
        }
    }
    free(t);
    model_digest(m);
    return RM_MODEL_OK;
}

void rm_model_free(rm_model *m)
{
    free(m->arena);
    free(m->layer);
    memset(m, 0, sizeof *m);
}

/* ---- safetensors -------------------------------------------------------- */

/* Safetensors headers of real checkpoints are tens of KiB; the format's own
 * reference implementation refuses more than 100 MB. */
#define MAX_HEADER (100u << 20)

/* Reads (or, with writing, writes) exactly n bytes at off. Returns 0 or -1. */
static int full_io(int fd, void *buf, size_t n, uint64_t off, int writing)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = writing ? pwrite(fd, p, n, (off_t)off) : pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static uint64_t le64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

/* The entry for name, with or without the "transformer." prefix. */
static json_t *find_tensor(json_t *hdr, const char *name)
{
    json_t *t = json_object_get(hdr, name);
    if (!t) {
        char full[80];
        snprintf(full, sizeof full, "transformer.%s", name);
        t = json_object_get(hdr, full);
    }
    return json_is_object(t) ? t : NULL;
}

/* Shape of entry t as up to 2 dims; returns the number of dims or -1. */
static int entry_shape(json_t *t, uint64_t dims[2])
{
    json_t *shape = json_object_get(t, "shape");
    if (!json_is_array(shape) || json_array_size(shape) < 1 || json_array_size(shape) > 2)
        return -1;
    for (size_t i = 0; i < json_array_size(shape); i++) {
        json_t *v = json_array_get(shape, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return -1;
        dims[i] = (uint64_t)json_integer_value(v);
    }
    return (int)json_array_size(shape);
}

/* Reads the dims of a named 2-d tensor (for the config) or fails. */
static int dims_of(json_t *hdr, const char *name, uint64_t *rows, uint64_t *cols)
{
    json_t *t = find_tensor(hdr, name);
    uint64_t d[2];
    if (!t || entry_shape(t, d) != 2)
        return -1;
    *rows = d[0];
    *cols = d[1];
    return 0;
}

static rm_model_err fail(char *err, size_t errlen, rm_model_err e, const char *fmt, const char *a)
{
    snprintf(err, errlen, fmt, a);
    return e;
}

rm_model_err rm_model_load(rm_model *m, const char *path, uint32_t heads, uint32_t max_context,
                           char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return RM_MODEL_EIO;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    uint8_t b8[8];
    json_t *hdr = NULL;
    char *text = NULL;
    rm_model_err e = RM_MODEL_OK;
    tensor *t = NULL;
    if (size < 8 || full_io(fd, b8, 8, 0, 0) != 0) {
        e = fail(err, errlen, RM_MODEL_EFORMAT, "%s: shorter than a safetensors header", path);
        goto out;
    }
    uint64_t hlen = le64(b8);
    if (hlen > MAX_HEADER || hlen > (uint64_t)size - 8) {
        e = fail(err, errlen, RM_MODEL_EFORMAT, "%s: header length past the end of the file", path);
        goto out;
    }
    text = rm_xmalloc(hlen + 1);
    if (full_io(fd, text, hlen, 8, 0) != 0) {
        e = fail(err, errlen, RM_MODEL_EIO, "%s: cannot read the header", path);
        goto out;
    }
    json_error_t je;
    hdr = json_loadb(text, hlen, 0, &je);
    if (!json_is_object(hdr)) {
        snprintf(err, errlen, "%s: header is not a JSON object: %s", path, je.text);
        e = RM_MODEL_EFORMAT;
        goto out;
    }
    uint64_t data_off = 8 + hlen, data_len = (uint64_t)size - data_off;

    /* The config from the shapes. */
    rm_model_config c = {0};
    uint64_t vocab, d, positions, d2;
    if (dims_of(hdr, "wte.weight", &vocab, &d) || dims_of(hdr, "wpe.weight", &positions, &d2) ||
        d2 != d) {
        e = fail(err, errlen, RM_MODEL_ETENSOR, "%s: wte.weight / wpe.weight missing or misshapen",
                 path);
        goto out;
    }
    uint32_t layers = 0;
    for (;; layers++) {
        char name[48];
        snprintf(name, sizeof name, "h.%u.ln_1.weight", layers);
        if (!find_tensor(hdr, name))
            break;
    }
    json_t *nh = json_object_get(json_object_get(hdr, "__metadata__"), "n_head");
    if (json_is_string(nh))
        heads = (uint32_t)strtoul(json_string_value(nh), NULL, 10);
    if (!heads) {
        e = fail(err, errlen, RM_MODEL_ECONFIG,
                 "%s: no n_head in the metadata: give the number of heads", path);
        goto out;
    }
    if (vocab > UINT32_MAX || d > UINT32_MAX || positions > UINT32_MAX) {
        e = fail(err, errlen, RM_MODEL_ETENSOR, "%s: a dimension is too large", path);
        goto out;
    }
    if (!max_context || max_context > positions)
        max_context = (uint32_t)positions;
    c = (rm_model_config){layers, (uint32_t)d, heads, (uint32_t)vocab, max_context};
    if ((e = rm_model_check_config(&c, err, errlen)) != RM_MODEL_OK)
        goto out;
    m->cfg = c;
    m->positions = (uint32_t)positions;
    model_alloc(m);
    t = rm_xcalloc(4 + 12 * (size_t)layers, sizeof *t);
    size_t nt = tensor_table(m, t);
    for (size_t i = 0; i < nt; i++) {
        json_t *en = find_tensor(hdr, t[i].name);
        uint64_t dims[2] = {0, 0};
        int nd = en ? entry_shape(en, dims) : -1;
        const char *dtype = json_string_value(json_object_get(en, "dtype"));
        json_t *offs = json_object_get(en, "data_offsets");
        int shape_ok = t[i].rows ? nd == 2 && dims[0] == t[i].rows && dims[1] == t[i].cols
                                 : nd == 1 && dims[0] == t[i].cols;
        if (!en || !shape_ok) {
            e = fail(err, errlen, RM_MODEL_ETENSOR, "tensor %s missing or misshapen", t[i].name);
            goto out;
        }
        if (!dtype || strcmp(dtype, "F32")) {
            e = fail(err, errlen, RM_MODEL_ETENSOR, "tensor %s is not F32", t[i].name);
            goto out;
        }
        json_t *b = json_array_get(offs, 0), *eo = json_array_get(offs, 1);
        uint64_t bytes = tensor_floats(&t[i]) * sizeof(float);
        if (!json_is_integer(b) || !json_is_integer(eo) || json_integer_value(b) < 0 ||
            (uint64_t)json_integer_value(eo) != (uint64_t)json_integer_value(b) + bytes ||
            (uint64_t)json_integer_value(eo) > data_len) {
            e = fail(err, errlen, RM_MODEL_ETENSOR, "tensor %s: bad data_offsets", t[i].name);
            goto out;
        }
        if (full_io(fd, *t[i].ptr, bytes, data_off + (uint64_t)json_integer_value(b), 0) != 0) {
            e = fail(err, errlen, RM_MODEL_EIO, "tensor %s: short read", t[i].name);
            goto out;
        }
    }
    model_digest(m);
out:
    free(t);
    free(text);
    json_decref(hdr);
    close(fd);
    if (e != RM_MODEL_OK)
        rm_model_free(m);
    return e;
}

rm_model_err rm_model_save(const rm_model *m, const char *path, char *err, size_t errlen)
{
    rm_model copy = *m; /* tensor_table takes pointers to the fields */
    tensor *t = rm_xcalloc(4 + 12 * (size_t)m->cfg.layers, sizeof *t);
    size_t nt = tensor_table(&copy, t);
    json_t *hdr = json_object();
    char nh[16];
    snprintf(nh, sizeof nh, "%u", m->cfg.heads);
    json_object_set_new(hdr, "__metadata__", json_pack("{s:s, s:s}", "format", "pt", "n_head", nh));
    uint64_t off = 0;
    for (size_t i = 0; i < nt; i++) {
        uint64_t bytes = tensor_floats(&t[i]) * sizeof(float);
        json_t *shape = t[i].rows
                            ? json_pack("[I, I]", (json_int_t)t[i].rows, (json_int_t)t[i].cols)
                            : json_pack("[I]", (json_int_t)t[i].cols);
        json_object_set_new(hdr, t[i].name,
                            json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", shape,
                                      "data_offsets", (json_int_t)off, (json_int_t)(off + bytes)));
        off += bytes;
    }
    char *text = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(hdr);
    size_t hlen = strlen(text);
    uint8_t b8[8];
    for (int i = 0; i < 8; i++)
        b8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    rm_model_err e = RM_MODEL_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ok = fd >= 0 && full_io(fd, b8, 8, 0, 1) == 0 && full_io(fd, text, hlen, 8, 1) == 0;
    uint64_t at = 8 + hlen;
    for (size_t i = 0; ok && i < nt; i++) {
        size_t bytes = tensor_floats(&t[i]) * sizeof(float);
        ok = full_io(fd, *t[i].ptr, bytes, at, 1) == 0;
        at += bytes;
    }
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    if (!ok) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        e = RM_MODEL_EIO;
    }
    free(text);
    free(t);
    return e;
}

/* ---- forward pass ------------------------------------------------------- */

/* Queries per attention block (see attend). */
enum { ATT_BLOCK = 8 };

struct rm_model_scratch {
    float *x, *h, *qkv, *att, *mlp, *scores, *hf;
};

rm_model_scratch *rm_model_scratch_new(const rm_model *m)
{
    size_t d = m->cfg.d_model, c = RM_MODEL_CHUNK;
    rm_model_scratch *s = rm_xcalloc(1, sizeof *s);
    s->x = rm_xmalloc(c * d * sizeof(float));
    s->h = rm_xmalloc(c * d * sizeof(float));
    s->qkv = rm_xmalloc(c * 3 * d * sizeof(float));
    s->att = rm_xmalloc(c * d * sizeof(float));
    s->mlp = rm_xmalloc(c * 4 * d * sizeof(float));
    s->scores = rm_xmalloc((size_t)ATT_BLOCK * m->cfg.max_context * sizeof(float));
    s->hf = rm_xmalloc(d * sizeof(float));
    return s;
}

void rm_model_scratch_free(rm_model_scratch *s)
{
    if (!s)
        return;
    free(s->x);
    free(s->h);
    free(s->qkv);
    free(s->att);
    free(s->mlp);
    free(s->scores);
    free(s->hf);
    free(s);
}

/* a . b with a fixed 8-lane split: lane j sums a[i] * b[i] for i = j mod 8
 * in order, the lanes are added pairwise, then the tail. Inlined with a
 * constant n the lanes live in one vector register; the bits are the same
 * either way. */
static inline __attribute__((always_inline)) float dot(const float *a, const float *b, uint32_t n)
{
    v8f acc = {0, 0, 0, 0, 0, 0, 0, 0};
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8)
        acc += V8_LOAD(a + i) * V8_LOAD(b + i);
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* y[r][:] = b + sum over k in order of x[r][k] * w[k][:], for r < rows.
 * Every element is summed in the same order whatever rows is, so a row's
 * result does not depend on which rows share the call. */
RM_HOT static void matmul(float *y, const float *x, const float *w, const float *b, uint32_t rows,
                          uint32_t in, uint32_t out)
{
    uint32_t r = 0;
    for (; r + 4 <= rows; r += 4) { /* 4 rows x 8 columns in registers */
        const float *x0 = x + (size_t)r * in, *x1 = x0 + in, *x2 = x1 + in, *x3 = x2 + in;
        uint32_t j = 0;
        for (; j + 8 <= out; j += 8) {
            v8f a0 = V8_LOAD(b + j), a1 = a0, a2 = a0, a3 = a0;
            const float *wk = w + j;
            for (uint32_t k = 0; k < in; k++, wk += out) {
                v8f wv = V8_LOAD(wk);
                a0 += x0[k] * wv;
                a1 += x1[k] * wv;
                a2 += x2[k] * wv;
                a3 += x3[k] * wv;
            }
            float *y0 = y + (size_t)r * out + j;
            V8_STORE(y0, a0);
            V8_STORE(y0 + out, a1);
            V8_STORE(y0 + 2 * out, a2);
            V8_STORE(y0 + 3 * out, a3);
        }
        for (uint32_t rr = r; rr < r + 4; rr++)
            for (uint32_t jj = j; jj < out; jj++) {
                float acc = b[jj];
                for (uint32_t k = 0; k < in; k++)
                    acc += x[(size_t)rr * in + k] * w[(size_t)k * out + jj];
                y[(size_t)rr * out + jj] = acc;
            }
    }
    for (; r < rows; r++) {
        const float *xr = x + (size_t)r * in;
        uint32_t j = 0;
        for (; j + 8 <= out; j += 8) {
            v8f a0 = V8_LOAD(b + j);
            const float *wk = w + j;
            for (uint32_t k = 0; k < in; k++, wk += out)
                a0 += xr[k] * V8_LOAD(wk);
            V8_STORE(y + (size_t)r * out + j, a0);
        }
        for (; j < out; j++) {
            float acc = b[j];
            for (uint32_t k = 0; k < in; k++)
                acc += xr[k] * w[(size_t)k * out + j];
            y[(size_t)r * out + j] = acc;
        }
    }
}

static void layernorm(float *y, const float *x, const float *g, const float *b, uint32_t d)
{
    float mean = 0, var = 0;
    for (uint32_t i = 0; i < d; i++)
        mean += x[i];
    mean /= (float)d;
    for (uint32_t i = 0; i < d; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var /= (float)d;
    float inv = 1.0f / sqrtf(var + 1e-5f);
    for (uint32_t i = 0; i < d; i++)
        y[i] = (x[i] - mean) * inv * g[i] + b[i];
}

/* GPT-2's gelu_new (tanh approximation). */
static void gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    }
}

/* Causal attention for the queries at positions [pos, pos + nq) (q: row
 * stride 3d, all heads) over the K/V records of layer l; writes nq rows of
 * d floats. Queries go in blocks of ATT_BLOCK so each key is loaded once
 * per block, but every score, softmax and weighted sum is computed per
 * query exactly as it would be alone. hd is a compile-time constant in the
 * common cases (see attend), so the per-head loops unroll into registers. */
static inline __attribute__((always_inline)) void attend_hd(const rm_model *m, const float *kv,
                                                            uint32_t l, uint32_t pos, uint32_t nq,
                                                            const float *q, float *out,
                                                            float *scores, const uint32_t hd)
{
    const uint32_t d = m->cfg.d_model, smax = m->cfg.max_context;
    const size_t stride = 2 * (size_t)m->cfg.layers * d; /* floats per position */
    const float scale = 1.0f / sqrtf((float)hd);
    const float *k0 = kv + (size_t)l * 2 * d, *v0 = k0 + d;
    for (uint32_t h = 0; h < m->cfg.heads; h++) {
        for (uint32_t b0 = 0; b0 < nq; b0 += ATT_BLOCK) {
            const uint32_t nb = nq - b0 < ATT_BLOCK ? nq - b0 : ATT_BLOCK;
            const uint32_t last = pos + b0 + nb - 1;
            for (uint32_t s = 0; s <= last; s++) {
                const float *ks = k0 + s * stride + h * hd;
                /* queries of the block that see key s: positions >= s */
                uint32_t first = s > pos + b0 ? s - (pos + b0) : 0;
                for (uint32_t i = first; i < nb; i++)
                    scores[(size_t)i * smax + s] =
                        dot(q + (size_t)(b0 + i) * 3 * d + h * hd, ks, hd) * scale;
            }
            for (uint32_t i = 0; i < nb; i++) {
                const uint32_t p = pos + b0 + i;
                float *sc = scores + (size_t)i * smax, mx = -INFINITY, sum = 0;
                for (uint32_t s = 0; s <= p; s++)
                    mx = sc[s] > mx ? sc[s] : mx;
                for (uint32_t s = 0; s <= p; s++) {
                    sc[s] = expf(sc[s] - mx);
                    sum += sc[s];
                }
                const float inv = 1.0f / sum;
                for (uint32_t s = 0; s <= p; s++)
                    sc[s] *= inv;
                float *o = out + (size_t)(b0 + i) * d + h * hd;
                for (uint32_t k = 0; k < hd; k++)
                    o[k] = 0;
            }
            /* o_i += w_i[s] * v_s in position order, each value row loaded
             * once for the block. */
            for (uint32_t s = 0; s <= last; s++) {
                const float *vs = v0 + s * stride + h * hd;
                uint32_t first = s > pos + b0 ? s - (pos + b0) : 0;
                for (uint32_t i = first; i < nb; i++) {
                    const float w = scores[(size_t)i * smax + s];
                    float *o = out + (size_t)(b0 + i) * d + h * hd;
                    uint32_t k = 0;
                    for (; k + 8 <= hd; k += 8)
                        V8_STORE(o + k, V8_LOAD(o + k) + w * V8_LOAD(vs + k));
                    for (; k < hd; k++)
                        o[k] += w * vs[k];
                }
            }
        }
    }
}

RM_HOT static void attend(const rm_model *m, const float *kv, uint32_t l, uint32_t pos, uint32_t nq,
                          const float *q, float *out, float *scores)
{
    const uint32_t hd = m->cfg.d_model / m->cfg.heads;
    if (hd == 32) /* the default model */
        attend_hd(m, kv, l, pos, nq, q, out, scores, 32);
    else if (hd == 64) /* GPT-2 */
        attend_hd(m, kv, l, pos, nq, q, out, scores, 64);
    else
        attend_hd(m, kv, l, pos, nq, q, out, scores, hd);
}

static void add(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

/* One chunk of at most RM_MODEL_CHUNK positions through every layer. */
static void forward_chunk(const rm_model *m, rm_model_scratch *s, float *kv, uint32_t pos,
                          const uint32_t *tokens, uint32_t n)
{
    const uint32_t d = m->cfg.d_model;
    const size_t stride = 2 * (size_t)m->cfg.layers * d;
    for (uint32_t i = 0; i < n; i++) {
        const float *te = m->wte + (size_t)tokens[i] * d, *pe = m->wpe + (size_t)(pos + i) * d;
        for (uint32_t j = 0; j < d; j++)
            s->x[(size_t)i * d + j] = te[j] + pe[j];
    }
    for (uint32_t l = 0; l < m->cfg.layers; l++) {
        const rm_layer *L = &m->layer[l];
        for (uint32_t i = 0; i < n; i++)
            layernorm(s->h + (size_t)i * d, s->x + (size_t)i * d, L->ln1_g, L->ln1_b, d);
        matmul(s->qkv, s->h, L->attn_w, L->attn_b, n, d, 3 * d);
        for (uint32_t i = 0; i < n; i++) /* K then V, straight from the projection */
            memcpy(kv + (pos + i) * stride + (size_t)l * 2 * d, s->qkv + (size_t)i * 3 * d + d,
                   2 * (size_t)d * sizeof(float));
        attend(m, kv, l, pos, n, s->qkv, s->att, s->scores);
        matmul(s->h, s->att, L->proj_w, L->proj_b, n, d, d);
        add(s->x, s->h, (size_t)n * d);
        for (uint32_t i = 0; i < n; i++)
            layernorm(s->h + (size_t)i * d, s->x + (size_t)i * d, L->ln2_g, L->ln2_b, d);
        matmul(s->mlp, s->h, L->fc_w, L->fc_b, n, d, 4 * d);
        gelu(s->mlp, (size_t)n * 4 * d);
        matmul(s->h, s->mlp, L->fc2_w, L->fc2_b, n, 4 * d, d);
        add(s->x, s->h, (size_t)n * d);
    }
}

rm_model_err rm_model_forward(const rm_model *m, rm_model_scratch *s, void *kv, uint32_t pos,
                              const uint32_t *tokens, uint32_t n, float *logits)
{
    if ((uint64_t)pos + n > m->cfg.max_context)
        return RM_MODEL_ECONTEXT;
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] >= m->cfg.vocab)
            return RM_MODEL_ETOKEN;
    if (!n)
        return RM_MODEL_OK;
    uint32_t last = 0;
    for (uint32_t off = 0; off < n; off += RM_MODEL_CHUNK) {
        last = n - off < RM_MODEL_CHUNK ? n - off : RM_MODEL_CHUNK;
        forward_chunk(m, s, kv, pos + off, tokens + off, last);
    }
    if (logits) {
        const uint32_t d = m->cfg.d_model;
        layernorm(s->hf, s->x + (size_t)(last - 1) * d, m->lnf_g, m->lnf_b, d);
        for (uint32_t v = 0; v < m->cfg.vocab; v++)
            logits[v] = dot(s->hf, m->wte + (size_t)v * d, d);
    }
    return RM_MODEL_OK;
}
