/*
 * Integration: the services as real child processes ($RECPIPE_BIN), called over loopback
 * by the project's C client. Each starts without a bundle: Health NOT_SERVING,
 * Admin.Status answers, business calls UNAVAILABLE "no bundle is loaded", unknown
 * methods UNIMPLEMENTED at once, oversized requests RESOURCE_EXHAUSTED, one access-log
 * line per call, SIGTERM → exit 0. And a SIGTERM with 50 slow calls in flight in a real
 * process (rp_sleep_server): every call is answered, exit 0.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "helpers/proc.h"
#include "recpipe/v1/admin.pb-c.h"
#include "recpipe/v1/ranking.pb-c.h"
#include "recpipe/v1/retrieval.pb-c.h"
#include "rp/clock.h"
#include "rp/log.h"
#include "rp/rpc.h"

#ifndef SLEEP_SERVER
#error "SLEEP_SERVER must name the rp_sleep_server binary"
#endif

#define E(expr, want, st)                                                                      \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        if (rc_ != (want))                                                                     \
            fail_msg("%s = %s (want %s), status %s: %s", #expr, rp_err_name(rc_),             \
                     rp_err_name(want), rp_grpc_status_name((st).code), (st).msg);            \
    } while (0)

static rp_client *cli;

static int setup(void **state)
{
    (void)state;
    rp_error err = {0};
    return rp_client_create(NULL, &cli, &err) == RP_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    rp_client_destroy(cli);
    return 0;
}

static void start_or_fail(tproc *p, char **argv)
{
    if (tproc_start(p, argv, 15000) != 0) fail_msg("starting %s %s: %s", argv[0], argv[1], p->error);
}

typedef struct service_case {
    const char *name;
    const char *business_path; /* a method that needs a bundle */
    const ProtobufCMessage *business_req;
    const ProtobufCMessageDescriptor *business_resp;
} service_case;

static void check_service(const service_case *sc)
{
    char *bin = getenv("RECPIPE_BIN");
    assert_non_null(bin);
    char *argv[] = {bin, (char *)sc->name, "--listen", "127.0.0.1:0", "--threads", "2",
                    "--max-message-bytes", "2048", NULL};
    tproc p;
    start_or_fail(&p, argv);
    char target[64];
    tproc_target(&p, target, sizeof target);
    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    rp_md md[] = {{"x-request-id", "itest-1"}};
    rp_call_opts o = {.timeout_ms = 5000, .md = md, .nmd = 1};
    rp_status st;

    /* Health: NOT_SERVING until a bundle is loaded. */
    Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *hresp;
    E(rp_client_unary(cli, target, "/grpc.health.v1.Health/Check", &hreq.base,
                      &grpc__health__v1__health_check_response__descriptor, a,
                      (ProtobufCMessage **)&hresp, &o, &st),
      RP_OK, st);
    assert_int_equal(hresp->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);

    /* Admin.Status answers without a bundle. */
    Recpipe__V1__StatusRequest sreq = RECPIPE__V1__STATUS_REQUEST__INIT;
    Recpipe__V1__StatusResponse *sresp;
    E(rp_client_unary(cli, target, "/recpipe.v1.Admin/Status", &sreq.base,
                      &recpipe__v1__status_response__descriptor, a, (ProtobufCMessage **)&sresp,
                      &o, &st),
      RP_OK, st);
    assert_string_equal(sresp->service, sc->name);
    assert_false(sresp->serving);
    assert_true(strlen(sresp->software_version) > 0);
    assert_string_equal(sresp->bundle_version, "");
    /* Counters move when a call's last batch completes, a moment after the caller has
     * its answer: the Health call above is counted by the time of a second Status. */
    E(rp_client_unary(cli, target, "/recpipe.v1.Admin/Status", &sreq.base,
                      &recpipe__v1__status_response__descriptor, a, (ProtobufCMessage **)&sresp,
                      &o, &st),
      RP_OK, st);
    assert_true(sresp->calls_total >= 1);

    /* The business method: UNAVAILABLE, saying why. */
    ProtobufCMessage *resp;
    E(rp_client_unary(cli, target, sc->business_path, sc->business_req, sc->business_resp, a,
                      &resp, &o, &st),
      RP_EUNAVAIL, st);
    assert_int_equal(st.code, RP_GRPC_UNAVAILABLE);
    if (!strstr(st.msg, "no bundle is loaded")) fail_msg("status message: %s", st.msg);

    /* Unknown method: UNIMPLEMENTED within 100 ms; Admin.Reload is not served yet. */
    uint64_t t0 = rp_now_ns();
    E(rp_client_unary(cli, target, "/recpipe.v1.Nope/Nothing", &sreq.base,
                      &recpipe__v1__status_response__descriptor, a, &resp, &o, &st),
      RP_EUNIMPL, st);
    uint64_t ms = (rp_now_ns() - t0) / 1000000;
    if (ms >= 100) fail_msg("UNIMPLEMENTED after %llu ms", (unsigned long long)ms);
    Recpipe__V1__ReloadRequest rreq = RECPIPE__V1__RELOAD_REQUEST__INIT;
    E(rp_client_unary(cli, target, "/recpipe.v1.Admin/Reload", &rreq.base,
                      &recpipe__v1__reload_response__descriptor, a, &resp, &o, &st),
      RP_EUNIMPL, st);

    /* --max-message-bytes 2048: a 4 KiB request is refused. */
    char big[4096];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    rreq.bundle_path = big;
    E(rp_client_unary(cli, target, "/recpipe.v1.Admin/Reload", &rreq.base,
                      &recpipe__v1__reload_response__descriptor, a, &resp, &o, &st),
      RP_EOVERLOAD, st);
    assert_int_equal(st.code, RP_GRPC_RESOURCE_EXHAUSTED);

    /* SIGTERM: clean exit. */
    int code = tproc_stop(&p, SIGTERM, 15000);
    char *log = tproc_log(&p);
    assert_non_null(log);
    if (code != 0) {
        tproc_dump_log(&p);
        fail_msg("%s exited with %d after SIGTERM", sc->name, code);
    }
    /* One access-log line per call, with the caller's request id. */
    if (!strstr(log, "\"method\":\"/recpipe.v1.Admin/Status\"") ||
        !strstr(log, "\"request_id\":\"itest-1\"") || !strstr(log, "\"status\":\"UNAVAILABLE\"") ||
        !strstr(log, "\"latency_ms\":") || !strstr(log, "stopped")) {
        tproc_dump_log(&p);
        fail_msg("%s: access-log lines missing", sc->name);
    }
    if (getenv("TEST_VERBOSE")) tproc_dump_log(&p);
    free(log);
    rp_arena_destroy(a);
    tproc_cleanup(&p);
}

static void test_retrieval_without_bundle(void **state)
{
    (void)state;
    Recpipe__V1__RetrieveRequest req = RECPIPE__V1__RETRIEVE_REQUEST__INIT;
    service_case sc = {"retrieval", "/recpipe.v1.Retrieval/Retrieve", &req.base,
                       &recpipe__v1__retrieve_response__descriptor};
    check_service(&sc);
}

static void test_ranking_without_bundle(void **state)
{
    (void)state;
    Recpipe__V1__RankRequest req = RECPIPE__V1__RANK_REQUEST__INIT;
    service_case sc = {"ranking", "/recpipe.v1.Ranking/Rank", &req.base,
                       &recpipe__v1__rank_response__descriptor};
    check_service(&sc);
}

typedef struct tally {
    int ok, other;
    char last_error[256];
} tally;

static void count_cb(void *user, int rc, ProtobufCMessage *resp, const rp_status *st)
{
    tally *t = user;
    const Recpipe__V1__ReloadResponse *r = (const void *)resp;
    if (rc == RP_OK && r && !strcmp(r->bundle_version, "slept")) {
        t->ok++;
    } else {
        t->other++;
        snprintf(t->last_error, sizeof t->last_error, "%s: %s", rp_grpc_status_name(st->code),
                 st->msg);
    }
}

static void *terminate_later(void *arg)
{
    /* Let the 50 calls reach the server (8 run at once, 200 ms each: ~1.4 s of work). */
    rp_sleep_ns(300 * 1000000ull);
    kill(*(pid_t *)arg, SIGTERM);
    return NULL;
}

static void test_sigterm_drains_50_calls_in_flight(void **state)
{
    (void)state;
    char *argv[] = {SLEEP_SERVER, "127.0.0.1:0", "8", "20", NULL};
    tproc p;
    start_or_fail(&p, argv);
    char target[64];
    tproc_target(&p, target, sizeof target);
    rp_async *as;
    rp_error err = {0};
    assert_int_equal(rp_async_create(cli, &as, &err), RP_OK);
    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__ReloadRequest req = RECPIPE__V1__RELOAD_REQUEST__INIT;
    req.bundle_path = "200";
    rp_call_opts o = {.timeout_ms = 30000};
    tally t = {0};
    for (int i = 0; i < 50; i++)
        assert_int_equal(rp_async_start(as, target, "/recpipe.test.Sleep/Sleep", &req.base,
                                        &recpipe__v1__reload_response__descriptor, a, &o, count_cb,
                                        &t, &err),
                         RP_OK);
    /* Calls progress only while the queue is driven: signal from another thread. */
    pthread_t th;
    pthread_create(&th, NULL, terminate_later, &p.pid);
    assert_int_equal(rp_async_wait(as, 25000), RP_OK);
    pthread_join(th, NULL);
    int code = tproc_stop(&p, 0, 25000);
    char *log = tproc_log(&p);
    if (t.ok != 50 || code != 0) {
        tproc_dump_log(&p);
        fail_msg("%d of 50 calls answered OK (last error %s), exit code %d", t.ok, t.last_error,
                 code);
    }
    /* The signal did arrive while calls were in flight. */
    const char *stopping = strstr(log, "\"msg\":\"stopping sleep: ");
    assert_non_null(stopping);
    int in_flight = atoi(stopping + strlen("\"msg\":\"stopping sleep: "));
    if (in_flight < 1) fail_msg("SIGTERM came with %d calls in flight", in_flight);
    free(log);
    rp_async_destroy(as);
    rp_arena_destroy(a);
    tproc_cleanup(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retrieval_without_bundle),
        cmocka_unit_test(test_ranking_without_bundle),
        cmocka_unit_test(test_sigterm_drains_50_calls_in_flight),
    };
    rp_log_set_level(RP_LOG_WARN);
    return cmocka_run_group_tests(tests, setup, teardown);
}
