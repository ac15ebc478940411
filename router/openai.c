#include "openai.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "textkey.h"
#include "util.h"

/* Token ids: every element an integer id of 32 bits. */
static int ids_of(json_t *arr, size_t max, uint32_t **out, size_t *n, char *err, size_t errlen)
{
    size_t len = json_array_size(arr), keep = len < max ? len : max;
    uint32_t *v = rm_xmalloc((keep ? keep : 1) * sizeof *v);
    for (size_t i = 0; i < len; i++) {
        json_t *e = json_array_get(arr, i);
        json_int_t id = json_is_integer(e) ? json_integer_value(e) : -1;
        if (id < 0 || id > (json_int_t)UINT32_MAX) {
            snprintf(err, errlen, "prompt[%zu] is not a token id (an integer from 0 to 2^32-1)", i);
            free(v);
            return -1;
        }
        if (i < keep)
            v[i] = (uint32_t)id;
    }
    *out = v;
    *n = keep;
    return 0;
}

static void feed_str(rm_textkey *k, const char *s)
{
    rm_textkey_feed(k, s, strlen(s));
}

/* A chat message renders as role 0x1F content 0x1E (see textkey.h); the
 * prompt's messages and the reply continuing them share these two. */
static void message_open(rm_textkey *k, const char *role)
{
    feed_str(k, role);
    rm_textkey_feed(k, "\x1f", 1);
}

static void message_close(rm_textkey *k)
{
    rm_textkey_feed(k, "\x1e", 1);
}

static int render_chat(json_t *messages, rm_textkey *k, char *err, size_t errlen)
{
    if (!json_is_array(messages)) {
        snprintf(err, errlen, "'messages' must be an array of messages");
        return -1;
    }
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        if (!json_is_object(m) || !json_is_string(role)) {
            snprintf(err, errlen, "messages[%zu] must be an object with a string 'role'", i);
            return -1;
        }
        message_open(k, json_string_value(role));
        if (json_is_string(content)) {
            feed_str(k, json_string_value(content));
        } else if (json_is_array(content)) {
            size_t j;
            json_t *part;
            json_array_foreach(content, j, part)
            {
                json_t *text = json_object_get(part, "text");
                if (json_is_string(text)) {
                    feed_str(k, json_string_value(text));
                } else {
                    char *dump = json_dumps(part, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
                    if (dump)
                        feed_str(k, dump);
                    free(dump);
                }
            }
        } else if (content && !json_is_null(content)) {
            snprintf(err, errlen, "messages[%zu].content must be a string, an array or null", i);
            return -1;
        }
        message_close(k);
    }
    return 0;
}

/* The body's bound on the reply's length (rm_openai_end.max_reply). */
static uint32_t declared_max(json_t *root)
{
    static const char *const names[] = {"max_completion_tokens", "max_tokens"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, names[i]);
        if (json_is_integer(v) && json_integer_value(v) > 0)
            return json_integer_value(v) >= UINT32_MAX ? UINT32_MAX
                                                       : (uint32_t)json_integer_value(v);
    }
    return 0;
}

int rm_openai_prompt(const char *body, size_t len, rm_openai_kind kind, size_t max_tokens,
                     char **ns, uint32_t **tokens, size_t *n, rm_openai_end *end, char *err,
                     size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    *ns = NULL;
    *tokens = NULL;
    *n = 0;
    if (!root) {
        snprintf(err, errlen, "the body is not valid JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        return -1;
    }
    int rc = -1, text = 1;
    rm_textkey k;
    rm_textkey_init(&k, max_tokens);
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(root)) {
        snprintf(err, errlen, "the body must be a JSON object");
    } else if (model && !json_is_string(model)) {
        snprintf(err, errlen, "'model' must be a string");
    } else if (kind == RM_OPENAI_CHAT) {
        json_t *messages = json_object_get(root, "messages");
        if (!messages)
            snprintf(err, errlen, "'messages' is required");
        else
            rc = render_chat(messages, &k, err, errlen);
    } else {
        json_t *p = json_object_get(root, "prompt");
        if (json_is_array(p) && json_array_size(p) > 0 &&
            (json_is_array(json_array_get(p, 0)) || json_is_string(json_array_get(p, 0))))
            p = json_array_get(p, 0); /* a batch: its first prompt routes it */
        if (!p) {
            snprintf(err, errlen, "'prompt' is required");
        } else if (json_is_string(p)) {
            feed_str(&k, json_string_value(p));
            rc = 0;
        } else if (json_is_array(p)) {
            text = 0;
            rc = ids_of(p, max_tokens, tokens, n, err, errlen);
        } else {
            snprintf(err, errlen, "'prompt' must be a string, an array of token ids, or a batch");
        }
    }
    if (rc == 0) {
        const char *m = json_is_string(model) ? json_string_value(model) : "";
        size_t ml = strlen(m);
        *ns = rm_xmalloc(ml + 6);
        snprintf(*ns, ml + 6, "%s%s", m, text ? "#text" : "");
        if (end) {
            memset(end, 0, sizeof *end);
            end->text = text;
            rm_textkey_mark(&k, &end->key);
            end->max_reply = declared_max(root);
        }
        if (text) {
            rm_textkey_finish(&k);
            *tokens = k.v;
            *n = k.n;
            k.v = NULL;
        }
    }
    rm_textkey_free(&k);
    json_decref(root);
    return rc;
}

int rm_openai_continue(rm_openai_kind kind, const uint32_t *tokens, size_t n,
                       const rm_openai_end *end, const char *reply, size_t reply_len,
                       size_t max_tokens, uint32_t **out, size_t *nout)
{
    if (!end->text)
        return -1;
    rm_textkey k;
    rm_textkey_resume(&k, max_tokens, tokens, n, &end->key);
    if (kind == RM_OPENAI_CHAT)
        message_open(&k, "assistant");
    rm_textkey_feed(&k, reply, reply_len);
    if (kind == RM_OPENAI_CHAT)
        message_close(&k);
    rm_textkey_finish(&k);
    *out = k.v;
    *nout = k.n;
    return 0;
}

/* Appends the generated text of one choice object, if it is choice 0.
 * Returns 1 if it had text, 0 if not. */
static int take_choice(json_t *choice, rm_openai_kind kind, int chunk, rm_sbuf *out)
{
    json_t *index = json_object_get(choice, "index");
    if (index && (!json_is_integer(index) || json_integer_value(index) != 0))
        return 0;
    json_t *text = json_object_get(choice, "text");
    if (kind == RM_OPENAI_CHAT)
        text = json_object_get(json_object_get(choice, chunk ? "delta" : "message"), "content");
    if (!json_is_string(text))
        return 0;
    rm_sbuf_append(out, json_string_value(text), json_string_length(text));
    return 1;
}

/* Every choice-0 text of one completion or chunk document. Returns how many
 * pieces it found, or -1 if doc is not such a document. */
static int take_doc(json_t *doc, rm_openai_kind kind, int chunk, rm_sbuf *out)
{
    json_t *choices = json_object_get(doc, "choices");
    if (!json_is_array(choices))
        return -1;
    int found = 0;
    size_t i;
    json_t *c;
    json_array_foreach(choices, i, c)
    {
        if (json_is_object(c))
            found += take_choice(c, kind, chunk, out);
    }
    return found;
}

void rm_openai_reply_init(rm_openai_reply *r, rm_openai_kind kind, size_t max_bytes)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->max = max_bytes;
}

/* One line of an event stream: a "data:" line holds a chunk or [DONE]. */
static void sse_line(rm_openai_reply *r, const char *p, size_t n)
{
    if (n && p[n - 1] == '\r')
        n--;
    if (n < 5 || memcmp(p, "data:", 5) != 0)
        return; /* other fields, comments, blank lines */
    p += 5, n -= 5;
    if (n && *p == ' ')
        p++, n--;
    if (n == 6 && !memcmp(p, "[DONE]", 6))
        return;
    json_t *doc = json_loadb(p, n, 0, NULL);
    int got = doc ? take_doc(doc, r->kind, 1, &r->text) : -1;
    json_decref(doc);
    if (got < 0)
        r->bad = 1;
    r->found += got > 0;
}

void rm_openai_reply_feed(rm_openai_reply *r, const char *p, size_t n)
{
    while (!r->mode && n && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++, n--;
    if (r->bad || !n)
        return;
    if (!r->mode) /* one JSON document, or an event stream ("data:", ":", "event:"...) */
        r->mode = *p == '{' || *p == '[' ? 2 : 1;
    if (r->mode == 2) { /* a whole document, read at the end */
        if (r->buf.len + n > r->max)
            r->bad = 1;
        else
            rm_sbuf_append(&r->buf, p, n);
        return;
    }
    /* A stream is read line by line; only the text is kept. */
    while (n && !r->bad) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (r->buf.len + take > r->max) {
            r->bad = 1;
            break;
        }
        if (nl && r->buf.len == 0) {
            sse_line(r, p, take);
        } else {
            rm_sbuf_append(&r->buf, p, take);
            if (nl) {
                sse_line(r, r->buf.p, r->buf.len);
                r->buf.len = 0;
            }
        }
        p += take + (nl != NULL), n -= take + (nl != NULL);
        if (r->text.len > r->max)
            r->bad = 1;
    }
}

int rm_openai_reply_finish(rm_openai_reply *r, char **text, size_t *text_len)
{
    if (r->mode == 1 && r->buf.len && !r->bad) /* a last line without its newline */
        sse_line(r, r->buf.p, r->buf.len);
    if (r->mode == 2 && !r->bad) {
        json_t *doc = json_loadb(r->buf.p, r->buf.len, 0, NULL);
        int got = doc ? take_doc(doc, r->kind, 0, &r->text) : -1;
        json_decref(doc);
        r->bad = got < 0;
        r->found = got > 0;
    }
    if (r->bad || !r->found)
        return -1;
    rm_sbuf_append(&r->text, "", 0); /* a NUL-terminated "" when all pieces were empty */
    *text = r->text.p;
    *text_len = r->text.len;
    memset(&r->text, 0, sizeof r->text);
    return 0;
}

void rm_openai_reply_free(rm_openai_reply *r)
{
    free(r->buf.p);
    free(r->text.p);
    memset(r, 0, sizeof *r);
}

int rm_openai_reply_text(const char *body, size_t len, rm_openai_kind kind, char **text,
                         size_t *text_len)
{
    rm_openai_reply r;
    rm_openai_reply_init(&r, kind, len + 1);
    rm_openai_reply_feed(&r, body, len);
    int rc = rm_openai_reply_finish(&r, text, text_len);
    rm_openai_reply_free(&r);
    return rc;
}

/* ---- engine tokens ------------------------------------------------------------ */

char *rm_openai_tokenize_body(const char *body, size_t len, rm_openai_kind kind)
{
    static const char *const chat_keys[] = {
        "model", "messages",  "continue_final_message", "chat_template", "chat_template_kwargs",
        "tools", "documents", "add_special_tokens"};
    static const char *const completion_keys[] = {"model", "add_special_tokens"};
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *out = json_object();
    char *s = NULL;
    if (!json_is_object(root))
        goto done;
    if (kind == RM_OPENAI_CHAT) {
        if (!json_is_array(json_object_get(root, "messages")))
            goto done;
        for (size_t i = 0; i < RM_ARRAY_LEN(chat_keys); i++) {
            json_t *v = json_object_get(root, chat_keys[i]);
            if (v)
                json_object_set(out, chat_keys[i], v);
        }
        json_t *agp = json_object_get(root, "add_generation_prompt");
        json_object_set(out, "add_generation_prompt", agp ? agp : json_true());
    } else {
        json_t *p = json_object_get(root, "prompt");
        if (json_is_array(p) && json_is_string(json_array_get(p, 0)))
            p = json_array_get(p, 0); /* a batch: its first prompt routes it */
        if (!json_is_string(p))
            goto done;
        for (size_t i = 0; i < RM_ARRAY_LEN(completion_keys); i++) {
            json_t *v = json_object_get(root, completion_keys[i]);
            if (v)
                json_object_set(out, completion_keys[i], v);
        }
        json_object_set(out, "prompt", p);
    }
    s = json_dumps(out, JSON_COMPACT);
done:
    json_decref(out);
    json_decref(root);
    return s;
}

int rm_openai_tokens_reply(const char *body, size_t len, size_t max_tokens, uint32_t **tokens,
                           size_t *n, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    json_t *arr = json_object_get(root, "tokens");
    int rc = -1;
    *tokens = NULL;
    *n = 0;
    if (!root)
        snprintf(err, errlen, "the /tokenize answer is not JSON: %s", jerr.text);
    else if (!json_is_array(arr))
        snprintf(err, errlen, "the /tokenize answer has no \"tokens\" array");
    else
        rc = ids_of(arr, max_tokens, tokens, n, err, errlen);
    if (rc == 0 && *n == 0) {
        free(*tokens);
        *tokens = NULL;
    }
    json_decref(root);
    return rc;
}

char *rm_openai_error(const char *message, const char *type, const char *code)
{
    json_t *e = json_pack("{s:{s:s,s:s,s:n,s:s?}}", "error", "message", message, "type", type,
                          "param", "code", code);
    char *s = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    return s;
}
