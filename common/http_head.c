#include "http_head.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void rm_http_head_reset(rm_http_head *h)
{
    free(h->out.p);
    free(h->field.p);
    free(h->value.p);
    memset(h, 0, sizeof *h);
}

int rm_http_hop_by_hop(const char *name)
{
    static const char *const drop[] = {
        "connection",        "keep-alive", "proxy-connection", "te",   "trailer",
        "transfer-encoding", "upgrade",    "content-length",   "host", "expect"};
    for (size_t i = 0; i < RM_ARRAY_LEN(drop); i++)
        if (!strcasecmp(name, drop[i]))
            return 1;
    return 0;
}

int rm_http_te_other_than_chunked(const char *v)
{
    while (*v) {
        v += strspn(v, " \t,");
        size_t n = strcspn(v, ",");
        size_t end = n;
        while (end && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end && !(end == 7 && !strncasecmp(v, "chunked", 7)))
            return 1;
        v += n;
    }
    return 0;
}

void rm_http_head_end(rm_http_head *h)
{
    if (!h->field.p)
        return;
    const char *v = h->value.p ? h->value.p : "";
    if (!strcasecmp(h->field.p, "expect"))
        snprintf(h->expect, sizeof h->expect, "%s", v);
    if (!strcasecmp(h->field.p, "transfer-encoding") && rm_http_te_other_than_chunked(v))
        h->te_other = 1;
    if (!rm_http_hop_by_hop(h->field.p))
        rm_sbuf_printf(&h->out, "%s: %s\r\n", h->field.p, v);
    free(h->field.p);
    free(h->value.p);
    memset(&h->field, 0, sizeof h->field);
    memset(&h->value, 0, sizeof h->value);
    h->in_value = 0;
}

void rm_http_head_field(rm_http_head *h, const char *at, size_t len)
{
    if (h->in_value)
        rm_http_head_end(h);
    rm_sbuf_append(&h->field, at, len);
    h->bytes += len;
}

void rm_http_head_value(rm_http_head *h, const char *at, size_t len)
{
    h->in_value = 1;
    rm_sbuf_append(&h->value, at, len);
    h->bytes += len;
}
