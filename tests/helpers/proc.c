#include "helpers/proc.h"

#include <dirent.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Children still running, killed at exit: a failing assertion jumps past the test's
 * tproc_cleanup, and the server must not outlive the test. */
#define MAX_LIVE 64
static pid_t live[MAX_LIVE];
static int atexit_done;

static void kill_live(void)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
}

static void track(pid_t pid, bool add)
{
    if (add && !atexit_done) {
        atexit(kill_live);
        atexit_done = 1;
    }
    for (int i = 0; i < MAX_LIVE; i++)
        if (add ? live[i] == 0 : live[i] == pid) {
            live[i] = add ? pid : 0;
            return;
        }
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

char *tproc_log(const tproc *p)
{
    FILE *f = fopen(p->log_path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1024 > cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    return buf;
}

void tproc_dump_log(const tproc *p)
{
    char *log = tproc_log(p);
    fprintf(stderr, "---- log of pid %d (%s) ----\n%s---- end of log ----\n", (int)p->pid,
            p->log_path, log ? log : "(unreadable)\n");
    free(log);
}

/* The port of the first "listening" log line, 0 if none yet. */
static int find_port(const char *log)
{
    for (const char *l = log; l && *l;) {
        const char *end = strchr(l, '\n');
        if (!end) break; /* a line still being written */
        const char *msg = strstr(l, "\"msg\":\"listening");
        const char *port = strstr(l, "\"port\":");
        if (msg && port && msg < end && port < end) return atoi(port + 7);
        l = end + 1;
    }
    return 0;
}

static int reap(tproc *p, int timeout_ms, int *status)
{
    long long until = now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(p->pid, status, WNOHANG);
        if (r == p->pid) {
            track(p->pid, false);
            return 0;
        }
        if (r < 0 && errno != EINTR) return -1;
        if (now_ms() >= until) return 1;
        sleep_ms(5);
    }
}

int tproc_start(tproc *p, char *const argv[], int timeout_ms)
{
    memset(p, 0, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "%s/rp-proc-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR")
                                                                          : "/tmp");
    if (!mkdtemp(p->dir)) {
        snprintf(p->error, sizeof p->error, "mkdtemp %s: %s", p->dir, strerror(errno));
        p->dir[0] = '\0';
        return -1;
    }
    snprintf(p->log_path, sizeof p->log_path, "%s/stderr.log", p->dir);
    if (!argv || !argv[0]) {
        snprintf(p->error, sizeof p->error, "no program to start (is RECPIPE_BIN set?)");
        return -1;
    }
    int logfd = open(p->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0) {
        snprintf(p->error, sizeof p->error, "%s: %s", p->log_path, strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(p->error, sizeof p->error, "fork: %s", strerror(errno));
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        dup2(logfd, 2);
        /* Dies with the test process, even when that one is killed (ctest timeout). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* The test may block signals in its threads; the child starts clean. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(logfd);
    p->pid = pid;
    track(pid, true);
    long long until = now_ms() + timeout_ms;
    for (;;) {
        char *log = tproc_log(p);
        p->port = find_port(log);
        if (p->port > 0) {
            free(log);
            return 0;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            track(pid, false);
            snprintf(p->error, sizeof p->error, "%s exited (%s %d) before listening; its log:\n%.700s",
                     argv[0], WIFEXITED(status) ? "code" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), log ? log : "");
            free(log);
            p->pid = 0;
            return -1;
        }
        if (now_ms() >= until) {
            snprintf(p->error, sizeof p->error, "%s did not log a listening line within %d ms; "
                     "its log:\n%.700s", argv[0], timeout_ms, log ? log : "");
            free(log);
            tproc_stop(p, SIGKILL, 2000);
            return -1;
        }
        free(log);
        sleep_ms(10);
    }
}

int tproc_stop(tproc *p, int sig, int timeout_ms)
{
    if (p->pid <= 0) return -1;
    if (sig) kill(p->pid, sig);
    int status = 0;
    int r = reap(p, timeout_ms, &status);
    if (r == 1) {
        kill(p->pid, SIGKILL);
        reap(p, 5000, &status);
        p->pid = 0;
        return -1000;
    }
    p->pid = 0;
    if (r < 0) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return -WTERMSIG(status);
}

void tproc_cleanup(tproc *p)
{
    if (p->pid > 0) tproc_stop(p, SIGKILL, 5000);
    if (!p->dir[0]) return;
    DIR *d = opendir(p->dir);
    if (d) {
        struct dirent *e;
        char path[600];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", p->dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(p->dir);
    p->dir[0] = '\0';
}

const char *tproc_target(const tproc *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "127.0.0.1:%d", p->port);
    return buf;
}
