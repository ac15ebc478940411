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

typedef enum { RM_OPENAI_COMPLETIONS, RM_OPENAI_CHAT } rm_openai_kind;

/* Parses body (JSON) of a request of the given kind. On success returns 0
 * and sets *ns and *tokens (both malloc'd, the caller frees; *tokens may be
 * NULL when *n is 0), keeping at most max_tokens. On a malformed request
 * returns -1 with a message for the client in err. */
int rm_openai_prompt(const char *body, size_t len, rm_openai_kind kind, size_t max_tokens,
                     char **ns, uint32_t **tokens, size_t *n, char *err, size_t errlen);

/* An OpenAI-style error document (caller frees):
 * {"error":{"message":..,"type":..,"param":null,"code":..}}. */
char *rm_openai_error(const char *message, const char *type, const char *code);

#endif
