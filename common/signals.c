/* signals.c -- see signals.h. */
#include "signals.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <sys/signalfd.h>
#include <time.h>

static void requests(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

int rm_signals_block(void)
{
    sigset_t set;
    requests(&set);
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        return -1;
    int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    return 0;
}

unsigned rm_signals_take(void)
{
    sigset_t set;
    requests(&set);
    const struct timespec now = {0, 0};
    unsigned got = 0;
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &now);
        if (sig < 0 && errno == EINTR)
            continue;
        if (sig < 0) /* EAGAIN: nothing (more) pending */
            return got;
        got |= sig == SIGTERM ? RM_SIG_TERM : sig == SIGINT ? RM_SIG_INT : RM_SIG_HUP;
    }
}

int rm_signals_fd(void)
{
    sigset_t set;
    requests(&set);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}
