/* libFuzzer target: the radix cache against the naive oracle of
 * tests/unit/test_cache_fuzz.c (which models every eviction policy exactly),
 * driven by the fuzzer's bytes, with a page allocator that fails whenever
 * the input says so. Any broken invariant or oracle mismatch aborts. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "pool.h"

#define CACHE_FUZZ_BYTES
#include "../unit/test_cache_fuzz.c"

static const uint8_t *in;
static size_t in_len, in_pos;

static uint64_t rnd(void)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (in_pos < in_len ? in[in_pos++] : 0);
    return v;
}

static int input_exhausted(void)
{
    return in_pos >= in_len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    static const uint32_t pages[] = {1, 4, 16};
    static const uint64_t pools[] = {12, 48, 200, 4096}; /* 4096: no pressure at these lengths */
    uint32_t pt = pages[data[0] % 3];
    uint64_t pool = pools[(data[0] >> 2) % 4];
    int kv = (data[0] >> 4) & 1;
    int failing = (data[0] >> 5) & 1;
    uint32_t max_ns = (data[0] >> 6) & 1 ? 1 + (data[0] >> 7) : 1024; /* 1 or 2 slots for 3 names */
    in = data + 1;
    in_len = size - 1;
    in_pos = 0;
    pool_failures = 0;
    rm_t_fail = 0;
    SEQ_PCT = size > 2 && data[1] % 4 == 0 ? 10 + data[1] % 80 : 0; /* now and then a cap */
    run(pt, pool, kv, 100000, max_ns, -1, failing); /* the policy: the input's next bytes */
    if (rm_t_fail)
        abort(); /* the CHECK lines above say what broke */
    return 0;
}
