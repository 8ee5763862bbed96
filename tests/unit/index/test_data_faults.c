/* Fault injection for index/src/{csv,dataset,import,synth}.c: the Nth allocation made by
 * recpipe's code fails, for every N until a run completes without a failure. Each run
 * must fail cleanly (an error code with a message, nothing left at the output path)
 * and, under -DRECPIPE_SANITIZE=address, leak nothing. malloc, calloc and realloc are
 * wrapped at link time (-Wl,--wrap), so only calls from recpipe's objects fail. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "data_util.h"
#include "idx/dataset.h"
#include "idx/import.h"
#include "idx/synth.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);

static long fail_at = -1, calls;

static int should_fail(void)
{
    return fail_at >= 0 && ++calls == fail_at;
}

void *__wrap_malloc(size_t n)
{
    return should_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t m)
{
    return should_fail() ? NULL : __real_calloc(n, m);
}

void *__wrap_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : __real_realloc(p, n);
}

static int setup(void **state)
{
    (void)state;
    td_make();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    td_cleanup();
    return 0;
}

static void test_import_every_allocation_fails_cleanly(void **state)
{
    (void)state;
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s", td_path("imp"));
    long n;
    for (n = 1; n < 100000; n++) {
        idx_import_opts o = {.ratings = td_fixture("ml100k/u.data"),
                             .items = td_fixture("ml100k/u.item"),
                             .tags = td_fixture("bad/ratings_bom.csv"), /* tags from items 1, 2 */
                             .out = out,
                             .ratings_header = -1,
                             .items_format = IDX_ITEMS_ML100K,
                             .items_encoding = "latin1"};
        rp_error err = {0};
        calls = 0;
        fail_at = n;
        int rc = idx_import(&o, NULL, &err);
        fail_at = -1;
        if (calls < n) { /* nothing failed: the run is complete */
            assert_int_equal(rc, RP_OK);
            break;
        }
        if (rc == RP_OK) fail_msg("allocation %ld failed but the import succeeded", n);
        if (err.msg[0] == '\0') fail_msg("allocation %ld: error %d without a message", n, rc);
        assert_false(td_exists(out));
    }
    print_message("import: %ld allocation points tried\n", n - 1);
    assert_true(n > 20);
}

static void test_open_every_allocation_fails_cleanly(void **state)
{
    (void)state;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", td_path("open"));
    rp_error err = {0};
    idx_import_opts o = {.ratings = td_ml("ratings.csv"), .items = td_ml("movies.csv"),
                         .tags = td_ml("tags.csv"), .out = dir, .ratings_header = -1,
                         .items_header = -1};
    if (idx_import(&o, NULL, &err)) fail_msg("import: %s", err.msg);
    long n;
    for (n = 1; n < 1000; n++) {
        idx_dataset *ds = (idx_dataset *)1;
        calls = 0;
        fail_at = n;
        int rc = idx_dataset_open(dir, &ds, &err);
        fail_at = -1;
        if (calls < n) {
            assert_int_equal(rc, RP_OK);
            assert_int_equal(ds->n_events, 100836);
            idx_dataset_close(ds);
            break;
        }
        if (rc == RP_OK) fail_msg("allocation %ld failed but open succeeded", n);
        assert_null(ds);
        assert_int_equal(rc, RP_ENOMEM);
        assert_true(err.msg[0] != '\0');
    }
    assert_true(n > 10);
}

static void test_synth_every_allocation_fails_cleanly(void **state)
{
    (void)state;
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s", td_path("syn"));
    long n;
    for (n = 1; n < 10000; n++) {
        idx_synth_params p = {.n_items = 300, .n_users = 40, .dim = 8, .seed = 3,
                              .out = out};
        rp_error err = {0};
        calls = 0;
        fail_at = n;
        int rc = idx_synth(&p, NULL, &err);
        fail_at = -1;
        if (calls < n) {
            assert_int_equal(rc, RP_OK);
            break;
        }
        if (rc == RP_OK) fail_msg("allocation %ld failed but synth succeeded", n);
        assert_false(td_exists(out));
    }
    assert_true(n > 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_every_allocation_fails_cleanly),
        cmocka_unit_test(test_open_every_allocation_fails_cleanly),
        cmocka_unit_test(test_synth_every_allocation_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
