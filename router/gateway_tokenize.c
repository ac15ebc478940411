/* gateway_tokenize.c -- --gateway-tokenize worker: a text prompt's token
 * ids as the engine computes them, from a worker's POST /tokenize, before
 * the request is routed (router/gateway.h). Nodes that follow their
 * workers' KV events mirror the engines' own token ids: routing on
 * pseudo-tokens would never meet them.
 *
 * Which worker: any the router routes to now (the list it publishes,
 * round robin) -- workers of one model share its tokenizer, and the one
 * the request will go to is not chosen yet (it is chosen on these very
 * tokens). One exchange per request on a connection of its own, bounded
 * by tokenize_timeout_ms from the start; any failure (no worker, refused,
 * not 200, not a token list, too slow) routes the request on
 * pseudo-tokens instead, counted. The client's Authorization header goes
 * with it (a worker with an API key wants it on /tokenize too). The
 * HTTP exchange is gateway_link.c's. Gateway thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "gateway_internal.h"

#define MAX_TOKENIZE_HEAD (64 * 1024)

struct gw_tok {
    gw_link link;
    rm_gateway *g;
    gw_req *req; /* NULL once nobody waits for the answer */
    char *body;  /* the request's JSON */
    char *auth;  /* "Authorization: ...\r\n" of the client's request, or NULL */
    rm_sbuf reply;
    size_t max_reply;
    uint64_t started_us;
    gw_tok *prev, *next; /* g->tokenizing while in progress */
};

#define TOK_OF(l) GW_CONTAINER(l, gw_tok, link)

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000;
}

/* Ends the exchange: the request (if it still waits) gets tokens, or NULL
 * and why. */
static void tok_end(gw_tok *t, uint32_t *tokens, size_t n, const char *why)
{
    if (t->link.closing) {
        free(tokens);
        return;
    }
    rm_gateway *g = t->g;
    LIST_DEL(g->tokenizing, t);
    __atomic_fetch_add(&g->c.tokenize_us, now_us() - t->started_us, __ATOMIC_RELAXED);
    gw_req *q = t->req;
    t->req = NULL;
    gw_link_close(&t->link);
    if (q)
        gw_req_tokenized(q, tokens, n, why);
    else
        free(tokens);
}

static void tok_failed(gw_link *l, up_failure f, const char *why)
{
    (void)f;
    char msg[600];
    snprintf(msg, sizeof msg, "%.260s:%d: %.300s", l->host, l->port, why);
    tok_end(TOK_OF(l), NULL, 0, msg);
}

static void tok_connected(gw_link *l)
{
    gw_tok *t = TOK_OF(l);
    size_t blen = strlen(t->body);
    rm_sbuf b = {0};
    rm_sbuf_printf(&b,
                   "POST /tokenize HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                   l->host, l->port, blen, t->auth ? t->auth : "");
    rm_sbuf_append(&b, t->body, blen);
    if (gw_link_send(l, b.p, b.len) != 0)
        tok_failed(l, UPF_CLOSED, "cannot write the request");
}

static int tok_head(gw_link *l, http_parser *p)
{
    (void)p;
    if (l->status == 200)
        return 0;
    char why[96];
    snprintf(why, sizeof why, "answered %d to POST /tokenize", l->status);
    tok_failed(l, UPF_5XX, why);
    return -1;
}

static int tok_body(gw_link *l, const char *at, size_t len)
{
    gw_tok *t = TOK_OF(l);
    if (t->reply.len + len > t->max_reply)
        return -1; /* the link fails: UPF_PROTOCOL */
    rm_sbuf_append(&t->reply, at, len);
    return 0;
}

static void tok_done(gw_link *l, int extra)
{
    gw_tok *t = TOK_OF(l);
    (void)extra; /* the connection closes anyway */
    uint32_t *tokens;
    size_t n;
    char err[256];
    if (rm_openai_tokens_reply(t->reply.p ? t->reply.p : "", t->reply.len,
                               t->g->cfg.max_prompt_tokens, &tokens, &n, err, sizeof err) != 0) {
        tok_failed(l, UPF_PROTOCOL, err);
        return;
    }
    tok_end(t, tokens, n, NULL);
}

static void tok_timer(gw_link *l)
{
    char why[96];
    snprintf(why, sizeof why, "no answer to POST /tokenize within %u ms",
             TOK_OF(l)->g->cfg.tokenize_timeout_ms);
    tok_failed(l, UPF_TIMEOUT, why);
}

static void tok_freed(gw_link *l)
{
    gw_tok *t = TOK_OF(l);
    free(t->body);
    free(t->auth);
    free(t->reply.p);
    free(t);
}

static const gw_link_ops tok_ops = {tok_connected, tok_head,  tok_body, tok_done,
                                    tok_failed,    tok_timer, tok_freed};

/* The client's Authorization line among q's forwarded headers, or NULL. */
static char *auth_line(const gw_req *q)
{
    const char *h = q->head ? strstr(q->head, "\r\n") : NULL;
    while (h && h[2] && !(h[2] == '\r' && h[3] == '\n')) {
        const char *line = h + 2, *end = strstr(line, "\r\n");
        if (!end)
            break;
        if (!strncasecmp(line, "authorization:", 14))
            return rm_xstrndup(line, (size_t)(end - line) + 2);
        h = end;
    }
    return NULL;
}

void gw_tokenize_start(gw_req *q, char *body)
{
    rm_gateway *g = q->g;
    gw_tok *t = rm_xcalloc(1, sizeof *t);
    t->g = g;
    t->req = q;
    t->body = body;
    t->auth = auth_line(q);
    /* Up to 11 bytes an id ("4294967295,"), plus the other fields. */
    t->max_reply = g->cfg.max_prompt_tokens * 11 + 4096;
    t->started_us = now_us();
    q->tok = t;
    rm_worker_ref *w;
    size_t nw = rm_router_workers(g->router, &w), pick = nw;
    for (size_t i = 0; i < nw && pick == nw; i++)
        if (w[(g->tok_next + i) % nw].up)
            pick = (g->tok_next + i) % nw;
    const char *host = pick < nw ? w[pick].host : "";
    int port = pick < nw ? w[pick].port : 0;
    g->tok_next = (uint32_t)(pick + 1);
    gw_link_init(&t->link, &g->loop, &tok_ops, host, port, MAX_TOKENIZE_HEAD);
    free(w);
    LIST_ADD(g->tokenizing, t);
    if (pick == nw) {
        tok_end(t, NULL, 0, "no worker the gateway routes to");
        return;
    }
    gw_link_arm(&t->link, g->cfg.tokenize_timeout_ms, 0);
    gw_link_connect(&t->link);
}

void gw_tokenize_detach(gw_req *q)
{
    if (!q->tok)
        return;
    q->tok->req = NULL;
    tok_end(q->tok, NULL, 0, NULL);
    q->tok = NULL;
}

void gw_tokenize_close_all(rm_gateway *g)
{
    while (g->tokenizing)
        tok_end(g->tokenizing, NULL, 0, "the gateway is stopping");
}
