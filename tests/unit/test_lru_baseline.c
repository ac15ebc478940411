/* Unit test for tests/bench/lru_baseline.h, the benchmarks' "ideal single
 * LRU": it is the node's own cache code, so it evicts least recently used
 * *leaves* first, never a prefix that cached requests still extend. A
 * simulator that evicts blocks in plain LRU order, touching each chain
 * root-first, would evict the shared prefix P below before its newer
 * children and miss on the last request. */
#include <string.h>

#include "../bench/lru_baseline.h"
#include "check.h"

enum { PAGE = 16 };

static void fill(uint32_t *out, uint32_t first)
{
    for (int i = 0; i < PAGE; i++)
        out[i] = first + (uint32_t)i;
}

static void test_evicts_leaves_first(void)
{
    /* P X, P Y, Q Z, P W in a 3-page cache: Q Z needs two pages; the least
     * recently used leaves are X, then Y (P is their parent, not a leaf),
     * so P stays and P W hits its first page. */
    const uint32_t parts[4][2] = {{1, 100}, {1, 200}, {300, 400}, {1, 500}};
    uint32_t tok[4][2 * PAGE];
    rm_trace_req req[4];
    memset(req, 0, sizeof req);
    for (int i = 0; i < 4; i++) {
        fill(tok[i], parts[i][0]);
        fill(tok[i] + PAGE, parts[i][1]);
        req[i].tokens = tok[i];
        req[i].n = 2 * PAGE;
    }
    rm_trace t = {req, 4, 0, 8 * PAGE};
    /* Hits: P on request 2 and on request 4, of 4 x 32 tokens. */
    CHECK(single_lru_hit(&t, PAGE, 3) == 32.0 / 128.0);
    /* With room for everything, every shared page hits. */
    CHECK(single_lru_hit(&t, PAGE, 16) == 32.0 / 128.0);
    /* Two pages: P X is replaced by P Y's missing page only. */
    CHECK(single_lru_hit(&t, PAGE, 2) == 16.0 / 128.0);
}

int main(void)
{
    RUN(test_evicts_leaves_first);
    return rm_t_report();
}
