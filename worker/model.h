/* model.h -- a GPT-2-architecture decoder-only transformer, fp32, on the CPU.
 *
 * Token + learned position embeddings, pre-LayerNorm blocks (causal
 * multi-head attention, GELU-tanh MLP of 4 x d_model), final LayerNorm,
 * output projection tied to the token embedding. Weights are either
 * generated from a seed (GPT-2's initialisation: N(0, 0.02), residual
 * projections scaled by 1/sqrt(2 * layers), LayerNorm 1/0, biases 0) or
 * loaded from a GPT-2 safetensors file (worker/README.md, "Weights").
 *
 * KV layout. Every position owns exactly rm_model_kv_bytes(cfg) =
 * 2 * layers * d_model * 4 bytes, contiguous: for each layer in order, K
 * [d_model floats] then V [d_model floats] (heads side by side, head h at
 * [h * d_model / heads, ...)), fp32 little-endian. A KV buffer is these
 * records for positions 0, 1, 2, ... back to back, which is also what a
 * cache node stores per token.
 *
 * Bit-identity. Each position's K, V and hidden state are computed with the
 * same arithmetic whatever the call or chunk it is computed in: matrix
 * products sum over the input dimension in index order per output element,
 * dot products use a fixed 8-lane split, softmax sums go in position order,
 * and the worker sources are compiled with -ffp-contract=off (no fused
 * multiply-add that one code path would use and another not). So a prefill
 * of positions [p, n) on top of KV for [0, p) read from anywhere gives
 * bit-identical KV and logits to a prefill of [0, n) -- on the same build
 * and CPU family (libm's expf/tanhf may differ between machines).
 *
 * Threads: an rm_model is immutable after creation and may be shared; an
 * rm_model_scratch belongs to one thread at a time. */
#ifndef RM_MODEL_H
#define RM_MODEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct rm_model_config {
    uint32_t layers, d_model, heads, vocab;
    uint32_t max_context; /* positions the model serves (<= rows of wpe) */
} rm_model_config;

/* The documented defaults: 8,192 KV bytes per token. */
#define RM_MODEL_CONFIG_DEFAULT                                                                    \
    {                                                                                              \
        4, 256, 8, 8192, 4096                                                                      \
    }

typedef enum rm_model_err {
    RM_MODEL_OK = 0,
    RM_MODEL_ECONFIG,  /* a dimension is 0, too large, or d_model % heads != 0 */
    RM_MODEL_EIO,      /* the file cannot be opened, read or written */
    RM_MODEL_EFORMAT,  /* not a safetensors file (header size, JSON) */
    RM_MODEL_ETENSOR,  /* a tensor is missing, not F32, misshapen or out of bounds */
    RM_MODEL_ETOKEN,   /* a token id >= vocab */
    RM_MODEL_ECONTEXT, /* a position >= max_context */
} rm_model_err;

const char *rm_model_strerror(rm_model_err e);

typedef struct rm_layer {
    float *ln1_g, *ln1_b;
    float *attn_w, *attn_b; /* [d][3d]: x @ W gives q | k | v */
    float *proj_w, *proj_b; /* [d][d] */
    float *ln2_g, *ln2_b;
    float *fc_w, *fc_b;   /* [d][4d] */
    float *fc2_w, *fc2_b; /* [4d][d] */
} rm_layer;

typedef struct rm_model {
    rm_model_config cfg;
    uint32_t positions; /* rows of wpe */
    float *wte;         /* [vocab][d] */
    float *wpe;         /* [positions][d] */
    float *lnf_g, *lnf_b;
    rm_layer *layer;
    float *arena; /* every weight above, one allocation */
    size_t arena_floats;
    uint64_t digest; /* of the config, the arithmetic version and every weight */
} rm_model;

/* KV bytes per position for cfg: 2 * layers * d_model * 4. */
size_t rm_model_kv_bytes(const rm_model_config *cfg);

/* Checks cfg's dimensions (0 < each; d_model % heads == 0; sizes that fit
 * in memory arithmetic). Returns RM_MODEL_OK or RM_MODEL_ECONFIG with the
 * reason in err. */
rm_model_err rm_model_check_config(const rm_model_config *cfg, char *err, size_t errlen);

/* Fills m with weights generated from seed (same seed and config: same
 * weights, bit for bit, on any machine: the generator uses integer
 * arithmetic and exact float sums only). Free with rm_model_free. */
rm_model_err rm_model_init_seeded(rm_model *m, const rm_model_config *cfg, uint64_t seed, char *err,
                                  size_t errlen);

/* Loads a GPT-2 safetensors file (F32 tensors wte.weight, wpe.weight,
 * h.N.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj}.{weight,bias},
 * ln_f.{weight,bias}; an optional "transformer." prefix; other tensors are
 * ignored). layers, d_model, vocab and positions come from the shapes;
 * heads from the header's __metadata__ "n_head" (rm_model_save writes it),
 * else from the argument (GPT-2's own files have none: 12 for gpt2);
 * max_context is the argument clamped to the positions (0: the positions).
 * Free with rm_model_free. */
rm_model_err rm_model_load(rm_model *m, const char *path, uint32_t heads, uint32_t max_context,
                           char *err, size_t errlen);

/* Writes m in the format rm_model_load reads (n_head in __metadata__). */
rm_model_err rm_model_save(const rm_model *m, const char *path, char *err, size_t errlen);

void rm_model_free(rm_model *m);

/* Activations for up to RM_MODEL_CHUNK positions at a time, and one row of
 * attention scores per max_context. */
enum { RM_MODEL_CHUNK = 64 };
typedef struct rm_model_scratch rm_model_scratch;
rm_model_scratch *rm_model_scratch_new(const rm_model *m);
void rm_model_scratch_free(rm_model_scratch *s);

/* Runs tokens[0, n) at positions [pos, pos + n). kv holds the KV records of
 * positions [0, pos) and receives those of [pos, pos + n). logits (vocab
 * floats, may be NULL) receives the last position's. Fails before touching
 * kv if a token id >= vocab (RM_MODEL_ETOKEN) or pos + n > max_context
 * (RM_MODEL_ECONTEXT). n == 0 is a no-op. */
rm_model_err rm_model_forward(const rm_model *m, rm_model_scratch *s, void *kv, uint32_t pos,
                              const uint32_t *tokens, uint32_t n, float *logits);

#endif
