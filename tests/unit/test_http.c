/* Unit tests of http.c: the reason phrases, and the server's figures as
 * Prometheus text. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "http.h"

static void test_reason_phrases(void)
{
    CHECK(!strcmp(rm_http_reason(200), "OK"));
    CHECK(!strcmp(rm_http_reason(401), "Unauthorized"));
    CHECK(!strcmp(rm_http_reason(431), "Request Header Fields Too Large"));
    CHECK(!strcmp(rm_http_reason(501), "Not Implemented"));
    CHECK(!strcmp(rm_http_reason(599), "Unknown"));
}

static void test_metrics_text(void)
{
    char *none = rm_http_metrics(NULL, "node=\"a\"");
    CHECK(none && !strcmp(none, ""));
    free(none);
    rm_http_config cfg;
    rm_http_config_defaults(&cfg);
    char err[256];
    int port;
    rm_http_server *s = rm_http_start("127.0.0.1:0", &cfg, NULL, NULL, &port, err, sizeof err);
    REQUIRE(s);
    char *m = rm_http_metrics(s, "node=\"a\"");
    CHECK(strstr(m, "# HELP radixmesh_http_connections Open --http connections.\n"
                    "# TYPE radixmesh_http_connections gauge\n"
                    "radixmesh_http_connections{node=\"a\"} 0\n") != NULL);
    CHECK(strstr(m, "# TYPE radixmesh_http_timeouts_total counter\n"
                    "radixmesh_http_timeouts_total{node=\"a\"} 0\n") != NULL);
    int families = 0;
    for (const char *p = m; (p = strstr(p, "# TYPE ")); p++)
        families++;
    CHECK_EQ(families, 5);
    free(m);
    rm_http_stop(s);
}

int main(void)
{
    RUN(test_reason_phrases);
    RUN(test_metrics_text);
    return rm_t_report();
}
