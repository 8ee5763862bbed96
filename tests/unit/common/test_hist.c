/* Tests common/src/hist.c: bucket bounds, merge, percentiles against exact sorted values. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rp/hist.h"

/* Deterministic xorshift so a failure reproduces. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
static double unif(void)
{
    return (double)(rng() >> 11) / 9007199254740992.0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_bucket_bounds(void **state)
{
    (void)state;
    uint64_t prev_hi = 0;
    for (uint32_t b = 0; b < RP_HIST_NBUCKETS; b++) {
        uint64_t lo, hi;
        rp_hist_bucket_bounds(b, &lo, &hi);
        /* Buckets tile the range without gaps or overlaps. */
        assert_int_equal(lo, prev_hi);
        assert_true(hi > lo);
        prev_hi = hi;
        if (lo > RP_HIST_MAX_NS) continue; /* past 60 s: never used */
        /* Both ends map back to this bucket. */
        assert_int_equal(rp_hist_bucket(lo), b);
        if (hi - 1 <= RP_HIST_MAX_NS) assert_int_equal(rp_hist_bucket(hi - 1), b);
        /* From 1 µs up, a bucket is at most 1/128 of its lower bound wide. */
        if (lo >= 1000) assert_true((double)(hi - lo) / (double)lo <= 1.0 / 128 + 1e-12);
    }
    /* The last bucket holds 60 s. */
    assert_true(prev_hi > RP_HIST_MAX_NS);
    assert_int_equal(rp_hist_bucket(RP_HIST_MAX_NS), rp_hist_bucket(UINT64_MAX));
    assert_true(rp_hist_bucket(RP_HIST_MAX_NS) < RP_HIST_NBUCKETS);
    assert_int_equal(rp_hist_bucket(0), 0);
    assert_int_equal(rp_hist_bucket(255), 255);
    assert_int_equal(rp_hist_bucket(256), 256);
}

static void test_empty_and_single(void **state)
{
    (void)state;
    rp_hist h;
    rp_hist_reset(&h);
    assert_int_equal(rp_hist_percentile(&h, 99), 0);
    assert_int_equal(rp_hist_min(&h), 0);
    assert_int_equal(rp_hist_max(&h), 0);
    assert_true(rp_hist_mean(&h) == 0);
    rp_hist_record(&h, 1234567);
    assert_int_equal(rp_hist_percentile(&h, 0), 1234567);
    assert_int_equal(rp_hist_percentile(&h, 50), 1234567); /* kept within [min, max] */
    assert_int_equal(rp_hist_percentile(&h, 100), 1234567);
    assert_true(rp_hist_mean(&h) == 1234567.0);
}

static void test_clamp(void **state)
{
    (void)state;
    rp_hist h;
    rp_hist_reset(&h);
    rp_hist_record(&h, 120ull * 1000000000ull);
    assert_int_equal(h.clamped, 1);
    assert_int_equal(rp_hist_max(&h), RP_HIST_MAX_NS);
}

/* Percentiles of 200k values spread log-uniformly over 1 µs .. 10 s. */
static void test_percentile_error(void **state)
{
    (void)state;
    enum { N = 200000 };
    uint64_t *v = malloc(N * sizeof *v);
    assert_non_null(v);
    rp_hist h;
    rp_hist_reset(&h);
    for (size_t i = 0; i < N; i++) {
        v[i] = (uint64_t)(1000.0 * pow(10.0, 7.0 * unif()));
        rp_hist_record(&h, v[i]);
    }
    qsort(v, N, sizeof *v, cmp_u64);
    static const double ps[] = {0.1, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 99.999};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        size_t rank = (size_t)ceil(ps[i] / 100.0 * N);
        double exact = (double)v[rank - 1];
        double got = (double)rp_hist_percentile(&h, ps[i]);
        double rel = fabs(got - exact) / exact;
        if (rel > 0.01) fail_msg("p%g: got %.0f, exact %.0f (%.3f%%)", ps[i], got, exact, rel * 100);
    }
    assert_int_equal(rp_hist_min(&h), v[0]);
    assert_int_equal(rp_hist_max(&h), v[N - 1]);
    double sum = 0;
    for (size_t i = 0; i < N; i++) sum += (double)v[i];
    assert_true(fabs(rp_hist_mean(&h) - sum / N) / (sum / N) < 1e-9);
    free(v);
}

/* Merging per-thread histograms equals recording everything in one. */
static void test_merge(void **state)
{
    (void)state;
    static rp_hist all, parts[4], merged;
    rp_hist_reset(&all);
    rp_hist_reset(&merged);
    for (int t = 0; t < 4; t++) rp_hist_reset(&parts[t]);
    for (int i = 0; i < 40000; i++) {
        uint64_t x = 1000 + rng() % 50000000;
        rp_hist_record(&all, x);
        rp_hist_record(&parts[i % 4], x);
    }
    for (int t = 0; t < 4; t++) rp_hist_merge(&merged, &parts[t]);
    assert_int_equal(merged.count, all.count);
    assert_int_equal(merged.min_ns, all.min_ns);
    assert_int_equal(merged.max_ns, all.max_ns);
    assert_memory_equal(merged.counts, all.counts, sizeof all.counts);
    assert_int_equal(rp_hist_percentile(&merged, 99.9), rp_hist_percentile(&all, 99.9));
}

static void test_iterate(void **state)
{
    (void)state;
    rp_hist h;
    rp_hist_reset(&h);
    rp_hist_record_n(&h, 5000, 3);
    rp_hist_record(&h, 20);
    rp_hist_record(&h, 7000000000ull);
    uint32_t b = 0;
    uint64_t lo, hi, n, total = 0, prev_lo = 0;
    int buckets = 0;
    while (rp_hist_next(&h, &b, &lo, &hi, &n)) {
        assert_true(lo >= prev_lo);
        prev_lo = lo;
        total += n;
        buckets++;
    }
    assert_int_equal(buckets, 3);
    assert_int_equal(total, 5);
    assert_int_equal(h.count, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_bounds), cmocka_unit_test(test_empty_and_single),
        cmocka_unit_test(test_clamp),         cmocka_unit_test(test_percentile_error),
        cmocka_unit_test(test_merge),         cmocka_unit_test(test_iterate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
