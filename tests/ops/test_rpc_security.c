/*
 * Security and limits of the RPC layer over real gRPC on loopback, in process:
 *   - TLS: a server from PEM files generated here with the openssl CLI (a CA, a server
 *     certificate for 127.0.0.1/localhost with SANs, a client certificate, and a second,
 *     unrelated CA with its own client certificate); a TLS client that trusts the CA
 *     gets answers, a plaintext client does not;
 *   - mutual TLS: the client with the CA's certificate gets answers; one without a
 *     certificate and one with a certificate of the other CA are refused;
 *   - plaintext stays the default and works;
 *   - admin token: UNAUTHENTICATED without the header, PERMISSION_DENIED with a wrong
 *     token, OK with the right one, on a built-in path and on one listed in
 *     admin_methods; other methods stay open;
 *   - the in-flight cap: with 2 handlers asleep and max_in_flight 2, further calls get
 *     RESOURCE_EXHAUSTED "overloaded: ..." at once instead of queueing;
 *   - max_streams 1: two slow calls on one connection run one after the other;
 *   - shedding by waiting time: with the one worker asleep, calls queued behind it are
 *     answered RESOURCE_EXHAUSTED "waited ... for a worker" once they waited above the
 *     target for the interval, admitted in arrival order when the interval is longer
 *     (a burst) and with shedding off; health checks are answered while every worker
 *     is busy.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "recpipe/v1/admin.pb-c.h"
#include "rp/clock.h"
#include "rp/log.h"
#include "rp/ops.h"
#include "rp/rpc.h"

#define SLOW "/recpipe.test.Slow/Sleep"
#define OPEN "/recpipe.test.Slow/Open"
#define GUARDED "/recpipe.test.Slow/Guarded"

static char dir[256];
static char *ca_pem, *srv_cert, *srv_key, *cli_cert, *cli_key, *rogue_cert, *rogue_key;
static atomic_int sleeping;
/* The order in which OPEN handlers ran, by the request's `service` ("0".."7"). */
static char served_order[16];
static atomic_int nserved;

static int sleeper(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                   rp_error *err)
{
    Grpc__Health__V1__HealthCheckResponse *out = rp_arena_alloc(rp_call_arena(call), sizeof *out);
    if (!out) return rp_errorf(err, RP_ENOMEM, "arena");
    grpc__health__v1__health_check_response__init(out);
    if (!strcmp(rp_call_method(call), SLOW)) {
        atomic_fetch_add(&sleeping, 1);
        rp_sleep_ns(400 * 1000000ull);
        atomic_fetch_sub(&sleeping, 1);
    } else {
        const Grpc__Health__V1__HealthCheckRequest *r =
            (const Grpc__Health__V1__HealthCheckRequest *)req;
        int k = atomic_fetch_add(&nserved, 1);
        if (r->service && r->service[0] && k < (int)sizeof served_order - 1)
            served_order[k] = r->service[0];
    }
    out->status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    *resp = &out->base;
    return RP_OK;
}

static const rp_method methods[] = {
    {SLOW, &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, sleeper, NULL},
    {OPEN, &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, sleeper, NULL},
    {GUARDED, &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, sleeper, NULL},
};

static char *slurp(const char *name)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *out = NULL;
    rp_error err = {0};
    if (rp_read_file_text("test", path, 1 << 20, &out, &err) != RP_OK) fail_msg("%s", err.msg);
    return out;
}

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* CA, server (SAN 127.0.0.1 + localhost), client; a rogue CA and its client. */
static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/recpipe-tls.XXXXXX");
    if (!mkdtemp(dir)) return -1;
    rp_log_set_level(RP_LOG_WARN);
    int rc = sh(
        "cd %s && exec >openssl.log 2>&1 && "
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
        "  -subj /CN=recpipe-test-ca && "
        "openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost && "
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > srv.ext && "
        "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem "
        "  -days 2 -extfile srv.ext && "
        "openssl req -newkey rsa:2048 -nodes -keyout cli.key -out cli.csr -subj /CN=client && "
        "printf 'extendedKeyUsage=clientAuth\\n' > cli.ext && "
        "openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cli.pem "
        "  -days 2 -extfile cli.ext && "
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout rca.key -out rca.pem -days 2 "
        "  -subj /CN=rogue-ca && "
        "openssl req -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.csr -subj /CN=rogue && "
        "openssl x509 -req -in rogue.csr -CA rca.pem -CAkey rca.key -CAcreateserial "
        "  -out rogue.pem -days 2 -extfile cli.ext",
        dir);
    if (rc != 0) {
        sh("cat %s/openssl.log >&2", dir);
        return -1;
    }
    ca_pem = slurp("ca.pem");
    srv_cert = slurp("srv.pem");
    srv_key = slurp("srv.key");
    cli_cert = slurp("cli.pem");
    cli_key = slurp("cli.key");
    rogue_cert = slurp("rogue.pem");
    rogue_key = slurp("rogue.key");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(ca_pem);
    free(srv_cert);
    free(srv_key);
    free(cli_cert);
    free(cli_key);
    free(rogue_cert);
    free(rogue_key);
    sh("rm -rf %s", dir);
    return 0;
}

static rp_server *start_cfg(rp_server_config *cfg)
{
    rp_server *s = NULL;
    rp_error err = {0};
    if (rp_server_start(cfg, methods, sizeof methods / sizeof methods[0], &s, &err) != RP_OK)
        fail_msg("rp_server_start: %s", err.msg);
    rp_server_set_serving(s, true);
    return s;
}

static rp_server *start_ex(const rp_tls_pem *tls, const char *token, int64_t max_in_flight,
                           int max_streams)
{
    static const char *const extra_admin[] = {GUARDED, NULL};
    rp_server_config cfg = {.service = "sec",
                            .listen = "127.0.0.1:0",
                            .threads = 4,
                            .tls = tls,
                            .admin_token = token,
                            .admin_methods = extra_admin,
                            .max_in_flight = max_in_flight,
                            .max_streams = max_streams};
    rp_server *s = NULL;
    rp_error err = {0};
    if (rp_server_start(&cfg, methods, sizeof methods / sizeof methods[0], &s, &err) != RP_OK)
        fail_msg("rp_server_start: %s", err.msg);
    rp_server_set_serving(s, true);
    return s;
}

static rp_server *start(const rp_tls_pem *tls, const char *token, int64_t max_in_flight)
{
    return start_ex(tls, token, max_in_flight, 0);
}

/* One call to path on s with client TLS tls (NULL: plaintext); returns the gRPC code. */
static int call_named(rp_server *s, const rp_tls_pem *tls, const char *path, const char *auth,
                      const char *name, rp_status *st)
{
    rp_client_config cc = {.tls = tls, .plaintext = tls == NULL, .own_connections = true};
    rp_client *c = NULL;
    rp_arena *a = NULL;
    rp_error err = {0};
    if (rp_client_create(&cc, &c, &err) != RP_OK) fail_msg("rp_client_create: %s", err.msg);
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", rp_server_port(s));
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)(name ? name : "");
    ProtobufCMessage *resp = NULL;
    rp_md md = {"authorization", auth};
    rp_call_opts o = {.timeout_ms = 5000, .md = auth ? &md : NULL, .nmd = auth ? 1 : 0};
    rp_client_unary(c, target, path, &req.base, &grpc__health__v1__health_check_response__descriptor,
                    a, &resp, &o, st);
    rp_arena_destroy(a);
    rp_client_destroy(c);
    return st->code;
}

static int call(rp_server *s, const rp_tls_pem *tls, const char *path, const char *auth,
                rp_status *st)
{
    return call_named(s, tls, path, auth, NULL, st);
}

static void test_plaintext_default(void **state)
{
    (void)state;
    rp_server *s = start(NULL, NULL, 0);
    rp_status st;
    assert_int_equal(call(s, NULL, OPEN, NULL, &st), RP_GRPC_OK);
    /* A TLS client cannot talk to a plaintext listener. */
    rp_tls_pem ctls = {.ca = ca_pem};
    assert_int_not_equal(call(s, &ctls, OPEN, NULL, &st), RP_GRPC_OK);
    rp_server_destroy(s);
}

static void test_tls(void **state)
{
    (void)state;
    rp_tls_pem stls = {.cert = srv_cert, .key = srv_key};
    rp_server *s = start(&stls, NULL, 0);
    rp_status st;
    rp_tls_pem ctls = {.ca = ca_pem};
    if (call(s, &ctls, OPEN, NULL, &st) != RP_GRPC_OK)
        fail_msg("TLS call: %s: %s", rp_grpc_status_name(st.code), st.msg);
    /* Plaintext against TLS: refused. */
    assert_int_equal(call(s, NULL, OPEN, NULL, &st), RP_GRPC_UNAVAILABLE);
    /* A client trusting another CA refuses the server. */
    rp_tls_pem wrong_ca = {.ca = rogue_cert};
    assert_int_equal(call(s, &wrong_ca, OPEN, NULL, &st), RP_GRPC_UNAVAILABLE);
    rp_server_destroy(s);
}

static void test_mtls(void **state)
{
    (void)state;
    rp_tls_pem stls = {.cert = srv_cert, .key = srv_key, .ca = ca_pem};
    rp_server *s = start(&stls, NULL, 0);
    rp_status st;
    rp_tls_pem good = {.ca = ca_pem, .cert = cli_cert, .key = cli_key};
    if (call(s, &good, OPEN, NULL, &st) != RP_GRPC_OK)
        fail_msg("mTLS call: %s: %s", rp_grpc_status_name(st.code), st.msg);
    rp_tls_pem nocert = {.ca = ca_pem};
    assert_int_equal(call(s, &nocert, OPEN, NULL, &st), RP_GRPC_UNAVAILABLE);
    rp_tls_pem rogue = {.ca = ca_pem, .cert = rogue_cert, .key = rogue_key};
    assert_int_equal(call(s, &rogue, OPEN, NULL, &st), RP_GRPC_UNAVAILABLE);
    assert_int_equal(call(s, NULL, OPEN, NULL, &st), RP_GRPC_UNAVAILABLE);
    /* And the good client still works afterwards. */
    assert_int_equal(call(s, &good, OPEN, NULL, &st), RP_GRPC_OK);
    rp_server_destroy(s);
}

static void test_admin_token(void **state)
{
    (void)state;
    rp_server *s = start(NULL, "tok-123", 0);
    rp_status st;
    const char *paths[] = {GUARDED, "/recpipe.v1.Admin/Reload"};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(call(s, NULL, paths[i], NULL, &st), RP_GRPC_UNAUTHENTICATED);
        assert_non_null(strstr(st.msg, "bearer"));
        assert_int_equal(call(s, NULL, paths[i], "Bearer tok-12", &st), RP_GRPC_PERMISSION_DENIED);
        assert_int_equal(call(s, NULL, paths[i], "Bearer tok-1234", &st), RP_GRPC_PERMISSION_DENIED);
        assert_int_equal(call(s, NULL, paths[i], "tok-123", &st), RP_GRPC_UNAUTHENTICATED);
    }
    assert_int_equal(call(s, NULL, GUARDED, "Bearer tok-123", &st), RP_GRPC_OK);
    /* The built-in Reload passes the check and reaches its handler (UNIMPLEMENTED
     * here; the request type differs, so it answers INVALID_ARGUMENT or UNIMPLEMENTED). */
    assert_int_not_equal(call(s, NULL, "/recpipe.v1.Admin/Reload", "Bearer tok-123", &st),
                         RP_GRPC_PERMISSION_DENIED);
    /* Open methods need no token. */
    assert_int_equal(call(s, NULL, OPEN, NULL, &st), RP_GRPC_OK);
    rp_server_destroy(s);
}

typedef struct tally {
    atomic_int ok, exhausted, other;
    char msg[512];
} tally;

static void on_done(void *user, int rc, ProtobufCMessage *resp, const rp_status *st)
{
    (void)rc;
    (void)resp;
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    tally *t = user;
    if (st->code == RP_GRPC_OK) atomic_fetch_add(&t->ok, 1);
    else if (st->code == RP_GRPC_RESOURCE_EXHAUSTED) {
        atomic_fetch_add(&t->exhausted, 1);
        pthread_mutex_lock(&mu); /* callers on several threads (open_calls_in_turn) */
        snprintf(t->msg, sizeof t->msg, "%s", st->msg);
        pthread_mutex_unlock(&mu);
    } else atomic_fetch_add(&t->other, 1);
}

typedef struct slow_arg {
    rp_server *s;
    int code;
} slow_arg;

static void *slow_thread(void *p)
{
    slow_arg *a = p;
    rp_status st;
    a->code = call(a->s, NULL, SLOW, NULL, &st);
    return NULL;
}

/* n OPEN calls to s at once on one connection, each tallied into t; returns when all
 * are answered. */
static void open_calls_at_once(rp_server *s, int n, tally *t)
{
    rp_client_config cc = {.plaintext = true};
    rp_client *c = NULL;
    rp_async *as = NULL;
    rp_error err = {0};
    assert_int_equal(rp_client_create(&cc, &c, &err), RP_OK);
    assert_int_equal(rp_async_create(c, &as, &err), RP_OK);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", rp_server_port(s));
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    rp_arena *arenas[8];
    rp_call_opts o = {.timeout_ms = 5000};
    assert_true(n <= 8);
    for (int i = 0; i < n; i++) {
        assert_int_equal(rp_arena_create(0, &arenas[i]), RP_OK);
        assert_int_equal(rp_async_start(as, target, OPEN, &req.base,
                                        &grpc__health__v1__health_check_response__descriptor,
                                        arenas[i], &o, on_done, t, &err), RP_OK);
    }
    assert_int_equal(rp_async_wait(as, 5000), RP_OK);
    rp_async_destroy(as);
    for (int i = 0; i < n; i++) rp_arena_destroy(arenas[i]);
    rp_client_destroy(c);
}

typedef struct turn_arg {
    rp_server *s;
    int i, gap_ms;
    tally *t;
} turn_arg;

static void *turn_thread(void *p)
{
    turn_arg *a = p;
    rp_sleep_ns((uint64_t)a->i * (uint64_t)a->gap_ms * 1000000ull);
    char name[2] = {(char)('0' + a->i), '\0'};
    rp_status st;
    call_named(a->s, NULL, OPEN, NULL, name, &st);
    on_done(a->t, 0, NULL, &st);
    return NULL;
}

/* n OPEN calls named "0".."n-1", call i sent i x gap_ms after the first (each on its
 * own connection), each tallied into t; returns when all are answered. */
static void open_calls_in_turn(rp_server *s, int n, int gap_ms, tally *t)
{
    pthread_t th[8];
    turn_arg args[8];
    assert_true(n <= 8);
    for (int i = 0; i < n; i++) {
        args[i] = (turn_arg){s, i, gap_ms, t};
        assert_int_equal(pthread_create(&th[i], NULL, turn_thread, &args[i]), 0);
    }
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
}

static void test_in_flight_cap(void **state)
{
    (void)state;
    rp_server *s = start(NULL, NULL, 2);
    pthread_t th[2];
    slow_arg sa[2] = {{s, -1}, {s, -1}};
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, slow_thread, &sa[i]), 0);
    uint64_t until = rp_now_ns() + 3000000000ull;
    while (atomic_load(&sleeping) < 2 && rp_now_ns() < until) rp_sleep_ns(1000000);
    assert_int_equal(atomic_load(&sleeping), 2);

    /* Health checks are exempt from the cap (probes must see the truth). */
    rp_status st;
    assert_int_equal(call(s, NULL, "/grpc.health.v1.Health/Check", NULL, &st), RP_GRPC_OK);

    tally t = {0};
    uint64_t t0 = rp_now_ns();
    open_calls_at_once(s, 6, &t);
    double ms = (double)(rp_now_ns() - t0) / 1e6;
    int still = atomic_load(&sleeping);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    assert_int_equal(sa[0].code, RP_GRPC_OK);
    assert_int_equal(sa[1].code, RP_GRPC_OK);
    assert_int_equal(atomic_load(&t.other), 0);
    /* Refused at once while the two sleepers held the cap: none waited for them. */
    assert_int_equal(still, 2);
    assert_int_equal(atomic_load(&t.exhausted), 6);
    assert_non_null(strstr(t.msg, "overloaded: "));
    assert_non_null(strstr(t.msg, "calls in flight (limit 2)"));
    print_message("in-flight cap 2: 6 calls refused with RESOURCE_EXHAUSTED within %.1f ms "
                  "while 2 handlers slept; \"%s\"\n", ms, t.msg);
    /* Once the sleepers are done, calls are admitted again. A call stays counted until
     * the server has seen its answer sent, a moment after its client has it: wait for
     * the count to drop first (a refusal here failed a CI run once). */
    rp_server_stats ss;
    until = rp_now_ns() + 3000000000ull;
    do {
        rp_server_get_stats(s, &ss);
        if (ss.in_flight == 0) break;
        rp_sleep_ns(1000000);
    } while (rp_now_ns() < until);
    assert_int_equal(ss.in_flight, 0);
    assert_int_equal(call(s, NULL, OPEN, NULL, &st), RP_GRPC_OK);
    rp_server_destroy(s);
}

/* Two 400 ms calls on one connection: concurrent by default, one after the other with
 * max_streams 1 (the second waits for a stream; it is not refused). Returns ms. */
static double two_slow_calls(int max_streams)
{
    rp_server *s = start_ex(NULL, NULL, 0, max_streams);
    rp_client_config cc = {.plaintext = true, .own_connections = true};
    rp_client *c = NULL;
    rp_async *as = NULL;
    rp_error err = {0};
    assert_int_equal(rp_client_create(&cc, &c, &err), RP_OK);
    assert_int_equal(rp_async_create(c, &as, &err), RP_OK);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", rp_server_port(s));
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    /* Connect first, so both calls share one established connection. */
    rp_status st;
    rp_arena *a0;
    assert_int_equal(rp_arena_create(0, &a0), RP_OK);
    ProtobufCMessage *resp = NULL;
    rp_call_opts o = {.timeout_ms = 5000};
    assert_int_equal(rp_client_unary(c, target, OPEN, &req.base,
                                     &grpc__health__v1__health_check_response__descriptor, a0,
                                     &resp, &o, &st), RP_OK);
    rp_arena *arenas[2];
    tally t = {0};
    uint64_t t0 = rp_now_ns();
    for (int i = 0; i < 2; i++) {
        assert_int_equal(rp_arena_create(0, &arenas[i]), RP_OK);
        assert_int_equal(rp_async_start(as, target, SLOW, &req.base,
                                        &grpc__health__v1__health_check_response__descriptor,
                                        arenas[i], &o, on_done, &t, &err), RP_OK);
    }
    assert_int_equal(rp_async_wait(as, 5000), RP_OK);
    double ms = (double)(rp_now_ns() - t0) / 1e6;
    assert_int_equal(atomic_load(&t.ok), 2);
    rp_async_destroy(as);
    for (int i = 0; i < 2; i++) rp_arena_destroy(arenas[i]);
    rp_arena_destroy(a0);
    rp_client_destroy(c);
    rp_server_destroy(s);
    return ms;
}

static void test_max_streams(void **state)
{
    (void)state;
    double parallel = two_slow_calls(0);
    double serial = two_slow_calls(1);
    print_message("two 400 ms calls on one connection: %.0f ms (default streams), %.0f ms "
                  "(--max-streams 1)\n", parallel, serial);
    assert_true(parallel < 780);
    assert_true(serial >= 790);
}

/* One worker held by a 400 ms call; n OPEN calls queued behind it. Fills *t. */
static void queued_behind_sleeper(double target_ms, double interval_ms, int n, tally *t,
                                  bool *health_while_busy)
{
    rp_server_config cfg = {.service = "queue", .listen = "127.0.0.1:0", .threads = 1,
                            .queue_target_ms = target_ms, .queue_interval_ms = interval_ms};
    rp_server *s = start_cfg(&cfg);
    pthread_t th;
    slow_arg sa = {s, -1};
    assert_int_equal(pthread_create(&th, NULL, slow_thread, &sa), 0);
    uint64_t until = rp_now_ns() + 3000000000ull;
    while (atomic_load(&sleeping) < 1 && rp_now_ns() < until) rp_sleep_ns(1000000);
    assert_int_equal(atomic_load(&sleeping), 1);
    /* The only worker sleeps; the admission thread answers health checks regardless. */
    rp_status st;
    assert_int_equal(call(s, NULL, "/grpc.health.v1.Health/Check", NULL, &st), RP_GRPC_OK);
    *health_while_busy = atomic_load(&sleeping) == 1;
    memset(served_order, 0, sizeof served_order);
    atomic_store(&nserved, 0);
    /* 6 calls 15 ms apart: all queued within the sleeper's 400 ms, in a known order. */
    open_calls_in_turn(s, n, 15, t);
    pthread_join(th, NULL);
    assert_int_equal(sa.code, RP_GRPC_OK);
    /* The queue is empty again: calls are admitted. */
    assert_int_equal(call(s, NULL, OPEN, NULL, &st), RP_GRPC_OK);
    rp_server_destroy(s);
}

static void test_queue_shedding(void **state)
{
    (void)state;
    bool health;
    /* A standing queue (not empty for 400 ms > the 50 ms interval): every queued call
     * waited past the 20 ms target. */
    tally t = {0};
    queued_behind_sleeper(20, 50, 6, &t, &health);
    assert_true(health);
    assert_int_equal(atomic_load(&t.other), 0);
    assert_int_equal(atomic_load(&t.exhausted), 6);
    assert_non_null(strstr(t.msg, "overloaded: the call waited "));
    assert_non_null(strstr(t.msg, "for a worker (limit 20.0 ms)"));
    print_message("standing queue: 6 of 6 shed: \"%s\"\n", t.msg);
    /* A burst: 400 ms of waiting is less than the 1 s interval, so it is allowed, first
     * come, first served (the order within a standing queue: test_rpc_queue). */
    tally b = {0};
    queued_behind_sleeper(20, 1000, 6, &b, &health);
    assert_int_equal(atomic_load(&b.ok), 6);
    assert_int_equal(atomic_load(&b.exhausted), 0);
    print_message("burst: 6 of 6 admitted, served in the order %s\n", served_order);
    assert_string_equal(served_order, "012345");
    /* Shedding off: first come, first served; calls wait for their deadline. */
    tally off = {0};
    queued_behind_sleeper(-1, 0, 6, &off, &health);
    assert_int_equal(atomic_load(&off.ok), 6);
    assert_int_equal(atomic_load(&off.other) + atomic_load(&off.exhausted), 0);
    assert_string_equal(served_order, "012345");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plaintext_default), cmocka_unit_test(test_tls),
        cmocka_unit_test(test_mtls), cmocka_unit_test(test_admin_token),
        cmocka_unit_test(test_in_flight_cap), cmocka_unit_test(test_max_streams),
        cmocka_unit_test(test_queue_shedding),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
