/*
 * Tests the RPC layer (common/src/rpc_*.c, health.c, admin.c) in process: a real server
 * on 127.0.0.1:0 with a test method table, called over loopback by rp_client and by raw
 * gRPC core calls (for bytes our client would never send).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <grpc/grpc.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "recpipe/v1/admin.pb-c.h"
#include "rp/clock.h"
#include "rp/log.h"
#include "rp/metrics.h"
#include "rp/rpc.h"

#define ECHO "/recpipe.test.Echo/Echo"
#define WRONG "/recpipe.test.Echo/Wrong"
#define SLOW "/recpipe.test.Echo/Slow" /* in the I/O lane of test_io_lane's server */

/* Assertion that prints the rp code and the status message. */
#define E(expr, want, st)                                                                      \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        if (rc_ != (want))                                                                     \
            fail_msg("%s = %s (want %s), status %s: %s", #expr, rp_err_name(rc_),             \
                     rp_err_name(want), rp_grpc_status_name((st).code), (st).msg);            \
    } while (0)

static rp_server *srv;
static atomic_int sleepers;   /* handlers that started sleeping */
static atomic_int echo_calls; /* handler runs of "count" */
static atomic_int gate_running, gate_max; /* handlers inside "gate" now, at most */
static atomic_bool gate_open;
/* The distinct arenas handlers of "arena" ran in. */
static pthread_mutex_t arenas_mu = PTHREAD_MUTEX_INITIALIZER;
static rp_arena *arenas_seen[64];
static int narenas_seen;
static char target[64];
static rp_client *cli;

/* ReloadRequest.bundle_path is the command, ReloadResponse carries the answer. */
static int echo(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp, rp_error *err)
{
    const Recpipe__V1__ReloadRequest *in = (const void *)req;
    rp_arena *a = rp_call_arena(call);
    Recpipe__V1__ReloadResponse *out = rp_arena_alloc(a, sizeof *out);
    if (!out) return rp_errorf(err, RP_ENOMEM, "arena");
    recpipe__v1__reload_response__init(out);
    const char *cmd = in->bundle_path;
    if (!strncmp(cmd, "echo:", 5)) {
        out->bundle_version = rp_arena_strdup(a, cmd + 5);
    } else if (!strcmp(cmd, "fail")) {
        return rp_errorf(err, RP_EINVAL, "bundle_path: 'fail' is refused by the test handler");
    } else if (!strcmp(cmd, "nobundle")) {
        return rp_no_bundle(err);
    } else if (!strncmp(cmd, "sleep:", 6)) {
        atomic_fetch_add(&sleepers, 1);
        rp_sleep_ns((uint64_t)atoi(cmd + 6) * 1000000ull);
        out->bundle_version = "slept";
    } else if (!strcmp(cmd, "id")) {
        out->bundle_version = rp_arena_strdup(a, rp_call_request_id(call));
    } else if (!strncmp(cmd, "md:", 3)) {
        const char *v = rp_call_metadata(call, cmd + 3);
        out->bundle_version = (char *)(v ? v : "(none)");
    } else if (!strcmp(cmd, "deadline")) {
        out->load_seconds = (double)rp_call_remaining_ms(call);
    } else if (!strcmp(cmd, "count")) {
        atomic_fetch_add(&echo_calls, 1);
    } else if (!strcmp(cmd, "gate")) {
        /* Blocks until the test opens the gate: a handler stuck on a stalled disk. */
        int now = atomic_fetch_add(&gate_running, 1) + 1;
        for (int m = atomic_load(&gate_max); now > m && !atomic_compare_exchange_weak(&gate_max, &m, now);) {}
        while (!atomic_load(&gate_open)) rp_sleep_ns(1000000ull);
        atomic_fetch_sub(&gate_running, 1);
        out->bundle_version = "through";
    } else if (!strcmp(cmd, "arena")) {
        /* Which arena the handler got, after 40 KB from it (more than its first block). */
        unsigned char *big = rp_arena_alloc(a, 40000);
        if (!big) return rp_errorf(err, RP_ENOMEM, "out of memory");
        memset(big, 7, 40000);
        pthread_mutex_lock(&arenas_mu);
        bool known = false;
        for (int i = 0; i < narenas_seen && !known; i++) known = arenas_seen[i] == a;
        if (!known && narenas_seen < (int)(sizeof arenas_seen / sizeof arenas_seen[0]))
            arenas_seen[narenas_seen++] = a;
        pthread_mutex_unlock(&arenas_mu);
    } else if (!strcmp(cmd, "port")) {
        out->load_seconds = rp_server_port(rp_call_server(call));
    } else if (!strcmp(cmd, "peer")) {
        out->bundle_version = rp_arena_strdup(a, rp_call_peer(call));
    } else if (!strcmp(cmd, "user")) {
        out->bundle_version = rp_call_user(call);
        out->previous_version = rp_arena_strdup(a, rp_call_method(call));
    }
    *resp = &out->base;
    return RP_OK;
}

/* Returns a message of the wrong type: the layer must answer INTERNAL, not send it. */
static int wrong(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp, rp_error *err)
{
    (void)req;
    (void)err;
    Recpipe__V1__StatusRequest *out = rp_arena_alloc(rp_call_arena(call), sizeof *out);
    recpipe__v1__status_request__init(out);
    *resp = &out->base;
    return RP_OK;
}

static void status_hook(void *user, Recpipe__V1__StatusResponse *resp, rp_arena *arena)
{
    resp->bundle_version = rp_arena_strdup(arena, user);
    resp->item_count = 42;
}

static const rp_method methods[] = {
    {ECHO, &recpipe__v1__reload_request__descriptor, &recpipe__v1__reload_response__descriptor,
     echo, (void *)"echo-user"},
    {WRONG, &recpipe__v1__reload_request__descriptor, &recpipe__v1__reload_response__descriptor,
     wrong, NULL},
};

static int start(rp_server **out, int threads, int64_t max_bytes, char *tgt, size_t tn)
{
    rp_server_config cfg = {
        .service = "echo",
        .version = "9.9.9",
        .listen = "127.0.0.1:0",
        .threads = threads,
        .max_message_bytes = max_bytes,
        .grace_s = 5,
        .status_hook = status_hook,
        .status_user = (void *)"test-v1",
    };
    rp_error err = {0};
    int rc = rp_server_start(&cfg, methods, sizeof methods / sizeof methods[0], out, &err);
    if (rc != RP_OK) fail_msg("rp_server_start: %s", rp_error_text(&err));
    snprintf(tgt, tn, "127.0.0.1:%d", rp_server_port(*out));
    return rc;
}

static int setup(void **state)
{
    (void)state;
    rp_log_set_level(RP_LOG_WARN);
    start(&srv, 4, 64 * 1024, target, sizeof target);
    rp_error err = {0};
    if (rp_client_create(NULL, &cli, &err) != RP_OK) return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rp_client_destroy(cli);
    rp_server_destroy(srv);
    return 0;
}

/* Calls ECHO with cmd; the answer lands in *out (arena a). */
static int call_echo(const char *tgt, const char *cmd, rp_arena *a, const rp_call_opts *opts,
                     Recpipe__V1__ReloadResponse **out, rp_status *st)
{
    Recpipe__V1__ReloadRequest req = RECPIPE__V1__RELOAD_REQUEST__INIT;
    req.bundle_path = (char *)cmd;
    rp_call_opts def = {.timeout_ms = 5000};
    return rp_client_unary(cli, tgt, ECHO, &req.base, &recpipe__v1__reload_response__descriptor, a,
                           (ProtobufCMessage **)out, opts ? opts : &def, st);
}

/* A call to method on a channel of its own, over raw gRPC core (5 s deadline). */
static grpc_call *raw_open(const char *tgt, const char *method, grpc_channel **ch,
                           grpc_completion_queue **cq)
{
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    *ch = grpc_channel_create(tgt, creds, NULL);
    grpc_channel_credentials_release(creds);
    *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(5000, GPR_TIMESPAN));
    return grpc_channel_create_call(*ch, NULL, GRPC_PROPAGATE_DEFAULTS, *cq,
                                    grpc_slice_from_static_string(method), NULL, deadline, NULL);
}

/* Sends raw bytes as the message of a call: what a broken or hostile client does. */
static int raw_call(const char *tgt, const char *method, const void *bytes, size_t n,
                    char *details, size_t dn)
{
    grpc_channel *ch;
    grpc_completion_queue *cq;
    grpc_call *call = raw_open(tgt, method, &ch, &cq);
    grpc_slice body = grpc_slice_from_copied_buffer(bytes ? bytes : "", n);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array im, tm;
    grpc_metadata_array_init(&im);
    grpc_metadata_array_init(&tm);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice det = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    size_t k = 0;
    ops[k++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (bytes) { /* NULL: headers only, no message at all */
        ops[k].op = GRPC_OP_SEND_MESSAGE;
        ops[k++].data.send_message.send_message = bb;
    }
    ops[k++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[k].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[k++].data.recv_initial_metadata.recv_initial_metadata = &im;
    ops[k].op = GRPC_OP_RECV_MESSAGE;
    ops[k++].data.recv_message.recv_message = &recv;
    ops[k].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[k].data.recv_status_on_client.trailing_metadata = &tm;
    ops[k].data.recv_status_on_client.status = &status;
    ops[k++].data.recv_status_on_client.status_details = &det;
    assert_int_equal(grpc_call_start_batch(call, ops, k, (void *)1, NULL), GRPC_CALL_OK);
    grpc_event ev = grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    snprintf(details, dn, "%.*s", (int)GRPC_SLICE_LENGTH(det), (char *)GRPC_SLICE_START_PTR(det));
    grpc_slice_unref(det);
    grpc_metadata_array_destroy(&im);
    grpc_metadata_array_destroy(&tm);
    grpc_byte_buffer_destroy(bb);
    if (recv) grpc_byte_buffer_destroy(recv);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    return (int)status;
}

static void test_ok_path(void **state)
{
    (void)state;
    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    Recpipe__V1__ReloadResponse *r;
    rp_status st;
    E(call_echo(target, "echo:hello", a, NULL, &r, &st), RP_OK, st);
    assert_int_equal(st.code, RP_GRPC_OK);
    assert_string_equal(r->bundle_version, "hello");
    E(call_echo(target, "user", a, NULL, &r, &st), RP_OK, st);
    assert_string_equal(r->bundle_version, "echo-user");
    assert_string_equal(r->previous_version, ECHO);
    E(call_echo(target, "peer", a, NULL, &r, &st), RP_OK, st);
    assert_non_null(strstr(r->bundle_version, "127.0.0.1:"));
    rp_arena_destroy(a);
}

static void test_handler_error_maps_to_status(void **state)
{
    (void)state;
    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    Recpipe__V1__ReloadResponse *r;
    rp_status st;
    E(call_echo(target, "fail", a, NULL, &r, &st), RP_EINVAL, st);
    assert_int_equal(st.code, RP_GRPC_INVALID_ARGUMENT);
    assert_string_equal(st.msg, "bundle_path: 'fail' is refused by the test handler");
    assert_null(r);
    E(call_echo(target, "nobundle", a, NULL, &r, &st), RP_EUNAVAIL, st);
    assert_int_equal(st.code, RP_GRPC_UNAVAILABLE);
    assert_non_null(strstr(st.msg, "no bundle is loaded"));
    /* A handler returning the wrong message type is a bug: INTERNAL, naming both types. */
    Recpipe__V1__ReloadRequest req = RECPIPE__V1__RELOAD_REQUEST__INIT;
    rp_call_opts o = {.timeout_ms = 5000};
    ProtobufCMessage *m;
    E(rp_client_unary(cli, target, WRONG, &req.base, &recpipe__v1__reload_response__descriptor, a,
                      &m, &o, &st),
      RP_EINTERNAL, st);
    assert_non_null(strstr(st.msg, "recpipe.v1.StatusRequest"));
    rp_arena_destroy(a);
}

static void test_unknown_method_is_unimplemented_at_once(void **state)
{
    (void)state;
    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    /* Warm the connection so the figure is the server's answer time, not the connect. */
    Recpipe__V1__ReloadResponse *r;
    rp_status st;
    E(call_echo(target, "echo:x", a, NULL, &r, &st), RP_OK, st);
    Recpipe__V1__ReloadRequest req = RECPIPE__V1__RELOAD_REQUEST__INIT;
    rp_call_opts o = {.timeout_ms = 5000};
    ProtobufCMessage *m;
    uint64_t t0 = rp_now_ns();
    E(rp_client_unary(cli, target, "/recpipe.v1.Nope/Nothing", &req.base,
                      &recpipe__v1__reload_response__descriptor, a, &m, &o, &st),
      RP_EUNIMPL, st);
    uint64_t ms = (rp_now_ns() - t0) / 1000000;
    assert_int_equal(st.code, RP_GRPC_UNIMPLEMENTED);
    assert_non_null(strstr(st.msg, "/recpipe.v1.Nope/Nothing"));
    if (ms >= 100) fail_msg("UNIMPLEMENTED took %llu ms (limit 100)", (unsigned long long)ms);
    /* Admin methods the service did not register are UNIMPLEMENTED too, by name. */
    E(rp_client_unary(cli, target, "/recpipe.v1.Admin/Reload", &req.base,
                      &recpipe__v1__reload_response__descriptor, a, &m, &o, &st),
      RP_EUNIMPL, st);
    assert_non_null(strstr(st.msg, "Admin/Reload"));
    rp_arena_destroy(a);
}

static void test_garbage_bytes_are_invalid_argument(void **state)
{
    (void)state;
    char det[512];
    /* Field 1 with a length running past the end of the message. */
    const unsigned char bad[] = {0x0a, 0x7f, 'x'};
    assert_int_equal(raw_call(target, ECHO, bad, sizeof bad, det, sizeof det),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(det, ECHO));
    const unsigned char junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(raw_call(target, ECHO, junk, sizeof junk, det, sizeof det),
                     GRPC_STATUS_INVALID_ARGUMENT);
    /* Headers without any message. */
    assert_int_equal(raw_call(target, ECHO, NULL, 0, det, sizeof det), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(det, "no message"));
    /* The server is still fine afterwards. */
    const unsigned char ok[] = {0x0a, 0x06, 'e', 'c', 'h', 'o', ':', 'z'};
    assert_int_equal(raw_call(target, ECHO, ok, sizeof ok, det, sizeof det), GRPC_STATUS_OK);
}

/* The value of recpipe_rpc_calls_total for ECHO and code (0 when the series is absent). */
static unsigned long long echo_calls_with(const char *code)
{
    char want[128];
    snprintf(want, sizeof want, "method=\"%s\",code=\"%s\"}", ECHO, code);
    size_t len;
    char *text = rp_metrics_render(&len);
    assert_non_null(text);
    unsigned long long v = 0;
    for (char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, "recpipe_rpc_calls_total{", 24) != 0) continue;
        char *m = strstr(l, want);
        char *eol = strchr(l, '\n');
        if (m && (!eol || m < eol)) v += strtoull(m + strlen(want), NULL, 10);
    }
    free(text);
    return v;
}

/* A client that sends its headers and goes away before its message: gRPC core hands the
 * server the call with no message once the stream is reset. It counts as CANCELLED (the
 * client gave up), not as INVALID_ARGUMENT (a request that carries no message). */
static void test_cancelled_before_message_counts_as_cancelled(void **state)
{
    (void)state;
    unsigned long long cancelled0 = echo_calls_with("CANCELLED");
    unsigned long long invalid0 = echo_calls_with("INVALID_ARGUMENT");
    rp_server_stats before, now;
    rp_server_get_stats(srv, &before);

    grpc_channel *ch;
    grpc_completion_queue *cq;
    grpc_call *call = raw_open(target, ECHO, &ch, &cq);
    grpc_op op[1];
    memset(op, 0, sizeof op);
    op[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    assert_int_equal(grpc_call_start_batch(call, op, 1, (void *)1, NULL), GRPC_CALL_OK);
    grpc_event ev = grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    rp_sleep_ns(100 * 1000000ull); /* the headers reach the server */
    assert_int_equal(grpc_call_cancel(call, NULL), GRPC_CALL_OK);
    grpc_metadata_array tm;
    grpc_metadata_array_init(&tm);
    grpc_status_code status = GRPC_STATUS_OK;
    grpc_slice det = grpc_empty_slice();
    memset(op, 0, sizeof op);
    op[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op[0].data.recv_status_on_client.trailing_metadata = &tm;
    op[0].data.recv_status_on_client.status = &status;
    op[0].data.recv_status_on_client.status_details = &det;
    assert_int_equal(grpc_call_start_batch(call, op, 1, (void *)2, NULL), GRPC_CALL_OK);
    ev = grpc_completion_queue_pluck(cq, (void *)2, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    assert_int_equal(status, GRPC_STATUS_CANCELLED);
    grpc_slice_unref(det);
    grpc_metadata_array_destroy(&tm);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);

    /* The server answers the call and records it when its close completes. */
    for (int i = 0; i < 200; i++) {
        rp_server_get_stats(srv, &now);
        if (now.calls_total > before.calls_total) break;
        rp_sleep_ns(10 * 1000000ull);
    }
    assert_true(now.calls_total > before.calls_total);
    assert_true(now.calls_failed > before.calls_failed);
    assert_int_equal(echo_calls_with("CANCELLED"), cancelled0 + 1);
    assert_int_equal(echo_calls_with("INVALID_ARGUMENT"), invalid0);
}

static void test_oversized_is_resource_exhausted(void **state)
{
    (void)state;
    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    size_t n = 100 * 1024; /* the server's limit is 64 KiB */
    char *big = malloc(n + 1);
    memset(big, 'b', n);
    memcpy(big, "echo:", 5);
    big[n] = '\0';
    Recpipe__V1__ReloadResponse *r;
    rp_status st;
    E(call_echo(target, big, a, NULL, &r, &st), RP_EOVERLOAD, st);
    assert_int_equal(st.code, RP_GRPC_RESOURCE_EXHAUSTED);
    /* Just under the limit passes. */
    big[60 * 1024] = '\0';
    E(call_echo(target, big, a, NULL, &r, &st), RP_OK, st);
    assert_int_equal(strlen(r->bundle_version), 60 * 1024 - 5);
    free(big);
    rp_arena_destroy(a);
}

static void test_deadline(void **state)
{
    (void)state;
    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    Recpipe__V1__ReloadResponse *r;
    rp_status st;
    /* The handler sees the caller's deadline. */
    rp_call_opts o = {.timeout_ms = 3000};
    E(call_echo(target, "deadline", a, &o, &r, &st), RP_OK, st);
    if (!(r->load_seconds > 2000 && r->load_seconds <= 3100)) /* grpc-timeout rounds up */
        fail_msg("handler saw %.0f ms left of 3000", r->load_seconds);
    /* A slow handler: the caller gets DEADLINE_EXCEEDED at its deadline. */
    o.timeout_ms = 100;
    uint64_t t0 = rp_now_ns();
    E(call_echo(target, "sleep:2000", a, &o, &r, &st), RP_ETIMEDOUT, st);
    uint64_t ms = (rp_now_ns() - t0) / 1000000;
    assert_int_equal(st.code, RP_GRPC_DEADLINE_EXCEEDED);
    if (ms < 90 || ms > 1500) fail_msg("deadline of 100 ms answered after %llu ms (the "
                                       "handler takes 2000)", (unsigned long long)ms);
    rp_arena_destroy(a);
}

static void test_request_id_and_metadata(void **state)
{
    (void)state;
    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    Recpipe__V1__ReloadResponse *r;
    rp_status st;
    rp_md md[] = {{"x-request-id", "req-123"}, {"authorization", "Bearer s3cret"}};
    rp_call_opts o = {.timeout_ms = 5000, .md = md, .nmd = 2};
    E(call_echo(target, "id", a, &o, &r, &st), RP_OK, st);
    assert_string_equal(r->bundle_version, "req-123");
    E(call_echo(target, "md:authorization", a, &o, &r, &st), RP_OK, st);
    assert_string_equal(r->bundle_version, "Bearer s3cret");
    /* Without a header a fresh id is generated per call; an absent header is NULL. */
    E(call_echo(target, "id", a, NULL, &r, &st), RP_OK, st);
    char first[64];
    snprintf(first, sizeof first, "%s", r->bundle_version);
    assert_int_equal(strlen(first), 16);
    E(call_echo(target, "id", a, NULL, &r, &st), RP_OK, st);
    assert_string_not_equal(first, r->bundle_version);
    E(call_echo(target, "md:authorization", a, NULL, &r, &st), RP_OK, st);
    assert_string_equal(r->bundle_version, "(none)");
    /* A request id that could break log lines is replaced. */
    rp_md evil[] = {{"x-request-id", "a\"b"}};
    rp_call_opts o2 = {.timeout_ms = 5000, .md = evil, .nmd = 1};
    E(call_echo(target, "id", a, &o2, &r, &st), RP_OK, st);
    assert_int_equal(strlen(r->bundle_version), 16);
    rp_arena_destroy(a);
}

static int health(const char *tgt, const char *service, int *status, rp_status *st)
{
    rp_arena *a;
    rp_arena_create(0, &a);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    rp_call_opts o = {.timeout_ms = 5000};
    Grpc__Health__V1__HealthCheckResponse *r;
    int rc = rp_client_unary(cli, tgt, "/grpc.health.v1.Health/Check", &req.base,
                             &grpc__health__v1__health_check_response__descriptor, a,
                             (ProtobufCMessage **)&r, &o, st);
    *status = rc == RP_OK ? (int)r->status : -1;
    rp_arena_destroy(a);
    return rc;
}

static void test_health_and_admin(void **state)
{
    (void)state;
    int hs;
    rp_status st;
    E(health(target, "", &hs, &st), RP_OK, st);
    assert_int_equal(hs, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    rp_server_set_serving(srv, true);
    E(health(target, "", &hs, &st), RP_OK, st);
    assert_int_equal(hs, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    E(health(target, "recpipe.test.Echo", &hs, &st), RP_OK, st);
    assert_int_equal(hs, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    E(health(target, "recpipe.v1.Nope", &hs, &st), RP_ENOENT, st);
    assert_non_null(strstr(st.msg, "recpipe.v1.Nope"));
    rp_server_set_serving(srv, false);
    E(health(target, "", &hs, &st), RP_OK, st);
    assert_int_equal(hs, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);

    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__StatusRequest req = RECPIPE__V1__STATUS_REQUEST__INIT;
    rp_call_opts o = {.timeout_ms = 5000};
    Recpipe__V1__StatusResponse *r;
    rp_server_stats before;
    rp_server_get_stats(srv, &before);
    E(rp_client_unary(cli, target, "/recpipe.v1.Admin/Status", &req.base,
                      &recpipe__v1__status_response__descriptor, a, (ProtobufCMessage **)&r, &o,
                      &st),
      RP_OK, st);
    assert_string_equal(r->service, "echo");
    assert_string_equal(r->software_version, "9.9.9");
    assert_false(r->serving);
    assert_string_equal(r->bundle_version, "test-v1");
    assert_int_equal(r->item_count, 42);
    assert_true(r->uptime_seconds > 0);
    assert_true(r->calls_total >= before.calls_total && r->calls_total > 0);
    assert_true(r->calls_failed >= 1); /* the NOT_FOUND health check above */
    assert_true(r->in_flight >= 1); /* this very call (and maybe the last one finishing) */
    rp_arena_destroy(a);
}

typedef struct tally {
    pthread_mutex_t mu;
    int ok, other, done;
    int codes[17];
} tally;

static void count_cb(void *user, int rc, ProtobufCMessage *resp, const rp_status *st)
{
    tally *t = user;
    pthread_mutex_lock(&t->mu);
    if (rc == RP_OK && resp) t->ok++;
    else t->other++;
    if (st->code >= 0 && st->code <= 16) t->codes[st->code]++;
    t->done++;
    if (getenv("TEST_RPC_VERBOSE")) fprintf(stderr, "cb: rc %d %s: %s\n", rc, rp_grpc_status_name(st->code), st->msg);
    pthread_mutex_unlock(&t->mu);
}

typedef struct ports {
    int port[2];
    int count[2];
    int other;
} ports;

static void port_cb(void *user, int rc, ProtobufCMessage *resp, const rp_status *st)
{
    ports *p = user;
    const Recpipe__V1__ReloadResponse *r = (const void *)resp;
    (void)st;
    if (rc == RP_OK && (int)r->load_seconds == p->port[0]) p->count[0]++;
    else if (rc == RP_OK && (int)r->load_seconds == p->port[1]) p->count[1]++;
    else p->other++;
}

static void test_async_round_robin(void **state)
{
    (void)state;
    rp_server *s2;
    char t2[64];
    start(&s2, 1, 0, t2, sizeof t2);
    char both[160];
    snprintf(both, sizeof both, "%s, %s", target, t2);
    rp_async *as;
    rp_error err = {0};
    assert_int_equal(rp_async_create(cli, &as, &err), RP_OK);
    rp_arena *arena;
    rp_arena_create(0, &arena);
    ports pc = {.port = {rp_server_port(srv), rp_server_port(s2)}};
    Recpipe__V1__ReloadRequest req = RECPIPE__V1__RELOAD_REQUEST__INIT;
    req.bundle_path = "port";
    rp_call_opts o = {.timeout_ms = 5000};
    for (int i = 0; i < 20; i++)
        assert_int_equal(rp_async_start(as, both, ECHO, &req.base,
                                        &recpipe__v1__reload_response__descriptor, arena, &o,
                                        port_cb, &pc, &err),
                         RP_OK);
    assert_int_equal(rp_async_pending(as), 20);
    assert_int_equal(rp_async_wait(as, 5000), RP_OK);
    assert_int_equal(rp_async_pending(as), 0);
    /* Round robin: each address got half of the calls. */
    assert_int_equal(pc.other, 0);
    assert_int_equal(pc.count[0], 10);
    assert_int_equal(pc.count[1], 10);

    /* rp_async_wait's own timeout cancels what is left; each callback still runs once. */
    tally t2c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    req.bundle_path = "sleep:1000";
    for (int i = 0; i < 3; i++)
        assert_int_equal(rp_async_start(as, target, ECHO, &req.base,
                                        &recpipe__v1__reload_response__descriptor, arena, &o,
                                        count_cb, &t2c, &err),
                         RP_OK);
    uint64_t t0 = rp_now_ns();
    assert_int_equal(rp_async_wait(as, 100), RP_ETIMEDOUT);
    assert_true((rp_now_ns() - t0) / 1000000 < 900); /* the calls take 1000 */
    assert_int_equal(t2c.done, 3);
    assert_int_equal(t2c.codes[RP_GRPC_CANCELLED], 3);

    /* A bad target fails at start and the callback never runs. */
    assert_int_equal(rp_async_start(as, " , ", ECHO, &req.base,
                                    &recpipe__v1__reload_response__descriptor, arena, &o,
                                    count_cb, &t2c, &err),
                     RP_EINVAL);
    assert_non_null(strstr(err.msg, "no address"));
    assert_int_equal(t2c.done, 3);
    rp_async_destroy(as);
    rp_arena_destroy(arena);
    rp_server_destroy(s2);
}

typedef struct drain_ctx {
    const char *target;
    int n;
    int sleep_ms;
    tally t;
} drain_ctx;

static void *drain_client(void *arg)
{
    drain_ctx *d = arg;
    rp_async *as;
    rp_error err = {0};
    rp_async_create(cli, &as, &err);
    rp_arena *arena;
    rp_arena_create(0, &arena);
    char cmd[32];
    snprintf(cmd, sizeof cmd, "sleep:%d", d->sleep_ms);
    Recpipe__V1__ReloadRequest req = RECPIPE__V1__RELOAD_REQUEST__INIT;
    req.bundle_path = cmd;
    rp_call_opts o = {.timeout_ms = 20000};
    for (int i = 0; i < d->n; i++)
        rp_async_start(as, d->target, ECHO, &req.base, &recpipe__v1__reload_response__descriptor,
                       arena, &o, count_cb, &d->t, &err);
    rp_async_wait(as, -1);
    rp_async_destroy(as);
    rp_arena_destroy(arena);
    return NULL;
}

/* Waits until n handlers started sleeping, then lets the other calls arrive. */
static void wait_sleepers(int n)
{
    for (int i = 0; i < 500 && atomic_load(&sleepers) < n; i++) rp_sleep_ns(10 * 1000000ull);
    if (atomic_load(&sleepers) < n) fail_msg("only %d of %d handlers started", atomic_load(&sleepers), n);
    rp_sleep_ns(100 * 1000000ull);
}

/* 50 calls in flight when the server stops: all 50 are answered OK within the grace. */
static void test_drain_completes_in_flight_calls(void **state)
{
    (void)state;
    rp_server *s;
    char t[64];
    start(&s, 4, 0, t, sizeof t);
    drain_ctx d = {.target = t, .n = 50, .sleep_ms = 100, .t = {.mu = PTHREAD_MUTEX_INITIALIZER}};
    pthread_t th;
    atomic_store(&sleepers, 0);
    pthread_create(&th, NULL, drain_client, &d);
    wait_sleepers(4);
    rp_server_stats st0;
    rp_server_get_stats(s, &st0);
    assert_true(st0.calls_total < 10); /* most of the 50 are still waiting */
    uint64_t t0 = rp_now_ns();
    assert_int_equal(rp_server_stop(s, 10.0), RP_OK);
    double secs = (double)(rp_now_ns() - t0) / 1e9;
    pthread_join(th, NULL);
    assert_int_equal(d.t.done, 50);
    if (d.t.ok != 50) fail_msg("%d of 50 calls OK during the drain", d.t.ok);
    assert_true(secs < 5.0);
    /* New calls after the stop fail promptly with a proper status. */
    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__ReloadResponse *r;
    rp_status st;
    rp_call_opts o = {.timeout_ms = 2000};
    int rc = call_echo(t, "echo:late", a, &o, &r, &st);
    assert_int_not_equal(rc, RP_OK);
    assert_int_equal(st.code, RP_GRPC_UNAVAILABLE);
    rp_arena_destroy(a);
    rp_server_destroy(s);
}

typedef struct lane_ctx {
    const char *target;
    tally t;
} lane_ctx;

/* Four calls of the io method, driven until all are answered. */
static void *lane_client(void *arg)
{
    lane_ctx *d = arg;
    rp_async *as;
    rp_error err = {0};
    rp_async_create(cli, &as, &err);
    rp_arena *arena;
    rp_arena_create(0, &arena);
    Recpipe__V1__ReloadRequest req = RECPIPE__V1__RELOAD_REQUEST__INIT;
    req.bundle_path = "gate";
    rp_call_opts o = {.timeout_ms = 20000};
    for (int i = 0; i < 4; i++)
        rp_async_start(as, d->target, SLOW, &req.base, &recpipe__v1__reload_response__descriptor,
                       arena, &o, count_cb, &d->t, &err);
    rp_async_wait(as, -1);
    rp_async_destroy(as);
    rp_arena_destroy(arena);
    return NULL;
}

/* The I/O lane: four calls of an io method stuck on a closed gate hold one of the four
 * workers (io_threads 1); a call of another method is answered meanwhile; once the gate
 * opens the four are answered, one at a time. */
static void test_io_lane(void **state)
{
    (void)state;
    static const rp_method lane_methods[] = {
        {ECHO, &recpipe__v1__reload_request__descriptor, &recpipe__v1__reload_response__descriptor,
         echo, NULL},
        {SLOW, &recpipe__v1__reload_request__descriptor, &recpipe__v1__reload_response__descriptor,
         echo, NULL},
    };
    static const char *const io[] = {SLOW, NULL};
    rp_server_config cfg = {.service = "echo", .listen = "127.0.0.1:0", .threads = 4,
                            .io_methods = io, .io_threads = 1};
    rp_server *s;
    rp_error err = {0};
    if (rp_server_start(&cfg, lane_methods, 2, &s, &err) != RP_OK)
        fail_msg("rp_server_start: %s", rp_error_text(&err));
    char t[64];
    snprintf(t, sizeof t, "127.0.0.1:%d", rp_server_port(s));
    atomic_store(&gate_running, 0);
    atomic_store(&gate_max, 0);
    atomic_store(&gate_open, false);

    lane_ctx d = {.target = t, .t = {.mu = PTHREAD_MUTEX_INITIALIZER}};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, lane_client, &d), 0);
    /* One handler at the gate, then time for the others to arrive: they must wait in
     * the lane, not run. */
    for (int i = 0; i < 500 && atomic_load(&gate_running) < 1; i++) rp_sleep_ns(10000000ull);
    assert_int_equal(atomic_load(&gate_running), 1);
    rp_sleep_ns(200000000ull);
    assert_int_equal(atomic_load(&gate_max), 1);
    pthread_mutex_lock(&d.t.mu);
    assert_int_equal(d.t.done, 0);
    pthread_mutex_unlock(&d.t.mu);

    /* Another method is served meanwhile (without the lane, all four workers would be
     * at the gate and this call would wait for them). */
    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__ReloadResponse *r;
    rp_status st;
    rp_call_opts fast = {.timeout_ms = 2000};
    E(call_echo(t, "echo:past the lane", a, &fast, &r, &st), RP_OK, st);
    assert_string_equal(r->bundle_version, "past the lane");

    atomic_store(&gate_open, true);
    pthread_join(th, NULL);
    assert_int_equal(d.t.done, 4);
    assert_int_equal(d.t.ok, 4);
    assert_int_equal(atomic_load(&gate_max), 1);
    rp_arena_destroy(a);
    rp_server_destroy(s);
}

typedef struct arena_ctx {
    const char *target;
    const char *cmd;
    bool ok;
} arena_ctx;

static void *arena_caller(void *arg)
{
    arena_ctx *x = arg;
    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__ReloadResponse *r;
    rp_status st;
    rp_call_opts opts = {.timeout_ms = 10000};
    x->ok = call_echo(x->target, x->cmd, a, &opts, &r, &st) == RP_OK;
    rp_arena_destroy(a);
    return NULL;
}

/* A handler's arena is its thread's, lent for the call: 20 calls queued behind one
 * worker all run in that worker's one arena (a call waiting in the queue holds none). */
static void test_queued_calls_hold_no_arena(void **state)
{
    (void)state;
    rp_server_config cfg = {.service = "echo", .listen = "127.0.0.1:0", .threads = 1};
    rp_server *s;
    rp_error err = {0};
    if (rp_server_start(&cfg, methods, sizeof methods / sizeof methods[0], &s, &err) != RP_OK)
        fail_msg("rp_server_start: %s", rp_error_text(&err));
    char t[64];
    snprintf(t, sizeof t, "127.0.0.1:%d", rp_server_port(s));
    atomic_store(&gate_running, 0);
    atomic_store(&gate_max, 0);
    atomic_store(&gate_open, false);
    narenas_seen = 0;
    enum { N = 20 };
    arena_ctx gate = {.target = t, .cmd = "gate"}, x[N];
    pthread_t gth, th[N];
    assert_int_equal(pthread_create(&gth, NULL, arena_caller, &gate), 0);
    for (int i = 0; i < 500 && atomic_load(&gate_running) < 1; i++) rp_sleep_ns(10000000ull);
    assert_int_equal(atomic_load(&gate_running), 1); /* the only worker is held */
    for (int i = 0; i < N; i++) {
        x[i] = (arena_ctx){.target = t, .cmd = "arena"};
        assert_int_equal(pthread_create(&th[i], NULL, arena_caller, &x[i]), 0);
    }
    /* Until all 20 wait in the server's queue (in flight: the gate's call and theirs). */
    rp_server_stats ss = {0};
    for (int i = 0; i < 500; i++) {
        rp_server_get_stats(s, &ss);
        if (ss.in_flight >= N + 1) break;
        rp_sleep_ns(10000000ull);
    }
    assert_int_equal(ss.in_flight, N + 1);
    atomic_store(&gate_open, true);
    pthread_join(gth, NULL);
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    assert_true(gate.ok);
    for (int i = 0; i < N; i++) assert_true(x[i].ok);
    assert_int_equal(narenas_seen, 1);
    rp_server_destroy(s);
}

/* Calls outlasting the grace period are cancelled (safe to retry) and the stop says so. */
static void test_drain_grace_expires(void **state)
{
    (void)state;
    rp_server *s;
    char t[64];
    start(&s, 2, 0, t, sizeof t);
    drain_ctx d = {.target = t, .n = 2, .sleep_ms = 1500, .t = {.mu = PTHREAD_MUTEX_INITIALIZER}};
    pthread_t th;
    atomic_store(&sleepers, 0);
    pthread_create(&th, NULL, drain_client, &d);
    wait_sleepers(2);
    assert_int_equal(rp_server_stop(s, 0.2), RP_ETIMEDOUT);
    pthread_join(th, NULL);
    assert_int_equal(d.t.done, 2);
    /* gRPC cancels them by closing the connections: the callers see UNAVAILABLE. */
    if (d.t.codes[RP_GRPC_UNAVAILABLE] != 2)
        fail_msg("cancelled calls: %d CANCELLED, %d OK, %d UNAVAILABLE, %d DEADLINE", 
                 d.t.codes[RP_GRPC_CANCELLED], d.t.codes[0], d.t.codes[RP_GRPC_UNAVAILABLE],
                 d.t.codes[RP_GRPC_DEADLINE_EXCEEDED]);
    rp_server_destroy(s);
}

static void test_bad_config_is_refused(void **state)
{
    (void)state;
    rp_server *s = NULL;
    rp_error err = {0};
    rp_server_config cfg = {.service = "x", .listen = "127.0.0.1:0"};
    rp_method dup[] = {methods[0], methods[0]};
    assert_int_equal(rp_server_start(&cfg, dup, 2, &s, &err), RP_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err.msg, "listed twice"));
    rp_method nopath[] = {{"Echo", methods[0].request, methods[0].response, echo, NULL}};
    assert_int_equal(rp_server_start(&cfg, nopath, 1, &s, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "'Echo'"));
    /* The port of the running server is taken. */
    char addr[64];
    snprintf(addr, sizeof addr, "%s", target);
    cfg.listen = addr;
    assert_int_equal(rp_server_start(&cfg, methods, 1, &s, &err), RP_EIO);
    assert_non_null(strstr(err.msg, addr));
    assert_null(s);
}


/* A raw server-streaming Health/Watch call, driven step by step. */
typedef struct watch {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array im, tm;
    grpc_status_code status;
    grpc_slice details;
    grpc_byte_buffer *send;
} watch;

static void *pluck(watch *w, void *tag, int ms)
{
    gpr_timespec d = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_pluck(w->cq, tag, d, NULL);
    if (ev.type != GRPC_OP_COMPLETE) fail_msg("no completion within %d ms", ms);
    return ev.success ? tag : NULL;
}

static void watch_start(watch *w, const char *tgt)
{
    memset(w, 0, sizeof *w);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    w->ch = grpc_channel_create(tgt, creds, NULL);
    grpc_channel_credentials_release(creds);
    w->cq = grpc_completion_queue_create_for_pluck(NULL);
    w->call = grpc_channel_create_call(w->ch, NULL, GRPC_PROPAGATE_DEFAULTS, w->cq,
                                       grpc_slice_from_static_string("/grpc.health.v1.Health/Watch"),
                                       NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_metadata_array_init(&w->im);
    grpc_metadata_array_init(&w->tm);
    w->details = grpc_empty_slice();
    grpc_slice empty = grpc_empty_slice();
    w->send = grpc_raw_byte_buffer_create(&empty, 1);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = w->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &w->im;
    assert_int_equal(grpc_call_start_batch(w->call, ops, 4, (void *)1, NULL), GRPC_CALL_OK);
    assert_non_null(pluck(w, (void *)1, 5000));
    grpc_op st;
    memset(&st, 0, sizeof st);
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &w->tm;
    st.data.recv_status_on_client.status = &w->status;
    st.data.recv_status_on_client.status_details = &w->details;
    assert_int_equal(grpc_call_start_batch(w->call, &st, 1, (void *)2, NULL), GRPC_CALL_OK);
}

/* The next streamed status, or -1 when the stream ended. */
static int watch_next(watch *w)
{
    grpc_byte_buffer *bb = NULL;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &bb;
    assert_int_equal(grpc_call_start_batch(w->call, &op, 1, (void *)3, NULL), GRPC_CALL_OK);
    pluck(w, (void *)3, 5000);
    if (!bb) return -1;
    grpc_byte_buffer_reader r;
    grpc_byte_buffer_reader_init(&r, bb);
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    Grpc__Health__V1__HealthCheckResponse *m = grpc__health__v1__health_check_response__unpack(
        NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    grpc_byte_buffer_destroy(bb);
    assert_non_null(m);
    int status = m->status;
    grpc__health__v1__health_check_response__free_unpacked(m, NULL);
    return status;
}

static int watch_end(watch *w, bool cancel)
{
    if (cancel) grpc_call_cancel(w->call, NULL);
    pluck(w, (void *)2, 5000);
    int status = (int)w->status;
    grpc_slice_unref(w->details);
    grpc_metadata_array_destroy(&w->im);
    grpc_metadata_array_destroy(&w->tm);
    grpc_byte_buffer_destroy(w->send);
    grpc_call_unref(w->call);
    grpc_completion_queue_shutdown(w->cq);
    grpc_completion_queue_pluck(w->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_completion_queue_destroy(w->cq);
    grpc_channel_destroy(w->ch);
    return status;
}

typedef struct stopper {
    rp_server *s;
    uint64_t t0, ms;
    int rc;
} stopper;

static void *stop_thread(void *arg)
{
    stopper *st = arg;
    st->rc = rp_server_stop(st->s, 5.0);
    st->ms = (rp_now_ns() - st->t0) / 1000000;
    return NULL;
}

static void test_health_watch_streams_changes(void **state)
{
    (void)state;
    rp_server *s;
    char t[64];
    start(&s, 2, 0, t, sizeof t);
    enum { SERVING = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
           NOT_SERVING = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING };
    /* A caller that goes away: its stream is released. */
    watch gone;
    watch_start(&gone, t);
    assert_int_equal(watch_next(&gone), NOT_SERVING);
    assert_int_equal(watch_end(&gone, true), GRPC_STATUS_CANCELLED);

    watch w;
    watch_start(&w, t);
    assert_int_equal(watch_next(&w), NOT_SERVING);
    rp_server_set_serving(s, true);
    assert_int_equal(watch_next(&w), SERVING);
    rp_server_set_serving(s, true); /* no change, nothing sent */
    rp_server_set_serving(s, false);
    assert_int_equal(watch_next(&w), NOT_SERVING);
    rp_server_set_serving(s, true);
    assert_int_equal(watch_next(&w), SERVING);
    /* Stopping reports NOT_SERVING, then ends the stream with OK and does not wait for
     * the grace period (the client reads meanwhile, as a real one does). */
    stopper st = {.s = s, .t0 = rp_now_ns()};
    pthread_t th;
    pthread_create(&th, NULL, stop_thread, &st);
    assert_int_equal(watch_next(&w), NOT_SERVING);
    assert_int_equal(watch_next(&w), -1);
    assert_int_equal(watch_end(&w, false), GRPC_STATUS_OK);
    pthread_join(th, NULL);
    assert_int_equal(st.rc, RP_OK);
    if (st.ms >= 2500) fail_msg("stop with a Watch stream open took %llu ms", (unsigned long long)st.ms);
    rp_server_destroy(s);
}


static void test_expired_calls_skip_the_handler(void **state)
{
    (void)state;
    rp_server *s;
    char t[64];
    start(&s, 1, 0, t, sizeof t); /* one worker: the second call waits behind the first */
    drain_ctx d = {.target = t, .n = 1, .sleep_ms = 400, .t = {.mu = PTHREAD_MUTEX_INITIALIZER}};
    pthread_t th;
    atomic_store(&sleepers, 0);
    pthread_create(&th, NULL, drain_client, &d);
    wait_sleepers(1);
    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__ReloadResponse *r;
    rp_status st;
    rp_call_opts o = {.timeout_ms = 100};
    atomic_store(&echo_calls, 0);
    E(call_echo(t, "count", a, &o, &r, &st), RP_ETIMEDOUT, st);
    pthread_join(th, NULL);
    assert_int_equal(d.t.ok, 1);
    /* The worker got to the second call after its deadline: answered without running. */
    rp_sleep_ns(50 * 1000000ull);
    assert_int_equal(atomic_load(&echo_calls), 0);
    o.timeout_ms = 2000;
    E(call_echo(t, "count", a, &o, &r, &st), RP_OK, st);
    assert_int_equal(atomic_load(&echo_calls), 1);
    rp_arena_destroy(a);
    rp_server_destroy(s);
}

static void test_status_mapping_round_trips(void **state)
{
    (void)state;
    /* Every rp error maps to a status that maps back to an error of the same status. */
    for (int code = -1; code > -64; code--) {
        if (!strcmp(rp_strerror(code), "unknown error")) break;
        int status = rp_err_grpc_status(code);
        assert_true(status > 0 && status <= 16);
        int back = rp_err_from_grpc_status(status);
        if (rp_err_grpc_status(back) != status)
            fail_msg("%s -> %s -> %s", rp_err_name(code), rp_grpc_status_name(status),
                     rp_err_name(back));
    }
    assert_int_equal(rp_err_from_grpc_status(RP_GRPC_OK), RP_OK);
    assert_int_equal(rp_err_from_grpc_status(RP_GRPC_UNAVAILABLE), RP_EUNAVAIL);
    assert_int_equal(rp_err_from_grpc_status(RP_GRPC_DEADLINE_EXCEEDED), RP_ETIMEDOUT);
    assert_int_equal(rp_err_from_grpc_status(99), RP_EINTERNAL);
    assert_string_equal(rp_grpc_status_name(RP_GRPC_RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
    assert_string_equal(rp_grpc_status_name(-1), "UNKNOWN_STATUS");
}


typedef struct sync_ctx {
    const char *target;
    int ok;
    char err[600];
} sync_ctx;

static void *sync_caller(void *arg)
{
    sync_ctx *x = arg;
    rp_arena *a;
    rp_arena_create(0, &a);
    for (int i = 0; i < 40; i++) {
        Recpipe__V1__ReloadResponse *r;
        rp_status st;
        char cmd[32];
        snprintf(cmd, sizeof cmd, "echo:%d", i);
        if (call_echo(x->target, cmd, a, NULL, &r, &st) == RP_OK && !strcmp(r->bundle_version, cmd + 5))
            x->ok++;
        else
            snprintf(x->err, sizeof x->err, "%s: %s", rp_grpc_status_name(st.code), st.msg);
        rp_arena_reset(a);
    }
    rp_arena_destroy(a);
    return NULL;
}

/* rp_client_unary from many threads at once, on a target none has used yet. */
static void test_unary_from_many_threads(void **state)
{
    (void)state;
    char fresh[80];
    snprintf(fresh, sizeof fresh, "%s,%s", target, target); /* a new channel set */
    sync_ctx x[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        x[i] = (sync_ctx){.target = fresh};
        pthread_create(&th[i], NULL, sync_caller, &x[i]);
    }
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 8; i++)
        if (x[i].ok != 40) fail_msg("thread %d: %d of 40 OK (%s)", i, x[i].ok, x[i].err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_path),
        cmocka_unit_test(test_handler_error_maps_to_status),
        cmocka_unit_test(test_unknown_method_is_unimplemented_at_once),
        cmocka_unit_test(test_garbage_bytes_are_invalid_argument),
        cmocka_unit_test(test_cancelled_before_message_counts_as_cancelled),
        cmocka_unit_test(test_oversized_is_resource_exhausted),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_request_id_and_metadata),
        cmocka_unit_test(test_health_and_admin),
        cmocka_unit_test(test_health_watch_streams_changes),
        cmocka_unit_test(test_async_round_robin),
        cmocka_unit_test(test_unary_from_many_threads),
        cmocka_unit_test(test_drain_completes_in_flight_calls),
        cmocka_unit_test(test_drain_grace_expires),
        cmocka_unit_test(test_io_lane),
        cmocka_unit_test(test_queued_calls_hold_no_arena),
        cmocka_unit_test(test_bad_config_is_refused),
        cmocka_unit_test(test_expired_calls_skip_the_handler),
        cmocka_unit_test(test_status_mapping_round_trips),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
