/* sample.h -- choosing the next token from logits: greedy, or seeded
 * sampling with temperature and nucleus (top-p) cut.
 *
 * A pure function of (logits, parameters, RNG state): the same inputs give
 * the same token on every call, so seeded sampling is reproducible and two
 * workers given bit-identical logits choose identical tokens. */
#ifndef RM_SAMPLE_H
#define RM_SAMPLE_H

#include <stdint.h>

/* splitmix64 state; seed it with any value. */
typedef struct rm_rng {
    uint64_t s;
} rm_rng;

/* A uniform double in [0, 1) with 53 random bits; advances rng. */
double rm_rng_uniform(rm_rng *rng);

typedef struct rm_sample_params {
    float temperature; /* 0: greedy (argmax, lowest id on ties); else > 0 */
    float top_p;       /* (0, 1]: keep the most likely tokens up to this mass */
} rm_sample_params;

/* Returns 1 if p is valid (temperature >= 0 and finite, 0 < top_p <= 1). */
int rm_sample_params_valid(const rm_sample_params *p);

/* The next token for logits[0, vocab). scratch: vocab floats and idx: vocab
 * uint32s of caller memory (only used when sampling). Greedy consumes no
 * randomness. Sampling draws exactly one rm_rng_uniform. */
uint32_t rm_sample(const float *logits, uint32_t vocab, const rm_sample_params *p, rm_rng *rng,
                   float *scratch, uint32_t *idx);

#endif
