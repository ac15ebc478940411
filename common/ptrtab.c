#include "ptrtab.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

void rm_ptrtab_init(rm_ptrtab *t, size_t size, rm_ptrtab_key_fn key)
{
    t->slots = rm_xcalloc(size, sizeof *t->slots);
    t->mask = size - 1;
    t->n = 0;
    t->key = key;
}

void rm_ptrtab_destroy(rm_ptrtab *t)
{
    free(t->slots);
    memset(t, 0, sizeof *t);
}

static void slot_put(void **slots, size_t mask, void *e, uint64_t key)
{
    size_t i = key & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = e;
}

int rm_ptrtab_add(rm_ptrtab *t, void *e)
{
    int grew = 0;
    if ((t->n + 1) * 2 > t->mask + 1) {
        size_t ncap = (t->mask + 1) * 2;
        void **ns = rm_xcalloc(ncap, sizeof *ns);
        for (size_t i = 0; i <= t->mask; i++)
            if (t->slots[i])
                slot_put(ns, ncap - 1, t->slots[i], t->key(t->slots[i]));
        free(t->slots);
        t->slots = ns;
        t->mask = ncap - 1;
        grew = 1;
    }
    slot_put(t->slots, t->mask, e, t->key(e));
    t->n++;
    return grew;
}

void rm_ptrtab_del(rm_ptrtab *t, const void *e)
{
    size_t i = t->key(e) & t->mask;
    while (t->slots[i] != e)
        i = (i + 1) & t->mask;
    /* Backward shift: move up each later entry of the run whose home slot
     * is not between the hole and it, so no probe meets a gap. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        if (!t->slots[j])
            break;
        size_t home = t->key(t->slots[j]) & t->mask;
        int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i] = NULL;
    t->n--;
}
