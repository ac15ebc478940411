/* server_completion.c -- POST /v1/completions: a request's job handed to
 * the inference thread, and its answer, whole or as Server-Sent Events as
 * its tokens come back (server_internal.h). Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "server_internal.h"

static void send_chunk(ws_conn *c, const char *data, size_t len)
{
    if (!c->chunked) {
        ws_send_buf(c, rm_xstrndup(data, len), len);
        return;
    }
    rm_sbuf b = {0};
    rm_sbuf_printf(&b, "%zx\r\n", len);
    rm_sbuf_append(&b, data, len);
    rm_sbuf_append(&b, "\r\n", 2);
    ws_send_buf(c, b.p, b.len);
}

static rm_api_meta meta_of(ws_conn *c)
{
    return (rm_api_meta){c->id, c->s->model->name, c->created};
}

static rm_api_usage usage_of(const rm_job *j)
{
    return (rm_api_usage){j->result.prompt_tokens, (uint32_t)j->result.n_tokens,
                          j->result.cached_tokens};
}

/* One stream event for ids[0, n) (n may be 0); the final one carries the
 * finish reason and what the text decoder still held. */
static void stream_event(ws_conn *c, const rm_job *j, const uint32_t *ids, size_t n, int final)
{
    rm_api_meta m = meta_of(c);
    rm_sbuf text = {0};
    rm_sbuf_append(&text, "", 0);
    rm_bytetok_text_feed(&c->text, ids, n, &text);
    if (final)
        rm_bytetok_text_flush(&c->text, &text);
    size_t len;
    char *ev = rm_api_stream_event(&m, text.p, text.len, ids, n, c->with_ids,
                                   final ? rm_api_finish_reason(j->result.finish) : NULL, &len);
    send_chunk(c, ev, len);
    free(ev);
    free(text.p);
    c->final_sent |= final;
}

/* Events for tokens [c->sent, ntok), one per token as they come; once the
 * job is done the last carries the finish reason -- or, when every token
 * went out before the job ended, an event with no token does. */
static void stream_tokens(ws_conn *c, const rm_job *j, size_t ntok, int done)
{
    for (; c->sent < ntok; c->sent++)
        stream_event(c, j, &j->tokens[c->sent], 1, done && c->sent + 1 == ntok);
    if (done && !c->final_sent)
        stream_event(c, j, NULL, 0, 1);
}

static void stream_end(ws_conn *c, rm_job *j)
{
    if (c->include_usage) {
        rm_api_meta m = meta_of(c);
        rm_api_usage u = usage_of(j);
        size_t len;
        char *ev = rm_api_stream_usage_event(&m, &u, &len);
        send_chunk(c, ev, len);
        free(ev);
    }
    send_chunk(c, RM_API_STREAM_DONE, strlen(RM_API_STREAM_DONE));
    if (c->chunked)
        ws_send_buf(c, rm_xstrndup("0\r\n\r\n", 5), 5);
    else
        c->keep = 0; /* an HTTP/1.0 stream ends with the connection */
}

static void answer_whole(ws_conn *c, rm_job *j)
{
    rm_sbuf text = {0};
    rm_sbuf_append(&text, "", 0);
    rm_bytetok_text_feed(&c->text, j->result.tokens, j->result.n_tokens, &text);
    rm_bytetok_text_flush(&c->text, &text);
    rm_api_meta m = meta_of(c);
    rm_api_usage u = usage_of(j);
    size_t len;
    char *body =
        rm_api_completion_json(&m, text.p, text.len, j->result.tokens, j->result.n_tokens,
                               c->with_ids, rm_api_finish_reason(j->result.finish), &u, &len);
    ws_respond(c, 200, "application/json", body, len, NULL, 0);
    free(body);
    free(text.p);
}

/* A request computed without the cluster says why, at most once a second
 * (a node that is down would otherwise fill the log). */
static void log_cache_error(ws_srv *s, const rm_job *j)
{
    if (j->err != RM_GEN_OK || !j->result.cache_error)
        return;
    uint64_t now = rm_now_ms();
    if (now - s->cache_log_ms < 1000 && s->cache_log_ms) {
        s->cache_log_skipped++;
        return;
    }
    rm_log(RM_LOG_WARN, "worker",
           "cache not used for a request: %s (%llu more since the last line)", j->result.cache_msg,
           (unsigned long long)s->cache_log_skipped);
    s->cache_log_ms = now;
    s->cache_log_skipped = 0;
}

/* A job's news, from the inference thread through rm_infer_poll. */
static void on_news(void *arg, rm_job *j, size_t ntok, int done)
{
    ws_srv *s = arg;
    ws_conn *c = j->owner;
    if (!c) { /* its client left */
        if (done) {
            log_cache_error(s, j);
            ws_job_release(s, j);
        }
        ws_drain_step(s);
        return;
    }
    if (c->streaming)
        stream_tokens(c, j, ntok, done && j->result.finish != RM_FINISH_CANCELLED);
    if (!done)
        return;
    log_cache_error(s, j);
    c->job = NULL;
    uv_timer_stop(&c->h.timer);
    if (j->err != RM_GEN_OK || j->result.finish == RM_FINISH_CANCELLED) {
        /* Refused by the engine (checked before: not expected), or
         * cancelled by a drain that ran out of time. */
        if (c->streaming) {
            ws_close_conn(c); /* the only signal left once the head is out */
        } else {
            rm_api_error e;
            rm_api_error_set(&e, 503, "server_error", NULL, "the worker is shutting down");
            c->keep = 0;
            ws_respond_error(c, &e, NULL);
        }
    } else if (c->streaming) {
        stream_end(c, j);
    } else {
        answer_whole(c, j);
    }
    c->streaming = 0;
    ws_job_release(s, j);
    ws_request_done(c);
    ws_pump(c);
    ws_drain_step(s);
}

void ws_on_wake(uv_async_t *a)
{
    ws_srv *s = a->data;
    rm_infer_poll(s->in, on_news, s);
}

void ws_notify(void *arg)
{
    uv_async_send(arg);
}

static uint64_t draw_seed(ws_srv *s)
{
    return rm_mix64(rm_now_ns() ^ (++s->next_id << 32));
}

void ws_completion(ws_conn *c)
{
    ws_srv *s = c->s;
    rm_api_completion req;
    rm_api_error e;
    if (rm_api_parse_completion(c->body.p ? c->body.p : "", c->body.len, s->model, draw_seed(s),
                                &req, &e) != 0) {
        s->refused_bad++;
        ws_respond_error(c, &e, NULL);
        ws_request_done(c);
        return;
    }
    rm_job *j =
        rm_job_new(req.prompt, req.n_prompt, &req.params, s->model->max_context, req.stream);
    req.prompt = NULL; /* the job's now */
    rm_infer_submit_res r = rm_infer_submit(s->in, j);
    if (r != RM_INFER_QUEUED) {
        rm_job_free(j);
        if (r == RM_INFER_FULL) {
            s->refused_full++;
            rm_api_error_set(&e, 503, "server_error", NULL,
                             "%llu requests are waiting already (--max-waiting): retry later",
                             (unsigned long long)s->cfg.max_waiting);
        } else {
            c->keep = 0;
            rm_api_error_set(&e, 503, "server_error", NULL, "the worker is shutting down");
        }
        ws_respond_error(c, &e, "Retry-After: 1\r\n");
        ws_request_done(c);
        return;
    }
    s->njobs++;
    j->owner = c;
    c->job = j;
    c->sent = 0;
    c->final_sent = 0;
    memset(&c->text, 0, sizeof c->text);
    c->with_ids = req.return_token_ids;
    c->include_usage = req.include_usage;
    c->created = (long long)time(NULL);
    snprintf(c->id, sizeof c->id, "cmpl-%016llx", (unsigned long long)rm_mix64(++s->next_id));
    if (req.stream) {
        /* The head goes out now (a gateway waits for it), events follow. */
        c->streaming = 1;
        c->chunked = !(c->parser.http_major == 1 && c->parser.http_minor == 0);
        if (!c->chunked)
            c->keep = 0;
        rm_sbuf b = {0};
        rm_sbuf_printf(&b,
                       "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: "
                       "no-cache\r\n%sConnection: %s\r\n\r\n",
                       c->chunked ? "Transfer-Encoding: chunked\r\n" : "",
                       c->keep ? "keep-alive" : "close");
        ws_send_buf(c, b.p, b.len);
    }
}
