/* libFuzzer target: the request reader both HTTP servers (the gateway and
 * the worker) run on untrusted bytes -- http-parser driving rm_http_req's
 * callbacks (URL, headers, body and chunk bounds, Expect, Transfer-Encoding)
 * over pipelined requests, the input cut in two reads at a point the first
 * byte picks. Must not crash or leak, and what it decides must hold:
 *   - a refusal is one of the statuses the rule gives;
 *   - a head taken has its URL and head within the bounds, and its kept
 *     headers are "Name: value\r\n" lines of no hop-by-hop header;
 *   - body bytes taken, and chunk sizes announced, stay within the body
 *     bound;
 *   - a whole request's kept headers are still its head's (trailers are
 *     not added to them). */
#include <http_parser.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_head.h"

typedef struct reader {
    rm_http_req rq;
    size_t body;         /* bytes of the current request's body taken */
    size_t head_out_len; /* its kept headers' length when its head ended */
} reader;

static const rm_http_req_limits limits = {.max_url = 256, .max_head = 1024, .max_body = 4096};

static void check_kept_headers(const rm_sbuf *out)
{
    if (!out->p)
        return;
    const char *p = out->p, *end = out->p + out->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *colon = memchr(p, ':', (size_t)(end - p));
        if (!eol || eol == p || eol[-1] != '\r' || !colon || colon > eol || colon == p)
            abort();
        char name[128];
        size_t n = (size_t)(colon - p);
        if (n < sizeof name) {
            memcpy(name, p, n);
            name[n] = '\0';
            if (rm_http_hop_by_hop(name))
                abort();
        }
        p = eol + 1;
    }
}

static int on_begin(http_parser *p)
{
    reader *r = rm_http_req_owner(p);
    rm_http_req_reset(&r->rq);
    r->body = 0;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    reader *r = rm_http_req_owner(p);
    int v = rm_http_req_headers_complete(p);
    if (v < 0)
        return -1;
    if (r->rq.url.len > limits.max_url || r->rq.url.len + r->rq.head.bytes > limits.max_head)
        abort();
    check_kept_headers(&r->rq.head.out);
    r->head_out_len = r->rq.head.out.len;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    (void)at;
    reader *r = rm_http_req_owner(p);
    if (rm_http_req_body(p, r->body, len) != 0)
        return -1;
    r->body += len;
    if (r->body > limits.max_body)
        abort();
    return 0;
}

static int on_complete(http_parser *p)
{
    reader *r = rm_http_req_owner(p);
    if (r->rq.chunked > limits.max_body)
        abort();
    check_kept_headers(&r->rq.head.out);
    if (r->rq.head.out.len != r->head_out_len)
        abort();
    return 0;
}

static const http_parser_settings settings =
    RM_HTTP_REQ_SETTINGS(on_begin, on_headers_complete, on_body, on_complete);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cut = data[0] % (size);
    data++, size--;
    cut = cut < size ? cut : size;
    reader r;
    memset(&r, 0, sizeof r);
    r.rq.owner = &r;
    r.rq.lim = limits;
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = &r.rq;
    size_t done = http_parser_execute(&p, &settings, (const char *)data, cut);
    if (done == cut && HTTP_PARSER_ERRNO(&p) == HPE_OK)
        http_parser_execute(&p, &settings, (const char *)data + cut, size - cut);
    int status = rm_http_req_refusal(&r.rq, HTTP_PARSER_ERRNO(&p));
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK) {
        switch (status) {
        case 400:
        case 413:
        case 414:
        case 417:
        case 431:
        case 501: break;
        default: abort();
        }
    }
    rm_http_req_reset(&r.rq);
    return 0;
}
