/* Tests common/src/mainq.c: jobs run on the loop's thread while it waits, in order, with
 * their results; on their posters when no loop runs; nothing is lost when the loop stops
 * with jobs queued. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "rp/mainq.h"

typedef struct loop {
    int fds[2]; /* write to fds[1] to stop the loop */
    pthread_t thread;
    int rc;
} loop;

static void *loop_main(void *arg)
{
    loop *l = arg;
    l->rc = rp_main_wait(l->fds[0]);
    return NULL;
}

/* Starts a loop on a new thread and waits until it takes jobs (a job posted before
 * that runs on its poster, which the probe detects). */
static int probe_self(void *arg)
{
    *(pthread_t *)arg = pthread_self();
    return 0;
}

static void loop_start(loop *l)
{
    assert_int_equal(pipe(l->fds), 0);
    assert_int_equal(pthread_create(&l->thread, NULL, loop_main, l), 0);
    for (int i = 0; i < 5000; i++) {
        pthread_t ran;
        rp_main_run(probe_self, &ran);
        if (pthread_equal(ran, l->thread)) return;
        usleep(1000);
    }
    fail_msg("the loop did not take jobs within 5 s");
}

static void loop_stop(loop *l)
{
    assert_int_equal(write(l->fds[1], "x", 1), 1);
    assert_int_equal(pthread_join(l->thread, NULL), 0);
    assert_int_equal(l->rc, 0);
    close(l->fds[0]);
    close(l->fds[1]);
}

typedef struct rec {
    pthread_t ran_on;
    int value;
} rec;

static int record(void *arg)
{
    rec *r = arg;
    r->ran_on = pthread_self();
    return r->value * 2;
}

static void test_without_loop_runs_on_caller(void **state)
{
    (void)state;
    rec r = {.value = 21};
    assert_int_equal(rp_main_run(record, &r), 42);
    assert_true(pthread_equal(r.ran_on, pthread_self()));
}

typedef struct poster {
    int id;
    int jobs;
    int bad; /* jobs that ran elsewhere than the loop or returned the wrong value */
    pthread_t loop_thread;
} poster;

static void *post_many(void *arg)
{
    poster *p = arg;
    for (int i = 0; i < p->jobs; i++) {
        rec r = {.value = p->id * 1000 + i};
        int rc = rp_main_run(record, &r);
        if (rc != r.value * 2 || !pthread_equal(r.ran_on, p->loop_thread)) p->bad++;
    }
    return NULL;
}

static void test_jobs_run_on_the_loop_thread(void **state)
{
    (void)state;
    loop l;
    loop_start(&l);
    enum { NP = 4 };
    pthread_t t[NP];
    poster p[NP];
    for (int i = 0; i < NP; i++) {
        p[i] = (poster){.id = i + 1, .jobs = 500, .loop_thread = l.thread};
        assert_int_equal(pthread_create(&t[i], NULL, post_many, &p[i]), 0);
    }
    for (int i = 0; i < NP; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(p[i].bad, 0);
    }
    loop_stop(&l);
    /* Stopped: jobs run on their posters again. */
    rec r = {.value = 5};
    assert_int_equal(rp_main_run(record, &r), 10);
    assert_true(pthread_equal(r.ran_on, pthread_self()));
}

/* A job posting another job: the inner one runs inline on the loop, no deadlock. */
static int nested(void *arg)
{
    rec *r = arg;
    rec inner = {.value = r->value};
    int rc = rp_main_run(record, &inner);
    r->ran_on = pthread_equal(inner.ran_on, pthread_self()) ? pthread_self() : (pthread_t)0;
    return rc + 1;
}

static void test_nested_job_runs_inline(void **state)
{
    (void)state;
    loop l;
    loop_start(&l);
    rec r = {.value = 3};
    assert_int_equal(rp_main_run(nested, &r), 7);
    assert_true(pthread_equal(r.ran_on, l.thread));
    loop_stop(&l);
}

/* The loop is told to stop while a job runs and others wait: every poster gets its
 * answer (the queued ones run before the loop returns, later ones on their posters). */
static atomic_int started;

static int slow(void *arg)
{
    atomic_fetch_add(&started, 1);
    usleep(20000);
    return *(int *)arg;
}

typedef struct slow_poster {
    int value, rc;
} slow_poster;

static void *post_slow(void *arg)
{
    slow_poster *p = arg;
    p->rc = rp_main_run(slow, &p->value);
    return NULL;
}

static void test_stop_with_jobs_queued(void **state)
{
    (void)state;
    loop l;
    loop_start(&l);
    atomic_store(&started, 0);
    enum { NP = 6 };
    pthread_t t[NP];
    slow_poster p[NP];
    for (int i = 0; i < NP; i++) {
        p[i] = (slow_poster){.value = 100 + i, .rc = -1};
        assert_int_equal(pthread_create(&t[i], NULL, post_slow, &p[i]), 0);
    }
    while (atomic_load(&started) == 0) usleep(1000);
    loop_stop(&l);
    for (int i = 0; i < NP; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(p[i].rc, 100 + i);
    }
    assert_int_equal(atomic_load(&started), NP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_without_loop_runs_on_caller),
        cmocka_unit_test(test_jobs_run_on_the_loop_thread),
        cmocka_unit_test(test_nested_job_runs_inline),
        cmocka_unit_test(test_stop_with_jobs_queued),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
