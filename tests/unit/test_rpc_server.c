/* Unit tests for common/rpc_server.c: cross-thread posting (work posted
 * from other threads runs on the server thread, in each poster's order,
 * exactly once, and posting fails cleanly once the server is gone); client
 * calls refused, not aborted, once the queue shuts down; loop stalls
 * measured and told to the replies they delayed. */
#include <arpa/inet.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "rpc_server.h"
#include "util.h"

#define POSTERS 4
#define PER     5000

static pthread_t server_thread;
static uint64_t ran, wrong_thread, out_of_order;
static uint64_t last_seen[POSTERS];

typedef struct item {
    int poster;
    uint64_t seq;
} item;

static void run_item(void *arg)
{
    item *it = arg;
    wrong_thread += !pthread_equal(pthread_self(), server_thread);
    out_of_order += it->seq != last_seen[it->poster] + 1;
    last_seen[it->poster] = it->seq;
    ran++;
    free(it);
}

static void ask_stop(void *arg)
{
    rm_rpc_server_request_shutdown(arg);
}

typedef struct poster_arg {
    rm_rpc_server *srv;
    int id;
    int failures;
} poster_arg;

static void *poster(void *p)
{
    poster_arg *a = p;
    for (uint64_t i = 1; i <= PER; i++) {
        item *it = rm_xmalloc(sizeof *it);
        *it = (item){a->id, i};
        if (rm_rpc_server_post(a->srv, run_item, it) != 0) {
            free(it);
            a->failures++;
        }
    }
    return NULL;
}

static void *serve(void *p)
{
    /* A long tick proves the posts, not the tick, wake the queue. */
    rm_rpc_server_run(p, 60000, NULL, NULL, 1000);
    return NULL;
}

static void test_post_runs_on_server_thread_in_order(void)
{
    rm_rpc_server *srv = rm_rpc_server_create(NULL);
    REQUIRE(rm_rpc_server_listen(srv, "127.0.0.1:0", NULL) > 0);
    REQUIRE(pthread_create(&server_thread, NULL, serve, srv) == 0);
    pthread_t th[POSTERS];
    poster_arg args[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        args[i] = (poster_arg){srv, i, 0};
        pthread_create(&th[i], NULL, poster, &args[i]);
    }
    for (int i = 0; i < POSTERS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(args[i].failures, 0);
    }
    /* The shutdown request is itself posted, after everything else, and
     * the 60 s tick never fires: the posts alone must wake the queue. */
    uint64_t t0 = rm_now_ms();
    item *it = rm_xmalloc(sizeof *it);
    *it = (item){0, PER + 1};
    CHECK_EQ(rm_rpc_server_post(srv, run_item, it), 0);
    CHECK_EQ(rm_rpc_server_post(srv, ask_stop, srv), 0);
    pthread_join(server_thread, NULL);
    CHECK(rm_now_ms() - t0 < 30000);
    CHECK_EQ(ran, (uint64_t)POSTERS * PER + 1);
    CHECK_EQ(wrong_thread, 0);
    CHECK_EQ(out_of_order, 0);
    for (int i = 1; i < POSTERS; i++)
        CHECK_EQ(last_seen[i], PER);
    /* The queue is shut down: posting fails and leaves arg to the caller. */
    int dummy = 0;
    CHECK_EQ(rm_rpc_server_post(srv, ask_stop, &dummy), -1);
    CHECK_EQ(last_seen[0], PER + 1);
    rm_rpc_server_destroy(srv);
}

/* A peer that never answers: the kernel completes TCP connections to the
 * listening socket, nobody reads them, so a call ends only at its
 * deadline. Returns the fd; *port is the bound port. */
static int silent_peer(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    REQUIRE(listen(fd, 16) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A server (not started) and a channel to a silent peer, for client
 * calls that end only at their deadline. */
typedef struct rig {
    rm_rpc_server *srv;
    grpc_channel *ch;
    void *method;
    int fd;
} rig;

static void rig_open(rig *g)
{
    int port;
    g->fd = silent_peer(&port);
    g->srv = rm_rpc_server_create(NULL);
    REQUIRE(rm_rpc_server_listen(g->srv, "127.0.0.1:0", NULL) > 0);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    g->ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    g->method = grpc_channel_register_call(g->ch, "/test.Silent/Call", NULL, NULL);
}

static void rig_close(rig *g)
{
    rm_rpc_server_destroy(g->srv);
    grpc_channel_destroy(g->ch);
    close(g->fd);
}

/* Starts a call with an empty message on the rig; returns as
 * rm_rpc_server_client_call. */
static int rig_call(rig *g, int timeout_ms, rm_rpc_reply_fn cb, void *ctx)
{
    grpc_slice empty = grpc_empty_slice();
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&empty, 1);
    int rc = rm_rpc_server_client_call(g->srv, g->ch, g->method, bb, timeout_ms, cb, ctx);
    grpc_byte_buffer_destroy(bb);
    return rc;
}

typedef struct late {
    rig g;
    grpc_status_code st; /* of the last reply */
    int started, replies, closed_at_reply, refused, late_replies;
} late;

static void on_late_reply(void *ctx, grpc_status_code st, grpc_byte_buffer *reply,
                          const char *details)
{
    late *l = ctx;
    (void)st, (void)reply, (void)details;
    l->late_replies++;
}

static void never_runs(void *arg)
{
    (void)arg;
}

/* A reply that arrives while the queue drains and starts one more call, as
 * a router's retry or a gateway record does. */
static void on_first_reply(void *ctx, grpc_status_code st, grpc_byte_buffer *reply,
                           const char *details)
{
    late *l = ctx;
    (void)reply, (void)details;
    l->replies++;
    l->st = st;
    /* Posting fails exactly when the queue has shut down. */
    l->closed_at_reply = rm_rpc_server_post(l->g.srv, never_runs, NULL) != 0;
    if (rig_call(&l->g, 1000, on_late_reply, l) != 0)
        l->refused++;
}

/* First tick: one call to the silent peer, then shut down at once. The
 * server has no calls of its own, so its queue shuts down long before the
 * call's deadline. */
static int late_tick(void *ctx, uint64_t now)
{
    late *l = ctx;
    (void)now;
    if (!l->started) {
        l->started = 1;
        REQUIRE(rig_call(&l->g, 3000, on_first_reply, l) == 0);
    }
    return 1;
}

static void test_client_call_refused_once_queue_shut_down(void)
{
    late l = {0};
    rig_open(&l.g);
    /* Before the fix gRPC aborted here (grpc_cq_begin_op assertion). */
    rm_rpc_server_run(l.g.srv, 10, late_tick, &l, 1000);
    CHECK_EQ(l.replies, 1);
    CHECK_EQ(l.st, GRPC_STATUS_DEADLINE_EXCEEDED);
    CHECK_EQ(l.closed_at_reply, 1); /* the case under test did happen */
    CHECK_EQ(l.refused, 1);
    CHECK_EQ(l.late_replies, 0); /* a refused call never calls back */
    rig_close(&l.g);
}

typedef struct stall {
    rig g;
    int phase;
    int a_stalled, b_stalled, b_stall_seen;
    uint64_t b_stalls_at_start;
    grpc_status_code a_st;
} stall;

static void on_b(void *ctx, grpc_status_code st, grpc_byte_buffer *reply, const char *details)
{
    stall *x = ctx;
    (void)st, (void)reply, (void)details;
    uint64_t n, ms;
    rm_rpc_server_stall_stats(x->g.srv, &n, &ms);
    x->b_stalled = rm_rpc_server_reply_stalled(x->g.srv);
    x->b_stall_seen = n != x->b_stalls_at_start;
    x->phase = 3;
}

static void on_a(void *ctx, grpc_status_code st, grpc_byte_buffer *reply, const char *details)
{
    stall *x = ctx;
    (void)reply, (void)details;
    x->a_st = st;
    x->a_stalled = rm_rpc_server_reply_stalled(x->g.srv);
    uint64_t ms;
    rm_rpc_server_stall_stats(x->g.srv, &x->b_stalls_at_start, &ms);
    REQUIRE(rig_call(&x->g, 200, on_b, x) == 0);
    x->phase = 2;
}

static int stall_tick(void *ctx, uint64_t now)
{
    stall *x = ctx;
    (void)now;
    if (x->phase == 0) {
        REQUIRE(rig_call(&x->g, 1500, on_a, x) == 0);
        x->phase = 1;
        /* The stall under test: a handler that blocks the server thread
         * (as a stopped or starved process would) while the call is out. */
        usleep(400 * 1000);
    }
    return x->phase == 3;
}

static void test_stall_is_measured_and_told_to_replies(void)
{
    stall x = {0};
    rig_open(&x.g);
    rm_rpc_server_run(x.g.srv, 10, stall_tick, &x, 1000);
    uint64_t n, ms;
    rm_rpc_server_stall_stats(x.g.srv, &n, &ms);
    CHECK(n >= 1);
    CHECK(ms >= 400 - 10 - RM_RPC_STALL_MS); /* the block, less the expected tick */
    CHECK_EQ(x.a_st, GRPC_STATUS_DEADLINE_EXCEEDED);
    CHECK_EQ(x.a_stalled, 1);
    /* A call made after the stall is told of one only if another came. */
    CHECK_EQ(x.b_stalled, x.b_stall_seen);
    char *m = rm_rpc_server_metrics(x.g.srv, "t=\"1\"");
    CHECK(strstr(m, "radixmesh_loop_stalls_total{t=\"1\"} ") != NULL);
    free(m);
    rig_close(&x.g);
}

int main(void)
{
    grpc_init();
    RUN(test_post_runs_on_server_thread_in_order);
    RUN(test_client_call_refused_once_queue_shut_down);
    RUN(test_stall_is_measured_and_told_to_replies);
    grpc_shutdown();
    return rm_t_report();
}
