/* Tests index/src/ann.c and tune.c on siftsmall (official ground truth) and small sets. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idx/ann.h"
#include "idx/fvecs.h"
#include "rp/threads.h"

#define E(expr)                                                                            \
    do {                                                                                   \
        int rc_ = (expr);                                                                  \
        if (rc_ != RP_OK) fail_msg("%s -> %s: %s", #expr, rp_err_name(rc_), rp_error_text(&err)); \
    } while (0)

typedef struct sift {
    float *base, *query;
    int32_t *gt;
    size_t nb, nq, ngt;
    uint32_t d, dq, dgt;
} sift;

static sift S;

static int load_sift(void **state)
{
    (void)state;
    /* One OpenMP/BLAS thread: spinning thread pools crawl on a loaded 2-core machine. */
    rp_compute_threads(1);
    /* siftsmall is not shipped: CMake finds the shared copy (RECPIPE_SHARED_DATA). */
    const char *src = getenv("RECPIPE_SHARED_DATA");
    char p[1024];
    rp_error err = {0};
    snprintf(p, sizeof p, "%s/siftsmall/siftsmall_base.fvecs", src ? src : "../shared/data");
    E(idx_fvecs_read(p, &S.base, &S.nb, &S.d, &err));
    snprintf(p, sizeof p, "%s/siftsmall/siftsmall_query.fvecs", src ? src : "../shared/data");
    E(idx_fvecs_read(p, &S.query, &S.nq, &S.dq, &err));
    snprintf(p, sizeof p, "%s/siftsmall/siftsmall_groundtruth.ivecs", src ? src : "../shared/data");
    E(idx_ivecs_read(p, &S.gt, &S.ngt, &S.dgt, &err));
    assert_int_equal(S.nb, 10000);
    assert_int_equal(S.d, 128);
    assert_int_equal(S.nq, 100);
    assert_int_equal(S.dgt, 100);
    return 0;
}

static int free_sift(void **state)
{
    (void)state;
    free(S.base);
    free(S.query);
    free(S.gt);
    return 0;
}

/* recall@k of results (nq × k) against the official ground truth (first k columns). */
static double recall_vs_gt(const int64_t *labels, size_t k)
{
    int64_t *truth = malloc(S.nq * S.dgt * sizeof *truth);
    for (size_t i = 0; i < S.nq * S.dgt; i++) truth[i] = S.gt[i];
    double r = idx_recall_at(S.nq, k, labels, k, truth, S.dgt);
    free(truth);
    return r;
}

static void test_sift_flat_matches_ground_truth(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_ann *a;
    E(idx_ann_create("Flat", S.d, IDX_METRIC_L2, &a, &err));
    E(idx_ann_build(a, S.nb, S.base, &err));
    assert_null(idx_ann_param_name(a));
    int64_t labels[100 * 10];
    float scores[100 * 10];
    E(idx_ann_search_batch(a, S.nq, S.query, 10, scores, labels, &err));
    double r = recall_vs_gt(labels, 10);
    print_message("siftsmall Flat recall@10 = %.4f\n", r);
    assert_true(r >= 0.99);
    /* Single-query search agrees with the batch. */
    int64_t one[10];
    float one_s[10];
    E(idx_ann_search(a, S.query + 7 * S.d, 10, one_s, one, &err));
    assert_memory_equal(one, labels + 70, sizeof one);
    idx_ann_close(a);
}

static void test_sift_ivf_tuned_reaches_target(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_ann *a;
    E(idx_ann_create("IVF64,Flat", S.d, IDX_METRIC_L2, &a, &err));
    assert_string_equal(idx_ann_param_name(a), "nprobe");
    assert_int_equal(idx_ann_nlist(a), 64);
    E(idx_ann_build(a, S.nb, S.base, &err));
    /* Tune against exact search on held-out queries (the official queries' exact
     * neighbours are computed here, as the builder does). */
    int64_t *truth = malloc(S.nq * 100 * sizeof *truth);
    E(idx_exact_knn(IDX_METRIC_L2, S.d, S.nb, S.base, S.nq, S.query, 100, truth, &err));
    idx_tune_result t;
    E(idx_ann_tune(a, S.nq, S.query, 100, truth, 0.95, &t, &err));
    print_message("siftsmall IVF64,Flat tuned: %s=%g recall@100=%.4f\n", t.param, t.value, t.recall);
    assert_true(t.reached);
    assert_string_equal(t.param, "nprobe");
    assert_true(t.recall >= 0.95);
    assert_true(t.value > 1 && t.value < 64);
    assert_true(idx_ann_param_value(a) == t.value);
    /* With the base vectors, the predicted curve finds the same value. */
    idx_tune_result t2;
    E(idx_ann_set_param(a, "nprobe", 1, &err));
    E(idx_ann_tune_base(a, S.base, S.nq, S.query, 100, truth, 0.95, &t2, &err));
    assert_true(t2.value == t.value && t2.recall == t.recall);
    E(idx_ann_tune_base(a, S.base, S.nq, S.query, 100, truth, 0.99, &t2, &err));
    assert_true(t2.reached && t2.recall >= 0.99 && t2.value > t.value);
    E(idx_ann_tune(a, S.nq, S.query, 100, truth, 0.99, &t, &err));
    assert_true(t2.value == t.value);
    E(idx_ann_tune(a, S.nq, S.query, 100, truth, 0.95, &t, &err));
    /* It is the smallest: one less falls short. */
    E(idx_ann_set_param(a, "nprobe", t.value - 1, &err));
    int64_t *labels = malloc(S.nq * 100 * sizeof *labels);
    float *scores = malloc(S.nq * 100 * sizeof *scores);
    E(idx_ann_search_batch(a, S.nq, S.query, 100, scores, labels, &err));
    assert_true(idx_recall_at(S.nq, 100, labels, 100, truth, 100) < 0.95);
    /* Per-call knob: the index keeps its setting; results match a set_param search. */
    E(idx_ann_set_param(a, "nprobe", t.value, &err));
    int64_t *wide = malloc(S.nq * 100 * sizeof *wide);
    E(idx_ann_search_param(a, S.nq, S.query, 100, 64, scores, wide, &err));
    assert_true(idx_ann_param_value(a) == t.value);
    assert_true(idx_recall_at(S.nq, 100, wide, 100, truth, 100) > 0.999);
    E(idx_ann_search_param(a, S.nq, S.query, 100, t.value - 1, scores, wide, &err));
    assert_memory_equal(wide, labels, S.nq * 100 * sizeof *wide);
    free(wide);
    /* At the tuned value, recall against the official ground truth holds too. */
    E(idx_ann_set_param(a, "nprobe", t.value, &err));
    E(idx_ann_search_batch(a, S.nq, S.query, 100, scores, labels, &err));
    double r = recall_vs_gt(labels, 100);
    print_message("siftsmall IVF64,Flat recall@100 vs official ground truth = %.4f\n", r);
    assert_true(r >= 0.95);

    /* nprobe is saved in the file; the reader gets the value it is told. */
    char path[] = "/tmp/rp-ann-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    E(idx_ann_write(a, path, &err));
    idx_ann *b;
    E(idx_ann_read(path, "IVF64,Flat", &b, &err));
    assert_true(idx_ann_param_value(b) == t.value);
    E(idx_ann_set_param(b, "nprobe", 3, &err));
    assert_true(idx_ann_param_value(b) == 3);
    assert_int_equal(idx_ann_ntotal(b), S.nb);
    assert_int_equal(idx_ann_dim(b), S.d);
    assert_int_equal(idx_ann_metric(b), IDX_METRIC_L2);
    /* In-memory size of IVF-Flat: the raw vectors plus ids and centroids. */
    uint64_t mem = idx_ann_memory_bytes(b);
    uint64_t raw = (uint64_t)S.nb * S.d * 4;
    assert_true(mem > raw && mem < raw * 12 / 10);
    idx_ann_close(b);
    /* Without the factory string, a bare IVF index still knows its knob and list count. */
    E(idx_ann_read(path, NULL, &b, &err));
    assert_string_equal(idx_ann_param_name(b), "nprobe");
    assert_int_equal(idx_ann_nlist(b), 64);
    idx_ann_close(b);
    unlink(path);
    free(truth);
    free(labels);
    free(scores);
    idx_ann_close(a);
}

static void test_hnsw_efsearch_and_ip(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_ann *a;
    E(idx_ann_create("HNSW16", S.d, IDX_METRIC_IP, &a, &err));
    assert_string_equal(idx_ann_param_name(a), "efSearch");
    E(idx_ann_build(a, 3000, S.base, &err));
    int64_t *truth = malloc(50 * 100 * sizeof *truth);
    E(idx_exact_knn(IDX_METRIC_IP, S.d, 3000, S.base, 50, S.query, 100, truth, &err));
    idx_tune_result t;
    E(idx_ann_tune(a, 50, S.query, 100, truth, 0.9, &t, &err));
    assert_string_equal(t.param, "efSearch");
    assert_true(t.reached && t.recall >= 0.9 && t.value >= 16);
    /* FAISS 1.7.3 does not honour a per-call efSearch: refused, not silently ignored. */
    float sc1[10];
    int64_t l1[10];
    assert_int_equal(idx_ann_search_param(a, 1, S.query, 10, 40, sc1, l1, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "efSearch"));
    idx_ann_close(a);
    free(truth);
}

/* A lossy codec: the predicted curve over-estimates recall; measuring corrects it. */
static void test_ivfpq_tune_base_matches_measured(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_ann *a;
    E(idx_ann_create("IVF32,PQ16np", S.d, IDX_METRIC_L2, &a, &err));
    E(idx_ann_build(a, S.nb, S.base, &err));
    int64_t *truth = malloc(S.nq * 100 * sizeof *truth);
    E(idx_exact_knn(IDX_METRIC_L2, S.d, S.nb, S.base, S.nq, S.query, 100, truth, &err));
    idx_tune_result t1, t2;
    E(idx_ann_tune(a, S.nq, S.query, 100, truth, 0.55, &t1, &err));
    E(idx_ann_tune_base(a, S.base, S.nq, S.query, 100, truth, 0.55, &t2, &err));
    print_message("IVF32,PQ16np: nprobe %g (recall %.4f) / with base %g (recall %.4f)\n", t1.value,
                  t1.recall, t2.value, t2.recall);
    assert_true(t1.value > 1 && t1.reached);
    assert_true(t1.value == t2.value && t1.reached == t2.reached);
    idx_ann_close(a);
    free(truth);
}

/* A wrapped index (PCA pre-transform): the knob still reaches the IVF inside, both ways. */
static void test_wrapped_ivf_knob(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_ann *a;
    E(idx_ann_create("PCA32,IVF16,Flat", S.d, IDX_METRIC_L2, &a, &err));
    assert_string_equal(idx_ann_param_name(a), "nprobe");
    E(idx_ann_build(a, 4000, S.base, &err));
    float s1[10 * 10], s2[10 * 10];
    int64_t l1[10 * 10], l2[10 * 10];
    E(idx_ann_set_param(a, "nprobe", 16, &err));
    E(idx_ann_search_batch(a, 10, S.query, 10, s1, l1, &err));
    E(idx_ann_set_param(a, "nprobe", 1, &err));
    E(idx_ann_search_param(a, 10, S.query, 10, 16, s2, l2, &err));
    assert_memory_equal(l1, l2, sizeof l1);
    E(idx_ann_search_batch(a, 10, S.query, 10, s2, l2, &err));
    assert_memory_not_equal(l1, l2, sizeof l1); /* nprobe 1 really is narrower */
    idx_ann_close(a);
}

static void test_errors_are_clear(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_ann *a = NULL;
    /* FAISS's own message for a factory it rejects. */
    assert_int_equal(idx_ann_create("IVF12,Bogus", 8, IDX_METRIC_IP, &a, &err), RP_EFAISS);
    assert_null(a);
    assert_non_null(strstr(err.msg, "IVF12,Bogus"));
    assert_non_null(strstr(err.msg, "could not parse"));
    assert_int_equal(idx_ann_create("Flat", 0, IDX_METRIC_IP, &a, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "dimension"));

    /* Too few vectors for the list count. */
    E(idx_ann_create("IVF256,Flat", S.d, IDX_METRIC_L2, &a, &err));
    assert_int_equal(idx_ann_build(a, 100, S.base, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "at least 256"));
    assert_non_null(strstr(err.msg, "got 100"));
    assert_int_equal(idx_ann_add(a, 10, S.base, &err), RP_EPRECOND);
    idx_ann_close(a);

    /* NaN / inf named with vector and component. */
    E(idx_ann_create("Flat", 4, IDX_METRIC_L2, &a, &err));
    float x[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, NAN, 10, 11};
    assert_int_equal(idx_ann_add(a, 3, x, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "vector 2 has NaN at component 1"));
    x[9] = INFINITY;
    assert_int_equal(idx_ann_add(a, 3, x, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "infinite"));
    x[9] = 9;
    E(idx_ann_add(a, 3, x, &err));
    float s[2];
    int64_t l[2];
    assert_int_equal(idx_ann_search(a, x, 0, s, l, &err), RP_EINVAL);
    assert_int_equal(idx_ann_set_param(a, "nprobe", 4, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "nprobe"));
    assert_int_equal(idx_ann_search_param(a, 1, x, 2, 4, s, l, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "no search parameter"));
    idx_ann_close(a);
    idx_ann_close(NULL);

    assert_int_equal(idx_ann_read("/nonexistent/x.faiss", NULL, &a, &err), RP_ENOENT);
    char path[] = "/tmp/rp-ann-bad-XXXXXX";
    int fd = mkstemp(path);
    assert_int_equal(write(fd, "garbage!", 8), 8);
    close(fd);
    assert_int_equal(idx_ann_read(path, NULL, &a, &err), RP_ECORRUPT);
    assert_non_null(strstr(err.msg, path));
    unlink(path);
}

static void test_exact_topk_matches_flat(void **state)
{
    (void)state;
    rp_error err = {0};
    for (int m = 0; m < 2; m++) {
        idx_metric metric = m ? IDX_METRIC_L2 : IDX_METRIC_IP;
        int64_t flat[100 * 20];
        E(idx_exact_knn(metric, S.d, 2000, S.base, 5, S.query, 20, flat, &err));
        for (int q = 0; q < 5; q++) {
            float sc[20];
            int64_t lab[20];
            assert_int_equal(idx_exact_topk(metric, S.d, S.query + q * S.d, 2000, S.base, NULL,
                                            20, sc, lab),
                             20);
            for (int i = 1; i < 20; i++) assert_false(idx_metric_better(metric, sc[i], sc[i - 1]));
            assert_true(idx_recall_at(1, 20, lab, 20, flat + q * 20, 20) >= 0.95);
        }
    }
    /* Fewer candidates than k: padded with -1; ids map rows. */
    int64_t ids[3] = {70, 80, 90};
    float sc[5];
    int64_t lab[5];
    assert_int_equal(idx_exact_topk(IDX_METRIC_L2, S.d, S.base + 1 * S.d, 3, S.base, ids, 5, sc, lab), 3);
    assert_int_equal(lab[0], 80);
    assert_int_equal(lab[3], -1);
    assert_int_equal(lab[4], -1);
}

static void test_default_factory_rule(void **state)
{
    (void)state;
    char f[32];
    idx_ann_default_factory(1000, f, sizeof f);
    assert_string_equal(f, "Flat");
    idx_ann_default_factory(49999, f, sizeof f);
    assert_string_equal(f, "Flat");
    idx_ann_default_factory(50000, f, sizeof f);
    assert_string_equal(f, "IVF256,Flat");
    idx_ann_default_factory(1000000, f, sizeof f);
    assert_string_equal(f, "IVF1024,Flat");
    idx_ann_default_factory(100000000, f, sizeof f);
    assert_string_equal(f, "IVF8192,Flat");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sift_flat_matches_ground_truth),
        cmocka_unit_test(test_sift_ivf_tuned_reaches_target),
        cmocka_unit_test(test_hnsw_efsearch_and_ip),
        cmocka_unit_test(test_ivfpq_tune_base_matches_measured),
        cmocka_unit_test(test_wrapped_ivf_knob),
        cmocka_unit_test(test_errors_are_clear),
        cmocka_unit_test(test_exact_topk_matches_flat),
        cmocka_unit_test(test_default_factory_rule),
    };
    return cmocka_run_group_tests(tests, load_sift, free_sift);
}
