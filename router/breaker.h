/* breaker.h -- the circuit breaker of one inference worker (gateway).
 *
 * A worker that times out or breaks off is not the same as one that is
 * down: its /metrics may well answer while its completions hang. The
 * gateway therefore judges a worker by its requests, with this rule:
 *
 *            N consecutive failures              cooldown passed
 *   CLOSED ─────────────────────────▶ OPEN ──────────────────────▶ HALF_OPEN
 *     ▲                                ▲                             │ one trial
 *     │           trial answered       │  trial failed: cooldown x2  │ request
 *     └────────────────────────────────┼─────────────────────────────┤
 *                                      └─────────────────────────────┘
 *
 * CLOSED admits every request, OPEN none, HALF_OPEN exactly one (the trial)
 * until its outcome is known; a trial that ends without a verdict (the
 * client left) lets the next request be the trial. Outcomes of requests
 * sent before the breaker opened change nothing once it is open: only the
 * trial decides. The cooldown starts at cooldown_ms, doubles with every
 * failed trial up to max_cooldown_ms, and starts over once a trial is
 * answered.
 *
 * Pure: no clock, no I/O; the caller passes the time and owns the state
 * (in radixmesh, the router thread). */
#ifndef RM_BREAKER_H
#define RM_BREAKER_H

#include <stdint.h>

typedef struct rm_breaker_config {
    uint32_t failures;        /* consecutive failures that open the breaker, >= 1 */
    uint32_t cooldown_ms;     /* the first open period */
    uint32_t max_cooldown_ms; /* bound of the doubling, >= cooldown_ms */
} rm_breaker_config;

/* 3 failures, 10 s, 320 s. */
void rm_breaker_config_defaults(rm_breaker_config *c);

typedef enum { RM_BREAKER_CLOSED, RM_BREAKER_OPEN, RM_BREAKER_HALF_OPEN } rm_breaker_state;

typedef enum {
    RM_BREAKER_NO_VERDICT, /* says nothing about the worker (client left, worker's 5xx) */
    RM_BREAKER_SUCCESS,    /* the worker answered */
    RM_BREAKER_FAILURE     /* timed out, refused, broke off, or spoke garbage */
} rm_breaker_outcome;

typedef struct rm_breaker {
    rm_breaker_state state;
    uint32_t failures;    /* consecutive, counted while closed */
    uint32_t cooldown_ms; /* of the current (or last) open period */
    uint64_t until_ms;    /* OPEN: when it may turn HALF_OPEN */
    int trial_out;        /* HALF_OPEN: the trial request is in flight */
} rm_breaker;

/* A closed breaker with no failures. */
void rm_breaker_init(rm_breaker *b);

/* Turns an OPEN breaker whose cooldown has passed HALF_OPEN. Returns 1 if
 * the state changed. */
int rm_breaker_poll(rm_breaker *b, uint64_t now_ms);

/* 1 if a new request may go to the worker: CLOSED, or HALF_OPEN with no
 * trial in flight. */
int rm_breaker_admits(const rm_breaker *b);

/* A request the breaker admitted is sent. Returns 1 if it is the trial
 * (HALF_OPEN: no other request is admitted until rm_breaker_done with
 * trial = 1), else 0. */
int rm_breaker_take(rm_breaker *b);

/* The outcome of a request; trial is what rm_breaker_take returned for it.
 * Returns 1 if the state changed. */
int rm_breaker_done(rm_breaker *b, const rm_breaker_config *c, int trial, rm_breaker_outcome o,
                    uint64_t now_ms);

/* "closed", "open", "half-open". */
const char *rm_breaker_state_name(rm_breaker_state s);

#endif
