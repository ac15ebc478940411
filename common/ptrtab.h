/* ptrtab.h -- an open-addressing table of pointers, keyed by a 64-bit hash
 * each entry carries: linear probing, a power-of-two size, at most half
 * full, and backward-shift deletion (no tombstones, so a probe ends at the
 * first empty slot). The cache's lease table and its per-peer table.
 *
 * Lookups are the caller's, with its own equality:
 *
 *   for (size_t i = key & t->mask; t->slots[i]; i = (i + 1) & t->mask)
 *       if (matches(t->slots[i])) ...
 *
 * Entries belong to the caller; the table only points at them. Not
 * thread-safe. */
#ifndef RM_PTRTAB_H
#define RM_PTRTAB_H

#include <stddef.h>
#include <stdint.h>

/* The key of an entry; it must not change while the entry is in a table. */
typedef uint64_t (*rm_ptrtab_key_fn)(const void *entry);

typedef struct rm_ptrtab {
    void **slots;
    size_t mask; /* slots - 1 */
    size_t n;    /* entries */
    rm_ptrtab_key_fn key;
} rm_ptrtab;

/* An empty table of size slots (a power of two, > 0). */
void rm_ptrtab_init(rm_ptrtab *t, size_t size, rm_ptrtab_key_fn key);

/* Frees the slots (not the entries). */
void rm_ptrtab_destroy(rm_ptrtab *t);

/* Adds e (not in the table), doubling the table first if it would be more
 * than half full. Returns 1 if the table grew, else 0. */
int rm_ptrtab_add(rm_ptrtab *t, void *e);

/* Removes e, which must be in the table. */
void rm_ptrtab_del(rm_ptrtab *t, const void *e);

#endif
