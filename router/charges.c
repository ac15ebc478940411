/* charges.c -- a node's unconfirmed charges in two expiring generations
 * (charges.h has the why and the picture). */
#include "charges.h"

/* Starts a new generation if cur is half a ttl old; one a whole ttl old
 * (no call came for that long) has expired as well. ttl 0: never. */
static void age(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms)
{
    if (ttl_ms == 0 || now_ms < c->cur_since_ms || now_ms - c->cur_since_ms < ttl_ms / 2)
        return;
    c->expired_requests += c->old.requests;
    c->old = c->cur;
    c->cur = (rm_charge_sum){0, 0, 0};
    if (now_ms - c->cur_since_ms >= ttl_ms) {
        c->expired_requests += c->old.requests;
        c->old = c->cur;
    }
    c->cur_since_ms = now_ms;
}

void rm_charges_add(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms, double prompt, double output)
{
    age(c, now_ms, ttl_ms);
    c->cur.prompt += prompt;
    c->cur.output += output;
    c->cur.requests += 1;
}

/* Takes up to *requests charges off s, its sums in proportion; leaves in
 * *requests those still to take (from the next generation). */
static void take(rm_charge_sum *s, double *requests)
{
    double k = s->requests, dq = *requests;
    double keep = k > dq ? (k - dq) / k : 0;
    s->prompt *= keep;
    s->output *= keep;
    s->requests = k > dq ? k - dq : 0;
    *requests = dq > k ? dq - k : 0;
}

void rm_charges_confirm(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms, double requests)
{
    age(c, now_ms, ttl_ms);
    take(&c->old, &requests);
    take(&c->cur, &requests);
}

void rm_charges_settle(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms, double prompt,
                       double output)
{
    age(c, now_ms, ttl_ms);
    rm_charge_sum *s = c->old.requests >= 1 ? &c->old : &c->cur;
    if (s->requests < 1)
        return; /* expired already */
    s->requests -= 1;
    if (s->requests < 1) {
        *s = (rm_charge_sum){0, 0, 0};
        return;
    }
    s->prompt = s->prompt > prompt ? s->prompt - prompt : 0;
    s->output = s->output > output ? s->output - output : 0;
}

rm_charge_sum rm_charges_total(const rm_charges *c)
{
    return (rm_charge_sum){c->cur.prompt + c->old.prompt, c->cur.output + c->old.output,
                           c->cur.requests + c->old.requests};
}
