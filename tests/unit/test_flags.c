/* Unit tests of flags.c: a reload keeping a string flag that points at
 * its own store. */
#include <string.h>

#include "check.h"
#include "flags.h"

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

int main(void)
{
    RUN(test_keep_str_survives_its_own_store);
    return rm_t_report();
}
