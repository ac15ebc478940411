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
 * Memory grows with the head: bound it with h.bytes in the callbacks. */
#ifndef RM_HTTP_HEAD_H
#define RM_HTTP_HEAD_H

#include <stddef.h>

#include "util.h"

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

#endif
