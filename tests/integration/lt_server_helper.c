/*
 * lt_test_server — a gRPC server (C core) for the load generator's tests. It answers
 * every method with an empty message and status OK after a known delay:
 *
 *   lt_test_server [--delay-ms D] [--jitter-ms J] [--stall-after-ms A --stall-ms S]
 *                  [--delays-out FILE] [--seed N] [--max-seconds T]
 *
 * The delay of each call is drawn uniformly from [D - J, D + J] ms and counted from the
 * moment the call arrives. With --stall-ms, the server freezes S ms long, starting A ms
 * after the first call: calls that arrive during the freeze are taken in at its end,
 * and answers due during it are sent at its end. The time each call really spent here
 * (arrival to the answer being sent, microseconds, one per line) is written to
 * --delays-out at exit: the truth the client's percentiles are checked against.
 *
 * Prints "PORT <n>" on stdout once listening on 127.0.0.1 (ephemeral port). Exits 0 on
 * SIGTERM or after --max-seconds (default 120), so a forgotten server does not linger.
 * Delays are kept by a timer heap on one thread: no thread per call, so thousands of
 * calls can wait at once.
 */
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct pending {
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *recv, *send;
    int cancelled;
    uint64_t arrival_ns, due_ns;
    int stage; /* 0 = requested, 1 = reading, 2 = answering */
} pending;

static volatile sig_atomic_t stop_flag;
static void on_term(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state = 88172645463325252ull;
static double unif(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* A binary heap of calls by due time. */
static pending **heap;
static size_t nheap, capheap;
static void heap_push(pending *p)
{
    if (nheap == capheap) {
        capheap = capheap ? capheap * 2 : 1024;
        heap = realloc(heap, capheap * sizeof *heap);
        if (!heap) abort();
    }
    size_t i = nheap++;
    while (i > 0 && heap[(i - 1) / 2]->due_ns > p->due_ns) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = p;
}
static pending *heap_pop(void)
{
    pending *top = heap[0], *last = heap[--nheap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= nheap) break;
        if (c + 1 < nheap && heap[c + 1]->due_ns < heap[c]->due_ns) c++;
        if (heap[c]->due_ns >= last->due_ns) break;
        heap[i] = heap[c];
        i = c;
    }
    if (nheap) heap[i] = last;
    return top;
}

static grpc_server *server;
static grpc_completion_queue *cq;
static uint64_t *delays_us;
static size_t ndelays, capdelays;

static void request_one(void)
{
    pending *p = calloc(1, sizeof *p);
    if (!p) abort();
    grpc_call_details_init(&p->details);
    grpc_metadata_array_init(&p->md);
    if (grpc_server_request_call(server, &p->call, &p->details, &p->md, cq, cq, p) != GRPC_CALL_OK)
        abort();
}

static void answer(pending *p)
{
    grpc_slice empty = grpc_empty_slice();
    p->send = grpc_raw_byte_buffer_create(&empty, 1);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = p->send;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[3].data.recv_close_on_server.cancelled = &p->cancelled;
    p->stage = 2;
    if (grpc_call_start_batch(p->call, ops, 4, p, NULL) != GRPC_CALL_OK) abort();
    if (ndelays == capdelays) {
        capdelays = capdelays ? capdelays * 2 : 4096;
        delays_us = realloc(delays_us, capdelays * sizeof *delays_us);
        if (!delays_us) abort();
    }
    /* What the caller waited on at least: from arrival to the answer really leaving. */
    delays_us[ndelays++] = (now_ns() - p->arrival_ns) / 1000;
}

static void release(pending *p)
{
    if (p->call) grpc_call_unref(p->call);
    grpc_call_details_destroy(&p->details);
    grpc_metadata_array_destroy(&p->md);
    if (p->recv) grpc_byte_buffer_destroy(p->recv);
    if (p->send) grpc_byte_buffer_destroy(p->send);
    free(p);
}

int main(int argc, char **argv)
{
    double delay_ms = 20, jitter_ms = 0, stall_after_ms = -1, stall_ms = 0, max_s = 120;
    const char *delays_out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "lt_test_server: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--delay-ms")) delay_ms = atof(v);
        else if (!strcmp(a, "--jitter-ms")) jitter_ms = atof(v);
        else if (!strcmp(a, "--stall-after-ms")) stall_after_ms = atof(v);
        else if (!strcmp(a, "--stall-ms")) stall_ms = atof(v);
        else if (!strcmp(a, "--delays-out")) delays_out = v;
        else if (!strcmp(a, "--seed")) rng_state = strtoull(v, NULL, 10) | 1;
        else if (!strcmp(a, "--max-seconds")) max_s = atof(v);
        else {
            fprintf(stderr, "lt_test_server: unknown flag %s\n", a);
            return 2;
        }
        i++;
    }
    if (jitter_ms > delay_ms) {
        fprintf(stderr, "lt_test_server: --jitter-ms must not exceed --delay-ms\n");
        return 2;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);

    grpc_init();
    cq = grpc_completion_queue_create_for_next(NULL);
    server = grpc_server_create(NULL, NULL);
    grpc_server_register_completion_queue(server, cq, NULL);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, "127.0.0.1:0", creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        fprintf(stderr, "lt_test_server: cannot bind 127.0.0.1:0\n");
        return 1;
    }
    grpc_server_start(server);
    for (int i = 0; i < 256; i++) request_one();
    printf("PORT %d\n", port);
    fflush(stdout);

    uint64_t start = now_ns(), first_call = 0, stall_start = UINT64_MAX, stall_end = 0;
    uint64_t spin_ns = 1500000;
    while (!stop_flag && now_ns() - start < (uint64_t)(max_s * 1e9)) {
        uint64_t now = now_ns();
        /* Answer every call that is due. */
        while (nheap && heap[0]->due_ns <= now) answer(heap_pop());
        uint64_t wait = 100000000;
        if (nheap) {
            uint64_t until = heap[0]->due_ns - now;
            if (until < wait) wait = until;
        }
        gpr_timespec dl = wait > spin_ns
                              ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                             gpr_time_from_nanos((int64_t)(wait - spin_ns), GPR_TIMESPAN))
                              : gpr_inf_past(GPR_CLOCK_MONOTONIC);
        grpc_event ev = grpc_completion_queue_next(cq, dl, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT && wait <= spin_ns) sched_yield();
        if (ev.type != GRPC_OP_COMPLETE) continue;
        pending *p = ev.tag;
        if (p->stage == 0) {
            request_one();
            if (!ev.success) {
                release(p);
                continue;
            }
            uint64_t t = now_ns();
            if (!first_call) {
                first_call = t;
                if (stall_after_ms >= 0 && stall_ms > 0) {
                    stall_start = first_call + (uint64_t)(stall_after_ms * 1e6);
                    stall_end = stall_start + (uint64_t)(stall_ms * 1e6);
                }
            }
            p->arrival_ns = t;
            p->stage = 1;
            grpc_op op;
            memset(&op, 0, sizeof op);
            op.op = GRPC_OP_RECV_MESSAGE;
            op.data.recv_message.recv_message = &p->recv;
            if (grpc_call_start_batch(p->call, &op, 1, p, NULL) != GRPC_CALL_OK) abort();
        } else if (p->stage == 1) {
            double d = delay_ms + (2 * unif() - 1) * jitter_ms;
            uint64_t taken = p->arrival_ns;
            /* A frozen server takes in nothing until the freeze ends. */
            if (taken >= stall_start && taken < stall_end) taken = stall_end;
            p->due_ns = taken + (uint64_t)(d * 1e6);
            if (p->due_ns >= stall_start && p->due_ns < stall_end) p->due_ns = stall_end;
            heap_push(p);
        } else {
            release(p);
        }
    }

    grpc_server_shutdown_and_notify(server, cq, NULL);
    grpc_server_cancel_all_calls(server);
    while (nheap) {
        pending *p = heap_pop();
        release(p);
    }
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(2000, GPR_TIMESPAN)),
            NULL);
        if (ev.type != GRPC_OP_COMPLETE) break;
        if (ev.tag) release(ev.tag);
        else break; /* the shutdown notification */
    }
    if (delays_out) {
        FILE *f = fopen(delays_out, "w");
        if (!f) {
            fprintf(stderr, "lt_test_server: cannot write %s\n", delays_out);
            return 1;
        }
        for (size_t i = 0; i < ndelays; i++) fprintf(f, "%llu\n", (unsigned long long)delays_us[i]);
        fclose(f);
    }
    return 0;
}
