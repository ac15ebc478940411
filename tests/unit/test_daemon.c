/* Unit tests of daemon.c: the SIGTERM sequence, and one flag table of a
 * daemon's own flags with the shared ones (--listen first, the daemon's
 * texts replacing shared ones, values checked). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "daemon.h"

static void test_sigterm_phases(void)
{
    /* No SIGTERM: serving, whatever the clock says. */
    CHECK_EQ(rm_daemon_phase_at(0, 5000, 1000, 10000), RM_DAEMON_SERVING);
    /* NOT_SERVING for the whole delay, then draining, then over. */
    CHECK_EQ(rm_daemon_phase_at(100, 100, 1000, 10000), RM_DAEMON_NOT_SERVING);
    CHECK_EQ(rm_daemon_phase_at(100, 1099, 1000, 10000), RM_DAEMON_NOT_SERVING);
    CHECK_EQ(rm_daemon_phase_at(100, 1100, 1000, 10000), RM_DAEMON_DRAINING);
    CHECK_EQ(rm_daemon_phase_at(100, 11099, 1000, 10000), RM_DAEMON_DRAINING);
    CHECK_EQ(rm_daemon_phase_at(100, 11100, 1000, 10000), RM_DAEMON_DRAIN_OVER);
    /* --shutdown-delay-ms 0: draining at once; no drain time: over at once. */
    CHECK_EQ(rm_daemon_phase_at(100, 100, 0, 10000), RM_DAEMON_DRAINING);
    CHECK_EQ(rm_daemon_phase_at(100, 100, 0, 0), RM_DAEMON_DRAIN_OVER);
    /* The largest flag values do not overflow the deadline. */
    CHECK_EQ(rm_daemon_phase_at(1, UINT32_MAX, UINT32_MAX, UINT32_MAX), RM_DAEMON_NOT_SERVING);
    CHECK_EQ(rm_daemon_phase_at(1, (uint64_t)UINT32_MAX * 2, UINT32_MAX, UINT32_MAX),
             RM_DAEMON_DRAINING);
}

static void test_one_table_of_own_and_shared_flags(void)
{
    uint32_t own = 5;
    const rm_flag flags[] = {{"own", RM_FLAG_AT(&own), "a flag of the daemon's own", 1, 10}};
    static const rm_daemon_help help[] = {{"http", "serve the daemon's pages on HOST:PORT"},
                                          {NULL, NULL}};
    static const rm_daemon_spec spec = {"test", "[options]", "127.0.0.1:7009", help};
    char *argv[] = {"t",
                    "--own",
                    "7",
                    "--shutdown-delay-ms=3",
                    "--listen",
                    "10.1.2.3:0",
                    "--max-concurrent-streams",
                    "4",
                    NULL};
    rm_daemon d;
    rm_daemon_init(&d, &spec, flags, 1, 8, argv);
    CHECK_EQ(own, 7);
    CHECK_EQ(d.o.shutdown_delay_ms, 3);
    CHECK_EQ(d.o.drain_timeout_ms, 10000); /* defaults stay */
    CHECK_EQ(d.o.max_streams, 4);
    CHECK(!strcmp(d.host, "10.1.2.3"));
    CHECK(!strcmp(d.o.log_level, "info"));
    CHECK(!strcmp(d.fs.prog, "radixmesh-test"));
    CHECK(d.o.http == NULL && d.o.config == NULL && d.o.token_file == NULL);
    CHECK_EQ(d.o.http_cfg.max_connections, 256);
    REQUIRE(d.fs.nflags > 2);
    CHECK(!strcmp(d.fs.flags[0].name, "listen"));
    CHECK(!strcmp(d.fs.flags[1].name, "own"));
    const rm_flag *http = NULL;
    for (int i = 0; i < d.fs.nflags; i++)
        if (!strcmp(d.fs.flags[i].name, "http"))
            http = &d.fs.flags[i];
    CHECK(http && !strcmp(http->help, "serve the daemon's pages on HOST:PORT"));
    CHECK(rm_flags_value(&d.fs, "tls-ca") == &d.o.tls_ca);
    CHECK(rm_flags_value(&d.fs, "http-idle-timeout-ms") == &d.o.http_cfg.idle_timeout_ms);
    /* A daemon's exit frees these; the test never starts one. */
    rm_flags_scratch_free(&d.defaults);
    rm_flags_scratch_free(&d.started);
    free(d.flags);
}

/* What a reload may raise --max-request-tokens to: the tokens that fit
 * the server's message limit at 5 bytes each beside its reserve -- for
 * the daemons, whose limit is tokens x 5 + reserve, the start's value (a
 * WriteKV of that many tokens keeps its 8 MiB of KV room); one more is
 * refused with a message naming both numbers. */
static void test_request_tokens_within_the_message_limit(void)
{
    CHECK_EQ(rm_daemon_tokens_fitting(0, 64), 0);
    CHECK_EQ(rm_daemon_tokens_fitting(64, 64), 0);
    CHECK_EQ(rm_daemon_tokens_fitting(64 + 9, 64), 1);
    /* The node's limit for --max-request-tokens 1000: 1000 * 5 + 8 MiB. */
    uint64_t node_limit = 1000 * 5 + (8u << 20);
    CHECK_EQ(rm_daemon_tokens_fitting(node_limit, 8u << 20), 1000);
    rm_daemon d;
    memset(&d, 0, sizeof d);
    d.max_receive_bytes = node_limit;
    d.reserve = 8u << 20;
    char err[256] = "";
    uint64_t fit = rm_daemon_tokens_fitting(node_limit, d.reserve);
    CHECK_EQ(rm_daemon_check_request_tokens(&d, fit, err, sizeof err), 0);
    CHECK_EQ(rm_daemon_check_request_tokens(&d, fit + 1, err, sizeof err), -1);
    char want[256];
    snprintf(want, sizeof want,
             "--max-request-tokens %llu: gRPC's message limit, set at start, holds requests of "
             "%llu tokens at most; a higher limit needs a restart",
             (unsigned long long)fit + 1, (unsigned long long)fit);
    CHECK(!strcmp(err, want));
}

int main(void)
{
    RUN(test_request_tokens_within_the_message_limit);
    RUN(test_sigterm_phases);
    RUN(test_one_table_of_own_and_shared_flags);
    return rm_t_report();
}
