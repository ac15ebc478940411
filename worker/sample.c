#include "sample.h"

#include <math.h>
#include <stdlib.h>

#include "util.h"

double rm_rng_uniform(rm_rng *rng)
{
    rng->s += 0x9e3779b97f4a7c15ULL;
    return (double)(rm_mix64(rng->s) >> 11) * 0x1.0p-53;
}

int rm_sample_params_valid(const rm_sample_params *p)
{
    return isfinite(p->temperature) && p->temperature >= 0 && p->top_p > 0 && p->top_p <= 1;
}

static uint32_t argmax(const float *x, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Orders token ids by probability, highest first, ids breaking ties: a
 * total order, so qsort's instability cannot change the result. */
static int by_prob(const void *a, const void *b, void *arg)
{
    const float *probs = arg;
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    if (probs[i] != probs[j])
        return probs[i] > probs[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

uint32_t rm_sample(const float *logits, uint32_t vocab, const rm_sample_params *p, rm_rng *rng,
                   float *scratch, uint32_t *idx)
{
    uint32_t best = argmax(logits, vocab);
    if (p->temperature == 0 || vocab == 1)
        return best;
    const double inv_t = 1.0 / p->temperature, mx = logits[best];
    double total = 0;
    for (uint32_t i = 0; i < vocab; i++) {
        scratch[i] = (float)exp(((double)logits[i] - mx) * inv_t);
        total += scratch[i];
    }
    uint32_t kept = vocab;
    for (uint32_t i = 0; i < vocab; i++)
        idx[i] = i;
    if (p->top_p < 1) {
        qsort_r(idx, vocab, sizeof *idx, by_prob, scratch);
        double mass = 0, want = p->top_p * total;
        for (kept = 0; kept < vocab;) {
            mass += scratch[idx[kept++]];
            if (mass >= want)
                break;
        }
        total = mass;
    }
    double u = rm_rng_uniform(rng) * total, acc = 0;
    for (uint32_t k = 0; k < kept; k++) {
        acc += scratch[idx[k]];
        if (u < acc)
            return idx[k];
    }
    return idx[kept - 1]; /* u fell on the rounding edge of the last token */
}
