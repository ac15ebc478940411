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

static void test_rows_each_a_family_with_the_labels(void)
{
    const rm_prom_row rows[] = {{"a_total", "counter", "A.", 3}, {"b", "gauge", "B.", 0.25}};
    rm_sbuf b = {0};
    rm_prom_rows(&b, rows, 2, "node=\"n1\"");
    CHECK(!strcmp(b.p, "# HELP a_total A.\n# TYPE a_total counter\na_total{node=\"n1\"} 3\n"
                       "# HELP b B.\n# TYPE b gauge\nb{node=\"n1\"} 0.25\n"));
    free(b.p);
}

static void test_split_family_adds_one_label_per_sample(void)
{
    const char *keys[] = {"free", "a\"b"};
    const double v[] = {3, 0.5};
    rm_sbuf b = {0};
    rm_prom_split(&b, "p", "gauge", "P.", "node=\"n1\"", "state", keys, v, 2);
    rm_prom_sample_by(&b, "q", NULL, "k", "v", 1);
    CHECK(!strcmp(b.p, "# HELP p P.\n# TYPE p gauge\np{node=\"n1\",state=\"free\"} 3\n"
                       "p{node=\"n1\",state=\"a\\\"b\"} 0.5\nq{k=\"v\"} 1\n"));
    free(b.p);
}

static void test_build_info_names_role_and_version(void)
{
    rm_sbuf b = {0};
    rm_prom_build_info(&b, "node=\"n1\"", "node");
    CHECK(!strcmp(b.p, "# HELP radixmesh_build_info Build information.\n"
                       "# TYPE radixmesh_build_info gauge\n"
                       "radixmesh_build_info{node=\"n1\",role=\"node\",version=\"" RM_VERSION
                       "\"} 1\n"));
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

static void test_read_lines_and_labels(void)
{
    const char *l1 = "vllm:cache_config_info{block_size=\"16\",note=\"a }\\\" b\",num_gpu_blocks="
                     "\"1024\"} 1.0";
    rm_prom_line l;
    CHECK_EQ(rm_prom_parse_line(l1, l1 + strlen(l1), &l), 0);
    CHECK_EQ(l.name_len, strlen("vllm:cache_config_info"));
    CHECK(!memcmp(l.name, "vllm:cache_config_info", l.name_len));
    CHECK(l.value == 1.0);
    char v[32];
    CHECK_EQ(rm_prom_label_get(l.labels, l.labels_len, "block_size", v, sizeof v), 0);
    CHECK(!strcmp(v, "16"));
    CHECK_EQ(rm_prom_label_get(l.labels, l.labels_len, "num_gpu_blocks", v, sizeof v), 0);
    CHECK(!strcmp(v, "1024"));
    CHECK_EQ(rm_prom_label_get(l.labels, l.labels_len, "note", v, sizeof v), 0);
    CHECK(!strcmp(v, "a }\" b"));
    CHECK_EQ(rm_prom_label_get(l.labels, l.labels_len, "note", v, 4), -1); /* does not fit */
    CHECK_EQ(rm_prom_label_get(l.labels, l.labels_len, "block", v, sizeof v), -1);
    const char *l2 = "process_start_time_seconds 1.7e9 1234";
    CHECK_EQ(rm_prom_parse_line(l2, l2 + strlen(l2), &l), 0);
    CHECK(l.value == 1.7e9);
    CHECK_EQ(l.labels_len, 0);
    const char *bad[] = {"# HELP x y", "", "x{a=\"1\" 2", "x", "x{} abc", "{a=\"b\"} 1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ(rm_prom_parse_line(bad[i], bad[i] + strlen(bad[i]), &l), -1);
    CHECK_EQ(rm_prom_label_get("a=1", 3, "a", v, sizeof v), -1);
    CHECK_EQ(rm_prom_label_get("a=\"1", 4, "a", v, sizeof v), -1);
}

int main(void)
{
    RUN(test_family_and_samples);
    RUN(test_rows_each_a_family_with_the_labels);
    RUN(test_split_family_adds_one_label_per_sample);
    RUN(test_build_info_names_role_and_version);
    RUN(test_labels_escaped_and_joined);
    RUN(test_label_that_does_not_fit_leaves_out_unchanged);
    RUN(test_read_lines_and_labels);
    return rm_t_report();
}
