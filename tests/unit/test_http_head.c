/* Unit tests for common/http_head.c: header lines joined from pieces,
 * hop-by-hop headers dropped, Expect and Transfer-Encoding noted, sizes
 * counted; a server's request head weighed (every status, each bound at
 * exactly its value and one byte past). */
#include <http_parser.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "http_head.h"

static void field(rm_http_head *h, const char *s)
{
    rm_http_head_field(h, s, strlen(s));
}

static void value(rm_http_head *h, const char *s)
{
    rm_http_head_value(h, s, strlen(s));
}

static void test_pieces_are_joined(void)
{
    rm_http_head h = {0};
    field(&h, "Content-");
    field(&h, "Type");
    value(&h, "application/");
    value(&h, "json");
    field(&h, "X-A");
    value(&h, "1");
    rm_http_head_end(&h);
    CHECK(!strcmp(h.out.p, "Content-Type: application/json\r\nX-A: 1\r\n"));
    CHECK_EQ(h.bytes, strlen("Content-Type") + strlen("application/json") + 4);
    rm_http_head_reset(&h);
}

static void test_hop_by_hop_headers_are_not_kept(void)
{
    rm_http_head h = {0};
    const char *drop[] = {"Connection",        "keep-alive", "Proxy-Connection", "TE",
                          "Trailer",           "Upgrade",    "Content-Length",   "Host",
                          "Transfer-Encoding", "Expect"};
    for (size_t i = 0; i < RM_ARRAY_LEN(drop); i++) {
        CHECK(rm_http_hop_by_hop(drop[i]));
        field(&h, drop[i]);
        value(&h, "chunked");
    }
    field(&h, "Authorization");
    value(&h, "Bearer t");
    rm_http_head_end(&h);
    CHECK(!strcmp(h.out.p, "Authorization: Bearer t\r\n"));
    CHECK(!rm_http_hop_by_hop("Authorization"));
    CHECK(!rm_http_hop_by_hop("Hostname"));
    rm_http_head_reset(&h);
}

static void test_expect_and_empty_values(void)
{
    rm_http_head h = {0};
    field(&h, "Expect");
    value(&h, "100-");
    value(&h, "continue");
    field(&h, "X-Empty"); /* a value http-parser never reported */
    rm_http_head_end(&h);
    CHECK(!strcmp(h.expect, "100-continue"));
    CHECK(!strcmp(h.out.p, "X-Empty: \r\n"));
    /* An Expect too long for its field is cut, not overflowed. */
    rm_http_head_reset(&h);
    field(&h, "expect");
    value(&h, "0123456789012345678901234567890123456789");
    rm_http_head_end(&h);
    CHECK_EQ(strlen(h.expect), sizeof h.expect - 1);
    CHECK(!h.out.p);
    rm_http_head_reset(&h);
}

static void test_transfer_codings(void)
{
    CHECK(!rm_http_te_other_than_chunked("chunked"));
    CHECK(!rm_http_te_other_than_chunked(" Chunked \t"));
    CHECK(!rm_http_te_other_than_chunked(""));
    CHECK(!rm_http_te_other_than_chunked(", ,chunked,"));
    CHECK(rm_http_te_other_than_chunked("gzip, chunked"));
    CHECK(rm_http_te_other_than_chunked("chunked, identity"));
    CHECK(rm_http_te_other_than_chunked("chunkedx"));
    rm_http_head h = {0};
    field(&h, "Transfer-Encoding");
    value(&h, "chunked");
    rm_http_head_end(&h);
    CHECK(!h.te_other);
    field(&h, "transfer-encoding");
    value(&h, "gzip, chunked");
    rm_http_head_end(&h);
    CHECK(h.te_other);
    rm_http_head_reset(&h);
    CHECK(!h.te_other && !h.bytes && !h.out.p && !h.expect[0]);
}

static void test_end_without_headers_is_harmless(void)
{
    rm_http_head h = {0};
    rm_http_head_end(&h);
    rm_http_head_end(&h);
    CHECK(!h.out.p);
    CHECK_EQ(h.bytes, 0);
    rm_http_head_reset(&h);
}

/* ---- the rule for a server's request head ---------------------------------------- */

static const rm_http_req_limits lim = {.max_url = 100, .max_head = 1000, .max_body = 5000};

static int rule(rm_http_req_facts f)
{
    return rm_http_req_rule(&f, &lim);
}

static void test_rule_url_bound_is_414(void)
{
    CHECK_EQ(rule((rm_http_req_facts){.url_bytes = 100}), 0);
    CHECK_EQ(rule((rm_http_req_facts){.url_bytes = 101}), 414);
    /* Past both bounds: the URL's own is named. */
    CHECK_EQ(rule((rm_http_req_facts){.url_bytes = 101, .head_bytes = 5000}), 414);
    /* No URL bound of its own: the URL counts toward the head's. */
    rm_http_req_limits head_only = {.max_head = 1000, .max_body = 5000};
    rm_http_req_facts f = {.url_bytes = 1000};
    CHECK_EQ(rm_http_req_rule(&f, &head_only), 0);
    f.url_bytes = 1001;
    CHECK_EQ(rm_http_req_rule(&f, &head_only), 431);
}

static void test_rule_head_bound_is_431(void)
{
    CHECK_EQ(rule((rm_http_req_facts){.url_bytes = 10, .head_bytes = 990}), 0);
    CHECK_EQ(rule((rm_http_req_facts){.url_bytes = 10, .head_bytes = 991}), 431);
    CHECK_EQ(rule((rm_http_req_facts){.head_bytes = 1001}), 431);
    /* Before the rest of the head is judged. */
    CHECK_EQ(rule((rm_http_req_facts){.head_bytes = 1001, .te_other = 1, .expect = "x"}), 431);
}

static void test_rule_other_transfer_coding_is_501(void)
{
    CHECK_EQ(rule((rm_http_req_facts){.te_other = 1}), 501);
    CHECK_EQ(rule((rm_http_req_facts){
                 .te_other = 1, .has_length = 1, .content_length = 9999, .expect = "x"}),
             501);
}

static void test_rule_content_length_bound_is_413(void)
{
    CHECK_EQ(rule((rm_http_req_facts){.has_length = 1, .content_length = 5000}), 0);
    CHECK_EQ(rule((rm_http_req_facts){.has_length = 1, .content_length = 5001}), 413);
    CHECK_EQ(rule((rm_http_req_facts){.has_length = 1, .content_length = UINT64_MAX}), 413);
    /* No Content-Length (chunked, or none): the body is bounded as it comes. */
    CHECK_EQ(rule((rm_http_req_facts){.content_length = UINT64_MAX}), 0);
    CHECK_EQ(rule((rm_http_req_facts){.has_length = 1, .content_length = 5001, .expect = "x"}),
             413);
    /* The body read, with the piece being read. */
    CHECK_EQ(rule((rm_http_req_facts){.body_bytes = 5000}), 0);
    CHECK_EQ(rule((rm_http_req_facts){.body_bytes = 5001}), 413);
}

static void test_rule_expect(void)
{
    CHECK_EQ(rule((rm_http_req_facts){.expect = "100-continue"}), RM_HTTP_REQ_CONTINUE);
    CHECK_EQ(rule((rm_http_req_facts){.expect = "100-Continue"}), RM_HTTP_REQ_CONTINUE);
    CHECK_EQ(rule((rm_http_req_facts){.expect = "200-ok"}), 417);
    CHECK_EQ(rule((rm_http_req_facts){.expect = "100-continue, x"}), 417);
    CHECK_EQ(rule((rm_http_req_facts){.expect = ""}), 0);
    CHECK_EQ(rule((rm_http_req_facts){.expect = NULL}), 0);
    CHECK_EQ(rule((rm_http_req_facts){
                 .has_length = 1, .content_length = 5000, .expect = "100-continue"}),
             RM_HTTP_REQ_CONTINUE);
    /* HTTP/1.0 knows no interim answers: its 100-continue is ignored,
     * another expectation still refused. */
    CHECK_EQ(rule((rm_http_req_facts){.expect = "100-continue", .http10 = 1}), 0);
    CHECK_EQ(rule((rm_http_req_facts){.expect = "200-ok", .http10 = 1}), 417);
    CHECK_EQ(rule((rm_http_req_facts){
                 .has_length = 1, .content_length = 5001, .expect = "100-continue", .http10 = 1}),
             413);
    CHECK_EQ(RM_HTTP_REQ_CONTINUE, 100);
    CHECK(!strcmp(RM_HTTP_CONTINUE, "HTTP/1.1 100 Continue\r\n\r\n"));
    CHECK_EQ(RM_HTTP_CONTINUE_LEN, strlen(RM_HTTP_CONTINUE));
}

/* ---- the reader the servers' callbacks call ---------------------------------------- */

/* A request read through a parser as http_parser_execute hands it over
 * (only the fields the reader looks at are set). */
typedef struct {
    rm_http_req r;
    http_parser p;
} reading;

static void start(reading *x)
{
    memset(x, 0, sizeof *x);
    x->r.owner = x;
    x->r.lim = lim;
    x->p.data = &x->r;
    x->p.content_length = ULLONG_MAX;
    x->p.http_major = x->p.http_minor = 1; /* as http-parser has it by the headers */
}

static int req_url(reading *x, const char *s)
{
    return rm_http_req_on_url(&x->p, s, strlen(s));
}

static int req_field(reading *x, const char *s)
{
    return rm_http_req_on_field(&x->p, s, strlen(s));
}

static int req_value(reading *x, const char *s)
{
    return rm_http_req_on_value(&x->p, s, strlen(s));
}

/* on_headers_complete, with the Content-Length http-parser read (-1: none). */
static int complete(reading *x, long long length)
{
    if (length >= 0) {
        x->p.flags |= F_CONTENTLENGTH;
        x->p.content_length = (uint64_t)length;
    }
    return rm_http_req_headers_complete(&x->p);
}

static void test_reader_keeps_url_and_headers(void)
{
    reading x;
    start(&x);
    CHECK(rm_http_req_owner(&x.p) == &x);
    CHECK_EQ(req_url(&x, "/v1/"), 0);
    CHECK_EQ(req_url(&x, "models?x=1"), 0);
    CHECK_EQ(req_field(&x, "Authorization"), 0);
    CHECK_EQ(req_value(&x, "Bearer t"), 0);
    CHECK_EQ(req_field(&x, "Content-Length"), 0);
    CHECK_EQ(req_value(&x, "12"), 0);
    CHECK_EQ(complete(&x, 12), 0);
    CHECK(!strcmp(x.r.url.p, "/v1/models?x=1"));
    CHECK(!strcmp(x.r.head.out.p, "Authorization: Bearer t\r\n"));
    CHECK_EQ(x.r.refuse, 0);
    rm_http_req_reset(&x.r);
    CHECK(!x.r.url.p && !x.r.head.out.p && !x.r.head.bytes && !x.r.refuse);
    /* The owner and limits stay for the next request. */
    CHECK(rm_http_req_owner(&x.p) == &x);
    CHECK_EQ(x.r.lim.max_head, 1000);
    rm_http_req_reset(&x.r);
}

/* n times c (n < 1024; the same buffer each call). */
static const char *run_of(char c, size_t n)
{
    static char buf[1024];
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

static void test_reader_url_bound(void)
{
    reading x;
    start(&x);
    CHECK_EQ(req_url(&x, run_of('a', 100)), 0); /* exactly the bound */
    CHECK_EQ(x.r.refuse, 0);
    CHECK_EQ(req_url(&x, "b"), -1);
    CHECK_EQ(x.r.refuse, 414);
    CHECK_EQ(rm_http_req_refusal(&x.r, HPE_CB_url), 414);
    rm_http_req_reset(&x.r);
    CHECK_EQ(x.r.refuse, 0);
}

static void test_reader_head_bound_counts_url_names_and_values(void)
{
    const char *big = run_of('v', 900);
    reading x;
    start(&x);
    CHECK_EQ(req_url(&x, "/0123456789"), 0);  /* 11 */
    CHECK_EQ(req_field(&x, "X-Pad-Name"), 0); /* 21 */
    CHECK_EQ(req_value(&x, big), 0);          /* 921 */
    CHECK_EQ(req_field(&x, "X-Two-Name-0123456789-0123456789-0123456789-0123456789-01234"),
             0);                              /* 981 */
    CHECK_EQ(req_value(&x, "0123456789"), 0); /* 991 */
    CHECK_EQ(req_value(&x, "012345678"), 0);  /* 1000: exactly the bound */
    CHECK_EQ(req_value(&x, "9"), -1);         /* 1001 */
    CHECK_EQ(x.r.refuse, 431);
    CHECK_EQ(rm_http_req_refusal(&x.r, HPE_CB_header_value), 431);
    rm_http_req_reset(&x.r);
    /* A name alone can pass it too. */
    CHECK_EQ(req_url(&x, "/"), 0);
    CHECK_EQ(req_field(&x, big), 0);
    CHECK_EQ(req_field(&x, "x"), 0);
    CHECK_EQ(req_field(&x, big), -1);
    CHECK_EQ(x.r.refuse, 431);
    rm_http_req_reset(&x.r);
}

static void test_reader_whole_head(void)
{
    static const struct {
        const char *field, *value; /* one header */
        long long length;          /* Content-Length, -1: none */
        int verdict, refuse;
    } cases[] = {
        {"X-A", "1", 5001, -1, 413},
        {"X-A", "1", 5000, 0, 0},
        {"Expect", "100-continue", 5000, RM_HTTP_REQ_CONTINUE, 0},
        {"Expect", "200-ok", -1, -1, 417},
        {"Transfer-Encoding", "gzip, chunked", -1, -1, 501},
        {"Transfer-Encoding", "chunked", -1, 0, 0},
    };
    for (size_t i = 0; i < RM_ARRAY_LEN(cases); i++) {
        reading x;
        start(&x);
        req_url(&x, "/");
        req_field(&x, cases[i].field);
        req_value(&x, cases[i].value);
        CHECK_EQ(complete(&x, cases[i].length), cases[i].verdict);
        CHECK_EQ(x.r.refuse, cases[i].refuse);
        rm_http_req_reset(&x.r);
    }
}

/* The version comes from the parser: 1.0 and older ignore 100-continue,
 * 1.1 is answered. */
static void test_reader_expect_by_version(void)
{
    static const struct {
        unsigned short major, minor;
        int verdict;
    } cases[] = {{1, 1, RM_HTTP_REQ_CONTINUE}, {1, 0, 0}, {0, 9, 0}, {2, 0, RM_HTTP_REQ_CONTINUE}};
    for (size_t i = 0; i < RM_ARRAY_LEN(cases); i++) {
        reading x;
        start(&x);
        x.p.http_major = cases[i].major;
        x.p.http_minor = cases[i].minor;
        req_url(&x, "/");
        req_field(&x, "Expect");
        req_value(&x, "100-continue");
        CHECK_EQ(complete(&x, 10), cases[i].verdict);
        CHECK_EQ(x.r.refuse, 0);
        rm_http_req_reset(&x.r);
    }
}

static void test_reader_body_bound(void)
{
    reading x;
    start(&x);
    CHECK_EQ(rm_http_req_body(&x.p, 0, 4000), 0);
    CHECK_EQ(rm_http_req_body(&x.p, 4000, 1000), 0); /* exactly the bound */
    CHECK_EQ(x.r.refuse, 0);
    CHECK_EQ(rm_http_req_body(&x.p, 5000, 1), -1);
    CHECK_EQ(x.r.refuse, 413);
    CHECK_EQ(rm_http_req_refusal(&x.r, HPE_CB_body), 413);
    rm_http_req_reset(&x.r);
}

/* A chunked body is refused on the chunk sizes announced, before their
 * bytes come: exactly the bound is taken, one byte past it is 413, a size
 * near 2^64 saturates rather than wraps, and the next request starts
 * from nothing. */
static void test_reader_chunks_announced_past_the_bound(void)
{
    reading x;
    start(&x);
    x.p.content_length = 4000;
    CHECK_EQ(rm_http_req_on_chunk_header(&x.p), 0);
    x.p.content_length = 1000;
    CHECK_EQ(rm_http_req_on_chunk_header(&x.p), 0); /* 5000: the bound */
    x.p.content_length = 0;                         /* the last chunk */
    CHECK_EQ(rm_http_req_on_chunk_header(&x.p), 0);
    CHECK_EQ(x.r.refuse, 0);
    x.p.content_length = 1;
    CHECK_EQ(rm_http_req_on_chunk_header(&x.p), -1);
    CHECK_EQ(x.r.refuse, 413);
    CHECK_EQ(rm_http_req_refusal(&x.r, HPE_CB_chunk_header), 413);
    rm_http_req_reset(&x.r);
    CHECK_EQ(x.r.chunked, 0);
    x.p.content_length = 10;
    CHECK_EQ(rm_http_req_on_chunk_header(&x.p), 0);
    x.p.content_length = UINT64_MAX - 5; /* would wrap to 4 */
    CHECK_EQ(rm_http_req_on_chunk_header(&x.p), -1);
    CHECK_EQ(x.r.chunked, UINT64_MAX);
    rm_http_req_reset(&x.r);
}

/* Trailer fields of a chunked body come through the header callbacks
 * after the head: they are not added to the request's headers. */
static void test_reader_ignores_trailers(void)
{
    reading x;
    start(&x);
    CHECK_EQ(req_url(&x, "/v1/completions"), 0);
    CHECK_EQ(req_field(&x, "Authorization"), 0);
    CHECK_EQ(req_value(&x, "Bearer a"), 0);
    CHECK_EQ(complete(&x, -1), 0);
    size_t bytes = x.r.head.bytes;
    CHECK_EQ(req_field(&x, "X-Trailer"), 0);
    CHECK_EQ(req_value(&x, "1"), 0);
    CHECK_EQ(req_field(&x, "Authorization"), 0);
    CHECK_EQ(req_value(&x, "Bearer b"), 0);
    CHECK(!strcmp(x.r.head.out.p, "Authorization: Bearer a\r\n"));
    CHECK_EQ(x.r.head.bytes, bytes);
    rm_http_req_reset(&x.r);
    CHECK_EQ(x.r.head_done, 0);
}

/* Whether the request is a HEAD is noted with its head, and kept through
 * a reset (an owner resets before it answers some refusals) until the
 * owner clears it. */
static void test_reader_notes_head_requests(void)
{
    reading x;
    start(&x);
    x.p.method = HTTP_GET;
    CHECK_EQ(complete(&x, -1), 0);
    CHECK_EQ(x.r.head_request, 0);
    rm_http_req_reset(&x.r);
    x.p.method = HTTP_HEAD;
    CHECK_EQ(complete(&x, -1), 0);
    CHECK_EQ(x.r.head_request, 1);
    rm_http_req_reset(&x.r);
    CHECK_EQ(x.r.head_request, 1);
}

static void test_refusal_status(void)
{
    rm_http_req r = {.lim = lim};
    CHECK_EQ(rm_http_req_refusal(&r, HPE_HEADER_OVERFLOW), 431);
    CHECK_EQ(rm_http_req_refusal(&r, HPE_INVALID_METHOD), 400);
    CHECK_EQ(rm_http_req_refusal(&r, HPE_INVALID_CONTENT_LENGTH), 400);
    r.refuse = 503; /* the owner's own */
    CHECK_EQ(rm_http_req_refusal(&r, HPE_CB_body), 503);
}

int main(void)
{
    RUN(test_pieces_are_joined);
    RUN(test_hop_by_hop_headers_are_not_kept);
    RUN(test_expect_and_empty_values);
    RUN(test_transfer_codings);
    RUN(test_end_without_headers_is_harmless);
    RUN(test_rule_url_bound_is_414);
    RUN(test_rule_head_bound_is_431);
    RUN(test_rule_other_transfer_coding_is_501);
    RUN(test_rule_content_length_bound_is_413);
    RUN(test_rule_expect);
    RUN(test_reader_keeps_url_and_headers);
    RUN(test_reader_url_bound);
    RUN(test_reader_head_bound_counts_url_names_and_values);
    RUN(test_reader_whole_head);
    RUN(test_reader_expect_by_version);
    RUN(test_reader_body_bound);
    RUN(test_reader_chunks_announced_past_the_bound);
    RUN(test_reader_ignores_trailers);
    RUN(test_reader_notes_head_requests);
    RUN(test_refusal_status);
    return rm_t_report();
}
