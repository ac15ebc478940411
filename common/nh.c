#include "nh.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

uint64_t rm_nh_scalar(const uint32_t *t, const uint32_t *k, size_t n)
{
    uint64_t sum = 0;
    size_t i = 0;
    for (; i + 1 < n; i += 2)
        sum += (uint64_t)(uint32_t)(t[i] + k[i]) * (uint32_t)(t[i + 1] + k[i + 1]);
    if (i < n)
        sum += (uint64_t)(uint32_t)(t[i] + k[i]) * k[i + 1];
    return sum;
}

#if defined(__x86_64__)
/* Each 64-bit lane holds a pair (x[2i], x[2i+1]); mul_epu32 multiplies the
 * lane's low halves, so shifting a copy right by 32 pairs them up. */
static uint64_t nh_sse2(const uint32_t *t, const uint32_t *k, size_t n)
{
    __m128i acc = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128i x = _mm_add_epi32(_mm_loadu_si128((const __m128i *)(t + i)),
                                  _mm_loadu_si128((const __m128i *)(k + i)));
        acc = _mm_add_epi64(acc, _mm_mul_epu32(x, _mm_srli_epi64(x, 32)));
    }
    uint64_t lanes[2];
    _mm_storeu_si128((__m128i *)lanes, acc);
    return lanes[0] + lanes[1] + rm_nh_scalar(t + i, k + i, n - i);
}

__attribute__((target("avx2"))) static uint64_t nh_avx2(const uint32_t *t, const uint32_t *k,
                                                        size_t n)
{
    __m256i acc = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i x = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(t + i)),
                                     _mm256_loadu_si256((const __m256i *)(k + i)));
        acc = _mm256_add_epi64(acc, _mm256_mul_epu32(x, _mm256_srli_epi64(x, 32)));
    }
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, acc);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + rm_nh_scalar(t + i, k + i, n - i);
}
#endif

rm_nh_fn rm_nh_pick(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        return nh_avx2;
    return nh_sse2;
#else
    return rm_nh_scalar;
#endif
}

size_t rm_nh_all(rm_nh_fn *out, size_t cap)
{
    rm_nh_fn all[3];
    size_t n = 0;
    all[n++] = rm_nh_scalar;
#if defined(__x86_64__)
    all[n++] = nh_sse2;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        all[n++] = nh_avx2;
#endif
    for (size_t i = 0; i < n && i < cap; i++)
        out[i] = all[i];
    return n;
}
