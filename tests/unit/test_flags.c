/* Unit tests of flags.c: RM_FLAG_AT's type for each field type, integer
 * flags of each width (range checks, the field next to one untouched),
 * reloads of them, a reload keeping a string
 * flag that points at its own store, and a choice flag's index and error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "flags.h"

/* A config struct as the daemons have them: flags point at its fields. */
typedef struct widths {
    uint32_t a, b; /* b: a neighbour that a wider store would clobber */
    size_t sz;
    uint64_t big;
} widths;

static int parse(const rm_flagset *fs, const char *a1, const char *a2, char *err, size_t errlen)
{
    char *argv[] = {"t", (char *)a1, (char *)a2, NULL};
    err[0] = '\0';
    return rm_flags_try_parse(fs, a2 ? 3 : 2, argv, 0, NULL, 0, NULL, err, errlen);
}

/* Flags over the fields of one widths struct. */
static widths w;
static const rm_flag width_flags[] = {
    {"a", RM_FLAG_AT(&w.a), "", 1, 0},
    {"ranged", RM_FLAG_AT(&w.b), "", 10, 100},
    {"sz", RM_FLAG_AT(&w.sz), "", 0, 1u << 20},
    {"big", RM_FLAG_AT(&w.big), "", 0, 0},
};
static const rm_flagset width_fs = {"t", "", "T", width_flags, 4};

static void test_u32_is_stored_at_its_width(void)
{
    w = (widths){7, 0xdeadbeef, 9, 11};
    char err[256];
    CHECK_EQ(parse(&width_fs, "--a", "4294967295", err, sizeof err), RM_FLAGS_OK);
    CHECK_EQ(w.a, UINT32_MAX);
    CHECK_EQ(w.b, 0xdeadbeef); /* the store is four bytes wide */
    CHECK_EQ(parse(&width_fs, "--a=4294967296", NULL, err, sizeof err), RM_FLAGS_ERROR);
    CHECK(strstr(err, "--a: 4294967296 is out of range [1, 4294967295]") != NULL);
    CHECK_EQ(w.a, UINT32_MAX);
    CHECK_EQ(w.b, 0xdeadbeef);
}

static void test_ranges_of_each_width(void)
{
    w = (widths){7, 50, 9, 11};
    char err[256];
    CHECK_EQ(parse(&width_fs, "--a", "0", err, sizeof err), RM_FLAGS_ERROR); /* below min */
    CHECK_EQ(parse(&width_fs, "--ranged", "101", err, sizeof err), RM_FLAGS_ERROR);
    CHECK(strstr(err, "[10, 100]") != NULL);
    CHECK_EQ(parse(&width_fs, "--ranged", "100", err, sizeof err), RM_FLAGS_OK);
    CHECK_EQ(w.b, 100);
    CHECK_EQ(parse(&width_fs, "--ranged", "-1", err, sizeof err), RM_FLAGS_ERROR);
    CHECK(strstr(err, "non-negative integer") != NULL);
    CHECK_EQ(parse(&width_fs, "--sz", "1048576", err, sizeof err), RM_FLAGS_OK);
    CHECK_EQ(w.sz, 1u << 20);
    CHECK_EQ(parse(&width_fs, "--sz", "1048577", err, sizeof err), RM_FLAGS_ERROR);
    CHECK_EQ(parse(&width_fs, "--big", "18446744073709551615", err, sizeof err), RM_FLAGS_OK);
    CHECK(w.big == UINT64_MAX);
    CHECK_EQ(parse(&width_fs, "--big", "18446744073709551616", err, sizeof err), RM_FLAGS_ERROR);
    CHECK_EQ(w.a, 7);
    CHECK_EQ(w.b, 100);
}

static void test_reload_of_integer_widths(void)
{
    widths v = {5, 6, 7, 8};
    const rm_flag flags[] = {
        {"a", RM_FLAG_AT(&v.a), "", 0, 0},
        {"b", RM_FLAG_AT(&v.b), "", 0, 0},
        {"sz", RM_FLAG_AT(&v.sz), "", 0, 0},
        {"big", RM_FLAG_AT(&v.big), "", 0, 0},
    };
    rm_flagset live = {"t", "", "T", flags, 4}, next;
    rm_flags_scratch(&live, &next);
    CHECK_EQ(*(uint32_t *)rm_flags_value(&next, "b"), 6);
    CHECK_EQ(*(size_t *)rm_flags_value(&next, "sz"), 7);
    char diff[256];
    rm_flags_diff(&live, &next, NULL, 0, diff, sizeof diff);
    CHECK_EQ(diff[0], '\0');
    char *argv[] = {"t", "--b=60", "--sz=70", "--big=80", NULL};
    char err[256];
    CHECK_EQ(rm_flags_try_parse(&next, 4, argv, 0, NULL, 0, NULL, err, sizeof err), RM_FLAGS_OK);
    CHECK_EQ(v.b, 6); /* the live values are not touched by the scratch */
    rm_flags_diff(&live, &next, NULL, 0, diff, sizeof diff);
    CHECK(!strcmp(diff, "--b, --sz, --big"));
    static const char *const applied[] = {"b", "sz"};
    rm_flags_diff(&live, &next, applied, 2, diff, sizeof diff);
    CHECK(!strcmp(diff, "--big")); /* what adopt logs as needing a restart */
    rm_flags_adopt(&live, &live, &next, applied, 2, "file", "test");
    CHECK_EQ(v.a, 5);
    CHECK_EQ(v.b, 60);
    CHECK_EQ(v.sz, 70);
    CHECK_EQ(v.big, 8); /* not applied: a restart takes it */
    rm_flags_scratch_free(&next);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
}

/* A reload parses as a start would: defaults, environment, file, command
 * line. A line taken out of the file gives its flag back its default (or
 * its environment value), never the value the last file gave it. */
static void test_reload_starts_from_the_defaults(void)
{
    uint64_t limit = 100, leases = 7, ttl = 30;
    const rm_flag flags[] = {
        {"limit", RM_FLAG_AT(&limit), "", 0, 0},
        {"leases", RM_FLAG_AT(&leases), "", 0, 0},
        {"ttl", RM_FLAG_AT(&ttl), "", 0, 0},
    };
    rm_flagset live = {"t", "", "RMTESTRELOAD", flags, 3}, defaults, next;
    rm_flags_scratch(&live, &defaults);
    char path[] = "/tmp/rm_test_flags_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    setenv("RMTESTRELOAD_TTL", "45", 1);
    char *argv[] = {"t", "--leases=9", NULL};
    char *block, err[256];
    /* Start: the file sets limit and leases; the command line wins on leases. */
    write_file(path, "limit = 500\nleases = 1\n");
    CHECK_EQ(rm_flags_reload(&defaults, path, 2, argv, &next, &block, err, sizeof err), 0);
    CHECK_EQ(*(uint64_t *)rm_flags_value(&next, "limit"), 500);
    CHECK_EQ(*(uint64_t *)rm_flags_value(&next, "leases"), 9);
    CHECK_EQ(*(uint64_t *)rm_flags_value(&next, "ttl"), 45);
    memcpy(&limit, rm_flags_value(&next, "limit"), sizeof limit); /* as a daemon applies it */
    rm_flags_scratch_free(&next);
    free(block);
    /* The limit line is gone: the default again, not the 500 running. */
    write_file(path, "# nothing\n");
    CHECK_EQ(rm_flags_reload(&defaults, path, 2, argv, &next, &block, err, sizeof err), 0);
    CHECK_EQ(*(uint64_t *)rm_flags_value(&next, "limit"), 100);
    CHECK_EQ(*(uint64_t *)rm_flags_value(&next, "leases"), 9);
    CHECK_EQ(*(uint64_t *)rm_flags_value(&next, "ttl"), 45);
    CHECK_EQ(limit, 500); /* the live value is the daemon's to change */
    rm_flags_scratch_free(&next);
    free(block);
    /* A flag set in both the environment and the file: the file's, at a
     * reload and at a start (the start used to read the environment again
     * after the file). */
    write_file(path, "ttl = 60\n");
    CHECK_EQ(rm_flags_reload(&defaults, path, 2, argv, &next, &block, err, sizeof err), 0);
    CHECK_EQ(*(uint64_t *)rm_flags_value(&next, "ttl"), 60);
    rm_flags_scratch_free(&next);
    free(block);
    rm_flags_parse(&live, 2, argv, NULL, 0, NULL); /* a start: environment, command line */
    CHECK_EQ(ttl, 45);
    char **start_block = rm_flags_apply_config(&live, path, 2, argv);
    CHECK_EQ(ttl, 60);
    CHECK_EQ(leases, 9);
    free(start_block);
    /* A bad environment value fails the reload, as it fails a start. */
    setenv("RMTESTRELOAD_TTL", "soon", 1);
    CHECK_EQ(rm_flags_reload(&defaults, path, 2, argv, &next, &block, err, sizeof err), -1);
    CHECK(strstr(err, "RMTESTRELOAD_TTL") != NULL);
    unsetenv("RMTESTRELOAD_TTL");
    unlink(path);
    rm_flags_scratch_free(&defaults);
}

static void test_keep_str_survives_its_own_store(void)
{
    const char *level = "debug";
    const rm_flag flags[] = {{"log-level", RM_FLAG_AT(&level), "", 0, 0}};
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

/* The type comes from the field: a uint32_t field is a 32-bit flag (stored
 * at that width, test_u32_is_stored_at_its_width), size_t the fixed width
 * it is. That any other field type does not compile is test_flag_at.sh's. */
static void test_flag_at_reads_the_type_off_the_field(void)
{
    const char *s = NULL;
    uint64_t u64 = 0;
    uint32_t u32 = 0;
    size_t sz = 0;
    int on = 0;
    double d = 0;
    const rm_flag f[] = {
        {"s", RM_FLAG_AT(&s), "", 0, 0},     {"u64", RM_FLAG_AT(&u64), "", 0, 0},
        {"u32", RM_FLAG_AT(&u32), "", 0, 0}, {"sz", RM_FLAG_AT(&sz), "", 0, 0},
        {"on", RM_FLAG_AT(&on), "", 0, 0},   {"d", RM_FLAG_AT(&d), "", 0, 0},
    };
    CHECK_EQ(f[0].type, RM_FLAG_STR);
    CHECK_EQ(f[1].type, RM_FLAG_U64);
    CHECK_EQ(f[2].type, RM_FLAG_U32);
    CHECK_EQ(f[3].type, sizeof(size_t) == sizeof(uint64_t) ? RM_FLAG_U64 : RM_FLAG_U32);
    CHECK_EQ(f[4].type, RM_FLAG_BOOL);
    CHECK_EQ(f[5].type, RM_FLAG_DOUBLE);
    CHECK(f[0].value == &s && f[2].value == &u32 && f[5].value == &d);
}

/* A choice flag's error lists every choice, as the daemons' messages
 * always have ("expected a, b or c"); a short buffer truncates it safely. */
static void test_choice_index_and_message(void)
{
    static const char *const two[] = {"work", "requests"};
    static const char *const four[] = {"lru", "lfu", "lfu-da", "gdsf"};
    char err[128];
    CHECK_EQ(rm_flags_choice_index("load-unit", "requests", two, 2, err, sizeof err), 1);
    CHECK_EQ(rm_flags_choice_index("load-unit", "work", two, 2, err, sizeof err), 0);
    CHECK_EQ(rm_flags_choice_index("load-unit", "Work", two, 2, err, sizeof err), -1);
    CHECK(!strcmp(err, "--load-unit: expected work or requests, got 'Work'"));
    CHECK_EQ(rm_flags_choice_index("eviction", "", four, 4, err, sizeof err), -1);
    CHECK(!strcmp(err, "--eviction: expected lru, lfu, lfu-da or gdsf, got ''"));
    char small[20];
    CHECK_EQ(rm_flags_choice_index("eviction", "fifo", four, 4, small, sizeof small), -1);
    CHECK(!strcmp(small, "--eviction: expecte"));
}

int main(void)
{
    RUN(test_flag_at_reads_the_type_off_the_field);
    RUN(test_u32_is_stored_at_its_width);
    RUN(test_ranges_of_each_width);
    RUN(test_reload_of_integer_widths);
    RUN(test_reload_starts_from_the_defaults);
    RUN(test_keep_str_survives_its_own_store);
    RUN(test_choice_index_and_message);
    return rm_t_report();
}
