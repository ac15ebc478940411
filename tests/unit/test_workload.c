/* Unit tests for the generated workloads (common/workload*.c) and the
 * Mooncake-form traces they make (common/trace.c): each is deterministic
 * for a seed and differs across seeds, and the shapes their headers claim
 * hold in the traces: tool prompt lengths and sharing, context growth with
 * replies resent, sub-agents on their parent's prompt, think times,
 * overlapping sessions, sessions larger than a node's pool; written and
 * reloaded they give the same tokens; output lengths load and scale. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "trace.h"
#include "workload.h"
#include "workload_agentic.h"
#include "workload_chat.h"

static int same_block_traces(const rm_block_trace *a, const rm_block_trace *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const rm_block_req *x = &a->req[i], *y = &b->req[i];
        if (x->timestamp_ms != y->timestamp_ms || x->input_length != y->input_length ||
            x->output_length != y->output_length || x->session != y->session ||
            x->nblocks != y->nblocks ||
            memcmp(x->hash_ids, y->hash_ids, sizeof(uint64_t) * x->nblocks) != 0)
            return 0;
    }
    return 1;
}

static void test_deterministic_per_seed(void)
{
    const char *names[] = {"agentic", "chat"};
    for (int k = 0; k < 2; k++) {
        rm_block_trace a, b, c;
        REQUIRE(rm_workload_blocks(names[k], 7, 600, &a) == 0);
        REQUIRE(rm_workload_blocks(names[k], 7, 600, &b) == 0);
        REQUIRE(rm_workload_blocks(names[k], 8, 600, &c) == 0);
        CHECK_EQ(a.n, 600);
        CHECK(same_block_traces(&a, &b));
        CHECK(!same_block_traces(&a, &c));
        /* A longer trace of the same seed starts with the shorter one. */
        rm_block_trace longer;
        REQUIRE(rm_workload_blocks(names[k], 7, 900, &longer) == 0);
        rm_block_trace_truncate(&longer, 600);
        CHECK(same_block_traces(&a, &longer));
        rm_block_trace_free(&a);
        rm_block_trace_free(&b);
        rm_block_trace_free(&c);
        rm_block_trace_free(&longer);
    }
    CHECK(rm_workload_blocks("builtin", 7, 10, &(rm_block_trace){0}) == -1);
    CHECK(rm_workload_blocks("nope", 7, 10, &(rm_block_trace){0}) == -1);
}

static void test_parameters_vary_within_their_ranges(void)
{
    int versions_seen[RM_AGENTIC_MAX_VERSIONS + 1] = {0};
    double lo_share = 1, hi_share = 0;
    for (uint64_t seed = 0; seed < 200; seed++) {
        rm_agentic_params p;
        rm_agentic_params_draw(seed, &p);
        CHECK(p.versions >= 3 && p.versions <= RM_AGENTIC_MAX_VERSIONS);
        versions_seen[p.versions]++;
        double sum = 0;
        for (uint32_t v = 0; v < p.versions; v++) {
            CHECK(p.tool_prompt_tokens[v] >= 8000 && p.tool_prompt_tokens[v] <= 16000);
            CHECK(p.sub_prompt_tokens[v] >= 2000 && p.sub_prompt_tokens[v] <= 6000);
            CHECK(v == 0 || p.version_share[v] < p.version_share[0]);
            sum += p.version_share[v];
        }
        CHECK(fabs(sum - 1) < 1e-9);
        CHECK(p.version_share[0] >= 0.55 && p.version_share[0] <= 0.80);
        lo_share = p.version_share[0] < lo_share ? p.version_share[0] : lo_share;
        hi_share = p.version_share[0] > hi_share ? p.version_share[0] : hi_share;
        CHECK(p.final_lo >= 100e3 && p.final_hi <= 700e3 && p.final_lo < p.final_hi);
        CHECK(p.min_requests >= 10 && p.max_requests <= 50);
        rm_chat_params c;
        rm_chat_params_draw(seed, &c);
        CHECK(c.variants >= 2 && c.variants <= RM_CHAT_MAX_VARIANTS);
        for (uint32_t v = 0; v < c.variants; v++) {
            CHECK(c.prompt_tokens[v] >= 512 && c.prompt_tokens[v] <= 2048);
            CHECK(c.head_tokens < c.prompt_tokens[v]);
        }
    }
    /* The ranges are used, not one value: held-out seeds differ. */
    CHECK(versions_seen[3] > 0 && versions_seen[4] > 0 && versions_seen[5] > 0);
    CHECK(hi_share - lo_share > 0.15);
}

/* Requests of session s, in trace order, into out (capacity cap). */
static size_t session_reqs(const rm_block_trace *bt, uint64_t s, const rm_block_req **out,
                           size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < bt->n && n < cap; i++)
        if (bt->req[i].session == s)
            out[n++] = &bt->req[i];
    return n;
}

/* a's full blocks are the first blocks of b: b resent a's whole prompt. */
static int full_blocks_prefix(const rm_block_req *a, const rm_block_req *b)
{
    size_t full = a->input_length / RM_WL_BLOCK;
    return b->nblocks >= full && !memcmp(a->hash_ids, b->hash_ids, sizeof(uint64_t) * full);
}

/* A session's requests rq[0..n): every reply in [reply_min, reply_max]
 * tokens; every prompt after the first resends the one before and its
 * reply (all their full blocks) and adds a message of msg_min .. msg_max
 * tokens, at least gap_ms later. */
static void check_session(const rm_block_req *const *rq, size_t n, uint32_t reply_min,
                          uint32_t reply_max, uint64_t msg_min, uint64_t msg_max, uint64_t gap_ms)
{
    for (size_t k = 0; k < n; k++) {
        CHECK(rq[k]->output_length >= reply_min && rq[k]->output_length <= reply_max);
        if (k == 0)
            continue;
        uint64_t context = rq[k - 1]->input_length + rq[k - 1]->output_length;
        CHECK(rq[k]->input_length >= context + msg_min);
        CHECK(rq[k]->input_length - context <= msg_max);
        CHECK(full_blocks_prefix(rq[k - 1], rq[k]));
        CHECK(rq[k]->timestamp_ms >= rq[k - 1]->timestamp_ms + gap_ms);
    }
}

/* Every session of a kind opens with the same `full` blocks as the first
 * one seen (*opener, set by that first call). */
static void check_same_opening(const rm_block_req **opener, const rm_block_req *first, size_t full)
{
    if (!*opener)
        *opener = first;
    CHECK(!memcmp((*opener)->hash_ids, first->hash_ids, sizeof(uint64_t) * full));
}

/* Mooncake ids: a full block's id names one position (its content includes
 * everything before it), a partial last block's id is used once. And the
 * trace has the n requests asked for. */
static void check_mooncake_ids(const rm_block_trace *bt, size_t n)
{
    REQUIRE(bt->n == n);
    size_t total = 0;
    for (size_t i = 0; i < bt->n; i++)
        total += bt->req[i].nblocks;
    uint64_t *pos = calloc(total * 4 + 16, sizeof *pos); /* id -> position+1, by id */
    uint64_t *uses = calloc(total * 4 + 16, sizeof *uses);
    int ok_pos = 1, ok_partial = 1;
    for (size_t i = 0; i < bt->n; i++)
        for (size_t b = 0; b < bt->req[i].nblocks; b++) {
            uint64_t id = bt->req[i].hash_ids[b];
            REQUIRE(id < total * 4 + 16);
            if (pos[id] && pos[id] != b + 1)
                ok_pos = 0;
            pos[id] = b + 1;
            uses[id]++;
        }
    for (size_t i = 0; i < bt->n; i++) {
        const rm_block_req *r = &bt->req[i];
        CHECK_EQ(r->nblocks, (r->input_length + RM_WL_BLOCK - 1) / RM_WL_BLOCK);
        if (r->input_length % RM_WL_BLOCK && uses[r->hash_ids[r->nblocks - 1]] != 1)
            ok_partial = 0;
    }
    CHECK(ok_pos);
    CHECK(ok_partial);
    free(pos);
    free(uses);
}

static void test_agentic_shape(void)
{
    enum { N = 3000, CAP = 4096 };
    const rm_block_req **rq = malloc(sizeof *rq * CAP);
    for (uint64_t seed = 1; seed <= 3; seed++) {
        rm_block_trace bt = {0};
        rm_agentic_info info;
        rm_agentic_generate(seed, N, &bt, &info);
        check_mooncake_ids(&bt, N);
        const rm_agentic_params *p = &info.params;
        const rm_block_req *opener[RM_AGENTIC_MAX_VERSIONS] = {0};
        size_t mains = 0, complete = 0, subs = 0, subs_full_prompt = 0, version_counts[8] = {0};
        uint64_t largest = 0, gaps_human = 0, gaps = 0, min_gap = UINT64_MAX;
        for (size_t s = 0; s < info.nsessions; s++) {
            const rm_agentic_session *ss = &info.sessions[s];
            size_t n = session_reqs(&bt, ss->id, rq, CAP);
            CHECK_EQ(n, ss->requests);
            if (!n)
                continue;
            uint32_t v = ss->version;
            size_t tool_full = p->tool_prompt_tokens[v] / RM_WL_BLOCK;
            /* The whole context, the reply and a new message. */
            check_session(rq, n, 30, 4000, 50, UINT64_MAX, 1);
            if (ss->parent == 0) {
                mains++;
                version_counts[v]++;
                CHECK_EQ(ss->prompt_tokens, p->tool_prompt_tokens[v]);
                CHECK(ss->planned >= p->min_requests && ss->planned <= p->max_requests);
                /* ~20k tokens to start: tool prompt + at least 3k private. */
                CHECK(rq[0]->input_length >= 15000 && rq[0]->input_length <= 25000);
                CHECK(rq[0]->input_length >= p->tool_prompt_tokens[v] + 3000);
                /* Every session of a version opens with the same tool prompt;
                 * the block where it ends is already the session's own. */
                check_same_opening(&opener[v], rq[0], tool_full);
                CHECK(opener[v] == rq[0] ||
                      opener[v]->hash_ids[tool_full] != rq[0]->hash_ids[tool_full]);
                if (n == ss->planned) {
                    complete++;
                    CHECK_EQ(rq[n - 1]->input_length, ss->final_tokens);
                    CHECK(ss->final_tokens >= 100e3 - 50 && ss->final_tokens <= 760e3);
                }
                largest = ss->final_tokens > largest ? ss->final_tokens : largest;
                for (size_t k = 1; k < n; k++) {
                    uint64_t gap = rq[k]->timestamp_ms - rq[k - 1]->timestamp_ms;
                    gaps++;
                    gaps_human += gap >= 5000 + 1000ull * rq[k - 1]->output_length / 40;
                    min_gap = gap < min_gap ? gap : min_gap;
                }
            } else {
                subs++;
                const rm_agentic_session *parent = &info.sessions[ss->parent - 1];
                CHECK_EQ(parent->parent, 0);
                CHECK_EQ(parent->version, v);
                CHECK(ss->planned >= 2 && ss->planned <= 10);
                CHECK(ss->prompt_tokens == p->tool_prompt_tokens[v] ||
                      ss->prompt_tokens == p->sub_prompt_tokens[v]);
                const rm_block_req *prq[64];
                size_t pn = session_reqs(&bt, parent->id, prq, 64);
                REQUIRE(pn > 0); /* a sub-agent starts after its parent's request */
                if (ss->prompt_tokens == p->tool_prompt_tokens[v]) {
                    subs_full_prompt++;
                    CHECK(!memcmp(prq[0]->hash_ids, rq[0]->hash_ids, sizeof(uint64_t) * tool_full));
                }
                /* Beside the main session: after one of its requests, before
                 * the next, which waits for the result. */
                size_t k = 0;
                while (k < pn && prq[k]->timestamp_ms <= rq[0]->timestamp_ms)
                    k++;
                CHECK(k > 0);
                CHECK(k == pn || prq[k]->timestamp_ms > rq[n - 1]->timestamp_ms);
            }
        }
        /* One version dominant, several in use. */
        size_t top = 0, used = 0;
        for (uint32_t v = 0; v < p->versions; v++) {
            top = version_counts[v] > version_counts[top] ? v : top;
            used += version_counts[v] > 0;
        }
        CHECK_EQ(top, 0);
        CHECK(used >= 2);
        CHECK(mains >= 40 && complete >= 5);
        CHECK(subs >= 10 && subs_full_prompt > 0 && subs_full_prompt < subs);
        CHECK(largest >= 300e3);
        /* Tool runs of a fraction of a second up, humans taking minutes. */
        CHECK(min_gap >= 300);
        CHECK(gaps_human > gaps / 50 && gaps_human < gaps / 2);
        /* Many sessions at once, midway through the trace. */
        uint64_t mid = bt.req[N / 2].timestamp_ms;
        size_t live = 0;
        for (size_t s = 0; s < info.nsessions; s++) {
            size_t n = session_reqs(&bt, info.sessions[s].id, rq, CAP);
            live += n && info.sessions[s].parent == 0 && rq[0]->timestamp_ms <= mid &&
                    (rq[n - 1]->timestamp_ms >= mid || n < info.sessions[s].planned);
        }
        CHECK(live >= 10);
        rm_agentic_info_free(&info);
        rm_block_trace_free(&bt);
    }
    free(rq);
}

/* The benchmarks' sizing: 8 nodes, pools of 10% of the unique blocks / 8.
 * Some sessions must not fit in one node's pool (the case of issue 15),
 * most must. */
static void test_agentic_sessions_larger_than_a_pool(void)
{
    for (uint64_t seed = 40; seed < 45; seed++) {
        rm_block_trace bt;
        REQUIRE(rm_workload_blocks("agentic", seed, 0, &bt) == 0);
        CHECK_EQ(bt.n, RM_WORKLOAD_DEFAULT_REQUESTS);
        rm_trace one; /* one token per block: lengths in blocks */
        rm_trace_from_blocks(&one, &bt, 1);
        size_t over, sessions = rm_trace_conversations(&one, one.unique_blocks / 10 / 8, &over);
        CHECK(over >= 2);
        CHECK(over < sessions / 10);
        rm_trace_free(&one);
        rm_block_trace_free(&bt);
    }
}

static void test_chat_shape(void)
{
    enum { N = 3000, CAP = 64 };
    for (uint64_t seed = 1; seed <= 3; seed++) {
        rm_block_trace bt = {0};
        rm_chat_info info;
        rm_chat_generate(seed, N, &bt, &info);
        check_mooncake_ids(&bt, N);
        const rm_chat_params *p = &info.params;
        size_t head_full = p->head_tokens / RM_WL_BLOCK, multi = 0, counts[8] = {0};
        const rm_block_req *opener[RM_CHAT_MAX_VARIANTS] = {0}, *any = NULL;
        const rm_block_req *rq[CAP];
        for (size_t c = 0; c < info.nconvs; c++) {
            const rm_chat_conversation *cv = &info.convs[c];
            size_t n = session_reqs(&bt, cv->id, rq, CAP);
            CHECK_EQ(n, cv->requests);
            CHECK(cv->planned >= 1 && cv->planned <= 20);
            if (!n)
                continue;
            counts[cv->variant]++;
            multi += n > 1;
            uint32_t v = cv->variant;
            size_t full = p->prompt_tokens[v] / RM_WL_BLOCK;
            /* The system prompt, then the first user message. */
            CHECK(rq[0]->input_length >= p->prompt_tokens[v] + 5 &&
                  rq[0]->input_length <= p->prompt_tokens[v] + 2000);
            check_same_opening(&opener[v], rq[0], full);
            check_same_opening(&any, rq[0], head_full);
            check_session(rq, n, 10, 2000, 5, 2000, 2000);
        }
        CHECK(counts[0] > info.nconvs / 3);
        CHECK(multi > 50);
        rm_chat_info_free(&info);
        rm_block_trace_free(&bt);
    }
}

static int same_traces(const rm_trace *a, const rm_trace *b)
{
    if (a->n != b->n || a->unique_blocks != b->unique_blocks || a->total_tokens != b->total_tokens)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const rm_trace_req *x = &a->req[i], *y = &b->req[i];
        if (x->n != y->n || x->timestamp_ms != y->timestamp_ms ||
            x->conversation != y->conversation || x->output_tokens != y->output_tokens ||
            memcmp(x->tokens, y->tokens, sizeof(uint32_t) * x->n) != 0)
            return 0;
    }
    return 1;
}

static void test_written_trace_replays_the_same(void)
{
    char path[] = "/tmp/rm_test_workloadXXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "w");
    rm_block_trace bt;
    REQUIRE(rm_workload_blocks("agentic", 3, 300, &bt) == 0);
    CHECK_EQ(rm_block_trace_write(&bt, f), 0);
    fclose(f);
    for (size_t B = 16; B <= 512; B *= 32) {
        rm_trace mem, file, named;
        char err[256];
        rm_trace_from_blocks(&mem, &bt, B);
        REQUIRE(rm_trace_load(path, B, 0, &file, err, sizeof err) == 0);
        REQUIRE(rm_workload_trace("agentic", 3, 300, B, &named, err, sizeof err) == 0);
        CHECK(same_traces(&mem, &file));
        CHECK(same_traces(&mem, &named));
        CHECK_EQ(mem.unique_blocks, rm_block_trace_unique(&bt));
        /* Sessions, not first blocks (a shared tool prompt), are conversations. */
        CHECK_EQ(mem.req[0].conversation, bt.req[0].session);
        rm_trace_free(&mem);
        rm_trace_free(&file);
        rm_trace_free(&named);
    }
    rm_block_trace_free(&bt);
    unlink(path);
}

static void test_output_lengths_load_and_scale(void)
{
    char path[] = "/tmp/rm_test_outputXXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(
        "{\"timestamp\": 1, \"input_length\": 700, \"output_length\": 100, \"hash_ids\": [4, 6]}\n"
        "{\"timestamp\": 2, \"input_length\": 512, \"output_length\": 3, \"hash_ids\": [4]}\n"
        "{\"timestamp\": 3, \"input_length\": 512, \"hash_ids\": [4], \"session\": 9}\n"
        "{\"tokens\": [1, 2, 3], \"output_length\": 7, \"session\": 5}\n"
        "[1, 2, 3]\n",
        f);
    fclose(f);
    rm_trace t;
    char err[256];
    REQUIRE(rm_trace_load(path, 64, 0, &t, err, sizeof err) == 0);
    REQUIRE(t.n == 5);
    CHECK_EQ(t.req[0].n, 64 + 23);
    CHECK_EQ(t.req[0].output_tokens, 12); /* 100 * 64 / 512, rounded down */
    CHECK_EQ(t.req[1].output_tokens, 1);  /* never scaled away entirely */
    CHECK_EQ(t.req[2].output_tokens, 0);  /* absent */
    CHECK_EQ(t.req[0].conversation, 4);   /* first block without a session */
    CHECK_EQ(t.req[2].conversation, 9);
    CHECK_EQ(t.req[3].output_tokens, 7); /* token arrays: as given */
    CHECK_EQ(t.req[3].conversation, 5);
    CHECK_EQ(t.req[4].output_tokens, 0);
    rm_trace_free(&t);
    REQUIRE(rm_trace_load(path, 512, 0, &t, err, sizeof err) == 0);
    CHECK_EQ(t.req[0].output_tokens, 100);
    rm_trace_free(&t);
    f = fopen(path, "w");
    fputs("[1]\n{\"input_length\": 5, \"output_length\": -1, \"hash_ids\": [1]}\n", f);
    fclose(f);
    CHECK(rm_trace_load(path, 64, 0, &t, err, sizeof err) == -1);
    CHECK(strstr(err, ":2: \"output_length\" must be") != NULL);
    unlink(path);
    /* The built-in workload says how long its replies are. */
    rm_trace_generate(&t, 5, 1);
    CHECK_EQ(t.req[0].output_tokens, 192);
    rm_trace_free(&t);
    /* A name that is no workload is a file. */
    CHECK(rm_workload_trace("/nonexistent/trace.jsonl", 1, 0, 64, &t, err, sizeof err) == -1);
    CHECK(strstr(err, "cannot open") != NULL);
}

/* A last block cannot hold more than a block, however large input_length
 * claims to be (and the scaling must not overflow: UBSan checks). */
static void test_huge_input_length_is_one_block(void)
{
    char path[] = "/tmp/rm_test_hugeXXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("{\"input_length\": 9223372036854775807, \"hash_ids\": [1]}\n"
          "{\"input_length\": 4611686018427387905, \"hash_ids\": [1, 2]}\n",
          f);
    fclose(f);
    rm_trace t;
    char err[256];
    REQUIRE(rm_trace_load(path, 64, 0, &t, err, sizeof err) == 0);
    CHECK_EQ(t.req[0].n, 64);
    CHECK_EQ(t.req[1].n, 128);
    rm_trace_free(&t);
    unlink(path);
}

int main(void)
{
    RUN(test_deterministic_per_seed);
    RUN(test_parameters_vary_within_their_ranges);
    RUN(test_agentic_shape);
    RUN(test_agentic_sessions_larger_than_a_pool);
    RUN(test_chat_shape);
    RUN(test_written_trace_replays_the_same);
    RUN(test_output_lengths_load_and_scale);
    RUN(test_huge_input_length_is_one_block);
    return rm_t_report();
}
