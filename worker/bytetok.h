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

/* Appends the bytes of ids[0, n) to b (any bytes, not always UTF-8). */
void rm_bytetok_decode(const uint32_t *ids, size_t n, rm_sbuf *b);

/* The text of a token stream as valid UTF-8 (what JSON may carry), token
 * by token. The bytes of a multi-byte character that is not complete yet
 * wait for the next tokens; what cannot be UTF-8 becomes U+FFFD, once per
 * maximal invalid part (as WHATWG's decoder and Python's "replace" do); an
 * id >= 256 ends a pending character. Feeding the tokens one at a time
 * and then flushing gives the same text as feeding them all at once, so a
 * streamed reply's pieces add up to the whole reply's text. A zeroed
 * rm_bytetok_text is ready. */
typedef struct rm_bytetok_text {
    unsigned char pend[4];
    int npend, need;      /* bytes held; bytes the character has in all */
    unsigned char lo, hi; /* range of the next continuation byte */
} rm_bytetok_text;

void rm_bytetok_text_feed(rm_bytetok_text *t, const uint32_t *ids, size_t n, rm_sbuf *out);

/* Ends the stream: a character still pending becomes U+FFFD. */
void rm_bytetok_text_flush(rm_bytetok_text *t, rm_sbuf *out);

#endif
