/*
 * Tests retrieval/src/service.c and request.c on real bundles (idx_builder: LMDB item
 * store + FAISS Flat index) without RPC: the fold-in through the service equals
 * ret_als_fold_in over the full item factors (the service solves against a compact
 * copy of the history's rows), the bundle's reg/alpha are read from its manifest,
 * request limits name their field, and a request's pinned state outlives a reload.
 * Includes the .c to reach the statics (STYLE.md: tests may).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../../retrieval/src/service.c"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { N = 500, D = 8 };

static char dir[128];
static float Y[N * D];

static void build(const char *name, const char *version, uint64_t seed)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    rp_error err = {0};
    idx_builder *b;
    if (idx_builder_create(path, D, IDX_METRIC_IP, &b, &err)) fail_msg("%s", err.msg);
    assert_int_equal(idx_builder_set_version(b, version, &err), RP_OK);
    const char *cats[5] = {"c0", "c1", "c2", "c3", "c4"};
    for (uint32_t i = 0; i < N; i++) {
        for (int j = 0; j < D; j++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            Y[i * D + j] = (float)((double)(seed >> 11) / 9007199254740992.0 - 0.5);
        }
        idx_item it = {.id = 100 + i, .title = "t", .categories = &cats[i % 5], .n_categories = 1,
                       .created = 1000 + i, .popularity = N - i};
        if (idx_builder_add_item(b, &it, Y + i * D, &err)) fail_msg("%s", err.msg);
    }
    assert_int_equal(idx_builder_set_training_json(b, "{\"algorithm\":\"implicit-als\",\"reg\":2.0,\"alpha\":3.0}", &err),
                     RP_OK);
    idx_index_opts o = {.factory = "Flat"};
    assert_int_equal(idx_builder_set_index(b, &o, &err), RP_OK);
    if (idx_builder_commit(b, 0, NULL, &err)) fail_msg("%s", err.msg);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/recpipe-test-ret-service-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    build("b2", "two", 7);
    build("b1", "one", 3); /* Y holds b1's vectors */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_fold_in_matches_full_solve(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/b1", dir);
    ret_service_opts o = {.bundle_path = path};
    ret_service *s;
    rp_error err = {0};
    if (ret_service_create(&o, &s, &err)) fail_msg("%s", err.msg);
    ret_state *st = pin(s);
    assert_float_equal(st->bundle->reg, 2.0, 1e-6);
    assert_float_equal(st->bundle->alpha, 3.0, 1e-6);
    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);

    /* History: items 5, 17, 17 (twice), 230, and an unknown id. */
    uint64_t hist_ids[] = {105, 117, 117, 330, 99999};
    Recpipe__V1__Event ev[5], *evp[5];
    for (int j = 0; j < 5; j++) {
        recpipe__v1__event__init(&ev[j]);
        ev[j].item_id = hist_ids[j];
        ev[j].type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_VIEW;
        evp[j] = &ev[j];
    }
    Recpipe__V1__RetrieveRequest req = RECPIPE__V1__RETRIEVE_REQUEST__INIT;
    req.history = evp;
    req.n_history = 5;
    req.k = 10;
    ret_query q;
    uint32_t unknown;
    assert_int_equal(ret__build_query(st->bundle, st->side, &req, 2000, a, &q, &unknown, &err), RP_OK);
    assert_int_equal(unknown, 1);
    assert_non_null(q.vector);
    assert_int_equal(q.n_sources, 1);
    assert_int_equal(q.sources[0].source, RET_SRC_ANN);

    ret_als_gram *g;
    assert_int_equal(ret_als_gram_create(Y, N, D, 2.0f, &g, &err), RP_OK);
    uint32_t items[] = {5, 17, 17, 230};
    float want[D];
    assert_int_equal(ret_als_fold_in(Y, N, g, items, NULL, 4, 3.0f, NULL, want, &err), RP_OK);
    for (int j = 0; j < D; j++) assert_float_equal(q.vector[j], want[j], 1e-4);
    ret_als_gram_free(g);

    /* Recency weighting changes the vector; a half-life is validated. */
    ev[0].timestamp = 10;
    req.recency_half_life_days = 1.0f;
    assert_int_equal(ret__build_query(st->bundle, st->side, &req, 10 + 5 * 86400, a, &q, &unknown, &err), RP_OK);
    int differs = 0;
    for (int j = 0; j < D; j++) differs |= fabsf(q.vector[j] - want[j]) > 1e-4f;
    assert_true(differs);
    req.recency_half_life_days = NAN;
    assert_int_equal(ret__build_query(st->bundle, st->side, &req, 2000, a, &q, &unknown, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "recency_half_life_days"));
    req.recency_half_life_days = 0;

    /* Limits name their field. */
    req.k = 0;
    assert_int_equal(ret__build_query(st->bundle, st->side, &req, 2000, a, &q, &unknown, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "k: 0"));
    req.k = 5;
    uint64_t seeds[1001] = {0};
    req.seed_items = seeds;
    req.n_seed_items = 1001;
    assert_int_equal(ret__build_query(st->bundle, st->side, &req, 2000, a, &q, &unknown, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "seed_items"));
    req.n_seed_items = 0;
    Recpipe__V1__SourceQuota sq[2] = {RECPIPE__V1__SOURCE_QUOTA__INIT, RECPIPE__V1__SOURCE_QUOTA__INIT};
    Recpipe__V1__SourceQuota *sqp[2] = {&sq[0], &sq[1]};
    sq[0].source = sq[1].source = RECPIPE__V1__SOURCE__SOURCE_FRESH;
    req.sources = sqp;
    req.n_sources = 2;
    assert_int_equal(ret__build_query(st->bundle, st->side, &req, 2000, a, &q, &unknown, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "sources[1].source"));

    state_unref(st);
    rp_arena_destroy(a);
    ret_service_destroy(s);
}

static void test_pinned_state_outlives_reload(void **state)
{
    (void)state;
    char p1[256], p2[256];
    snprintf(p1, sizeof p1, "%s/b1", dir);
    snprintf(p2, sizeof p2, "%s/b2", dir);
    ret_service_opts o = {.bundle_path = p1};
    ret_service *s;
    rp_error err = {0};
    if (ret_service_create(&o, &s, &err)) fail_msg("%s", err.msg);
    ret_state *old = pin(s); /* a request in flight */
    assert_int_equal(atomic_load(&old->refs), 2);
    char prev[64], now[64];
    assert_int_equal(ret_service_reload(s, p2, prev, now, NULL, &err), RP_OK);
    assert_string_equal(prev, "one");
    assert_string_equal(now, "two");
    /* The service dropped its reference; the request still holds the old bundle. */
    assert_int_equal(atomic_load(&old->refs), 1);
    assert_string_equal(old->bundle->version, "one");
    uint32_t d;
    assert_true(ret_catalog_find(old->bundle->cat, 150, &d));
    char v[64];
    ret_service_version(s, v, sizeof v);
    assert_string_equal(v, "two");
    state_unref(old); /* the last request ends: the old bundle is freed (ASan checks) */

    /* A missing bundle is refused and the current one stays. */
    snprintf(p2, sizeof p2, "%s/nope", dir);
    assert_int_not_equal(ret_service_reload(s, p2, prev, now, NULL, &err), RP_OK);
    ret_service_version(s, v, sizeof v);
    assert_string_equal(v, "two");
    /* Reload with no path re-reads the start path. */
    assert_int_equal(ret_service_reload(s, NULL, prev, now, NULL, &err), RP_OK);
    assert_string_equal(now, "one");
    ret_service_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_in_matches_full_solve),
        cmocka_unit_test(test_pinned_state_outlives_reload),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
