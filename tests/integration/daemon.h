/* daemon.h -- start and stop a radixmesh daemon from a C test.
 *
 * The daemon is started with --listen 127.0.0.1:0 (plus the caller's flags)
 * and reports its port on stdout ("LISTENING host:port"); we read that line
 * with a deadline instead of sleeping. */
#ifndef RM_TEST_DAEMON_H
#define RM_TEST_DAEMON_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct test_daemon {
    pid_t pid;
    int out_fd;
    char addr[64];
} test_daemon;

/* Every daemon a test starts is killed when the test exits, however it
 * exits (a failed REQUIRE included): an orphan would keep ctest's output
 * pipe open and hang the run. */
static pid_t td_pids[64];
static int td_npids;

static void td_kill_all(void)
{
    for (int i = 0; i < td_npids; i++)
        if (td_pids[i] > 0)
            kill(td_pids[i], SIGKILL);
}

static void td_track(pid_t pid)
{
    if (td_npids == 0)
        atexit(td_kill_all);
    if (td_npids < 64)
        td_pids[td_npids++] = pid;
}

static void td_untrack(pid_t pid)
{
    for (int i = 0; i < td_npids; i++)
        if (td_pids[i] == pid)
            td_pids[i] = 0;
}

/* Daemons under valgrind or ThreadSanitizer (tests/run.sh sets
 * RM_TEST_SLOW=1 in those stages) run tens of times slower: deadlines
 * stretch x10 and figures that only mean something natively (RSS) are not
 * asserted. */
static int td_slow(void)
{
    const char *v = getenv("RM_TEST_SLOW");
    return v && !strcmp(v, "1");
}

static long long td_ms(long long ms)
{
    return td_slow() ? ms * 10 : ms;
}

static long long td_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* argv: program + flags, NULL-terminated; "--listen 127.0.0.1:0" is added
 * unless argv has its own --listen.
 * Returns 0 once the daemon listens, -1 if it did not within 10 s. */
static int td_start(test_daemon *d, const char *const *argv)
{
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    const char *args[64];
    int n = 0, has_listen = 0;
    for (; argv[n] && n < 60; n++) {
        args[n] = argv[n];
        has_listen |= !strcmp(argv[n], "--listen");
    }
    if (!has_listen) {
        args[n++] = "--listen";
        args[n++] = "127.0.0.1:0";
    }
    args[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_addclose(&fa, pipefd[0]);
    int rc = posix_spawn(&d->pid, args[0], &fa, NULL, (char *const *)args, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    d->out_fd = pipefd[0];
    if (rc != 0)
        return -1;
    td_track(d->pid);
    char buf[256];
    size_t len = 0;
    long long deadline = td_now_ms() + td_ms(10000);
    while (td_now_ms() < deadline && len < sizeof buf - 1) {
        struct pollfd p = {d->out_fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        /* A byte at a time: lines after LISTENING (HTTP, GATEWAY) stay in
         * the pipe for td_read_announced. */
        ssize_t r = read(d->out_fd, buf + len, 1);
        if (r <= 0)
            return -1;
        len += (size_t)r;
        buf[len] = '\0';
        char *nl = strchr(buf, '\n');
        if (nl && sscanf(buf, "LISTENING %63s", d->addr) == 1)
            return 0;
    }
    return -1;
}

/* Reads the daemon's stdout up to the line "WORD host:port" (e.g. "HTTP"
 * for --http) and copies host:port into out (64 bytes). Returns 0, or -1
 * if it did not come within 10 s. */
static inline int td_read_announced(test_daemon *d, const char *word, char *out)
{
    char buf[256], fmt[32];
    size_t len = 0;
    snprintf(fmt, sizeof fmt, "%.16s %%63s", word);
    long long deadline = td_now_ms() + td_ms(10000);
    while (td_now_ms() < deadline && len < sizeof buf - 1) {
        struct pollfd p = {d->out_fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        if (read(d->out_fd, buf + len, 1) != 1)
            return -1;
        buf[++len] = '\0';
        if (buf[len - 1] != '\n')
            continue;
        if (!strncmp(buf, word, strlen(word)) && sscanf(buf, fmt, out) == 1)
            return 0;
        len = 0;
    }
    return -1;
}

/* Starts n daemons of bin, ids <prefix>0 .. <prefix>n-1 ("--node-id ID"
 * then the NULL-terminated flags; flags may be NULL), and writes the
 * router's --nodes list ("ID=host:port,...") into list (len bytes).
 * Returns 0, or -1 as soon as one did not start. */
static inline int td_start_nodes(test_daemon *d, int n, const char *bin, const char *prefix,
                                 const char *const *flags, char *list, size_t len)
{
    list[0] = '\0';
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "%s%d", prefix, i);
        const char *argv[60] = {bin, "--node-id", id};
        int k = 3;
        for (int j = 0; flags && flags[j] && k < 59; j++)
            argv[k++] = flags[j];
        argv[k] = NULL;
        if (td_start(&d[i], argv) != 0)
            return -1;
        size_t used = strlen(list);
        snprintf(list + used, len - used, "%s%s=%s", i ? "," : "", id, d[i].addr);
    }
    return 0;
}

/* Calls cond(arg) every step_ms until it returns nonzero or timeout_ms
 * pass; returns its last value. For conditions that are not a round trip
 * to a daemon (those poll without pausing: cluster_wait.h). */
static inline int td_wait(int (*cond)(void *), void *arg, int timeout_ms, int step_ms)
{
    long long deadline = td_now_ms() + td_ms(timeout_ms); /* x10 under RM_TEST_SLOW */
    int v;
    while (!(v = cond(arg)) && td_now_ms() < deadline) {
        struct timespec ts = {step_ms / 1000, (long)(step_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL); /* a poll step, bounded by the deadline */
    }
    return v;
}

/* A daemon that ignores a stop signal is a bug found once in many runs;
 * its threads' stacks are the evidence, so print them (where gdb exists)
 * before the SIGKILL destroys it. */
static inline void td_dump_stacks(pid_t pid)
{
    if (access("/usr/bin/gdb", X_OK) != 0)
        return;
    char cmd[128];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/gdb -p %d -batch -nx -ex 'thread apply all bt' </dev/null >&2 2>&1",
             (int)pid);
    fprintf(stderr, "daemon %d did not stop; its threads:\n", (int)pid);
    if (system(cmd) != 0)
        fprintf(stderr, "(gdb could not attach)\n");
}

/* Sends sig and waits up to timeout_ms for the exit. Returns the exit status
 * (as from waitpid) or -1 on timeout (then the daemon is SIGKILLed). */
static int td_stop(test_daemon *d, int sig, int timeout_ms)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, sig);
    long long deadline = td_now_ms() + td_ms(timeout_ms); /* x10 under RM_TEST_SLOW */
    int status = -1;
    for (;;) {
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        if (r == d->pid)
            break;
        if (td_now_ms() >= deadline) {
            td_dump_stacks(d->pid);
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
            status = -1;
            break;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL); /* polling the child's exit, bounded by deadline */
    }
    close(d->out_fd);
    td_untrack(d->pid);
    d->pid = 0;
    return status;
}

/* Resident set size of pid in KiB (-1 if unknown). */
static inline long td_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kib = atol(line + 6);
    if (f)
        fclose(f);
    return kib;
}

/* Runs argv (stderr discarded) to completion; returns its exit status as
 * from waitpid. For flag checks: bad flags must exit 2. */
static inline int td_exit_status(const char *const *argv)
{
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    int status;
    waitpid(pid, &status, 0);
    return status;
}

/* Runs bin with the NULL-terminated args; returns 1 if it exited with
 * status 2 (bad usage), as every bad flag must. */
static inline int td_exits_2(const char *bin, const char *const *args)
{
    const char *argv[16] = {bin};
    int n = 1;
    for (int k = 0; args[k] && n < 15; k++)
        argv[n++] = args[k];
    argv[n] = NULL;
    int status = td_exit_status(argv);
    return WIFEXITED(status) && WEXITSTATUS(status) == 2;
}

#endif
