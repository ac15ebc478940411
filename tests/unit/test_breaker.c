/* Unit tests for router/breaker.c: the circuit breaker of a worker. */
#include "breaker.h"
#include "check.h"

static const rm_breaker_config cfg = {3, 1000, 4000};

static void test_opens_after_consecutive_failures(void)
{
    rm_breaker b;
    rm_breaker_init(&b);
    CHECK(rm_breaker_admits(&b));
    CHECK_EQ(rm_breaker_done(&b, &cfg, 0, RM_BREAKER_FAILURE, 10), 0);
    CHECK_EQ(rm_breaker_done(&b, &cfg, 0, RM_BREAKER_FAILURE, 20), 0);
    CHECK_EQ(b.state, RM_BREAKER_CLOSED);
    CHECK(rm_breaker_admits(&b));
    CHECK_EQ(rm_breaker_done(&b, &cfg, 0, RM_BREAKER_FAILURE, 30), 1);
    CHECK_EQ(b.state, RM_BREAKER_OPEN);
    CHECK(!rm_breaker_admits(&b));
    CHECK_EQ(b.until_ms, 30 + 1000);
}

static void test_success_or_no_verdict_between_failures(void)
{
    rm_breaker b;
    rm_breaker_init(&b);
    rm_breaker_done(&b, &cfg, 0, RM_BREAKER_FAILURE, 0);
    rm_breaker_done(&b, &cfg, 0, RM_BREAKER_FAILURE, 0);
    rm_breaker_done(&b, &cfg, 0, RM_BREAKER_SUCCESS, 0); /* not consecutive any more */
    rm_breaker_done(&b, &cfg, 0, RM_BREAKER_FAILURE, 0);
    rm_breaker_done(&b, &cfg, 0, RM_BREAKER_FAILURE, 0);
    CHECK_EQ(b.state, RM_BREAKER_CLOSED);
    /* A client that left says nothing: the count goes on. */
    rm_breaker_done(&b, &cfg, 0, RM_BREAKER_NO_VERDICT, 0);
    CHECK_EQ(b.state, RM_BREAKER_CLOSED);
    rm_breaker_done(&b, &cfg, 0, RM_BREAKER_FAILURE, 0);
    CHECK_EQ(b.state, RM_BREAKER_OPEN);
}

static rm_breaker opened(uint64_t at)
{
    rm_breaker b;
    rm_breaker_init(&b);
    for (int i = 0; i < 3; i++)
        rm_breaker_done(&b, &cfg, 0, RM_BREAKER_FAILURE, at);
    return b;
}

static void test_half_open_after_cooldown_admits_one_trial(void)
{
    rm_breaker b = opened(100);
    CHECK_EQ(rm_breaker_poll(&b, 1099), 0);
    CHECK_EQ(b.state, RM_BREAKER_OPEN);
    CHECK_EQ(rm_breaker_take(&b), 0);
    CHECK_EQ(rm_breaker_poll(&b, 1100), 1);
    CHECK_EQ(b.state, RM_BREAKER_HALF_OPEN);
    CHECK(rm_breaker_admits(&b));
    CHECK_EQ(rm_breaker_take(&b), 1);
    CHECK(!rm_breaker_admits(&b)); /* one trial at a time */
    CHECK_EQ(rm_breaker_poll(&b, 5000), 0);
    CHECK(!rm_breaker_admits(&b));
}

/* Opened at 0, half-open at 1000, its trial taken (*trial). */
static rm_breaker in_trial(int *trial)
{
    rm_breaker b = opened(0);
    rm_breaker_poll(&b, 1000);
    *trial = rm_breaker_take(&b);
    return b;
}

static void test_answered_trial_closes(void)
{
    int trial;
    rm_breaker b = in_trial(&trial);
    CHECK_EQ(rm_breaker_done(&b, &cfg, trial, RM_BREAKER_SUCCESS, 1500), 1);
    CHECK_EQ(b.state, RM_BREAKER_CLOSED);
    CHECK_EQ(b.failures, 0);
    CHECK(rm_breaker_admits(&b));
    CHECK_EQ(rm_breaker_take(&b), 0);
    /* And the next opening starts from the base cooldown again. */
    for (int i = 0; i < 3; i++)
        rm_breaker_done(&b, &cfg, 0, RM_BREAKER_FAILURE, 2000);
    CHECK_EQ(b.until_ms, 3000);
}

static void test_failed_trial_reopens_with_backoff(void)
{
    rm_breaker b = opened(0);
    uint64_t now = 0;
    const uint64_t want[] = {2000, 4000, 4000}; /* doubled, then bounded */
    for (int i = 0; i < 3; i++) {
        now = b.until_ms;
        CHECK_EQ(rm_breaker_poll(&b, now), 1);
        int trial = rm_breaker_take(&b);
        CHECK_EQ(trial, 1);
        CHECK_EQ(rm_breaker_done(&b, &cfg, trial, RM_BREAKER_FAILURE, now + 5), 1);
        CHECK_EQ(b.state, RM_BREAKER_OPEN);
        CHECK_EQ(b.until_ms, now + 5 + want[i]);
    }
}

static void test_trial_without_verdict_frees_the_slot(void)
{
    int trial;
    rm_breaker b = in_trial(&trial);
    CHECK_EQ(rm_breaker_done(&b, &cfg, trial, RM_BREAKER_NO_VERDICT, 1200), 0);
    CHECK_EQ(b.state, RM_BREAKER_HALF_OPEN);
    CHECK(rm_breaker_admits(&b));
    CHECK_EQ(rm_breaker_take(&b), 1);
}

static void test_late_outcomes_do_not_decide(void)
{
    /* Requests sent before the breaker opened end while it is open or
     * half-open: neither their success nor their failure counts. */
    rm_breaker b = opened(0);
    CHECK_EQ(rm_breaker_done(&b, &cfg, 0, RM_BREAKER_SUCCESS, 10), 0);
    CHECK_EQ(b.state, RM_BREAKER_OPEN);
    CHECK_EQ(rm_breaker_done(&b, &cfg, 0, RM_BREAKER_FAILURE, 20), 0);
    CHECK_EQ(b.until_ms, 1000); /* not pushed back */
    rm_breaker_poll(&b, 1000);
    int trial = rm_breaker_take(&b);
    CHECK_EQ(rm_breaker_done(&b, &cfg, 0, RM_BREAKER_SUCCESS, 1001), 0);
    CHECK_EQ(b.state, RM_BREAKER_HALF_OPEN);
    CHECK(!rm_breaker_admits(&b));
    CHECK_EQ(rm_breaker_done(&b, &cfg, trial, RM_BREAKER_SUCCESS, 1002), 1);
    CHECK_EQ(b.state, RM_BREAKER_CLOSED);
    /* A trial reported after a reset (the worker changed) decides nothing. */
    CHECK_EQ(rm_breaker_done(&b, &cfg, 1, RM_BREAKER_FAILURE, 1003), 0);
    CHECK_EQ(b.state, RM_BREAKER_CLOSED);
}

static void test_names(void)
{
    CHECK(rm_breaker_state_name(RM_BREAKER_CLOSED)[0] == 'c');
    CHECK(rm_breaker_state_name(RM_BREAKER_OPEN)[0] == 'o');
    CHECK(rm_breaker_state_name(RM_BREAKER_HALF_OPEN)[0] == 'h');
    CHECK(rm_breaker_state_name((rm_breaker_state)3)[0] == '?');
}

int main(void)
{
    RUN(test_opens_after_consecutive_failures);
    RUN(test_success_or_no_verdict_between_failures);
    RUN(test_half_open_after_cooldown_admits_one_trial);
    RUN(test_answered_trial_closes);
    RUN(test_failed_trial_reopens_with_backoff);
    RUN(test_trial_without_verdict_frees_the_slot);
    RUN(test_late_outcomes_do_not_decide);
    RUN(test_names);
    return rm_t_report();
}
