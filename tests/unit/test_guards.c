/* Unit tests of the daemons' guard rules: the file-descriptor budget, the
 * accept probe's verdict, bearer tokens (scheme in any case, whole-line
 * token files), and a reload keeping a string flag that points at its own
 * store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accept_probe.h"
#include "bearer.h"
#include "check.h"
#include "fdbudget.h"
#include "flags.h"
#include "http.h"

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

static void test_bearer_matching(void)
{
    const char *t = "s3cret";
    CHECK(rm_bearer_matches(t, "Bearer s3cret", 13));
    CHECK(rm_bearer_matches(t, "bearer s3cret", 13));
    CHECK(rm_bearer_matches(t, "BEARER   s3cret", 15));
    CHECK(!rm_bearer_matches(t, "Bearer s3cre", 12));
    CHECK(!rm_bearer_matches(t, "Bearer s3cretX", 14));
    CHECK(!rm_bearer_matches(t, "Basic s3cret", 12));
    CHECK(!rm_bearer_matches(t, "s3cret", 6));
    CHECK(!rm_bearer_matches(t, "Bearer", 6));
    CHECK(!rm_bearer_matches(t, "Bearers3cret", 12));
    CHECK(rm_bearer_in_headers(t, "Host: x\r\nauthorization:  bearer s3cret \r\nA: b\r\n"));
    CHECK(rm_bearer_in_headers(t, "Authorization: Basic x\r\nAuthorization: Bearer s3cret\r\n"));
    CHECK(!rm_bearer_in_headers(t, "X-Authorization: Bearer s3cret\r\n"));
    CHECK(!rm_bearer_in_headers(t, "Host: x\r\n"));
    CHECK(!rm_bearer_in_headers(t, NULL));
}

static void test_token_file_whole_line(void)
{
    char path[] = "/tmp/rm-token-XXXXXX", err[256];
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    size_t n = 5000; /* a long JWT */
    char *tok = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        tok[i] = "abcdefghijklmnopqrstuvwxyz0123456789-_."[i % 39];
    tok[n] = '\0';
    FILE *f = fdopen(fd, "w");
    fprintf(f, "  %s \r\nsecond line\n", tok);
    fclose(f);
    char *got = rm_read_token_file(path, err, sizeof err);
    CHECK(got && strlen(got) == n && !strcmp(got, tok));
    free(got);
    f = fopen(path, "w");
    fprintf(f, "bad\x01token\n");
    fclose(f);
    CHECK(rm_read_token_file(path, err, sizeof err) == NULL);
    CHECK(strstr(err, "printable") != NULL);
    f = fopen(path, "w");
    fclose(f);
    CHECK(rm_read_token_file(path, err, sizeof err) == NULL);
    CHECK(strstr(err, "empty") != NULL);
    unlink(path);
    free(tok);
}

static void test_keep_str_survives_its_own_store(void)
{
    const char *level = "debug";
    const rm_flag flags[] = {{"log-level", RM_FLAG_STR, &level, "", 0, 0}};
    rm_flagset live = {"t", "", "T", flags, 1}, next;
    char store[16];
    /* Reload 1: the value comes from the file's block. */
    rm_flags_scratch(&live, &next);
    *(const char **)rm_flags_value(&next, "log-level") = "warn";
    CHECK_EQ(rm_flags_keep_str(&live, &next, "log-level", store, sizeof store), 0);
    rm_flags_scratch_free(&next);
    CHECK(level == store && !strcmp(level, "warn"));
    /* Reloads 2 and 3 of a file without log-level: next points at store. */
    for (int i = 0; i < 3; i++) {
        rm_flags_scratch(&live, &next);
        CHECK(*(const char **)rm_flags_value(&next, "log-level") == store);
        CHECK_EQ(rm_flags_keep_str(&live, &next, "log-level", store, sizeof store), 0);
        rm_flags_scratch_free(&next);
        CHECK(!strcmp(level, "warn"));
    }
    rm_flags_scratch(&live, &next);
    *(const char **)rm_flags_value(&next, "log-level") = "a-value-longer-than-the-store";
    CHECK_EQ(rm_flags_keep_str(&live, &next, "log-level", store, sizeof store), -1);
    rm_flags_scratch_free(&next);
    CHECK(!strcmp(level, "warn"));
}

static void test_reason_phrases(void)
{
    CHECK(!strcmp(rm_http_reason(200), "OK"));
    CHECK(!strcmp(rm_http_reason(401), "Unauthorized"));
    CHECK(!strcmp(rm_http_reason(431), "Request Header Fields Too Large"));
    CHECK(!strcmp(rm_http_reason(501), "Not Implemented"));
    CHECK(!strcmp(rm_http_reason(599), "Unknown"));
}

int main(void)
{
    RUN(test_fd_plan_shares);
    RUN(test_accept_judge);
    RUN(test_bearer_matching);
    RUN(test_token_file_whole_line);
    RUN(test_keep_str_survives_its_own_store);
    RUN(test_reason_phrases);
    return rm_t_report();
}
