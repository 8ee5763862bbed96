/*
 * bench/retrieval: Retrieve over gRPC against the same searches in-process.
 *
 *   bench_retrieval --bundle DIR --recpipe BIN [--seconds S] [--threads T] [--window W]
 *                   [--out FILE.json]
 *
 * 1. In-process: T threads call idx_ann_search (k=100) on the bundle's index with the
 *    same query vectors for S seconds: the rate, per-search latency and CPU per search
 *    (FAISS's own cost, the ceiling for the service). Then the whole retrieval path
 *    in-process (request validation, sources, merge, response; ret_service internals,
 *    this file includes service.c): its CPU per call outside the ANN call.
 * 2. Over gRPC: starts `recpipe retrieval --bundle DIR --threads T`, keeps W Retrieve
 *    calls (query_vector, k=100) in flight from one client thread on this machine for S
 *    seconds: the rate, p50/p99 latency, and the server's CPU time per call (from
 *    /proc/PID/stat) minus the in-process CPU per search = CPU spent outside FAISS.
 * 3. The same stream for S/2 seconds with UpsertItems alongside: upsert latency, the
 *    Retrieve latency meanwhile, and whether the next Retrieve after an upsert sees it.
 * Client and server share the machine's cores, as the issue asks. The JSON file gets
 * one line for 1-2 and one for 3.
 */
#include "../../retrieval/src/service.c"

#include "idx/bundle.h"
#include "recpipe/v1/admin.pb-c.h"
#include "recpipe/v1/retrieval.pb-c.h"
#include "rp/clock.h"
#include "rp/hist.h"
#include "rp/rpc.h"
#include "rp/threads.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { NQ = 4096, K = 100 };

static float *queries;
static uint32_t dim;
static double seconds = 10;

typedef struct worker {
    const idx_ann *ann;
    ret_service *svc; /* full path when set */
    uint64_t n, cpu_ns, ann_ns;
    rp_hist hist;
    int id;
} worker;

static void *search_main(void *arg)
{
    worker *w = arg;
    float scores[K];
    int64_t labels[K];
    rp_error err;
    uint64_t c0 = rp_thread_cpu_ns(), end = rp_now_ns() + (uint64_t)(seconds * 1e9);
    uint32_t i = (uint32_t)w->id * 997;
    rp_arena *a = NULL;
    if (w->svc && rp_arena_create(0, &a)) return NULL;
    while (rp_now_ns() < end) {
        uint64_t t = rp_now_ns();
        const float *q = queries + (size_t)(i++ % NQ) * dim;
        if (w->svc) {
            /* What h_retrieve does, minus the RPC layer. */
            ret_state *st = pin(w->svc);
            Recpipe__V1__RetrieveRequest req = RECPIPE__V1__RETRIEVE_REQUEST__INIT;
            req.query_vector = (float *)q;
            req.n_query_vector = dim;
            req.k = K;
            ret_query qq;
            uint32_t unknown;
            ret_stats stats = {0};
            ret_cands out;
            int rc = ret__build_query(st->bundle, st->side, &req, 0, a, &qq, &unknown, &err);
            ret_ctx ctx = {st->bundle->cat, st->side, &qq, &w->svc->search, a, &stats};
            if (!rc) rc = ret_retrieve(&ctx, &out, &err);
            Recpipe__V1__Candidate *cv = rp_arena_alloc(a, sizeof *cv * (out.n + 1));
            for (uint32_t j = 0; !rc && j < out.n; j++) {
                recpipe__v1__candidate__init(&cv[j]);
                cv[j].item_id = out.v[j].id;
                cv[j].score = out.v[j].score;
            }
            state_unref(st);
            rp_arena_reset(a);
            w->ann_ns += stats.ann_cpu_ns;
            if (rc || out.n != K) {
                fprintf(stderr, "retrieve: %s (%u results)\n", err.msg, out.n);
                break;
            }
        } else if (idx_ann_search(w->ann, q, K, scores, labels, &err)) {
            fprintf(stderr, "search: %s\n", err.msg);
            break;
        }
        rp_hist_record(&w->hist, rp_now_ns() - t);
        w->n++;
    }
    w->cpu_ns = rp_thread_cpu_ns() - c0;
    rp_arena_destroy(a);
    return NULL;
}

static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* After ") ": state(3) ... utime is field 14, stime 15. */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

typedef struct slot {
    rp_arena *arena;
    uint64_t t0;
    uint32_t q;
} slot;

typedef struct loop {
    rp_async *as;
    const char *target;
    uint64_t end;
    uint64_t ok, failed;
    rp_hist hist;
    uint32_t next;
    Recpipe__V1__RetrieveRequest req;
    char last_error[512];
} loop;

static loop L;

static void start_call(slot *s);

static void done_cb(void *user, int rc, ProtobufCMessage *resp, const rp_status *st)
{
    slot *s = user;
    if (rc == RP_OK && ((Recpipe__V1__RetrieveResponse *)resp)->n_candidates == K) {
        L.ok++;
        rp_hist_record(&L.hist, rp_now_ns() - s->t0);
    } else {
        L.failed++;
        snprintf(L.last_error, sizeof L.last_error, "%s: %s", rp_grpc_status_name(st->code), st->msg);
    }
    rp_arena_reset(s->arena);
    if (rp_now_ns() < L.end) start_call(s);
}

static void start_call(slot *s)
{
    s->q = L.next++ % NQ;
    L.req.query_vector = queries + (size_t)s->q * dim;
    L.req.n_query_vector = dim;
    L.req.k = K;
    rp_call_opts o = {.timeout_ms = 10000};
    rp_error err;
    s->t0 = rp_now_ns();
    if (rp_async_start(L.as, L.target, "/recpipe.v1.Retrieval/Retrieve", &L.req.base,
                       &recpipe__v1__retrieve_response__descriptor, s->arena, &o, done_cb, s, &err)) {
        L.failed++;
        snprintf(L.last_error, sizeof L.last_error, "start: %s", err.msg);
    }
}

/* Phase 3: one thread upserts items (with an embedding) while the Retrieve stream runs,
 * and after each upsert asks for the new item's own vector: the item must come back
 * first (no stale answer). */
typedef struct upserter {
    const char *target;
    rp_client *cl;
    atomic_int stop;
    uint64_t n, stale, failed;
    rp_hist hist;
} upserter;

static void *upsert_main(void *arg)
{
    upserter *u = arg;
    rp_arena *a;
    if (rp_arena_create(0, &a)) return NULL;
    float *v = malloc(sizeof *v * dim);
    for (uint64_t i = 0; !atomic_load(&u->stop); i++) {
        const float *q = queries + (size_t)((i * 7919) % NQ) * dim;
        for (uint32_t d = 0; d < dim; d++) v[d] = q[d] * 4.0f; /* longer than any item */
        Recpipe__V1__Item item = RECPIPE__V1__ITEM__INIT;
        item.item_id = 900000000000ull + i;
        item.embedding = v;
        item.n_embedding = dim;
        Recpipe__V1__Item *items[] = {&item};
        Recpipe__V1__UpsertItemsRequest req = RECPIPE__V1__UPSERT_ITEMS_REQUEST__INIT;
        req.items = items;
        req.n_items = 1;
        rp_call_opts o = {.timeout_ms = 10000};
        rp_status st;
        ProtobufCMessage *resp;
        uint64_t t = rp_now_ns();
        if (rp_client_unary(u->cl, u->target, "/recpipe.v1.Admin/UpsertItems", &req.base,
                            &recpipe__v1__upsert_items_response__descriptor, a, &resp, &o, &st)) {
            u->failed++;
            rp_arena_reset(a);
            continue;
        }
        rp_hist_record(&u->hist, rp_now_ns() - t);
        Recpipe__V1__RetrieveRequest rr = RECPIPE__V1__RETRIEVE_REQUEST__INIT;
        rr.query_vector = (float *)q;
        rr.n_query_vector = dim;
        rr.k = 10;
        Recpipe__V1__RetrieveResponse *r;
        if (rp_client_unary(u->cl, u->target, "/recpipe.v1.Retrieval/Retrieve", &rr.base,
                            &recpipe__v1__retrieve_response__descriptor, a, (ProtobufCMessage **)&r, &o, &st) ||
            r->n_candidates == 0 || r->candidates[0]->item_id != item.item_id)
            u->stale++;
        u->n++;
        rp_arena_reset(a);
        rp_sleep_ns(20 * 1000000ull);
    }
    free(v);
    rp_arena_destroy(a);
    return NULL;
}

static int wait_port(const char *path, pid_t pid, double timeout_s)
{
    uint64_t end = rp_now_ns() + (uint64_t)(timeout_s * 1e9);
    while (rp_now_ns() < end) {
        FILE *f = fopen(path, "r");
        int port = 0;
        if (f) {
            if (fscanf(f, "%d", &port) != 1) port = 0;
            fclose(f);
            if (port > 0) return port;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) return -1;
        rp_sleep_ns(100000000);
    }
    return -1;
}

int main(int argc, char **argv)
{
    const char *bundle = NULL, *bin = NULL, *out = NULL;
    int threads = 2, window = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--bundle")) bundle = argv[i + 1];
        else if (!strcmp(argv[i], "--recpipe")) bin = argv[i + 1];
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--window")) window = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
        else {
            fprintf(stderr, "bench_retrieval: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    if (!bundle || !bin || threads < 1 || threads > 64 || window < 1 || window > 1024) {
        fprintf(stderr, "usage: bench_retrieval --bundle DIR --recpipe BIN [--seconds S] [--threads T] "
                        "[--window W] [--out FILE]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    rp_compute_threads(1);
    rp_error err = {0};
    idx_bundle *b;
    if (idx_bundle_open(bundle, &b, &err)) {
        fprintf(stderr, "bench_retrieval: %s\n", err.msg);
        return 1;
    }
    const idx_manifest *m = idx_bundle_manifest(b);
    dim = m->dim;
    const idx_ann *ann;
    size_t nrows;
    const uint64_t *ids = idx_bundle_shard_ids(b, 0, &nrows);
    /* Queries: item vectors plus a little noise (like users near what they liked). */
    queries = malloc(sizeof *queries * NQ * dim);
    uint64_t *qids = malloc(sizeof *qids * NQ);
    uint64_t rs = 12345;
    for (int i = 0; i < NQ; i++) {
        rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
        qids[i] = ids[(rs >> 17) % nrows];
    }
    if (idx_itemstore_embeddings(idx_bundle_items(b), NQ, qids, queries, &err)) {
        idx_bundle_release(b);
        fprintf(stderr, "bench_retrieval: %s\n", err.msg);
        return 1;
    }
    for (size_t j = 0; j < (size_t)NQ * dim; j++) {
        rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
        queries[j] += 0.05f * (float)((double)(rs >> 11) / 9007199254740992.0 - 0.5);
    }
    printf("bundle %s: %llu items, dim %u, index %s, %s %g (recall@100 %.3f)\n", bundle,
           (unsigned long long)m->n_items, dim, m->factory, m->param_name, m->param_value, m->recall);
    char factory[128], param_name[32];
    snprintf(factory, sizeof factory, "%s", m->factory);
    snprintf(param_name, sizeof param_name, "%s", m->param_name);
    uint64_t n_items = m->n_items;
    double param_value = m->param_value, recall = m->recall;

    /* 1. In-process: FAISS alone, then the whole retrieval path. */
    ret_service_opts so = {.bundle_path = bundle, .search = RET_SEARCH_OPTS_DEFAULT};
    so.search.measure_ann_cpu = true;
    ret_service *svc;
    uint64_t tl = rp_now_ns();
    if (ret_service_create(&so, &svc, &err)) {
        fprintf(stderr, "bench_retrieval: %s\n", err.msg);
        return 1;
    }
    printf("in-process service load: %.1f s\n", (double)(rp_now_ns() - tl) / 1e9);
    idx_bundle_release(b);
    ret_state *pinned = pin(svc);
    ann = pinned->bundle->ann;
    state_unref(pinned);
    double qps_in = 0, cpu_in_us = 0, qps_full = 0, cpu_full_us = 0, outside_us = 0;
    rp_hist hin, hfull;
    for (int mode = 0; mode < 2; mode++) {
        worker *w = calloc((size_t)threads, sizeof *w);
        pthread_t *th = calloc((size_t)threads, sizeof *th);
        for (int t = 0; t < threads; t++) {
            w[t].ann = ann;
            w[t].svc = mode ? svc : NULL;
            w[t].id = t;
            rp_hist_reset(&w[t].hist);
            pthread_create(&th[t], NULL, search_main, &w[t]);
        }
        uint64_t total = 0, cpu = 0, annns = 0;
        rp_hist *h = mode ? &hfull : &hin;
        rp_hist_reset(h);
        for (int t = 0; t < threads; t++) {
            pthread_join(th[t], NULL);
            total += w[t].n;
            cpu += w[t].cpu_ns;
            annns += w[t].ann_ns;
            rp_hist_merge(h, &w[t].hist);
        }
        double qps = (double)total / seconds, cpu_us = (double)cpu / 1e3 / (double)(total ? total : 1);
        if (mode == 0) {
            qps_in = qps;
            cpu_in_us = cpu_us;
            printf("in-process idx_ann_search, %d threads: %.0f searches/s, p50 %.3f ms, p99 %.3f ms, CPU %.1f us/search\n",
                   threads, qps, (double)rp_hist_percentile(h, 50) / 1e6, (double)rp_hist_percentile(h, 99) / 1e6,
                   cpu_us);
        } else {
            qps_full = qps;
            cpu_full_us = cpu_us;
            outside_us = ((double)cpu - (double)annns) / 1e3 / (double)(total ? total : 1);
            printf("in-process Retrieve path, %d threads: %.0f calls/s, p50 %.3f ms, p99 %.3f ms, CPU %.1f us/call, "
                   "of which outside the ANN call %.1f us\n",
                   threads, qps, (double)rp_hist_percentile(h, 50) / 1e6, (double)rp_hist_percentile(h, 99) / 1e6,
                   cpu_us, outside_us);
        }
        free(w);
        free(th);
    }
    ret_service_destroy(svc);

    /* 2. Over gRPC. */
    char port_file[] = "/tmp/recpipe-bench-retrieval-port-XXXXXX";
    int fd = mkstemp(port_file);
    if (fd < 0) return 1;
    close(fd);
    unlink(port_file);
    char tbuf[16];
    snprintf(tbuf, sizeof tbuf, "%d", threads);
    pid_t pid = fork();
    if (pid == 0) {
        execl(bin, bin, "retrieval", "--bundle", bundle, "--listen", "127.0.0.1:0", "--threads", tbuf,
              "--log-level", "warn", "--port-file", port_file, (char *)NULL);
        _exit(127);
    }
    uint64_t t_load = rp_now_ns();
    int port = wait_port(port_file, pid, 600);
    if (port < 0) {
        fprintf(stderr, "bench_retrieval: the server did not start\n");
        return 1;
    }
    printf("server loaded the bundle and listened in %.1f s\n", (double)(rp_now_ns() - t_load) / 1e9);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rp_client *cl;
    if (rp_client_create(NULL, &cl, &err) || rp_async_create(cl, &L.as, &err)) {
        fprintf(stderr, "bench_retrieval: %s\n", err.msg);
        return 1;
    }
    L.target = target;
    recpipe__v1__retrieve_request__init(&L.req);
    slot *slots = calloc((size_t)window, sizeof *slots);
    for (int i = 0; i < window; i++) rp_arena_create(0, &slots[i].arena);
    /* Warm-up, the measured run, then the same stream with upserts alongside. */
    upserter up = {.target = target, .cl = cl};
    rp_hist_reset(&up.hist);
    pthread_t upth;
    for (int phase = 0; phase < 3; phase++) {
        L.ok = L.failed = 0;
        rp_hist_reset(&L.hist);
        double secs = phase == 0 ? 1.0 : phase == 1 ? seconds : seconds / 2;
        if (phase == 2) pthread_create(&upth, NULL, upsert_main, &up);
        double cpu0 = proc_cpu_s(pid);
        uint64_t t0 = rp_now_ns();
        L.end = t0 + (uint64_t)(secs * 1e9);
        for (int i = 0; i < window; i++) start_call(&slots[i]);
        rp_async_wait(L.as, (int64_t)(secs * 1000) + 20000);
        double el = (double)(rp_now_ns() - t0) / 1e9;
        double cpu1 = proc_cpu_s(pid);
        if (phase == 0) continue;
        if (phase == 2) {
            atomic_store(&up.stop, 1);
            pthread_join(upth, NULL);
            printf("with upserts alongside (1 item every ~20 ms, %llu done, %llu failed): Retrieve %.0f calls/s, "
                   "p50 %.2f ms, p99 %.2f ms; UpsertItems p50 %.2f ms, p99 %.2f ms; stale answers after an upsert: "
                   "%llu of %llu\n",
                   (unsigned long long)up.n, (unsigned long long)up.failed, (double)L.ok / el,
                   (double)rp_hist_percentile(&L.hist, 50) / 1e6, (double)rp_hist_percentile(&L.hist, 99) / 1e6,
                   (double)rp_hist_percentile(&up.hist, 50) / 1e6, (double)rp_hist_percentile(&up.hist, 99) / 1e6,
                   (unsigned long long)up.stale, (unsigned long long)up.n);
            if (out) {
                FILE *f = fopen(out, "a");
                if (f) {
                    fprintf(f,
                            "{\"upserts\":%llu,\"upsert_failed\":%llu,\"upsert_p50_ms\":%.3f,\"upsert_p99_ms\":%.3f,"
                            "\"stale_after_upsert\":%llu,\"retrieve_qps_during_upserts\":%.1f,"
                            "\"retrieve_p50_ms_during_upserts\":%.3f,\"retrieve_p99_ms_during_upserts\":%.3f}\n",
                            (unsigned long long)up.n, (unsigned long long)up.failed,
                            (double)rp_hist_percentile(&up.hist, 50) / 1e6,
                            (double)rp_hist_percentile(&up.hist, 99) / 1e6, (unsigned long long)up.stale,
                            (double)L.ok / el, (double)rp_hist_percentile(&L.hist, 50) / 1e6,
                            (double)rp_hist_percentile(&L.hist, 99) / 1e6);
                    fclose(f);
                }
            }
            continue;
        }
        double qps = (double)L.ok / el;
        double cpu_call_us = (cpu1 - cpu0) * 1e6 / (double)(L.ok ? L.ok : 1);
        printf("gRPC Retrieve, %d server threads, %d in flight: %.0f calls/s (%.0f%% of in-process FAISS, %.0f%% of "
               "the in-process path), p50 %.2f ms, p99 %.2f ms, failed %llu\n",
               threads, window, qps, 100.0 * qps / qps_in, 100.0 * qps / qps_full, (double)rp_hist_percentile(&L.hist, 50) / 1e6,
               (double)rp_hist_percentile(&L.hist, 99) / 1e6, (unsigned long long)L.failed);
        printf("server CPU: %.1f us/call in all (all threads, gRPC included), %.1f us/call outside FAISS "
               "(in-process search %.1f us); retrieval code alone: %.1f us/call\n",
               cpu_call_us, cpu_call_us - cpu_in_us, cpu_in_us, outside_us);
        if (L.failed) printf("last error: %s\n", L.last_error);
        if (out) {
            FILE *f = fopen(out, "w");
            if (f) {
                fprintf(f,
                        "{\"items\":%llu,\"dim\":%u,\"index\":\"%s\",\"param\":\"%s\",\"param_value\":%g,"
                        "\"recall\":%.4f,\"k\":%d,\"threads\":%d,\"window\":%d,\"seconds\":%g,"
                        "\"inprocess_qps\":%.1f,\"inprocess_p50_ms\":%.3f,\"inprocess_p99_ms\":%.3f,"
                        "\"inprocess_cpu_us\":%.2f,\"grpc_qps\":%.1f,\"grpc_p50_ms\":%.3f,\"grpc_p99_ms\":%.3f,"
                        "\"grpc_failed\":%llu,\"ratio\":%.3f,\"server_cpu_us_per_call\":%.2f,"
                        "\"server_cpu_us_outside_faiss\":%.2f,\"inprocess_path_qps\":%.1f,"
                        "\"inprocess_path_cpu_us\":%.2f,\"retrieval_cpu_us_outside_ann\":%.2f,"
                        "\"ratio_to_path\":%.3f}\n",
                        (unsigned long long)n_items, dim, factory, param_name, param_value, recall, K,
                        threads, window, seconds, qps_in, (double)rp_hist_percentile(&hin, 50) / 1e6,
                        (double)rp_hist_percentile(&hin, 99) / 1e6, cpu_in_us, qps,
                        (double)rp_hist_percentile(&L.hist, 50) / 1e6, (double)rp_hist_percentile(&L.hist, 99) / 1e6,
                        (unsigned long long)L.failed, qps / qps_in, cpu_call_us, cpu_call_us - cpu_in_us, qps_full,
                        cpu_full_us, outside_us, qps / qps_full);
                fclose(f);
            }
        }
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    for (int i = 0; i < window; i++) rp_arena_destroy(slots[i].arena);
    rp_async_destroy(L.as);
    rp_client_destroy(cl);
    return 0;
}
