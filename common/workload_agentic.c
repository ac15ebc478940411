#include "workload_agentic.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "workload.h"

enum { P_PARAMS = 1 };

/* Log-space sigmas of the fixed-shape draws (see the header). */
#define REPLY_SIGMA 0.8
#define TOOL_SIGMA  1.0
#define HUMAN_SIGMA 0.8

void rm_agentic_params_draw(uint64_t seed, rm_agentic_params *p)
{
    rm_wl_rng r = rm_wl_stream(seed, P_PARAMS, 0);
    memset(p, 0, sizeof *p);
    p->versions = (uint32_t)rm_wl_int(&r, 3, RM_AGENTIC_MAX_VERSIONS);
    rm_wl_halving_shares(p->version_share, p->versions, rm_wl_uniform(&r, 0.55, 0.80));
    for (uint32_t v = 0; v < p->versions; v++) {
        p->tool_prompt_tokens[v] = (uint32_t)rm_wl_int(&r, 8000, 16000);
        p->sub_prompt_tokens[v] = (uint32_t)rm_wl_int(&r, 2000, 6000);
    }
    p->sub_same_prompt = rm_wl_uniform(&r, 0.3, 0.7);
    p->in_flight = rm_wl_uniform(&r, 12, 32);
    p->min_requests = (uint32_t)rm_wl_int(&r, 10, 20);
    p->max_requests = (uint32_t)rm_wl_int(&r, 30, 50);
    p->final_lo = rm_wl_uniform(&r, 100e3, 150e3);
    p->final_hi = rm_wl_uniform(&r, 500e3, 700e3);
    p->msg_sigma = rm_wl_uniform(&r, 0.6, 1.0);
    p->reply_median = rm_wl_uniform(&r, 250, 600);
    p->decode_tps = rm_wl_uniform(&r, 40, 100);
    p->tool_median_s = rm_wl_uniform(&r, 2, 6);
    p->human_share = rm_wl_uniform(&r, 0.10, 0.25);
    p->human_median_s = rm_wl_uniform(&r, 30, 90);
    p->spawn_prob = rm_wl_uniform(&r, 0.01, 0.04);
}

typedef struct gen {
    const rm_agentic_params *p;
    rm_block_trace *bt;
    uint64_t next_id;
    rm_wl_prompt tool[RM_AGENTIC_MAX_VERSIONS], sub[RM_AGENTIC_MAX_VERSIONS];
    rm_agentic_session *sess; /* sess[i] has id i + 1 */
    size_t nsess, sess_cap;
} gen;

static uint64_t new_session(gen *g, uint64_t parent, uint32_t version, uint32_t prompt_tokens)
{
    g->sess = rm_xgrow(g->sess, g->nsess, &g->sess_cap, sizeof *g->sess, 64);
    g->sess[g->nsess] = (rm_agentic_session){
        .id = g->nsess + 1, .parent = parent, .version = version, .prompt_tokens = prompt_tokens};
    return ++g->nsess;
}

static void session_done(gen *g, uint64_t id, uint32_t planned, uint64_t final_tokens)
{
    g->sess[id - 1].planned = planned;
    g->sess[id - 1].final_tokens = final_tokens;
}

static uint64_t reply_tokens(const rm_agentic_params *p, rm_wl_rng *r)
{
    return (uint64_t)llround(rm_wl_lognormal(r, p->reply_median, REPLY_SIGMA, 30, 4000));
}

static uint64_t generation_ms(const rm_agentic_params *p, uint64_t reply)
{
    return (uint64_t)llround(1000.0 * (double)reply / p->decode_tps);
}

static uint64_t tool_ms(const rm_agentic_params *p, rm_wl_rng *r)
{
    return (uint64_t)llround(1000 * rm_wl_lognormal(r, p->tool_median_s, TOOL_SIGMA, 0.3, 120));
}

/* A tool run, or now and then a human reading and typing. */
static uint64_t think_ms(const rm_agentic_params *p, rm_wl_rng *r)
{
    if (rm_wl_unit(r) < p->human_share)
        return (uint64_t)llround(1000 * rm_wl_lognormal(r, p->human_median_s, HUMAN_SIGMA, 5, 900));
    return tool_ms(p, r);
}

/* A sub-agent starting at t_ms; returns when it is done, its result (last
 * reply) in *result. */
static uint64_t sub_agent(gen *g, rm_wl_rng *r, uint64_t parent, uint32_t v, uint64_t t_ms,
                          uint64_t *result)
{
    const rm_agentic_params *p = g->p;
    int same = rm_wl_unit(r) < p->sub_same_prompt;
    uint32_t pt = same ? p->tool_prompt_tokens[v] : p->sub_prompt_tokens[v];
    rm_wl_context c = {.prompt = same ? &g->tool[v] : &g->sub[v],
                       .session = new_session(g, parent, v, pt)};
    uint64_t len = pt + (uint64_t)llround(rm_wl_lognormal(r, 2500, 0.8, 500, 10000));
    uint32_t m = (uint32_t)rm_wl_int(r, 2, 10);
    uint64_t reply = 0;
    for (uint32_t j = 0; j < m; j++) {
        if (j > 0)
            len += reply + (uint64_t)llround(rm_wl_lognormal(r, 3000, 1.0, 100, 30000));
        reply = reply_tokens(p, r);
        rm_wl_emit(g->bt, &g->next_id, &c, t_ms, len, reply);
        t_ms += generation_ms(p, reply) + (j + 1 < m ? tool_ms(p, r) : 0);
    }
    session_done(g, c.session, m, len);
    rm_wl_context_free(&c);
    *result = reply;
    return t_ms;
}

static void main_session(void *ctx, rm_wl_rng *r, uint64_t i, uint64_t t_ms)
{
    (void)i;
    gen *g = ctx;
    const rm_agentic_params *p = g->p;
    uint32_t v = rm_wl_pick(p->version_share, p->versions, rm_wl_unit(r));
    uint64_t tool = p->tool_prompt_tokens[v];
    uint64_t start = rm_wl_int(r, 15000, 25000);
    start = start < tool + 3000 ? tool + 3000 : start;
    uint32_t n = (uint32_t)rm_wl_int(r, p->min_requests, p->max_requests);
    double final = rm_wl_loguniform(r, p->final_lo, p->final_hi);
    uint64_t *reply = rm_xmalloc(sizeof *reply * n), *msg = rm_xmalloc(sizeof *msg * n);
    double *w = rm_xmalloc(sizeof *w * n), wsum = 0, replies = 0;
    for (uint32_t k = 0; k < n; k++) {
        reply[k] = reply_tokens(p, r);
        replies += k + 1 < n ? (double)reply[k] : 0;
        w[k] = k ? rm_wl_lognormal(r, 1.0, p->msg_sigma, 0.02, 50) : 0;
        wsum += w[k];
    }
    /* The messages share what the replies leave of the growth to `final`. */
    double budget = final - (double)start - replies;
    budget = budget < 50.0 * n ? 50.0 * n : budget;
    for (uint32_t k = 1; k < n; k++) {
        double m = budget * w[k] / wsum;
        msg[k] = m < 50 ? 50 : (uint64_t)llround(m);
    }
    rm_wl_context c = {.prompt = &g->tool[v], .session = new_session(g, 0, v, (uint32_t)tool)};
    uint64_t len = start, results = 0;
    for (uint32_t k = 0; k < n; k++) {
        if (k > 0)
            len += reply[k - 1] + msg[k] + results;
        rm_wl_emit(g->bt, &g->next_id, &c, t_ms, len, reply[k]);
        t_ms += generation_ms(p, reply[k]);
        results = 0;
        if (k + 1 < n && rm_wl_unit(r) < p->spawn_prob) {
            uint32_t subs = (uint32_t)rm_wl_int(r, 1, 3);
            uint64_t done = t_ms;
            for (uint32_t j = 0; j < subs; j++) {
                uint64_t res, end = sub_agent(g, r, c.session, v, t_ms, &res);
                done = end > done ? end : done;
                results += res;
            }
            t_ms = done + tool_ms(p, r);
        } else {
            t_ms += think_ms(p, r);
        }
    }
    session_done(g, c.session, n, len);
    rm_wl_context_free(&c);
    free(reply);
    free(msg);
    free(w);
}

/* Mean length of a main session on the trace clock, for the arrival rate. */
static double mean_session_ms(const rm_agentic_params *p)
{
    double reply = rm_wl_lognormal_mean(p->reply_median, REPLY_SIGMA);
    double tool = rm_wl_lognormal_mean(p->tool_median_s, TOOL_SIGMA);
    double human = rm_wl_lognormal_mean(p->human_median_s, HUMAN_SIGMA);
    double gap = reply / p->decode_tps + (1 - p->human_share) * tool + p->human_share * human;
    return 1000 * (p->min_requests + p->max_requests) / 2.0 * gap;
}

void rm_agentic_generate(uint64_t seed, size_t requests, rm_block_trace *bt, rm_agentic_info *info)
{
    rm_agentic_params p;
    rm_agentic_params_draw(seed, &p);
    gen g = {.p = &p, .bt = bt};
    for (uint32_t v = 0; v < p.versions; v++) {
        rm_wl_prompt_make(&g.tool[v], p.tool_prompt_tokens[v], NULL, &g.next_id);
        rm_wl_prompt_make(&g.sub[v], p.sub_prompt_tokens[v], NULL, &g.next_id);
    }
    rm_wl_sessions(bt, seed, requests, mean_session_ms(&p) / p.in_flight, main_session, &g);
    for (size_t j = 0; j < bt->n; j++)
        g.sess[bt->req[j].session - 1].requests++;
    for (uint32_t v = 0; v < p.versions; v++) {
        rm_wl_prompt_free(&g.tool[v]);
        rm_wl_prompt_free(&g.sub[v]);
    }
    if (info)
        *info = (rm_agentic_info){p, g.sess, g.nsess};
    else
        free(g.sess);
}

void rm_agentic_info_free(rm_agentic_info *info)
{
    free(info->sessions);
    memset(info, 0, sizeof *info);
}
