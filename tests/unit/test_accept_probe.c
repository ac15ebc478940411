/* Unit tests of accept_probe.c: the verdict of a run of looks, and the
 * probe against a real loopback listener that the test accepts on (or
 * not), with the clock passed in. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accept_probe.h"
#include "check.h"

static void test_accept_judge(void)
{
    unsigned misses = 0;
    CHECK(rm_accept_judge(RM_LOOK_WAITING, &misses, 3));
    CHECK(rm_accept_judge(RM_LOOK_WAITING, &misses, 3));
    CHECK(rm_accept_judge(RM_LOOK_UNKNOWN, &misses, 3)); /* changes nothing */
    CHECK_EQ(misses, 2);
    CHECK(!rm_accept_judge(RM_LOOK_WAITING, &misses, 3));
    CHECK(!rm_accept_judge(RM_LOOK_WAITING, &misses, 3)); /* stays stuck */
    CHECK(!rm_accept_judge(RM_LOOK_UNKNOWN, &misses, 3));
    CHECK(rm_accept_judge(RM_LOOK_ACCEPTED, &misses, 3)); /* one success clears it */
    CHECK_EQ(misses, 0);
}

/* A listener on 127.0.0.1 that nobody accepts on until the test does;
 * its port in *port. Non-blocking, so accept says EAGAIN when empty. */
static int listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 16) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Accepts one waiting connection (1), or finds none (0). The kernel has
 * the handshake done before connect's SYN-ACK, so a connection the probe
 * opened is in the queue; the poll bounds a slow loopback. */
static int accept_one(int l, int *fd_out)
{
    for (int i = 0; i < 2000; i++) {
        int fd = accept(l, NULL, NULL);
        if (fd >= 0) {
            *fd_out = fd;
            return 1;
        }
        if (errno != EAGAIN)
            return 0;
        usleep(1000); /* a poll step, bounded by the count */
    }
    return 0;
}

/* A listener that accepts late (a starved gRPC) is not stuck: the probe
 * keeps looking at its one connection, which is taken in the end. */
static void test_slow_listener_counts_as_accepting(void)
{
    int port, l = listener(&port);
    char listen_at[64];
    snprintf(listen_at, sizeof listen_at, "127.0.0.1:%d", port);
    rm_accept_probe *p = rm_accept_probe_create(listen_at, port, 1000, 3, "test");
    REQUIRE(p != NULL);
    CHECK(rm_accept_probe_tick(p, 1000)); /* opens the probe connection */
    CHECK(rm_accept_probe_tick(p, 2000)); /* waiting: 1 miss */
    CHECK(rm_accept_probe_tick(p, 3000)); /* waiting: 2 misses */
    CHECK(rm_accept_probe_tick(p, 3500)); /* inside an interval: no look */
    int a = -1, b = -1;
    CHECK(accept_one(l, &a));              /* taken late */
    CHECK(!accept_one(l, &b));             /* and no second probe was opened meanwhile */
    CHECK(rm_accept_probe_tick(p, 4000));  /* accepted: the misses are cleared */
    CHECK(rm_accept_probe_tick(p, 5000));  /* a new probe, waiting: 1 miss */
    CHECK(rm_accept_probe_tick(p, 6000));  /* 2 */
    CHECK(!rm_accept_probe_tick(p, 7000)); /* 3: nobody took it, stuck */
    CHECK(accept_one(l, &b));
    CHECK(rm_accept_probe_tick(p, 8000)); /* taken: accepting again */
    rm_accept_probe_destroy(p);
    close(a);
    close(b);
    close(l);
}

int main(void)
{
    RUN(test_accept_judge);
    RUN(test_slow_listener_counts_as_accepting);
    return rm_t_report();
}
