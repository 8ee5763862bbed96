/*
 * bench_rank — latency of one Rank request (default shape: d 32, attention 64-32-1,
 * 3 full-rank cross layers, deep 256-128, L 50) with 500 candidates and 50 history
 * events on one thread, the model's FLOPs per candidate, the achieved GFLOP/s, and
 * cblas_sgemm on matrices of the shapes the model multiplies, measured in the same run.
 *
 * usage: bench_rank [--candidates N] [--history N] [--requests N] [--items N]
 *                   [--att-chunk N (32)] [--dense-chunk N (128)] [--json FILE]
 * The weights are random (timing does not depend on their values).
 */
#include "rank/model.h"
#include "rank_internal.h"
#include "rp/clock.h"
#include "rp/threads.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* GFLOP/s (per second of thread CPU time) of C[M][N] = A[M][K] B^T over enough
 * repetitions to take ~0.3 s of CPU. */
static double sgemm_rate(int M, int N, int K)
{
    float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)N * K);
    float *C = malloc(sizeof(float) * (size_t)M * N);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)N * K; i++) B[i] = (float)(i % 5) * 0.1f;
    double flop = 2.0 * M * N * K;
    int reps = (int)(3e9 / flop) + 1;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, B, K, 0, C, N);
    /* thread CPU time: on a shared machine, time spent descheduled is not the kernel's */
    uint64_t t0 = rp_thread_cpu_ns();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, B, K, 0, C, N);
    double s = (double)(rp_thread_cpu_ns() - t0) / 1e9;
    free(A);
    free(B);
    free(C);
    return flop * reps / s / 1e9;
}

int main(int argc, char **argv)
{
    uint32_t n_cands = 500, n_hist = 50, n_req = 300, n_items = 10000, ca = 32, cd = 128;
    const char *json = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        uint32_t v = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        if (!strcmp(argv[i], "--json")) json = argv[i + 1];
        else if (!strcmp(argv[i], "--candidates")) n_cands = v;
        else if (!strcmp(argv[i], "--history")) n_hist = v;
        else if (!strcmp(argv[i], "--requests")) n_req = v;
        else if (!strcmp(argv[i], "--items")) n_items = v;
        else if (!strcmp(argv[i], "--att-chunk")) ca = v;
        else if (!strcmp(argv[i], "--dense-chunk")) cd = v;
        else {
            fprintf(stderr, "bench_rank: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    rp_compute_threads(1);

    rank_shape s = rank_shape_default();
    s.n_items = n_items;
    s.n_cats = 20;
    s.sim_dim = 64;
    uint64_t *ids = malloc(8ull * n_items);
    uint32_t *off = malloc(4ull * (n_items + 1)), *cnt = malloc(4ull * n_items);
    uint16_t *cats = malloc(2ull * n_items * 2);
    float *pr = malloc(4ull * n_items), *pt = malloc(4ull * n_items);
    float *fac = malloc(4ull * n_items * 64);
    uint32_t r = 0;
    for (uint32_t i = 0; i < n_items; i++) {
        ids[i] = i + 1;
        off[i] = r;
        cats[r++] = (uint16_t)(i % 20);
        cats[r++] = (uint16_t)((i / 20) % 20);
        pr[i] = (float)(i % 13);
        pt[i] = (float)(i % 17);
        cnt[i] = i % 1000;
        for (int k = 0; k < 64; k++) fac[(size_t)i * 64 + k] = (float)((i * 31 + k * 7) % 19) - 9.0f;
    }
    off[n_items] = r;
    rank_items it = {n_items, ids, off, cats, pr, pt, cnt, fac};
    rank_model *m;
    rank_ws *ws;
    rp_error err;
    if (rank_model_create(&s, &it, NULL, 0, 1, &m, &err) || rank__ws_create(m, ca, cd, 0, &ws)) {
        fprintf(stderr, "bench_rank: %s\n", err.msg);
        return 1;
    }
    rank_event *hist = malloc(sizeof *hist * n_hist);
    rank_cand *cands = malloc(sizeof *cands * n_cands);
    float *scores = malloc(4ull * n_cands);
    int32_t *best = malloc(4ull * n_cands);
    float *bw = malloc(4ull * n_cands);
    uint64_t *lat = malloc(8ull * n_req), *clat = malloc(8ull * n_req);
    for (uint32_t l = 0; l < n_hist; l++)
        hist[l] = (rank_event){(l * 7919u) % n_items, 5, 4.0f, 1500000000 + 3600 * (int64_t)l};
    for (uint32_t c = 0; c < n_cands; c++)
        cands[c] = (rank_cand){(c * 104729u + 17) % n_items, 1, 0.01f * (float)(c % 100)};
    for (int w = 0; w < 20; w++)
        rank_score(m, ws, hist, n_hist, 1600000000, cands, n_cands, scores, best, bw);
    uint64_t cpu0 = rp_thread_cpu_ns(), t_all = rp_now_ns();
    for (uint32_t q = 0; q < n_req; q++) {
        uint64_t t0 = rp_now_ns(), c0 = rp_thread_cpu_ns();
        rank_score(m, ws, hist, n_hist, 1600000000, cands, n_cands, scores, best, bw);
        lat[q] = rp_now_ns() - t0;
        clat[q] = rp_thread_cpu_ns() - c0;
    }
    double wall = (double)(rp_now_ns() - t_all) / 1e9;
    double cpu = (double)(rp_thread_cpu_ns() - cpu0) / 1e9;
    qsort(lat, n_req, 8, cmp_u64);
    qsort(clat, n_req, 8, cmp_u64);
    double c50 = (double)clat[n_req / 2] / 1e6, c99 = (double)clat[(size_t)(n_req * 0.99)] / 1e6;
    double p50 = (double)lat[n_req / 2] / 1e6, p99 = (double)lat[(size_t)(n_req * 0.99)] / 1e6;
    double fpc = rank_model_flops_per_candidate(m, n_hist);
    double mean_s = wall / n_req;
    double gflops = fpc * n_cands / (cpu / n_req) / 1e9;
    uint32_t d = s.dim, D0 = rank_shape_x0(&s);
    /* The shapes the model multiplies: all pairs of a 16-candidate chunk against Wp and
     * W2, and the cross layer on a 128-candidate chunk; plus one large square product. */
    double g_pair1 = sgemm_rate(16 * (int)n_hist, (int)s.att1, (int)d);
    double g_pair2 = sgemm_rate(16 * (int)n_hist, (int)s.att2, (int)s.att1);
    double g_cross = sgemm_rate(128, (int)D0, (int)D0);
    double g_big = sgemm_rate(1024, 1024, 1024);
    /* The same FLOPs mix as the model, each part at its sgemm rate. */
    const rank_shape *ms = rank_model_shape(m);
    double f1 = n_hist * 2.0 * d * ms->att1, f2 = n_hist * 2.0 * ms->att1 * ms->att2;
    double frest = fpc - f1 - f2;
    double mix_time = f1 / g_pair1 + f2 / g_pair2 + frest / g_cross;
    double g_mix = fpc / mix_time;
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("ranking: Rank, %u candidates x %u history events, 1 thread, %u requests "
           "(OPENBLAS_CORETYPE=%s)\n", n_cands, n_hist, n_req, core ? core : "(auto)");
    printf("  latency (wall)       p50 %.3f ms  p99 %.3f ms  mean %.3f ms\n", p50, p99, mean_s * 1e3);
    printf("  latency (thread CPU) p50 %.3f ms  p99 %.3f ms  mean %.3f ms  (wall also counts "
           "time descheduled on a busy machine)\n", c50, c99, cpu / n_req * 1e3);
    printf("  model: %.0f parameters, %.3f MFLOP per candidate (first attention layer split), "
           "%.1f MFLOP per request\n", (double)rank_model_nparams(m), fpc / 1e6,
           fpc * n_cands / 1e6);
    printf("  achieved %.1f GFLOP/s (per CPU second)\n", gflops);
    printf("  cblas_sgemm same run: %dx%dx%d %.1f GFLOP/s, %dx%dx%d %.1f, %ux%ux%u %.1f, "
           "1024^3 %.1f GFLOP/s\n", 16 * (int)n_hist, (int)s.att1, (int)d, g_pair1,
           16 * (int)n_hist, (int)s.att2, (int)s.att1, g_pair2, 128u, D0, D0, g_cross, g_big);
    printf("  sgemm rate for the model's FLOP mix %.1f GFLOP/s: achieved %.0f%% of it "
           "(%.0f%% of 1024^3)\n", g_mix, 100.0 * gflops / g_mix, 100.0 * gflops / g_big);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 1;
        }
        fprintf(f,
                "{\"candidates\":%u,\"history\":%u,\"requests\":%u,\"threads\":1,"
                "\"openblas_coretype\":\"%s\",\"p50_ms\":%.4f,\"p99_ms\":%.4f,"
                "\"cpu_p50_ms\":%.4f,\"cpu_p99_ms\":%.4f,\"mflop_per_candidate\":%.4f,"
                "\"gflops\":%.2f,\"sgemm_mix_gflops\":%.2f,\"sgemm_1024_gflops\":%.2f,"
                "\"fraction_of_sgemm\":%.3f,\"parameters\":%zu}\n",
                n_cands, n_hist, n_req, core ? core : "", p50, p99, c50, c99, fpc / 1e6, gflops,
                g_mix, g_big, gflops / g_mix, rank_model_nparams(m));
        fclose(f);
    }
    rank_ws_free(ws);
    rank_model_free(m);
    free(ids);
    free(off);
    free(cnt);
    free(cats);
    free(pr);
    free(pt);
    free(fac);
    free(hist);
    free(cands);
    free(scores);
    free(best);
    free(bw);
    free(lat);
    free(clat);
    return 0;
}
