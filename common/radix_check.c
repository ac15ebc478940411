/* radix_check.c -- the radix tree's invariant checker (rm_radix_check in
 * radix.h): every structure the tree keeps, recomputed from the nodes and
 * compared. Tests call it after every operation. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "radix.h"
#include "radix_internal.h"
#include "util.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const void *const *)a, y = (uintptr_t) * (const void *const *)b;
    return x < y ? -1 : x > y;
}

typedef struct check_acc {
    uint32_t nchildren;
    uint64_t child_lock_sum;
    uint64_t direct;
} check_acc;

int rm_radix_check(const rm_radix *t, const rm_radix_node *const *held, size_t nheld,
                   uint8_t *pages_seen, size_t npool_pages, char *err, size_t errlen)
{
    /* Gather every node (roots + table) and index it for per-node sums. */
    size_t total = t->slot_used + t->nns;
    if (total != t->nodes)
        return fail(err, errlen, "node count %" PRIu64 " != table %zu + roots %u", t->nodes,
                    t->slot_used, t->nns);
    const rm_radix_node **all = rm_xmalloc(sizeof *all * (total + 1));
    size_t k = 0, used = 0, live = 0;
    for (uint32_t i = 0; i < t->ns_len; i++) {
        const rm_radix_ns *ns = &t->ns[i];
        if (!ns->root)
            continue;
        if (ns->root->ns != i || ns->root->parent || k == total) {
            free(all);
            return fail(err, errlen, "namespace slot %u does not hold its own root", i);
        }
        live++;
        all[k++] = ns->root;
    }
    if (live != t->nns || t->nns > t->max_ns) {
        free(all);
        return fail(err, errlen, "%zu live namespaces, %u recorded (limit %u)", live, t->nns,
                    t->max_ns);
    }
    for (size_t i = 0; i <= t->slot_mask; i++) {
        const rm_radix_slot *s = &t->slots[i];
        if (!s->node)
            continue;
        used++;
        all[k++] = s->node;
    }
    int rc = 0;
    check_acc *acc = NULL;
    if (used != t->slot_used) {
        rc = fail(err, errlen, "slot_used %zu but %zu slots full", t->slot_used, used);
        goto out;
    }
    /* Sort pointers so parents can be found by binary search. */
    qsort(all, total, sizeof *all, cmp_ptr);
    acc = rm_xcalloc(total + 1, sizeof *acc);
    uint64_t evictable = 0, prot = 0, heap_members = 0;
    for (size_t i = 0; i < total; i++) {
        const rm_radix_node *n = all[i];
        if (!n->parent) {
            if (n->ns >= t->ns_len || t->ns[n->ns].root != n) {
                rc = fail(err, errlen, "a parentless node is not a namespace root");
                goto out;
            }
            if (n->npages != 0) {
                rc = fail(err, errlen, "root with pages");
                goto out;
            }
            if (n->heap_idx != RM_RADIX_NOT_IN_HEAP) {
                rc = fail(err, errlen, "root in heap");
                goto out;
            }
            continue;
        }
        if (n->npages == 0) {
            rc = fail(err, errlen, "non-root node with an empty edge");
            goto out;
        }
        if (n->ns != n->parent->ns) {
            rc = fail(err, errlen, "node namespace differs from parent");
            goto out;
        }
        const rm_radix_node **pp = bsearch(&n->parent, all, total, sizeof *all, cmp_ptr);
        if (!pp) {
            rc = fail(err, errlen, "parent of a node is not in the tree");
            goto out;
        }
        if (n->hash != rm_radix_child_hash(t, n->parent, n->key) ||
            rm_radix_child(t, n->parent, n->key) != n) {
            rc = fail(err, errlen, "child table lookup does not find node");
            goto out;
        }
        check_acc *pa = &acc[pp - all];
        pa->nchildren++;
        pa->child_lock_sum += n->lock_ref;
        if (n->lock_ref)
            prot += n->npages;
        else
            evictable += n->npages;
        const uint32_t *pg = rm_radix_node_pages(t, n);
        for (uint32_t j = 0; pages_seen && j < n->npages; j++) {
            if (pg[j] >= npool_pages) {
                rc = fail(err, errlen, "page id %u out of pool range", pg[j]);
                goto out;
            }
            if (pages_seen[pg[j]]++) {
                rc = fail(err, errlen, "page %u appears twice in the tree", pg[j]);
                goto out;
            }
        }
    }
    for (size_t i = 0; held && i < nheld; i++) {
        const rm_radix_node **hp = bsearch(&held[i], all, total, sizeof *all, cmp_ptr);
        if (!hp) {
            rc = fail(err, errlen, "a reference holder points outside the tree");
            goto out;
        }
        acc[hp - all].direct++;
    }
    for (size_t i = 0; i < total; i++) {
        const rm_radix_node *n = all[i];
        if (held && acc[i].child_lock_sum + acc[i].direct != n->lock_ref) {
            rc = fail(err, errlen, "lock_ref %u != children %" PRIu64 " + holders %" PRIu64,
                      n->lock_ref, acc[i].child_lock_sum, acc[i].direct);
            goto out;
        }
        if (acc[i].nchildren != n->nchildren) {
            rc = fail(err, errlen, "nchildren %u but %u children found", n->nchildren,
                      acc[i].nchildren);
            goto out;
        }
        if (acc[i].child_lock_sum > n->lock_ref) {
            rc = fail(err, errlen, "lock_ref %u below children's sum %" PRIu64, n->lock_ref,
                      acc[i].child_lock_sum);
            goto out;
        }
        int want_heap = n->parent && n->nchildren == 0 && n->lock_ref == 0;
        int in_heap = n->heap_idx != RM_RADIX_NOT_IN_HEAP;
        if (want_heap != in_heap) {
            rc = fail(err, errlen, "heap membership wrong (leaf=%d lock=%u in_heap=%d)",
                      n->nchildren == 0, n->lock_ref, in_heap);
            goto out;
        }
        if (in_heap) {
            heap_members++;
            if (n->heap_idx >= t->heap_len || t->heap[n->heap_idx] != n) {
                rc = fail(err, errlen, "heap index out of sync");
                goto out;
            }
        }
    }
    if (heap_members != t->heap_len) {
        rc = fail(err, errlen, "heap holds %u entries, %" PRIu64 " expected", t->heap_len,
                  heap_members);
        goto out;
    }
    for (uint32_t i = 1; i < t->heap_len; i++) {
        if (rm_radix_heap_less(t, t->heap[i], t->heap[(i - 1) / 2])) {
            rc = fail(err, errlen, "heap order broken at %u", i);
            goto out;
        }
    }
    if (evictable != t->evictable_pages || prot != t->protected_pages)
        rc = fail(err, errlen,
                  "evictable %" PRIu64 "/%" PRIu64 " protected %" PRIu64 "/%" PRIu64
                  " (counted/recorded)",
                  evictable, t->evictable_pages, prot, t->protected_pages);
out:
    free(acc);
    free(all);
    return rc;
}
