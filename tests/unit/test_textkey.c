/* Unit tests for common/textkey.c: a text's pseudo-tokens depend only on its
 * bytes, chunks span feed boundaries, a text prefix gives a token prefix,
 * and the cap holds. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "textkey.h"

static rm_textkey key_of(const char *const *parts, size_t nparts, size_t max)
{
    rm_textkey k;
    rm_textkey_init(&k, max);
    for (size_t i = 0; i < nparts; i++)
        rm_textkey_feed(&k, parts[i], strlen(parts[i]));
    rm_textkey_finish(&k);
    return k;
}

static void test_chunking_ignores_feed_boundaries(void)
{
    const char *whole[] = {"You are a helpful assistant."};
    const char *split[] = {"You a", "re a helpful", " ", "assistant."};
    rm_textkey a = key_of(whole, 1, 1000), b = key_of(split, 4, 1000);
    CHECK_EQ(a.n, (28 + RM_TEXTKEY_CHUNK - 1) / RM_TEXTKEY_CHUNK);
    CHECK_EQ(a.n, b.n);
    CHECK(a.n == b.n && !memcmp(a.v, b.v, a.n * sizeof *a.v));
    /* The ids are those of the chunks. */
    CHECK_EQ(a.v[0], rm_textkey_chunk_id((const unsigned char *)"You ", 4));
    CHECK_EQ(a.v[a.n - 1], rm_textkey_chunk_id((const unsigned char *)"ant.", 4));
    rm_textkey_free(&a);
    rm_textkey_free(&b);
    const char *odd[] = {"abcdef"};
    rm_textkey c = key_of(odd, 1, 1000);
    CHECK_EQ(c.n, 2);
    CHECK_EQ(c.v[1], rm_textkey_chunk_id((const unsigned char *)"ef", 2));
    rm_textkey_free(&c);
}

static void test_prefix_gives_prefix(void)
{
    /* Any text extending a prefix whose length is a multiple of the chunk
     * starts with the prefix's tokens; a shorter tail differs only at the
     * last (short) chunk. */
    const char *p[] = {"system\x1fShared prompt!!!\x1e"}; /* 24 bytes */
    const char *q[] = {"system\x1fShared prompt!!!\x1e", "user\x1fhello"};
    rm_textkey a = key_of(p, 1, 1000), b = key_of(q, 2, 1000);
    CHECK_EQ(a.n, 6);
    CHECK(b.n > a.n);
    CHECK(!memcmp(a.v, b.v, a.n * sizeof *a.v));
    /* Short chunks never equal a full chunk padded with zeros. */
    unsigned char ab0[4] = {'a', 'b', 0, 0};
    CHECK(rm_textkey_chunk_id((const unsigned char *)"ab", 2) != rm_textkey_chunk_id(ab0, 4));
    rm_textkey_free(&a);
    rm_textkey_free(&b);
}

static void test_cap_and_empty(void)
{
    const char *p[] = {"0123456789abcdef0123456789abcdef"};
    rm_textkey a = key_of(p, 1, 3);
    CHECK_EQ(a.n, 3);
    rm_textkey_free(&a);
    const char *e[] = {""};
    rm_textkey b = key_of(e, 1, 10);
    CHECK_EQ(b.n, 0);
    rm_textkey_free(&b);
}

int main(void)
{
    RUN(test_chunking_ignores_feed_boundaries);
    RUN(test_prefix_gives_prefix);
    RUN(test_cap_and_empty);
    return rm_t_report();
}
