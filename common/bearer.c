#include "bearer.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

char *rm_read_token_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read token file %s", path);
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    fclose(f);
    if (n < 0) {
        free(line);
        snprintf(err, errlen, "token file %s is empty", path);
        return NULL;
    }
    char *s = line, *e = line + n;
    while (*s == ' ' || *s == '\t')
        s++;
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *e = '\0';
    if (!*s) {
        free(line);
        snprintf(err, errlen, "token file %s is empty", path);
        return NULL;
    }
    for (const char *p = s; p < e; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) {
            snprintf(err, errlen, "token file %s: byte %zu of the token is not printable ASCII",
                     path, (size_t)(p - s) + 1);
            free(line);
            return NULL;
        }
    memmove(line, s, (size_t)(e - s) + 1);
    return line;
}

int rm_bearer_matches(const char *token, const char *value, size_t len)
{
    size_t tl = strlen(token);
    if (len < 7 || strncasecmp(value, "bearer ", 7) != 0)
        return 0;
    size_t i = 7;
    while (i < len && value[i] == ' ')
        i++;
    return len - i == tl && CRYPTO_memcmp(value + i, token, tl) == 0;
}

int rm_bearer_in_headers(const char *token, const char *lines)
{
    static const char name[] = "authorization:";
    int ok = 0;
    for (const char *l = lines; l && *l;) {
        const char *end = strstr(l, "\r\n");
        size_t len = end ? (size_t)(end - l) : strlen(l);
        if (len >= sizeof name - 1 && !strncasecmp(l, name, sizeof name - 1)) {
            const char *v = l + sizeof name - 1, *ve = l + len;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            ok |= rm_bearer_matches(token, v, (size_t)(ve - v));
        }
        l += len + (end ? 2 : 0);
    }
    return ok;
}
