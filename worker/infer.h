/* infer.h -- the inference thread: one rm_engine, one request at a time,
 * and a bounded queue of the requests waiting for it.
 *
 * Hand-offs between the owner thread (the HTTP server's loop, which
 * submits jobs and answers clients) and the inference thread:
 *
 *   submit   the owner fills a job (rm_job_new) and rm_infer_submit queues
 *            it; from then on the job's params are read-only for both.
 *   tokens   the inference thread appends each token to job->tokens and
 *            marks the job as having news, and calls notify (which must
 *            be callable from any thread and must not block: uv_async_send)
 *            before it lets the mutex go: once the owner has seen a job
 *            done, no notify for it is still to come, so the owner may
 *            close what notify uses as soon as no job is left. The thread
 *            never reads or writes job->owner.
 *   news     the owner calls rm_infer_poll (from notify's wake-up): every
 *            job with news is passed to its callback with how many tokens
 *            are there and whether the job is done. tokens[0, ntok) may be
 *            read without a lock; a done job is never touched by the
 *            inference thread again, and the owner frees it (rm_job_free).
 *   cancel   the client left: rm_infer_cancel takes a job still waiting out
 *            of the queue (returns 1: the owner frees it now) or asks the
 *            running one to stop at its next token (returns 0: it still
 *            comes back done through rm_infer_poll, and is freed then).
 *
 * Everything shared (the queue, each job's ntok/done, the news list) is
 * guarded by one mutex; the engine, its KV buffer and its cache clients
 * belong to the inference thread alone. */
#ifndef RM_INFER_H
#define RM_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

typedef struct rm_infer rm_infer;

typedef struct rm_job {
    /* The owner's, before submit; then read-only for both threads. */
    rm_gen_params params; /* params.prompt points at prompt */
    uint32_t *prompt;
    int stream; /* report tokens as they come (else only when done) */
    /* The owner's alone (e.g. the connection); the inference thread never
     * reads it. */
    void *owner;
    /* The inference thread's: tokens[0, ntok) are final once reported; cap
     * is how many the request can produce. After done: err (a request the
     * engine refused; no tokens) and result. */
    uint32_t *tokens;
    size_t cap;
    rm_gen_err err;
    rm_gen_result result;
    /* infer.c's, under its mutex. */
    int state; /* queued, running, done, dropped */
    int cancelled, news;
    size_t ntok;
    struct rm_job *next, *news_next;
} rm_job;

/* A job for prompt (taken: malloc'd, n tokens) with the other params as
 * given (params->prompt, n_prompt, on_token and arg are set here). The
 * token buffer fits what max_context allows. */
rm_job *rm_job_new(uint32_t *prompt, size_t n, const rm_gen_params *params, uint32_t max_context,
                   int stream);
void rm_job_free(rm_job *j);

typedef enum rm_infer_submit_res {
    RM_INFER_QUEUED,   /* it runs when the ones before it are done */
    RM_INFER_FULL,     /* max_waiting are waiting already */
    RM_INFER_STOPPING, /* rm_infer_stop was called */
} rm_infer_submit_res;

/* Whether one more request may wait: a pure rule (its unit test is
 * test_api's). */
int rm_infer_admits(size_t waiting, size_t max_waiting);

/* Starts the inference thread on e (the engine moves to that thread; it is
 * freed by rm_infer_free). notify(arg) is called from that thread whenever
 * a job has news. NULL if no thread could be made (e stays the caller's). */
rm_infer *rm_infer_start(rm_engine *e, size_t max_waiting, void (*notify)(void *), void *arg);

rm_infer_submit_res rm_infer_submit(rm_infer *in, rm_job *j);

/* Passes every job with news to fn(arg, job, ntok, done). fn may free a
 * done job. Owner thread. */
void rm_infer_poll(rm_infer *in, void (*fn)(void *arg, rm_job *j, size_t ntok, int done),
                   void *arg);

/* See the top. Owner thread. */
int rm_infer_cancel(rm_infer *in, rm_job *j);

/* Cancels every job: waiting ones come back done with no tokens
 * (err RM_GEN_OK, finish RM_FINISH_CANCELLED), the running one stops at
 * its next token. For a drain that ran out of time. */
void rm_infer_cancel_all(rm_infer *in);

/* No new jobs from now on; the thread ends once the queue is empty. */
void rm_infer_stop(rm_infer *in);

/* Requests waiting, and the counters of the jobs that ended (cancelled:
 * stopped by rm_infer_cancel). Any thread. */
typedef struct rm_infer_figures {
    rm_engine_stats engine;
    size_t waiting;
    uint64_t finished_total; /* jobs that came back done, cancelled ones included */
    uint64_t cancelled_total;
} rm_infer_figures;

void rm_infer_figures_get(rm_infer *in, rm_infer_figures *f);

/* The engine's cache namespace (fixed at start). Any thread. */
const char *rm_infer_namespace(const rm_infer *in);

/* Stops (as rm_infer_stop), waits for the thread, frees the engine. Jobs
 * still queued are freed too; the owner must not hold any. */
void rm_infer_free(rm_infer *in);

#endif
