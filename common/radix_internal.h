/* radix_internal.h -- what radix.c shares with radix_check.c, its
 * invariant checker; not for other modules. */
#ifndef RM_RADIX_INTERNAL_H
#define RM_RADIX_INTERNAL_H

#include <stdint.h>

#include "radix.h"

/* The child-table hash of the child of parent whose key starts with
 * first_page (one page of tokens). */
uint64_t rm_radix_child_hash(const rm_radix *t, const rm_radix_node *parent,
                             const uint32_t *first_page);

/* Whether a is evicted before b under the tree's policy (the heap order). */
int rm_radix_heap_less(const rm_radix *t, const rm_radix_node *a, const rm_radix_node *b);

#endif
