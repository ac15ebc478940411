/* shadow_infinite.c -- the infinite shadow: a set of sampled page keys
 * (open addressing), every repeat a hit. Bounded: past inf_max keys the
 * sampling threshold halves and the keys above it are dropped, so the set
 * thins its sample instead of growing (shadow.h). */
#include "shadow.h"
#include "shadow_internal.h"

static size_t inf_find_slot(const rm_shadow *s, uint64_t key)
{
    size_t i = key & s->inf_mask;
    while (s->inf_keys[i] && s->inf_keys[i] != key)
        i = (i + 1) & s->inf_mask;
    return i;
}

/* Drops every key at or above the threshold, in place. */
static void inf_purge(rm_shadow *s)
{
    for (size_t i = 0; i <= s->inf_mask;) {
        uint64_t k = s->inf_keys[i];
        if (!k || (k >> 32) < s->inf_threshold) {
            i++;
            continue;
        }
        s->inf_len--;
        /* Backward shift; re-examine slot i, which may now hold a later key.
         * Keys shifted from a wrapped cluster land on slots already passed,
         * and they were kept there, so nothing is skipped. */
        size_t h = i, j = i;
        for (;;) {
            s->inf_keys[h] = 0;
            for (;;) {
                j = (j + 1) & s->inf_mask;
                if (!s->inf_keys[j])
                    goto next;
                size_t home = s->inf_keys[j] & s->inf_mask;
                if (h <= j ? (home <= h || home > j) : (home <= h && home > j))
                    break;
            }
            s->inf_keys[h] = s->inf_keys[j];
            h = j;
        }
    next:;
    }
}

int rm_shadow_inf_access(rm_shadow *s, uint64_t key)
{
    size_t i = inf_find_slot(s, key);
    if (s->inf_keys[i])
        return 1;
    s->inf_keys[i] = key;
    if (++s->inf_len > s->inf_max) {
        while (s->inf_len > s->inf_max && s->inf_threshold > 1) {
            s->inf_threshold /= 2;
            inf_purge(s);
        }
    }
    return 0;
}
