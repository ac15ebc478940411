#include "flags.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
            snprintf(def, sizeof def, " (default %llu)", (unsigned long long)*(uint64_t *)f->value);
            break;
        case RM_FLAG_DOUBLE:
            snprintf(def, sizeof def, " (default %g)", *(double *)f->value);
            break;
        case RM_FLAG_BOOL:
            break;
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

static void set_value(const rm_flagset *fs, const rm_flag *f, const char *v, const char *from)
{
    char *end;
    switch (f->type) {
    case RM_FLAG_STR:
        *(const char **)f->value = v;
        return;
    case RM_FLAG_BOOL:
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"))
            *(int *)f->value = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
            *(int *)f->value = 0;
        else
            rm_flags_fail(fs, "%s --%s: expected true or false, got '%s'", from, f->name, v);
        return;
    case RM_FLAG_U64: {
        errno = 0;
        if (!*v || !isdigit((unsigned char)*v))
            rm_flags_fail(fs, "%s --%s: expected a non-negative integer, got '%s'", from, f->name,
                          v);
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || *end)
            rm_flags_fail(fs, "%s --%s: expected a non-negative integer, got '%s'", from, f->name,
                          v);
        if (x < f->min || (f->max && x > f->max))
            rm_flags_fail(fs, "%s --%s: %llu is out of range [%llu, %llu]", from, f->name, x,
                          (unsigned long long)f->min, (unsigned long long)f->max);
        *(uint64_t *)f->value = x;
        return;
    }
    case RM_FLAG_DOUBLE: {
        errno = 0;
        double x = strtod(v, &end);
        if (errno || *end || !*v)
            rm_flags_fail(fs, "%s --%s: expected a number, got '%s'", from, f->name, v);
        *(double *)f->value = x;
        return;
    }
    }
}

static void env_name(const rm_flagset *fs, const rm_flag *f, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "%s_", fs->env_prefix);
    for (const char *p = f->name; *p && n + 1 < len; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

void rm_flags_parse(const rm_flagset *fs, int argc, char **argv, const char **pos, int maxpos,
                    int *npos)
{
    for (int i = 0; i < fs->nflags; i++) {
        char env[128];
        env_name(fs, &fs->flags[i], env, sizeof env);
        const char *v = getenv(env);
        if (v)
            set_value(fs, &fs->flags[i], v, env);
    }
    int np = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(fs, stdout);
            exit(0);
        }
        if (!strcmp(a, "--version")) {
            printf("%s %s\n", fs->prog, RM_VERSION);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) {
            if (!pos || np >= maxpos)
                rm_flags_fail(fs, "unexpected argument '%s'", a);
            pos[np++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const rm_flag *f = NULL;
        for (int k = 0; k < fs->nflags; k++)
            if (strlen(fs->flags[k].name) == nlen && !strncmp(fs->flags[k].name, name, nlen))
                f = &fs->flags[k];
        if (!f)
            rm_flags_fail(fs, "unknown flag '%s'", a);
        const char *v;
        if (eq)
            v = eq + 1;
        else if (f->type == RM_FLAG_BOOL)
            v = "true";
        else if (i + 1 < argc)
            v = argv[++i];
        else
            rm_flags_fail(fs, "flag --%s needs a value", f->name);
        set_value(fs, f, v, "");
    }
    if (npos)
        *npos = np;
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
