/* libFuzzer target: what the gateway reads from untrusted HTTP bodies and
 * worker pages: OpenAI request bodies (both kinds) into routing tokens,
 * responses (JSON or Server-Sent Events) into generated text, and
 * Prometheus text into worker figures. Must not crash or leak; results
 * must respect their bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "openai.h"
#include "worker_metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int kind = 0; kind < 2; kind++) {
        char *ns, err[256];
        uint32_t *tokens;
        size_t n;
        rm_openai_end end;
        int rc = rm_openai_prompt((const char *)data, size,
                                  kind ? RM_OPENAI_CHAT : RM_OPENAI_COMPLETIONS, 4096, &ns, &tokens,
                                  &n, &end, err, sizeof err);
        if (rc == 0) {
            if (!ns || n > 4096 || (n && !tokens))
                abort();
        } else if (ns || tokens || n || !err[0]) {
            abort();
        }
        /* The same bytes as a worker's response, continuing the prompt. */
        char *text;
        size_t text_len;
        int got = rm_openai_reply_text((const char *)data, size, kind, &text, &text_len);
        /* Read as it would stream by, in two pieces: the same answer. */
        rm_openai_reply r;
        rm_openai_reply_init(&r, kind, size + 1);
        size_t cut = size ? data[0] % size : 0;
        rm_openai_reply_feed(&r, (const char *)data, cut);
        rm_openai_reply_feed(&r, (const char *)data + cut, size - cut);
        char *text2;
        size_t len2;
        int got2 = rm_openai_reply_finish(&r, &text2, &len2);
        rm_openai_reply_free(&r);
        if (got != got2 || (got == 0 && (len2 != text_len || memcmp(text, text2, len2))))
            abort();
        if (got2 == 0)
            free(text2);
        if (got == 0) {
            if (!text || text[text_len] != '\0')
                abort();
            uint32_t *more;
            size_t nmore;
            if (rc == 0 && rm_openai_continue(kind, tokens, n, &end, text, text_len, 4096, &more,
                                              &nmore) == 0) {
                /* Everything but the prompt's last (short) token stays. */
                if (nmore > 4096 || nmore + 1 < n ||
                    (n > 1 && memcmp(more, tokens, (n - 1) * sizeof *more)))
                    abort();
                free(more);
            }
            free(text);
        }
        free(ns);
        free(tokens);
    }
    rm_worker_figures f;
    int found = rm_worker_metrics_parse((const char *)data, size, &f);
    if (f.has_counts && !found)
        abort();
    if (!found && f.hit_rate != -1)
        abort();
    return 0;
}
