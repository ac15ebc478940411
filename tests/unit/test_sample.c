/* Unit tests for worker/sample.c and worker/bytetok.c: greedy is the
 * argmax (lowest id on ties) and draws nothing; seeded sampling repeats
 * for a seed and follows the softmax; top-p keeps the smallest set of
 * likeliest tokens reaching the mass; parameters are checked; the byte
 * vocabulary round-trips any bytes and shows ids >= 256; its text stream
 * is valid UTF-8 as WHATWG's decoder (and Python's "replace") makes it, and
 * token by token gives the same text as all at once. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bytetok.h"
#include "check.h"
#include "sample.h"

static float scratch[16];
static uint32_t idx[16];

static void test_greedy_is_argmax_lowest_id_on_ties(void)
{
    const float lg[5] = {0.1f, 2.0f, -1.0f, 2.0f, 1.9f};
    rm_sample_params p = {0, 1};
    rm_rng r = {5}, before = r;
    CHECK_EQ(rm_sample(lg, 5, &p, &r, scratch, idx), 1);
    CHECK(r.s == before.s);
}

static void test_seeded_sampling_repeats_and_follows_softmax(void)
{
    const float lg[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    rm_sample_params p = {1, 1};
    rm_rng a = {99}, b = {99};
    int counts[3] = {0};
    const int n = 20000;
    int same = 1;
    for (int i = 0; i < n; i++) {
        uint32_t x = rm_sample(lg, 3, &p, &a, scratch, idx);
        same &= x == rm_sample(lg, 3, &p, &b, scratch, idx);
        counts[x]++;
    }
    CHECK(same);
    CHECK(fabs(counts[0] / (double)n - 0.5) < 0.02);
    CHECK(fabs(counts[1] / (double)n - 0.3) < 0.02);
    CHECK(fabs(counts[2] / (double)n - 0.2) < 0.02);
    /* A low temperature sharpens toward the argmax. */
    rm_sample_params cold = {0.05f, 1};
    int top = 0;
    for (int i = 0; i < 1000; i++)
        top += rm_sample(lg, 3, &cold, &a, scratch, idx) == 0;
    CHECK(top > 990);
}

static void test_top_p_keeps_the_likeliest_mass(void)
{
    const float lg[4] = {logf(0.2f), logf(0.5f), logf(0.1f), logf(0.2f)};
    rm_sample_params p = {1, 0.6f}; /* 0.5 alone is short: {1, 0} (0 before 3 on the tie) */
    rm_rng r = {1};
    int seen[4] = {0};
    for (int i = 0; i < 5000; i++)
        seen[rm_sample(lg, 4, &p, &r, scratch, idx)]++;
    CHECK(seen[0] > 0 && seen[1] > 0);
    CHECK_EQ(seen[2], 0);
    CHECK_EQ(seen[3], 0);
    rm_sample_params tiny = {1, 1e-6f};
    int all_top = 1;
    for (int i = 0; i < 1000; i++)
        all_top &= rm_sample(lg, 4, &tiny, &r, scratch, idx) == 1;
    CHECK(all_top);
}

static void test_params_are_checked(void)
{
    const rm_sample_params ok[] = {{0, 1}, {0.7f, 0.9f}, {2, 1e-3f}};
    const rm_sample_params bad[] = {{-1, 1}, {NAN, 1},  {INFINITY, 1},
                                    {1, 0},  {1, 1.5f}, {1, -0.1f}};
    for (size_t i = 0; i < RM_ARRAY_LEN(ok); i++)
        CHECK(rm_sample_params_valid(&ok[i]));
    for (size_t i = 0; i < RM_ARRAY_LEN(bad); i++)
        CHECK(!rm_sample_params_valid(&bad[i]));
}

static void test_byte_vocabulary_round_trips(void)
{
    const char text[] = "h\xc3\xa9llo\x00\xff!";
    const size_t len = sizeof text - 1;
    uint32_t ids[16];
    CHECK_EQ(rm_bytetok_encode(text, len, ids), len);
    CHECK_EQ(ids[1], 0xc3);
    CHECK_EQ(ids[6], 0);
    CHECK_EQ(ids[7], 255);
    rm_sbuf b = {0};
    rm_bytetok_decode(ids, len, &b);
    CHECK_EQ(b.len, len);
    CHECK(!memcmp(b.p, text, len));
    const uint32_t big[2] = {300, 'x'};
    rm_bytetok_decode(big, 2, &b);
    CHECK(!strcmp(b.p + len, "<|300|>x"));
    free(b.p);
}

/* Bytes, and their text as Python's bytes.decode("utf-8", "replace")
 * gives it (maximal invalid parts as one U+FFFD each). */
static const struct {
    const char *in;
    size_t len;
    const char *text;
} utf8_vectors[] = {
    {"\x61\x62\x63", 3, "\x61\x62\x63"},
    {"\xc3\xa9", 2, "\xc3\xa9"},
    {"\xe2\x82\xac", 3, "\xe2\x82\xac"},
    {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"},
    {"\x80", 1, "\xef\xbf\xbd"},
    {"\xc3\x61", 2, "\xef\xbf\xbd\x61"},
    {"\xe0\x80", 2, "\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xf5", 1, "\xef\xbf\xbd"},
    {"\xe2\x82", 2, "\xef\xbf\xbd"},
    {"\xf0\x9f\x98", 3, "\xef\xbf\xbd"},
    {"\xf4\x90\x80\x80", 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},
    {"\x61\xff\x62", 3, "\x61\xef\xbf\xbd\x62"},
    {"\x82\xbf\xac\xa0\x41\x80\x9f\x80\x82\xed\x41\x9f", 12,
     "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\x41\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef"
     "\xbf"
     "\xbd\xef\xbf\xbd\x41\xef\xbf\xbd"},
    {"\xc3\x41\x80\xac\xac\x80\xc3\x80\x9f\xac\x41\xed", 12,
     "\xef\xbf\xbd\x41\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xc3\x80\xef\xbf\xbd\xef\xbf"
     "\xbd\x41\xef\xbf\xbd"},
    {"\x80\xc3\xa0\xa0\xed\x41\xed\xed\xac\x41\xc3\x41", 12,
     "\xef\xbf\xbd\xc3\xa0\xef\xbf\xbd\xef\xbf\xbd\x41\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\x41\xef"
     "\xbf\xbd\x41"},
    {"\x9f\xbf\xe2\xac\xbf\x9f\x80\xed\xe2\x9f\xa0\xbf", 12,
     "\xef\xbf\xbd\xef\xbf\xbd\xe2\xac\xbf\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xe2\x9f\xa0\xef\xbf"
     "\xbd"},
};

/* The text of ids fed one token at a time (piecewise) or all at once. */
static char *text_of(const uint32_t *ids, size_t n, int piecewise, size_t *len)
{
    rm_bytetok_text t = {0};
    rm_sbuf b = {0};
    rm_sbuf_append(&b, "", 0);
    if (piecewise)
        for (size_t i = 0; i < n; i++)
            rm_bytetok_text_feed(&t, ids + i, 1, &b);
    else
        rm_bytetok_text_feed(&t, ids, n, &b);
    rm_bytetok_text_flush(&t, &b);
    *len = b.len;
    return b.p;
}

static void test_text_stream_is_utf8_as_python_replace(void)
{
    for (size_t v = 0; v < RM_ARRAY_LEN(utf8_vectors); v++) {
        uint32_t ids[16];
        rm_bytetok_encode(utf8_vectors[v].in, utf8_vectors[v].len, ids);
        for (int piecewise = 0; piecewise < 2; piecewise++) {
            size_t len;
            char *t = text_of(ids, utf8_vectors[v].len, piecewise, &len);
            int ok = len == strlen(utf8_vectors[v].text) && !memcmp(t, utf8_vectors[v].text, len);
            if (!ok)
                fprintf(stderr, "vector %zu (piecewise %d) differs\n", v, piecewise);
            CHECK(ok);
            free(t);
        }
    }
}

static void test_text_stream_pieces_add_up_and_ids_end_a_character(void)
{
    /* Random bytes and ids: one token at a time == all at once. */
    uint64_t x = 42;
    for (int round = 0; round < 500; round++) {
        uint32_t ids[24];
        for (size_t i = 0; i < 24; i++) {
            x = rm_mix64(x + i);
            ids[i] = x % 17 == 0 ? 256 + (uint32_t)(x % 1000) : (uint32_t)(x >> 8) % 256;
        }
        size_t la, lb;
        char *a = text_of(ids, 24, 0, &la), *b = text_of(ids, 24, 1, &lb);
        CHECK(la == lb && !memcmp(a, b, la));
        free(a);
        free(b);
    }
    /* A pending character cut by an id >= 256 is one U+FFFD. */
    const uint32_t cut[3] = {0xE2, 300, 'x'};
    size_t len;
    char *t = text_of(cut, 3, 1, &len);
    CHECK(len == 11 && !memcmp(t, "\xef\xbf\xbd<|300|>x", 11));
    free(t);
}

int main(void)
{
    RUN(test_greedy_is_argmax_lowest_id_on_ties);
    RUN(test_seeded_sampling_repeats_and_follows_softmax);
    RUN(test_top_p_keeps_the_likeliest_mass);
    RUN(test_params_are_checked);
    RUN(test_byte_vocabulary_round_trips);
    RUN(test_text_stream_is_utf8_as_python_replace);
    RUN(test_text_stream_pieces_add_up_and_ids_end_a_character);
    return rm_t_report();
}
