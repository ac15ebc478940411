/* kv_vectors.h -- the KV-event payloads test_kv_events decodes, built as
 * vLLM and SGLang build them by tests/fuzz/make_kv_events.py. They are
 * committed once, as the fuzz seed corpus (tests/fuzz/corpus/kv_events/, a
 * file a payload), and read from there: the test's argument is that
 * directory. A payload the script adds is named here to be tested. */
#ifndef RM_TEST_KV_VECTORS_H
#define RM_TEST_KV_VECTORS_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

static struct kv_vector {
    const char *name;
    unsigned char *data;
    size_t len;
} kv_vectors[] = {
    {.name = "basic_vllm_0_9_uint"},    {.name = "basic_vllm_0_9_bytes"},
    {.name = "basic_vllm_0_10_uint"},   {.name = "basic_vllm_0_10_bytes"},
    {.name = "basic_vllm_0_11_uint"},   {.name = "basic_vllm_0_11_bytes"},
    {.name = "basic_vllm_map_uint"},    {.name = "basic_vllm_map_bytes"},
    {.name = "basic_vllm_latest_uint"}, {.name = "basic_vllm_latest_bytes"},
    {.name = "basic_sglang_old_int64"}, {.name = "basic_sglang_int64"},
    {.name = "unknown_type_map"},       {.name = "unknown_type_array"},
    {.name = "token_pairs_sglang"},     {.name = "group1_and_cpu_map"},
    {.name = "group1_array"},           {.name = "extra_keys_map"},
    {.name = "salted_sglang"},          {.name = "map_envelope_extra"},
    {.name = "hash_extremes"},          {.name = "empty"},
};

/* Reads every payload from dir; a missing or unreadable one ends the test. */
static void kvv_load(const char *dir)
{
    for (size_t i = 0; i < sizeof kv_vectors / sizeof kv_vectors[0]; i++) {
        struct kv_vector *v = &kv_vectors[i];
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, v->name);
        FILE *f = fopen(path, "rb");
        long n = -1;
        if (f && fseek(f, 0, SEEK_END) == 0)
            n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (v->data = malloc((size_t)n)) &&
            fread(v->data, 1, (size_t)n, f) == (size_t)n)
            v->len = (size_t)n;
        if (f)
            fclose(f);
        if (!v->len) {
            fprintf(stderr, "kv_vectors: cannot read %s\n", path);
            exit(1);
        }
    }
}

static void kvv_free(void)
{
    for (size_t i = 0; i < sizeof kv_vectors / sizeof kv_vectors[0]; i++)
        free(kv_vectors[i].data);
}

#endif
