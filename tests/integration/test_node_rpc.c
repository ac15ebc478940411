/* Integration test: the real radixmesh-node daemon on a free loopback port,
 * driven by the C client. Usage: test_node_rpc PATH/TO/radixmesh-node */
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <pthread.h>
#include <stdint.h>

#include "cache_client.h"
#include "check.h"
#include "daemon.h"
#include "pbx.h"
#include "util.h"

static const char *node_bin;

static void fill(uint32_t *out, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        out[i] = seed * 7919u + (uint32_t)i * 31u;
}

static int start_node(test_daemon *d, const char *extra[])
{
    const char *argv[40] = {node_bin, "--node-id",   "t1",  "--shutdown-delay-ms",
                            "0",      "--log-level", "warn"};
    int n = 7;
    for (int i = 0; extra && extra[i]; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    return td_start(d, argv);
}

/* The node started for the running test, and a client of it; the
 * status message of the test's last call. */
typedef struct node_fx {
    test_daemon d;
    rm_cache_client cc;
} node_fx;
static node_fx fx;
static char msg[256];

static radixmesh_v1_NodeStats stats(rm_cache_client *cc)
{
    char err[256];
    radixmesh_v1_NodeStats s;
    CHECK_EQ(rm_cc_stats(cc, &s, err, sizeof err), GRPC_STATUS_OK);
    return s;
}

/* free + evictable + protected == pool, seen from outside. */
static void check_accounting(rm_cache_client *cc)
{
    radixmesh_v1_NodeStats s = stats(cc);
    CHECK_EQ(s.free_pages + s.evictable_pages + s.protected_pages, s.pool_pages);
    pb_release(radixmesh_v1_NodeStats_fields, &s);
}

/* An Insert/WriteKV reply's cached, inserted and dropped tokens. */
static void reply_is(const rm_cc_insert_reply *ir, uint32_t cached, uint32_t inserted,
                     uint32_t dropped)
{
    CHECK_EQ(ir->cached_tokens, cached);
    CHECK_EQ(ir->inserted_tokens, inserted);
    CHECK_EQ(ir->dropped_tokens, dropped);
}

static void test_basic_cycle(rm_cache_client *cc)
{
    uint32_t tok[612];
    fill(tok, 612, 1);
    rm_cc_match_reply m;
    CHECK_EQ(rm_cc_match(cc, "m", tok, 612, 1, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(m.matched_tokens, 0);
    CHECK(m.lease_id != 0);
    CHECK(strcmp(m.node_id, "t1") == 0);
    rm_cc_insert_reply ir;
    CHECK_EQ(rm_cc_insert(cc, "m", tok, 612, m.lease_id, NULL, &ir, msg, sizeof msg),
             GRPC_STATUS_OK);
    CHECK_EQ(ir.inserted_tokens, 608);
    CHECK_EQ(ir.cached_tokens, 0);
    radixmesh_v1_NodeStats s = stats(cc);
    CHECK_EQ(s.protected_pages, 38); /* the lease moved to the whole sequence */
    CHECK_EQ(s.active_leases, 1);
    pb_release(radixmesh_v1_NodeStats_fields, &s);
    CHECK_EQ(rm_cc_release(cc, m.lease_id, NULL, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(rm_cc_release(cc, m.lease_id, NULL, msg, sizeof msg), GRPC_STATUS_NOT_FOUND);
    CHECK(strstr(msg, "unknown lease") != NULL);
    CHECK_EQ(rm_cc_match(cc, "m", tok, 612, 0, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(m.matched_tokens, 608);
    CHECK_EQ(rm_cc_match(cc, "other", tok, 612, 0, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(m.matched_tokens, 0);
    CHECK_EQ(rm_cc_match(cc, "m", tok, 0, 0, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(m.matched_tokens, 0);
    check_accounting(cc);
}

static void test_bad_input(rm_cache_client *cc)
{
    /* Malformed protobuf: a length-delimited field running past the end. */
    const char junk[] = "\x12\xff\xff\x03garbage";
    grpc_byte_buffer *bb, *reply = NULL;
    grpc_slice sl;
    void *methods[] = {cc->m_match, cc->m_insert, cc->m_release, cc->m_health, cc->m_stats};
    for (int i = 0; i < 5; i++) {
        /* A sent buffer's slices belong to gRPC afterwards: one per call. */
        sl = grpc_slice_from_copied_buffer(junk, sizeof junk - 1);
        bb = grpc_raw_byte_buffer_create(&sl, 1);
        grpc_slice_unref(sl);
        grpc_status_code st = rm_rpc_unary(&cc->rpc, methods[i], bb, 5000, &reply, msg, sizeof msg);
        grpc_byte_buffer_destroy(bb);
        CHECK_EQ(st, GRPC_STATUS_INVALID_ARGUMENT);
        CHECK(strstr(msg, "malformed") != NULL);
    }
    /* Unknown method. */
    void *bogus = rm_rpc_client_method(&cc->rpc, "/radixmesh.v1.CacheNode/Nope");
    sl = grpc_slice_from_static_string("");
    bb = grpc_raw_byte_buffer_create(&sl, 1);
    CHECK_EQ(rm_rpc_unary(&cc->rpc, bogus, bb, 5000, &reply, msg, sizeof msg),
             GRPC_STATUS_UNIMPLEMENTED);
    grpc_byte_buffer_destroy(bb);
    /* Over the token limit (this node: --max-request-tokens 100000). */
    uint32_t *big = malloc(sizeof(uint32_t) * 100001);
    fill(big, 100001, 2);
    rm_cc_match_reply m;
    CHECK_EQ(rm_cc_match(cc, "m", big, 100001, 0, 0, &m, msg, sizeof msg),
             GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(msg, "more than 100000 tokens") != NULL);
    CHECK_EQ(rm_cc_match(cc, "m", big, 100000, 0, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    free(big);
    /* Insert through a lease that does not exist / does not fit. */
    uint32_t tok[64];
    fill(tok, 64, 3);
    rm_cc_insert_reply ir;
    CHECK_EQ(rm_cc_insert(cc, "m", tok, 64, 424242, NULL, &ir, msg, sizeof msg),
             GRPC_STATUS_NOT_FOUND);
    CHECK_EQ(rm_cc_insert(cc, "m", tok, 64, 0, NULL, &ir, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(rm_cc_match(cc, "m", tok, 64, 1, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    uint32_t other[64];
    fill(other, 64, 4);
    CHECK_EQ(rm_cc_insert(cc, "m", other, 64, m.lease_id, NULL, &ir, msg, sizeof msg),
             GRPC_STATUS_FAILED_PRECONDITION);
    CHECK_EQ(rm_cc_release(cc, m.lease_id, NULL, msg, sizeof msg), GRPC_STATUS_OK);
    /* Namespace too long. */
    char ns[1100];
    memset(ns, 'x', sizeof ns - 1);
    ns[sizeof ns - 1] = '\0';
    CHECK_EQ(rm_cc_match(cc, ns, tok, 64, 0, 0, &m, msg, sizeof msg), GRPC_STATUS_INVALID_ARGUMENT);
    /* ReadKV on a metadata-only node. */
    uint8_t buf[16];
    size_t got;
    CHECK_EQ(rm_cc_match(cc, "m", tok, 64, 1, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(rm_cc_read_kv(cc, m.lease_id, 0, 0, buf, sizeof buf, &got, msg, sizeof msg),
             GRPC_STATUS_FAILED_PRECONDITION);
    CHECK_EQ(rm_cc_release(cc, m.lease_id, NULL, msg, sizeof msg), GRPC_STATUS_OK);
    /* Still serving after all of that. */
    int serving = 0;
    CHECK_EQ(rm_cc_health(cc, &serving, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK(serving);
    check_accounting(cc);
}

/* The whole pool pinned by a lease: another Insert is not refused, it is
 * dropped (OK, dropped_tokens), and fits once the lease is released. */
static void test_pinned_pool_drops_then_recovers(rm_cache_client *cc)
{
    uint32_t a[64], b[64];
    fill(a, 64, 5);
    fill(b, 64, 6);
    rm_cc_insert_reply ir;
    rm_cc_match_reply m;
    radixmesh_v1_NodeStats s = stats(cc);
    uint64_t dropped = s.dropped_tokens_total;
    pb_release(radixmesh_v1_NodeStats_fields, &s);
    CHECK_EQ(rm_cc_insert(cc, "m", a, 64, 0, NULL, &ir, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(rm_cc_match(cc, "m", a, 64, 1, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(rm_cc_insert(cc, "m", b, 64, 0, NULL, &ir, msg, sizeof msg), GRPC_STATUS_OK);
    reply_is(&ir, 0, 0, 64);
    s = stats(cc); /* the drop is counted where dashboards see it */
    CHECK_EQ(s.dropped_tokens_total, dropped + 64);
    pb_release(radixmesh_v1_NodeStats_fields, &s);
    check_accounting(cc);
    CHECK_EQ(rm_cc_release(cc, m.lease_id, NULL, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(rm_cc_insert(cc, "m", b, 64, 0, NULL, &ir, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(ir.inserted_tokens, 64);
    s = stats(cc);
    CHECK_EQ(s.evicted_tokens_total, 64);
    pb_release(radixmesh_v1_NodeStats_fields, &s);
    check_accounting(cc);
}

/* A session larger than the node's pool (64 tokens here), under its own
 * lease: each turn is OK, caches what fits, reports the rest dropped (it
 * used to be RESOURCE_EXHAUSTED once the lease pinned every page). */
static void test_insert_larger_than_pool(rm_cache_client *cc)
{
    uint32_t tok[320];
    fill(tok, 320, 11);
    rm_cc_match_reply m;
    rm_cc_insert_reply ir;
    CHECK_EQ(rm_cc_match(cc, "m", tok, 200, 1, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(rm_cc_insert(cc, "m", tok, 200, m.lease_id, NULL, &ir, msg, sizeof msg),
             GRPC_STATUS_OK);
    reply_is(&ir, 0, 64, 128);
    radixmesh_v1_NodeStats s = stats(cc);
    CHECK_EQ(s.protected_pages, s.pool_pages); /* its lease pins every page */
    pb_release(radixmesh_v1_NodeStats_fields, &s);
    CHECK_EQ(rm_cc_insert(cc, "m", tok, 320, m.lease_id, NULL, &ir, msg, sizeof msg),
             GRPC_STATUS_OK);
    reply_is(&ir, 64, 0, 256);
    check_accounting(cc);
    CHECK_EQ(rm_cc_release(cc, m.lease_id, NULL, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(rm_cc_match(cc, "m", tok, 320, 0, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(m.matched_tokens, 64);
    check_accounting(cc);
}

static void test_lease_ttl_reclaims(rm_cache_client *cc)
{
    uint32_t a[160];
    fill(a, 160, 7);
    rm_cc_insert_reply ir;
    rm_cc_match_reply m;
    CHECK_EQ(rm_cc_insert(cc, "m", a, 160, 0, NULL, &ir, msg, sizeof msg), GRPC_STATUS_OK);
    /* A client takes 20 leases and vanishes. */
    for (int i = 0; i < 20; i++)
        CHECK_EQ(rm_cc_match(cc, "m", a, 160, 1, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    radixmesh_v1_NodeStats s = stats(cc);
    CHECK_EQ(s.active_leases, 20);
    CHECK_EQ(s.protected_pages, 10);
    pb_release(radixmesh_v1_NodeStats_fields, &s);
    long long deadline = td_now_ms() + td_ms(5000);
    uint64_t leases = 1;
    while (leases && td_now_ms() < deadline) {
        s = stats(cc);
        leases = s.active_leases;
        pb_release(radixmesh_v1_NodeStats_fields, &s);
    }
    s = stats(cc);
    CHECK_EQ(s.active_leases, 0);
    CHECK_EQ(s.protected_pages, 0);
    CHECK_EQ(s.expired_leases_total, 20);
    pb_release(radixmesh_v1_NodeStats_fields, &s);
    CHECK_EQ(rm_cc_release(cc, m.lease_id, NULL, msg, sizeof msg), GRPC_STATUS_NOT_FOUND);
}

static uint8_t kv_of(const uint32_t *tok, size_t i, size_t b)
{
    return (uint8_t)(tok[i] * 131u + b * 7u + i);
}

static void test_kv_roundtrip(rm_cache_client *cc)
{
    enum { KVB = 64, N = 100000 };
    /* A 100k-token prompt: 6.4 MB of KV in 1 MiB chunks each way. */
    uint32_t *tok = malloc(sizeof(uint32_t) * N);
    fill(tok, N, 8);
    size_t aligned = N / 16 * 16, bytes = aligned * KVB;
    uint8_t *kv = malloc(bytes), *back = malloc(bytes);
    for (size_t i = 0; i < aligned; i++)
        for (size_t b = 0; b < KVB; b++)
            kv[i * KVB + b] = kv_of(tok, i, b);
    rm_cc_insert_reply ir;
    CHECK_EQ(rm_cc_insert(cc, "m", tok, N, 0, NULL, &ir, msg, sizeof msg),
             GRPC_STATUS_FAILED_PRECONDITION);
    CHECK(strstr(msg, "WriteKV") != NULL);
    /* Too few bytes: refused, nothing cached. */
    CHECK_EQ(rm_cc_write_kv(cc, "m", tok, N, 0, 0, kv, bytes - 1, 1 << 20, &ir, msg, sizeof msg),
             GRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(msg, "expected") != NULL);
    check_accounting(cc);
    radixmesh_v1_NodeStats s = stats(cc);
    CHECK_EQ(s.free_pages, s.pool_pages);
    pb_release(radixmesh_v1_NodeStats_fields, &s);
    CHECK_EQ(rm_cc_write_kv(cc, "m", tok, N, 0, 0, kv, bytes, 1 << 20, &ir, msg, sizeof msg),
             GRPC_STATUS_OK);
    CHECK_EQ(ir.inserted_tokens, aligned);
    rm_cc_match_reply m;
    CHECK_EQ(rm_cc_match(cc, "m", tok, N, 1, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(m.matched_tokens, aligned);
    size_t got = 0;
    CHECK_EQ(rm_cc_read_kv(cc, m.lease_id, 0, 0, back, bytes, &got, msg, sizeof msg),
             GRPC_STATUS_OK);
    CHECK_EQ(got, bytes);
    CHECK(memcmp(kv, back, bytes) == 0);
    /* A window: tokens [1600, 1600+800). */
    CHECK_EQ(rm_cc_read_kv(cc, m.lease_id, 1600, 800, back, bytes, &got, msg, sizeof msg),
             GRPC_STATUS_OK);
    CHECK_EQ(got, 800 * KVB);
    CHECK(memcmp(kv + 1600 * KVB, back, 800 * KVB) == 0);
    CHECK_EQ(rm_cc_read_kv(cc, m.lease_id, 5, 0, back, bytes, &got, msg, sizeof msg),
             GRPC_STATUS_INVALID_ARGUMENT);
    CHECK_EQ(rm_cc_release(cc, m.lease_id, NULL, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(rm_cc_read_kv(cc, m.lease_id, 0, 0, back, bytes, &got, msg, sizeof msg),
             GRPC_STATUS_NOT_FOUND);
    /* Extend the sequence: send only the new tail's KV. */
    uint32_t *tok2 = malloc(sizeof(uint32_t) * (N + 64));
    memcpy(tok2, tok, sizeof(uint32_t) * N);
    fill(tok2 + aligned, N + 64 - aligned, 9);
    size_t tail_tokens = (N + 64) / 16 * 16 - aligned;
    uint8_t *tail = malloc(tail_tokens * KVB);
    for (size_t i = 0; i < tail_tokens; i++)
        for (size_t b = 0; b < KVB; b++)
            tail[i * KVB + b] = kv_of(tok2, aligned + i, b);
    CHECK_EQ(rm_cc_write_kv(cc, "m", tok2, N + 64, (uint32_t)aligned, 0, tail, tail_tokens * KVB,
                            4096, &ir, msg, sizeof msg),
             GRPC_STATUS_OK);
    CHECK_EQ(ir.cached_tokens, aligned);
    CHECK_EQ(ir.inserted_tokens, tail_tokens);
    /* Claiming the node holds more than it does is refused with a hint. */
    uint32_t fresh[64];
    fill(fresh, 64, 10);
    CHECK_EQ(rm_cc_write_kv(cc, "m", fresh, 64, 32, 0, tail, 32 * KVB, 4096, &ir, msg, sizeof msg),
             GRPC_STATUS_FAILED_PRECONDITION);
    CHECK(strstr(msg, "resend KV from token 0") != NULL);
    /* Through a lease that fits, the short prefix gets the same hint; a
     * lease that does not fit the tokens is named as the reason. */
    CHECK_EQ(rm_cc_match(cc, "m", fresh, 64, 1, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(rm_cc_write_kv(cc, "m", fresh, 64, 32, m.lease_id, tail, 32 * KVB, 4096, &ir, msg,
                            sizeof msg),
             GRPC_STATUS_FAILED_PRECONDITION);
    CHECK(strstr(msg, "resend KV from token 0") != NULL);
    CHECK_EQ(
        rm_cc_write_kv(cc, "x", fresh, 64, 0, m.lease_id, kv, 64 * KVB, 4096, &ir, msg, sizeof msg),
        GRPC_STATUS_FAILED_PRECONDITION);
    CHECK(strstr(msg, "does not cover") != NULL);
    CHECK_EQ(rm_cc_release(cc, m.lease_id, NULL, msg, sizeof msg), GRPC_STATUS_OK);
    check_accounting(cc);
    free(tok);
    free(tok2);
    free(kv);
    free(back);
    free(tail);
}

/* The same for WriteKV: the bytes that fit (64 tokens' worth) are kept
 * and read back, the rest are dropped and reported; once the lease pins
 * every page a write keeps nothing and still succeeds. */
static void test_write_kv_larger_than_pool(rm_cache_client *cc)
{
    enum { KVB = 8 };
    uint32_t tok[240];
    fill(tok, 240, 12);
    uint8_t kv[240 * KVB], back[240 * KVB];
    for (size_t i = 0; i < 240; i++)
        for (size_t b = 0; b < KVB; b++)
            kv[i * KVB + b] = kv_of(tok, i, b);
    rm_cc_match_reply m;
    rm_cc_insert_reply ir;
    CHECK_EQ(rm_cc_match(cc, "m", tok, 160, 1, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK_EQ(
        rm_cc_write_kv(cc, "m", tok, 160, 0, m.lease_id, kv, 160 * KVB, 4096, &ir, msg, sizeof msg),
        GRPC_STATUS_OK);
    reply_is(&ir, 0, 64, 96);
    size_t got = 0;
    CHECK_EQ(rm_cc_read_kv(cc, m.lease_id, 0, 0, back, sizeof back, &got, msg, sizeof msg),
             GRPC_STATUS_OK);
    CHECK_EQ(got, 64 * KVB);
    CHECK(memcmp(kv, back, 64 * KVB) == 0);
    CHECK_EQ(rm_cc_write_kv(cc, "m", tok, 240, 64, m.lease_id, kv + 64 * KVB, 176 * KVB, 4096, &ir,
                            msg, sizeof msg),
             GRPC_STATUS_OK);
    reply_is(&ir, 64, 0, 176);
    check_accounting(cc);
    CHECK_EQ(rm_cc_release(cc, m.lease_id, NULL, msg, sizeof msg), GRPC_STATUS_OK);
    radixmesh_v1_NodeStats s = stats(cc);
    CHECK_EQ(s.protected_pages, 0);
    CHECK_EQ(s.evictable_pages, s.pool_pages);
    pb_release(radixmesh_v1_NodeStats_fields, &s);
}

/* WriteKV naming no tokens writes nothing and says so (OK, nothing
 * cached); the node used to memcpy from the NULL token array (UB: the
 * ASan/UBSan build died). The node keeps serving and its pool is intact. */
static void test_empty_write_kv(rm_cache_client *cc)
{
    static const uint8_t none[1];
    rm_cc_insert_reply ir;
    CHECK_EQ(rm_cc_write_kv(cc, "m", NULL, 0, 0, 0, none, 0, 4096, &ir, msg, sizeof msg),
             GRPC_STATUS_OK);
    CHECK_EQ(ir.cached_tokens + ir.inserted_tokens + ir.dropped_tokens, 0);
    uint32_t few[5];
    fill(few, 5, 20);
    CHECK_EQ(rm_cc_write_kv(cc, "m", few, 5, 0, 0, none, 0, 4096, &ir, msg, sizeof msg),
             GRPC_STATUS_OK);
    CHECK_EQ(ir.inserted_tokens, 0);
    radixmesh_v1_NodeStats s = stats(cc);
    CHECK_EQ(s.free_pages, s.pool_pages);
    pb_release(radixmesh_v1_NodeStats_fields, &s);
}

/* Leased Matches on fresh namespaces with short leases used to fill
 * --max-namespaces for good. Now a refusal is counted (Stats) and, once
 * the leases expire, fresh namespaces are served again. */
static void test_namespace_slots_return(rm_cache_client *cc)
{
    char ns[32];
    uint32_t tok[32];
    fill(tok, 32, 21);
    rm_cc_match_reply m;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 4; i++) {
            snprintf(ns, sizeof ns, "model-%d-%d", round, i);
            /* The previous round's leases (2 s: long enough to see the refusal
             * below even under valgrind) may still be live. */
            long long deadline = td_now_ms() + td_ms(30000);
            int st;
            while ((st = rm_cc_match(cc, ns, tok, 32, 1, 2000, &m, msg, sizeof msg)) ==
                       GRPC_STATUS_RESOURCE_EXHAUSTED &&
                   td_now_ms() < deadline)
                ;
            CHECK_EQ(st, GRPC_STATUS_OK);
            if (st != GRPC_STATUS_OK)
                goto done; /* the slots never came back: once is enough to say so */
        }
        CHECK_EQ(rm_cc_match(cc, "one-too-many", tok, 32, 1, 2000, &m, msg, sizeof msg),
                 GRPC_STATUS_RESOURCE_EXHAUSTED);
        CHECK(strstr(msg, "--max-namespaces 4") != NULL);
    }
done:;
    radixmesh_v1_NodeStats s = stats(cc);
    CHECK(s.namespace_refusals_total >= 2);
    CHECK(s.namespaces <= 4);
    pb_release(radixmesh_v1_NodeStats_fields, &s);
}

typedef struct worker_arg {
    const char *addr;
    int id, errors, requests;
    uint64_t query, hit;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    rm_cache_client cc;
    if (rm_cc_init(&cc, a->addr, 10000) != 0) {
        a->errors++;
        return NULL;
    }
    char err[256]; /* this thread's own */
    uint32_t tok[700];
    for (int r = 0; r < 300; r++) {
        fill(tok, 512, (uint32_t)(100 + r % 8)); /* 8 shared prefixes */
        fill(tok + 512, 128, (uint32_t)(1000 + a->id * 1000 + r));
        rm_cc_match_reply m;
        rm_cc_insert_reply ir;
        if (rm_cc_match(&cc, "c", tok, 640, 1, 0, &m, err, sizeof err) ||
            rm_cc_insert(&cc, "c", tok, 640, m.lease_id, NULL, &ir, err, sizeof err) ||
            rm_cc_release(&cc, m.lease_id, NULL, err, sizeof err)) {
            a->errors++;
            continue;
        }
        a->requests++;
        a->query += 640;
        a->hit += m.matched_tokens;
    }
    rm_cc_close(&cc);
    return NULL;
}

static void test_concurrent_clients(rm_cache_client *cc)
{
    enum { T = 8 };
    pthread_t th[T];
    worker_arg args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (worker_arg){fx.d.addr, i, 0, 0, 0, 0};
        pthread_create(&th[i], NULL, worker, &args[i]);
    }
    uint64_t q = 0, h = 0;
    int errors = 0, requests = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        q += args[i].query;
        h += args[i].hit;
        errors += args[i].errors;
        requests += args[i].requests;
    }
    CHECK_EQ(errors, 0);
    CHECK_EQ(requests, T * 300);
    radixmesh_v1_NodeStats s = stats(cc);
    /* The node's counters are exactly the clients' sums. */
    CHECK_EQ(s.match_requests_total, T * 300);
    CHECK_EQ(s.query_tokens_total, q);
    CHECK_EQ(s.hit_tokens_total, h);
    CHECK_EQ(s.active_leases, 0);
    CHECK_EQ(s.protected_pages, 0);
    CHECK(h > q / 2); /* the shared prefixes hit */
    pb_release(radixmesh_v1_NodeStats_fields, &s);
    check_accounting(cc);
}

static void test_sigterm_drains(rm_cache_client *unused)
{
    (void)unused;
    test_daemon d;
    const char *argv[] = {node_bin, "--node-id",   "t2",   "--shutdown-delay-ms",
                          "600",    "--log-level", "warn", NULL};
    REQUIRE(td_start(&d, argv) == 0);
    rm_cache_client cc;
    REQUIRE(rm_cc_init(&cc, d.addr, 2000) == 0);
    int serving = 0;
    CHECK_EQ(rm_cc_health(&cc, &serving, msg, sizeof msg), GRPC_STATUS_OK);
    CHECK(serving);
    kill(d.pid, SIGTERM);
    /* During the delay the node answers, but reports NOT_SERVING. */
    long long deadline = td_now_ms() + 3000;
    int st = GRPC_STATUS_OK;
    while (serving && td_now_ms() < deadline) {
        st = rm_cc_health(&cc, &serving, msg, sizeof msg);
        if (st != GRPC_STATUS_OK)
            break;
    }
    CHECK_EQ(st, GRPC_STATUS_OK);
    CHECK(!serving);
    uint32_t tok[32];
    fill(tok, 32, 11);
    rm_cc_match_reply m;
    CHECK_EQ(rm_cc_match(&cc, "m", tok, 32, 0, 0, &m, msg, sizeof msg), GRPC_STATUS_OK);
    rm_cc_close(&cc);
    int status = td_stop(&d, 0, 10000); /* signal 0: just wait for the exit */
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_bad_flags_exit_2(rm_cache_client *unused)
{
    (void)unused;
    const char *cases[][6] = {
        {"--pool-tokens", "abc", NULL},
        {"--eviction", "fifo", NULL},
        {"--eviction", "LFU", NULL},
        {"--no-such-flag", NULL},
        {"--page-tokens", "0", NULL},
        {"--pool-bytes", "1000", NULL},
        {"--tls-cert", "/nonexistent.pem", NULL}, /* without --tls-key */
        {"--require-client-cert", NULL},          /* without certificates */
        {"--tls-cert", "/etc/hostname", "--tls-key", "/etc/hostname", NULL}, /* not PEM */
        {"--kv-stream-idle-ms", "0", NULL},
        {"--max-leases-per-peer", "-1", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(td_exits_2(node_bin, cases[i]));
}

/* Runs the node with argv and env additions, returns its exit status and
 * the first line it printed on stdout. */
static int run_capture(const char *const *argv, char *line, size_t len)
{
    int pipefd[2];
    REQUIRE(pipe(pipefd) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    FILE *f = fdopen(pipefd[0], "r");
    line[0] = '\0';
    if (!fgets(line, (int)len, f))
        line[0] = '\0';
    while (fgetc(f) != EOF) /* drain so the child never blocks on a full pipe */
        ;
    fclose(f);
    int status;
    waitpid(pid, &status, 0);
    return status;
}

static void test_help_version_env(rm_cache_client *unused)
{
    (void)unused;
    char line[512];
    const char *help[] = {node_bin, "--help", NULL};
    int st = run_capture(help, line, sizeof line);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(strstr(line, "usage: radixmesh-node") != NULL);
    const char *ver[] = {node_bin, "--version", NULL};
    st = run_capture(ver, line, sizeof line);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(strncmp(line, "radixmesh-node ", 15) == 0);
    /* Every flag also comes from RADIXMESH_<FLAG>; the command line wins. */
    setenv("RADIXMESH_NODE_ID", "from-env", 1);
    setenv("RADIXMESH_PAGE_TOKENS", "32", 1);
    setenv("RADIXMESH_SHUTDOWN_DELAY_MS", "0", 1);
    test_daemon d;
    const char *argv[] = {node_bin, "--page-tokens", "64", NULL};
    REQUIRE(td_start(&d, argv) == 0);
    rm_cache_client cc;
    REQUIRE(rm_cc_init(&cc, d.addr, 5000) == 0);
    radixmesh_v1_NodeStats s = stats(&cc);
    CHECK(strcmp(s.node_id, "from-env") == 0);
    CHECK_EQ(s.page_tokens, 64);
    pb_release(radixmesh_v1_NodeStats_fields, &s);
    rm_cc_close(&cc);
    CHECK_EQ(td_stop(&d, SIGTERM, 10000), 0);
    setenv("RADIXMESH_PAGE_TOKENS", "lots", 1);
    const char *plain[] = {node_bin, NULL};
    st = run_capture(plain, line, sizeof line);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    unsetenv("RADIXMESH_NODE_ID");
    unsetenv("RADIXMESH_PAGE_TOKENS");
    unsetenv("RADIXMESH_SHUTDOWN_DELAY_MS");
}

/* A test, and the flags of the node it gets (none: it starts its own). */
typedef struct node_test {
    const char *name;
    void (*run)(rm_cache_client *cc);
    int client_timeout_ms;
    const char *extra[8];
} node_test;

static const node_test tests[] = {
    {"test_basic_cycle", test_basic_cycle, 10000, {"--max-request-tokens", "100000"}},
    {"test_bad_input", test_bad_input, 10000, {"--max-request-tokens", "100000"}},
    {"test_pinned_pool_drops_then_recovers",
     test_pinned_pool_drops_then_recovers,
     5000,
     {"--pool-tokens", "64", "--page-tokens", "16"}},
    {"test_insert_larger_than_pool",
     test_insert_larger_than_pool,
     5000,
     {"--pool-tokens", "64", "--page-tokens", "16"}},
    {"test_write_kv_larger_than_pool",
     test_write_kv_larger_than_pool,
     10000,
     {"--kv-bytes-per-token", "8", "--pool-tokens", "64", "--page-tokens", "16"}},
    {"test_lease_ttl_reclaims", test_lease_ttl_reclaims, 5000, {"--lease-ttl-ms", "200"}},
    {"test_kv_roundtrip",
     test_kv_roundtrip,
     30000,
     {"--kv-bytes-per-token", "64", "--pool-tokens", "262144"}},
    {"test_empty_write_kv",
     test_empty_write_kv,
     10000,
     {"--kv-bytes-per-token", "8", "--pool-tokens", "256"}},
    {"test_namespace_slots_return", test_namespace_slots_return, 10000, {"--max-namespaces", "4"}},
    {"test_concurrent_clients", test_concurrent_clients, 5000, {"--pool-tokens", "65536"}},
    {"test_sigterm_drains", test_sigterm_drains, 0, {NULL}},
    {"test_bad_flags_exit_2", test_bad_flags_exit_2, 0, {NULL}},
    {"test_help_version_env", test_help_version_env, 0, {NULL}},
};

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    node_bin = argv[1];
    grpc_init();
    for (size_t i = 0; i < RM_ARRAY_LEN(tests); i++) {
        const node_test *t = &tests[i];
        int fails = rm_t_fail;
        if (t->client_timeout_ms) {
            REQUIRE(start_node(&fx.d, (const char **)t->extra) == 0);
            REQUIRE(rm_cc_init(&fx.cc, fx.d.addr, t->client_timeout_ms) == 0);
        }
        t->run(&fx.cc);
        if (t->client_timeout_ms) {
            rm_cc_close(&fx.cc);
            CHECK_EQ(td_stop(&fx.d, SIGTERM, 10000), 0);
        }
        fprintf(stderr, "%-40s %s\n", t->name, rm_t_fail == fails ? "ok" : "FAILED");
    }
    grpc_shutdown();
    return rm_t_report();
}
