/* Unit tests for the placement rules (router/placement.h): a request's cost,
 * the reply length to expect, the work bound and its floor, a worker's
 * backlog and saturation, the choice between two peeked candidates by work
 * and by requests, the credit of a cached prefix, and the decay. */
#include <math.h>

#include "check.h"
#include "placement.h"

#define KEY 64 /* the request's key covers its first 64 tokens */

static int near(double a, double b)
{
    return fabs(a - b) < 1e-9 * (fabs(a) + fabs(b) + 1);
}

/* ---- work ------------------------------------------------------------------- */

static void test_cost_is_uncached_prompt_plus_weighted_output(void)
{
    CHECK(near(rm_place_cost(1000, 0, 200, 1), 1200));
    CHECK(near(rm_place_cost(1000, 600, 200, 1), 600));
    CHECK(near(rm_place_cost(1000, 600, 200, 3), 1000)); /* decode weight */
    CHECK(near(rm_place_cost(1000, -1, 0, 1), 1000));    /* a failed peek holds nothing */
    CHECK(near(rm_place_cost(1000, 1000, 0, 1), 0));     /* all cached, no reply */
    CHECK(near(rm_place_cost(100, 160, 10, 1), 10));     /* more held than asked: no negative */
    CHECK(near(rm_place_cost(100, 0, -5, 1), 100));      /* no negative reply either */
}

static void test_output_declared_else_namespace_else_all(void)
{
    CHECK(near(rm_place_output(300, 50, 70, 1e6), 300));
    CHECK(near(rm_place_output(0, 50, 70, 1e6), 50));
    CHECK(near(rm_place_output(0, 0, 70, 1e6), 70));
    CHECK(near(rm_place_output(0, 0, 0, 1e6), 0));
}

/* A hostile or careless declaration is bounded by a request's size. */
static void test_output_is_at_most_a_requests_tokens(void)
{
    CHECK(near(rm_place_output(UINT32_MAX, 0, 0, 1048576), 1048576));
    CHECK(near(rm_place_output(0, 5e6, 0, 1048576), 1048576));
    CHECK(near(rm_place_output(2000, 0, 0, 1048576), 2000));
}

static void test_average_starts_at_the_first_and_moves_a_sixteenth(void)
{
    CHECK(near(rm_place_average(0, 400), 400));
    CHECK(near(rm_place_average(400, 560), 410));
    double a = 0;
    for (int i = 0; i < 500; i++)
        a = rm_place_average(a, i % 2 ? 100 : 300);
    CHECK(a > 190 && a < 210);
}

static void test_auto_floor_is_where_chance_reaches_the_factor(void)
{
    CHECK(near(rm_place_auto_floor(1.25), 16));
    CHECK(near(rm_place_auto_floor(1.1), 100));
    CHECK(near(rm_place_auto_floor(3), 1)); /* 0.25, at least one request */
    CHECK(near(rm_place_auto_floor(1), 1)); /* no tolerance at all: one */
}

static void test_work_capacity_is_the_factor_of_the_mean_after_or_the_floor(void)
{
    /* 8 nodes carrying 80,000, a request of 8,000: 1.1 * 88,000 / 8. */
    CHECK(near(rm_place_work_capacity(1.1, 80000, 8000, 8, 16, 100), 12100));
    /* Little load: the floor (16 requests of 1,000) is the bound. */
    CHECK(near(rm_place_work_capacity(1.1, 800, 800, 8, 16, 1000), 16000));
    CHECK(near(rm_place_work_capacity(1.1, 800, 800, 8, 0, 1000), 220));
}

static void test_backlog_is_own_in_flight_or_the_workers_queue(void)
{
    CHECK(near(rm_place_backlog(5000, -1, -1, 1000), 5000)); /* no figures from the worker */
    CHECK(near(rm_place_backlog(5000, 3, 4, 1000), 7000));   /* other routers' requests too */
    CHECK(near(rm_place_backlog(9000, 3, 4, 1000), 9000));   /* ours, newer than its scrape */
    CHECK(near(rm_place_backlog(0, 2, -1, 500), 1000));
    CHECK(near(rm_place_backlog(0, 2, 2, 0), 0)); /* no mean cost yet */
}

static void test_saturated_only_queueing_with_a_full_kv_cache(void)
{
    CHECK(rm_place_saturated(3, 0.99));
    CHECK(rm_place_saturated(1, RM_PLACE_KV_FULL));
    CHECK(!rm_place_saturated(0, 1.0));  /* full but keeping up */
    CHECK(!rm_place_saturated(5, 0.50)); /* queueing with room: its queue counts as load */
    CHECK(!rm_place_saturated(5, -1));   /* unknown */
}

/* A candidate: cached tokens, load, cost, cap. */
static rm_place_candidate cand(int64_t cached, double load, double cost, double cap)
{
    return (rm_place_candidate){.cached = cached, .load = load, .cost = cost, .cap = cap};
}

static void test_admits_within_the_bound_unless_saturated(void)
{
    rm_place_candidate c = cand(0, 900, 100, 1000);
    CHECK(rm_place_admits(&c));
    c.cost = 101;
    CHECK(!rm_place_admits(&c));
    c.cost = 100;
    c.saturated = 1;
    CHECK(!rm_place_admits(&c));
}

static void test_work_longer_cached_prefix_wins_when_both_admitted(void)
{
    rm_place_candidate c[2] = {cand(KEY + 10, 500, 900, 5000), cand(KEY + 50, 3000, 860, 5000)};
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 1); /* more loaded, but it holds more */
    c[0].cached = KEY + 90;
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 0);
}

static void test_work_equal_credit_goes_where_load_after_is_least(void)
{
    /* A new conversation (nothing past the key on either). */
    rm_place_candidate c[2] = {cand(0, 3000, 1000, 9000), cand(KEY - 1, 2000, 1000, 9000)};
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 1);
    c[1].load = 3000;
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 0); /* all equal: the first */
    c[1].cost = 999;
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 1); /* load + cost, not load alone */
}

/* A near tie stays with the key's own node: the second must be lighter
 * (load + cost) by more than the margin, so replicas that read the load a
 * report apart still agree. */
static void test_work_tie_break_needs_more_than_the_margin(void)
{
    rm_place_candidate c[2] = {cand(0, 3000, 1000, 9000), cand(0, 2500, 1000, 9000)};
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 500), 0); /* 500 lighter: not more than 500 */
    CHECK_EQ(rm_place_least(c, 2, 500), 0);
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 499), 1);
    CHECK_EQ(rm_place_least(c, 2, 499), 1);
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 1);
}

static void test_work_failed_peek_loses_to_an_answer(void)
{
    rm_place_candidate c[2] = {cand(-1, 0, 1000, 9000), cand(0, 4000, 1000, 9000)};
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 1);
    c[1].cached = -1; /* both failed: equal credit, the less loaded */
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 0);
}

static void test_work_bound_turns_away_the_holder(void)
{
    /* The holder is over the bound even with its cheaper cost: the other
     * takes it (a spill). */
    rm_place_candidate c[2] = {cand(KEY + 500, 9500, 600, 10000), cand(0, 2000, 1100, 10000)};
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 1);
    /* What the holder saves can keep it under: cost 400 fits. */
    c[0].cost = 400;
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 0);
    /* A saturated holder is turned away too. */
    c[0].saturated = 1;
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 1);
}

static void test_work_neither_admitted_asks_for_a_spill(void)
{
    rm_place_candidate c[2] = {cand(KEY, 9900, 800, 10000), cand(0, 9800, 850, 10000)};
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), -1);
    CHECK_EQ(rm_place_least(c, 2, 0), 1); /* the fallback: 10,650 after against 10,700 */
    c[1].load = 9950;
    CHECK_EQ(rm_place_least(c, 2, 0), 0);
    rm_place_candidate one = cand(0, 9900, 800, 10000);
    CHECK_EQ(rm_place_decide_work(&one, 1, KEY, 0), -1);
    CHECK_EQ(rm_place_least(&one, 1, 0), 0);
}

static void test_work_one_candidate_admitted_takes_it(void)
{
    rm_place_candidate c = cand(0, 0, 100, 1000);
    CHECK_EQ(rm_place_decide_work(&c, 1, KEY, 0), 0);
}

static void test_work_a_winner_gone_meanwhile_yields(void)
{
    rm_place_candidate c[2] = {cand(KEY + 50, 0, 10, 9000), cand(0, 10, 100, 9000)};
    c[0].gone = 1;
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 1);
    CHECK_EQ(rm_place_least(c, 2, 0), 1);
    c[1].gone = 1; /* both gone: the rule's choice stands */
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 0);
    c[0].gone = 0; /* the loser gone: no change */
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 0);
    /* Only the gone one admitted: the member takes it. */
    c[1] = cand(0, 0, 100, 9000);
    c[0] = cand(KEY + 50, 9000, 10, 9000);
    c[0].gone = 0;
    c[1].gone = 1;
    CHECK_EQ(rm_place_decide_work(c, 2, KEY, 0), 0);
}

/* ---- requests (the rule before work) ---------------------------------------- */

static int decide(int64_t a, double served_a, int64_t b, double served_b)
{
    rm_place_candidate c[2] = {{.cached = a, .served = served_a},
                               {.cached = b, .served = served_b}};
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
    rm_place_candidate c[1] = {{.cached = -1, .served = 5}};
    CHECK_EQ(rm_place_decide(c, 1, KEY), 0);
    c[0] = (rm_place_candidate){.cached = 500, .gone = 1}; /* even gone: there is no other */
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
    rm_place_candidate c[2] = {{.cached = KEY + 50, .gone = 1}, {.served = 10}};
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
    RUN(test_cost_is_uncached_prompt_plus_weighted_output);
    RUN(test_output_declared_else_namespace_else_all);
    RUN(test_output_is_at_most_a_requests_tokens);
    RUN(test_average_starts_at_the_first_and_moves_a_sixteenth);
    RUN(test_auto_floor_is_where_chance_reaches_the_factor);
    RUN(test_work_capacity_is_the_factor_of_the_mean_after_or_the_floor);
    RUN(test_backlog_is_own_in_flight_or_the_workers_queue);
    RUN(test_saturated_only_queueing_with_a_full_kv_cache);
    RUN(test_admits_within_the_bound_unless_saturated);
    RUN(test_work_longer_cached_prefix_wins_when_both_admitted);
    RUN(test_work_equal_credit_goes_where_load_after_is_least);
    RUN(test_work_tie_break_needs_more_than_the_margin);
    RUN(test_work_failed_peek_loses_to_an_answer);
    RUN(test_work_bound_turns_away_the_holder);
    RUN(test_work_neither_admitted_asks_for_a_spill);
    RUN(test_work_one_candidate_admitted_takes_it);
    RUN(test_work_a_winner_gone_meanwhile_yields);
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
