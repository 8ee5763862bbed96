/* Tests gateway/src/merge.c: merge, dedupe, drop, and the degradation policy. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "gw/merge.h"
#include "recpipe/v1/recommender.pb-c.h"

static void test_merge_dedupes_drops_and_orders(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    gw_cand s0[] = {{10, 0.9f, 1, 0}, {11, 0.5f, 1, 0}, {12, 0.4f, 1, 0}};
    gw_cand s1[] = {{20, 0.8f, 1, 1}, {11, 0.7f, 2, 1}, {21, 0.1f, 1, 1}};
    const gw_cand *lists[] = {s0, s1};
    size_t lens[] = {3, 3};
    uint64_t drop[] = {21, 12, 99, 12};
    size_t ndrop = gw_sort_unique(drop, 4);
    assert_int_equal(ndrop, 3);
    assert_true(gw_contains(drop, ndrop, 12));
    assert_false(gw_contains(drop, ndrop, 13));
    gw_cand *out;
    size_t n;
    assert_int_equal(gw_merge(lists, lens, 2, drop, ndrop, a, &out, &n), RP_OK);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].item_id, 10);
    assert_int_equal(out[1].item_id, 20);
    assert_int_equal(out[2].item_id, 11);
    /* The duplicate kept its best score and the source and shard that gave it. */
    assert_true(out[2].score == 0.7f);
    assert_int_equal(out[2].source, 2);
    assert_int_equal(out[2].shard, 1);
    assert_int_equal(gw_merge(lists, lens, 0, NULL, 0, a, &out, &n), RP_OK);
    assert_int_equal(n, 0);
    rp_arena_destroy(a);
}

static void test_degradation_ladder(void **state)
{
    (void)state;
    int f[4];
    /* The enum values match the API's. */
    assert_int_equal(GW_DEGRADED_SHARD_PARTIAL, RECPIPE__V1__DEGRADATION__DEGRADATION_SHARD_PARTIAL);
    assert_int_equal(GW_DEGRADED_RANKING_SKIPPED, RECPIPE__V1__DEGRADATION__DEGRADATION_RANKING_SKIPPED);
    assert_int_equal(GW_DEGRADED_RETRIEVAL_FAILED, RECPIPE__V1__DEGRADATION__DEGRADATION_RETRIEVAL_FAILED);
    assert_int_equal(GW_DEGRADED_COLD_START, RECPIPE__V1__DEGRADATION__DEGRADATION_COLD_START);
    gw_outcome ok = {.shards = 2, .shards_ok = 2, .rank_wanted = true, .rank_ok = true};
    assert_int_equal(gw_degradations(&ok, f), 0);
    gw_outcome partial = {.shards = 2, .shards_ok = 1, .rank_wanted = true, .rank_ok = false};
    assert_int_equal(gw_degradations(&partial, f), 2);
    assert_int_equal(f[0], GW_DEGRADED_SHARD_PARTIAL);
    assert_int_equal(f[1], GW_DEGRADED_RANKING_SKIPPED);
    gw_outcome none = {.shards = 2, .shards_ok = 0, .rank_wanted = true, .rank_ok = true,
                       .cold_start = true};
    assert_int_equal(gw_degradations(&none, f), 2);
    assert_int_equal(f[0], GW_DEGRADED_RETRIEVAL_FAILED);
    assert_int_equal(f[1], GW_DEGRADED_COLD_START);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_dedupes_drops_and_orders),
        cmocka_unit_test(test_degradation_ladder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
