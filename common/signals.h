/* signals.h -- a daemon's stop and reload requests, taken by its owner thread.
 *
 * SIGTERM, SIGINT and SIGHUP are blocked in every thread of the process
 * (rm_signals_block runs before the first thread starts; threads inherit
 * the mask), so the kernel holds them pending on the process until the
 * thread that owns the daemon's state takes them, without waiting:
 *
 *   kill -TERM --> [pending on the process] --> rm_signals_take()
 *                                               from the server tick, or
 *                                               when rm_signals_fd() reads
 *
 * Why not handlers: a handler runs on whichever thread the kernel picks.
 * ThreadSanitizer defers a handler until that thread next enters an
 * instrumented call, and gRPC's idle threads sleep in raw futex waits for
 * a day; a router under TSan ignored SIGTERM that way. With no handler,
 * nothing runs asynchronously and no flag is shared between threads. */
#ifndef RM_SIGNALS_H
#define RM_SIGNALS_H

/* What rm_signals_take reports, as bits. */
enum {
    RM_SIG_TERM = 1, /* SIGTERM */
    RM_SIG_INT = 2,  /* SIGINT */
    RM_SIG_HUP = 4,  /* SIGHUP: a reload request */
};

/* Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and ignores
 * SIGPIPE (a peer that went away is an error from write, not a death).
 * Call before any thread starts (grpc_init, libuv's pool, pthread_create):
 * a thread created earlier keeps its mask and could swallow a signal into
 * the default action. Returns 0, or -1 with errno. */
int rm_signals_block(void);

/* The signals received since the last call, as RM_SIG_* bits (0: none).
 * Never blocks. Several of one kind in between count once. */
unsigned rm_signals_take(void);

/* A descriptor readable while one of the blocked signals is pending, for
 * an event loop; reading it is not needed: rm_signals_take clears it.
 * The caller closes it. Returns -1 with errno on failure. */
int rm_signals_fd(void);

#endif
