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
#include "util.h"

typedef enum { RM_OPENAI_COMPLETIONS, RM_OPENAI_CHAT } rm_openai_kind;

/* Where a request's routing tokens stopped, to continue them with the
 * reply (rm_openai_continue) without parsing the request again. */
typedef struct rm_openai_end {
    int text; /* 0: token ids, which text cannot continue */
    rm_textkey_end key;
    /* The reply's declared bound: max_completion_tokens, else max_tokens
     * (a non-negative integer; 0: none). Placement's expected output. */
    uint32_t max_reply;
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

/* Reads the text a worker generates from its response body as it streams
 * by, keeping only the text (for a stream) or the one document (else), up
 * to max_bytes; more than that gives up. */
typedef struct rm_openai_reply {
    rm_openai_kind kind;
    size_t max;
    int mode; /* 0: nothing read yet, 1: Server-Sent Events, 2: one JSON document */
    int found, bad;
    rm_sbuf buf;  /* the current line (stream) or the document */
    rm_sbuf text; /* what was generated so far */
} rm_openai_reply;

void rm_openai_reply_init(rm_openai_reply *r, rm_openai_kind kind, size_t max_bytes);
void rm_openai_reply_feed(rm_openai_reply *r, const char *bytes, size_t n);

/* Ends the reading: returns 0 with *text as rm_openai_reply_text does, or
 * -1. Call rm_openai_reply_free afterwards either way. */
int rm_openai_reply_finish(rm_openai_reply *r, char **text, size_t *text_len);
void rm_openai_reply_free(rm_openai_reply *r);

/* The text a worker generated, read from its whole response body: one JSON
 * completion (choices[0].text; chat: choices[0].message.content) or a
 * Server-Sent Events stream of chunks (the choice with index 0: text; chat:
 * delta.content), up to "[DONE]". On success returns 0 and *text
 * (malloc'd, NUL-terminated, the caller frees; *text_len bytes). Returns -1
 * when the body carries no such text (tool calls, an error, another shape). */
int rm_openai_reply_text(const char *body, size_t len, rm_openai_kind kind, char **text,
                         size_t *text_len);

/* ---- engine tokens (--gateway-tokenize worker) ------------------------------ */

/* The body of a POST /tokenize (vLLM's, SGLang's) that gives the token ids
 * the worker will compute for this request: for chat, its "messages" with
 * "add_generation_prompt" (true unless the request says), and the fields
 * that change the rendering ("continue_final_message", "chat_template",
 * "chat_template_kwargs", "tools", "documents", "add_special_tokens"); for
 * a completion, its (first) text "prompt" and "add_special_tokens"; the
 * "model" either way. Returns the JSON (malloc'd, NUL-terminated), or
 * NULL when the request's prompt is not text (token ids need no asking)
 * or the body is not a request rm_openai_prompt accepts. */
char *rm_openai_tokenize_body(const char *body, size_t len, rm_openai_kind kind);

/* The token ids of a /tokenize answer {"tokens": [...], "count": ...},
 * at most max_tokens of them. Returns 0 and *tokens (malloc'd, *n ids;
 * NULL when *n is 0), or -1 with the reason in err. */
int rm_openai_tokens_reply(const char *body, size_t len, size_t max_tokens, uint32_t **tokens,
                           size_t *n, char *err, size_t errlen);

/* An OpenAI-style error document (caller frees):
 * {"error":{"message":..,"type":..,"param":null,"code":..}}. */
char *rm_openai_error(const char *message, const char *type, const char *code);

#endif
