/* shadow_internal.h -- what shadow.c shares with shadow_size.c (sizing)
 * and shadow_infinite.c (the infinite shadow); not for other modules. */
#ifndef RM_SHADOW_INTERNAL_H
#define RM_SHADOW_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "shadow.h"

/* A sampling threshold of RATE_ONE samples every page. */
#define RATE_ONE (1ULL << 32)

/* Hash-table slots for cap entries (a power of two, at least twice cap). */
size_t rm_shadow_table_slots(uint64_t cap);
/* Bytes of a cache of cap entries (recency: an LRU list, else a heap). */
size_t rm_shadow_cache_bytes(uint64_t cap, int recency);
/* Entries of the cache for factor x pool pages, sampled at threshold. */
uint64_t rm_shadow_cap_at(double factor, uint64_t pool, uint64_t threshold);
/* The rate cap as a threshold: max_rate, raised to min_sample / pool so
 * the factor-1 cache keeps min_sample entries, at most RATE_ONE. */
uint64_t rm_shadow_rate_limit(const rm_shadow_config *cfg, uint64_t pool);
/* The largest threshold in [1, limit] whose caches fit the budget, or 0. */
uint64_t rm_shadow_choose_threshold(const rm_shadow_config *cfg, uint64_t pool, uint64_t limit);

/* One access of the infinite shadow: 1 when key was there (a hit). */
int rm_shadow_inf_access(rm_shadow *s, uint64_t key);

#endif
