/* http_head.h -- the header lines of an HTTP/1.1 head, assembled from
 * http-parser's callbacks, for a server or a proxy.
 *
 * http-parser hands a header's name and value over in pieces (as they
 * arrive across reads). The accumulator joins them, keeps every header
 * that is not hop-by-hop as a "Name: value\r\n" line (ready to forward,
 * or to look up with rm_bearer_in_headers), notes the two hop-by-hop
 * headers a server must act on (Expect, Transfer-Encoding), and counts the
 * name and value bytes so the caller can bound the head's size.
 *
 *   on_header_field  -> rm_http_head_field(&h, at, len)
 *   on_header_value  -> rm_http_head_value(&h, at, len)
 *   on_headers_complete -> rm_http_head_end(&h); then h.out, h.expect, ...
 *   next message     -> rm_http_head_reset(&h)
 *
 * Memory grows with the head: bound it with h.bytes in the callbacks.
 *
 * A server reads its requests with rm_http_req (below), which also keeps
 * the URL, bounds both and the body, and decides what the request is
 * refused for (414, 431, 501, 413, 417) and when to send "100 Continue":
 * the gateway and the worker answer the same request the same way. */
#ifndef RM_HTTP_HEAD_H
#define RM_HTTP_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct http_parser;

typedef struct rm_http_head {
    rm_sbuf out;     /* "Name: value\r\n" lines of the end-to-end headers */
    size_t bytes;    /* name and value bytes seen, all headers */
    char expect[32]; /* the Expect value, "" if none (cut to fit) */
    int te_other;    /* a Transfer-Encoding names a coding other than chunked */
    /* The header being read. */
    rm_sbuf field, value;
    int in_value;
} rm_http_head;

/* A piece of a header's name / value (pieces of one name or value come
 * one after the other; a name after a value starts the next header). */
void rm_http_head_field(rm_http_head *h, const char *at, size_t len);
void rm_http_head_value(rm_http_head *h, const char *at, size_t len);

/* Ends the last header (call when the head is complete). */
void rm_http_head_end(rm_http_head *h);

/* Frees what h holds and empties it for the next head. A zeroed
 * rm_http_head is empty. */
void rm_http_head_reset(rm_http_head *h);

/* Whether a header describes one connection rather than the message and
 * so is not forwarded (RFC 9110 7.6.1: Connection, Keep-Alive, TE,
 * Trailer, Transfer-Encoding, Upgrade, Proxy-Connection), or is one a
 * forwarder writes itself (Content-Length, Host, Expect). Any case. */
int rm_http_hop_by_hop(const char *name);

/* Whether a Transfer-Encoding value names a coding other than chunked
 * ("gzip, chunked"). A forwarder that passes bodies on as they are must
 * refuse those (RFC 9112 6.1: 501): a compressed body would arrive as if
 * plain. */
int rm_http_te_other_than_chunked(const char *value);

/* ---- a server's request head -------------------------------------------------- */

/* The interim answer a client that sent Expect: 100-continue waits for
 * before it sends the body. */
#define RM_HTTP_CONTINUE     "HTTP/1.1 100 Continue\r\n\r\n"
#define RM_HTTP_CONTINUE_LEN (sizeof RM_HTTP_CONTINUE - 1)

/* rm_http_req_rule's answer to Expect: 100-continue: read on, and tell
 * the client to send its body (RM_HTTP_CONTINUE). */
#define RM_HTTP_REQ_CONTINUE 100

/* A server's bounds on a request. */
typedef struct rm_http_req_limits {
    size_t max_url;    /* URL bytes; past it 414. 0: the URL is bounded by max_head only */
    size_t max_head;   /* URL, header name and header value bytes together; past it 431 */
    uint64_t max_body; /* body bytes; a Content-Length past it: 413 before the body is sent */
} rm_http_req_limits;

/* What the rule weighs of a request. The sizes are known as the head
 * comes, te_other to expect once it is whole, body_bytes as the body
 * comes; a field not known yet is zero (NULL). */
typedef struct rm_http_req_facts {
    size_t url_bytes, head_bytes; /* read so far (head_bytes: rm_http_head.bytes) */
    int te_other;                 /* a Transfer-Encoding other than chunked */
    int has_length;               /* a Content-Length was sent: content_length */
    uint64_t content_length;
    const char *expect;  /* the Expect value; "" or NULL: none */
    int http10;          /* an HTTP/1.0 (or older) request: its 100-continue is not answered */
    uint64_t body_bytes; /* of the body read so far, with the piece being read */
} rm_http_req_facts;

/* The rule for a request head, and then its body (pure). Returns the
 * status refusing it, first that applies: 414 (URL past max_url), 431
 * (URL and headers past max_head), 501 (a transfer coding other than
 * chunked: RFC 9112 6.1), 413 (Content-Length or the body read past
 * max_body), 417 (an Expect other than 100-continue, any case: RFC 9110
 * 10.1.1); else RM_HTTP_REQ_CONTINUE (Expect: 100-continue) or 0 (read
 * on). An HTTP/1.0 client knows no interim answers, so its 100-continue
 * is ignored (RFC 9110 10.1.1: MUST): 0, and it sends its body unasked.
 * A bound is kept at exactly its value: one byte more is refused. */
int rm_http_req_rule(const rm_http_req_facts *f, const rm_http_req_limits *l);

/* A request being read by a server, one at a time, with one http_parser
 * whose data points at it: the reader owns the URL and header callbacks
 * (rm_http_req_on_*), the owner's own callbacks reach their connection
 * through rm_http_req_owner. The owner sets owner and lim, and may set
 * refuse for refusals of its own (the gateway's budget of buffered
 * bytes: 503) so that rm_http_req_refusal answers them too. A zeroed rm_http_req with owner
 * and lim set is empty; its memory grows with the head, within
 * lim.max_head plus one piece, and is the reader's (rm_http_req_reset
 * frees it). Used on the owner's thread only. */
typedef struct rm_http_req {
    void *owner;            /* the server's connection; kept across requests */
    rm_http_req_limits lim; /* kept across requests */
    rm_sbuf url;            /* the request target as sent; url.p NULL: none yet */
    rm_http_head head;      /* its headers (head.out: the end-to-end ones) */
    int refuse;             /* the status refusing the request, 0: none */
    uint64_t chunked;       /* the sizes its chunks announced so far (saturating) */
    int head_done;          /* its head is complete: what follows is trailers */
    /* The request being answered is a HEAD: set when its head is read; the
     * owner clears it once the request is answered (http-parser keeps the
     * previous method when a malformed request follows; a reset leaves it,
     * as an owner may reset before it answers). */
    int head_request;
} rm_http_req;

/* http-parser's on_url, on_header_field and on_header_value, for the
 * owner's http_parser_settings (p->data: the rm_http_req): keep the piece,
 * then weigh the sizes read so far. Return 0 to read on, or -1 with
 * refuse set (414 or 431), which stops http-parser. */
int rm_http_req_on_url(struct http_parser *p, const char *at, size_t len);
int rm_http_req_on_field(struct http_parser *p, const char *at, size_t len);
int rm_http_req_on_value(struct http_parser *p, const char *at, size_t len);

/* The first step of the owner's on_headers_complete: ends the head and
 * weighs it whole (with p's Content-Length). Returns -1 with refuse set
 * (501, 413, 417), for the callback to return; else 0 or
 * RM_HTTP_REQ_CONTINUE, after which the owner makes its own checks and,
 * on RM_HTTP_REQ_CONTINUE, sends RM_HTTP_CONTINUE if it reads the body. */
int rm_http_req_headers_complete(struct http_parser *p);

/* The first step of the owner's on_body: whether held body bytes and len
 * more stay within lim.max_body. 0: take them; -1 with refuse 413, for
 * the callback to return. */
int rm_http_req_body(struct http_parser *p, size_t held, size_t len);

/* http-parser's on_chunk_header: a chunk of p->content_length bytes is
 * announced. Returns -1 with refuse 413 once the chunks announced pass
 * lim.max_body -- before their bytes are sent, as a Content-Length past it
 * is refused (a 2 GB chunk no longer waits for the request timeout) --
 * else 0. */
int rm_http_req_on_chunk_header(struct http_parser *p);

/* The http_parser_settings of a server reading requests with rm_http_req:
 * the reader's own callbacks (URL, header pieces, chunk sizes) wired in one
 * place, the owner's four beside them. */
#define RM_HTTP_REQ_SETTINGS(begin, headers_complete, body, complete)                              \
    {                                                                                              \
        .on_message_begin = (begin), .on_url = rm_http_req_on_url,                                 \
        .on_header_field = rm_http_req_on_field, .on_header_value = rm_http_req_on_value,          \
        .on_headers_complete = (headers_complete), .on_body = (body),                              \
        .on_message_complete = (complete), .on_chunk_header = rm_http_req_on_chunk_header          \
    }

/* The owner of the request p reads (p->data: an rm_http_req). */
void *rm_http_req_owner(const struct http_parser *p);

/* The status answering a request http-parser stopped on with
 * HTTP_PARSER_ERRNO(p) == parser_errno: r->refuse if set, 431 for
 * http-parser's own head bound (80 KiB), else 400 (malformed). */
int rm_http_req_refusal(const rm_http_req *r, int parser_errno);

/* Frees what the request holds and empties it for the next one (owner
 * and lim are kept). */
void rm_http_req_reset(rm_http_req *r);

#endif
