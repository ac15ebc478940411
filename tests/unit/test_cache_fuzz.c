/* Differential test: the cache against a naive oracle (Redis rax-test style).
 *
 * The oracle is a plain list of the sequences inserted per namespace, each
 * with how much of it is still cached. A match is the longest page-aligned
 * common prefix with any of them. Thousands of random operations (match,
 * lease, insert with and without lease, release, KV write/commit/abort, KV
 * read, clock jumps that expire leases) run against both, made by four
 * callers (unknown, an address, two authenticated identities) with a small
 * per-caller lease share, some runs with fewer namespace slots than names.
 * The oracle predicts every refusal: a caller over its share, a lease named
 * by someone else than the identity owning it, a new namespace when every
 * slot holds pages or leases. After every operation:
 *
 *   - rm_cache_check: every tree/pool/reference invariant;
 *   - while nothing was evicted, every answer equals the oracle's exactly;
 *   - when the cache evicts, the oracle is resynchronised and must show the
 *     cache never claims more than was inserted, never lost a leased prefix
 *     and holds exactly the pages the surviving prefixes need;
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

#define MAXLEN   96
#define MAXSEQ   4096
#define MAXLEASE 256

typedef struct oseq {
    int ns;
    uint32_t tok[MAXLEN];
    size_t len;    /* page-aligned length inserted */
    size_t cached; /* how much of it the cache still holds (<= len) */
} oseq;

typedef struct olease {
    uint64_t id;
    int ns;
    int owner; /* index into CALLERS */
    uint32_t tok[MAXLEN];
    size_t matched;
    uint64_t expires;
} olease;

static oseq seqs[MAXSEQ];
static size_t nseqs;
static olease leases[MAXLEASE];
static size_t nleases;
static uint32_t PT;
static const char *NS[3] = {"llama", "qwen", "llama:lora1"};
static const rm_cache_caller IP = {"10.0.0.1", 8, 0}, ALICE = {"alice", 5, 1}, BOB = {"bob", 3, 1};
static const rm_cache_caller *const CALLERS[4] = {NULL, &IP, &ALICE, &BOB};
#define SHARE 3 /* leases per known caller: small, so callers reach it */
static uint32_t MAXNS;
static int oracle_lossy; /* it forgot inserts: namespace use is unknown */

#ifdef CACHE_FUZZ_BYTES
static unsigned long pool_failures; /* allocations the fuzzer failed */
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

static size_t oracle_match(int ns, const uint32_t *q, size_t n)
{
    size_t best = 0;
    for (size_t s = 0; s < nseqs; s++) {
        if (seqs[s].ns != ns)
            continue;
        size_t lim = seqs[s].cached < n ? seqs[s].cached : n, k = 0;
        while (k < lim && seqs[s].tok[k] == q[k])
            k++;
        k = k / PT * PT;
        if (k > best)
            best = k;
    }
    return best;
}

static void oracle_add(int ns, const uint32_t *tok, size_t len)
{
    if (len == 0)
        return;
    if (nseqs == MAXSEQ) { /* drop the oldest entry; keep it bounded */
        memmove(seqs, seqs + 1, sizeof seqs[0] * (MAXSEQ - 1));
        nseqs--;
        oracle_lossy = 1;
    }
    seqs[nseqs].ns = ns;
    memcpy(seqs[nseqs].tok, tok, len * sizeof *tok);
    seqs[nseqs].len = seqs[nseqs].cached = len;
    nseqs++;
}

/* Silent lookup: no access recorded, so probing does not perturb LRU. */
static size_t cache_peek(rm_cache *c, int ns, const uint32_t *q, size_t n)
{
    rm_radix_node *root, *last;
    if (rm_radix_root(&c->tree, NS[ns], strlen(NS[ns]), 0, &root))
        return 0;
    return rm_radix_match(&c->tree, root, q, n, 0, 0, &last);
}

/* After an eviction: shrink each oracle entry to what the cache still has,
 * then prove the cache holds exactly the pages those prefixes need. */
static void resync(rm_cache *c)
{
    static size_t have[MAXSEQ];
    for (size_t s = 0; s < nseqs; s++) {
        have[s] = cache_peek(c, seqs[s].ns, seqs[s].tok, seqs[s].len);
        /* Never more than the inserts so far could have put there. */
        CHECK(have[s] <= oracle_match(seqs[s].ns, seqs[s].tok, seqs[s].len));
    }
    for (size_t s = 0; s < nseqs; s++)
        seqs[s].cached = have[s];
    for (size_t i = 0; i < nleases; i++)
        CHECK_EQ(cache_peek(c, leases[i].ns, leases[i].tok, leases[i].matched), leases[i].matched);
    /* Distinct cached pages across all entries = pages in the tree. Count
     * each entry's pages not shared with an earlier entry's cached prefix. */
    uint64_t pages = 0;
    for (size_t s = 0; s < nseqs; s++) {
        size_t shared = 0;
        for (size_t r = 0; r < s; r++) {
            if (seqs[r].ns != seqs[s].ns)
                continue;
            size_t lim = seqs[r].cached < seqs[s].cached ? seqs[r].cached : seqs[s].cached;
            size_t k = 0;
            while (k < lim && seqs[r].tok[k] == seqs[s].tok[k])
                k++;
            k = k / PT * PT;
            if (k > shared)
                shared = k;
        }
        pages += (seqs[s].cached - shared) / PT;
    }
    CHECK_EQ(pages, c->tree.evictable_pages + c->tree.protected_pages);
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

/* Whether namespace ns holds cached pages or a lease. */
static int ns_in_use(int ns)
{
    for (size_t i = 0; i < nleases; i++)
        if (leases[i].ns == ns)
            return 1;
    for (size_t s = 0; s < nseqs; s++)
        if (seqs[s].ns == ns && seqs[s].cached > 0)
            return 1;
    return 0;
}

/* Whether creating namespace ns must be refused: it is not in use and every
 * slot is held by a namespace in use (empty ones are reclaimed). -1 when
 * the oracle cannot tell. */
static int ns_refused(int ns)
{
    if (oracle_lossy)
        return -1;
    if (ns_in_use(ns))
        return 0;
    uint32_t used = 0;
    for (int k = 0; k < 3; k++)
        used += k != ns && ns_in_use(k);
    return used >= MAXNS;
}

/* RM_CACHE_NAMESPACE_LIMIT when creating ns must be refused, else ok_rc.
 * Unknown: takes rc. */
static rm_cache_result expect_ns(int ns, rm_cache_result ok_rc, rm_cache_result rc)
{
    int r = ns_refused(ns);
    return r < 0 ? (rc == RM_CACHE_NAMESPACE_LIMIT ? rc : ok_rc)
           : r   ? RM_CACHE_NAMESPACE_LIMIT
                 : ok_rc;
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

static void expire_oracle_leases(uint64_t now)
{
    for (size_t i = 0; i < nleases;) {
        if (leases[i].expires <= now)
            leases[i] = leases[--nleases];
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

/* After an insert through lease lid the lease covers the cached sequence and
 * its TTL restarted; mirror that. */
static void lease_moved(rm_cache *c, uint64_t lid, const uint32_t *q, size_t n, size_t cached)
{
    for (size_t i = 0; lid && i < nleases; i++) {
        if (leases[i].id != lid)
            continue;
        memcpy(leases[i].tok, q, n * sizeof *q);
        leases[i].matched = cached;
        for (size_t s = 0; s <= c->leases.mask; s++) {
            const rm_lease *l = c->leases.slots[s];
            if (l && l->id == lid)
                leases[i].expires = l->expires_ms;
        }
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
    } else if (!ol && expect_ns(ns, RM_CACHE_OK, rc) == RM_CACHE_NAMESPACE_LIMIT) {
        CHECK_EQ(rc, RM_CACHE_NAMESPACE_LIMIT);
    } else {
        CHECK_EQ(rc, RM_CACHE_OK);
        return 0;
    }
    return 1;
}

static void run(uint32_t page_tokens, uint64_t pool_pages, int kv_mode, long ops, uint32_t max_ns)
{
    PT = page_tokens;
    MAXNS = max_ns;
    nseqs = nleases = 0;
    oracle_lossy = 0;
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
    cfg.policy = (rnd() & 1) ? RM_EVICT_LFU : RM_EVICT_LRU;
    REQUIRE(rm_cache_init(&c, &cfg) == 0);
    uint64_t now = 1000;
    long exact = 0, evicting = 0;
    int fail0 = rm_t_fail;
    for (long op = 0; op < ops; op++) {
        uint32_t q[MAXLEN];
        size_t n = gen(q);
        int ns = (int)(rnd() % 3);
        uint64_t evicted_before = c.st.evicted_tokens_total;
        size_t expect = oracle_match(ns, q, n);
        int kind = (int)(rnd() % 100);
        now += rnd() % 20;
        if (kind < 30) { /* match, maybe leased */
            int lease = nleases < MAXLEASE && (rnd() & 1);
            uint32_t ttl = (uint32_t)(rnd() % 3000);
            int who = (int)(rnd() % 4);
            rm_match_result mr;
            rm_cache_result rc = rm_cache_match(&c, CALLERS[who], NS[ns], strlen(NS[ns]), q, n,
                                                lease, ttl, now, &mr);
            rm_cache_result want = !lease ? 0
                                   : (who && owned_by(who) >= SHARE)
                                       ? RM_CACHE_PEER_LEASE_LIMIT
                                       : expect_ns(ns, RM_CACHE_OK, rc);
            CHECK_EQ(rc, want);
            if (rc == 0)
                CHECK_EQ(mr.matched_tokens, expect);
            if (lease && rc == 0) {
                olease *l = &leases[nleases++];
                l->id = mr.lease_id;
                l->ns = ns;
                l->owner = who;
                memcpy(l->tok, q, n * sizeof *q);
                l->matched = mr.matched_tokens;
                l->expires = now + (ttl == 0 ? 400 : ttl > 2000 ? 2000 : ttl);
            }
        } else if (kind < 55 && !kv_mode) { /* insert, sometimes through a lease */
            olease *ol = pick_lease_prefix(&ns, q, &n);
            uint64_t lid = ol ? ol->id : 0;
            int who = pick_caller(ol);
            if (lid)
                expect = oracle_match(ns, q, n);
            rm_insert_result ir;
            rm_cache_result rc =
                rm_cache_insert(&c, CALLERS[who], NS[ns], strlen(NS[ns]), q, n, lid, now, &ir);
            if (!writer_refused(ol, who, ns, rc)) {
                CHECK_EQ(ir.cached_tokens, expect);
                CHECK_EQ(ir.cached_tokens + ir.inserted_tokens + ir.dropped_tokens, n / PT * PT);
                oracle_add(ns, q, ir.cached_tokens + ir.inserted_tokens);
                lease_moved(&c, lid, q, n, ir.cached_tokens + ir.inserted_tokens);
            }
        } else if (kind < 65) { /* release a live or a bogus lease */
            if (nleases && (rnd() % 4)) {
                size_t i = rnd() % nleases;
                int who = pick_caller(&leases[i]);
                if (denied(&leases[i], who)) {
                    CHECK_EQ(rm_cache_release(&c, CALLERS[who], leases[i].id),
                             RM_CACHE_UNKNOWN_LEASE);
                } else {
                    CHECK_EQ(rm_cache_release(&c, CALLERS[who], leases[i].id), 0);
                    CHECK_EQ(rm_cache_release(&c, CALLERS[who], leases[i].id),
                             RM_CACHE_UNKNOWN_LEASE);
                    leases[i] = leases[--nleases];
                }
            } else {
                CHECK_EQ(rm_cache_release(&c, CALLERS[rnd() % 4], rnd() | 1),
                         RM_CACHE_UNKNOWN_LEASE);
            }
        } else if (kind < 80 || (kind < 55 && kv_mode)) { /* KV write, commit or abort */
            olease *ol = kind < 55 ? pick_lease_prefix(&ns, q, &n) : NULL;
            uint64_t lid = ol ? ol->id : 0;
            int who = pick_caller(ol);
            if (lid)
                expect = oracle_match(ns, q, n);
            size_t kv_start = (rnd() % 3 == 0) ? 0 : expect;
            rm_kv_write w;
            rm_cache_result rc = rm_cache_write_begin(&c, CALLERS[who], NS[ns], strlen(NS[ns]), q,
                                                      n, kv_start, lid, now, &w);
            if (!kv_mode) {
                CHECK_EQ(rc, RM_CACHE_METADATA_ONLY);
            } else if (!writer_refused(ol, who, ns, rc)) {
                inv(&c);
                for (size_t i = kv_start; i < w.ntokens; i++) {
                    uint8_t *d = rm_cache_write_dest(&c, &w, i);
                    if (d)
                        *d = kv_byte(q, i);
                }
                if (!lid && rnd() % 4 == 0) {
                    rm_cache_write_abort(&c, &w);
                } else {
                    rm_insert_result ir;
                    CHECK_EQ(rm_cache_write_commit(&c, &w, now, &ir), 0);
                    CHECK_EQ(ir.cached_tokens, expect);
                    oracle_add(ns, q, ir.cached_tokens + ir.inserted_tokens);
                    lease_moved(&c, lid, q, n, ir.cached_tokens + ir.inserted_tokens);
                }
            }
        } else if (kind < 90) { /* read back a leased prefix's KV bytes */
            if (nleases && kv_mode) {
                olease *l = &leases[rnd() % nleases];
                int who = pick_caller(l);
                rm_kv_pin pin;
                if (denied(l, who)) {
                    CHECK_EQ(rm_cache_pin_lease(&c, CALLERS[who], l->id, &pin),
                             RM_CACHE_UNKNOWN_LEASE);
                    goto checked;
                }
                CHECK_EQ(rm_cache_pin_lease(&c, CALLERS[who], l->id, &pin), 0);
                CHECK_EQ(pin.npages * PT, l->matched);
                int ok = 1;
                for (size_t i = 0; i < l->matched; i++)
                    ok &= *rm_cache_pin_kv(&c, &pin, i) == kv_byte(l->tok, i);
                CHECK(ok);
                CHECK_EQ(rm_cache_pin_expires(&c, &pin), l->expires);
                rm_cache_unpin(&c, &pin);
            }
        } else { /* the clock jumps: leases expire */
            now += rnd() % 600;
            uint32_t expired = rm_cache_tick(&c, now);
            size_t before = nleases;
            expire_oracle_leases(now);
            CHECK_EQ(expired, before - nleases);
        }
    checked:
        inv(&c);
        CHECK_EQ(c.leases.n, nleases);
        for (int k = 1; k < 4; k++) {
            const rm_peer *p =
                rm_peers_find(&c.peers, CALLERS[k]->id, CALLERS[k]->len, CALLERS[k]->authenticated);
            CHECK_EQ(p ? p->leases : 0, owned_by(k));
        }
        if (c.st.evicted_tokens_total != evicted_before) {
            evicting++;
            resync(&c);
        } else {
            exact++;
        }
        if (rm_t_fail - fail0 > 20 || input_exhausted())
            break;
    }
#ifndef CACHE_FUZZ_BYTES
    fprintf(stderr,
            "kv=%d page=%u pool=%llu ns=%u ops=%ld (exact %ld, with eviction %ld) evicted=%llu "
            "refused: namespace %llu, share %llu\n",
            kv_mode, page_tokens, (unsigned long long)pool_pages, max_ns, ops, exact, evicting,
            (unsigned long long)c.st.evicted_tokens_total,
            (unsigned long long)c.st.namespace_refusals_total,
            (unsigned long long)c.st.peer_lease_refusals_total);
#endif
#ifndef CACHE_FUZZ_BYTES
    CHECK(evicting > 0 || pool_pages >= (1 << 16)); /* small pools must have evicted */
#endif
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
        run(4, 1 << 16, kv, ops, 1024); /* no pressure: every answer exact */
        run(4, 48, kv, ops, 1024);      /* heavy eviction and pinning */
        run(1, 200, kv, ops, 1024);
        run(16, 12, kv, ops, 1024);
        run(4, 48, kv, ops, 2); /* three names, two slots */
        run(16, 12, kv, ops, 1);
    }
    return rm_t_report();
}
#endif
