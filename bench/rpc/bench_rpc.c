/*
 * bench_rpc — unary QPS and latency of Admin.Status through the RPC layer, from the
 * project's own client (rp_async, one thread) at fixed numbers of calls in flight.
 *
 *   bench_rpc --target 127.0.0.1:PORT [--seconds 3] [--inflight 1,8,64] [--json PATH]
 *   bench_rpc --bare-echo PORT_FILE [--threads N]
 *
 * --bare-echo runs the reference instead: a bare gRPC C core server (no layer: no arena,
 * no protobuf, no logs, no counters) that answers every call to the same path with the
 * request bytes, on 127.0.0.1:0, N threads (default: cores) on one completion queue,
 * until SIGTERM. Measuring both with the same client under the same load gives the
 * layer's share of the raw rate.
 *
 * Each level runs a closed loop: every completed call immediately starts the next one.
 * Prints one line per level and, with --json, writes {"levels":[{"inflight":..,"qps":..,
 * "p50_us":..,"p99_us":..,"errors":..}]}.
 */
#include "recpipe/v1/admin.pb-c.h"
#include "rp/clock.h"
#include "rp/hist.h"
#include "rp/log.h"
#include "rp/rpc.h"
#include "rp/threads.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PATH "/recpipe.v1.Admin/Status"

typedef struct bench bench;
typedef struct slot {
    bench *b;
    uint64_t t0;
} slot;

struct bench {
    rp_async *as;
    rp_arena *arena;
    const char *target;
    uint64_t end_ns, measure_from_ns;
    rp_hist hist;
    uint64_t ok, errors;
    char last_error[600];
};

static void on_done(void *user, int rc, ProtobufCMessage *resp, const rp_status *st);

static int start(slot *s)
{
    bench *b = s->b;
    static const Recpipe__V1__StatusRequest req = RECPIPE__V1__STATUS_REQUEST__INIT;
    rp_call_opts o = {.timeout_ms = 10000};
    rp_error err = {0};
    s->t0 = rp_now_ns();
    int rc = rp_async_start(b->as, b->target, PATH, &req.base,
                            &recpipe__v1__status_response__descriptor, b->arena, &o, on_done, s,
                            &err);
    if (rc != RP_OK) {
        b->errors++;
        snprintf(b->last_error, sizeof b->last_error, "%s", rp_error_text(&err));
    }
    return rc;
}

static void on_done(void *user, int rc, ProtobufCMessage *resp, const rp_status *st)
{
    slot *s = user;
    bench *b = s->b;
    uint64_t now = rp_now_ns();
    (void)resp;
    if (s->t0 >= b->measure_from_ns) {
        if (rc == RP_OK) {
            b->ok++;
            rp_hist_record(&b->hist, now - s->t0);
        } else {
            b->errors++;
            snprintf(b->last_error, sizeof b->last_error, "%s: %s",
                     rp_grpc_status_name(st->code), st->msg);
        }
    }
    /* The response has been looked at: nothing points into the arena any more. */
    rp_arena_reset(b->arena);
    if (now < b->end_ns) start(s);
}

/* ---- the bare reference server ---- */

typedef struct bare_call {
    int state; /* 0 = requested, 1 = answering */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_slice details;
    int cancelled;
} bare_call;

static grpc_server *bare_server;
static grpc_completion_queue *bare_cq;
static void *bare_method;
static volatile sig_atomic_t bare_stop;

static void bare_request(bare_call *c)
{
    memset(c, 0, sizeof *c);
    grpc_metadata_array_init(&c->md);
    grpc_server_request_registered_call(bare_server, bare_method, &c->call, &c->deadline, &c->md,
                                        &c->payload, bare_cq, bare_cq, c);
}

static void *bare_worker(void *arg)
{
    (void)arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(bare_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE || !ev.tag) continue; /* NULL: the shutdown tag */
        bare_call *c = ev.tag;
        if (!ev.success) {
            grpc_metadata_array_destroy(&c->md);
            free(c);
            continue;
        }
        if (c->state == 0) {
            bare_call *next = malloc(sizeof *next);
            bare_request(next);
            c->state = 1;
            c->details = grpc_empty_slice();
            grpc_op ops[4];
            memset(ops, 0, sizeof ops);
            ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
            ops[1].op = GRPC_OP_SEND_MESSAGE;
            ops[1].data.send_message.send_message = c->payload;
            ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
            ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
            ops[2].data.send_status_from_server.status_details = &c->details;
            ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
            ops[3].data.recv_close_on_server.cancelled = &c->cancelled;
            grpc_call_start_batch(c->call, ops, c->payload ? 4 : 3, c, NULL);
        } else {
            if (c->payload) grpc_byte_buffer_destroy(c->payload);
            grpc_metadata_array_destroy(&c->md);
            grpc_call_unref(c->call);
            free(c);
        }
    }
    return NULL;
}

static void bare_on_signal(int sig)
{
    (void)sig;
    bare_stop = 1;
}

static int run_bare_echo(const char *port_file, int threads)
{
    grpc_init();
    bare_server = grpc_server_create(NULL, NULL);
    bare_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(bare_server, bare_cq, NULL);
    bare_method = grpc_server_register_method(bare_server, PATH, NULL,
                                              GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(bare_server, "127.0.0.1:0", creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        fprintf(stderr, "bench_rpc: cannot listen on 127.0.0.1:0\n");
        return 1;
    }
    grpc_server_start(bare_server);
    for (int i = 0; i < 64; i++) bare_request(malloc(sizeof(bare_call)));
    pthread_t th[64];
    if (threads <= 0) threads = rp_ncores();
    if (threads > 64) threads = 64;
    for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, bare_worker, NULL);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, port_file) != 0) {
        perror(port_file);
        return 1;
    }
    signal(SIGTERM, bare_on_signal);
    signal(SIGINT, bare_on_signal);
    while (!bare_stop) pause();
    grpc_server_shutdown_and_notify(bare_server, bare_cq, NULL);
    grpc_server_cancel_all_calls(bare_server);
    grpc_completion_queue *cq = bare_cq;
    rp_sleep_ns(200 * 1000000ull); /* let the workers see the shutdown tag */
    grpc_server_destroy(bare_server);
    grpc_completion_queue_shutdown(cq);
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--bare-echo"))
        return run_bare_echo(argv[2], argc >= 5 && !strcmp(argv[3], "--threads") ? atoi(argv[4]) : 0);
    const char *target = NULL, *json = NULL, *levels = "1,8,64";
    double seconds = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--target")) target = argv[i + 1];
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--inflight")) levels = argv[i + 1];
        else if (!strcmp(argv[i], "--json")) json = argv[i + 1];
        else {
            fprintf(stderr, "bench_rpc: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!target || seconds <= 0) {
        fprintf(stderr, "usage: bench_rpc --target HOST:PORT [--seconds S] [--inflight 1,8,64] "
                        "[--json PATH]\n");
        return 2;
    }
    rp_log_set_level(RP_LOG_WARN);
    rp_client *c;
    rp_error err = {0};
    if (rp_client_create(NULL, &c, &err) != RP_OK) {
        fprintf(stderr, "bench_rpc: %s\n", rp_error_text(&err));
        return 1;
    }
    bench *b = calloc(1, sizeof *b);
    b->target = target;
    rp_arena_create(0, &b->arena);
    FILE *out = json ? fopen(json, "w") : NULL;
    if (json && !out) {
        perror(json);
        return 1;
    }
    if (out) fprintf(out, "{\"target\":\"%s\",\"method\":\"%s\",\"seconds\":%.1f,\"cores\":%d,"
                          "\"client_threads\":1,\"levels\":[", target, PATH, seconds, rp_ncores());
    printf("client: %s from rp_async (1 client thread, 1 connection), %d cores, %.1f s per level\n",
           PATH, rp_ncores(), seconds);
    char *list = strdup(levels);
    int first = 1, failed = 0;
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int n = atoi(tok);
        if (n <= 0) continue;
        rp_async_create(c, &b->as, &err);
        rp_hist_reset(&b->hist);
        b->ok = b->errors = 0;
        b->last_error[0] = '\0';
        slot *slots = calloc((size_t)n, sizeof *slots);
        uint64_t t0 = rp_now_ns();
        b->measure_from_ns = t0 + 300 * 1000000ull; /* warm-up */
        b->end_ns = b->measure_from_ns + (uint64_t)(seconds * 1e9);
        for (int i = 0; i < n; i++) {
            slots[i].b = b;
            start(&slots[i]);
        }
        rp_async_wait(b->as, -1);
        double secs = (double)(rp_now_ns() - b->measure_from_ns) / 1e9;
        double qps = (double)b->ok / secs;
        double p50 = (double)rp_hist_percentile(&b->hist, 50) / 1e3;
        double p99 = (double)rp_hist_percentile(&b->hist, 99) / 1e3;
        printf("  in flight %3d: %9.0f calls/s   p50 %7.1f us   p99 %7.1f us   errors %llu%s%s\n",
               n, qps, p50, p99, (unsigned long long)b->errors, b->errors ? " last: " : "",
               b->last_error);
        if (out)
            fprintf(out, "%s{\"inflight\":%d,\"calls\":%llu,\"qps\":%.0f,\"p50_us\":%.1f,"
                         "\"p99_us\":%.1f,\"errors\":%llu}",
                    first ? "" : ",", n, (unsigned long long)b->ok, qps, p50, p99,
                    (unsigned long long)b->errors);
        first = 0;
        failed |= b->errors > 0 || b->ok == 0;
        rp_async_destroy(b->as);
        free(slots);
    }
    if (out) {
        fprintf(out, "]}\n");
        fclose(out);
    }
    free(list);
    rp_arena_destroy(b->arena);
    free(b);
    rp_client_destroy(c);
    return failed ? 1 : 0;
}
