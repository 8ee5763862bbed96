/*
 * bench_rpc — unary QPS and latency of Admin.Status through the RPC layer, from the
 * project's own client (rp_async, one thread) at fixed numbers of calls in flight.
 *
 *   bench_rpc --target 127.0.0.1:PORT [--seconds 3] [--inflight 1,8,64] [--json PATH]
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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(int argc, char **argv)
{
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
    printf("RPC layer, %s from rp_async (1 client thread, 1 connection), %d cores, %.1f s per level\n",
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
