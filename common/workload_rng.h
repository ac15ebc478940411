/* workload_rng.h -- the random draws of the workload generators.
 *
 * A splitmix64 stream: the same seed gives the same draws on every machine
 * (the continuous ones go through libm's log/exp/cos, so bit-identical
 * output also needs IEEE doubles and a correctly rounded libm, as glibc's
 * are). Each generator derives separate streams for separate purposes
 * (parameters, arrivals, one per session), so adding a draw to one session
 * does not shift every later session. */
#ifndef RM_WORKLOAD_RNG_H
#define RM_WORKLOAD_RNG_H

#include <math.h>
#include <stdint.h>

#include "util.h"

typedef struct rm_wl_rng {
    uint64_t s;
} rm_wl_rng;

/* A stream for (seed, purpose, index): independent for different triples. */
static inline rm_wl_rng rm_wl_stream(uint64_t seed, uint64_t purpose, uint64_t index)
{
    rm_wl_rng r = {
        rm_mix64(rm_mix64(seed ^ 0x5eed5eed5eed5eedULL) + purpose * 0x9e3779b97f4a7c15ULL) ^
        rm_mix64(index + 0x632be59bd9b4e019ULL)};
    return r;
}

static inline uint64_t rm_wl_u64(rm_wl_rng *r)
{
    r->s += 0x9e3779b97f4a7c15ULL;
    return rm_mix64(r->s);
}

/* Uniform in [0, 1). */
static inline double rm_wl_unit(rm_wl_rng *r)
{
    return (double)(rm_wl_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform in [lo, hi). */
static inline double rm_wl_uniform(rm_wl_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * rm_wl_unit(r);
}

/* Uniform integer in [lo, hi]. */
static inline uint64_t rm_wl_int(rm_wl_rng *r, uint64_t lo, uint64_t hi)
{
    return lo + rm_wl_u64(r) % (hi - lo + 1);
}

/* log-uniform in [lo, hi): as many draws in [100, 200) as in [200, 400). */
static inline double rm_wl_loguniform(rm_wl_rng *r, double lo, double hi)
{
    return lo * exp(log(hi / lo) * rm_wl_unit(r));
}

/* Exponential with this mean (Poisson arrivals). */
static inline double rm_wl_exponential(rm_wl_rng *r, double mean)
{
    return -mean * log(1.0 - rm_wl_unit(r));
}

/* Log-normal with this median and log-space sigma, clipped to [lo, hi]. */
static inline double rm_wl_lognormal(rm_wl_rng *r, double median, double sigma, double lo,
                                     double hi)
{
    double u1 = 1.0 - rm_wl_unit(r), u2 = rm_wl_unit(r);
    double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
    double v = median * exp(sigma * z);
    return v < lo ? lo : v > hi ? hi : v;
}

/* The mean of a log-normal with this median and log-space sigma, unclipped:
 * what the generators size their arrival rates by. */
static inline double rm_wl_lognormal_mean(double median, double sigma)
{
    return median * exp(sigma * sigma / 2);
}

#endif
