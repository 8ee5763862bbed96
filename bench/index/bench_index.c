/*
 * bench_index — 1M synthetic clustered vectors through recpipe's ANN wrapper and through
 * FAISS called directly, same factory / metric / nprobe, same process, same run:
 * build time, index size on disk and in memory, single-query latency and batch
 * throughput at the tuned recall; then a whole bundle build and open. Writes JSON.
 */
#include "idx/ann.h"
#include "idx/bundle.h"
#include "idx/fsutil.h"
#include "rp/clock.h"
#include "rp/threads.h"

#include <json-c/json.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void *direct_build(const char *factory, int d, int ip, int64_t n, const float *x);
int direct_set(void *index, const char *name, double value);
void direct_search(void *index, int64_t nq, const float *q, int64_t k, float *dist,
                   int64_t *labels);
void direct_free(void *index);

static double now_s(void)
{
    return (double)rp_now_ns() * 1e-9;
}

/* CPU time of the whole process (every thread). */
static double proc_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of this thread: with one OpenMP/BLAS thread the whole search runs here, and
 * this clock does not advance while other processes hold the core. */
static double cpu_s(void)
{
    return (double)rp_thread_cpu_ns() * 1e-9;
}

/* xorshift64* and Box-Muller: deterministic data for a given seed. */
static uint64_t rng = 0x243F6A8885A308D3ull;
static double unif(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return ((rng * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}
static float gauss(void)
{
    double u = unif(), v = unif();
    if (u < 1e-300) u = 1e-300;
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

/* n unit vectors around `clusters` centres (cosine similarity as inner product); cluster
 * sizes follow a power law (popular topics hold more items). */
static void gen(float *x, size_t n, uint32_t d, const float *centres, uint32_t clusters)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t c = (uint32_t)(pow(unif(), 2.0) * clusters) % clusters;
        float norm = 0;
        for (uint32_t j = 0; j < d; j++) {
            float v = centres[c * d + j] + 0.6f * gauss();
            x[i * d + j] = v;
            norm += v * v;
        }
        norm = sqrtf(norm);
        for (uint32_t j = 0; j < d; j++) x[i * d + j] /= norm;
    }
}

/* Bytes the allocator has handed out (heap + mmap'd blocks): FAISS allocates with new. */
static uint64_t heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct lat {
    double p50_us, p99_us, mean_us;
} lat;

static lat summarize(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    return (lat){v[n / 2] * 1e6, v[(size_t)(n * 0.99)] * 1e6, sum / n * 1e6};
}

static uint64_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static uint64_t dir_size(const char *dir)
{
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "du -sb '%s'", dir);
    FILE *f = popen(cmd, "r");
    unsigned long long v = 0;
    if (f) {
        if (fscanf(f, "%llu", &v) != 1) v = 0;
        pclose(f);
    }
    return v;
}

#define DIE(...)                                                                           \
    do {                                                                                   \
        fprintf(stderr, "bench_index: " __VA_ARGS__);                                       \
        fputc('\n', stderr);                                                               \
        exit(1);                                                                           \
    } while (0)

int main(int argc, char **argv)
{
    size_t n = 1000000, nq = 1000, k = 100;
    uint32_t d = 64, clusters = 0;
    int rounds = 5, bundle = 1;
    double target = 0.95;
    const char *out = "bench/results/index.json", *factory_arg = NULL, *work = "/tmp";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--n") && v) n = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--dim") && v) d = (uint32_t)atoi(v), i++;
        else if (!strcmp(a, "--queries") && v) nq = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--target") && v) target = atof(v), i++;
        else if (!strcmp(a, "--index") && v) factory_arg = v, i++;
        else if (!strcmp(a, "--rounds") && v) rounds = atoi(v), i++;
        else if (!strcmp(a, "--clusters") && v) clusters = (uint32_t)atoi(v), i++;
        else if (!strcmp(a, "--out") && v) out = v, i++;
        else if (!strcmp(a, "--workdir") && v) work = v, i++;
        else if (!strcmp(a, "--no-bundle")) bundle = 0;
        else {
            fprintf(stderr,
                    "usage: bench_index [--n 1000000] [--dim 64] [--queries 1000] [--target 0.95]\n"
                    "                   [--index FACTORY] [--rounds 5] [--clusters n/100] [--out FILE.json]\n"
                    "                   [--workdir DIR] [--no-bundle]\n");
            return 2;
        }
    }
    /* About 100 items per cluster on average (power law: a few large topics, many small):
     * the 100 nearest neighbours of a query span several clusters and IVF lists. */
    if (clusters == 0) clusters = n / 100 > 1 ? (uint32_t)(n / 100) : 1;
    rp_error err = {0};
    char factory[128];
    if (factory_arg) snprintf(factory, sizeof factory, "%s", factory_arg);
    else idx_ann_default_factory(n, factory, sizeof factory);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/rp-bench-index-XXXXXX", work);
    if (!mkdtemp(dir)) DIE("cannot create a directory in %s", work);

    printf("bench_index: %zu x %u clustered vectors (%u clusters), %s, metric ip, %zu queries, "
           "k=%zu, target recall@%zu %.2f, %d cores\n",
           n, d, clusters, factory, nq, k, k, target, rp_ncores());
    double t0 = now_s();
    float *centres = malloc((size_t)clusters * d * sizeof *centres);
    float *x = malloc(n * d * sizeof *x), *q = malloc(nq * d * sizeof *q);
    if (!centres || !x || !q) DIE("out of memory");
    for (size_t i = 0; i < (size_t)clusters * d; i++) centres[i] = gauss();
    gen(x, n, d, centres, clusters);
    gen(q, nq, d, centres, clusters); /* held out: drawn separately, not in the index */
    printf("  generated in %.1f s\n", now_s() - t0);
    fflush(stdout);

    /* Build: all cores, as `recpipe index build` does. Two builds each, in the order
     * wrapper, direct, direct, wrapper; the best wall time and the process CPU time
     * (all threads) of each side are kept, so a load spike on the machine does not land
     * on one side only. */
    rp_compute_threads(0);
    idx_ann *a = NULL;
    void *direct = NULL;
    double build_w = 1e30, build_d = 1e30, cpu_build_w = 1e30, cpu_build_d = 1e30;
    for (int i = 0; i < 4; i++) {
        int wrapper = i == 0 || i == 3;
        double t = now_s(), c = proc_cpu_s();
        if (wrapper) {
            idx_ann_close(a);
            if (idx_ann_create(factory, d, IDX_METRIC_IP, &a, &err) || idx_ann_build(a, n, x, &err))
                DIE("wrapper build: %s", rp_error_text(&err));
        } else {
            if (direct) direct_free(direct);
            if (!(direct = direct_build(factory, (int)d, 1, (int64_t)n, x))) DIE("direct build failed");
        }
        double e = now_s() - t, ec = proc_cpu_s() - c;
        if (wrapper) {
            if (e < build_w) build_w = e;
            if (ec < cpu_build_w) cpu_build_w = ec;
        } else {
            if (e < build_d) build_d = e;
            if (ec < cpu_build_d) cpu_build_d = ec;
        }
    }
    printf("  build (best of 2 each): wrapper %.1f s (%.1f s CPU), direct FAISS %.1f s (%.1f s CPU)\n",
           build_w, cpu_build_w, build_d, cpu_build_d);
    fflush(stdout);

    /* Ground truth and tuning. */
    int64_t *truth = malloc(nq * k * sizeof *truth), *lab = malloc(nq * k * sizeof *lab);
    float *dist = malloc(nq * k * sizeof *dist);
    if (!truth || !lab || !dist) DIE("out of memory");
    t0 = now_s();
    if (idx_exact_knn(IDX_METRIC_IP, d, n, x, nq, q, k, truth, &err))
        DIE("exact: %s", rp_error_text(&err));
    double exact_s = now_s() - t0;
    t0 = now_s();
    idx_tune_result tune;
    if (idx_ann_tune_base(a, x, nq, q, k, truth, target, &tune, &err))
        DIE("tune: %s", rp_error_text(&err));
    double tune_s = now_s() - t0;
    if (tune.param[0] && direct_set(direct, tune.param, tune.value) != 0) DIE("direct set");
    direct_search(direct, (int64_t)nq, q, (int64_t)k, dist, lab);
    double recall_d = idx_recall_at(nq, k, lab, k, truth, k);
    printf("  exact ground truth %.1f s; tuned %s=%g: recall@%zu wrapper %.4f, direct %.4f (%.1f s)\n",
           exact_s, tune.param, tune.value, k, tune.recall, recall_d, tune_s);
    fflush(stdout);

    /* Sizes. */
    char ipath[PATH_MAX + 32];
    snprintf(ipath, sizeof ipath, "%s/wrapper.faiss", dir);
    if (idx_ann_write(a, ipath, &err)) DIE("write: %s", rp_error_text(&err));
    uint64_t disk = file_size(ipath), mem = idx_ann_memory_bytes(a);
    uint64_t raw = (uint64_t)n * d * sizeof(float);
    uint64_t heap0 = heap_bytes();
    idx_ann *loaded;
    t0 = now_s();
    if (idx_ann_read(ipath, factory, &loaded, &err)) DIE("read: %s", rp_error_text(&err));
    double load_s = now_s() - t0;
    uint64_t rss_delta = heap_bytes() - heap0;
    printf("  size: raw vectors %.1f MB; index on disk %.1f MB (%.3fx), in memory %.1f MB "
           "(%.3fx), heap growth on load %.1f MB (%.3fx), load %.2f s\n",
           raw / 1e6, disk / 1e6, (double)disk / raw, mem / 1e6, (double)mem / raw,
           rss_delta / 1e6, (double)rss_delta / raw, load_s);
    idx_ann_close(loaded);
    fflush(stdout);

    /* Search: one thread (the service setting), alternating wrapper and direct. */
    rp_compute_threads(1);
    double *tw = malloc(nq * rounds * sizeof *tw), *td = malloc(nq * rounds * sizeof *td);
    double cpu_w = 0, cpu_d = 0;
    double batch_w = 1e30, batch_d = 1e30;
    /* Query by query, the two sides alternate who goes first, so that load from other
     * processes on the machine falls on both alike. */
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < nq; i++) {
            for (int side = 0; side < 2; side++) {
                int wrapper = (side + r + (int)i) % 2 == 0;
                double s = now_s(), c = cpu_s();
                if (wrapper) {
                    if (idx_ann_search(a, q + i * d, k, dist, lab, &err))
                        DIE("search: %s", rp_error_text(&err));
                    tw[r * nq + i] = now_s() - s;
                    cpu_w += cpu_s() - c;
                } else {
                    direct_search(direct, 1, q + i * d, (int64_t)k, dist, lab);
                    td[r * nq + i] = now_s() - s;
                    cpu_d += cpu_s() - c;
                }
            }
        }
    }
    /* Batches: paired runs (alternating order); the ratio is the median of the pairs. */
    double ratio1[64], ratio_all[64];
    int pairs = 2 * rounds > 64 ? 64 : 2 * rounds;
    for (int r = 0; r < pairs; r++) {
        double e[2], c[2];
        for (int side = 0; side < 2; side++) {
            int wrapper = (side + r) % 2 == 0;
            double s = now_s(), cs = cpu_s();
            if (wrapper) {
                if (idx_ann_search_batch(a, nq, q, k, dist, lab, &err)) DIE("batch: %s", rp_error_text(&err));
            } else {
                direct_search(direct, (int64_t)nq, q, (int64_t)k, dist, lab);
            }
            e[wrapper] = now_s() - s;
            c[wrapper] = cpu_s() - cs;
        }
        if (e[1] < batch_w) batch_w = e[1];
        if (e[0] < batch_d) batch_d = e[0];
        ratio1[r] = c[0] / c[1]; /* wrapper throughput / direct throughput, in CPU time */
    }
    lat lw = summarize(tw, nq * rounds), ld = summarize(td, nq * rounds);
    double qps_w = nq / batch_w, qps_d = nq / batch_d;
    /* Batch throughput with every core too (an offline job's setting). */
    rp_compute_threads(0);
    double batch_w_all = 1e30, batch_d_all = 1e30;
    for (int r = 0; r < pairs; r++) {
        double e[2];
        for (int side = 0; side < 2; side++) {
            int wrapper = (side + r) % 2 == 0;
            double s = now_s();
            if (wrapper) idx_ann_search_batch(a, nq, q, k, dist, lab, &err);
            else direct_search(direct, (int64_t)nq, q, (int64_t)k, dist, lab);
            e[wrapper] = now_s() - s;
        }
        if (e[1] < batch_w_all) batch_w_all = e[1];
        if (e[0] < batch_d_all) batch_d_all = e[0];
        ratio_all[r] = e[0] / e[1];
    }
    qsort(ratio1, pairs, sizeof(double), cmp_double);
    qsort(ratio_all, pairs, sizeof(double), cmp_double);
    double med1 = ratio1[pairs / 2], med_all = ratio_all[pairs / 2];
    double cpu_ratio = cpu_w / cpu_d;
    printf("  single query (1 thread, k=%zu, %d x %zu queries, paired): wrapper p50 %.0f us "
           "p99 %.0f us mean %.0f us; direct p50 %.0f us p99 %.0f us mean %.0f us\n"
           "    wrapper/direct: wall p50 %.3f, wall mean %.3f, CPU time per query %.1f vs "
           "%.1f us = %.3f\n",
           k, rounds, nq, lw.p50_us, lw.p99_us, lw.mean_us, ld.p50_us, ld.p99_us, ld.mean_us,
           lw.p50_us / ld.p50_us, lw.mean_us / ld.mean_us, cpu_w / (rounds * nq) * 1e6,
           cpu_d / (rounds * nq) * 1e6, cpu_ratio);
    printf("  batch of %zu, 1 thread: wrapper %.0f q/s, direct %.0f q/s (best wall time of %d "
           "each); median paired CPU-time throughput ratio %.3f\n",
           nq, nq / batch_w, nq / batch_d, pairs, med1);
    printf("  batch of %zu, all %d cores: wrapper %.0f q/s, direct %.0f q/s (median paired "
           "throughput ratio %.3f)\n",
           nq, rp_ncores(), nq / batch_w_all, nq / batch_d_all, med_all);
    fflush(stdout);
    direct_free(direct);
    idx_ann_close(a);

    /* The whole bundle: item store, index, tuning, checksums, rename; then open it. */
    double bundle_build = 0, bundle_open = 0;
    uint64_t bundle_bytes = 0;
    idx_build_report rep;
    memset(&rep, 0, sizeof rep);
    if (bundle) {
        char bpath[PATH_MAX + 32];
        snprintf(bpath, sizeof bpath, "%s/bundle", dir);
        uint64_t *ids = malloc(n * sizeof *ids);
        for (size_t i = 0; i < n; i++) ids[i] = 1000000000ull + i * 13;
        t0 = now_s();
        idx_builder *b;
        idx_index_opts o = {.factory = factory, .target_recall = target, .n_queries = nq,
                            .queries = q};
        if (idx_builder_create(bpath, d, IDX_METRIC_IP, &b, &err) ||
            idx_builder_add_vectors(b, n, ids, x, &err) || idx_builder_set_index(b, &o, &err) ||
            idx_builder_commit(b, 0, &rep, &err))
            DIE("bundle: %s", rp_error_text(&err));
        bundle_build = now_s() - t0;
        bundle_bytes = dir_size(bpath);
        t0 = now_s();
        idx_bundle *bb;
        if (idx_bundle_open(bpath, &bb, &err)) DIE("open: %s", rp_error_text(&err));
        bundle_open = now_s() - t0;
        idx_bundle_release(bb);
        free(ids);
        printf("  bundle: build %.1f s (index %.1f s, tuning %.1f s), %.1f MB on disk, "
               "open+verify %.1f s\n",
               bundle_build, rep.build_seconds, rep.tune_seconds, bundle_bytes / 1e6, bundle_open);
    }

    json_object *o = json_object_new_object();
#define JD(obj, k, v) json_object_object_add(obj, k, json_object_new_double(v))
#define JI(obj, k, v) json_object_object_add(obj, k, json_object_new_int64((int64_t)(v)))
    json_object_object_add(o, "benchmark", json_object_new_string("index"));
    JI(o, "cores", rp_ncores());
    JI(o, "n", n);
    JI(o, "dim", d);
    JI(o, "clusters", clusters);
    json_object_object_add(o, "metric", json_object_new_string("ip"));
    json_object_object_add(o, "factory", json_object_new_string(factory));
    JI(o, "queries", nq);
    JI(o, "k", k);
    JD(o, "target_recall", target);
    json_object_object_add(o, "param", json_object_new_string(tune.param));
    JD(o, "param_value", tune.value);
    JD(o, "recall_wrapper", tune.recall);
    JD(o, "recall_direct", recall_d);
    JD(o, "build_s_wrapper", build_w);
    JD(o, "build_s_direct", build_d);
    JD(o, "build_cpu_s_wrapper", cpu_build_w);
    JD(o, "build_cpu_s_direct", cpu_build_d);
    JD(o, "exact_s", exact_s);
    JD(o, "tune_s", tune_s);
    JI(o, "raw_bytes", raw);
    JI(o, "index_disk_bytes", disk);
    JI(o, "index_memory_bytes", mem);
    JI(o, "index_heap_growth_bytes", rss_delta);
    JD(o, "memory_ratio", (double)mem / raw);
    JD(o, "single_p50_us_wrapper", lw.p50_us);
    JD(o, "single_p99_us_wrapper", lw.p99_us);
    JD(o, "single_mean_us_wrapper", lw.mean_us);
    JD(o, "single_p50_us_direct", ld.p50_us);
    JD(o, "single_p99_us_direct", ld.p99_us);
    JD(o, "single_mean_us_direct", ld.mean_us);
    JD(o, "single_p50_ratio", lw.p50_us / ld.p50_us);
    JD(o, "single_mean_ratio", lw.mean_us / ld.mean_us);
    JD(o, "single_cpu_us_wrapper", cpu_w / (rounds * nq) * 1e6);
    JD(o, "single_cpu_us_direct", cpu_d / (rounds * nq) * 1e6);
    JD(o, "single_cpu_ratio", cpu_ratio);
    JD(o, "batch_qps_1thread_wrapper", qps_w);
    JD(o, "batch_qps_1thread_direct", qps_d);
    JD(o, "batch_qps_allcores_wrapper", nq / batch_w_all);
    JD(o, "batch_qps_allcores_direct", nq / batch_d_all);
    JD(o, "batch_1thread_cpu_throughput_ratio", med1);
    JD(o, "batch_allcores_throughput_ratio", med_all);
    if (bundle) {
        JD(o, "bundle_build_s", bundle_build);
        JD(o, "bundle_index_build_s", rep.build_seconds);
        JD(o, "bundle_tune_s", rep.tune_seconds);
        JI(o, "bundle_bytes", bundle_bytes);
        JD(o, "bundle_open_s", bundle_open);
    }
    const char *ct = getenv("OPENBLAS_CORETYPE");
    json_object_object_add(o, "openblas_coretype", json_object_new_string(ct ? ct : ""));
    if (json_object_to_file_ext(out, o, JSON_C_TO_STRING_PRETTY) != 0)
        fprintf(stderr, "bench_index: cannot write %s\n", out);
    else
        printf("  wrote %s\n", out);
    json_object_put(o);
    idx_rmtree(dir);
    free(x);
    free(q);
    free(centres);
    free(truth);
    free(lab);
    free(dist);
    free(tw);
    free(td);
    return 0;
}
