#include "prom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rm_prom_family(rm_sbuf *b, const char *name, const char *type, const char *help)
{
    rm_sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void rm_prom_sample(rm_sbuf *b, const char *name, const char *labels, double value)
{
    if (labels && *labels)
        rm_sbuf_printf(b, "%s{%s} %.17g\n", name, labels, value);
    else
        rm_sbuf_printf(b, "%s %.17g\n", name, value);
}

void rm_prom_metric(rm_sbuf *b, const char *name, const char *type, const char *help,
                    const char *labels, double value)
{
    rm_prom_family(b, name, type, help);
    rm_prom_sample(b, name, labels, value);
}

void rm_prom_rows(rm_sbuf *b, const rm_prom_row *rows, size_t n, const char *labels)
{
    for (size_t i = 0; i < n; i++)
        rm_prom_metric(b, rows[i].name, rows[i].type, rows[i].help, labels, rows[i].value);
}

void rm_prom_sample_by(rm_sbuf *b, const char *name, const char *labels, const char *key,
                       const char *value, double v)
{
    char l[1024];
    snprintf(l, sizeof l, "%s", labels ? labels : "");
    rm_prom_label(l, sizeof l, key, value);
    rm_prom_sample(b, name, l, v);
}

void rm_prom_split(rm_sbuf *b, const char *name, const char *type, const char *help,
                   const char *labels, const char *key, const char *const *keys,
                   const double *values, size_t n)
{
    rm_prom_family(b, name, type, help);
    for (size_t i = 0; i < n; i++)
        rm_prom_sample_by(b, name, labels, key, keys[i], values[i]);
}

void rm_prom_build_info(rm_sbuf *b, const char *labels, const char *role)
{
    char l[1024];
    snprintf(l, sizeof l, "%s", labels ? labels : "");
    rm_prom_label(l, sizeof l, "role", role);
    rm_prom_label(l, sizeof l, "version", RM_VERSION);
    rm_prom_metric(b, "radixmesh_build_info", "gauge", "Build information.", l, 1);
}

int rm_prom_label(char *out, size_t len, const char *key, const char *value)
{
    size_t at = strlen(out), start = at;
    const char *sep = at ? "," : "";
    size_t need = strlen(sep) + strlen(key) + 2;
    if (at + need + 2 > len) /* room for the closing quote and NUL too */
        return -1;
    at += (size_t)snprintf(out + at, len - at, "%s%s=\"", sep, key);
    for (const char *v = value ? value : ""; *v; v++) {
        const char *esc = *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : *v == '\n' ? "\\n" : NULL;
        size_t n = esc ? 2 : 1;
        if (at + n + 1 >= len) {
            out[start] = '\0';
            return -1;
        }
        if (esc)
            memcpy(out + at, esc, 2);
        else
            out[at] = *v;
        at += n;
    }
    out[at++] = '"';
    out[at] = '\0';
    return 0;
}

/* ---- reading ------------------------------------------------------------ */

int rm_prom_parse_line(const char *p, const char *end, rm_prom_line *out)
{
    if (p >= end || *p == '#')
        return -1;
    const char *q = p;
    while (q < end && *q != '{' && *q != ' ' && *q != '\t')
        q++;
    out->name = p;
    out->name_len = (size_t)(q - p);
    out->labels = q;
    out->labels_len = 0;
    if (!out->name_len)
        return -1;
    if (q < end && *q == '{') {
        const char *start = ++q;
        int quoted = 0;
        for (; q < end; q++) {
            if (quoted && *q == '\\' && q + 1 < end)
                q++;
            else if (*q == '"')
                quoted = !quoted;
            else if (!quoted && *q == '}')
                break;
        }
        if (q == end)
            return -1;
        out->labels = start;
        out->labels_len = (size_t)(q - start);
        q++;
    }
    char buf[64];
    while (q < end && (*q == ' ' || *q == '\t'))
        q++;
    size_t n = 0;
    while (q < end && *q != ' ' && *q != '\t' && n + 1 < sizeof buf)
        buf[n++] = *q++;
    buf[n] = '\0';
    char *stop;
    out->value = strtod(buf, &stop);
    return n && *stop == '\0' ? 0 : -1;
}

int rm_prom_label_get(const char *labels, size_t len, const char *key, char *out, size_t outlen)
{
    const char *p = labels, *end = labels + len;
    size_t klen = strlen(key);
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ','))
            p++;
        const char *k = p;
        while (p < end && *p != '=')
            p++;
        if (p + 1 >= end || p[1] != '"')
            return -1;
        int match = (size_t)(p - k) == klen && !memcmp(k, key, klen);
        size_t n = 0;
        int fits = 1;
        for (p += 2; p < end && *p != '"'; p++) {
            char c = *p;
            if (c == '\\' && p + 1 < end) {
                c = *++p;
                c = c == 'n' ? '\n' : c;
            }
            if (match && n + 1 < outlen)
                out[n++] = c;
            else if (match)
                fits = 0;
        }
        if (p >= end)
            return -1; /* an unterminated value */
        p++;
        if (match) {
            if (outlen)
                out[n] = '\0';
            return fits ? 0 : -1;
        }
    }
    return -1;
}
