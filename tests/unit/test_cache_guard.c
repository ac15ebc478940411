/* Unit tests for the pieces that guard a cache node's resources: SipHash
 * (lease ids, peer table), the per-peer lease table, the slot table under
 * it and the lease table (ptrtab), the KV stream bound and refusal-log
 * rules, and the peer address parser. */
#include <string.h>

#include "check.h"
#include "guard.h"
#include "peers.h"
#include "ptrtab.h"
#include "siphash.h"

/* The reference vectors: key 00..0f, message 00..len-1 (the paper's
 * appendix; the 15-byte one is its worked example). */
static void test_siphash_vectors(void)
{
    uint8_t key[16], msg[64];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    CHECK(rm_siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ULL);
    CHECK(rm_siphash24(key, msg, 1) == 0x74f839c593dc67fdULL);
    CHECK(rm_siphash24(key, msg, 7) == 0xab0200f58b01d137ULL);
    CHECK(rm_siphash24(key, msg, 8) == 0x93f5f5799a932462ULL);
    CHECK(rm_siphash24(key, msg, 15) == 0xa129ca6149be45e5ULL);
    CHECK(rm_siphash24(key, msg, 63) == 0x958a324ceb064572ULL);
    uint8_t k1[16], k2[16];
    CHECK_EQ(rm_siphash_key(k1), 0);
    CHECK_EQ(rm_siphash_key(k2), 0);
    CHECK(memcmp(k1, k2, 16) != 0);
}

static void test_peers_table(void)
{
    uint8_t key[16] = {7};
    rm_peers p;
    rm_peers_init(&p, key);
    CHECK(rm_peers_find(&p, "a", 1, 0) == NULL);
    rm_peer *a = rm_peers_ref(&p, "a", 1, 0);
    CHECK(rm_peers_ref(&p, "a", 1, 0) == a);
    CHECK_EQ(a->leases, 2);
    rm_peer *a_id = rm_peers_ref(&p, "a", 1, 1); /* an identity, not the address */
    CHECK(a_id != a);
    CHECK(rm_peer_is(a_id, "a", 1, 1) && !rm_peer_is(a_id, "a", 1, 0));
    CHECK(rm_peers_find(&p, "a", 1, 1) == a_id);
    /* Growth keeps every entry findable, deletion keeps probe chains. */
    char name[16];
    rm_peer *many[200];
    for (int i = 0; i < 200; i++) {
        int len = snprintf(name, sizeof name, "10.0.%d.%d", i / 256, i % 256);
        many[i] = rm_peers_ref(&p, name, (size_t)len, 0);
    }
    CHECK_EQ(p.tab.n, 202);
    for (int i = 0; i < 200; i += 2)
        rm_peers_unref(&p, many[i]);
    int ok = 1;
    for (int i = 0; i < 200; i++) {
        int len = snprintf(name, sizeof name, "10.0.%d.%d", i / 256, i % 256);
        rm_peer *e = rm_peers_find(&p, name, (size_t)len, 0);
        ok &= (i % 2) ? e == many[i] : e == NULL;
    }
    CHECK(ok);
    rm_peers_unref(&p, a);
    CHECK(rm_peers_find(&p, "a", 1, 0) == a);
    rm_peers_unref(&p, a);
    CHECK(rm_peers_find(&p, "a", 1, 0) == NULL);
    CHECK_EQ(p.tab.n, 101);
    /* Empty identities and embedded NULs are bytes like any others. */
    rm_peer *e0 = rm_peers_ref(&p, "", 0, 0);
    rm_peer *nul = rm_peers_ref(&p, "x\0y", 3, 0);
    CHECK(rm_peers_find(&p, "", 0, 0) == e0);
    CHECK(rm_peers_find(&p, "x\0y", 3, 0) == nul && rm_peers_find(&p, "x", 1, 0) == NULL);
    rm_peers_destroy(&p);
}

typedef struct ent {
    uint64_t k;
} ent;

static uint64_t ent_key(const void *e)
{
    return ((const ent *)e)->k;
}

static const ent *find(const rm_ptrtab *t, uint64_t k)
{
    for (size_t i = k & t->mask; t->slots[i]; i = (i + 1) & t->mask)
        if (((const ent *)t->slots[i])->k == k)
            return t->slots[i];
    return NULL;
}

/* A run of entries that wraps past the last slot: deleting its head moves
 * each later entry back towards its home, across the wrap, and every key
 * stays findable; the table doubles before it would be over half full. */
static void test_ptrtab_wraps(void)
{
    rm_ptrtab t;
    rm_ptrtab_init(&t, 8, ent_key);
    ent e[] = {{6}, {7}, {14}, {15}, {3}};
    for (int i = 0; i < 4; i++)
        CHECK_EQ(rm_ptrtab_add(&t, &e[i]), 0);
    CHECK(t.slots[6] == &e[0] && t.slots[7] == &e[1]);
    CHECK(t.slots[0] == &e[2] && t.slots[1] == &e[3]); /* homes 6 and 7, wrapped */
    rm_ptrtab_del(&t, &e[0]);
    CHECK(t.slots[6] == &e[2] && t.slots[0] == &e[3] && t.slots[1] == NULL);
    CHECK(find(&t, 6) == NULL);
    for (int i = 1; i < 4; i++)
        CHECK(find(&t, e[i].k) == &e[i]);
    CHECK_EQ(t.n, 3);
    CHECK_EQ(rm_ptrtab_add(&t, &e[0]), 0);
    CHECK_EQ(rm_ptrtab_add(&t, &e[4]), 1); /* a fifth of 8 slots: 16 */
    CHECK_EQ(t.mask, 15);
    for (int i = 0; i < 5; i++)
        CHECK(find(&t, e[i].k) == &e[i]);
    rm_ptrtab_destroy(&t);
}

static void test_stream_verdict(void)
{
    const uint64_t NONE = UINT64_MAX;
    CHECK_EQ(rm_guard_stream(1000, 0, 100, NONE), RM_STREAM_KEEP); /* not waiting */
    CHECK_EQ(rm_guard_stream(1099, 1000, 100, NONE), RM_STREAM_KEEP);
    CHECK_EQ(rm_guard_stream(1100, 1000, 100, NONE), RM_STREAM_IDLE);
    CHECK_EQ(rm_guard_stream(5000, 1000, 0, NONE), RM_STREAM_KEEP);  /* no bound */
    CHECK_EQ(rm_guard_stream(999, 1000, 100, NONE), RM_STREAM_KEEP); /* clock behind */
    CHECK_EQ(rm_guard_stream(1500, 0, 100, 1500), RM_STREAM_LEASE_EXPIRED);
    CHECK_EQ(rm_guard_stream(1499, 1450, 100, 1500), RM_STREAM_KEEP);
    /* Both due: the lease is the reason to tell. */
    CHECK_EQ(rm_guard_stream(2000, 1000, 100, 1500), RM_STREAM_LEASE_EXPIRED);
    CHECK(strcmp(rm_stream_verdict_str(RM_STREAM_IDLE), "idle") == 0);
    CHECK(strcmp(rm_stream_verdict_str(RM_STREAM_KEEP), "keep") == 0);
    CHECK(strcmp(rm_stream_verdict_str(RM_STREAM_LEASE_EXPIRED), "lease expired") == 0);
    CHECK(strcmp(rm_stream_verdict_str((rm_stream_verdict)7), "?") == 0);
}

static void test_log_limit(void)
{
    rm_log_limit l = {0};
    l.interval_ms = 10000;
    CHECK_EQ(rm_log_limit_due(&l, 0, 100), 0);    /* nothing happened */
    CHECK_EQ(rm_log_limit_due(&l, 1, 100), 1);    /* the first one at once */
    CHECK_EQ(rm_log_limit_due(&l, 500, 200), 0);  /* a flood waits */
    CHECK_EQ(rm_log_limit_due(&l, 900, 9000), 0); /* still inside the interval */
    CHECK_EQ(rm_log_limit_due(&l, 900, 10100), 899);
    CHECK_EQ(rm_log_limit_due(&l, 900, 50000), 0); /* nothing new: no line */
    CHECK_EQ(rm_log_limit_due(&l, 901, 50001), 1);
    rm_log_limit z = {0};
    z.interval_ms = 10;
    CHECK_EQ(rm_log_limit_due(&z, 3, 0), 3); /* a clock at 0 still starts the interval */
    CHECK_EQ(rm_log_limit_due(&z, 4, 5), 0);
}

static void test_peer_address(void)
{
    char out[64];
    rm_peer_address("ipv4:10.0.0.5:41234", out, sizeof out);
    CHECK(strcmp(out, "10.0.0.5") == 0);
    rm_peer_address("ipv6:[::1]:5000", out, sizeof out);
    CHECK(strcmp(out, "::1") == 0);
    rm_peer_address("ipv6:%5B2001:db8::7%5D:443", out, sizeof out);
    CHECK(strcmp(out, "2001:db8::7") == 0);
    rm_peer_address("unix:/run/x.sock", out, sizeof out);
    CHECK(strcmp(out, "unix:/run/x.sock") == 0);
    CHECK_EQ(rm_peer_address("ipv4:10.0.0.5:1", out, 4), 3);
    CHECK(strcmp(out, "10.") == 0);
    rm_peer_address("ipv4:nocolon", out, sizeof out);
    CHECK(strcmp(out, "nocolon") == 0);
}

int main(void)
{
    RUN(test_siphash_vectors);
    RUN(test_peers_table);
    RUN(test_ptrtab_wraps);
    RUN(test_stream_verdict);
    RUN(test_log_limit);
    RUN(test_peer_address);
    return rm_t_report();
}
