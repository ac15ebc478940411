#include "workload_chat.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "workload.h"

enum { P_PARAMS = 1, MAX_TURNS = 20 };

#define MSG_SIGMA   1.0
#define REPLY_SIGMA 0.7
#define THINK_SIGMA 1.0

void rm_chat_params_draw(uint64_t seed, rm_chat_params *p)
{
    rm_wl_rng r = rm_wl_stream(seed, P_PARAMS, 0);
    memset(p, 0, sizeof *p);
    p->variants = (uint32_t)rm_wl_int(&r, 2, RM_CHAT_MAX_VARIANTS);
    rm_wl_halving_shares(p->variant_share, p->variants, rm_wl_uniform(&r, 0.50, 0.85));
    uint32_t shortest = UINT32_MAX;
    for (uint32_t v = 0; v < p->variants; v++) {
        p->prompt_tokens[v] = (uint32_t)rm_wl_int(&r, 512, 2048);
        shortest = p->prompt_tokens[v] < shortest ? p->prompt_tokens[v] : shortest;
    }
    p->head_tokens = (uint32_t)llround(shortest * rm_wl_uniform(&r, 0.5, 0.9));
    p->mean_turns = rm_wl_uniform(&r, 2, 7);
    p->msg_median = rm_wl_uniform(&r, 40, 120);
    p->reply_median = rm_wl_uniform(&r, 150, 400);
    p->decode_tps = rm_wl_uniform(&r, 30, 80);
    p->think_median_s = rm_wl_uniform(&r, 10, 40);
    p->in_flight = rm_wl_uniform(&r, 20, 80);
}

typedef struct gen {
    const rm_chat_params *p;
    rm_block_trace *bt;
    uint64_t next_id;
    rm_wl_prompt variant[RM_CHAT_MAX_VARIANTS];
    rm_chat_conversation *convs; /* convs[i] has id i + 1 */
    size_t nconvs, cap;
} gen;

static void conversation(void *ctx, rm_wl_rng *r, uint64_t i, uint64_t t_ms)
{
    (void)i;
    gen *g = ctx;
    const rm_chat_params *p = g->p;
    uint32_t v = rm_wl_pick(p->variant_share, p->variants, rm_wl_unit(r));
    /* 1 + geometric further turns with mean mean_turns: P(more) = m / (1 + m). */
    uint32_t turns = 1;
    while (turns < MAX_TURNS && rm_wl_unit(r) < p->mean_turns / (1 + p->mean_turns))
        turns++;
    g->convs = rm_xgrow(g->convs, g->nconvs, &g->cap, sizeof *g->convs, 256);
    g->convs[g->nconvs] = (rm_chat_conversation){g->nconvs + 1, v, turns, 0};
    rm_wl_context c = {.prompt = &g->variant[v], .session = ++g->nconvs};
    uint64_t len = p->prompt_tokens[v], reply = 0;
    for (uint32_t k = 0; k < turns; k++) {
        len += reply + (uint64_t)llround(rm_wl_lognormal(r, p->msg_median, MSG_SIGMA, 5, 2000));
        reply = (uint64_t)llround(rm_wl_lognormal(r, p->reply_median, REPLY_SIGMA, 10, 2000));
        rm_wl_emit(g->bt, &g->next_id, &c, t_ms, len, reply);
        t_ms +=
            (uint64_t)llround(1000.0 * (double)reply / p->decode_tps) +
            (uint64_t)llround(1000 * rm_wl_lognormal(r, p->think_median_s, THINK_SIGMA, 2, 600));
    }
    rm_wl_context_free(&c);
}

void rm_chat_generate(uint64_t seed, size_t requests, rm_block_trace *bt, rm_chat_info *info)
{
    rm_chat_params p;
    rm_chat_params_draw(seed, &p);
    gen g = {.p = &p, .bt = bt};
    rm_wl_prompt head;
    rm_wl_prompt_make(&head, p.head_tokens, NULL, &g.next_id);
    for (uint32_t v = 0; v < p.variants; v++)
        rm_wl_prompt_make(&g.variant[v], p.prompt_tokens[v], &head, &g.next_id);
    /* Mean conversation length on the trace clock, for the arrival rate. */
    double turn_ms = 1000 * (rm_wl_lognormal_mean(p.reply_median, REPLY_SIGMA) / p.decode_tps +
                             rm_wl_lognormal_mean(p.think_median_s, THINK_SIGMA));
    rm_wl_sessions(bt, seed, requests, (1 + p.mean_turns) * turn_ms / p.in_flight, conversation,
                   &g);
    for (size_t j = 0; j < bt->n; j++)
        g.convs[bt->req[j].session - 1].requests++;
    rm_wl_prompt_free(&head);
    for (uint32_t v = 0; v < p.variants; v++)
        rm_wl_prompt_free(&g.variant[v]);
    if (info)
        *info = (rm_chat_info){p, g.convs, g.nconvs};
    else
        free(g.convs);
}

void rm_chat_info_free(rm_chat_info *info)
{
    free(info->convs);
    memset(info, 0, sizeof *info);
}
