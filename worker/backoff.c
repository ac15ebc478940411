#include "backoff.h"

int rm_backoff_allows(const rm_backoff *b, uint64_t now_ms)
{
    return now_ms >= b->until_ms;
}

void rm_backoff_record(rm_backoff *b, uint64_t now_ms, int transport_failed)
{
    if (!transport_failed) {
        b->delay_ms = 0;
        b->until_ms = 0;
        return;
    }
    uint64_t d = b->delay_ms ? 2 * (uint64_t)b->delay_ms : RM_BACKOFF_MIN_MS;
    b->delay_ms = (uint32_t)(d < RM_BACKOFF_MAX_MS ? d : RM_BACKOFF_MAX_MS);
    b->until_ms = now_ms + b->delay_ms;
}
