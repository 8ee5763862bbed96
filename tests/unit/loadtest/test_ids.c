/* Tests loadtest/src/ids.c: ids drawn from a real dataset, most active users first. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idx/bundle.h"
#include "idx/dataset.h"
#include "idx/synth.h"
#include "lt/ids.h"

static void test_dataset_ids(void **state)
{
    (void)state;
    char dir[] = "/tmp/lt_ids_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char data[128];
    snprintf(data, sizeof data, "%s/data", dir);
    idx_synth_params p = {.n_items = 300, .n_users = 80, .dim = 4, .seed = 3, .out = data};
    rp_error err = {0};
    int rc = idx_synth(&p, NULL, &err);
    if (rc) fail_msg("idx_synth: %s", rp_error_text(&err));

    lt_id_source src;
    rc = lt_ids_load(NULL, data, &src, &err);
    if (rc) fail_msg("lt_ids_load: %s", rp_error_text(&err));
    idx_dataset *ds;
    assert_int_equal(idx_dataset_open(data, &ds, &err), RP_OK);
    assert_int_equal(src.n_users, ds->n_users);
    assert_int_equal(src.n_items, ds->n_items);
    /* Every id is the dataset's, and activity never increases down the list. */
    uint64_t prev = UINT64_MAX;
    for (uint64_t i = 0; i < src.n_users; i++) {
        uint32_t u;
        assert_true(idx_dataset_find_user(ds, src.users[i], &u));
        uint64_t events = ds->user_off[u + 1] - ds->user_off[u];
        assert_true(events <= prev);
        prev = events;
    }
    for (uint64_t i = 0; i < src.n_items; i++) {
        uint32_t it;
        assert_true(idx_dataset_find_item(ds, src.items[i], &it));
    }

    /* Applied to a workload, Zipf rank 1 is the most active user. */
    lt_workload_config wc = {.ids = {.n_users = 5, .n_items = 5}, .zipf_s = 3, .count = 10,
                             .history = 1, .candidates = 1};
    wc.mix[LT_RPC_RECOMMEND] = 1;
    lt_ids_apply(&src, &wc.ids);
    assert_ptr_equal(wc.ids.user_ids, src.users);
    lt_workload *w;
    assert_int_equal(lt_workload_create(&wc, &w, &err), RP_OK);
    lt_rng r;
    lt_rng_seed(&r, 1);
    int top = 0;
    for (int i = 0; i < 1000; i++) top += lt_workload_user(w, &r) == src.users[0];
    assert_true(top > 700); /* 1/zeta(3) = 0.83 */
    lt_workload_destroy(w);
    idx_dataset_close(ds);
    lt_ids_free(&src);

    /* A missing dataset is named. */
    assert_int_not_equal(lt_ids_load(NULL, "/nonexistent/lt", &src, &err), RP_OK);
    assert_non_null(strstr(err.msg, "/nonexistent/lt"));
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* A bundle's items come most popular first. */
static void test_bundle_ids(void **state)
{
    (void)state;
    char dir[] = "/tmp/lt_idb_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/bundle", dir);
    rp_error err = {0};
    idx_builder *b;
    assert_int_equal(idx_builder_create(path, 4, IDX_METRIC_IP, &b, &err), RP_OK);
    for (uint64_t id = 1; id <= 40; id++) {
        /* Popularity peaks at id 17, then 16, then 18, ... */
        uint64_t dist = id > 17 ? id - 17 : 17 - id;
        idx_item it = {.id = id * 10, .title = "t", .popularity = 1000 - dist * 10 - (id > 17)};
        float v[4] = {(float)id, 1, 0, 0};
        int rc = idx_builder_add_item(b, &it, v, &err);
        if (rc) fail_msg("add_item: %s", rp_error_text(&err));
    }
    int rc = idx_builder_commit(b, 0, NULL, &err);
    if (rc) fail_msg("commit: %s", rp_error_text(&err));

    lt_id_source src;
    rc = lt_ids_load(path, NULL, &src, &err);
    if (rc) fail_msg("lt_ids_load: %s", rp_error_text(&err));
    assert_null(src.users);
    assert_int_equal(src.n_items, 40);
    assert_int_equal(src.items[0], 170);
    assert_int_equal(src.items[1], 160);
    assert_int_equal(src.items[2], 180);
    lt_ids_free(&src);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_dataset_ids),
                                       cmocka_unit_test(test_bundle_ids)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
