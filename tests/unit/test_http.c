/* Unit tests of http.c: the reason phrases. */
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

int main(void)
{
    RUN(test_reason_phrases);
    return rm_t_report();
}
