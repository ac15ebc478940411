#include "pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int rm_pool_init(rm_pool *p, uint64_t npages, uint64_t page_bytes, int prefault)
{
    memset(p, 0, sizeof *p);
    if (npages == 0 || npages >= UINT32_MAX)
        return -EINVAL;
    if (page_bytes && npages > SIZE_MAX / page_bytes)
        return -EINVAL;
    p->npages = (uint32_t)npages;
    p->page_bytes = page_bytes;
    p->free_stack = malloc(sizeof(uint32_t) * npages);
    p->state = calloc(npages, 1);
    if (!p->free_stack || !p->state)
        goto oom;
    /* Hand out low page ids first: pop from the top of the stack. */
    for (uint32_t i = 0; i < p->npages; i++)
        p->free_stack[i] = p->npages - 1 - i;
    p->nfree = p->npages;
    if (page_bytes) {
        p->data_len = (size_t)npages * page_bytes;
        void *m =
            mmap(NULL, p->data_len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | (prefault ? MAP_POPULATE : MAP_NORESERVE), -1, 0);
        if (m == MAP_FAILED)
            goto oom;
        p->data = m;
    }
    return 0;
oom:
    rm_pool_destroy(p);
    return -ENOMEM;
}

void rm_pool_destroy(rm_pool *p)
{
    free(p->free_stack);
    free(p->state);
    if (p->data)
        munmap(p->data, p->data_len);
    memset(p, 0, sizeof *p);
}

uint32_t (*rm_pool_fail_hook)(uint32_t want);

uint32_t rm_pool_alloc(rm_pool *p, uint32_t n, uint32_t *out)
{
    if (rm_pool_fail_hook) {
        uint32_t cap = rm_pool_fail_hook(n);
        if (n > cap)
            n = cap;
    }
    if (n > p->nfree)
        n = p->nfree;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t page = p->free_stack[--p->nfree];
        p->state[page] = RM_PAGE_USED;
        out[i] = page;
    }
    return n;
}

int rm_pool_free(rm_pool *p, const uint32_t *pages, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (pages[i] >= p->npages || p->state[pages[i]] != RM_PAGE_USED) {
            /* Undo: every page before i was valid and flipped exactly once
             * (a duplicate would have failed here already). */
            for (uint32_t j = 0; j < i; j++)
                p->state[pages[j]] = RM_PAGE_USED;
            return -EINVAL;
        }
        p->state[pages[i]] = RM_PAGE_FREE;
    }
    for (uint32_t i = 0; i < n; i++)
        p->free_stack[p->nfree++] = pages[i];
    return 0;
}

size_t rm_pool_metadata_bytes(const rm_pool *p)
{
    return (size_t)p->npages * (sizeof(uint32_t) + 1);
}

int rm_pool_grow(rm_pool *p, uint64_t npages)
{
    if (p->data || npages <= p->npages || npages >= UINT32_MAX)
        return -EINVAL;
    uint32_t *stack = realloc(p->free_stack, sizeof(uint32_t) * npages);
    if (!stack)
        return -ENOMEM;
    p->free_stack = stack;
    uint8_t *state = realloc(p->state, npages);
    if (!state)
        return -ENOMEM;
    p->state = state;
    memset(state + p->npages, RM_PAGE_FREE, npages - p->npages);
    for (uint32_t i = (uint32_t)npages; i-- > p->npages;)
        p->free_stack[p->nfree++] = i;
    p->npages = (uint32_t)npages;
    return 0;
}
