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

#include <stddef.h>
#include <stdint.h>

/* The integer types point straight at a config struct's field of that
 * width (uint32_t, uint64_t), so a daemon need not copy values. */
typedef enum {
    RM_FLAG_STR,
    RM_FLAG_U64,
    RM_FLAG_BOOL,
    RM_FLAG_DOUBLE,
    RM_FLAG_U32,
} rm_flag_type;

typedef struct rm_flag {
    const char *name; /* without the leading "--" */
    rm_flag_type type;
    void *value;       /* const char **, uint64_t *, int *, double *, uint32_t * */
    const char *help;  /* one line; the default is appended automatically */
    uint64_t min, max; /* range of the integer types (max 0: the type's own maximum) */
} rm_flag;

/* The type and value of a flag over the variable at ptr, the type read off
 * ptr's own type so that the two cannot disagree (a 64-bit flag over a
 * uint32_t field would overwrite its neighbour); any other pointer type
 * does not compile. A row of a table:
 *
 *     {"vnodes", RM_FLAG_AT(&cfg.vnodes), "ring points per node", 1, 65536},
 *
 * int is a boolean (bare --name, or true/false/1/0). A size_t is whichever
 * of uint32_t and uint64_t it is on the platform (asserted in flags.c). */
#define RM_FLAG_AT(ptr)                                                                            \
    _Generic((ptr),                                                                                \
        const char **: RM_FLAG_STR,                                                                \
        uint64_t *: RM_FLAG_U64,                                                                   \
        int *: RM_FLAG_BOOL,                                                                       \
        double *: RM_FLAG_DOUBLE,                                                                  \
        uint32_t *: RM_FLAG_U32),                                                                  \
        (ptr)

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

enum { RM_FLAGS_OK = 0, RM_FLAGS_ERROR = -1, RM_FLAGS_HELP = 1, RM_FLAGS_VERSION = 2 };

/* rm_flags_parse without exiting or printing (config reloads, fuzzing):
 * reads the environment only with use_env. Returns RM_FLAGS_OK, _HELP,
 * _VERSION, or _ERROR with the reason in err. Flags parsed before an error
 * keep their new values: parse into scratch copies when that matters. */
int rm_flags_try_parse(const rm_flagset *fs, int argc, char **argv, int use_env, const char **pos,
                       int maxpos, int *npos, char *err, size_t errlen);

/* A config file as an argv for rm_flags_try_parse: one flag per line as
 * "name = value", "name value" or "--name value"; blank lines and lines
 * starting with '#' are skipped. argv[0] is a placeholder. Returns one
 * malloc'd block (free() it; string flag values point into it) and the
 * count in *argc, or NULL with the reason in err. */
char **rm_flags_read_file(const char *path, int *argc, char *err, size_t errlen);

/* The same from text in memory (len bytes; need not be NUL-terminated). */
char **rm_flags_parse_text(const char *text, size_t len, int *argc, char *err, size_t errlen);

/* Scratch values for a reload: a flag set like fs whose values live in
 * their own storage, starting as copies of fs's current values. Free with
 * rm_flags_scratch_free. */
void rm_flags_scratch(const rm_flagset *fs, rm_flagset *out);
void rm_flags_scratch_free(rm_flagset *s);

/* The value storage of flag `name` in fs (as rm_flag.value), or NULL if fs
 * has no such flag. */
void *rm_flags_value(const rm_flagset *fs, const char *name);

/* Re-reads a config file for a running daemon: returns in *out the values
 * a start with this file would parse -- a scratch copy of defaults (the
 * values before the first parse: rm_flags_scratch then), then the
 * environment, the file, the command line again (each winning over the
 * one before, as at start). So a line taken out of the file gives its flag
 * back its default, or its environment or command-line value. *block
 * holds the file's strings (free it after use). Returns 0, or -1 with the
 * reason in err (nothing to free then). */
int rm_flags_reload(const rm_flagset *defaults, const char *path, int argc, char **argv,
                    rm_flagset *out, char **block, char *err, size_t errlen);

/* rm_flags_reload for a daemon's SIGHUP: logs under module why nothing
 * was reloaded (no config file, or the file's error) and returns -1, or 0
 * with *out and *block as rm_flags_reload. */
int rm_flags_reload_logged(const rm_flagset *defaults, const char *path, int argc, char **argv,
                           rm_flagset *out, char **block, const char *module);

/* After a daemon applied a reload: copies the values of the flags named in
 * applied (numbers and booleans; a string flag's value points into the
 * file's block, so the caller keeps its own copy) from next into live, then
 * logs under module the flags not in applied whose next value differs from
 * started's (the values the daemon started with: a scratch copy taken
 * after its start's parse): those take effect only at a restart. */
void rm_flags_adopt(const rm_flagset *live, const rm_flagset *started, const rm_flagset *next,
                    const char *const *applied, size_t napplied, const char *path,
                    const char *module);

/* After a reload applied string flag `name`: copies next's value into
 * store (the daemon's own buffer of len bytes: next's strings live in the
 * file's block, freed after the reload) and points live's flag at it.
 * next's value may be store itself -- a flag the file does not set keeps
 * pointing where the last reload put it. Returns 0, or -1 when the value
 * does not fit (nothing changed). */
int rm_flags_keep_str(const rm_flagset *live, const rm_flagset *next, const char *name, char *store,
                      size_t len);

/* Applies a config file at start: the file, then the command line again.
 * Exits 2 with usage on any error. Returns the file's block (keep it: string
 * values point into it). */
char **rm_flags_apply_config(const rm_flagset *fs, const char *path, int argc, char **argv);

/* Names of flags whose values differ between a and b (same table shape),
 * but those named in skip, comma-separated into out (empty if none). */
void rm_flags_diff(const rm_flagset *a, const rm_flagset *b, const char *const *skip, size_t nskip,
                   char *out, size_t outlen);

/* A string flag that names one of n choices (a mode, on/off): returns
 * value's index in names, or -1 with "--flag: expected a, b or c, got
 * 'value'" in err. A check after parsing, not a flag type: the flag stays a
 * string, so its error comes after the other flags' and a config reload
 * (which applies such flags only at a restart) may carry any value. */
int rm_flags_choice_index(const char *flag, const char *value, const char *const *names, size_t n,
                          char *err, size_t errlen);

/* rm_flags_choice_index at start: exits 2 with usage when value is none of
 * names. */
int rm_flags_choice(const rm_flagset *fs, const char *flag, const char *value,
                    const char *const *names, size_t n);

/* rm_flags_choice over "on" and "off": 1 for on, 0 for off. */
int rm_flags_on_off(const rm_flagset *fs, const char *flag, const char *value);

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
