/* Unit tests of signals.c: with the requests blocked, a signal sent to the
 * process waits for rm_signals_take, however many other threads there are,
 * and the descriptor says when one is there. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "check.h"
#include "signals.h"

static int fd; /* rm_signals_fd's, for the whole run */

static int readable(int fd_)
{
    struct pollfd p = {fd_, POLLIN, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* Waits (bounded) until the kernel marks a signal pending: kill() on one's
 * own process makes it pending before it returns, so this does not loop in
 * practice; the bound keeps a broken kernel assumption from hanging. */
static int wait_readable(int fd_)
{
    struct pollfd p = {fd_, POLLIN, 0};
    return poll(&p, 1, 10000) == 1 && (p.revents & POLLIN);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int release_sleepers;

/* Stands for gRPC's idle pool: threads parked for as long as the test
 * lasts, which must not swallow the process's signals. */
static void *sleeper(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    while (!release_sleepers)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void test_nothing_pending(void)
{
    CHECK_EQ(rm_signals_take(), 0);
    CHECK(!readable(fd));
}

static void test_sigpipe_ignored(void)
{
    struct sigaction sa;
    CHECK_EQ(sigaction(SIGPIPE, NULL, &sa), 0);
    CHECK(sa.sa_handler == SIG_IGN);
}

static void test_taken_by_the_owner_while_other_threads_sleep(void)
{
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        REQUIRE(pthread_create(&th[i], NULL, sleeper, NULL) == 0);
    CHECK_EQ(kill(getpid(), SIGTERM), 0); /* to the process: any thread could get it */
    CHECK(wait_readable(fd));
    CHECK_EQ(rm_signals_take(), RM_SIG_TERM);
    CHECK_EQ(rm_signals_take(), 0); /* taken once */
    CHECK(!readable(fd));
    pthread_mutex_lock(&mu);
    release_sleepers = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
}

static void test_each_kind_reported(void)
{
    CHECK_EQ(kill(getpid(), SIGHUP), 0);
    CHECK_EQ(kill(getpid(), SIGINT), 0);
    CHECK_EQ(kill(getpid(), SIGTERM), 0);
    CHECK_EQ(kill(getpid(), SIGTERM), 0); /* two of a kind count once */
    CHECK(wait_readable(fd));
    CHECK_EQ(rm_signals_take(), RM_SIG_HUP | RM_SIG_INT | RM_SIG_TERM);
    CHECK_EQ(rm_signals_take(), 0);
    CHECK(!readable(fd));
}

int main(void)
{
    REQUIRE(rm_signals_block() == 0); /* before the first thread, as a daemon does */
    fd = rm_signals_fd();
    REQUIRE(fd >= 0);
    RUN(test_sigpipe_ignored);
    RUN(test_nothing_pending);
    RUN(test_taken_by_the_owner_while_other_threads_sleep);
    RUN(test_each_kind_reported);
    close(fd);
    return rm_t_report();
}
