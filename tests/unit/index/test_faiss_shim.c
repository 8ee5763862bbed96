/* Tests index/src/faiss_shim.cpp: the FAISS C API as the project calls it, end to end. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define D 16
#define N 2000

static float *random_vectors(size_t n, unsigned seed)
{
    float *x = malloc(n * D * sizeof *x);
    srand(seed);
    for (size_t i = 0; i < n * D; i++) x[i] = (float)rand() / (float)RAND_MAX;
    return x;
}

static void test_flat_build_search_write_read(void **state)
{
    (void)state;
    float *x = random_vectors(N, 1);
    FaissIndex *index = NULL;
    assert_int_equal(faiss_index_factory(&index, D, "Flat", METRIC_L2), 0);
    assert_int_equal(faiss_Index_d(index), D);
    assert_true(faiss_Index_is_trained(index));
    assert_int_equal(faiss_Index_add(index, N, x), 0);
    assert_int_equal(faiss_Index_ntotal(index), N);

    /* Each vector's nearest neighbour is itself, at distance 0. */
    float dist[5 * 3];
    idx_t lab[5 * 3];
    assert_int_equal(faiss_Index_search(index, 5, x + 100 * D, 3, dist, lab), 0);
    for (int q = 0; q < 5; q++) {
        assert_int_equal(lab[q * 3], 100 + q);
        assert_true(dist[q * 3] < 1e-6f);
        assert_true(dist[q * 3 + 1] >= dist[q * 3]);
    }

    char path[] = "/tmp/rp-faiss-shim-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(faiss_write_index_fname(index, path), 0);
    FaissIndex *back = NULL;
    assert_int_equal(faiss_read_index_fname(path, 0, &back), 0);
    assert_int_equal(faiss_Index_ntotal(back), N);
    float dist2[3];
    idx_t lab2[3];
    assert_int_equal(faiss_Index_search(back, 1, x + 100 * D, 3, dist2, lab2), 0);
    assert_memory_equal(lab2, lab, sizeof lab2);
    faiss_Index_free(back);
    faiss_Index_free(index);
    unlink(path);
    free(x);
}

static void test_ivf_train_nprobe_and_parameter_space(void **state)
{
    (void)state;
    float *x = random_vectors(N, 2);
    FaissIndex *index = NULL;
    assert_int_equal(faiss_index_factory(&index, D, "IVF16,Flat", METRIC_INNER_PRODUCT), 0);
    assert_false(faiss_Index_is_trained(index));
    /* Adding before training is a FAISS error, returned as a code with a message. */
    assert_int_not_equal(faiss_Index_add(index, N, x), 0);
    assert_non_null(faiss_get_last_error());
    assert_non_null(strstr(faiss_get_last_error(), "trained"));
    assert_int_equal(faiss_Index_train(index, N, x), 0);
    assert_true(faiss_Index_is_trained(index));
    idx_t *ids = malloc(N * sizeof *ids);
    for (idx_t i = 0; i < N; i++) ids[i] = 1000 + i;
    assert_int_equal(faiss_Index_add_with_ids(index, N, x, ids), 0);

    FaissIndexIVF *ivf = faiss_IndexIVF_cast(index);
    assert_non_null(ivf);
    assert_int_equal(faiss_IndexIVF_nlist(ivf), 16);
    FaissParameterSpace *ps = NULL;
    assert_int_equal(faiss_ParameterSpace_new(&ps), 0);
    assert_int_equal(faiss_ParameterSpace_set_index_parameter(ps, index, "nprobe", 7), 0);
    assert_int_equal(faiss_IndexIVF_nprobe(ivf), 7);
    assert_int_equal(faiss_ParameterSpace_set_index_parameters(ps, index, "nprobe=16"), 0);
    assert_int_equal(faiss_IndexIVF_nprobe(ivf), 16);
    /* With every list probed, the IVF answer is exact: labels are our ids. */
    float dist[4];
    idx_t lab[4];
    assert_int_equal(faiss_Index_search(index, 1, x + 5 * D, 4, dist, lab), 0);
    for (int i = 0; i < 4; i++) assert_true(lab[i] >= 1000 && lab[i] < 1000 + N);
    assert_int_not_equal(faiss_ParameterSpace_set_index_parameter(ps, index, "efSearch", 8), 0);
    assert_non_null(faiss_get_last_error());
    faiss_ParameterSpace_free(ps);
    faiss_Index_free(index);
    free(ids);
    free(x);
}

static void test_errors_carry_faiss_message(void **state)
{
    (void)state;
    FaissIndex *index = NULL;
    assert_int_not_equal(faiss_index_factory(&index, D, "NoSuchIndex42", METRIC_L2), 0);
    const char *msg = faiss_get_last_error();
    assert_non_null(msg);
    assert_non_null(strstr(msg, "NoSuchIndex42"));
    /* The "Error in <function> at <file>:<line>:" prefix is dropped. */
    assert_null(strstr(msg, "Error in"));
    assert_int_not_equal(faiss_read_index_fname("/nonexistent/rp.faiss", 0, &index), 0);
    assert_non_null(strstr(faiss_get_last_error(), "/nonexistent/rp.faiss"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flat_build_search_write_read),
        cmocka_unit_test(test_ivf_train_nprobe_and_parameter_space),
        cmocka_unit_test(test_errors_carry_faiss_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
