/* Tests retrieval/src/filter.c and catalog.c: id sets, filter compilation and its
 * errors, posting-list unions, the admit predicate. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ret/catalog.h"
#include "ret/filter.h"

static const char *names[] = {"Drama", "Comedy", "Action", "Horror"};

/* 100 items: id 1000+i, created 1000*i, item i has category i%4 and, when i%10 == 0,
 * also Horror listed twice (duplicates must not break posting lists). */
static ret_catalog *make_catalog(void)
{
    enum { N = 100, D = 4 };
    uint64_t ids[N];
    int64_t created[N];
    uint32_t off[N + 1];
    uint16_t cats[N * 3];
    float vec[N * D];
    uint32_t m = 0;
    for (uint32_t i = 0; i < N; i++) {
        ids[i] = 1000 + i;
        created[i] = 1000 * (int64_t)i;
        off[i] = m;
        cats[m++] = (uint16_t)(i % 4);
        if (i % 10 == 0) {
            cats[m++] = 3;
            cats[m++] = 3;
        }
        for (int j = 0; j < D; j++) vec[i * D + j] = (float)((i * 7 + j) % 5);
    }
    off[N] = m;
    ret_catalog_input in = {.n_items = N, .dim = D, .ids = ids, .created = created,
                            .cat_off = off, .cats = cats, .n_categories = 4,
                            .category_names = names, .vectors = vec};
    ret_catalog *c;
    rp_error err;
    int rc = ret_catalog_build(&in, &c, &err);
    if (rc) fail_msg("ret_catalog_build: %s", rp_error_text(&err));
    return c;
}

static void test_idset(void **state)
{
    (void)state;
    ret_idset s;
    assert_int_equal(ret_idset_init(&s, 1000, NULL), RP_OK);
    for (uint64_t i = 1; i <= 1000; i++) assert_true(ret_idset_add(&s, i * 7919));
    assert_false(ret_idset_add(&s, 7919));
    assert_int_equal(s.count, 1000);
    for (uint64_t i = 1; i <= 1000; i++) assert_true(ret_idset_has(&s, i * 7919));
    assert_false(ret_idset_has(&s, 7918));
    ret_idset_free(&s);
}

static void test_catalog_lookup_and_postings(void **state)
{
    (void)state;
    ret_catalog *c = make_catalog();
    uint32_t d;
    assert_true(ret_catalog_find(c, 1042, &d));
    assert_int_equal(d, 42);
    assert_false(ret_catalog_find(c, 999, &d));
    uint16_t k;
    assert_true(ret_catalog_find_category(c, "Horror", &k));
    assert_int_equal(k, 3);
    assert_false(ret_catalog_find_category(c, "horror", &k));
    /* Horror: items 3,7,11,... (25) plus the multiples of 10 not already there (10). */
    uint32_t n = c->post_off[4] - c->post_off[3];
    assert_int_equal(n, 25 + 10);
    for (uint32_t p = c->post_off[3] + 1; p < c->post_off[4]; p++) assert_true(c->post[p - 1] < c->post[p]);
    /* Newest first. */
    assert_int_equal(c->by_created[0], 99);
    ret_catalog_free(c);
    ret_catalog_free(NULL);
}

static void test_catalog_rejects_bad_input(void **state)
{
    (void)state;
    uint64_t ids[2] = {5, 5};
    float vec[2] = {1, 2};
    ret_catalog_input in = {.n_items = 2, .dim = 1, .ids = ids, .vectors = vec};
    ret_catalog *c;
    rp_error err;
    assert_int_equal(ret_catalog_build(&in, &c, &err), RP_EINVAL);
    assert_null(c);
    assert_non_null(strstr(err.msg, "duplicate item id 5"));
}

static void test_compile_errors_name_the_field(void **state)
{
    (void)state;
    ret_catalog *c = make_catalog();
    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    ret_filter f;
    rp_error err;
    const char *bad[] = {"Drama", "Western"};
    assert_int_equal(ret_filter_compile(&f, c, bad, 2, NULL, 0, 0, 0, NULL, 0, a, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "filter.include_categories[1]"));
    assert_non_null(strstr(err.msg, "Western"));
    assert_int_equal(ret_filter_compile(&f, c, NULL, 0, bad + 1, 1, 0, 0, NULL, 0, a, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "filter.exclude_categories[0]"));
    assert_int_equal(ret_filter_compile(&f, c, NULL, 0, NULL, 0, 50, 10, NULL, 0, a, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "filter.created_before"));
    uint64_t *many = calloc(RET_MAX_EXCLUDE + 1, sizeof *many);
    assert_int_equal(ret_filter_compile(&f, c, NULL, 0, NULL, 0, 0, 0, many, RET_MAX_EXCLUDE + 1, a, &err),
                     RP_EINVAL);
    assert_non_null(strstr(err.msg, "exclude_ids"));
    assert_non_null(strstr(err.msg, "10000"));
    free(many);
    const char *lots[RET_MAX_FILTER_CATEGORIES + 1];
    for (uint32_t i = 0; i <= RET_MAX_FILTER_CATEGORIES; i++) lots[i] = "Drama";
    assert_int_equal(ret_filter_compile(&f, c, lots, RET_MAX_FILTER_CATEGORIES + 1, NULL, 0, 0, 0, NULL, 0, a, &err),
                     RP_EINVAL);
    assert_non_null(strstr(err.msg, "256"));
    rp_arena_destroy(a);
    ret_catalog_free(c);
}

static void test_admits_and_candidates(void **state)
{
    (void)state;
    ret_catalog *c = make_catalog();
    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    ret_filter f;
    rp_error err;
    const char *inc[] = {"Comedy", "Horror", "Comedy"};
    const char *exc[] = {"Drama"};
    uint64_t ex[] = {1001};
    assert_int_equal(ret_filter_compile(&f, c, inc, 3, exc, 1, 5000, 90000, ex, 1, a, &err), RP_OK);
    assert_true(ret_filter_restricts(&f));
    uint32_t *cand, n;
    assert_int_equal(ret_filter_candidates(&f, c, a, &cand, &n), RP_OK);
    /* Comedy (i%4==1: 25) ∪ Horror (35) = 60, ascending, no duplicates. */
    assert_int_equal(n, 60);
    for (uint32_t p = 1; p < n; p++) assert_true(cand[p - 1] < cand[p]);
    /* Brute force agrees with the predicate built by hand. */
    uint32_t admitted = 0;
    for (uint32_t i = 0; i < c->n_items; i++) {
        int has_inc = i % 4 == 1 || i % 4 == 3 || i % 10 == 0;
        int has_exc = i % 4 == 0;
        int in_time = 1000 * (int64_t)i >= 5000 && 1000 * (int64_t)i < 90000;
        int expect = has_inc && !has_exc && in_time && i != 1;
        assert_int_equal(ret_filter_admits(&f, c, i, NULL), expect);
        admitted += (uint32_t)expect;
    }
    assert_true(admitted > 0 && admitted < n);
    /* Hidden ids are refused too. */
    ret_idset hidden;
    assert_int_equal(ret_idset_init(&hidden, 1, a), RP_OK);
    ret_idset_add(&hidden, 1005);
    assert_true(ret_filter_admits(&f, c, 5, NULL));
    assert_false(ret_filter_admits(&f, c, 5, &hidden));
    rp_arena_destroy(a);
    ret_catalog_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idset),
        cmocka_unit_test(test_catalog_lookup_and_postings),
        cmocka_unit_test(test_catalog_rejects_bad_input),
        cmocka_unit_test(test_compile_errors_name_the_field),
        cmocka_unit_test(test_admits_and_candidates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
