/* Unit tests for router/charges.c, a node's unconfirmed charges: what the
 * node counts goes oldest first, a settled request goes exactly, and a
 * charge nothing confirms expires between half a ttl and a ttl -- the
 * story it exists for: Routes whose clients never call the node used to
 * stay charged forever. */
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

static void test_add_and_total(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, TTL, 100, 10);
    rm_charges_add(&c, T0 + 1, TTL, 300, 30);
    rm_charge_sum s = rm_charges_total(&c);
    CHECK(near(s.prompt, 400) && near(s.output, 40) && near(s.requests, 2));
    CHECK(near(c.expired_requests, 0));
}

static void test_confirm_takes_old_first(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, TTL, 100, 10);
    rm_charges_add(&c, T0, TTL, 300, 10);            /* old: 2 requests, 400 + 20 */
    rm_charges_add(&c, T0 + TTL / 2, TTL, 1000, 50); /* a new generation */
    CHECK(near(c.old.requests, 2) && near(c.cur.requests, 1));
    /* One counted: half of old goes, in proportion; cur stays whole. */
    rm_charges_confirm(&c, T0 + TTL / 2, TTL, 1);
    CHECK(near(c.old.prompt, 200) && near(c.old.output, 10) && near(c.old.requests, 1));
    CHECK(near(c.cur.prompt, 1000) && near(c.cur.requests, 1));
    /* Two more: the rest of old, then all of cur. */
    rm_charges_confirm(&c, T0 + TTL / 2, TTL, 2);
    rm_charge_sum s = rm_charges_total(&c);
    CHECK(near(s.prompt, 0) && near(s.output, 0) && near(s.requests, 0));
    /* More counted than charged (other routers' requests): nothing below 0. */
    rm_charges_add(&c, T0 + TTL / 2, TTL, 5, 5);
    rm_charges_confirm(&c, T0 + TTL / 2, TTL, 7);
    s = rm_charges_total(&c);
    CHECK(near(s.prompt, 0) && near(s.requests, 0));
    CHECK(near(c.expired_requests, 0)); /* confirmed is not expired */
}

static void test_settle_is_exact(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, TTL, 100, 10);
    rm_charges_add(&c, T0, TTL, 300, 30);
    rm_charges_settle(&c, T0, TTL, 100, 10);
    rm_charge_sum s = rm_charges_total(&c);
    CHECK(near(s.prompt, 300) && near(s.output, 30) && near(s.requests, 1));
    /* The last one: exactly zero, whatever its cost was said to be. */
    rm_charges_settle(&c, T0, TTL, 299.5, 29);
    s = rm_charges_total(&c);
    CHECK(s.prompt == 0 && s.output == 0 && s.requests == 0);
    /* Nothing left: a late settle takes nothing (it expired or was confirmed). */
    rm_charges_settle(&c, T0, TTL, 100, 10);
    s = rm_charges_total(&c);
    CHECK(s.prompt == 0 && s.requests == 0);
}

static void test_settle_takes_old_first(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, TTL, 100, 0);
    rm_charges_add(&c, T0 + TTL / 2, TTL, 700, 0);
    rm_charges_settle(&c, T0 + TTL / 2, TTL, 100, 0);
    CHECK(near(c.old.requests, 0) && near(c.cur.prompt, 700) && near(c.cur.requests, 1));
}

static void test_unconfirmed_charges_expire(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, TTL, 100, 10);
    /* Within half a ttl: kept. */
    rm_charges_confirm(&c, T0 + TTL / 2 - 1, TTL, 0);
    CHECK(near(rm_charges_total(&c).requests, 1));
    /* Half a ttl: a new generation, the charge still held (in old). */
    rm_charges_confirm(&c, T0 + TTL / 2, TTL, 0);
    CHECK(near(c.old.requests, 1) && near(rm_charges_total(&c).prompt, 100));
    rm_charges_add(&c, T0 + TTL / 2 + 1, TTL, 50, 0);
    /* Another half: the first one is gone, the second stays. */
    rm_charges_confirm(&c, T0 + TTL, TTL, 0);
    rm_charge_sum s = rm_charges_total(&c);
    CHECK(near(s.prompt, 50) && near(s.requests, 1));
    CHECK(near(c.expired_requests, 1));
    /* No call for a whole ttl: both generations expire at once. */
    rm_charges_add(&c, T0 + TTL, TTL, 20, 0);
    rm_charges_confirm(&c, T0 + 3 * TTL, TTL, 0);
    s = rm_charges_total(&c);
    CHECK(s.prompt == 0 && s.output == 0 && s.requests == 0);
    CHECK(near(c.expired_requests, 3));
}

static void test_ttl_zero_never_expires(void)
{
    rm_charges c = {0};
    rm_charges_add(&c, T0, 0, 100, 10);
    rm_charges_confirm(&c, T0 + 1000000000ull, 0, 0);
    CHECK(near(rm_charges_total(&c).prompt, 100));
    CHECK(near(c.expired_requests, 0));
}

/* The story: a client Routes 100 requests a tick and calls the node for
 * 70 of them; the node reports every tick. Unexpired, the 30 abandoned
 * charges a tick piled up without end; expiring, what is held stays
 * bounded by a ttl's worth of abandoned Routes. */
static void test_abandoned_routes_stay_bounded(void)
{
    enum { TICK = 100, TICKS = 500, PER = 100, CALLED = 70 };
    rm_charges kept = {0}, expiring = {0};
    double held_max = 0;
    for (int t = 0; t < TICKS; t++) {
        uint64_t now = T0 + (uint64_t)t * TICK;
        for (int i = 0; i < PER; i++) {
            rm_charges_add(&kept, now, 0, 1000, 100);
            rm_charges_add(&expiring, now, TTL, 1000, 100);
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
    /* A ttl spans 10 ticks: at most 10 ticks' charges (the abandoned
     * ones and the current tick's) are ever held. */
    CHECK(held_max <= (double)PER * (TTL / TICK));
    CHECK(rm_charges_total(&expiring).requests < abandoned / 10);
}

int main(void)
{
    RUN(test_add_and_total);
    RUN(test_confirm_takes_old_first);
    RUN(test_settle_is_exact);
    RUN(test_settle_takes_old_first);
    RUN(test_unconfirmed_charges_expire);
    RUN(test_ttl_zero_never_expires);
    RUN(test_abandoned_routes_stay_bounded);
    return rm_t_report();
}
