#include "prom.h"

#include <stdio.h>
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
