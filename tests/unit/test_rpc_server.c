/* Unit tests for common/rpc_server.c's cross-thread posting: work posted
 * from other threads runs on the server thread, in each poster's order,
 * exactly once, and posting fails cleanly once the server is gone. */
#include <grpc/grpc.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

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

int main(void)
{
    grpc_init();
    RUN(test_post_runs_on_server_thread_in_order);
    grpc_shutdown();
    return rm_t_report();
}
