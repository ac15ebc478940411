/* Unit tests of bearer.c: the scheme in any case, the token compared
 * exactly, whole-line token files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bearer.h"
#include "check.h"

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

int main(void)
{
    RUN(test_bearer_matching);
    RUN(test_token_file_whole_line);
    return rm_t_report();
}
