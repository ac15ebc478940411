#include "guard.h"

#include <string.h>

rm_stream_verdict rm_guard_stream(uint64_t now_ms, uint64_t waiting_since_ms, uint64_t idle_ms,
                                  uint64_t lease_expires_ms)
{
    if (now_ms >= lease_expires_ms)
        return RM_STREAM_LEASE_EXPIRED;
    if (idle_ms && waiting_since_ms && now_ms >= waiting_since_ms &&
        now_ms - waiting_since_ms >= idle_ms)
        return RM_STREAM_IDLE;
    return RM_STREAM_KEEP;
}

const char *rm_stream_verdict_str(rm_stream_verdict v)
{
    static const char *const names[] = {
        [RM_STREAM_KEEP] = "keep",
        [RM_STREAM_IDLE] = "idle",
        [RM_STREAM_LEASE_EXPIRED] = "lease expired",
    };
    return (unsigned)v < sizeof names / sizeof names[0] ? names[v] : "?";
}

uint64_t rm_log_limit_due(rm_log_limit *l, uint64_t total, uint64_t now_ms)
{
    if (total <= l->logged)
        return 0;
    if (l->last_ms && now_ms - l->last_ms < l->interval_ms)
        return 0;
    uint64_t n = total - l->logged;
    l->logged = total;
    l->last_ms = now_ms ? now_ms : 1;
    return n;
}

static void put(char *out, size_t cap, size_t *k, char ch)
{
    if (*k + 1 < cap)
        out[(*k)++] = ch;
}

size_t rm_peer_address(const char *peer, char *out, size_t cap)
{
    size_t k = 0;
    const char *p = peer, *end;
    if (!strncmp(peer, "ipv4:", 5)) {
        p = peer + 5;
        end = strrchr(p, ':');
        if (!end)
            end = p + strlen(p);
    } else if (!strncmp(peer, "ipv6:", 5)) {
        p = peer + 5;
        /* gRPC writes the brackets raw or percent-encoded, by version. */
        if (*p == '[') {
            p++;
        } else if (!strncmp(p, "%5B", 3) || !strncmp(p, "%5b", 3)) {
            p += 3;
        }
        end = strchr(p, ']');
        if (!end) {
            const char *enc = strstr(p, "%5D");
            end = enc ? enc : strstr(p, "%5d");
        }
        if (!end)
            end = p + strlen(p);
    } else {
        end = p + strlen(p);
    }
    for (; p < end; p++)
        put(out, cap, &k, *p);
    out[k] = '\0';
    return k;
}
