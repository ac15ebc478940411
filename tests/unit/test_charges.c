/* Unit tests for router/charges.c, a node's unconfirmed charges: a report
 * takes the same share of every charge, a forwarded request settles
 * exactly, a Route's charge nothing confirms expires between half a ttl
 * and a ttl, and where generations begin changes no sum -- with the story
 * it exists for: Routes whose clients never call the node used to stay
 * charged forever. */
#include <math.h>
#include <stdio.h>

#include "charges.h"
#include "check.h"

#define TTL 1000
#define T0  5000 /* a monotonic clock is far from 0 */

static int near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

static int sum_is(rm_charge_sum s, double prompt, double output, double requests)
{
    return near(s.prompt, prompt) && near(s.output, output) && near(s.requests, requests);
}

static void test_add_and_total(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, TTL, RM_CHARGE_HELD, 100, 10);
    rm_charges_add(&c, T0 + 1, TTL, RM_CHARGE_EXPIRES, 300, 30);
    CHECK(sum_is(rm_charges_total(&c), 400, 40, 2));
    CHECK(sum_is(c.held, 100, 10, 1));
    CHECK(sum_is(c.cur, 300, 30, 1));
    CHECK(near(c.expired_requests, 0));
}

static void test_confirm_takes_a_share_of_every_charge(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, TTL, RM_CHARGE_EXPIRES, 100, 10);
    rm_charges_add(&c, T0, TTL, RM_CHARGE_EXPIRES, 300, 10);
    rm_charges_add(&c, T0 + TTL / 2, TTL, RM_CHARGE_EXPIRES, 1000, 50); /* a new generation */
    rm_charges_add(&c, T0 + TTL / 2, TTL, RM_CHARGE_HELD, 600, 30);
    CHECK(near(c.old.requests, 2) && near(c.cur.requests, 1) && near(c.held.requests, 1));
    /* Two of four counted: half of each sum goes. */
    rm_charges_confirm(&c, T0 + TTL / 2, TTL, 2);
    CHECK(sum_is(c.old, 200, 10, 1));
    CHECK(sum_is(c.cur, 500, 25, 0.5));
    CHECK(sum_is(c.held, 300, 15, 0.5));
    /* More counted than charged (other routers' requests too): exactly 0. */
    rm_charges_confirm(&c, T0 + TTL / 2, TTL, 7);
    rm_charge_sum s = rm_charges_total(&c);
    CHECK(s.prompt == 0 && s.output == 0 && s.requests == 0);
    CHECK(near(c.expired_requests, 0)); /* confirmed is not expired */
}

/* Two replicas charge the same requests and read the same reports, but
 * their generations begin at other instants: the same sums. */
static void test_sums_do_not_depend_on_generations(void)
{
    rm_charges a = {0}, b = {0};
    b.cur_since_ms = T0 - TTL / 2 + 1; /* b rotates at T0 + 1, a at T0 */
    const double cost[][2] = {{100, 10}, {300, 20}, {50, 5}, {700, 1}};
    for (int i = 0; i < 4; i++) {
        rm_charges_add(&a, T0 + (uint64_t)i, TTL, RM_CHARGE_EXPIRES, cost[i][0], cost[i][1]);
        rm_charges_add(&b, T0 + (uint64_t)i, TTL, RM_CHARGE_EXPIRES, cost[i][0], cost[i][1]);
    }
    CHECK(!near(a.old.requests, b.old.requests)); /* the generations differ */
    rm_charges_confirm(&a, T0 + 10, TTL, 1);
    rm_charges_confirm(&b, T0 + 10, TTL, 1);
    rm_charge_sum sa = rm_charges_total(&a), sb = rm_charges_total(&b);
    CHECK(sum_is(sa, sb.prompt, sb.output, sb.requests));
    CHECK(sum_is(sa, 1150 * 0.75, 36 * 0.75, 3));
}

static void test_settle_is_exact_and_held_only(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, TTL, RM_CHARGE_HELD, 100, 10);
    rm_charges_add(&c, T0, TTL, RM_CHARGE_HELD, 300, 30);
    rm_charges_add(&c, T0, TTL, RM_CHARGE_EXPIRES, 5000, 50); /* a Route's */
    CHECK_EQ(rm_charges_settle(&c, 100, 10), 1);
    CHECK(sum_is(c.held, 300, 30, 1));
    /* The last held one: exactly zero, whatever its cost was said to be. */
    CHECK_EQ(rm_charges_settle(&c, 299.5, 29), 1);
    CHECK(c.held.prompt == 0 && c.held.output == 0 && c.held.requests == 0);
    /* None held: a settle takes nothing, and not the Route's. */
    CHECK_EQ(rm_charges_settle(&c, 100, 10), 0);
    CHECK(sum_is(rm_charges_total(&c), 5000, 50, 1));
}

static void test_settle_after_a_report_took_it(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, TTL, RM_CHARGE_HELD, 100, 10);
    rm_charges_confirm(&c, T0 + 1, TTL, 1); /* the node's report came first */
    CHECK_EQ(rm_charges_settle(&c, 100, 10), 0);
}

/* A report took all but a share of a held charge (another router's
 * request counted too): the share is that request's, and goes with it. */
static void test_settle_takes_a_share_left(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, TTL, RM_CHARGE_HELD, 1000, 0);
    rm_charges_add(&c, T0, TTL, RM_CHARGE_EXPIRES, 1000, 0);
    rm_charges_confirm(&c, T0, TTL, 1);
    CHECK(sum_is(c.held, 500, 0, 0.5));
    CHECK_EQ(rm_charges_settle(&c, 1000, 0), 0);
    CHECK(sum_is(c.held, 0, 0, 0));
    CHECK(sum_is(rm_charges_total(&c), 500, 0, 0.5)); /* the Route's share stays */
}

static void test_routes_charges_expire(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, TTL, RM_CHARGE_EXPIRES, 100, 10);
    rm_charges_add(&c, T0, TTL, RM_CHARGE_HELD, 7, 7); /* never expires */
    /* Within half a ttl: kept. */
    rm_charges_confirm(&c, T0 + TTL / 2 - 1, TTL, 0);
    CHECK(near(rm_charges_total(&c).requests, 2));
    /* Half a ttl: a new generation, the charge still held (in old). */
    rm_charges_confirm(&c, T0 + TTL / 2, TTL, 0);
    CHECK(near(c.old.requests, 1) && near(rm_charges_total(&c).prompt, 107));
    rm_charges_add(&c, T0 + TTL / 2 + 1, TTL, RM_CHARGE_EXPIRES, 50, 0);
    /* Another half: the first one is gone, the second stays. */
    rm_charges_confirm(&c, T0 + TTL, TTL, 0);
    CHECK(sum_is(rm_charges_total(&c), 57, 7, 2));
    CHECK(near(c.expired_requests, 1));
    /* No call for a whole ttl: both generations expire at once. */
    rm_charges_add(&c, T0 + TTL, TTL, RM_CHARGE_EXPIRES, 20, 0);
    rm_charges_confirm(&c, T0 + 3 * TTL, TTL, 0);
    CHECK(sum_is(rm_charges_total(&c), 7, 7, 1));
    CHECK(sum_is(c.cur, 0, 0, 0) && sum_is(c.old, 0, 0, 0));
    CHECK(near(c.expired_requests, 3));
}

static void test_ttl_zero_never_expires(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, 0, RM_CHARGE_EXPIRES, 100, 10);
    rm_charges_confirm(&c, T0 + 1000000000ull, 0, 0);
    CHECK(near(rm_charges_total(&c).prompt, 100));
    CHECK(near(c.expired_requests, 0));
}

/* The story: a client Routes 100 requests a tick and calls the node for
 * 70 of them; the node reports every tick. Unexpired, the 30 abandoned
 * charges a tick piled up without end; expiring, what is held stays
 * bounded by a ttl's worth of Routes. */
static void test_abandoned_routes_stay_bounded(void)
{
    enum { TICK = 100, TICKS = 500, PER = 100, CALLED = 70 };
    rm_charges kept = {0}, expiring = {0};
    double held_max = 0;
    for (int t = 0; t < TICKS; t++) {
        uint64_t now = T0 + (uint64_t)t * TICK;
        for (int i = 0; i < PER; i++) {
            rm_charges_add(&kept, now, 0, RM_CHARGE_EXPIRES, 1000, 100);
            rm_charges_add(&expiring, now, TTL, RM_CHARGE_EXPIRES, 1000, 100);
        }
        rm_charges_confirm(&kept, now + TICK / 2, 0, CALLED);
        rm_charges_confirm(&expiring, now + TICK / 2, TTL, CALLED);
        double held = rm_charges_total(&expiring).requests;
        held_max = held > held_max ? held : held_max;
    }
    double abandoned = (double)(PER - CALLED) * TICKS;
    fprintf(stderr, "abandoned %.0f; held unexpired %.0f, expiring at most %.0f\n", abandoned,
            rm_charges_total(&kept).requests, held_max);
    CHECK(near(rm_charges_total(&kept).requests, abandoned));
    /* A charge lives a ttl (10 ticks) at most: no more than 10 ticks'
     * Routes are ever held. */
    CHECK(held_max <= (double)PER * (TTL / TICK));
    CHECK(rm_charges_total(&expiring).requests < abandoned / 10);
}

int main(void)
{
    RUN(test_add_and_total);
    RUN(test_confirm_takes_a_share_of_every_charge);
    RUN(test_sums_do_not_depend_on_generations);
    RUN(test_settle_is_exact_and_held_only);
    RUN(test_settle_after_a_report_took_it);
    RUN(test_settle_takes_a_share_left);
    RUN(test_routes_charges_expire);
    RUN(test_ttl_zero_never_expires);
    RUN(test_abandoned_routes_stay_bounded);
    return rm_t_report();
}
