/* Unit tests for the placement rules (router/placement.h): the choice
 * between two peeked candidates, the credit of a cached prefix, the
 * bounded-load capacity and the decay of recent load. */
#include "check.h"
#include "placement.h"

#define KEY 64 /* the request's key covers its first 64 tokens */

static int decide(int64_t a, double served_a, int64_t b, double served_b)
{
    rm_place_candidate c[2] = {{a, served_a, 0}, {b, served_b, 0}};
    return rm_place_decide(c, 2, KEY);
}

static void test_credit_counts_from_the_key_block_on(void)
{
    CHECK_EQ(rm_place_credit(-1, KEY), -1); /* a failed peek */
    CHECK_EQ(rm_place_credit(0, KEY), 0);
    CHECK_EQ(rm_place_credit(KEY - 1, KEY), 0); /* key block partly cached */
    CHECK_EQ(rm_place_credit(KEY, KEY), 1);     /* all of it */
    CHECK_EQ(rm_place_credit(KEY + 100, KEY), 101);
}

static void test_one_candidate_takes_it(void)
{
    rm_place_candidate c[1] = {{-1, 5, 0}};
    CHECK_EQ(rm_place_decide(c, 1, KEY), 0);
    c[0] = (rm_place_candidate){500, 0, 1}; /* even gone: there is no other */
    CHECK_EQ(rm_place_decide(c, 1, KEY), 0);
}

static void test_failed_peeks(void)
{
    CHECK_EQ(decide(-1, 0, 10, 100), 1); /* the one that answered */
    CHECK_EQ(decide(10, 100, -1, 0), 0);
    CHECK_EQ(decide(-1, 100, -1, 0), 0); /* both failed: the first, whatever served */
}

static void test_longer_cached_prefix_wins(void)
{
    CHECK_EQ(decide(KEY + 10, 100, KEY + 50, 200), 1);
    CHECK_EQ(decide(KEY + 50, 200, KEY + 10, 100), 0);
    CHECK_EQ(decide(KEY, 100, 0, 0), 0); /* the whole key block beats nothing */
}

static void test_key_block_partly_cached_is_no_credit(void)
{
    /* A shared prompt shorter than the key block counts for nothing: the
     * node that served fewer takes the new conversation. */
    CHECK_EQ(decide(KEY - 1, 10, 0, 5), 1);
    CHECK_EQ(decide(0, 5, KEY - 1, 10), 0);
    CHECK_EQ(decide(KEY - 1, 10, KEY, 50), 1); /* the whole block does count */
}

static void test_equal_credit_goes_to_the_one_that_served_fewer(void)
{
    CHECK_EQ(decide(KEY + 5, 10, KEY + 5, 3), 1);
    CHECK_EQ(decide(KEY + 5, 3, KEY + 5, 10), 0);
    CHECK_EQ(decide(0, 7, 0, 7), 0); /* all equal: the first */
}

static void test_a_winner_gone_meanwhile_yields(void)
{
    rm_place_candidate c[2] = {{KEY + 50, 0, 1}, {0, 10, 0}};
    CHECK_EQ(rm_place_decide(c, 2, KEY), 1);
    c[1].gone = 1; /* both gone: the rule's choice stands */
    CHECK_EQ(rm_place_decide(c, 2, KEY), 0);
    c[0].gone = 0; /* the loser gone: no change */
    CHECK_EQ(rm_place_decide(c, 2, KEY), 0);
}

static void test_capacity_is_bounded_below_by_the_floor(void)
{
    /* ceil(1.25 * (total + 1) / up) */
    CHECK(rm_place_capacity(1.25, 399, 4, 32) == 125);
    CHECK(rm_place_capacity(1.25, 400, 4, 32) == 126); /* 125.3 rounds up */
    CHECK(rm_place_capacity(1.25, 3, 4, 32) == 32);    /* near zero load: the floor */
    CHECK(rm_place_capacity(1.25, 3, 4, 0) == 2);
}

static void test_decay_halves_every_half_life(void)
{
    CHECK(rm_place_decay(8, 0, 1000) == 8);
    CHECK(rm_place_decay(8, 1000, 1000) == 4);
    CHECK(rm_place_decay(8, 3000, 1000) == 1);
    double q = rm_place_decay(8, 500, 1000);
    CHECK(q > 5.656 && q < 5.657); /* 8 / sqrt(2) */
}

int main(void)
{
    RUN(test_credit_counts_from_the_key_block_on);
    RUN(test_one_candidate_takes_it);
    RUN(test_failed_peeks);
    RUN(test_longer_cached_prefix_wins);
    RUN(test_key_block_partly_cached_is_no_credit);
    RUN(test_equal_credit_goes_to_the_one_that_served_fewer);
    RUN(test_a_winner_gone_meanwhile_yields);
    RUN(test_capacity_is_bounded_below_by_the_floor);
    RUN(test_decay_halves_every_half_life);
    return rm_t_report();
}
