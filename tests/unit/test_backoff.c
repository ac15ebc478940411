/* Unit tests for worker/backoff.c: a healthy endpoint is always tried; a
 * transport failure skips it for 1 s, doubling per consecutive failure up
 * to 30 s; a success clears the delay. */
#include "backoff.h"
#include "check.h"

static void test_healthy_is_always_tried(void)
{
    rm_backoff b = {0, 0};
    CHECK(rm_backoff_allows(&b, 0));
    CHECK(rm_backoff_allows(&b, 123456));
    rm_backoff_record(&b, 10, 0);
    CHECK(rm_backoff_allows(&b, 10));
}

static void test_failures_double_the_delay_up_to_the_cap(void)
{
    rm_backoff b = {0, 0};
    uint64_t now = 5000;
    uint32_t want = RM_BACKOFF_MIN_MS;
    for (int i = 0; i < 10; i++) {
        rm_backoff_record(&b, now, 1);
        CHECK_EQ(b.delay_ms, want);
        CHECK(!rm_backoff_allows(&b, now));
        CHECK(!rm_backoff_allows(&b, now + want - 1));
        CHECK(rm_backoff_allows(&b, now + want));
        now += want;
        want = 2 * want < RM_BACKOFF_MAX_MS ? 2 * want : RM_BACKOFF_MAX_MS;
    }
    CHECK_EQ(b.delay_ms, RM_BACKOFF_MAX_MS);
}

static void test_success_clears_the_delay(void)
{
    rm_backoff b = {0, 0};
    rm_backoff_record(&b, 100, 1);
    rm_backoff_record(&b, 2000, 1);
    CHECK_EQ(b.delay_ms, 2 * RM_BACKOFF_MIN_MS);
    rm_backoff_record(&b, 5000, 0);
    CHECK_EQ(b.delay_ms, 0);
    CHECK(rm_backoff_allows(&b, 5000));
    rm_backoff_record(&b, 6000, 1);
    CHECK_EQ(b.delay_ms, RM_BACKOFF_MIN_MS);
}

int main(void)
{
    RUN(test_healthy_is_always_tried);
    RUN(test_failures_double_the_delay_up_to_the_cap);
    RUN(test_success_clears_the_delay);
    return rm_t_report();
}
