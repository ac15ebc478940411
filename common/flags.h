/* flags.h -- table-driven command-line flags with environment fallback.
 *
 * Each flag --some-name also reads $PREFIX_SOME_NAME (e.g. --pool-tokens ->
 * RADIXMESH_POOL_TOKENS); the command line wins over the environment.
 * Accepted forms: --name value, --name=value, and for booleans bare --name.
 * --help prints usage to stdout and exits 0; --version prints the version
 * and exits 0; a bad flag or value prints the reason and usage to stderr and
 * exits 2. */
#ifndef RM_FLAGS_H
#define RM_FLAGS_H

#include <stdint.h>

typedef enum { RM_FLAG_STR, RM_FLAG_U64, RM_FLAG_BOOL, RM_FLAG_DOUBLE } rm_flag_type;

typedef struct rm_flag {
    const char *name; /* without the leading "--" */
    rm_flag_type type;
    void *value;       /* const char **, uint64_t *, int *, double * */
    const char *help;  /* one line; the default is appended automatically */
    uint64_t min, max; /* range for RM_FLAG_U64 (max 0: no upper bound) */
} rm_flag;

typedef struct rm_flagset {
    const char *prog;     /* program name in usage */
    const char *synopsis; /* e.g. "--listen HOST:PORT [options]" */
    const char *env_prefix;
    const rm_flag *flags;
    int nflags;
} rm_flagset;

/* Parses env then argv into the flags' values. Positional arguments are
 * collected into pos[] (at most maxpos; more is a usage error) and counted in
 * *npos (pos may be NULL when none are allowed). Exits as described above. */
void rm_flags_parse(const rm_flagset *fs, int argc, char **argv, const char **pos, int maxpos,
                    int *npos);

/* Prints the reason and usage to stderr, exits 2. For checks across flags. */
void rm_flags_fail(const rm_flagset *fs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* Parses "HOST:PORT" (PORT 0..65535). Returns 0 or -1. */
int rm_parse_hostport(const char *s, char *host, int hostlen, int *port);

/* Parses "http://HOST:PORT" with an optional trailing "/" (a worker's base
 * URL; no path, no https: workers sit beside their node on a private
 * network). Returns 0 or -1. */
int rm_parse_http_url(const char *url, char *host, int hostlen, int *port);

#endif
