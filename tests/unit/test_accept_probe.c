/* Unit tests of accept_probe.c: the verdict of a run of looks. */
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

int main(void)
{
    RUN(test_accept_judge);
    return rm_t_report();
}
