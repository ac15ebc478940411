/* Unit tests for common/http_head.c: header lines joined from pieces,
 * hop-by-hop headers dropped, Expect and Transfer-Encoding noted, sizes
 * counted. */
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

int main(void)
{
    RUN(test_pieces_are_joined);
    RUN(test_hop_by_hop_headers_are_not_kept);
    RUN(test_expect_and_empty_values);
    RUN(test_transfer_codings);
    RUN(test_end_without_headers_is_harmless);
    return rm_t_report();
}
