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

static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */

void rm_bytetok_text_flush(rm_bytetok_text *t, rm_sbuf *out)
{
    if (t->need)
        rm_sbuf_append(out, replacement, 3);
    t->npend = t->need = 0;
}

/* One byte through the WHATWG UTF-8 decoder's states. */
static void text_byte(rm_bytetok_text *t, unsigned char c, rm_sbuf *out)
{
    if (t->need) {
        if (c >= t->lo && c <= t->hi) {
            t->pend[t->npend++] = c;
            t->lo = 0x80;
            t->hi = 0xBF;
            if (t->npend == t->need) {
                rm_sbuf_append(out, t->pend, (size_t)t->npend);
                t->npend = t->need = 0;
            }
            return;
        }
        rm_bytetok_text_flush(t, out); /* c may start what comes next */
    }
    t->lo = 0x80;
    t->hi = 0xBF;
    if (c < 0x80) {
        rm_sbuf_append(out, &c, 1);
        return;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        t->need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        t->need = 3;
        if (c == 0xE0)
            t->lo = 0xA0; /* no overlong forms */
        if (c == 0xED)
            t->hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        t->need = 4;
        if (c == 0xF0)
            t->lo = 0x90;
        if (c == 0xF4)
            t->hi = 0x8F; /* nothing past U+10FFFF */
    } else {
        rm_sbuf_append(out, replacement, 3);
        return;
    }
    t->pend[0] = c;
    t->npend = 1;
}

void rm_bytetok_text_feed(rm_bytetok_text *t, const uint32_t *ids, size_t n, rm_sbuf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < RM_BYTETOK_VOCAB) {
            text_byte(t, (unsigned char)ids[i], out);
        } else {
            rm_bytetok_text_flush(t, out);
            rm_sbuf_printf(out, "<|%u|>", ids[i]);
        }
    }
}
