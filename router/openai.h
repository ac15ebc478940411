/* openai.h -- the routing input of OpenAI-compatible requests.
 *
 * POST /v1/completions carries "prompt": a string, token ids, or a batch of
 * either (the first element routes the batch). POST /v1/chat/completions
 * carries "messages". Ids are used as they are; text becomes pseudo-tokens
 * (common/textkey.h). The namespace is the "model" so that different models'
 * prefixes never mix, with "#text" appended for text so pseudo-tokens never
 * meet real ids in one tree. */
#ifndef RM_OPENAI_H
#define RM_OPENAI_H

#include <stddef.h>
#include <stdint.h>

#include "textkey.h"

typedef enum { RM_OPENAI_COMPLETIONS, RM_OPENAI_CHAT } rm_openai_kind;

/* Where a request's routing tokens stopped, to continue them with the
 * reply (rm_openai_continue) without parsing the request again. */
typedef struct rm_openai_end {
    int text; /* 0: token ids, which text cannot continue */
    rm_textkey_end key;
} rm_openai_end;

/* Parses body (JSON) of a request of the given kind. On success returns 0
 * and sets *ns and *tokens (both malloc'd, the caller frees; *tokens may be
 * NULL when *n is 0), keeping at most max_tokens, and *end (may be NULL).
 * On a malformed request returns -1 with a message for the client in err. */
int rm_openai_prompt(const char *body, size_t len, rm_openai_kind kind, size_t max_tokens,
                     char **ns, uint32_t **tokens, size_t *n, rm_openai_end *end, char *err,
                     size_t errlen);

/* The routing tokens of what the client's next request will begin with:
 * a prompt's tokens[0..n) (ended at end) followed by the worker's reply
 * (reply_len bytes) -- for chat an assistant message, for a text
 * completion the generated text appended to the (first) prompt. Workers
 * cache the KV of what they generate too, so this is what the paired node
 * should mirror. Returns 0 and *out (malloc'd, *nout tokens, at most
 * max_tokens), or -1 for token-id prompts. */
int rm_openai_continue(rm_openai_kind kind, const uint32_t *tokens, size_t n,
                       const rm_openai_end *end, const char *reply, size_t reply_len,
                       size_t max_tokens, uint32_t **out, size_t *nout);

/* The text a worker generated, read from its response body: one JSON
 * completion (choices[0].text; chat: choices[0].message.content) or a
 * Server-Sent Events stream of chunks (the choice with index 0: text; chat:
 * delta.content), up to "[DONE]". On success returns 0 and *text
 * (malloc'd, NUL-terminated, the caller frees; *text_len bytes). Returns -1
 * when the body carries no such text (tool calls, an error, another shape). */
int rm_openai_reply_text(const char *body, size_t len, rm_openai_kind kind, char **text,
                         size_t *text_len);

/* An OpenAI-style error document (caller frees):
 * {"error":{"message":..,"type":..,"param":null,"code":..}}. */
char *rm_openai_error(const char *message, const char *type, const char *code);

#endif
