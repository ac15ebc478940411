/* Unit tests of fdbudget.c: each listener's share of the file-descriptor
 * limit; and the accept hold (http_conn.h) that keeps a listener in it. */
#include <string.h>

#include "check.h"
#include "fdbudget.h"
#include "http_conn.h"

static void test_fd_plan_shares(void)
{
    rm_fd_plan p;
    char err[256];
    /* Plenty: every listener gets what it asked for. */
    CHECK_EQ(rm_fd_plan_make(1u << 20, 256, 4096, &p, err, sizeof err), 0);
    CHECK_EQ(p.http_max, 256);
    CHECK_EQ(p.gateway_max, 4096);
    CHECK_EQ(p.reserved, RM_FD_BASE + (1u << 18));
    /* The common 1024: the caps shrink, the reserve stays. */
    CHECK_EQ(rm_fd_plan_make(1024, 256, 4096, &p, err, sizeof err), 0);
    CHECK_EQ(p.reserved, RM_FD_BASE + 256);
    CHECK_EQ(p.http_max, (1024 - 320) / 4);
    CHECK_EQ(p.gateway_max, (1024 - 320 - 176 - RM_FD_GATEWAY_FIXED) / 2);
    CHECK(p.reserved + p.http_max + 2 * p.gateway_max + RM_FD_GATEWAY_FIXED <= p.limit);
    /* A node (no gateway): --http takes what is left. */
    CHECK_EQ(rm_fd_plan_make(256, 256, 0, &p, err, sizeof err), 0);
    CHECK_EQ(p.http_max, 256 - RM_FD_BASE - 64);
    CHECK_EQ(p.gateway_max, 0);
    /* Listeners that are off get nothing and need nothing. */
    CHECK_EQ(rm_fd_plan_make(100, 0, 0, &p, err, sizeof err), 0);
    CHECK_EQ(p.http_max + p.gateway_max, 0);
    /* Too low a limit for a listener that is on: refused, named. */
    CHECK_EQ(rm_fd_plan_make(128, 256, 0, &p, err, sizeof err), -1);
    CHECK(strstr(err, "--http") != NULL);
    CHECK_EQ(rm_fd_plan_make(256, 10, 100, &p, err, sizeof err), -1);
    CHECK(strstr(err, "gateway") != NULL);
}

static void test_accept_hold(void)
{
    int held = 0;
    /* Under the cap, and past it while refusals fit: accepted. */
    CHECK_EQ(rm_hconn_hold(&held, 0, 16, RM_HCONN_MAX_REFUSING), 0);
    CHECK_EQ(rm_hconn_hold(&held, 16 + RM_HCONN_MAX_REFUSING - 1, 16, RM_HCONN_MAX_REFUSING), 0);
    CHECK_EQ(held, 0);
    /* Every descriptor the cap and the refusals may hold in use: held. */
    CHECK_EQ(rm_hconn_hold(&held, 16 + RM_HCONN_MAX_REFUSING, 16, RM_HCONN_MAX_REFUSING), 1);
    CHECK_EQ(held, 1);
    CHECK_EQ(rm_hconn_hold(&held, 1000, 16, RM_HCONN_MAX_REFUSING), 1);
}

int main(void)
{
    RUN(test_fd_plan_shares);
    RUN(test_accept_hold);
    return rm_t_report();
}
