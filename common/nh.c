#include "nh.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline uint64_t nh_c(const uint32_t *t, const uint32_t *k, size_t n)
{
    uint64_t sum = 0;
    size_t i = 0;
    for (; i + 1 < n; i += 2)
        sum += (uint64_t)(uint32_t)(t[i] + k[i]) * (uint32_t)(t[i + 1] + k[i + 1]);
    if (i < n)
        sum += (uint64_t)(uint32_t)(t[i] + k[i]) * k[i + 1];
    return sum;
}

uint64_t rm_nh_scalar(const uint32_t *t, const uint32_t *k, size_t n)
{
    return nh_c(t, k, n);
}

static void pages_c(const uint32_t *t, const uint32_t *k, size_t page, size_t npages, uint64_t *out)
{
    size_t ks = page + (page & 1);
    for (size_t j = 0; j < npages; j++)
        out[j] = nh_c(t + j * page, k + j * ks, page);
}

#if defined(__x86_64__)
/* Each 64-bit lane holds a pair (x[2i], x[2i+1]); mul_epu32 multiplies the
 * lanes' low halves, so a copy shifted right by 32 pairs them up. */
static inline uint64_t nh_sse2_in(const uint32_t *t, const uint32_t *k, size_t n)
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
    return lanes[0] + lanes[1] + nh_c(t + i, k + i, n - i);
}

static uint64_t nh_sse2(const uint32_t *t, const uint32_t *k, size_t n)
{
    return nh_sse2_in(t, k, n);
}

static void pages_sse2(const uint32_t *t, const uint32_t *k, size_t page, size_t npages,
                       uint64_t *out)
{
    size_t ks = page + (page & 1);
    for (size_t j = 0; j < npages; j++)
        out[j] = nh_sse2_in(t + j * page, k + j * ks, page);
}

__attribute__((target("avx2"))) static inline uint64_t nh_avx2_in(const uint32_t *t,
                                                                  const uint32_t *k, size_t n)
{
    __m256i acc = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i x = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(t + i)),
                                     _mm256_loadu_si256((const __m256i *)(k + i)));
        acc = _mm256_add_epi64(acc, _mm256_mul_epu32(x, _mm256_srli_epi64(x, 32)));
    }
    __m128i half = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    uint64_t lanes[2];
    _mm_storeu_si128((__m128i *)lanes, half);
    return lanes[0] + lanes[1] + nh_c(t + i, k + i, n - i);
}

__attribute__((target("avx2"))) static uint64_t nh_avx2(const uint32_t *t, const uint32_t *k,
                                                        size_t n)
{
    return nh_avx2_in(t, k, n);
}

__attribute__((target("avx2"))) static void pages_avx2(const uint32_t *t, const uint32_t *k,
                                                       size_t page, size_t npages, uint64_t *out)
{
    size_t ks = page + (page & 1);
    for (size_t j = 0; j < npages; j++)
        out[j] = nh_avx2_in(t + j * page, k + j * ks, page);
}
#endif

size_t rm_nh_all(rm_nh_impl *out, size_t cap)
{
    rm_nh_impl all[3];
    size_t n = 0;
    all[n++] = (rm_nh_impl){"scalar", rm_nh_scalar, pages_c};
#if defined(__x86_64__)
    all[n++] = (rm_nh_impl){"sse2", nh_sse2, pages_sse2};
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        all[n++] = (rm_nh_impl){"avx2", nh_avx2, pages_avx2};
#endif
    for (size_t i = 0; i < n && i < cap; i++)
        out[i] = all[i];
    return n;
}

rm_nh_impl rm_nh_pick(void)
{
    rm_nh_impl all[3];
    size_t n = rm_nh_all(all, 3);
    return all[n - 1];
}
