#include "bytetok.h"

size_t rm_bytetok_encode(const void *text, size_t len, uint32_t *out)
{
    const unsigned char *p = text;
    for (size_t i = 0; i < len; i++)
        out[i] = p[i];
    return len;
}

void rm_bytetok_decode(const uint32_t *ids, size_t n, rm_sbuf *b)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < RM_BYTETOK_VOCAB) {
            unsigned char c = (unsigned char)ids[i];
            rm_sbuf_append(b, &c, 1);
        } else {
            rm_sbuf_printf(b, "<|%u|>", ids[i]);
        }
    }
}
