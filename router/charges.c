/* charges.c -- a node's unconfirmed charges; Routes' in two expiring
 * generations (charges.h has the why and the picture). */
#include "charges.h"

static const rm_charge_sum none = {0, 0, 0};

/* Starts a new generation of Routes' charges if cur is half a ttl old;
 * one a whole ttl old (no call came for that long) has expired as well. */
static void age(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms)
{
    if (ttl_ms == 0 || now_ms < c->cur_since_ms || now_ms - c->cur_since_ms < ttl_ms / 2)
        return;
    c->expired_requests += c->old.requests;
    c->old = c->cur;
    c->cur = none;
    if (now_ms - c->cur_since_ms >= ttl_ms) {
        c->expired_requests += c->old.requests;
        c->old = none;
    }
    c->cur_since_ms = now_ms;
}

void rm_charges_add(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms, rm_charge_kind kind,
                    double prompt, double output)
{
    age(c, now_ms, ttl_ms);
    rm_charge_sum *s = kind == RM_CHARGE_EXPIRES ? &c->cur : &c->held;
    s->prompt += prompt;
    s->output += output;
    s->requests += 1;
}

static void scale(rm_charge_sum *s, double keep)
{
    s->prompt *= keep;
    s->output *= keep;
    s->requests *= keep;
}

void rm_charges_confirm(rm_charges *c, uint64_t now_ms, uint32_t ttl_ms, double requests)
{
    age(c, now_ms, ttl_ms);
    double k = rm_charges_total(c).requests;
    if (requests <= 0 || k <= 0)
        return;
    if (requests >= k) { /* exactly nothing left, not a rounding rest */
        c->held = c->cur = c->old = none;
        return;
    }
    double keep = (k - requests) / k;
    scale(&c->held, keep);
    scale(&c->cur, keep);
    scale(&c->old, keep);
}

int rm_charges_settle(rm_charges *c, double prompt, double output)
{
    rm_charge_sum *s = &c->held;
    if (s->requests < 1) {
        /* A report took this one, or all but a share of it: the share is
         * this request's, and nothing else would ever take it. */
        *s = none;
        return 0;
    }
    s->requests -= 1;
    if (s->requests < 1) {
        *s = none;
        return 1;
    }
    s->prompt = s->prompt > prompt ? s->prompt - prompt : 0;
    s->output = s->output > output ? s->output - output : 0;
    return 1;
}

rm_charge_sum rm_charges_total(const rm_charges *c)
{
    return (rm_charge_sum){c->held.prompt + c->cur.prompt + c->old.prompt,
                           c->held.output + c->cur.output + c->old.output,
                           c->held.requests + c->cur.requests + c->old.requests};
}
