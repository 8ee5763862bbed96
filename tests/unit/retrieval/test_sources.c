/* Tests retrieval/src/search.c, sources.c, source_*.c and side_index.c on in-memory
 * catalogs: the selectivity decision, over-fetch and widening against exact filtered
 * search, k results whenever k items are eligible, the merge, popular/fresh order,
 * upserts and tombstones on every source, the cold-user fill. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ret/sources.h"

enum { N = 20000, D = 16, NCAT = 64 };

static char *cat_names[NCAT];

static uint64_t rng_state = 42;
static double rnd(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* Brute force over the catalogue, ignoring filters, like an index would. `lossy`
 * returns at most 200 results, as an IVF search runs out of probed lists. */
typedef struct fake_ann {
    const ret_catalog *c;
    int lossy;
    int calls;
} fake_ann;

static int fake_search(void *ctx, const float *q, uint32_t k, float effort, uint32_t *dense,
                       float *scores, uint32_t *n, rp_error *err)
{
    (void)effort;
    (void)err;
    fake_ann *fa = ctx;
    fa->calls++;
    const ret_catalog *c = fa->c;
    /* selection by repeated insertion into a sorted array of size k */
    uint32_t m = 0;
    for (uint32_t i = 0; i < c->n_items; i++) {
        float s = ret_dot(q, ret_catalog_vec(c, i), c->dim);
        if (m == k && s <= scores[m - 1]) continue;
        uint32_t p = m < k ? m++ : k - 1;
        while (p > 0 && scores[p - 1] < s) {
            scores[p] = scores[p - 1];
            dense[p] = dense[p - 1];
            p--;
        }
        scores[p] = s;
        dense[p] = i;
    }
    *n = fa->lossy && m > 200 ? 200 : m;
    return RP_OK;
}

typedef struct fixture {
    ret_catalog *c;
    fake_ann fa;
    rp_arena *a;
    ret_side *side;
} fixture;

/* Items: id = 10*(i+1); category i % NCAT, and category 0 for every 1000th item (so
 * category 0 is broad, the others about 1.5% each); created = i; popularity = N - i. */
static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    uint64_t *ids = malloc(sizeof *ids * N);
    int64_t *created = malloc(sizeof *created * N);
    uint32_t *off = malloc(sizeof *off * (N + 1));
    uint16_t *cats = malloc(sizeof *cats * N * 2);
    float *vec = malloc(sizeof *vec * N * D);
    float *pop = malloc(sizeof *pop * N);
    uint32_t m = 0;
    for (int k = 0; k < NCAT; k++) {
        cat_names[k] = malloc(16);
        snprintf(cat_names[k], 16, "c%02d", k);
    }
    for (uint32_t i = 0; i < N; i++) {
        ids[i] = 10 * (uint64_t)(i + 1);
        created[i] = (int64_t)i;
        off[i] = m;
        cats[m++] = (uint16_t)(i % NCAT);
        if (i % 1000 == 0 && i % NCAT) cats[m++] = 0;
        pop[i] = (float)(N - i);
        for (int j = 0; j < D; j++) vec[i * D + j] = (float)(rnd() - 0.5);
    }
    off[N] = m;
    ret_catalog_input in = {.n_items = N, .dim = D, .ids = ids, .created = created,
                            .cat_off = off, .cats = cats, .n_categories = NCAT,
                            .category_names = (const char *const *)cat_names, .vectors = vec,
                            .popularity = pop, .ann = fake_search, .ann_ctx = &fx->fa};
    rp_error err;
    if (ret_catalog_build(&in, &fx->c, &err)) fail_msg("%s", rp_error_text(&err));
    fx->fa.c = fx->c;
    assert_int_equal(rp_arena_create(0, &fx->a), RP_OK);
    assert_int_equal(ret_side_new(D, &fx->side, &err), RP_OK);
    free(ids);
    free(created);
    free(off);
    free(cats);
    free(vec);
    free(pop);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    ret_catalog_free(fx->c);
    rp_arena_destroy(fx->a);
    ret_side_unref(fx->side);
    for (int k = 0; k < NCAT; k++) free(cat_names[k]);
    free(fx);
    return 0;
}

static void query_vec(float *q)
{
    for (int j = 0; j < D; j++) q[j] = (float)(rnd() - 0.5);
}

/* Runs ret_search and the exact reference with the same filter; asserts equal lists. */
static void check_same_as_exact(fixture *fx, ret_query *qq, uint32_t k, uint32_t exact_max,
                                ret_stats *st)
{
    ret_search_opts o = RET_SEARCH_OPTS_DEFAULT;
    o.exact_max = exact_max;
    ret_ctx ctx = {fx->c, fx->side, qq, &o, fx->a, st};
    ret_cands got, want;
    rp_error err;
    assert_int_equal(ret_search(&ctx, qq->vector, k, NULL, RET_SRC_ANN, &got, &err), RP_OK);
    assert_int_equal(ret_search_exact(&ctx, qq->vector, k, NULL, RET_SRC_ANN, &want, &err), RP_OK);
    assert_int_equal(got.n, want.n);
    for (uint32_t j = 0; j < got.n; j++) {
        assert_int_equal(got.v[j].id, want.v[j].id);
        assert_int_equal(got.v[j].source, RET_SRC_ANN);
        if (j) assert_true(got.v[j - 1].score >= got.v[j].score);
    }
}

static void test_filtered_search_matches_exact_on_both_paths(void **state)
{
    fixture *fx = *state;
    float q[D];
    rp_error err;
    const char *narrow[] = {"c05"};
    const char *broad[] = {"c00", "c01", "c02", "c03", "c04", "c05", "c06", "c07", "c08", "c09",
                           "c10", "c11", "c12", "c13", "c14", "c15", "c16", "c17", "c18", "c19",
                           "c20", "c21", "c22", "c23", "c24", "c25", "c26", "c27", "c28", "c29",
                           "c30", "c31"};
    uint64_t excl[50];
    for (int r = 0; r < 5; r++) {
        query_vec(q);
        ret_query qq = {.vector = q, .k = 100, .now = N};
        for (int e = 0; e < 50; e++) excl[e] = 10 * (uint64_t)(1 + (uint32_t)(rnd() * N));
        /* Narrow filter (1.6%): exact scan over the posting list. */
        assert_int_equal(ret_filter_compile(&qq.filter, fx->c, narrow, 1, NULL, 0, 0, 0, excl, 50, fx->a, &err), RP_OK);
        ret_stats st = {0};
        fx->fa.calls = 0;
        check_same_as_exact(fx, &qq, 100, 1000, &st);
        assert_int_equal(fx->fa.calls, 0);
        assert_int_equal(st.exact_scans, 1);
        /* Broad filter (50%) with a time bound: ANN with over-fetch. */
        assert_int_equal(ret_filter_compile(&qq.filter, fx->c, broad, 32, NULL, 0, 100, 0, excl, 50, fx->a, &err), RP_OK);
        memset(&st, 0, sizeof st);
        fx->fa.calls = 0;
        check_same_as_exact(fx, &qq, 100, 1000, &st);
        assert_true(fx->fa.calls >= 1);
        assert_int_equal(st.exact_scans, 0);
        /* No filter at all: ANN, one call. */
        assert_int_equal(ret_filter_compile(&qq.filter, fx->c, NULL, 0, NULL, 0, 0, 0, excl, 50, fx->a, &err), RP_OK);
        fx->fa.calls = 0;
        check_same_as_exact(fx, &qq, 100, 1000, &st);
        assert_int_equal(fx->fa.calls, 1);
        rp_arena_reset(fx->a);
    }
}

static void test_widening_and_fallback_return_k(void **state)
{
    fixture *fx = *state;
    float q[D];
    query_vec(q);
    rp_error err;
    /* The posting list says 50% but the time bound admits only 2% of those: the
     * estimate is wrong by 25x, so the search must widen. */
    const char *broad[32];
    for (int k = 0; k < 32; k++) broad[k] = cat_names[k];
    ret_query qq = {.vector = q, .k = 50, .now = N};
    assert_int_equal(ret_filter_compile(&qq.filter, fx->c, broad, 32, NULL, 0, N - 400, 0, NULL, 0, fx->a, &err), RP_OK);
    ret_stats st = {0};
    check_same_as_exact(fx, &qq, 50, 100, &st);
    assert_true(st.ann_searches >= 2);
    /* An index that runs out of results cannot deliver: the exact fallback still
     * returns k results, and the right ones. */
    fx->fa.lossy = 1;
    memset(&st, 0, sizeof st);
    check_same_as_exact(fx, &qq, 50, 100, &st);
    assert_int_equal(st.exact_scans, 1);
    fx->fa.lossy = 0;
    /* Fewer eligible than k: all of them come back. */
    const char *one[] = {"c07"};
    assert_int_equal(ret_filter_compile(&qq.filter, fx->c, one, 1, NULL, 0, N - 640, 0, NULL, 0, fx->a, &err), RP_OK);
    ret_search_opts o = RET_SEARCH_OPTS_DEFAULT;
    ret_ctx ctx = {fx->c, fx->side, &qq, &o, fx->a, &st};
    ret_cands got;
    assert_int_equal(ret_search(&ctx, q, 50, NULL, RET_SRC_ANN, &got, &err), RP_OK);
    assert_int_equal(got.n, 10); /* 640 newest items / 64 categories */
    rp_arena_reset(fx->a);
}

static void test_merge_round_robin_dedupe(void **state)
{
    fixture *fx = *state;
    ret_cand a[] = {{1, 9, RET_SRC_ANN}, {2, 8, RET_SRC_ANN}, {3, 7, RET_SRC_ANN}};
    ret_cand b[] = {{2, 5, RET_SRC_POPULAR}, {4, 4, RET_SRC_POPULAR}};
    ret_cands lists[] = {{a, 3}, {b, 2}};
    ret_cands out;
    assert_int_equal(ret_merge(lists, 2, 10, fx->a, &out), RP_OK);
    uint64_t want[] = {1, 2, 4, 3};
    assert_int_equal(out.n, 4);
    for (int j = 0; j < 4; j++) assert_int_equal(out.v[j].id, want[j]);
    assert_int_equal(out.v[1].source, RET_SRC_POPULAR); /* first in merge order */
    assert_int_equal(ret_merge(lists, 2, 2, fx->a, &out), RP_OK);
    assert_int_equal(out.n, 2);
    rp_arena_reset(fx->a);
}

static void test_popular_fresh_and_cold_fill(void **state)
{
    fixture *fx = *state;
    rp_error err;
    const char *inc[] = {"c03"};
    ret_query qq = {.k = 20, .now = N - 1000, .n_sources = 1, .sources = {{RET_SRC_ANN, 0}}};
    assert_int_equal(ret_filter_compile(&qq.filter, fx->c, inc, 1, NULL, 0, 0, 0, NULL, 0, fx->a, &err), RP_OK);
    ret_search_opts o = RET_SEARCH_OPTS_DEFAULT;
    ret_stats st = {0};
    ret_ctx ctx = {fx->c, fx->side, &qq, &o, fx->a, &st};
    ret_cands pop, fresh, all;
    assert_int_equal(ret_source_get(RET_SRC_POPULAR)->run(&ctx, 20, &pop, &err), RP_OK);
    assert_int_equal(pop.n, 20);
    /* Most popular = lowest index; category c03 = i % 64 == 3. */
    for (uint32_t j = 0; j < 20; j++) assert_int_equal(pop.v[j].id, 10 * (uint64_t)(3 + 64 * j + 1));
    assert_int_equal(ret_source_get(RET_SRC_FRESH)->run(&ctx, 20, &fresh, &err), RP_OK);
    assert_int_equal(fresh.n, 20);
    /* Newest admitted not after now: the largest i <= now with i % 64 == 3. */
    uint32_t top = (N - 1000) - ((N - 1000 - 3) % 64);
    assert_int_equal(fresh.v[0].id, 10 * (uint64_t)(top + 1));
    assert_true(fresh.v[0].score >= fresh.v[1].score);
    /* No vector: ANN alone finds nothing, the cold fill brings popular and fresh. */
    assert_int_equal(ret_retrieve(&ctx, &all, &err), RP_OK);
    assert_int_equal(all.n, 20);
    int npop = 0, nfresh = 0;
    for (uint32_t j = 0; j < all.n; j++) {
        npop += all.v[j].source == RET_SRC_POPULAR;
        nfresh += all.v[j].source == RET_SRC_FRESH;
    }
    assert_int_equal(npop, 10);
    assert_int_equal(nfresh, 10);
    rp_arena_reset(fx->a);
}

static void test_upserts_and_tombstones_on_every_source(void **state)
{
    fixture *fx = *state;
    rp_error err;
    float q[D];
    query_vec(q);
    ret_search_opts o = RET_SEARCH_OPTS_DEFAULT;
    ret_query qq = {.vector = q, .seed_vector = q, .k = 10, .now = N + 100};
    assert_int_equal(ret_filter_compile(&qq.filter, fx->c, NULL, 0, NULL, 0, 0, 0, NULL, 0, fx->a, &err), RP_OK);
    ret_stats st = {0};
    ret_ctx ctx = {fx->c, fx->side, &qq, &o, fx->a, &st};
    ret_cands before, pop, fresh;
    assert_int_equal(ret_search(&ctx, q, 10, NULL, RET_SRC_ANN, &before, &err), RP_OK);
    assert_int_equal(ret_source_get(RET_SRC_POPULAR)->run(&ctx, 10, &pop, &err), RP_OK);
    assert_int_equal(ret_source_get(RET_SRC_FRESH)->run(&ctx, 10, &fresh, &err), RP_OK);

    /* Upsert a new item pointing along q (best match, newest), and replace the current
     * best ANN item with a copy in category c09 created at N+50. */
    float newv[D], repl[D];
    for (int j = 0; j < D; j++) newv[j] = q[j] * 10;
    memcpy(repl, ret_catalog_vec(fx->c, 0), sizeof repl);
    uint32_t best_dense;
    assert_true(ret_catalog_find(fx->c, before.v[0].id, &best_dense));
    memcpy(repl, ret_catalog_vec(fx->c, best_dense), sizeof repl);
    uint16_t c9 = 9;
    ret_side_upsert up[] = {{999999, N + 10, &c9, 1, newv}, {before.v[0].id, N + 50, &c9, 1, repl}};
    ret_side *s2;
    assert_int_equal(ret_side_upsert_items(fx->side, fx->c, up, 2, &s2, &err), RP_OK);
    assert_int_equal(s2->n, 2);
    assert_int_equal(s2->hidden.count, 1);
    ctx.side = s2;
    ret_cands after;
    assert_int_equal(ret_search(&ctx, q, 10, NULL, RET_SRC_ANN, &after, &err), RP_OK);
    assert_int_equal(after.v[0].id, 999999);
    int copies = 0;
    for (uint32_t j = 0; j < after.n; j++) copies += after.v[j].id == before.v[0].id;
    assert_int_equal(copies, 1);
    assert_int_equal(ret_source_get(RET_SRC_FRESH)->run(&ctx, 10, &fresh, &err), RP_OK);
    assert_int_equal(fresh.v[0].id, before.v[0].id); /* created N+50 */
    assert_int_equal(fresh.v[1].id, 999999);

    /* Delete the new item, the most popular item and the replaced one. */
    uint64_t del[] = {999999, pop.v[0].id, before.v[0].id, 123457};
    uint32_t ndel, nnf;
    ret_side *s3;
    assert_int_equal(ret_side_delete_items(s2, fx->c, del, 4, &ndel, &nnf, &s3, &err), RP_OK);
    assert_int_equal(ndel, 3);
    assert_int_equal(nnf, 1);
    assert_int_equal(s3->n, 0);
    ctx.side = s3;
    ret_cands l[4];
    assert_int_equal(ret_search(&ctx, q, 10, NULL, RET_SRC_ANN, &l[0], &err), RP_OK);
    assert_int_equal(ret_source_get(RET_SRC_POPULAR)->run(&ctx, 10, &l[1], &err), RP_OK);
    assert_int_equal(ret_source_get(RET_SRC_FRESH)->run(&ctx, 10, &l[2], &err), RP_OK);
    assert_int_equal(ret_source_get(RET_SRC_SIMILAR)->run(&ctx, 10, &l[3], &err), RP_OK);
    for (int s = 0; s < 4; s++) {
        assert_int_equal(l[s].n, 10);
        for (uint32_t j = 0; j < l[s].n; j++)
            for (int d = 0; d < 3; d++) assert_int_not_equal(l[s].v[j].id, del[d]);
    }
    /* Deleting again finds nothing; upserting a deleted id brings it back. */
    ret_side *s4;
    assert_int_equal(ret_side_delete_items(s3, fx->c, del, 3, &ndel, &nnf, &s4, &err), RP_OK);
    assert_int_equal(ndel, 0);
    assert_int_equal(nnf, 3);
    ret_side_unref(s4);
    ret_side_upsert back = {pop.v[0].id, 5, &c9, 1, newv};
    assert_int_equal(ret_side_upsert_items(s3, fx->c, &back, 1, &s4, &err), RP_OK);
    ctx.side = s4;
    assert_int_equal(ret_search(&ctx, q, 1, NULL, RET_SRC_ANN, &l[0], &err), RP_OK);
    assert_int_equal(l[0].v[0].id, pop.v[0].id);
    ret_side_unref(s4);
    ret_side_unref(s3);
    ret_side_unref(s2);
    rp_arena_reset(fx->a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filtered_search_matches_exact_on_both_paths),
        cmocka_unit_test(test_widening_and_fallback_return_k),
        cmocka_unit_test(test_merge_round_robin_dedupe),
        cmocka_unit_test(test_popular_fresh_and_cold_fill),
        cmocka_unit_test(test_upserts_and_tombstones_on_every_source),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
