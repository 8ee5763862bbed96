/* Tests gateway/src/diversify.c: MMR trade-off and per-category caps. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "gw/diversify.h"

/* Four near-duplicates of one direction with the best scores, then two distinct items. */
static const float emb[6][2] = {{1, 0}, {1, 0.01f}, {1, 0.02f}, {1, 0.03f}, {0, 1}, {-1, 0}};
static const uint32_t cat_a[] = {0}, cat_b[] = {1}, cat_ab[] = {0, 1};

static void fill(gw_div_item it[6])
{
    const float scores[6] = {0.99f, 0.98f, 0.97f, 0.96f, 0.90f, 0.80f};
    for (int i = 0; i < 6; i++) {
        it[i] = (gw_div_item){.score = scores[i], .emb = emb[i], .cats = cat_a, .ncats = 1};
    }
    it[4].cats = cat_b;
    it[5].cats = cat_ab;
    it[5].ncats = 2;
}

static void test_lambda_one_keeps_score_order(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    gw_div_item it[6];
    fill(it);
    size_t out[4], n;
    gw_div_opts o = {.mmr = true, .lambda = 1.0f};
    assert_int_equal(gw_diversify(it, 6, 2, &o, 4, a, out, &n), RP_OK);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < 4; i++) assert_int_equal(out[i], i);
    o.mmr = false;
    o.lambda = 0.1f;
    assert_int_equal(gw_diversify(it, 6, 2, &o, 4, a, out, &n), RP_OK);
    for (size_t i = 0; i < 4; i++) assert_int_equal(out[i], i);
    rp_arena_destroy(a);
}

static void test_mmr_prefers_novel_items(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    gw_div_item it[6];
    fill(it);
    size_t out[3], n;
    gw_div_opts o = {.mmr = true, .lambda = 0.5f};
    assert_int_equal(gw_diversify(it, 6, 2, &o, 3, a, out, &n), RP_OK);
    assert_int_equal(n, 3);
    /* The best first, then the orthogonal item (more relevant than the opposite one),
     * then the opposite one: never the near-duplicates of the first. */
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 4);
    assert_int_equal(out[2], 5);
    /* A high lambda lets relevance win here: 0.8 * 0.95 - 0.2 * 1 > 0.8 * 0.53. */
    o.lambda = 0.8f;
    assert_int_equal(gw_diversify(it, 6, 2, &o, 3, a, out, &n), RP_OK);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 1);
    rp_arena_destroy(a);
}

static void test_category_cap_is_hard(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    gw_div_item it[6];
    fill(it);
    size_t out[6], n;
    gw_div_opts o = {.mmr = false, .max_per_category = 2};
    assert_int_equal(gw_diversify(it, 6, 2, &o, 6, a, out, &n), RP_OK);
    /* Category 0: items 0,1 (cap reached; 2,3 and 5 skipped); category 1: item 4. */
    assert_int_equal(n, 3);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 1);
    assert_int_equal(out[2], 4);
    o.mmr = true;
    o.lambda = 0.5f;
    assert_int_equal(gw_diversify(it, 6, 2, &o, 6, a, out, &n), RP_OK);
    unsigned per[2] = {0, 0};
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < it[out[i]].ncats; j++) per[it[out[i]].cats[j]]++;
    assert_true(per[0] <= 2 && per[1] <= 2);
    /* Missing embeddings and empty input are fine. */
    it[0].emb = NULL;
    assert_int_equal(gw_diversify(it, 6, 2, &o, 2, a, out, &n), RP_OK);
    assert_int_equal(n, 2);
    assert_int_equal(gw_diversify(it, 0, 2, &o, 2, a, out, &n), RP_OK);
    assert_int_equal(n, 0);
    rp_arena_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lambda_one_keeps_score_order),
        cmocka_unit_test(test_mmr_prefers_novel_items),
        cmocka_unit_test(test_category_cap_is_hard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
