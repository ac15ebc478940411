/* pool.h -- fixed-size KV page pool.
 *
 * The pool owns `npages` pages of `page_bytes` bytes each (page_bytes may be
 * 0: metadata-only mode, no KV memory at all). Free pages sit on a LIFO stack
 * so that recently freed, cache-warm pages are reused first. Each page also
 * carries a one-byte state so double frees and stray page ids are caught
 * instead of silently corrupting the free list.
 *
 * The pool never evicts: allocate-with-evict lives in cache.c, which knows
 * the tree. Not thread-safe; the cache's owner thread is its only user. */
#ifndef RM_POOL_H
#define RM_POOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct rm_pool {
    uint32_t npages;
    uint32_t nfree;
    uint64_t page_bytes;
    uint32_t *free_stack; /* free_stack[0..nfree) are free page ids */
    uint8_t *state;       /* RM_PAGE_FREE / RM_PAGE_USED per page */
    uint8_t *data;        /* npages * page_bytes, NULL in metadata-only mode */
    size_t data_len;
} rm_pool;

enum { RM_PAGE_FREE = 0, RM_PAGE_USED = 1 };

/* Creates a pool of npages pages (1 <= npages < 2^32-1). KV memory is
 * reserved lazily (mmap, MAP_NORESERVE) so an idle pool costs no RSS, unless
 * prefault asks to fault it all in now: the kernel then zeroes the pages at
 * start-up instead of on the first write into each (which otherwise bounds
 * early WriteKV bandwidth). Returns 0, -EINVAL on bad sizes or -ENOMEM. */
int rm_pool_init(rm_pool *p, uint64_t npages, uint64_t page_bytes, int prefault);

/* Releases all memory; the pool must not be used afterwards. */
void rm_pool_destroy(rm_pool *p);

/* Takes up to n free pages into out[]; returns how many were taken (may be
 * fewer than n, 0 when the pool is exhausted). */
uint32_t rm_pool_alloc(rm_pool *p, uint32_t n, uint32_t *out);

/* Tests only (NULL in the daemons): when set, rm_pool_alloc hands out at
 * most what it returns for a request of `want` pages, as if the allocator
 * failed. The fuzz tests use it to fail allocations at random. */
extern uint32_t (*rm_pool_fail_hook)(uint32_t want);

/* Returns n pages to the free list. Returns 0, or -EINVAL if any page id is
 * out of range or already free (nothing is freed in that case). */
int rm_pool_free(rm_pool *p, const uint32_t *pages, uint32_t n);

/* Pointer to the KV bytes of a used page, NULL in metadata-only mode. The
 * memory belongs to the pool. */
static inline uint8_t *rm_pool_page_data(const rm_pool *p, uint32_t page)
{
    return p->data ? p->data + (size_t)page * p->page_bytes : NULL;
}

/* Bytes of metadata the pool itself uses (free stack + page states). */
size_t rm_pool_metadata_bytes(const rm_pool *p);

/* Grows a metadata-only pool (page_bytes 0) to npages pages (more than it
 * has, < 2^32-1); the new pages are free. Returns 0, -EINVAL (a pool with
 * KV memory, or a bad size) or -ENOMEM (the pool is unchanged). */
int rm_pool_grow(rm_pool *p, uint64_t npages);

#endif
