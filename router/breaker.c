#include "breaker.h"

#include <string.h>

void rm_breaker_config_defaults(rm_breaker_config *c)
{
    c->failures = 3;
    c->cooldown_ms = 10000;
    c->max_cooldown_ms = 320000;
}

void rm_breaker_init(rm_breaker *b)
{
    memset(b, 0, sizeof *b);
    b->state = RM_BREAKER_CLOSED;
}

int rm_breaker_poll(rm_breaker *b, uint64_t now_ms)
{
    if (b->state != RM_BREAKER_OPEN || now_ms < b->until_ms)
        return 0;
    b->state = RM_BREAKER_HALF_OPEN;
    b->trial_out = 0;
    return 1;
}

int rm_breaker_admits(const rm_breaker *b)
{
    return b->state == RM_BREAKER_CLOSED || (b->state == RM_BREAKER_HALF_OPEN && !b->trial_out);
}

int rm_breaker_take(rm_breaker *b)
{
    if (b->state != RM_BREAKER_HALF_OPEN)
        return 0;
    b->trial_out = 1;
    return 1;
}

static void open_for(rm_breaker *b, uint32_t cooldown_ms, uint64_t now_ms)
{
    b->state = RM_BREAKER_OPEN;
    b->cooldown_ms = cooldown_ms;
    b->until_ms = now_ms + cooldown_ms;
    b->trial_out = 0;
    b->failures = 0;
}

int rm_breaker_done(rm_breaker *b, const rm_breaker_config *c, int trial, rm_breaker_outcome o,
                    uint64_t now_ms)
{
    if (trial) {
        /* Only the trial in flight decides a half-open breaker; a stale one
         * (the breaker was reset meanwhile) decides nothing. */
        if (b->state != RM_BREAKER_HALF_OPEN || !b->trial_out)
            return 0;
        if (o == RM_BREAKER_NO_VERDICT) {
            b->trial_out = 0; /* the next request is the trial */
            return 0;
        }
        if (o == RM_BREAKER_SUCCESS) {
            rm_breaker_init(b);
            return 1;
        }
        uint64_t next = (uint64_t)b->cooldown_ms * 2;
        open_for(b, (uint32_t)(next < c->max_cooldown_ms ? next : c->max_cooldown_ms), now_ms);
        return 1;
    }
    if (b->state != RM_BREAKER_CLOSED)
        return 0; /* sent before it opened: says nothing the trial will not */
    if (o == RM_BREAKER_SUCCESS)
        b->failures = 0;
    else if (o == RM_BREAKER_FAILURE && ++b->failures >= c->failures) {
        open_for(b, c->cooldown_ms, now_ms);
        return 1;
    }
    return 0;
}

const char *rm_breaker_state_name(rm_breaker_state s)
{
    static const char *const names[] = {[RM_BREAKER_CLOSED] = "closed",
                                        [RM_BREAKER_OPEN] = "open",
                                        [RM_BREAKER_HALF_OPEN] = "half-open"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}
