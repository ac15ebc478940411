/* radixmesh-chat: replays a small chat workload against an OpenAI-compatible
 * /v1/completions endpoint (a gateway router, or a radixmesh-worker), and
 * reports what the worker said about its prefix cache.
 *
 * The workload: --conversations conversations behind one shared system
 * prompt (--system-bytes of text), each of --turns turns. Turn k's prompt
 * is the system prompt, every earlier user message with the reply it got,
 * and the new user message (--user-bytes), as text:
 *
 *   System: <system prompt>\n
 *   User: <message 1>\nAssistant:<reply 1>\n
 *   User: <message k>\nAssistant:
 *
 * Conversations run --concurrency at a time, each turn after the last
 * one's reply. Every request is streamed (TTFT measured here: request sent
 * -> first token event) with stream_options.include_usage, so the usage's
 * prompt_tokens_details.cached_tokens gives the worker's own hit rate.
 * Texts and sampling seeds follow --seed, so two runs against workers with
 * the same model give the same replies (the tests compare them, with and
 * without the cache). With --json every request is printed as one JSON
 * line (conversation, turn, status, tokens, ttft_ms, text), then the
 * summary. With --router-http (a gateway router's --http), it then reads
 * the router's /api/cluster once the router has seen the whole run (the
 * workers' scraped query tokens reach the run's prompt tokens, and the
 * nodes' counters have stopped moving) and prints both hit rates: the one
 * the router predicts from its nodes and the workers' own. */
#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "flags.h"
#include "util.h"

typedef struct opts {
    const char *url, *model, *router_http;
    uint64_t conversations, turns, concurrency, system_bytes, user_bytes, max_tokens, seed;
    uint64_t timeout_ms, wait_workers;
    double temperature;
    int json;
} opts;

/* One request's outcome. */
typedef struct turn_rec {
    int status;
    uint32_t prompt_tokens, cached_tokens, completion_tokens;
    double ttft_ms;
    char *text; /* the reply (may hold NUL bytes: text_len) */
    size_t text_len;
    char *error; /* the server's message, or why it failed */
} turn_rec;

typedef struct run {
    const opts *o;
    char host[256], rhost[256];
    int port, rport;
    char *system;
    turn_rec *recs; /* conversations x turns */
    pthread_mutex_t mu;
    uint64_t next; /* the next conversation to run */
} run;

/* ---- the workload's text ------------------------------------------------------ */

static const char *const words[] = {
    "the",     "cluster", "cache",   "prefix", "token",   "answer", "question", "model",
    "request", "memory",  "node",    "router", "shared",  "system", "prompt",   "reply",
    "please",  "explain", "why",     "how",    "when",    "page",   "lease",    "worker",
    "fast",    "slow",    "latency", "budget", "careful", "short",  "summary",  "detail"};

/* About n bytes of words drawn from seed. */
static void words_of(uint64_t seed, size_t n, rm_sbuf *b)
{
    size_t start = b->len;
    for (uint64_t i = 0; b->len - start < n; i++) {
        const char *w = words[rm_mix64(seed + i) % RM_ARRAY_LEN(words)];
        rm_sbuf_printf(b, "%s%s", b->len > start ? " " : "", w);
    }
}

/* ---- a blocking HTTP/1.1 client ----------------------------------------------- */

typedef struct client {
    const run *r;
    const char *host;
    int port;
    int fd;
} client;

typedef struct exchange {
    http_parser parser;
    int done;
    rm_sbuf line; /* the SSE line being read */
    rm_sbuf body; /* a non-SSE body (an error) */
    turn_rec *rec;
    rm_sbuf text;
    uint64_t t0;
    int whole; /* a plain GET: the body is kept whole */
} exchange;

static void client_close(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static int client_connect(client *c)
{
    char port[16];
    snprintf(port, sizeof port, "%d", c->port);
    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(c->host, port, &hints, &ai) != 0)
        return -1;
    c->fd = socket(ai->ai_family, SOCK_STREAM, 0);
    int ok = c->fd >= 0 && connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0;
    freeaddrinfo(ai);
    if (!ok) {
        client_close(c);
        return -1;
    }
    struct timeval tv = {(time_t)(c->r->o->timeout_ms / 1000),
                         (suseconds_t)(c->r->o->timeout_ms % 1000) * 1000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return 0;
}

/* One "data: ..." line of the stream. */
static void sse_line(exchange *x, const char *line, size_t len)
{
    if (len < 6 || memcmp(line, "data: ", 6) || (len == 12 && !memcmp(line, "data: [DONE]", 12)))
        return;
    json_t *ev = json_loadb(line + 6, len - 6, JSON_ALLOW_NUL, NULL);
    if (!ev)
        return;
    json_t *choice = json_array_get(json_object_get(ev, "choices"), 0);
    if (choice) {
        if (x->rec->ttft_ms < 0)
            x->rec->ttft_ms = (double)(rm_now_ns() - x->t0) / 1e6;
        json_t *t = json_object_get(choice, "text");
        if (json_is_string(t))
            rm_sbuf_append(&x->text, json_string_value(t), json_string_length(t));
    }
    json_t *u = json_object_get(ev, "usage");
    if (json_is_object(u)) {
        x->rec->prompt_tokens = (uint32_t)json_integer_value(json_object_get(u, "prompt_tokens"));
        x->rec->completion_tokens =
            (uint32_t)json_integer_value(json_object_get(u, "completion_tokens"));
        x->rec->cached_tokens = (uint32_t)json_integer_value(
            json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
    }
    json_decref(ev);
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    exchange *x = p->data;
    if (p->status_code != 200 || x->whole) {
        rm_sbuf_append(&x->body, at, len);
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (at[i] == '\n') {
            sse_line(x, x->line.p ? x->line.p : "", x->line.len);
            x->line.len = 0;
        } else {
            rm_sbuf_append(&x->line, at + i, 1);
        }
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    ((exchange *)p->data)->done = 1;
    return 0;
}

static void set_error(turn_rec *rec, const char *fmt, const char *arg)
{
    rm_sbuf b = {0};
    rm_sbuf_printf(&b, fmt, arg);
    free(rec->error);
    rec->error = b.p;
}

/* POSTs body to /v1/completions (or GETs path when body is NULL: the
 * body then ends in rec->text); fills rec. Returns 0 once a response was
 * read (any status), -1 on a connection failure before any answer (the
 * caller may retry on a new connection). */
static int exchange_with(client *c, const char *path, const char *body, size_t blen, turn_rec *rec)
{
    if (c->fd < 0 && client_connect(c) != 0) {
        set_error(rec, "cannot connect to %s", c->host);
        return -1;
    }
    rm_sbuf req = {0};
    if (body)
        rm_sbuf_printf(&req,
                       "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: "
                       "application/json\r\nContent-Length: %zu\r\n\r\n",
                       path, c->host, c->port, blen);
    else
        rm_sbuf_printf(&req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path, c->host, c->port);
    rm_sbuf_append(&req, body ? body : "", blen);
    exchange x;
    memset(&x, 0, sizeof x);
    x.whole = !body;
    x.rec = rec;
    x.t0 = rm_now_ns();
    rec->ttft_ms = -1;
    size_t off = 0;
    while (off < req.len) {
        ssize_t n = send(c->fd, req.p + off, req.len - off, MSG_NOSIGNAL);
        if (n <= 0) {
            free(req.p);
            client_close(c);
            set_error(rec, "%s", "the connection failed while sending");
            return -1;
        }
        off += (size_t)n;
    }
    free(req.p);
    http_parser_settings st;
    http_parser_settings_init(&st);
    st.on_body = on_body;
    st.on_message_complete = on_message_complete;
    http_parser_init(&x.parser, HTTP_RESPONSE);
    x.parser.data = &x;
    char buf[16384];
    int got_any = 0, rc = 0;
    while (!x.done) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n <= 0) {
            if (n == 0)
                http_parser_execute(&x.parser, &st, buf, 0); /* EOF ends a close-delimited body */
            if (!x.done) {
                set_error(rec, "%s", n == 0 ? "the server closed the connection" : strerror(errno));
                rc = got_any ? 0 : -1;
                rec->status = got_any ? (int)x.parser.status_code : 0;
                client_close(c);
                goto out;
            }
            break;
        }
        got_any = 1;
        size_t done = http_parser_execute(&x.parser, &st, buf, (size_t)n);
        if (HTTP_PARSER_ERRNO(&x.parser) != HPE_OK || done != (size_t)n) {
            set_error(rec, "%s", "a malformed response");
            client_close(c);
            rec->status = 0;
            goto out;
        }
    }
    rec->status = (int)x.parser.status_code;
    if (x.whole) {
        rm_sbuf_append(&x.body, "", 0);
        free(x.text.p);
        x.text = x.body;
        memset(&x.body, 0, sizeof x.body);
    } else if (rec->status != 200) {
        json_t *e = json_loadb(x.body.p ? x.body.p : "", x.body.len, 0, NULL);
        const char *msg =
            json_string_value(json_object_get(json_object_get(e, "error"), "message"));
        set_error(rec, "%s", msg ? msg : "(no message)");
        json_decref(e);
    }
    rm_sbuf_append(&x.text, "", 0);
    rec->text = x.text.p;
    rec->text_len = x.text.len;
    x.text.p = NULL;
    if (!http_should_keep_alive(&x.parser))
        client_close(c);
out:
    free(x.text.p);
    free(x.line.p);
    free(x.body.p);
    return rc;
}

/* ---- conversations --------------------------------------------------------------- */

static void conversation(run *r, client *c, uint64_t conv)
{
    const opts *o = r->o;
    rm_sbuf prompt = {0};
    rm_sbuf_printf(&prompt, "System: %s\n", r->system);
    for (uint64_t k = 0; k < o->turns; k++) {
        turn_rec *rec = &r->recs[conv * o->turns + k];
        rm_sbuf_append(&prompt, "User: ", 6);
        words_of(rm_mix64(o->seed ^ (conv << 20) ^ (k << 8) ^ 0x5eed), o->user_bytes, &prompt);
        rm_sbuf_append(&prompt, "\nAssistant:", 11);
        json_t *body =
            json_pack("{s:s, s:s#, s:I, s:f, s:I, s:b, s:{s:b}}", "model", o->model, "prompt",
                      prompt.p, prompt.len, "max_tokens", (json_int_t)o->max_tokens, "temperature",
                      o->temperature, "seed", (json_int_t)(o->seed * 1000003 + conv * 1009 + k),
                      "stream", 1, "stream_options", "include_usage", 1);
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        const char *path = "/v1/completions";
        int rc = exchange_with(c, path, text, strlen(text), rec);
        if (rc != 0 && c->fd < 0) /* a kept-alive connection the server had closed */
            rc = exchange_with(c, path, text, strlen(text), rec);
        free(text);
        if (rec->status != 200 || !rec->text)
            break; /* the conversation cannot go on without its reply */
        rm_sbuf_append(&prompt, rec->text, rec->text_len);
        rm_sbuf_append(&prompt, "\n", 1);
    }
    free(prompt.p);
}

static void *worker_thread(void *arg)
{
    run *r = arg;
    client c = {r, r->host, r->port, -1};
    for (;;) {
        pthread_mutex_lock(&r->mu);
        uint64_t conv = r->next++;
        pthread_mutex_unlock(&r->mu);
        if (conv >= r->o->conversations)
            break;
        conversation(r, &c, conv);
    }
    client_close(&c);
    return NULL;
}

/* ---- report ------------------------------------------------------------------------ */

typedef struct sums {
    uint64_t requests, failed, prompt, cached;
    double ttft_ms;
} sums;

/* /api/cluster of the router, parsed (NULL if it could not be read). */
static json_t *cluster_json(const run *r)
{
    client c = {r, r->rhost, r->rport, -1};
    turn_rec rec = {0};
    json_t *j = NULL;
    if (exchange_with(&c, "/api/cluster", NULL, 0, &rec) == 0 && rec.status == 200)
        j = json_loads(rec.text, 0, NULL);
    client_close(&c);
    free(rec.text);
    free(rec.error);
    return j;
}

static double num(json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

/* The router's view once it has seen the run: the workers' scraped query
 * tokens cover prompt_tokens, and the nodes' counters stopped moving
 * between two reads. Bounded (20 s); NULL if never. */
static json_t *settled_cluster(const run *r, uint64_t prompt_tokens)
{
    double last = -1;
    uint64_t end = rm_now_ms() + 20000;
    json_t *j = NULL;
    while (rm_now_ms() < end) {
        json_decref(j);
        j = cluster_json(r);
        double q = j ? num(j, "query_tokens_total") : -1;
        if (j && num(j, "worker_query_tokens_total") >= (double)prompt_tokens && q > 0 && q == last)
            return j;
        last = q;
        struct timespec ts = {0, 300 * 1000000L}; /* the router's stats interval is 250 ms */
        nanosleep(&ts, NULL);
    }
    json_decref(j);
    return NULL;
}

/* Whether the router has want workers up (healthy sidecar, reachable
 * worker, breaker closed). */
static int workers_up(const run *r, uint64_t want)
{
    json_t *j = cluster_json(r), *n;
    uint64_t up = 0;
    size_t i;
    json_array_foreach(json_object_get(j, "nodes"), i, n) up +=
        json_is_true(json_object_get(n, "healthy")) &&
        json_is_true(json_object_get(n, "worker_healthy"));
    json_decref(j);
    return up >= want;
}

static void print_cluster(const run *r, json_t *j)
{
    printf("  the router's view (dashboard http://%s:%d/):\n", r->rhost, r->rport);
    printf("    predicted hit rate, the nodes' mirror of what the gateway sent: %5.1f%%\n",
           100 * num(j, "hit_rate"));
    json_t *w = json_object_get(j, "worker_hit_rate");
    if (json_is_number(w))
        printf("    the workers' own hit rate, scraped from their /metrics:       %5.1f%%\n",
               100 * json_number_value(w));
    else
        printf("    the workers' own hit rate: not scraped yet\n");
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(j, "nodes"), i, n)
    {
        json_t *wr = json_object_get(n, "worker_hit_rate");
        double q = num(n, "query_tokens_total");
        printf("    %-10s predicted %5.1f%%  worker %s%5.1f%%  %lld gateway requests\n",
               json_string_value(json_object_get(n, "id")),
               q > 0 ? 100 * num(n, "hit_tokens_total") / q : 0.0, json_is_number(wr) ? "" : "?",
               json_is_number(wr) ? 100 * json_number_value(wr) : 0.0,
               (long long)json_integer_value(json_object_get(n, "gateway_requests")));
    }
}

static void report(const run *r)
{
    const opts *o = r->o;
    sums first = {0}, later = {0};
    uint64_t ok = 0, failed = 0, skipped = 0;
    for (uint64_t c = 0; c < o->conversations; c++) {
        for (uint64_t k = 0; k < o->turns; k++) {
            const turn_rec *t = &r->recs[c * o->turns + k];
            if (!t->status && !t->error) {
                skipped++;
                continue;
            }
            if (o->json) {
                json_t *j = json_pack(
                    "{s:I, s:I, s:i, s:I, s:I, s:I, s:f, s:s#, s:s?}", "conversation",
                    (json_int_t)c, "turn", (json_int_t)k + 1, "status", t->status, "prompt_tokens",
                    (json_int_t)t->prompt_tokens, "cached_tokens", (json_int_t)t->cached_tokens,
                    "completion_tokens", (json_int_t)t->completion_tokens, "ttft_ms", t->ttft_ms,
                    "text", t->text ? t->text : "", t->text_len, "error", t->error);
                char *s = json_dumps(j, JSON_COMPACT);
                printf("%s\n", s);
                free(s);
                json_decref(j);
            }
            if (t->status != 200) {
                failed++;
                if (!o->json)
                    fprintf(stderr, "conversation %llu turn %llu: %d %s\n", (unsigned long long)c,
                            (unsigned long long)k + 1, t->status, t->error ? t->error : "");
                continue;
            }
            ok++;
            sums *s = k ? &later : &first;
            s->requests++;
            s->prompt += t->prompt_tokens;
            s->cached += t->cached_tokens;
            s->ttft_ms += t->ttft_ms;
        }
    }
    uint64_t prompt = first.prompt + later.prompt, cached = first.cached + later.cached;
    double rate = prompt ? (double)cached / (double)prompt : 0;
    json_t *cluster = r->rport ? settled_cluster(r, prompt) : NULL;
    if (r->rport && !cluster)
        fprintf(stderr, "radixmesh-chat: the router's /api/cluster did not show the run in 20 s\n");
    if (o->json) {
        json_t *sum =
            json_pack("{s:{s:I, s:I, s:I, s:I, s:I, s:f}}", "summary", "requests", (json_int_t)ok,
                      "failed", (json_int_t)failed, "skipped", (json_int_t)skipped, "prompt_tokens",
                      (json_int_t)prompt, "cached_tokens", (json_int_t)cached, "hit_rate", rate);
        if (cluster)
            json_object_set(json_object_get(sum, "summary"), "cluster", cluster);
        char *s = json_dumps(sum, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(sum);
        json_decref(cluster);
        return;
    }
    printf("chat replay through %s: %llu conversations x %llu turns, %llu at a time, one "
           "%llu-byte system prompt\n",
           o->url, (unsigned long long)o->conversations, (unsigned long long)o->turns,
           (unsigned long long)o->concurrency, (unsigned long long)o->system_bytes);
    printf("  requests: %llu ok, %llu failed%s\n", (unsigned long long)ok,
           (unsigned long long)failed, skipped ? " (their conversations stopped there)" : "");
    printf("  the workers' own hit rate (usage.prompt_tokens_details.cached_tokens): %.1f%% "
           "(%llu of %llu prompt tokens)\n",
           100 * rate, (unsigned long long)cached, (unsigned long long)prompt);
    const struct {
        const char *name;
        const sums *s;
    } rows[] = {{"first turns", &first}, {"later turns", &later}};
    for (size_t i = 0; i < 2; i++)
        if (rows[i].s->requests)
            printf("  %-12s %3llu requests, %5.1f%% cached, mean TTFT %7.1f ms\n", rows[i].name,
                   (unsigned long long)rows[i].s->requests,
                   rows[i].s->prompt ? 100.0 * (double)rows[i].s->cached / (double)rows[i].s->prompt
                                     : 0.0,
                   rows[i].s->ttft_ms / (double)rows[i].s->requests);
    if (cluster)
        print_cluster(r, cluster);
    json_decref(cluster);
}

int main(int argc, char **argv)
{
    opts o = {NULL, "radixmesh-ref", NULL, 8, 3, 2, 1024, 64, 16, 1, 600000, 0, 0.7, 0};
    const rm_flag flags[] = {
        {"url", RM_FLAG_AT(&o.url), "HOST:PORT (or http://HOST:PORT) serving /v1/completions", 0,
         0},
        {"model", RM_FLAG_AT(&o.model), "the model name sent", 0, 0},
        {"conversations", RM_FLAG_AT(&o.conversations), "conversations", 1, 100000},
        {"turns", RM_FLAG_AT(&o.turns), "turns per conversation", 1, 1000},
        {"concurrency", RM_FLAG_AT(&o.concurrency), "conversations in flight at once", 1, 256},
        {"system-bytes", RM_FLAG_AT(&o.system_bytes), "bytes of the shared system prompt", 1,
         1u << 20},
        {"user-bytes", RM_FLAG_AT(&o.user_bytes), "bytes of each user message", 1, 1u << 20},
        {"max-tokens", RM_FLAG_AT(&o.max_tokens), "tokens per reply", 1, 1u << 20},
        {"temperature", RM_FLAG_AT(&o.temperature), "sampling temperature (0: greedy)", 0, 0},
        {"seed", RM_FLAG_AT(&o.seed), "texts and sampling seeds", 0, 0},
        {"timeout-ms", RM_FLAG_AT(&o.timeout_ms), "per request", 100, 86400000},
        {"json", RM_FLAG_AT(&o.json), "one JSON line per request, then the summary", 0, 0},
        {"router-http", RM_FLAG_AT(&o.router_http),
         "a gateway router's --http HOST:PORT: print its predicted and the workers' hit rates", 0,
         0},
        {"wait-workers", RM_FLAG_AT(&o.wait_workers),
         "first wait (60 s at most) until the router (--router-http) has this many workers up", 0,
         1024},
    };
    rm_flagset fs = {"radixmesh-chat", "--url HOST:PORT [options]", "RADIXMESH_CHAT", flags,
                     (int)RM_ARRAY_LEN(flags)};
    rm_flags_parse(&fs, argc, argv, NULL, 0, NULL);
    run r;
    memset(&r, 0, sizeof r);
    r.o = &o;
    if (!o.url)
        rm_flags_fail(&fs, "--url is required");
    if (!(o.temperature >= 0))
        rm_flags_fail(&fs, "--temperature must be >= 0");
    const char *hp = strncmp(o.url, "http://", 7) ? o.url : o.url + 7;
    char hostport[300];
    snprintf(hostport, sizeof hostport, "%s", hp);
    hostport[strcspn(hostport, "/")] = '\0';
    if (rm_parse_hostport(hostport, r.host, sizeof r.host, &r.port) != 0)
        rm_flags_fail(&fs, "--url: expected HOST:PORT, got '%s'", o.url);
    if (o.router_http && rm_parse_hostport(o.router_http, r.rhost, sizeof r.rhost, &r.rport) != 0)
        rm_flags_fail(&fs, "--router-http: expected HOST:PORT, got '%s'", o.router_http);

    if (o.wait_workers) {
        if (!o.router_http)
            rm_flags_fail(&fs, "--wait-workers needs --router-http");
        uint64_t end = rm_now_ms() + 60000;
        while (!workers_up(&r, o.wait_workers)) {
            if (rm_now_ms() > end) {
                fprintf(stderr,
                        "radixmesh-chat: the router at %s has not had %llu workers up "
                        "within 60 s\n",
                        o.router_http, (unsigned long long)o.wait_workers);
                return 1;
            }
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    rm_sbuf sys = {0};
    rm_sbuf_printf(&sys, "You are the assistant of a team that runs a KV cache cluster. ");
    words_of(o.seed, o.system_bytes > sys.len ? o.system_bytes - sys.len : 1, &sys);
    r.system = sys.p;
    r.recs = rm_xcalloc(o.conversations * o.turns, sizeof *r.recs);
    pthread_mutex_init(&r.mu, NULL);
    size_t nt = o.concurrency < o.conversations ? o.concurrency : o.conversations;
    pthread_t *th = rm_xcalloc(nt, sizeof *th);
    for (size_t i = 0; i < nt; i++)
        pthread_create(&th[i], NULL, worker_thread, &r);
    for (size_t i = 0; i < nt; i++)
        pthread_join(th[i], NULL);
    report(&r);
    int bad = 0;
    for (uint64_t i = 0; i < o.conversations * o.turns; i++) {
        bad |= r.recs[i].status != 200;
        free(r.recs[i].text);
        free(r.recs[i].error);
    }
    free(r.recs);
    free(th);
    free(r.system);
    pthread_mutex_destroy(&r.mu);
    return bad ? 1 : 0;
}
