/* siphash.h -- SipHash-2-4 (Aumasson & Bernstein), a keyed 64-bit PRF.
 *
 * Where an output must not be predictable by whoever sees other outputs
 * (lease ids), or a table must not be floodable by chosen keys (peer
 * identities), the input goes through SipHash under a random 128-bit key
 * that never leaves the process. */
#ifndef RM_SIPHASH_H
#define RM_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of len bytes under key[16] (the reference byte order: the
 * test vectors of the paper's appendix hold). */
uint64_t rm_siphash24(const uint8_t key[16], const void *data, size_t len);

/* Fills key[16] from the kernel's CSPRNG (getrandom, /dev/urandom as a
 * fallback). Returns 0 or -EIO when neither gives randomness. */
int rm_siphash_key(uint8_t key[16]);

#endif
