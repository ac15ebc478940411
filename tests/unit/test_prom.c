/* Unit tests for common/prom.c: exposition lines and label escaping. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "prom.h"

static void test_family_and_samples(void)
{
    rm_sbuf b = {0};
    rm_prom_family(&b, "x_total", "counter", "Things.");
    rm_prom_sample(&b, "x_total", "node=\"n1\"", 9007199254740992.0);
    rm_prom_sample(&b, "x_total", "", 0.5);
    rm_prom_metric(&b, "y", "gauge", "Y.", NULL, -1);
    CHECK(!strcmp(b.p, "# HELP x_total Things.\n# TYPE x_total counter\n"
                       "x_total{node=\"n1\"} 9007199254740992\nx_total 0.5\n"
                       "# HELP y Y.\n# TYPE y gauge\ny -1\n"));
    free(b.p);
}

static void test_labels_escaped_and_joined(void)
{
    char l[64] = "";
    CHECK(rm_prom_label(l, sizeof l, "node", "a\"b\\c\nd") == 0);
    CHECK(rm_prom_label(l, sizeof l, "role", "router") == 0);
    CHECK(!strcmp(l, "node=\"a\\\"b\\\\c\\nd\",role=\"router\""));
}

static void test_label_that_does_not_fit_leaves_out_unchanged(void)
{
    char l[16] = "";
    CHECK(rm_prom_label(l, sizeof l, "k", "1234567890") == 0); /* k="1234567890" = 14 + NUL */
    CHECK(!strcmp(l, "k=\"1234567890\""));
    CHECK(rm_prom_label(l, sizeof l, "j", "x") == -1);
    CHECK(!strcmp(l, "k=\"1234567890\""));
    char m[14] = "";
    CHECK(rm_prom_label(m, sizeof m, "k", "1234567890") == -1);
    CHECK(m[0] == '\0');
    char e[6] = "";
    CHECK(rm_prom_label(e, sizeof e, "k", "") == 0); /* k="" = 4 + NUL */
    CHECK(rm_prom_label(e, sizeof e, "k", "") == -1);
    CHECK(!strcmp(e, "k=\"\""));
}

int main(void)
{
    RUN(test_family_and_samples);
    RUN(test_labels_escaped_and_joined);
    RUN(test_label_that_does_not_fit_leaves_out_unchanged);
    return rm_t_report();
}
