#include "http_head.h"

#include <http_parser.h>
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

int rm_http_req_rule(const rm_http_req_facts *f, const rm_http_req_limits *l)
{
    if (l->max_url && f->url_bytes > l->max_url)
        return 414;
    if (f->url_bytes + f->head_bytes > l->max_head)
        return 431;
    if (f->te_other)
        return 501;
    if ((f->has_length && f->content_length > l->max_body) || f->body_bytes > l->max_body)
        return 413;
    if (f->expect && f->expect[0]) {
        if (strcasecmp(f->expect, "100-continue"))
            return 417;
        return f->http10 ? 0 : RM_HTTP_REQ_CONTINUE;
    }
    return 0;
}

/* The rule's answer for what is known of the request so far, noted if it
 * refuses it. */
static int weigh(rm_http_req *r, const rm_http_req_facts *f)
{
    int v = rm_http_req_rule(f, &r->lim);
    if (v == 0 || v == RM_HTTP_REQ_CONTINUE)
        return v;
    r->refuse = v;
    return -1;
}

/* The sizes read so far: the rest of the head is not known yet. */
static int weigh_sizes(rm_http_req *r)
{
    rm_http_req_facts f = {.url_bytes = r->url.len, .head_bytes = r->head.bytes};
    return weigh(r, &f);
}

int rm_http_req_on_url(http_parser *p, const char *at, size_t len)
{
    rm_http_req *r = p->data;
    rm_sbuf_append(&r->url, at, len);
    return weigh_sizes(r);
}

/* A chunked body's trailer fields come through the same callbacks after
 * the head (http-parser bounds them as it bounds heads): they are not the
 * request's headers -- not forwarded, not read for its token. */
static int on_head_piece(http_parser *p, const char *at, size_t len,
                         void (*add)(rm_http_head *, const char *, size_t))
{
    rm_http_req *r = p->data;
    if (r->head_done)
        return 0;
    add(&r->head, at, len);
    return weigh_sizes(r);
}

int rm_http_req_on_field(http_parser *p, const char *at, size_t len)
{
    return on_head_piece(p, at, len, rm_http_head_field);
}

int rm_http_req_on_value(http_parser *p, const char *at, size_t len)
{
    return on_head_piece(p, at, len, rm_http_head_value);
}

int rm_http_req_headers_complete(http_parser *p)
{
    rm_http_req *r = p->data;
    rm_http_head_end(&r->head);
    r->head_done = 1;
    r->head_request = p->method == HTTP_HEAD;
    rm_http_req_facts f = {.url_bytes = r->url.len,
                           .head_bytes = r->head.bytes,
                           .te_other = r->head.te_other,
                           .has_length = !!(p->flags & F_CONTENTLENGTH),
                           .content_length = p->content_length,
                           .expect = r->head.expect,
                           .http10 =
                               p->http_major < 1 || (p->http_major == 1 && p->http_minor == 0)};
    return weigh(r, &f);
}

int rm_http_req_body(http_parser *p, size_t held, size_t len)
{
    rm_http_req_facts f = {.body_bytes = (uint64_t)held + len};
    return weigh(p->data, &f);
}

int rm_http_req_on_chunk_header(http_parser *p)
{
    rm_http_req *r = p->data;
    uint64_t n = p->content_length;
    r->chunked = n > UINT64_MAX - r->chunked ? UINT64_MAX : r->chunked + n;
    rm_http_req_facts f = {.body_bytes = r->chunked};
    return weigh(r, &f);
}

void *rm_http_req_owner(const http_parser *p)
{
    return ((const rm_http_req *)p->data)->owner;
}

int rm_http_req_refusal(const rm_http_req *r, int parser_errno)
{
    if (r->refuse)
        return r->refuse;
    return parser_errno == HPE_HEADER_OVERFLOW ? 431 : 400;
}

void rm_http_req_reset(rm_http_req *r)
{
    free(r->url.p);
    memset(&r->url, 0, sizeof r->url);
    rm_http_head_reset(&r->head);
    r->refuse = 0;
    r->chunked = 0;
    r->head_done = 0;
}
