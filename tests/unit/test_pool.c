#include <errno.h>
#include <string.h>

#include "check.h"
#include "pool.h"

static void test_alloc_free_cycle(rm_pool *p)
{
    uint32_t a[8];
    CHECK_EQ(rm_pool_alloc(p, 5, a), 5);
    CHECK_EQ(p->nfree, 3);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(p->state[a[i]], RM_PAGE_USED);
    /* Asking for more than is free hands out what there is. */
    uint32_t b[8];
    CHECK_EQ(rm_pool_alloc(p, 8, b), 3);
    CHECK_EQ(rm_pool_alloc(p, 1, b + 3), 0);
    CHECK_EQ(rm_pool_free(p, a, 5), 0);
    CHECK_EQ(p->nfree, 5);
    /* All 8 distinct ids were handed out exactly once. */
    int seen[8] = {0};
    for (int i = 0; i < 5; i++)
        seen[a[i]]++;
    for (int i = 0; i < 3; i++)
        seen[b[i]]++;
    for (int i = 0; i < 8; i++)
        CHECK_EQ(seen[i], 1);
}

static void test_double_free_rejected_atomically(rm_pool *p)
{
    uint32_t a[4];
    CHECK_EQ(rm_pool_alloc(p, 3, a), 3);
    uint32_t dup[3] = {a[0], a[1], a[0]};
    CHECK_EQ(rm_pool_free(p, dup, 3), -EINVAL);
    /* Nothing was freed by the rejected call. */
    CHECK_EQ(p->nfree, 1);
    CHECK_EQ(p->state[a[0]], RM_PAGE_USED);
    CHECK_EQ(p->state[a[1]], RM_PAGE_USED);
    uint32_t bad = 99;
    CHECK_EQ(rm_pool_free(p, &bad, 1), -EINVAL);
    CHECK_EQ(rm_pool_free(p, a, 1), 0);
    CHECK_EQ(rm_pool_free(p, a, 1), -EINVAL);
}

static void test_kv_memory(rm_pool *p)
{
    uint32_t a[4];
    CHECK_EQ(rm_pool_alloc(p, 4, a), 4);
    for (int i = 0; i < 4; i++)
        memset(rm_pool_page_data(p, a[i]), i + 1, 1024);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(rm_pool_page_data(p, a[i])[0], i + 1);
        CHECK_EQ(rm_pool_page_data(p, a[i])[1023], i + 1);
    }
    rm_pool_destroy(p);
    REQUIRE(rm_pool_init(p, 4, 4096, 1) == 0); /* prefaulted memory works alike */
    memset(rm_pool_page_data(p, 3), 9, 4096);
    CHECK_EQ(rm_pool_page_data(p, 3)[4095], 9);
    rm_pool_destroy(p);
    REQUIRE(rm_pool_init(p, 4, 0, 0) == 0);
    CHECK(rm_pool_page_data(p, 0) == NULL);
}

static void test_bad_sizes(rm_pool *p)
{
    rm_pool q;
    (void)p;
    CHECK_EQ(rm_pool_init(&q, 0, 0, 0), -EINVAL);
    CHECK_EQ(rm_pool_init(&q, UINT32_MAX, 0, 0), -EINVAL);
}

static void test_grow_metadata_only(rm_pool *p)
{
    uint32_t got[8];
    CHECK_EQ(rm_pool_alloc(p, 8, got), 4);
    CHECK_EQ(rm_pool_grow(p, 4), -EINVAL); /* no smaller, no same size */
    CHECK_EQ(rm_pool_grow(p, 6), 0);
    CHECK_EQ(p->npages, 6);
    CHECK_EQ(p->nfree, 2);
    CHECK_EQ(rm_pool_alloc(p, 8, got + 4), 2);
    CHECK(got[4] >= 4 && got[5] >= 4 && got[4] != got[5]);
    CHECK_EQ(rm_pool_free(p, got, 6), 0);
    CHECK_EQ(p->nfree, 6);
    rm_pool q;
    REQUIRE(rm_pool_init(&q, 2, 64, 0) == 0);
    CHECK_EQ(rm_pool_grow(&q, 4), -EINVAL); /* its KV memory cannot move */
    rm_pool_destroy(&q);
}

/* Each test gets a pool of this many pages of this many bytes. */
static const struct {
    const char *name;
    void (*run)(rm_pool *p);
    uint64_t npages, page_bytes;
} tests[] = {
    {"test_alloc_free_cycle", test_alloc_free_cycle, 8, 0},
    {"test_double_free_rejected_atomically", test_double_free_rejected_atomically, 4, 0},
    {"test_kv_memory", test_kv_memory, 4, 1024},
    {"test_bad_sizes", test_bad_sizes, 1, 0},
    {"test_grow_metadata_only", test_grow_metadata_only, 4, 0},
};

int main(void)
{
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int fails = rm_t_fail;
        rm_pool p;
        REQUIRE(rm_pool_init(&p, tests[i].npages, tests[i].page_bytes, 0) == 0);
        tests[i].run(&p);
        rm_pool_destroy(&p);
        fprintf(stderr, "%-40s %s\n", tests[i].name, rm_t_fail == fails ? "ok" : "FAILED");
    }
    return rm_t_report();
}
