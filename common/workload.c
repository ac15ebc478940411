#include "workload.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "workload_agentic.h"
#include "workload_chat.h"

enum { P_ARRIVALS = 2, P_SESSION = 3 };

int rm_workload_known(const char *name)
{
    return !strcmp(name, "agentic") || !strcmp(name, "chat") || !strcmp(name, "builtin");
}

int rm_workload_blocks(const char *name, uint64_t seed, size_t requests, rm_block_trace *bt)
{
    memset(bt, 0, sizeof *bt);
    requests = requests ? requests : RM_WORKLOAD_DEFAULT_REQUESTS;
    if (!strcmp(name, "agentic"))
        rm_agentic_generate(seed, requests, bt, NULL);
    else if (!strcmp(name, "chat"))
        rm_chat_generate(seed, requests, bt, NULL);
    else
        return -1;
    return 0;
}

int rm_workload_trace(const char *spec, uint64_t seed, size_t requests, size_t block_tokens,
                      rm_trace *t, char *err, size_t errlen)
{
    if (!strcmp(spec, "builtin")) {
        rm_trace_generate(t, requests ? requests : RM_WORKLOAD_BUILTIN_REQUESTS, seed);
        return 0;
    }
    rm_block_trace bt;
    if (rm_workload_blocks(spec, seed, requests, &bt) == 0) {
        rm_trace_from_blocks(t, &bt, block_tokens);
        rm_block_trace_free(&bt);
        return 0;
    }
    return rm_trace_load(spec, block_tokens, requests, t, err, errlen);
}

void rm_wl_prompt_make(rm_wl_prompt *p, uint64_t tokens, const rm_wl_prompt *head,
                       uint64_t *next_id)
{
    p->full = tokens / RM_WL_BLOCK;
    p->ids = rm_xmalloc(sizeof *p->ids * (p->full + 1));
    for (size_t b = 0; b < p->full; b++)
        p->ids[b] = head && b < head->full ? head->ids[b] : (*next_id)++;
}

void rm_wl_prompt_free(rm_wl_prompt *p)
{
    free(p->ids);
    memset(p, 0, sizeof *p);
}

void rm_wl_emit(rm_block_trace *bt, uint64_t *next_id, rm_wl_context *c, uint64_t ts_ms,
                uint64_t input, uint64_t output)
{
    size_t full = input / RM_WL_BLOCK;
    if (full + 1 > c->cap) {
        c->cap = (full + 1) * 2;
        c->ids = rm_xrealloc(c->ids, sizeof *c->ids * c->cap);
    }
    for (; c->nfull < full; c->nfull++)
        c->ids[c->nfull] = c->nfull < c->prompt->full ? c->prompt->ids[c->nfull] : (*next_id)++;
    size_t nb = full;
    if (input % RM_WL_BLOCK)
        c->ids[nb++] = (*next_id)++; /* the partial block's content is never seen again */
    rm_block_trace_push(bt, ts_ms, input, output, c->session, c->ids, nb);
}

void rm_wl_context_free(rm_wl_context *c)
{
    free(c->ids);
    memset(c, 0, sizeof *c);
}

void rm_wl_sessions(rm_block_trace *bt, uint64_t seed, size_t requests, double gap_ms,
                    void (*start)(void *ctx, rm_wl_rng *r, uint64_t i, uint64_t start_ms),
                    void *ctx)
{
    rm_wl_rng arrivals = rm_wl_stream(seed, P_ARRIVALS, 0);
    double t_ms = 0;
    for (uint64_t i = 0;; i++) {
        /* Sessions start in time order and none of their requests precede
         * their start: once `requests` come before this start, the first
         * `requests` of the trace are final. */
        size_t before = 0;
        for (size_t j = 0; j < bt->n; j++)
            before += (double)bt->req[j].timestamp_ms < t_ms;
        if (before >= requests)
            break;
        rm_wl_rng r = rm_wl_stream(seed, P_SESSION, i);
        start(ctx, &r, i, (uint64_t)llround(t_ms));
        t_ms += rm_wl_exponential(&arrivals, gap_ms);
    }
    rm_block_trace_sort(bt);
    rm_block_trace_truncate(bt, requests);
}

uint32_t rm_wl_pick(const double *shares, uint32_t n, double u)
{
    double acc = 0;
    for (uint32_t i = 0; i + 1 < n; i++)
        if (u < (acc += shares[i]))
            return i;
    return n - 1;
}

void rm_wl_halving_shares(double *shares, uint32_t n, double first)
{
    double rest = 0;
    for (uint32_t i = 1; i < n; i++)
        rest += ldexp(1.0, -(int)i);
    shares[0] = n > 1 ? first : 1.0;
    for (uint32_t i = 1; i < n; i++)
        shares[i] = (1 - first) * ldexp(1.0, -(int)i) / rest;
}
