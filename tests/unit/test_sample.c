/* Unit tests for worker/sample.c and worker/bytetok.c: greedy is the
 * argmax (lowest id on ties) and draws nothing; seeded sampling repeats
 * for a seed and follows the softmax; top-p keeps the smallest set of
 * likeliest tokens reaching the mass; parameters are checked; the byte
 * vocabulary round-trips any bytes and shows ids >= 256. */
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

int main(void)
{
    RUN(test_greedy_is_argmax_lowest_id_on_ties);
    RUN(test_seeded_sampling_repeats_and_follows_softmax);
    RUN(test_top_p_keeps_the_likeliest_mass);
    RUN(test_params_are_checked);
    RUN(test_byte_vocabulary_round_trips);
    return rm_t_report();
}
