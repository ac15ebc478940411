/* test_kv_subscriber.c -- node/kv_subscriber.c against a fake vLLM engine
 * (tests/integration/fake_vllm.py: a real ZeroMQ PUB + replay ROUTER
 * publishing as vLLM and SGLang do).
 *
 *   usage: test_kv_subscriber PYTHON3 FAKE_VLLM_PY [TEST-NAME-PART]
 *   (RM_TEST_DEBUG=1: the subscriber's debug log lines too)
 *
 * The test thread plays the node's owner thread: deliver() queues items
 * for it, it applies them (records what arrived) and hands them back with
 * rm_kv_sub_done -- or holds them, to play an owner that is behind. Every
 * wait has a deadline (x10 with RM_TEST_SLOW); nothing sleeps. */
#include <pthread.h>
#include <stddef.h>

#include "check.h"
#include "daemon.h"
#include "kv_subscriber.h"
#include "log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static const char *python, *fake_py;
static int slow = 1;
static int poll_ms = -1; /* the subscriber's replay_poll_ms: off but where a test wants it */

/* ---- the owner ------------------------------------------------------------ */

typedef struct seen {
    rm_kv_item_kind kind;
    rm_kv_resync_reason reason;
    uint64_t seq;
    uint32_t n_events;
    int replayed;
    uint64_t first_hash;
    uint32_t first_token, n_tokens;
    rm_kv_event_type first_type;
} seen;

#define MAX_SEEN 4096

typedef struct owner {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rm_kv_item *inbox[MAX_SEEN];
    size_t n_inbox;
    rm_kv_item *held[MAX_SEEN];
    size_t n_held;
    int hold;
    seen log[MAX_SEEN];
    size_t n_log;
} owner;

static int deliver(void *ctx, rm_kv_item *it)
{
    owner *o = ctx;
    pthread_mutex_lock(&o->mu);
    int ok = o->n_inbox < MAX_SEEN;
    if (ok)
        o->inbox[o->n_inbox++] = it;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    return ok ? 0 : -1;
}

typedef struct fx {
    test_daemon fake;
    char pub[64], rep[64];
    rm_kv_sub *sub;
    owner o;
    rm_kv_sub_stats base; /* CHECK_MOVED counts from here: the quiet stream
                           * fx_start leaves, or where a test moves it */
} fx;

/* Applies (records) what arrived; hands it back unless holding. */
static void pump(fx *f)
{
    owner *o = &f->o;
    pthread_mutex_lock(&o->mu);
    size_t n = o->n_inbox;
    rm_kv_item *items[MAX_SEEN];
    memcpy(items, o->inbox, n * sizeof *items);
    o->n_inbox = 0;
    pthread_mutex_unlock(&o->mu);
    for (size_t i = 0; i < n; i++) {
        rm_kv_item *it = items[i];
        seen s = {it->kind, it->reason, it->batch.seq, it->batch.n_events, it->replayed, 0, 0,
                  0,        0};
        if (it->kind == RM_KV_ITEM_BATCH && it->batch.n_events) {
            const rm_kv_event *e = &it->batch.events[0];
            s.first_type = e->type;
            s.first_hash = e->n_hashes ? e->hashes[0] : 0;
            s.n_tokens = e->n_tokens;
            s.first_token = e->n_tokens ? e->tokens[0] : 0;
        }
        if (o->n_log < MAX_SEEN)
            o->log[o->n_log++] = s;
        if (o->hold && o->n_held < MAX_SEEN)
            o->held[o->n_held++] = it;
        else
            rm_kv_sub_done(f->sub, it, it->batch.n_events);
    }
}

static void release_held(fx *f)
{
    for (size_t i = 0; i < f->o.n_held; i++)
        rm_kv_sub_done(f->sub, f->o.held[i], f->o.held[i]->batch.n_events);
    f->o.n_held = 0;
    f->o.hold = 0;
}

/* Pumps until pred holds or the deadline passes; between checks it waits
 * for the next delivery (at most 5 ms, for predicates on counters). */
static int wait_for(fx *f, int (*pred)(fx *, void *), void *arg, int timeout_ms)
{
    long long deadline = td_now_ms() + (long long)timeout_ms * slow;
    for (;;) {
        pump(f);
        if (pred(f, arg))
            return 1;
        if (td_now_ms() >= deadline)
            return 0;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 5 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&f->o.mu);
        if (!f->o.n_inbox)
            pthread_cond_timedwait(&f->o.cv, &f->o.mu, &ts);
        pthread_mutex_unlock(&f->o.mu);
    }
}

static rm_kv_sub_stats stats(fx *f)
{
    rm_kv_sub_stats s;
    rm_kv_sub_stats_get(f->sub, &s);
    return s;
}

/* What a scenario expects of the subscriber's counters: each named one
 * moved by exactly `by` since f->base (one snapshot for the lot). */
typedef struct moved {
    const char *counter;
    size_t off; /* in rm_kv_sub_stats */
    long long by;
} moved;
#define MOVED(field, n)     ((moved){#field, offsetof(rm_kv_sub_stats, field), (long long)(n)})
#define CHECK_MOVED(f, ...) check_moved(f, (const moved[]){__VA_ARGS__, {0}}, __LINE__)

static void check_moved(fx *f, const moved *want, int line)
{
    rm_kv_sub_stats s = stats(f);
    for (const moved *m = want; m->counter; m++) {
        uint64_t now, then;
        memcpy(&now, (const char *)&s + m->off, sizeof now);
        memcpy(&then, (const char *)&f->base + m->off, sizeof then);
        int failed = rm_t_fail;
        CHECK_EQ(now - then, m->by);
        if (rm_t_fail != failed)
            fprintf(stderr, "  (%s, expected at line %d)\n", m->counter, line);
    }
}

static void print_stats(fx *f, const char *what)
{
    rm_kv_sub_stats s = stats(f);
    fprintf(stderr,
            "  %s: received %llu batches %llu drops %llu gaps %llu replays %llu replayed %llu "
            "replay_failures %llu restarts %llu resyncs %llu malformed %llu last_seq %llu "
            "queued %llu\n",
            what, (unsigned long long)s.received, (unsigned long long)s.batches,
            (unsigned long long)s.drops, (unsigned long long)s.gaps, (unsigned long long)s.replays,
            (unsigned long long)s.replayed, (unsigned long long)s.replay_failures,
            (unsigned long long)s.restarts, (unsigned long long)s.resyncs,
            (unsigned long long)s.malformed, (unsigned long long)s.last_seq,
            (unsigned long long)s.queued);
}

static int logged_at_least(fx *f, void *arg)
{
    return f->o.n_log >= *(size_t *)arg;
}

static int logged_seq(fx *f, void *arg)
{
    for (size_t i = 0; i < f->o.n_log; i++)
        if (f->o.log[i].kind == RM_KV_ITEM_BATCH && f->o.log[i].seq == *(uint64_t *)arg)
            return 1;
    return 0;
}

/* Every sequence number since base was handed over or dropped: n of them. */
typedef struct handled {
    rm_kv_sub_stats base;
    uint64_t n;
} handled;

static int handled_all(fx *f, void *arg)
{
    handled *h = arg;
    rm_kv_sub_stats s = stats(f);
    return (s.batches - h->base.batches) + (s.drops - h->base.drops) == h->n;
}

static int last_seq_is(fx *f, void *arg)
{
    rm_kv_sub_stats s = stats(f);
    return s.has_seq && s.last_seq == *(uint64_t *)arg;
}

/* The owner was told to resync (for reason) before the batch seq: the
 * first two items it got. */
static void check_resync_before(fx *f, rm_kv_resync_reason reason, uint64_t seq)
{
    REQUIRE(f->o.n_log >= 2);
    CHECK_EQ(f->o.log[0].kind, RM_KV_ITEM_RESYNC);
    CHECK_EQ(f->o.log[0].reason, reason);
    CHECK_EQ(f->o.log[1].kind, RM_KV_ITEM_BATCH);
    CHECK_EQ(f->o.log[1].seq, seq);
}

/* ---- talking to the fake engine ---------------------------------------------- */

/* POSTs a JSON body to the fake's HTTP port; returns the status and puts
 * the reply's body in out. */
static int post(fx *f, const char *path, const char *json, char *out, size_t outlen)
{
    char host[64];
    int port;
    if (sscanf(f->fake.addr, "%63[^:]:%d", host, &port) != 2)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    char req[8192];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     path, strlen(json), json);
    int status = -1;
    char rsp[8192];
    size_t got = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, req, (size_t)n) == n) {
        ssize_t r;
        while (got < sizeof rsp - 1 && (r = read(fd, rsp + got, sizeof rsp - 1 - got)) > 0)
            got += (size_t)r;
        rsp[got] = '\0';
        sscanf(rsp, "HTTP/1.%*d %d", &status);
        const char *body = strstr(rsp, "\r\n\r\n");
        if (out)
            snprintf(out, outlen, "%s", body ? body + 4 : "");
    }
    close(fd);
    return status;
}

static void control(fx *f, const char *json)
{
    char out[256];
    CHECK_EQ(post(f, "/_control", json, out, sizeof out), 200);
}

/* A control call that publishes: returns the batch's sequence number. */
static uint64_t publish(fx *f, const char *json)
{
    char out[256];
    REQUIRE(post(f, "/_control", json, out, sizeof out) == 200);
    const char *p = strstr(out, "\"seq\": ");
    REQUIRE(p != NULL);
    return strtoull(p + 7, NULL, 10);
}

/* One stored block: hash h, tokens t..t+15. */
static uint64_t publish_block(fx *f, uint64_t h, uint32_t t)
{
    char json[512];
    int n = snprintf(json, sizeof json,
                     "{\"publish\": [{\"type\": \"BlockStored\", \"block_hashes\": [%llu], "
                     "\"parent_block_hash\": null, \"block_size\": 16, \"token_ids\": [",
                     (unsigned long long)h);
    for (uint32_t i = 0; i < 16; i++)
        n += snprintf(json + n, sizeof json - (size_t)n, "%s%u", i ? ", " : "", t + i);
    snprintf(json + n, sizeof json - (size_t)n, "]}]}");
    return publish(f, json);
}

static void fx_start(fx *f, const char *const *fake_args, uint32_t queue_max)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->o.mu, NULL);
    pthread_cond_init(&f->o.cv, NULL);
    const char *argv[16] = {python, fake_py};
    int n = 2;
    for (int i = 0; fake_args && fake_args[i] && n < 15; i++)
        argv[n++] = fake_args[i];
    argv[n] = NULL;
    REQUIRE(td_start(&f->fake, argv) == 0);
    REQUIRE(td_read_announced(&f->fake, "KV_EVENTS", f->pub) == 0);
    int replay = 1;
    for (int i = 0; fake_args && fake_args[i]; i++)
        replay &= strcmp(fake_args[i], "--no-replay") != 0;
    if (replay)
        REQUIRE(td_read_announced(&f->fake, "KV_REPLAY", f->rep) == 0);
    rm_kv_sub_config cfg = {
        .endpoint = f->pub,
        .replay_endpoint = replay ? f->rep : NULL,
        .queue_max = queue_max,
        .replay_timeout_ms = 5000 * slow,
        .replay_poll_ms = poll_ms,
        .deliver = deliver,
        .ctx = &f->o,
    };
    char err[256];
    f->sub = rm_kv_sub_start(&cfg, err, sizeof err);
    if (!f->sub)
        fprintf(stderr, "rm_kv_sub_start: %s\n", err);
    REQUIRE(f->sub != NULL);
    /* A SUB socket hears nothing until its subscription reaches the PUB:
     * publish until a batch arrives (with replay, the batches it missed
     * come from there). Then every scenario starts from a quiet stream. */
    long long deadline = td_now_ms() + 10000LL * slow;
    uint64_t seq;
    do
        seq = publish(f, "{\"publish\": [{\"type\": \"AllBlocksCleared\"}]}");
    while (!wait_for(f, logged_seq, &seq, 200) && td_now_ms() < deadline);
    REQUIRE(stats(f).has_seq && stats(f).last_seq == seq);
    f->o.n_log = 0;
    f->base = stats(f);
}

static void fx_stop(fx *f)
{
    rm_kv_sub_stop(f->sub);
    pump(f); /* items delivered before the stop */
    release_held(f);
    rm_kv_sub_stats s = stats(f);
    CHECK_EQ(s.queued, 0);
    CHECK_EQ(s.queued_bytes, 0);
    rm_kv_sub_destroy(f->sub);
    CHECK_EQ(td_stop(&f->fake, SIGTERM, 10000), 0);
    pthread_mutex_destroy(&f->o.mu);
    pthread_cond_destroy(&f->o.cv);
}

/* ---- scenarios ------------------------------------------------------------------ */

/* Batches arrive once each, in order, with their content, in every
 * encoding and hash type the engines use. */
static void test_in_order_every_encoding(void)
{
    static const char *modes[][2] = {
        {"vllm-latest", "uint"}, {"vllm-latest", "bytes"}, {"vllm-map", "uint"},
        {"vllm-0.9", "uint"},    {"vllm-0.11", "bytes"},   {"sglang", "int64"},
        {"sglang-old", "int64"},
    };
    fx f;
    fx_start(&f, NULL, 0);
    size_t want = 0;
    uint64_t first = f.base.last_seq + 1;
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        char json[128];
        snprintf(json, sizeof json, "{\"encoding\": \"%s\", \"hash\": \"%s\"}", modes[m][0],
                 modes[m][1]);
        control(&f, json);
        for (uint32_t i = 0; i < 5; i++, want++) {
            /* Hashes above 2**63 are negative as SGLang's int64. */
            uint64_t h = 0x8000000000000000ull + 1000 + want;
            publish_block(&f, h, (uint32_t)want * 16);
        }
    }
    CHECK(wait_for(&f, logged_at_least, &want, 10000));
    CHECK_EQ(f.o.n_log, want);
    for (size_t i = 0; i < f.o.n_log && i < want; i++) {
        seen *s = &f.o.log[i];
        CHECK_EQ(s->kind, RM_KV_ITEM_BATCH);
        CHECK_EQ(s->seq, first + i);
        CHECK_EQ(s->n_events, 1);
        CHECK_EQ(s->first_type, RM_KV_BLOCK_STORED);
        CHECK(s->first_hash == 0x8000000000000000ull + 1000 + i);
        CHECK_EQ(s->n_tokens, 16);
        CHECK_EQ(s->first_token, i * 16);
        CHECK(!s->replayed);
    }
    CHECK_MOVED(&f, MOVED(batches, want), MOVED(events_seen, want), MOVED(events_applied, want),
                MOVED(gaps, 0), MOVED(resyncs, 0));
    rm_kv_sub_stats s = stats(&f);
    CHECK_EQ(s.drops, 0);
    CHECK_EQ(s.malformed, 0);
    fx_stop(&f);
}

/* A batch the wire lost comes back from the replay socket, in its place. */
static void test_lost_batch_replayed(void)
{
    fx f;
    fx_start(&f, NULL, 0);
    control(&f, "{\"drop_next\": 2}");
    uint64_t a = publish_block(&f, 501, 0); /* dropped on the wire */
    uint64_t b = publish_block(&f, 502, 16);
    uint64_t c = publish_block(&f, 503, 32); /* sent: reveals the gap */
    CHECK(b == a + 1 && c == a + 2);
    size_t want = 3;
    CHECK(wait_for(&f, logged_at_least, &want, 10000));
    CHECK_EQ(f.o.n_log, 3);
    for (size_t i = 0; i < 3 && i < f.o.n_log; i++) {
        CHECK_EQ(f.o.log[i].kind, RM_KV_ITEM_BATCH);
        CHECK_EQ(f.o.log[i].seq, a + i);
        CHECK(f.o.log[i].first_hash == 501 + i);
        CHECK_EQ(f.o.log[i].replayed, i < 2);
    }
    CHECK_MOVED(&f, MOVED(gaps, 1), MOVED(replays, 1), MOVED(replayed, 2),
                MOVED(replay_failures, 0), MOVED(resyncs, 0));
    fx_stop(&f);
}

/* fx_start with the subscriber polling the replay socket after ms of a
 * quiet stream (the other scenarios keep polling off). */
static void fx_start_polling(fx *f, int ms)
{
    poll_ms = ms;
    fx_start(f, NULL, 0);
    poll_ms = -1;
}

/* The last batch lost, and nothing after it: the replay socket, polled
 * once the stream has been quiet, gives it back. */
static void test_lost_last_batch_polled(void)
{
    fx f;
    fx_start_polling(&f, 200);
    control(&f, "{\"drop_next\": 1}");
    uint64_t a = publish_block(&f, 701, 0);
    size_t want = 1;
    CHECK(wait_for(&f, logged_at_least, &want, 10000));
    REQUIRE(f.o.n_log >= 1);
    CHECK_EQ(f.o.log[0].kind, RM_KV_ITEM_BATCH);
    CHECK_EQ(f.o.log[0].seq, a);
    CHECK(f.o.log[0].first_hash == 701);
    CHECK_EQ(f.o.log[0].replayed, 1);
    CHECK(stats(&f).replay_polls > f.base.replay_polls);
    CHECK_MOVED(&f, MOVED(gaps, 1), MOVED(replays, 0), MOVED(replayed, 1), MOVED(resyncs, 0));
    fx_stop(&f);
}

/* A replay poll can race the live stream: the poll's answer has a batch
 * whose live copy is still on its way. That copy arrives after the batch
 * was handed over; it is skipped, not read as a sequence that went back
 * (an engine restart: a resync, and the whole buffer replayed). Seen in
 * integration_precise on a busy machine (kv_resyncs_total 1). */
static void test_live_copy_of_polled_batch_skipped(void)
{
    fx f;
    fx_start_polling(&f, 200);
    control(&f, "{\"hold_next\": 1}");
    uint64_t a = publish_block(&f, 751, 0);     /* in the replay buffer; live send held */
    CHECK(wait_for(&f, logged_seq, &a, 10000)); /* found by a poll */
    control(&f, "{\"release_held\": true}");    /* now its live copy goes out */
    uint64_t b = publish_block(&f, 752, 16);
    CHECK(wait_for(&f, logged_seq, &b, 10000));
    CHECK_EQ(f.o.n_log, 2);
    for (size_t i = 0; i < 2 && i < f.o.n_log; i++) {
        CHECK_EQ(f.o.log[i].kind, RM_KV_ITEM_BATCH);
        CHECK_EQ(f.o.log[i].seq, a + i);
        CHECK_EQ(f.o.log[i].replayed, i == 0);
    }
    CHECK_MOVED(&f, MOVED(batches, 2), MOVED(replayed, 1), MOVED(restarts, 0), MOVED(resyncs, 0),
                MOVED(received, 2));
    fx_stop(&f);
}

/* Without a replay socket a lost batch cannot come back: the owner is told
 * to resync before the next batch. */
static void test_lost_batch_without_replay_resyncs(void)
{
    fx f;
    const char *args[] = {"--no-replay", NULL};
    fx_start(&f, args, 0);
    control(&f, "{\"drop_next\": 1}");
    publish_block(&f, 601, 0);
    uint64_t b = publish_block(&f, 602, 16);
    size_t want = 2;
    CHECK(wait_for(&f, logged_at_least, &want, 10000));
    REQUIRE(f.o.n_log == 2);
    check_resync_before(&f, RM_KV_RESYNC_GAP, b);
    CHECK_MOVED(&f, MOVED(gaps, 1), MOVED(replay_failures, 1), MOVED(resyncs, 1));
    CHECK_EQ(stats(&f).replays, 0);
    fx_stop(&f);
}

/* An engine restart (numbering back at 0): one resync, then the new
 * process's batches from 0 -- with its sockets closed and bound again too,
 * when the batches sent before the subscriber reconnected come from the
 * replay socket. */
static void test_restart_resyncs(void)
{
    for (int rebind = 0; rebind < 2; rebind++) {
        fx f;
        fx_start(&f, NULL, 0);
        for (uint32_t i = 0; i < 20; i++)
            publish_block(&f, 700 + i, i * 16);
        size_t want = 20;
        CHECK(wait_for(&f, logged_at_least, &want, 10000));
        f.base = stats(&f); /* the restart's counts, not the first 20 batches' */
        f.o.n_log = 0;
        control(&f, rebind ? "{\"restart\": true, \"rebind\": true}" : "{\"restart\": true}");
        /* After a rebind the subscriber reconnects on its own schedule:
         * publish until the new process is heard. */
        uint64_t last = 0;
        long long deadline = td_now_ms() + 10000LL * slow;
        do {
            last = publish_block(&f, 800 + f.o.n_log, 0);
            wait_for(&f, last_seq_is, &last, 300);
        } while (!(stats(&f).has_seq && stats(&f).last_seq == last) && td_now_ms() < deadline);
        want = (size_t)last + 2; /* the resync, then batches 0..last */
        CHECK(wait_for(&f, logged_at_least, &want, 10000));
        CHECK(last < 20); /* the new process had not caught up with the old numbering */
        CHECK_EQ(f.o.n_log, want);
        if (f.o.n_log >= 1) {
            CHECK_EQ(f.o.log[0].kind, RM_KV_ITEM_RESYNC);
            CHECK_EQ(f.o.log[0].reason, RM_KV_RESYNC_RESTART);
        }
        for (size_t i = 1; i < f.o.n_log; i++) {
            CHECK_EQ(f.o.log[i].kind, RM_KV_ITEM_BATCH);
            CHECK_EQ(f.o.log[i].seq, i - 1);
        }
        CHECK_MOVED(&f, MOVED(restarts, 1), MOVED(resyncs, 1), MOVED(replay_failures, 0));
        if (!rebind)
            CHECK_MOVED(&f, MOVED(replayed, 0));
        rm_kv_sub_stats s = stats(&f);
        fprintf(stderr, "  restart%s: %llu batches of the new process, %llu from replay\n",
                rebind ? " with rebind" : "", (unsigned long long)last + 1,
                (unsigned long long)(s.replayed - f.base.replayed));
        fx_stop(&f);
    }
}

/* An owner that stops taking items: the queue holds queue_max, the rest of
 * a flood is dropped and counted, memory stays flat, and once the owner
 * catches up it gets a resync before any later batch. */
static void test_flood_drops_then_resync(void)
{
    fx f;
    fx_start(&f, NULL, 4);
    long rss0 = td_rss_kib(getpid());
    f.o.hold = 1;
    publish(&f, "{\"flood\": {\"batches\": 2000, \"blocks\": 64}}");
    handled h = {f.base, 2000};
    if (!wait_for(&f, handled_all, &h, 30000)) {
        CHECK(!"every batch of the flood handed over or dropped");
        print_stats(&f, "flood");
    }
    long rss1 = td_rss_kib(getpid());
    rm_kv_sub_stats s = stats(&f);
    CHECK_EQ(s.queued, 4);
    CHECK_EQ(f.o.n_held, 4);
    /* Every batch of the flood was handed over or dropped, exactly once. */
    CHECK_EQ((s.batches - f.base.batches) + (s.drops - f.base.drops), 2000);
    CHECK_EQ(s.drops - f.base.drops, 1996);
    fprintf(stderr,
            "  flood of 2000 batches x 64 blocks, owner holding 4: %llu dropped, "
            "RSS %ld -> %ld KiB\n",
            (unsigned long long)(s.drops - f.base.drops), rss0, rss1);
    CHECK(rss1 - rss0 < 64 * 1024); /* the 4 held batches are ~20 KiB; 2000 would be ~10 MiB */

    release_held(&f);
    f.o.n_log = 0;
    uint64_t after = publish_block(&f, 901, 0);
    size_t want = 2;
    CHECK(wait_for(&f, logged_at_least, &want, 10000));
    check_resync_before(&f, RM_KV_RESYNC_DROP, after);
    CHECK_MOVED(&f, MOVED(resyncs, 1));

    /* Stopping while the owner still holds items: they stay valid, and
     * handing them back after the stop frees them. */
    f.o.hold = 1;
    uint64_t l2 = publish_block(&f, 902, 16);
    CHECK(wait_for(&f, logged_seq, &l2, 10000));
    fx_stop(&f);
}

/* Garbage on the stream is counted and skipped; the stream goes on. */
static void test_malformed_skipped(void)
{
    fx f;
    fx_start(&f, NULL, 0);
    publish(&f, "{\"malformed\": \"msgpack\"}");
    publish(&f, "{\"malformed\": \"schema\"}");
    control(&f, "{\"malformed\": \"frames\"}");
    control(&f, "{\"malformed\": \"seq\"}");
    uint64_t u = publish(&f, "{\"malformed\": \"unknown_event\"}");
    uint64_t good = publish_block(&f, 1001, 0);
    CHECK(wait_for(&f, logged_seq, &good, 10000));
    REQUIRE(f.o.n_log == 2);
    CHECK_EQ(f.o.log[0].seq, u); /* its known event kept, the unknown one left out */
    CHECK_EQ(f.o.log[0].n_events, 1);
    CHECK_EQ(f.o.log[0].first_type, RM_KV_ALL_CLEARED);
    CHECK_EQ(f.o.log[1].seq, good);
    /* Skipped and counted; a bad batch is not a lost one. */
    CHECK_MOVED(&f, MOVED(malformed, 4), MOVED(unknown_events, 1), MOVED(gaps, 0),
                MOVED(resyncs, 0), MOVED(received, 6));
    fx_stop(&f);
}

static void test_bad_config(void)
{
    char err[256] = "";
    rm_kv_sub_config cfg = {.endpoint = "nonsense", .deliver = deliver};
    CHECK(rm_kv_sub_start(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "--worker-kv-events nonsense") != NULL);
    cfg.endpoint = "tcp://127.0.0.1:1";
    cfg.replay_endpoint = "bogus://x";
    CHECK(rm_kv_sub_start(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "--worker-kv-replay bogus://x") != NULL);
    cfg.deliver = NULL;
    CHECK(rm_kv_sub_start(&cfg, err, sizeof err) == NULL);
}

static const char *only;

#define RUN_IF(fn)                                                                                 \
    do {                                                                                           \
        if (!only || strstr(#fn, only))                                                            \
            RUN(fn);                                                                               \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s PYTHON3 FAKE_VLLM_PY [TEST-NAME-PART]\n", argv[0]);
        return 2;
    }
    python = argv[1];
    fake_py = argv[2];
    only = argc == 4 ? argv[3] : NULL;
    if (getenv("RM_TEST_SLOW"))
        slow = 10;
    if (getenv("RM_TEST_DEBUG"))
        rm_log_set_level(RM_LOG_DEBUG);
    RUN_IF(test_bad_config);
    RUN_IF(test_in_order_every_encoding);
    RUN_IF(test_lost_batch_replayed);
    RUN_IF(test_lost_last_batch_polled);
    RUN_IF(test_live_copy_of_polled_batch_skipped);
    RUN_IF(test_lost_batch_without_replay_resyncs);
    RUN_IF(test_restart_resyncs);
    RUN_IF(test_flood_drops_then_resync);
    RUN_IF(test_malformed_skipped);
    return rm_t_report();
}
