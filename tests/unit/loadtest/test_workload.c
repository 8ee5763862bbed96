/* Tests loadtest/src/workload.c: Zipf ranks, arrival schedules, the RPC mix, requests. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt/workload.h"
#include "recpipe/v1/admin.pb-c.h"
#include "recpipe/v1/ranking.pb-c.h"
#include "recpipe/v1/recommender.pb-c.h"
#include "recpipe/v1/retrieval.pb-c.h"

/* Observed rank frequencies match 1/k^s within a few standard errors. */
static void check_zipf(uint64_t n, double s)
{
    enum { DRAWS = 400000 };
    lt_zipf z;
    rp_error err = {0};
    assert_int_equal(lt_zipf_init(&z, n, s, &err), RP_OK);
    lt_rng r;
    lt_rng_seed(&r, 42);
    uint64_t *cnt = calloc(n + 1, sizeof *cnt);
    assert_non_null(cnt);
    for (int i = 0; i < DRAWS; i++) {
        uint64_t k = lt_zipf_draw(&z, &r);
        assert_true(k >= 1 && k <= n);
        cnt[k]++;
    }
    double norm = 0;
    for (uint64_t k = 1; k <= n; k++) norm += pow((double)k, -s);
    for (uint64_t k = 1; k <= (n < 20 ? n : 20); k++) {
        double p = pow((double)k, -s) / norm;
        double expect = p * DRAWS, sd = sqrt(DRAWS * p * (1 - p));
        if (fabs((double)cnt[k] - expect) > 5 * sd + 1)
            fail_msg("zipf n=%llu s=%g: rank %llu drawn %llu times, expected %.0f +- %.0f",
                     (unsigned long long)n, s, (unsigned long long)k, (unsigned long long)cnt[k],
                     expect, sd);
    }
    free(cnt);
}

static void test_zipf(void **state)
{
    (void)state;
    check_zipf(100, 1.0);
    check_zipf(1000, 0.8);
    check_zipf(50, 0.0); /* uniform */
    check_zipf(10, 2.5);
    lt_zipf z;
    rp_error err = {0};
    assert_int_equal(lt_zipf_init(&z, 0, 1, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "users"));
    assert_int_equal(lt_zipf_init(&z, 10, -1, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "zipf"));
    /* Huge populations need no memory. */
    assert_int_equal(lt_zipf_init(&z, 1ull << 40, 1.1, &err), RP_OK);
    lt_rng r;
    lt_rng_seed(&r, 7);
    for (int i = 0; i < 1000; i++) assert_true(lt_zipf_draw(&z, &r) <= (1ull << 40));
}

static void test_constant_arrivals(void **state)
{
    (void)state;
    lt_schedule sc;
    lt_schedule_init(&sc, LT_ARRIVALS_CONSTANT, 3000, 0, 1); /* 333333.33 ns gaps */
    uint64_t t = 0;
    for (int i = 0; i < 3000; i++) t = lt_schedule_next(&sc);
    /* The 3000th call (index 2999) is due at 2999/3000 s: no drift from rounding. */
    assert_true(t >= 999666000 && t <= 999667000);
}

static void test_poisson_arrivals(void **state)
{
    (void)state;
    enum { N = 100000 };
    lt_schedule sc;
    lt_schedule_init(&sc, LT_ARRIVALS_POISSON, 1000, 0, 9);
    uint64_t prev = lt_schedule_next(&sc);
    double sum = 0, sum2 = 0;
    for (int i = 0; i < N; i++) {
        uint64_t t = lt_schedule_next(&sc);
        double gap = (double)(t - prev) / 1e6; /* ms */
        sum += gap;
        sum2 += gap * gap;
        prev = t;
    }
    double mean = sum / N, sd = sqrt(sum2 / N - mean * mean);
    /* Exponential gaps: mean 1 ms and standard deviation equal to the mean. */
    assert_true(fabs(mean - 1.0) < 0.02);
    assert_true(fabs(sd / mean - 1.0) < 0.03);
    rp_error err = {0};
    lt_arrivals a;
    assert_int_equal(lt_arrivals_parse("poisson", &a, &err), RP_OK);
    assert_int_equal(a, LT_ARRIVALS_POISSON);
    assert_int_equal(lt_arrivals_parse("bursty", &a, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "--arrivals"));
}

static void test_mix(void **state)
{
    (void)state;
    double w[LT_RPC_COUNT];
    rp_error err = {0};
    assert_int_equal(lt_mix_parse("recommend=9,feedback=1", w, &err), RP_OK);
    assert_true(fabs(w[LT_RPC_RECOMMEND] - 0.9) < 1e-12);
    assert_true(fabs(w[LT_RPC_FEEDBACK] - 0.1) < 1e-12);
    assert_true(w[LT_RPC_RANK] == 0);
    assert_int_equal(lt_mix_parse("recommend=1,bogus=2", w, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "bogus"));
    assert_int_equal(lt_mix_parse("rank=-1", w, &err), RP_EINVAL);
    assert_int_equal(lt_mix_parse("rank=0", w, &err), RP_EINVAL);
    assert_int_equal(lt_mix_parse("rank", w, &err), RP_EINVAL);

    /* The picked RPCs follow the weights. */
    lt_workload_config wc = {.ids = {.n_users = 1000, .n_items = 500}, .zipf_s = 1, .count = 10,
                             .history = 5, .candidates = 20};
    assert_int_equal(lt_mix_parse("recommend=0.7,feedback=0.2,status=0.1", wc.mix, &err), RP_OK);
    lt_workload *wl;
    assert_int_equal(lt_workload_create(&wc, &wl, &err), RP_OK);
    lt_rng r;
    lt_rng_seed(&r, 3);
    int cnt[LT_RPC_COUNT] = {0};
    for (int i = 0; i < 100000; i++) cnt[lt_workload_pick(wl, &r)]++;
    assert_true(abs(cnt[LT_RPC_RECOMMEND] - 70000) < 800);
    assert_true(abs(cnt[LT_RPC_FEEDBACK] - 20000) < 600);
    assert_true(abs(cnt[LT_RPC_STATUS] - 10000) < 500);
    assert_int_equal(cnt[LT_RPC_RANK] + cnt[LT_RPC_RETRIEVE], 0);
    lt_workload_destroy(wl);
}

/* Every request decodes as its method's message, with ids from the configured ranges. */
static void test_requests(void **state)
{
    (void)state;
    static const uint64_t users[] = {1001, 1002, 1003};
    static const uint64_t items[] = {77, 55, 33, 11};
    lt_workload_config wc = {.ids = {users, 3, items, 4}, .zipf_s = 1, .count = 25,
                             .history = 12, .candidates = 4};
    for (int i = 0; i < LT_RPC_COUNT; i++) wc.mix[i] = 1;
    lt_workload *wl;
    rp_error err = {0};
    assert_int_equal(lt_workload_create(&wc, &wl, &err), RP_OK);
    lt_rng r;
    lt_rng_seed(&r, 5);
    uint8_t *buf = malloc(LT_REQUEST_MAX);
    size_t len;
    for (int round = 0; round < 50; round++) {
        assert_int_equal(lt_workload_encode(wl, LT_RPC_RECOMMEND, &r, buf, LT_REQUEST_MAX, &len), RP_OK);
        Recpipe__V1__RecommendRequest *rec = recpipe__v1__recommend_request__unpack(NULL, len, buf);
        assert_non_null(rec);
        assert_true(rec->user_id >= 1001 && rec->user_id <= 1003);
        assert_int_equal(rec->count, 25);
        recpipe__v1__recommend_request__free_unpacked(rec, NULL);

        assert_int_equal(lt_workload_encode(wl, LT_RPC_FEEDBACK, &r, buf, LT_REQUEST_MAX, &len), RP_OK);
        Recpipe__V1__FeedbackRequest *fb = recpipe__v1__feedback_request__unpack(NULL, len, buf);
        assert_non_null(fb);
        assert_int_equal(fb->n_events, 1);
        assert_true(fb->events[0]->item_id == 77 || fb->events[0]->item_id == 55 ||
                    fb->events[0]->item_id == 33 || fb->events[0]->item_id == 11);
        assert_true(fb->events[0]->type != 0);
        recpipe__v1__feedback_request__free_unpacked(fb, NULL);

        assert_int_equal(lt_workload_encode(wl, LT_RPC_RETRIEVE, &r, buf, LT_REQUEST_MAX, &len), RP_OK);
        Recpipe__V1__RetrieveRequest *rt = recpipe__v1__retrieve_request__unpack(NULL, len, buf);
        assert_non_null(rt);
        assert_int_equal(rt->n_history, 12);
        assert_int_equal(rt->k, 4);
        recpipe__v1__retrieve_request__free_unpacked(rt, NULL);

        assert_int_equal(lt_workload_encode(wl, LT_RPC_RANK, &r, buf, LT_REQUEST_MAX, &len), RP_OK);
        Recpipe__V1__RankRequest *rk = recpipe__v1__rank_request__unpack(NULL, len, buf);
        assert_non_null(rk);
        assert_int_equal(rk->n_candidates, 4);
        /* Candidates are distinct: Rank refuses duplicates. */
        uint64_t seen = 0;
        for (size_t i = 0; i < rk->n_candidates; i++) {
            uint64_t id = rk->candidates[i]->item_id;
            uint64_t bit = id == 77 ? 1 : id == 55 ? 2 : id == 33 ? 4 : id == 11 ? 8 : 0;
            assert_true(bit != 0);
            assert_false(seen & bit);
            seen |= bit;
        }
        recpipe__v1__rank_request__free_unpacked(rk, NULL);
    }
    /* StatusRequest is empty: length 0 is a valid request. */
    assert_int_equal(lt_workload_encode(wl, LT_RPC_STATUS, &r, buf, LT_REQUEST_MAX, &len), RP_OK);
    assert_int_equal(len, 0);
    /* A buffer too small is an error, not a truncated request. */
    assert_int_equal(lt_workload_encode(wl, LT_RPC_RANK, &r, buf, 8, &len), RP_ETOOBIG);
    free(buf);
    lt_workload_destroy(wl);

    wc.count = 0;
    assert_int_equal(lt_workload_create(&wc, &wl, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "count"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zipf),  cmocka_unit_test(test_constant_arrivals),
        cmocka_unit_test(test_poisson_arrivals), cmocka_unit_test(test_mix),
        cmocka_unit_test(test_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
