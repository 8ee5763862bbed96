#include "rp/sighup.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct rp_sighup {
    void (*fn)(void *user);
    void *user;
    pthread_t thread;
    atomic_bool stopping;
};

/* The pipe lives as long as the process: a handler may still run after a stop. */
static int hup_pipe[2] = {-1, -1};
static atomic_bool watching;

static void on_sighup(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(hup_pipe[1], &b, 1); /* a full pipe already holds a pending reload */
    (void)w;
    errno = saved;
}

static void *watch_main(void *arg)
{
    rp_sighup *w = arg;
    for (;;) {
        unsigned char b[64];
        ssize_t r = read(hup_pipe[0], b, sizeof b);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || atomic_load(&w->stopping)) break;
        w->fn(w->user);
    }
    return NULL;
}

int rp_sighup_start(void (*fn)(void *user), void *user, rp_sighup **out, rp_error *err)
{
    *out = NULL;
    bool expected = false;
    if (!atomic_compare_exchange_strong(&watching, &expected, true))
        return rp_errorf(err, RP_EEXIST, "SIGHUP is already watched in this process");
    rp_sighup *w = calloc(1, sizeof *w);
    if (!w) {
        atomic_store(&watching, false);
        return rp_errorf(err, RP_ENOMEM, "out of memory");
    }
    w->fn = fn;
    w->user = user;
    if (hup_pipe[0] < 0 && pipe2(hup_pipe, O_CLOEXEC) != 0) {
        free(w);
        atomic_store(&watching, false);
        return rp_errorf(err, RP_EIO, "SIGHUP pipe: %s", strerror(errno));
    }
    if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
        free(w);
        atomic_store(&watching, false);
        return rp_errorf(err, RP_EINTERNAL, "cannot start the SIGHUP thread");
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sighup;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    *out = w;
    return RP_OK;
}

void rp_sighup_stop(rp_sighup *w)
{
    if (!w) return;
    signal(SIGHUP, SIG_IGN);
    atomic_store(&w->stopping, true);
    unsigned char b = 0;
    if (write(hup_pipe[1], &b, 1) != 1) pthread_cancel(w->thread);
    pthread_join(w->thread, NULL);
    free(w);
    atomic_store(&watching, false);
}
