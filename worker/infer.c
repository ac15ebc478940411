#include "infer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct rm_infer {
    rm_engine *engine; /* the inference thread's */
    pthread_t thread;
    void (*notify)(void *);
    void *notify_arg;
    size_t max_waiting;
    pthread_mutex_t mu; /* guards everything below and the jobs' shared fields */
    pthread_cond_t cv;
    rm_job *head, *tail; /* waiting, oldest first */
    size_t waiting;
    rm_job *news;    /* jobs with news for the owner */
    rm_job *running; /* the job the engine runs, NULL between jobs */
    int stopping;
    uint64_t finished_total, cancelled_total;
};

rm_job *rm_job_new(uint32_t *prompt, size_t n, const rm_gen_params *params, uint32_t max_context,
                   int stream)
{
    rm_job *j = rm_xcalloc(1, sizeof *j);
    j->params = *params;
    j->prompt = prompt;
    j->params.prompt = prompt;
    j->params.n_prompt = n;
    j->stream = stream;
    /* A prompt of n tokens leaves room for max_context - n + 1 tokens (the
     * last one's KV is never needed); rm_gen_check has bounded n. */
    size_t room = n < max_context ? (size_t)max_context - n + 1 : 1;
    j->cap = params->max_tokens < room ? params->max_tokens : room;
    j->tokens = rm_xmalloc((j->cap ? j->cap : 1) * sizeof *j->tokens);
    return j;
}

void rm_job_free(rm_job *j)
{
    if (!j)
        return;
    rm_gen_result_free(&j->result);
    free(j->prompt);
    free(j->tokens);
    free(j);
}

int rm_infer_admits(size_t waiting, size_t max_waiting)
{
    return waiting < max_waiting;
}

/* Puts j on the news list (under mu); returns 1 if the owner must be
 * woken. */
static int add_news(rm_infer *in, rm_job *j)
{
    if (j->news)
        return 0;
    j->news = 1;
    j->news_next = in->news;
    in->news = j;
    return 1;
}

typedef struct run_ctx {
    rm_infer *in;
    rm_job *j;
} run_ctx;

/* on_token of the running job: inference thread. */
static int on_token(void *arg, uint32_t token)
{
    run_ctx *rc = arg;
    rm_infer *in = rc->in;
    rm_job *j = rc->j;
    int wake = 0, stop;
    pthread_mutex_lock(&in->mu);
    if (j->ntok < j->cap)
        j->tokens[j->ntok++] = token;
    if (j->stream)
        wake = add_news(in, j);
    stop = j->cancelled;
    if (wake)
        in->notify(in->notify_arg);
    pthread_mutex_unlock(&in->mu);
    return stop;
}

static void *run(void *arg)
{
    rm_infer *in = arg;
    pthread_mutex_lock(&in->mu);
    for (;;) {
        while (!in->head && !in->stopping)
            pthread_cond_wait(&in->cv, &in->mu);
        rm_job *j = in->head;
        if (!j)
            break; /* stopping, and nothing waits */
        in->head = j->next;
        if (!in->head)
            in->tail = NULL;
        in->waiting--;
        j->state = JOB_RUNNING;
        in->running = j;
        int cancelled = j->cancelled;
        pthread_mutex_unlock(&in->mu);

        run_ctx rc = {in, j};
        rm_gen_params p = j->params;
        p.on_token = on_token;
        p.arg = &rc;
        if (cancelled) {
            j->result.finish = RM_FINISH_CANCELLED;
            j->err = RM_GEN_OK;
        } else {
            j->err = rm_engine_generate(in->engine, &p, &j->result);
        }

        pthread_mutex_lock(&in->mu);
        j->state = JOB_DONE;
        in->running = NULL;
        in->finished_total++;
        in->cancelled_total += j->err == RM_GEN_OK && j->result.finish == RM_FINISH_CANCELLED;
        if (add_news(in, j))
            in->notify(in->notify_arg);
    }
    pthread_mutex_unlock(&in->mu);
    return NULL;
}

rm_infer *rm_infer_start(rm_engine *e, size_t max_waiting, void (*notify)(void *), void *arg)
{
    rm_infer *in = rm_xcalloc(1, sizeof *in);
    in->engine = e;
    in->max_waiting = max_waiting;
    in->notify = notify;
    in->notify_arg = arg;
    pthread_mutex_init(&in->mu, NULL);
    pthread_cond_init(&in->cv, NULL);
    if (pthread_create(&in->thread, NULL, run, in) != 0) {
        pthread_cond_destroy(&in->cv);
        pthread_mutex_destroy(&in->mu);
        free(in);
        return NULL;
    }
    return in;
}

rm_infer_submit_res rm_infer_submit(rm_infer *in, rm_job *j)
{
    pthread_mutex_lock(&in->mu);
    rm_infer_submit_res res = RM_INFER_QUEUED;
    if (in->stopping)
        res = RM_INFER_STOPPING;
    else if (!rm_infer_admits(in->waiting, in->max_waiting))
        res = RM_INFER_FULL;
    if (res == RM_INFER_QUEUED) {
        j->state = JOB_QUEUED;
        j->next = NULL;
        if (in->tail)
            in->tail->next = j;
        else
            in->head = j;
        in->tail = j;
        in->waiting++;
        pthread_cond_signal(&in->cv);
    }
    pthread_mutex_unlock(&in->mu);
    return res;
}

void rm_infer_poll(rm_infer *in, void (*fn)(void *arg, rm_job *j, size_t ntok, int done), void *arg)
{
    enum { BATCH = 64 };
    for (;;) {
        rm_job *jobs[BATCH];
        size_t ntok[BATCH], n = 0;
        int done[BATCH];
        pthread_mutex_lock(&in->mu);
        while (in->news && n < BATCH) {
            rm_job *j = in->news;
            in->news = j->news_next;
            j->news = 0;
            jobs[n] = j;
            ntok[n] = j->ntok;
            done[n] = j->state == JOB_DONE;
            n++;
        }
        pthread_mutex_unlock(&in->mu);
        if (!n)
            return;
        for (size_t i = 0; i < n; i++)
            fn(arg, jobs[i], ntok[i], done[i]);
    }
}

/* Takes j out of the waiting queue (under mu). */
static void unqueue(rm_infer *in, rm_job *j)
{
    rm_job **pp = &in->head, *prev = NULL;
    while (*pp && *pp != j) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = j->next;
    if (in->tail == j)
        in->tail = prev;
    in->waiting--;
}

int rm_infer_cancel(rm_infer *in, rm_job *j)
{
    pthread_mutex_lock(&in->mu);
    int freed = j->state == JOB_QUEUED;
    if (freed)
        unqueue(in, j);
    else
        j->cancelled = 1;
    pthread_mutex_unlock(&in->mu);
    return freed;
}

void rm_infer_cancel_all(rm_infer *in)
{
    pthread_mutex_lock(&in->mu);
    int wake = 0;
    while (in->head) {
        rm_job *j = in->head;
        unqueue(in, j);
        j->state = JOB_DONE;
        j->result.finish = RM_FINISH_CANCELLED;
        in->finished_total++;
        in->cancelled_total++;
        wake |= add_news(in, j);
    }
    if (in->running)
        in->running->cancelled = 1;
    in->stopping = 1;
    pthread_cond_signal(&in->cv);
    if (wake)
        in->notify(in->notify_arg);
    pthread_mutex_unlock(&in->mu);
}

void rm_infer_stop(rm_infer *in)
{
    pthread_mutex_lock(&in->mu);
    in->stopping = 1;
    pthread_cond_signal(&in->cv);
    pthread_mutex_unlock(&in->mu);
}

void rm_infer_figures_get(rm_infer *in, rm_infer_figures *f)
{
    rm_engine_stats_get(in->engine, &f->engine);
    pthread_mutex_lock(&in->mu);
    f->waiting = in->waiting;
    f->finished_total = in->finished_total;
    f->cancelled_total = in->cancelled_total;
    pthread_mutex_unlock(&in->mu);
}

const char *rm_infer_namespace(const rm_infer *in)
{
    return rm_engine_namespace(in->engine);
}

void rm_infer_free(rm_infer *in)
{
    if (!in)
        return;
    rm_infer_stop(in);
    pthread_join(in->thread, NULL);
    while (in->head) {
        rm_job *j = in->head;
        in->head = j->next;
        rm_job_free(j);
    }
    rm_engine_free(in->engine);
    pthread_cond_destroy(&in->cv);
    pthread_mutex_destroy(&in->mu);
    free(in);
}
