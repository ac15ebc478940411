/* Differential test: the cache against a naive oracle (Redis rax-test style).
 *
 * The oracle is a trie of single pages, each knowing its parent, its
 * children, its tokens, whether a tree node starts there, how many holders
 * cover it and the access data of its node; everything is found by linear
 * scans (no child table, no heap, no edge arithmetic). It models the cache
 * exactly, eviction included: the leaf each policy (LRU, LFU, LFU-DA, GDSF)
 * takes, the age L, the hits and priority of every node, where edges split,
 * the pages a lease, a KV write or an insert in progress keeps out of
 * eviction's reach, and allocations the pool fails.
 *
 * Thousands of random operations (match, lease, insert with and without
 * lease, release, KV write/commit/abort, KV read, clock jumps that expire
 * leases) run against both, made by four callers (unknown, an address, two
 * authenticated identities) with a small per-caller lease share, some runs
 * with fewer namespace slots than names, some with a pool allocator that
 * fails at random. The oracle predicts every refusal: a caller over its
 * share, a lease named by someone else than the identity owning it, a new
 * namespace when every slot holds pages or leases. After every operation:
 *
 *   - rm_cache_check: every tree/pool/reference invariant, among them
 *     free + evictable + protected == pool pages;
 *   - every answer equals the oracle's (matched, cached, inserted and
 *     dropped tokens, refusals), and so do the pages in the tree, the
 *     evictable ones, the free ones and the age L;
 *   - the tree's nodes are the oracle's, one by one: the same edges with
 *     the same hits and priority (every operation while the pool is small,
 *     every 64th on the large one);
 *   - KV bytes read back equal what was written for that prefix.
 *
 * Usage: test_cache_fuzz [ops] [seed].
 *
 * tests/fuzz/fuzz_cache.c compiles this file with CACHE_FUZZ_BYTES: the
 * random choices then come from libFuzzer's input, and the pool's allocator
 * fails whenever the input says so. */
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "check.h"
#include "pool.h"

#define MAXLEN   96
#define MAXLEASE 256
#define MAXPT    16

typedef struct olease {
    uint64_t id;
    int ns;
    int owner; /* index into CALLERS */
    uint32_t tok[MAXLEN];
    size_t matched;
    uint64_t expires;
    int last; /* oracle page where the locked node ends; -1: the root */
} olease;

/* One cached page of the oracle; ns < 0: a free slot. */
typedef struct opage {
    int ns, parent; /* parent -1: the namespace root */
    int child, sib; /* first child, next sibling; -1: none */
    uint32_t tok[MAXPT];
    int edge_start; /* a tree node starts at this page */
    uint32_t lock;  /* holders whose prefix covers this page */
    uint32_t hits;  /* access data of its node, the same on each of its pages */
    uint64_t tick, prio;
} opage;

static olease leases[MAXLEASE];
static size_t nleases;
static uint32_t PT;
static const char *NS[3] = {"llama", "qwen", "llama:lora1"};
static const rm_cache_caller IP = {"10.0.0.1", 8, 0}, ALICE = {"alice", 5, 1}, BOB = {"bob", 3, 1};
static const rm_cache_caller *const CALLERS[4] = {NULL, &IP, &ALICE, &BOB};
#define SHARE 3 /* leases per known caller: small, so callers reach it */
static uint32_t MAXNS;
static rm_evict_policy POLICY;
static uint32_t SEQ_PCT; /* max_sequence_pct */

static opage *pg;
static int npg; /* slots in pg (the pool's pages) */
static int *pg_free, nfree_slots;
static int top[3];          /* first top-level page of each namespace */
static uint32_t ns_lock[3]; /* holders in each namespace, on its root included */
static uint64_t pool_total, in_tree, pending, otick, oage;

static unsigned long pool_failures; /* allocations the fuzzer failed */
/* What the failing allocator answered during the current operation. */
static uint32_t hook_cap[16];
static int hook_n, hook_used;

#ifdef CACHE_FUZZ_BYTES
/* Defined by the fuzz target: the next 8 bytes of input (0 once it is
 * exhausted), and whether it is. */
static uint64_t rnd(void);
static int input_exhausted(void);
#else
static uint64_t rng;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static int input_exhausted(void)
{
    return 0;
}
#endif

/* rm_pool_fail_hook: fails one allocation in eight, sometimes partially,
 * and logs its answer for the oracle. */
static uint32_t failing_alloc(uint32_t want)
{
    uint64_t r = rnd();
    uint32_t cap = want;
    if ((r & 7) == 0) {
        pool_failures++;
        cap = want ? (uint32_t)((r >> 3) % want) : 0;
    }
    if (hook_n < (int)(sizeof hook_cap / sizeof *hook_cap))
        hook_cap[hook_n++] = cap;
    return cap;
}

/* Random sequences built from a few shared blocks so prefixes overlap. */
static size_t gen(uint32_t *out)
{
    size_t n = 0, target = 1 + rnd() % MAXLEN;
    while (n < target) {
        uint32_t block = (uint32_t)(rnd() % 6);
        size_t blen = 1 + rnd() % 12;
        for (size_t i = 0; i < blen && n < target; i++)
            out[n++] = block < 5 ? block * 1000 + (uint32_t)i : (uint32_t)(rnd() % 50);
    }
    return n;
}

static uint8_t kv_byte(const uint32_t *tok, size_t i)
{
    return (uint8_t)(tok[i] * 31u + i * 7u + 1);
}

/* ---- the oracle's trie ------------------------------------------------ */

static int *children(int ns, int parent)
{
    return parent < 0 ? &top[ns] : &pg[parent].child;
}

static int find_child(int ns, int parent, const uint32_t *tok)
{
    for (int c = *children(ns, parent); c >= 0; c = pg[c].sib)
        if (memcmp(pg[c].tok, tok, PT * sizeof *tok) == 0)
            return c;
    return -1;
}

/* The page after p in p's node; -1 when the node ends at p. */
static int edge_next(int p)
{
    for (int c = pg[p].child; c >= 0; c = pg[c].sib)
        if (!pg[c].edge_start)
            return c;
    return -1;
}

static int edge_len(int start)
{
    int n = 1;
    for (int p = start; (p = edge_next(p)) >= 0;)
        n++;
    return n;
}

static int node_start(int p)
{
    while (!pg[p].edge_start)
        p = pg[p].parent;
    return p;
}

static int aging(void)
{
    return POLICY == RM_EVICT_LFU_DA || POLICY == RM_EVICT_GDSF;
}

/* cost/size in 1/65536ths: 1 for LFU-DA; for GDSF 1 + mean depth / 32768
 * tokens, i.e. 65536 + 2 * d0 + s. */
static uint64_t weight(uint64_t d0, uint64_t s)
{
    return POLICY == RM_EVICT_GDSF ? 65536 + 2 * d0 + s : 65536;
}

/* An access to the node starting at page s, d0 tokens deep. */
static void touch(int s, int flags, size_t d0)
{
    uint32_t hits = pg[s].hits;
    uint64_t prio = pg[s].prio;
    if (flags & RM_MATCH_HIT) {
        hits++;
        if (aging())
            prio = oage + (uint64_t)(hits + 1) * weight(d0, (uint64_t)edge_len(s) * PT);
    }
    for (int p = s; p >= 0; p = edge_next(p)) {
        if (flags & RM_MATCH_TOUCH)
            pg[p].tick = otick;
        pg[p].hits = hits;
        pg[p].prio = prio;
    }
}

/* rm_radix_match on the oracle: the tokens matched; *last is the page
 * where the deepest node inside the match ends (-1: the root). */
static size_t walk(int ns, const uint32_t *q, size_t n, int flags, int *last)
{
    otick++;
    int cur = -1;
    size_t pos = 0;
    while (n - pos >= PT) {
        int c = find_child(ns, cur, q + pos);
        if (c < 0)
            break;
        if (pg[c].edge_start && (flags & (RM_MATCH_TOUCH | RM_MATCH_HIT)))
            touch(c, flags, pos);
        cur = c;
        pos += PT;
    }
    int inside = cur >= 0 ? edge_next(cur) : -1;
    if (inside >= 0) { /* the match ends inside a node */
        int diverged = n - pos >= PT;
        if ((flags & RM_MATCH_SPLIT) || ((flags & RM_MATCH_SPLIT_DIVERGE) && diverged))
            pg[inside].edge_start = 1;
        else
            cur = pg[node_start(cur)].parent;
    }
    *last = cur;
    return pos;
}

static size_t peek(int ns, const uint32_t *q, size_t n)
{
    int last;
    return walk(ns, q, n, 0, &last);
}

/* Adds d (+1, -1) holders to the pages from last up to the root. */
static void lock(int ns, int last, int d)
{
    for (int p = last; p >= 0; p = pg[p].parent)
        pg[p].lock += (uint32_t)d;
    ns_lock[ns] += (uint32_t)d;
}

/* A new leaf of np pages under parent, d0 tokens deep. Returns its last page. */
static int attach(int ns, int parent, const uint32_t *tok, uint32_t np, size_t d0)
{
    otick++;
    uint64_t prio = aging() ? oage + weight(d0, (uint64_t)np * PT) : 0;
    int prev = parent;
    for (uint32_t i = 0; i < np; i++) {
        REQUIRE(nfree_slots > 0);
        int p = pg_free[--nfree_slots];
        opage *o = &pg[p];
        memset(o, 0, sizeof *o);
        o->ns = ns;
        o->parent = prev;
        o->child = -1;
        o->sib = *children(ns, prev);
        *children(ns, prev) = p;
        memcpy(o->tok, tok + (size_t)i * PT, PT * sizeof *tok);
        o->edge_start = i == 0;
        o->tick = otick;
        o->prio = prio;
        prev = p;
    }
    in_tree += np;
    return prev;
}

/* Whether a's node goes before b's. */
static int evicts_first(const opage *a, const opage *b)
{
    if (POLICY == RM_EVICT_LFU && a->hits != b->hits)
        return a->hits < b->hits;
    if (aging() && a->prio != b->prio)
        return a->prio < b->prio;
    return a->tick < b->tick;
}

/* The first page of the unreferenced leaf node the policy takes next, -1:
 * none. Two with equal keys would make the cache's choice arbitrary. */
static int victim(void)
{
    int best = -1;
    for (int p = 0; p < npg; p++) {
        if (pg[p].ns < 0 || !pg[p].edge_start || pg[p].lock)
            continue;
        int end = p;
        for (int nx; (nx = edge_next(end)) >= 0;)
            end = nx;
        if (pg[end].child >= 0)
            continue; /* not a leaf */
        if (best >= 0)
            CHECK(evicts_first(&pg[p], &pg[best]) || evicts_first(&pg[best], &pg[p]));
        if (best < 0 || evicts_first(&pg[p], &pg[best]))
            best = p;
    }
    return best;
}

/* Removes the leaf node starting at s. Returns its pages. */
static uint32_t remove_node(int s)
{
    int ns = pg[s].ns, *link = children(ns, pg[s].parent);
    while (*link != s)
        link = &pg[*link].sib;
    *link = pg[s].sib;
    uint32_t n = 0;
    for (int p = s, nx; p >= 0; p = nx) {
        nx = edge_next(p);
        pg[p].ns = -1;
        pg_free[nfree_slots++] = p;
        n++;
    }
    in_tree -= n;
    return n;
}

static uint64_t evict(uint64_t want)
{
    uint64_t freed = 0;
    int v;
    while (freed < want && (v = victim()) >= 0) {
        if (aging() && pg[v].prio > oage)
            oage = pg[v].prio;
        freed += remove_node(v);
    }
    return freed;
}

/* One rm_pool_alloc: what the hook allowed, what is free. */
static uint32_t take(uint32_t want)
{
    uint32_t cap = want;
    if (rm_pool_fail_hook) {
        CHECK(hook_used < hook_n);
        cap = hook_used < hook_n ? hook_cap[hook_used++] : want;
    }
    uint64_t avail = pool_total - in_tree - pending;
    uint32_t n = want < cap ? want : cap;
    return n < avail ? n : (uint32_t)avail;
}

/* Pages a sequence already holding have_pages may add, of need. */
static uint32_t seq_room(size_t have_pages, uint32_t need)
{
    if (SEQ_PCT == 0 || SEQ_PCT >= 100)
        return need;
    uint64_t cap = pool_total * SEQ_PCT / 100;
    if (cap == 0)
        cap = 1;
    if (have_pages >= cap)
        return 0;
    return cap - have_pages < need ? (uint32_t)(cap - have_pages) : need;
}

/* The cache's alloc_with_evict. */
static uint32_t alloc(uint32_t want)
{
    uint32_t got = take(want);
    if (got < want) {
        uint32_t first = got;
        pending += first; /* taken, not yet in the tree */
        evict(want - got);
        got += take(want - got);
        pending -= first;
    }
    return got;
}

static void oracle_reset(uint64_t pool_pages)
{
    free(pg);
    free(pg_free);
    npg = (int)pool_pages;
    pg = calloc((size_t)npg, sizeof *pg);
    pg_free = calloc((size_t)npg, sizeof *pg_free);
    REQUIRE(pg && pg_free);
    for (int p = 0; p < npg; p++) {
        pg[p].ns = -1;
        pg_free[p] = npg - 1 - p;
    }
    nfree_slots = npg;
    for (int k = 0; k < 3; k++) {
        top[k] = -1;
        ns_lock[k] = 0;
    }
    pool_total = pool_pages;
    in_tree = pending = otick = oage = 0;
    nleases = 0;
}

/* ---- comparing the tree with the oracle ------------------------------- */

typedef struct cmp_ctx {
    const rm_radix *t;
    long nodes, bad;
} cmp_ctx;

static void cmp_node(void *ctx, const rm_radix_node *n)
{
    cmp_ctx *x = ctx;
    const rm_radix *t = x->t;
    x->nodes++;
    size_t depth = rm_radix_depth_tokens(t, n);
    uint32_t path[MAXLEN];
    if (depth > MAXLEN) {
        x->bad++;
        return;
    }
    size_t end = depth;
    for (const rm_radix_node *m = n; m->parent; m = m->parent) {
        end -= (size_t)m->npages * PT;
        memcpy(path + end, rm_radix_node_tokens(m), (size_t)m->npages * PT * sizeof *path);
    }
    const rm_radix_ns *rns = &t->ns[n->ns];
    int ns = -1;
    for (int k = 0; k < 3; k++)
        if (rns->len == strlen(NS[k]) && memcmp(rns->name, NS[k], rns->len) == 0)
            ns = k;
    if (ns < 0) {
        x->bad++;
        return;
    }
    size_t start = depth - (size_t)n->npages * PT;
    int p = -1, s = -1;
    for (size_t pos = 0; pos < depth; pos += PT) {
        if ((p = find_child(ns, p, path + pos)) < 0) {
            x->bad++;
            return;
        }
        if (pos == start)
            s = p;
    }
    int same = pg[s].edge_start && edge_len(s) == (int)n->npages && edge_next(p) < 0 &&
               pg[s].hits == n->hits && (!aging() || pg[s].prio == n->prio);
    if (!same) {
        fprintf(stderr,
                "node at %zu+%u: oracle start=%d len=%d hits=%u prio=%llu, tree hits=%u "
                "prio=%llu\n",
                start, n->npages, pg[s].edge_start, edge_len(s), pg[s].hits,
                (unsigned long long)pg[s].prio, n->hits, (unsigned long long)n->prio);
        x->bad++;
    }
}

/* The cache holds what the oracle holds: page counts every time, node by
 * node (edges, hits, priority) with full. */
static void compare(const rm_cache *c, int full)
{
    uint64_t evictable = 0, starts = 0;
    for (int p = 0; p < npg; p++) {
        if (pg[p].ns < 0)
            continue;
        evictable += pg[p].lock == 0;
        starts += pg[p].edge_start != 0;
    }
    CHECK_EQ(c->tree.evictable_pages + c->tree.protected_pages, in_tree);
    CHECK_EQ(c->tree.evictable_pages, evictable);
    CHECK_EQ(c->pool.nfree, pool_total - in_tree - pending);
    CHECK_EQ(c->tree.age, oage);
    if (!full)
        return;
    cmp_ctx x = {&c->tree, 0, 0};
    rm_radix_foreach(&c->tree, cmp_node, &x);
    CHECK_EQ(x.bad, 0);
    CHECK_EQ(x.nodes, starts);
}

static void inv(const rm_cache *c)
{
    char err[256] = "";
    rm_cache_result rc = rm_cache_check(c, err, sizeof err);
    if (rc) {
        fprintf(stderr, "invariant: %s\n", err);
        CHECK_EQ(rc, 0);
        exit(rm_t_report());
    }
}

/* ---- leases, namespaces, callers -------------------------------------- */

/* Whether namespace ns holds cached pages or a lease. */
static int ns_in_use(int ns)
{
    return top[ns] >= 0 || ns_lock[ns] > 0;
}

/* Whether creating namespace ns must be refused: it is not in use and every
 * slot is held by a namespace in use (empty ones are reclaimed). */
static int ns_refused(int ns)
{
    if (ns_in_use(ns))
        return 0;
    uint32_t used = 0;
    for (int k = 0; k < 3; k++)
        used += k != ns && ns_in_use(k);
    return used >= MAXNS;
}

static size_t owned_by(int who)
{
    size_t k = 0;
    for (size_t i = 0; i < nleases; i++)
        k += leases[i].owner == who;
    return k;
}

/* Whether caller who is refused lease l: it belongs to another identity. */
static int denied(const olease *l, int who)
{
    const rm_cache_caller *o = CALLERS[l->owner];
    return o && o->authenticated && who != l->owner;
}

/* The lease's owner mostly, now and then someone else. */
static int pick_caller(const olease *l)
{
    return (!l || rnd() % 4 == 0) ? (int)(rnd() % 4) : l->owner;
}

static void drop_lease(size_t i)
{
    lock(leases[i].ns, leases[i].last, -1);
    leases[i] = leases[--nleases];
}

static void expire_oracle_leases(uint64_t now)
{
    for (size_t i = 0; i < nleases;) {
        if (leases[i].expires <= now)
            drop_lease(i);
        else
            i++;
    }
}

/* Half the time, extends a live lease's prefix into q (the Match(lease) ->
 * compute -> Insert cycle). Returns the lease or NULL. */
static olease *pick_lease_prefix(int *ns, uint32_t *q, size_t *n)
{
    if (!nleases || (rnd() & 1))
        return NULL;
    olease *l = &leases[rnd() % nleases];
    *ns = l->ns;
    memcpy(q, l->tok, l->matched * sizeof *q);
    *n = l->matched + rnd() % (MAXLEN - l->matched + 1);
    for (size_t i = l->matched; i < *n; i++)
        q[i] = (uint32_t)(rnd() % 50);
    return l;
}

/* After a write through lease l the lease covers the cached sequence,
 * locks its end and its TTL restarted; mirror that. */
static void lease_moved(const rm_cache *c, olease *l, const uint32_t *q, size_t n, size_t cached,
                        int last)
{
    lock(l->ns, last, 1);
    lock(l->ns, l->last, -1);
    l->last = last;
    memcpy(l->tok, q, n * sizeof *q);
    l->matched = cached;
    for (size_t s = 0; s <= c->leases.mask; s++) {
        const rm_lease *cl = c->leases.slots[s];
        if (cl && cl->id == l->id)
            l->expires = cl->expires_ms;
    }
}

/* Checks a writer's answer (Insert, or WriteKV's begin) against the
 * oracle's refusals: another identity's lease, a namespace that must be
 * refused. Returns 1 for such a refusal, 0 when the call must have
 * succeeded (and did): no shortage of pages is a refusal. */
static int writer_refused(const olease *ol, int who, int ns, rm_cache_result rc)
{
    if (ol && denied(ol, who)) {
        CHECK_EQ(rc, RM_CACHE_UNKNOWN_LEASE);
    } else if (!ol && ns_refused(ns)) {
        CHECK_EQ(rc, RM_CACHE_NAMESPACE_LIMIT);
    } else {
        CHECK_EQ(rc, RM_CACHE_OK);
        return 0;
    }
    return 1;
}

/* ---- operations ------------------------------------------------------- */

static void op_match(rm_cache *c, int ns, const uint32_t *q, size_t n, uint64_t now)
{
    int lease = nleases < MAXLEASE && (rnd() & 1);
    uint32_t ttl = (uint32_t)(rnd() % 3000);
    int who = (int)(rnd() % 4);
    rm_match_result mr;
    rm_cache_result rc =
        rm_cache_match(c, CALLERS[who], NS[ns], strlen(NS[ns]), q, n, lease, ttl, now, &mr);
    rm_cache_result want = !lease                            ? RM_CACHE_OK
                           : (who && owned_by(who) >= SHARE) ? RM_CACHE_PEER_LEASE_LIMIT
                           : ns_refused(ns)                  ? RM_CACHE_NAMESPACE_LIMIT
                                                             : RM_CACHE_OK;
    CHECK_EQ(rc, want);
    if (rc)
        return;
    int last;
    size_t m = walk(ns, q, n, RM_MATCH_TOUCH | RM_MATCH_HIT | (lease ? RM_MATCH_SPLIT : 0), &last);
    CHECK_EQ(mr.matched_tokens, m);
    if (!lease)
        return;
    olease *l = &leases[nleases++];
    l->id = mr.lease_id;
    l->ns = ns;
    l->owner = who;
    memcpy(l->tok, q, n * sizeof *q);
    l->matched = m;
    l->expires = now + (ttl == 0 ? 400 : ttl > 2000 ? 2000 : ttl);
    l->last = last;
    lock(ns, last, 1);
}

static void op_insert(rm_cache *c, int ns, uint32_t *q, size_t n, uint64_t now)
{
    olease *ol = pick_lease_prefix(&ns, q, &n);
    int who = pick_caller(ol);
    rm_insert_result ir;
    rm_cache_result rc =
        rm_cache_insert(c, CALLERS[who], NS[ns], strlen(NS[ns]), q, n, ol ? ol->id : 0, now, &ir);
    if (writer_refused(ol, who, ns, rc))
        return;
    size_t aligned = n / PT * PT;
    int last;
    size_t have = walk(ns, q, aligned,
                       RM_MATCH_TOUCH | (ol ? RM_MATCH_SPLIT : RM_MATCH_SPLIT_DIVERGE), &last);
    uint32_t need = (uint32_t)((aligned - have) / PT), got = 0;
    if (need) {
        lock(ns, last, 1);
        uint32_t room = seq_room(have / PT, need);
        got = room ? alloc(room) : 0;
        int leaf = got ? attach(ns, last, q + have, got, have) : last;
        lock(ns, last, -1);
        last = leaf;
    }
    CHECK_EQ(ir.cached_tokens, have);
    CHECK_EQ(ir.inserted_tokens, (size_t)got * PT);
    CHECK_EQ(ir.dropped_tokens, (size_t)(need - got) * PT);
    if (ol)
        lease_moved(c, ol, q, n, have + (size_t)got * PT, last);
}

static void op_release(rm_cache *c)
{
    if (nleases && (rnd() % 4)) {
        size_t i = rnd() % nleases;
        int who = pick_caller(&leases[i]);
        if (denied(&leases[i], who)) {
            CHECK_EQ(rm_cache_release(c, CALLERS[who], leases[i].id), RM_CACHE_UNKNOWN_LEASE);
        } else {
            CHECK_EQ(rm_cache_release(c, CALLERS[who], leases[i].id), 0);
            CHECK_EQ(rm_cache_release(c, CALLERS[who], leases[i].id), RM_CACHE_UNKNOWN_LEASE);
            drop_lease(i);
        }
    } else {
        CHECK_EQ(rm_cache_release(c, CALLERS[rnd() % 4], rnd() | 1), RM_CACHE_UNKNOWN_LEASE);
    }
}

static void op_write(rm_cache *c, int kv_mode, int leased, int ns, uint32_t *q, size_t n,
                     uint64_t now)
{
    olease *ol = leased ? pick_lease_prefix(&ns, q, &n) : NULL;
    uint64_t lid = ol ? ol->id : 0;
    int who = pick_caller(ol);
    size_t kv_start = (rnd() % 3 == 0) ? 0 : peek(ns, q, n);
    rm_kv_write w;
    rm_cache_result rc =
        rm_cache_write_begin(c, CALLERS[who], NS[ns], strlen(NS[ns]), q, n, kv_start, lid, now, &w);
    if (!kv_mode) {
        CHECK_EQ(rc, RM_CACHE_METADATA_ONLY);
        return;
    }
    if (writer_refused(ol, who, ns, rc))
        return;
    size_t aligned = n / PT * PT;
    int anchor;
    size_t have = walk(ns, q, aligned, RM_MATCH_TOUCH | RM_MATCH_SPLIT, &anchor);
    CHECK_EQ(w.have_tokens, have);
    lock(ns, anchor, 1);
    uint32_t need = (uint32_t)((aligned - have) / PT);
    uint32_t room = seq_room(have / PT, need);
    uint32_t got = room ? alloc(room) : 0;
    pending += got;
    CHECK_EQ(w.npages, got);
    compare(c, 0);
    inv(c);
    for (size_t i = kv_start; i < w.ntokens; i++) {
        uint8_t *d = rm_cache_write_dest(c, &w, i);
        CHECK_EQ(d != NULL, i >= have && i < have + (size_t)got * PT);
        if (d)
            *d = kv_byte(q, i);
    }
    if (!lid && rnd() % 4 == 0) {
        rm_cache_write_abort(c, &w);
        pending -= got;
        lock(ns, anchor, -1);
        return;
    }
    rm_insert_result ir;
    CHECK_EQ(rm_cache_write_commit(c, &w, now, &ir), 0);
    int last;
    size_t now_have =
        walk(ns, q, have + (size_t)got * PT, RM_MATCH_TOUCH | RM_MATCH_SPLIT_DIVERGE, &last);
    CHECK_EQ(now_have, have); /* nothing else wrote meanwhile */
    pending -= got;
    int leaf = got ? attach(ns, last, q + have, got, have) : last;
    CHECK_EQ(ir.cached_tokens, have);
    CHECK_EQ(ir.inserted_tokens, (size_t)got * PT);
    CHECK_EQ(ir.dropped_tokens, (size_t)(need - got) * PT);
    if (ol)
        lease_moved(c, ol, q, n, have + (size_t)got * PT, leaf);
    lock(ns, anchor, -1);
}

static void op_read(rm_cache *c, int kv_mode)
{
    if (!nleases || !kv_mode)
        return;
    olease *l = &leases[rnd() % nleases];
    int who = pick_caller(l);
    rm_kv_pin pin;
    if (denied(l, who)) {
        CHECK_EQ(rm_cache_pin_lease(c, CALLERS[who], l->id, &pin), RM_CACHE_UNKNOWN_LEASE);
        return;
    }
    CHECK_EQ(rm_cache_pin_lease(c, CALLERS[who], l->id, &pin), 0);
    CHECK_EQ(pin.npages * PT, l->matched);
    int ok = 1;
    for (size_t i = 0; i < l->matched; i++)
        ok &= *rm_cache_pin_kv(c, &pin, i) == kv_byte(l->tok, i);
    CHECK(ok);
    CHECK_EQ(rm_cache_pin_expires(c, &pin), l->expires);
    rm_cache_unpin(c, &pin);
}

/* policy < 0: drawn at random. failing: the pool's allocator fails now
 * and then. */
static void run(uint32_t page_tokens, uint64_t pool_pages, int kv_mode, long ops, uint32_t max_ns,
                int policy, int failing)
{
    PT = page_tokens;
    MAXNS = max_ns;
    oracle_reset(pool_pages);
    rm_cache c;
    rm_cache_config cfg;
    rm_cache_config_defaults(&cfg);
    cfg.page_tokens = page_tokens;
    cfg.pool_pages = pool_pages;
    cfg.kv_bytes_per_token = kv_mode ? 1 : 0;
    cfg.default_lease_ttl_ms = 400;
    cfg.max_lease_ttl_ms = 2000;
    cfg.max_leases = MAXLEASE;
    cfg.max_leases_per_peer = SHARE;
    cfg.max_namespaces = max_ns;
    cfg.max_sequence_pct = SEQ_PCT;
    cfg.policy = POLICY =
        (rm_evict_policy)(policy >= 0 ? policy : (int)(rnd() % RM_EVICT_NPOLICIES));
    REQUIRE(rm_cache_init(&c, &cfg) == 0);
    rm_pool_fail_hook = failing ? failing_alloc : NULL;
    uint64_t now = 1000;
    long evicting = 0;
    int fail0 = rm_t_fail;
    for (long op = 0; op < ops; op++) {
        uint32_t q[MAXLEN];
        size_t n = gen(q);
        int ns = (int)(rnd() % 3);
        uint64_t evicted_before = c.st.evicted_tokens_total;
        int kind = (int)(rnd() % 100);
        now += rnd() % 20;
        hook_n = hook_used = 0;
        if (kind < 30) {
            op_match(&c, ns, q, n, now);
        } else if (kind < 55 && !kv_mode) {
            op_insert(&c, ns, q, n, now);
        } else if (kind < 65) {
            op_release(&c);
        } else if (kind < 80) { /* KV write (and the inserts' share in KV mode) */
            op_write(&c, kv_mode, kind < 55, ns, q, n, now);
        } else if (kind < 90) {
            op_read(&c, kv_mode);
        } else { /* the clock jumps: leases expire */
            now += rnd() % 600;
            uint32_t expired = rm_cache_tick(&c, now);
            size_t before = nleases;
            expire_oracle_leases(now);
            CHECK_EQ(expired, before - nleases);
        }
        inv(&c);
        CHECK_EQ(hook_used, hook_n);
        CHECK_EQ(pending, 0);
        compare(&c, pool_pages <= 4096 || op % 64 == 0);
        CHECK_EQ(c.leases.n, nleases);
        for (int k = 1; k < 4; k++) {
            const rm_peer *p =
                rm_peers_find(&c.peers, CALLERS[k]->id, CALLERS[k]->len, CALLERS[k]->authenticated);
            CHECK_EQ(p ? p->leases : 0, owned_by(k));
        }
        evicting += c.st.evicted_tokens_total != evicted_before;
        if (rm_t_fail - fail0 > 20 || input_exhausted())
            break;
    }
    compare(&c, 1);
#ifdef CACHE_FUZZ_BYTES
    (void)evicting; /* the fuzzer's inputs need not evict */
#else
    fprintf(stderr,
            "kv=%d page=%u pool=%llu ns=%u seq=%u%% %s%s ops=%ld (with eviction %ld) evicted=%llu "
            "dropped=%llu age=%llu refused: namespace %llu, share %llu\n",
            kv_mode, page_tokens, (unsigned long long)pool_pages, max_ns, SEQ_PCT,
            rm_evict_policy_name(POLICY), failing ? " failing" : "", ops, evicting,
            (unsigned long long)c.st.evicted_tokens_total,
            (unsigned long long)c.st.dropped_tokens_total, (unsigned long long)c.tree.age,
            (unsigned long long)c.st.namespace_refusals_total,
            (unsigned long long)c.st.peer_lease_refusals_total);
    CHECK(evicting > 0 || pool_pages >= (1 << 16)); /* small pools must have evicted */
#endif
    rm_pool_fail_hook = NULL;
    rm_cache_destroy(&c);
}

#ifndef CACHE_FUZZ_BYTES
int main(int argc, char **argv)
{
    long ops = argc > 1 ? atol(argv[1]) : 6000;
    rng = argc > 2 ? strtoull(argv[2], NULL, 10) : 0x5eed1234abcdULL;
    if (rng == 0)
        rng = 1;
    fprintf(stderr, "seed=%llu\n", (unsigned long long)rng);
    for (int kv = 0; kv <= 1; kv++) {
        run(4, 1 << 16, kv, ops, 1024, RM_EVICT_LRU, 0); /* no pressure */
        for (int p = 0; p < RM_EVICT_NPOLICIES; p++) {
            run(4, 48, kv, ops, 1024, p, 0); /* heavy eviction and pinning */
            run(1, 200, kv, ops, 1024, p, p & 1);
            run(16, 12, kv, ops, 1024, p, !(p & 1));
            run(4, 48, kv, ops, 2, p, 0); /* three names, two slots */
        }
        run(16, 12, kv, ops, 1, RM_EVICT_GDSF, 1);
        SEQ_PCT = 40; /* a sequence caches at most 40% of the pool */
        run(4, 48, kv, ops, 1024, RM_EVICT_LRU, 1);
        run(1, 200, kv, ops, 1024, RM_EVICT_LFU_DA, 0);
        SEQ_PCT = 0;
    }
    free(pg);
    free(pg_free);
    return rm_t_report();
}
#endif
