#include "flags.h"

#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* RM_FLAG_AT reads a size_t field as the fixed-width type it is. */
_Static_assert(_Generic((size_t *)0, uint64_t * : 1, uint32_t * : 1, default : 0),
               "size_t is neither uint64_t nor uint32_t: RM_FLAG_AT cannot take size_t fields");

/* Bytes of a flag's value storage. */
static size_t value_size(rm_flag_type t)
{
    switch (t) {
    case RM_FLAG_STR: return sizeof(const char *);
    case RM_FLAG_U64: return sizeof(uint64_t);
    case RM_FLAG_BOOL: return sizeof(int);
    case RM_FLAG_DOUBLE: return sizeof(double);
    case RM_FLAG_U32: return sizeof(uint32_t);
    }
    return 0;
}

/* An integer flag's value, whatever its width. */
static uint64_t uint_get(const rm_flag *f)
{
    if (f->type == RM_FLAG_U32)
        return *(const uint32_t *)f->value;
    return *(const uint64_t *)f->value;
}

static void uint_set(const rm_flag *f, uint64_t x)
{
    if (f->type == RM_FLAG_U32)
        *(uint32_t *)f->value = (uint32_t)x;
    else
        *(uint64_t *)f->value = x;
}

/* The largest value an integer flag takes: its max, within its width. */
static uint64_t uint_max(const rm_flag *f)
{
    uint64_t width_max = f->type == RM_FLAG_U32 ? UINT32_MAX : UINT64_MAX;
    return f->max && f->max < width_max ? f->max : width_max;
}

static void usage(const rm_flagset *fs, FILE *out)
{
    fprintf(out, "usage: %s %s\n\noptions (each also as $%s_<NAME>):\n", fs->prog, fs->synopsis,
            fs->env_prefix);
    for (int i = 0; i < fs->nflags; i++) {
        const rm_flag *f = &fs->flags[i];
        char def[64] = "";
        switch (f->type) {
        case RM_FLAG_STR:
            if (*(const char **)f->value)
                snprintf(def, sizeof def, " (default %s)", *(const char **)f->value);
            break;
        case RM_FLAG_U64:
        case RM_FLAG_U32:
            snprintf(def, sizeof def, " (default %llu)", (unsigned long long)uint_get(f));
            break;
        case RM_FLAG_DOUBLE: snprintf(def, sizeof def, " (default %g)", *(double *)f->value); break;
        case RM_FLAG_BOOL: break;
        }
        fprintf(out, "  --%-22s %s%s\n", f->name, f->help, def);
    }
    fprintf(out, "  --%-22s %s\n  --%-22s %s\n", "help", "show this help", "version",
            "print the version");
}

void rm_flags_fail(const rm_flagset *fs, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", fs->prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    usage(fs, stderr);
    exit(2);
}

int rm_flags_choice_index(const char *flag, const char *value, const char *const *names, size_t n,
                          char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(value, names[i]))
            return (int)i;
    size_t len = (size_t)snprintf(err, errlen, "--%s: expected ", flag);
    for (size_t i = 0; i < n && len < errlen; i++)
        len += (size_t)snprintf(err + len, errlen - len, "%s%s",
                                i == 0       ? ""
                                : i + 1 == n ? " or "
                                             : ", ",
                                names[i]);
    if (len < errlen)
        snprintf(err + len, errlen - len, ", got '%s'", value);
    return -1;
}

int rm_flags_choice(const rm_flagset *fs, const char *flag, const char *value,
                    const char *const *names, size_t n)
{
    char err[512];
    int k = rm_flags_choice_index(flag, value, names, n, err, sizeof err);
    if (k < 0)
        rm_flags_fail(fs, "%s", err);
    return k;
}

int rm_flags_on_off(const rm_flagset *fs, const char *flag, const char *value)
{
    static const char *const on_off[] = {"on", "off"};
    return rm_flags_choice(fs, flag, value, on_off, 2) == 0;
}

/* Stores v into f. Returns 0, or -1 with the reason in err. */
static int set_value(const rm_flag *f, const char *v, const char *from, char *err, size_t errlen)
{
    char *end;
    switch (f->type) {
    case RM_FLAG_STR: *(const char **)f->value = v; return 0;
    case RM_FLAG_BOOL:
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"))
            *(int *)f->value = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
            *(int *)f->value = 0;
        else {
            snprintf(err, errlen, "%s%s--%s: expected true or false, got '%s'", from,
                     *from ? " " : "", f->name, v);
            return -1;
        }
        return 0;
    case RM_FLAG_U64:
    case RM_FLAG_U32: {
        errno = 0;
        unsigned long long x = 0;
        if (*v && isdigit((unsigned char)*v))
            x = strtoull(v, &end, 10);
        if (!*v || !isdigit((unsigned char)*v) || errno || *end) {
            snprintf(err, errlen, "%s%s--%s: expected a non-negative integer, got '%s'", from,
                     *from ? " " : "", f->name, v);
            return -1;
        }
        if (x < f->min || x > uint_max(f)) {
            snprintf(err, errlen, "%s%s--%s: %llu is out of range [%llu, %llu]", from,
                     *from ? " " : "", f->name, x, (unsigned long long)f->min,
                     (unsigned long long)uint_max(f));
            return -1;
        }
        uint_set(f, x);
        return 0;
    }
    case RM_FLAG_DOUBLE: {
        errno = 0;
        double x = strtod(v, &end);
        if (errno || *end || !*v || x != x) {
            snprintf(err, errlen, "%s%s--%s: expected a number, got '%s'", from, *from ? " " : "",
                     f->name, v);
            return -1;
        }
        *(double *)f->value = x;
        return 0;
    }
    }
    return 0;
}

static void env_name(const rm_flagset *fs, const rm_flag *f, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "%s_", fs->env_prefix);
    for (const char *p = f->name; *p && n + 1 < len; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

int rm_flags_try_parse(const rm_flagset *fs, int argc, char **argv, int use_env, const char **pos,
                       int maxpos, int *npos, char *err, size_t errlen)
{
    for (int i = 0; use_env && i < fs->nflags; i++) {
        char env[128];
        env_name(fs, &fs->flags[i], env, sizeof env);
        const char *v = getenv(env);
        if (v && set_value(&fs->flags[i], v, env, err, errlen) != 0)
            return RM_FLAGS_ERROR;
    }
    int np = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return RM_FLAGS_HELP;
        if (!strcmp(a, "--version"))
            return RM_FLAGS_VERSION;
        if (strncmp(a, "--", 2) != 0) {
            if (!pos || np >= maxpos) {
                snprintf(err, errlen, "unexpected argument '%s'", a);
                return RM_FLAGS_ERROR;
            }
            pos[np++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const rm_flag *f = NULL;
        for (int k = 0; k < fs->nflags; k++)
            if (strlen(fs->flags[k].name) == nlen && !strncmp(fs->flags[k].name, name, nlen))
                f = &fs->flags[k];
        if (!f) {
            snprintf(err, errlen, "unknown flag '%s'", a);
            return RM_FLAGS_ERROR;
        }
        const char *v;
        if (eq)
            v = eq + 1;
        else if (f->type == RM_FLAG_BOOL)
            v = "true";
        else if (i + 1 < argc)
            v = argv[++i];
        else {
            snprintf(err, errlen, "flag --%s needs a value", f->name);
            return RM_FLAGS_ERROR;
        }
        if (set_value(f, v, "", err, errlen) != 0)
            return RM_FLAGS_ERROR;
    }
    if (npos)
        *npos = np;
    return RM_FLAGS_OK;
}

void rm_flags_parse(const rm_flagset *fs, int argc, char **argv, const char **pos, int maxpos,
                    int *npos)
{
    char err[512];
    switch (rm_flags_try_parse(fs, argc, argv, 1, pos, maxpos, npos, err, sizeof err)) {
    case RM_FLAGS_HELP: usage(fs, stdout); exit(0);
    case RM_FLAGS_VERSION: printf("%s %s\n", fs->prog, RM_VERSION); exit(0);
    case RM_FLAGS_ERROR: rm_flags_fail(fs, "%s", err[0] == ' ' ? err + 1 : err);
    default: return;
    }
}

char **rm_flags_read_file(const char *path, int *argc, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        if (len + got + 1 > cap) {
            cap = (len + got + 1) * 2;
            char *t = realloc(text, cap);
            if (!t) {
                free(text);
                fclose(f);
                snprintf(err, errlen, "%s: out of memory", path);
                return NULL;
            }
            text = t;
        }
        memcpy(text + len, buf, got);
        len += got;
    }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(text);
        snprintf(err, errlen, "cannot read %s", path);
        return NULL;
    }
    char **argv = rm_flags_parse_text(text ? text : "", len, argc, err, errlen);
    free(text);
    if (!argv)
        return NULL;
    return argv;
}

char **rm_flags_parse_text(const char *text, size_t len, int *argc, char *err, size_t errlen)
{
    /* One block: the argv array, then "--name=value" strings. */
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    size_t need = (lines + 2) * sizeof(char *) + len + 4 * lines + 1;
    char **argv = calloc(1, need);
    if (!argv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char *out = (char *)(argv + lines + 2);
    int n = 0;
    argv[n++] = (char *)"config";
    size_t lineno = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && text[e] != '\n')
            e++;
        lineno++;
        size_t a = i, b = e;
        i = e + 1;
        while (a < b && isspace((unsigned char)text[a]))
            a++;
        while (b > a && isspace((unsigned char)text[b - 1]))
            b--;
        if (a == b || text[a] == '#')
            continue;
        if (memchr(text + a, '\0', b - a)) {
            snprintf(err, errlen, "line %zu: NUL byte", lineno);
            free(argv);
            return NULL;
        }
        if (b - a >= 2 && text[a] == '-' && text[a + 1] == '-')
            a += 2;
        /* name, then '=' or blanks, then the value (may be empty) */
        size_t k = a;
        while (k < b && text[k] != '=' && !isspace((unsigned char)text[k]))
            k++;
        if (k == a) {
            snprintf(err, errlen, "line %zu: expected 'name = value'", lineno);
            free(argv);
            return NULL;
        }
        size_t v = k;
        while (v < b && isspace((unsigned char)text[v]))
            v++;
        if (v < b && text[v] == '=')
            v++;
        while (v < b && isspace((unsigned char)text[v]))
            v++;
        argv[n++] = out;
        out += sprintf(out, "--%.*s=%.*s", (int)(k - a), text + a, (int)(b - v), text + v) + 1;
    }
    argv[n] = NULL;
    *argc = n;
    return argv;
}

int rm_parse_hostport(const char *s, char *host, int hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (colon - s) >= hostlen)
        return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || colon[1] == '\0' || p < 0 || p > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)p;
    return 0;
}

int rm_parse_http_url(const char *url, char *host, int hostlen, int *port)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    char hp[300];
    size_t len = strlen(url + 7);
    if (len && url[7 + len - 1] == '/')
        len--;
    if (len == 0 || len >= sizeof hp || memchr(url + 7, '/', len))
        return -1;
    memcpy(hp, url + 7, len);
    hp[len] = '\0';
    return rm_parse_hostport(hp, host, hostlen, port) || *port == 0 ? -1 : 0;
}

/* Storage of any flag's value. */
typedef union flag_value {
    const char *str;
    uint64_t u64;
    int b;
    double d;
    uint32_t u32;
    size_t size;
} flag_value;

void rm_flags_scratch(const rm_flagset *fs, rm_flagset *out)
{
    *out = *fs;
    rm_flag *flags = calloc((size_t)fs->nflags + 1, sizeof *flags);
    flag_value *store = calloc((size_t)fs->nflags + 1, sizeof *store);
    if (!flags || !store)
        abort();
    for (int i = 0; i < fs->nflags; i++) {
        flags[i] = fs->flags[i];
        flags[i].value = &store[i];
        memcpy(&store[i], fs->flags[i].value, value_size(fs->flags[i].type));
    }
    out->flags = flags;
}

void rm_flags_scratch_free(rm_flagset *s)
{
    if (s->nflags > 0)
        free(s->flags[0].value); /* the store: value 0 is its first slot */
    free((void *)s->flags);
    s->flags = NULL;
}

void *rm_flags_value(const rm_flagset *fs, const char *name)
{
    for (int i = 0; i < fs->nflags; i++)
        if (!strcmp(fs->flags[i].name, name))
            return fs->flags[i].value;
    return NULL;
}

int rm_flags_reload(const rm_flagset *defaults, const char *path, int argc, char **argv,
                    rm_flagset *out, char **block, char *err, size_t errlen)
{
    int fargc;
    char **fargv = rm_flags_read_file(path, &fargc, err, errlen);
    if (!fargv)
        return -1;
    rm_flags_scratch(defaults, out);
    const char *pos[8];
    int npos;
    if (rm_flags_try_parse(out, 0, NULL, 1, NULL, 0, NULL, err, errlen) != RM_FLAGS_OK ||
        rm_flags_try_parse(out, fargc, fargv, 0, pos, 8, &npos, err, errlen) != RM_FLAGS_OK ||
        rm_flags_try_parse(out, argc, argv, 0, pos, 8, &npos, err, errlen) != RM_FLAGS_OK) {
        if (!err[0])
            snprintf(err, errlen, "--help and --version have no place in a config file");
        rm_flags_scratch_free(out);
        free(fargv);
        return -1;
    }
    *block = (char *)fargv;
    return 0;
}

int rm_flags_reload_logged(const rm_flagset *defaults, const char *path, int argc, char **argv,
                           rm_flagset *out, char **block, const char *module)
{
    char err[512];
    if (!path) {
        rm_log(RM_LOG_WARN, module, "SIGHUP ignored: no --config file to reload");
        return -1;
    }
    if (rm_flags_reload(defaults, path, argc, argv, out, block, err, sizeof err)) {
        rm_log(RM_LOG_ERROR, module, "config reload rejected, keeping the old one: %s", err);
        return -1;
    }
    return 0;
}

void rm_flags_adopt(const rm_flagset *live, const rm_flagset *started, const rm_flagset *next,
                    const char *const *applied, size_t napplied, const char *path,
                    const char *module)
{
    for (size_t i = 0; i < napplied; i++)
        for (int k = 0; k < live->nflags; k++) {
            if (strcmp(live->flags[k].name, applied[i]) != 0)
                continue;
            if (live->flags[k].type != RM_FLAG_STR)
                memcpy(live->flags[k].value, next->flags[k].value, value_size(live->flags[k].type));
        }
    char restart[1024];
    rm_flags_diff(started, next, applied, napplied, restart, sizeof restart);
    if (restart[0])
        rm_log(RM_LOG_WARN, module, "changed in %s but applied only at restart: %s", path, restart);
}

int rm_flags_keep_str(const rm_flagset *live, const rm_flagset *next, const char *name, char *store,
                      size_t len)
{
    const char **dst = rm_flags_value(live, name), *const *src = rm_flags_value(next, name);
    if (!dst || !src || !*src || strlen(*src) >= len)
        return -1;
    memmove(store, *src, strlen(*src) + 1); /* *src may be store itself */
    *dst = store;
    return 0;
}

char **rm_flags_apply_config(const rm_flagset *fs, const char *path, int argc, char **argv)
{
    char err[512];
    int fargc;
    char **fargv = rm_flags_read_file(path, &fargc, err, sizeof err);
    if (!fargv)
        rm_flags_fail(fs, "--config: %s", err);
    if (rm_flags_try_parse(fs, fargc, fargv, 0, NULL, 0, NULL, err, sizeof err) != RM_FLAGS_OK)
        rm_flags_fail(fs, "--config %s: %s", path, err[0] == ' ' ? err + 1 : err);
    /* The command line again, not the environment: the file wins over it
     * (as a reload has it). */
    if (rm_flags_try_parse(fs, argc, argv, 0, NULL, 0, NULL, err, sizeof err) != RM_FLAGS_OK)
        rm_flags_fail(fs, "%s", err[0] == ' ' ? err + 1 : err);
    return fargv;
}

static int named(const char *name, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(name, names[i]))
            return 1;
    return 0;
}

void rm_flags_diff(const rm_flagset *a, const rm_flagset *b, const char *const *skip, size_t nskip,
                   char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < a->nflags && i < b->nflags; i++) {
        if (named(a->flags[i].name, skip, nskip))
            continue;
        const void *x = a->flags[i].value, *y = b->flags[i].value;
        int same = 1;
        switch (a->flags[i].type) {
        case RM_FLAG_STR: {
            const char *p = *(const char *const *)x, *q = *(const char *const *)y;
            same = p == q || (p && q && !strcmp(p, q));
            break;
        }
        case RM_FLAG_DOUBLE: same = *(const double *)x == *(const double *)y; break;
        default: same = !memcmp(x, y, value_size(a->flags[i].type)); break;
        }
        if (!same && n + strlen(a->flags[i].name) + 3 < outlen)
            n += (size_t)snprintf(out + n, outlen - n, "%s--%s", n ? ", " : "", a->flags[i].name);
    }
}
