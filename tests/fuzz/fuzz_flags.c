/* libFuzzer target: the flag parser and config-file reader. The input is a
 * config text; its lines become flags for a flag table with every type.
 * Whatever the input, parsing must not crash, and a parse that succeeds
 * must leave every value in range and the fields next to a narrow integer
 * untouched. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The values a parse sets, as the fields of a config struct; canary
     * sits next to the four-byte leases. */
    struct {
        const char *listen, *name;
        uint64_t pages, big;
        double factor;
        int on;
        uint32_t leases, canary;
        size_t body;
    } v = {"127.0.0.1:0", NULL, 16, 0, 1.25, 0, 7, 0x5a5a5a5a, 0};
    const rm_flag flags[] = {
        {"listen", RM_FLAG_AT(&v.listen), "address", 0, 0},
        {"node-id", RM_FLAG_AT(&v.name), "id", 0, 0},
        {"page-tokens", RM_FLAG_AT(&v.pages), "page", 1, 65536},
        {"pool-tokens", RM_FLAG_AT(&v.big), "pool", 0, 0},
        {"load-factor", RM_FLAG_AT(&v.factor), "factor", 0, 0},
        {"prefault", RM_FLAG_AT(&v.on), "bool", 0, 0},
        {"max-leases", RM_FLAG_AT(&v.leases), "u32", 1, 0},
        {"max-body-bytes", RM_FLAG_AT(&v.body), "size", 0, 1u << 30},
    };
    rm_flagset fs = {"fuzz", "[options]", "RMFUZZ", flags, (int)(sizeof flags / sizeof *flags)};
    char err[512];
    int argc;
    char **argv = rm_flags_parse_text((const char *)data, size, &argc, err, sizeof err);
    if (!argv)
        return 0;
    const char *pos[2];
    int npos = 0;
    int rc = rm_flags_try_parse(&fs, argc, argv, 0, pos, 2, &npos, err, sizeof err);
    if (rc == RM_FLAGS_OK) {
        if (v.pages < 1 || v.pages > 65536 || (v.on != 0 && v.on != 1) || v.factor != v.factor ||
            npos > 2)
            abort();
        if (v.leases < 1 || v.canary != 0x5a5a5a5a || v.body > 1u << 30)
            abort();
        /* A string value is the default or a piece of some argument. */
        int inside = !strcmp(v.listen, "127.0.0.1:0");
        for (int i = 1; i < argc && !inside; i++)
            inside = v.listen >= argv[i] && v.listen <= argv[i] + strlen(argv[i]);
        if (!inside)
            abort();
    } else if (rc == RM_FLAGS_ERROR && !err[0]) {
        abort(); /* every error says why */
    }
    char host[64];
    int port;
    if (rm_parse_hostport(v.listen, host, sizeof host, &port) == 0 && (port < 0 || port > 65535))
        abort();
    rm_parse_http_url(v.listen, host, sizeof host, &port);
    free(argv);
    return 0;
}
