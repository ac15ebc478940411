/* prefix_key.h -- block-chained prefix hashes shared by nodes and routers.
 *
 * A request's prefix of b blocks (block = block_tokens token ids) hashes to
 *
 *   h_0 = H(namespace bytes)          h_b = H(h_{b-1}, tokens of block b)
 *
 * so equal hashes mean equal namespace and equal first b*block_tokens tokens
 * (up to 64-bit collisions). Every node counts the prefixes of the requests
 * it serves (hotset.h) and every router replica keys requests with the same
 * hashes, on any machine: nothing here depends on the process. */
#ifndef RM_PREFIX_KEY_H
#define RM_PREFIX_KEY_H

#include <stddef.h>
#include <stdint.h>

/* h_0 for a namespace of len bytes. */
uint64_t rm_prefix_ns_hash(const char *ns, size_t len);

/* h_b from h_{b-1} and the block's tokens. */
uint64_t rm_prefix_chain(uint64_t prev, const uint32_t *block, size_t block_tokens);

/* Deterministic 64-bit hash of bytes (for ring points, namespaces). */
uint64_t rm_hash_bytes(const void *p, size_t len, uint64_t seed);

#endif
