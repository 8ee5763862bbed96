/*
 * The main-thread job queue (rp/mainq.h).
 *
 * A poster links a job that lives on its own stack, wakes the loop through a pipe and
 * waits on a condition variable until the loop marks the job done. The loop polls the
 * caller's fd and the wake pipe; the pipe is non-blocking on both ends, so a full pipe
 * only means a wake-up is already pending.
 */
#include "rp/mainq.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <unistd.h>

typedef struct job {
    int (*fn)(void *arg);
    void *arg;
    int rc;
    bool done;
    struct job *next;
} job;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static job *head, *tail;
static bool serving;     /* a loop runs and will take posted jobs */
static pthread_t loop_thread;
static int wake[2] = {-1, -1}; /* made once, kept for the life of the process */

int rp_main_run(int (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&mu);
    if (!serving || pthread_equal(pthread_self(), loop_thread)) {
        pthread_mutex_unlock(&mu);
        return fn(arg);
    }
    job j = {.fn = fn, .arg = arg};
    if (tail) tail->next = &j;
    else head = &j;
    tail = &j;
    ssize_t w = write(wake[1], "", 1); /* EAGAIN: a wake-up is already pending */
    (void)w;
    while (!j.done) pthread_cond_wait(&done_cv, &mu);
    pthread_mutex_unlock(&mu);
    return j.rc;
}

/* Runs every queued job; called on the loop's thread. */
static void run_jobs(void)
{
    pthread_mutex_lock(&mu);
    while (head) {
        job *j = head;
        head = j->next;
        if (!head) tail = NULL;
        pthread_mutex_unlock(&mu);
        int rc = j->fn(j->arg);
        pthread_mutex_lock(&mu);
        j->rc = rc;
        j->done = true; /* j belongs to its poster again from here */
        pthread_cond_broadcast(&done_cv);
    }
    pthread_mutex_unlock(&mu);
}

static int make_wake_pipe(void)
{
    if (wake[0] >= 0) return 0;
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        wake[0] = wake[1] = -1;
        return -1;
    }
    return 0;
}

int rp_main_wait(int fd)
{
    pthread_mutex_lock(&mu);
    bool queue = make_wake_pipe() == 0; /* without a pipe, jobs run on their posters */
    if (queue) {
        serving = true;
        loop_thread = pthread_self();
    }
    pthread_mutex_unlock(&mu);
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = queue ? wake[0] : -1, .events = POLLIN}};
    int rc = 0;
    for (;;) {
        int n = poll(p, 2, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            rc = -1;
            break;
        }
        if (p[1].revents) {
            char b[64];
            while (read(wake[0], b, sizeof b) > 0) {
            }
            run_jobs();
        }
        if (p[0].revents) break;
    }
    int saved = errno;
    pthread_mutex_lock(&mu);
    serving = false; /* later posters run their jobs themselves */
    pthread_mutex_unlock(&mu);
    run_jobs();      /* those posted before */
    errno = saved;
    return rc;
}
