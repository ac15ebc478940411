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
        feed_str(k, json_string_value(role));
        rm_textkey_feed(k, "\x1f", 1);
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
        rm_textkey_feed(k, "\x1e", 1);
    }
    return 0;
}

int rm_openai_prompt(const char *body, size_t len, rm_openai_kind kind, size_t max_tokens,
                     char **ns, uint32_t **tokens, size_t *n, char *err, size_t errlen)
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

char *rm_openai_error(const char *message, const char *type, const char *code)
{
    json_t *e = json_pack("{s:{s:s,s:s,s:n,s:s?}}", "error", "message", message, "type", type,
                          "param", "code", code);
    char *s = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    return s;
}
