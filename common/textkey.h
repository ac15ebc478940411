/* textkey.h -- routing tokens for text prompts (the HTTP gateway).
 *
 * An OpenAI-style request may carry text instead of token ids. The gateway
 * still needs a token array whose prefixes mirror the text's prefixes, so
 * that the same text prefix gives the same routing key and the node's radix
 * tree sees shared prefixes as shared. The scheme:
 *
 *   UTF-8 bytes of the text, cut every RM_TEXTKEY_CHUNK bytes from the
 *   start of the whole stream (not per string):
 *
 *     "You are a helpful assistant."
 *      [You ][are ][a he][lpfu][l as]...[nt.]
 *        |     |     |     ...            \_ the last chunk may be short
 *        v     v     v
 *      id0   id1   id2    id = low 32 bits of rm_mix64(chunk bytes as a
 *                               little-endian word | length << 32)
 *
 * Four bytes is about one model token of English text, so pseudo-token
 * counts (and so the nodes' hit/query token counts) are comparable with
 * the workers' real ones. A chat request renders its messages in order as
 * role, 0x1F, content, 0x1E; a content array contributes its "text" parts
 * and the compact JSON of any other part. Chunks cross string boundaries:
 * the stream, not each string, is chunked, so a prefix of messages always
 * yields a prefix of pseudo-tokens. */
#ifndef RM_TEXTKEY_H
#define RM_TEXTKEY_H

#include <stddef.h>
#include <stdint.h>

#define RM_TEXTKEY_CHUNK 4

typedef struct rm_textkey {
    uint32_t *v; /* pseudo-tokens so far (malloc'd; the caller takes it) */
    size_t n, cap;
    size_t max; /* stop after this many (the rest cannot change a prefix) */
    unsigned char carry[RM_TEXTKEY_CHUNK];
    size_t ncarry;
} rm_textkey;

/* Starts an empty key that keeps at most max tokens. */
void rm_textkey_init(rm_textkey *k, size_t max);

/* Appends bytes to the stream. */
void rm_textkey_feed(rm_textkey *k, const void *bytes, size_t len);

/* Emits the last, short chunk. Call once, after the last feed. */
void rm_textkey_finish(rm_textkey *k);

/* Where a key stopped, so that its tokens can be continued later without
 * the text that made them: the bytes of the short chunk that finish turned
 * into the last token (a continuation re-chunks them with what follows). */
typedef struct rm_textkey_end {
    unsigned char tail[RM_TEXTKEY_CHUNK];
    size_t ntail;
    int tail_emitted; /* finish made a token of tail (the key was not full) */
} rm_textkey_end;

/* Records where k stands; call just before rm_textkey_finish. */
void rm_textkey_mark(const rm_textkey *k, rm_textkey_end *end);

/* Starts k (keeping at most max tokens) as the continuation of a finished
 * key's tokens[0..n) that stopped at end: the same tokens as feeding the
 * original text again, then more. */
void rm_textkey_resume(rm_textkey *k, size_t max, const uint32_t *tokens, size_t n,
                       const rm_textkey_end *end);

/* Frees the tokens (if the caller did not take k->v). */
void rm_textkey_free(rm_textkey *k);

/* The id of one chunk of 1..RM_TEXTKEY_CHUNK bytes. */
uint32_t rm_textkey_chunk_id(const unsigned char *chunk, size_t len);

#endif
