#include "prefix_key.h"

#include <string.h>

#include "util.h"

uint64_t rm_hash_bytes(const void *p, size_t len, uint64_t seed)
{
    const unsigned char *b = p;
    uint64_t h = seed ^ (0x9e3779b97f4a7c15ULL * (len + 1));
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8); /* little-endian hosts only, like the rest */
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    uint64_t tail = 0;
    for (size_t k = 0; i + k < len; k++)
        tail |= (uint64_t)b[i + k] << (8 * k);
    h = (h ^ tail) * 0xc4ceb9fe1a85ec53ULL;
    return rm_mix64(h);
}

uint64_t rm_prefix_ns_hash(const char *ns, size_t len)
{
    return rm_hash_bytes(ns, len, 0x7261646978ULL);
}

uint64_t rm_prefix_chain(uint64_t prev, const uint32_t *block, size_t block_tokens)
{
    return rm_hash_u32s(block, block_tokens, prev);
}
