/* bytetok.h -- the byte-level fallback vocabulary for text prompts.
 *
 * Byte b of a UTF-8 (or any) text is token id b: ids 0..255 are the 256
 * byte values, so every text has exactly one tokenization and any vocab of
 * at least 256 can take it. Ids >= 256 have no text of their own; decoding
 * writes them as "<|id|>" so they stay visible and round-trip through
 * rm_bytetok_encode as their literal characters, not as the id. */
#ifndef RM_BYTETOK_H
#define RM_BYTETOK_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum { RM_BYTETOK_VOCAB = 256 };

/* out must hold len ids; returns len. */
size_t rm_bytetok_encode(const void *text, size_t len, uint32_t *out);

/* Appends the text of ids[0, n) to b. */
void rm_bytetok_decode(const uint32_t *ids, size_t n, rm_sbuf *b);

#endif
