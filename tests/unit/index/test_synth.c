/* Tests index/src/synth.c at small sizes: determinism for a seed, the files written, and
 * the documented properties (popularity skew, users following clusters, categories
 * following clusters, creation before interaction, unit vectors). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "data_util.h"
#include "idx/dataset.h"
#include "idx/fvecs.h"
#include "idx/synth.h"

#define E(expr)                                                                            \
    do {                                                                                   \
        int rc_ = (expr);                                                                  \
        if (rc_ != RP_OK) fail_msg("%s -> %d: %s", #expr, rc_, rp_error_text(&err));       \
    } while (0)

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

static idx_synth_params params(const char *name, uint64_t seed)
{
    return (idx_synth_params){.n_items = 3000, .n_users = 600, .dim = 16, .seed = seed,
                              .n_categories = 10, .n_clusters = 10,
                              .out = td_path(name)};
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*n ? *n : 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static int same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static char pbuf[4][PATH_MAX];
static const char *in_dir(int k, const char *dir, const char *file)
{
    snprintf(pbuf[k], PATH_MAX, "%s/%s", td_path(dir), file);
    return pbuf[k];
}

static void test_deterministic_for_a_seed(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_synth_params a = params("a", 7), b = params("b", 7), c = params("c", 8);
    E(idx_synth(&a, NULL, &err));
    E(idx_synth(&b, NULL, &err));
    E(idx_synth(&c, NULL, &err));
    assert_true(same_file(in_dir(0, "a", "data.mdb"), in_dir(1, "b", "data.mdb")));
    assert_true(same_file(in_dir(0, "a", IDX_SYNTH_VECTORS_FILE),
                          in_dir(1, "b", IDX_SYNTH_VECTORS_FILE)));
    assert_false(same_file(in_dir(0, "a", IDX_SYNTH_VECTORS_FILE),
                           in_dir(1, "c", IDX_SYNTH_VECTORS_FILE)));
    /* exactly the dataset, the vectors and their checksums, nothing left beside them */
    assert_int_equal(td_count_entries(td_path("a")), 3);
    assert_int_equal(idx_dataset_verify(td_path("a"), &err), RP_OK);

    /* one flipped byte in the vectors: verify names the file (open reads only data.mdb) */
    FILE *f = fopen(in_dir(0, "a", IDX_SYNTH_VECTORS_FILE), "r+b");
    assert_non_null(f);
    fseek(f, 1000, SEEK_SET);
    int byte = fgetc(f);
    fseek(f, 1000, SEEK_SET);
    fputc(byte ^ 0x01, f);
    fclose(f);
    assert_int_equal(idx_dataset_verify(td_path("a"), &err), RP_ECORRUPT);
    assert_non_null(strstr(err.msg, IDX_SYNTH_VECTORS_FILE ": checksum mismatch"));
    E(idx_synth(&a, NULL, &err) == RP_EEXIST ? RP_OK : -1);
    assert_non_null(strstr(err.msg, "already exists"));
}

static double dot(const float *x, const float *y, uint32_t d)
{
    double s = 0;
    for (uint32_t k = 0; k < d; k++) s += (double)x[k] * y[k];
    return s;
}

static void test_documented_properties(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_synth_params p = params("p", 11);
    idx_synth_stats st;
    E(idx_synth(&p, &st, &err));
    idx_dataset *ds;
    E(idx_dataset_open(td_path("p"), &ds, &err));
    float *v;
    size_t n;
    uint32_t dim;
    E(idx_fvecs_read(in_dir(0, "p", IDX_SYNTH_VECTORS_FILE), &v, &n, &dim, &err));
    assert_int_equal(n, 3000);
    assert_int_equal(dim, 16);
    assert_int_equal(ds->n_items, 3000);
    assert_int_equal(ds->n_users, 600);
    assert_int_equal(ds->n_categories, 10);
    assert_int_equal(ds->n_events, st.events);
    assert_string_equal(ds->category_names[3], "category-03");

    /* unit vectors; ids 1..N */
    for (size_t i = 0; i < n; i++) {
        assert_true(fabs(dot(v + i * dim, v + i * dim, dim) - 1.0) < 1e-4);
        assert_int_equal(ds->item_ids[i], i + 1);
    }

    /* popularity skew: the top 1% of items take far more than 1% of events, the bottom
     * half far less than half */
    uint64_t *cnt = calloc(n, sizeof *cnt);
    for (uint64_t e = 0; e < ds->n_events; e++) cnt[ds->events[e].item]++;
    uint64_t *sorted = malloc(n * sizeof *sorted);
    memcpy(sorted, cnt, n * sizeof *sorted);
    for (size_t i = 1; i < n; i++) /* insertion sort, descending */
        for (size_t j = i; j > 0 && sorted[j] > sorted[j - 1]; j--) {
            uint64_t t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    uint64_t top = 0, bottom = 0;
    for (size_t i = 0; i < n / 100; i++) top += sorted[i];
    for (size_t i = n / 2; i < n; i++) bottom += sorted[i];
    double top_share = (double)top / (double)ds->n_events;
    assert_true(top_share > 0.15);
    assert_true((double)bottom / (double)ds->n_events < 0.2);
    assert_true(fabs(top_share - st.top1pct_share) < 0.02);

    /* users follow clusters: two items of one user are much closer than two random items */
    double within = 0, random = 0;
    size_t nw = 0, nr = 0;
    for (uint32_t u = 0; u < ds->n_users; u++) {
        uint64_t a = ds->user_off[u], b = ds->user_off[u + 1];
        assert_true(b - a >= 5);
        for (uint64_t e = a + 1; e < b; e++) {
            within += dot(v + (size_t)ds->events[e].item * dim,
                          v + (size_t)ds->events[e - 1].item * dim, dim);
            nw++;
            /* the control: the same event against another user's event */
            uint32_t o = (u + 1) % ds->n_users;
            uint64_t oe = ds->user_off[o] + (e - a) % (ds->user_off[o + 1] - ds->user_off[o]);
            random += dot(v + (size_t)ds->events[e].item * dim,
                          v + (size_t)ds->events[oe].item * dim, dim);
            nr++;
        }
        /* sorted by time, every event after its item's creation, no repeats */
        for (uint64_t e = a; e < b; e++) {
            if (e > a) assert_true(ds->events[e].ts >= ds->events[e - 1].ts);
            assert_true(ds->events[e].ts > ds->item_created[ds->events[e].item]);
            assert_int_equal(ds->events[e].type, 1);
            for (uint64_t f = a; f < e; f++) assert_int_not_equal(ds->events[f].item,
                                                                  ds->events[e].item);
        }
    }
    within /= (double)nw;
    random /= (double)nr;
    print_message("mean cosine: consecutive events %.3f, across users %.3f\n", within, random);
    assert_true(within > random + 0.2);

    /* categories follow clusters: items sharing their first category are close */
    double same = 0, diff = 0;
    size_t ns = 0, nd = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        for (size_t j = i + 1; j < n && j < i + 40; j++) {
            uint16_t ci = ds->item_cats[ds->item_cat_off[i]];
            uint16_t cj = ds->item_cats[ds->item_cat_off[j]];
            double d = dot(v + i * dim, v + j * dim, dim);
            if (ci == cj) {
                same += d;
                ns++;
            } else {
                diff += d;
                nd++;
            }
        }
    }
    assert_true(ns > 100 && nd > 100);
    assert_true(same / (double)ns > diff / (double)nd + 0.4);

    free(cnt);
    free(sorted);
    free(v);
    idx_dataset_close(ds);
}

/* Without cluster preferences a user's items are no closer than two users' items: the
 * lift measured above comes from the preferences. */
static void test_no_preference_control(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_synth_params p = params("nopref", 11);
    p.pref_share = -1;
    E(idx_synth(&p, NULL, &err));
    idx_dataset *ds;
    E(idx_dataset_open(td_path("nopref"), &ds, &err));
    float *v;
    size_t n;
    uint32_t dim;
    E(idx_fvecs_read(in_dir(0, "nopref", IDX_SYNTH_VECTORS_FILE), &v, &n, &dim, &err));
    double within = 0, across = 0;
    size_t cnt = 0;
    for (uint32_t u = 0; u < ds->n_users; u++) {
        uint64_t a = ds->user_off[u], b = ds->user_off[u + 1];
        uint32_t o = (u + 1) % ds->n_users;
        for (uint64_t e = a + 1; e < b; e++, cnt++) {
            uint64_t oe = ds->user_off[o] + (e - a) % (ds->user_off[o + 1] - ds->user_off[o]);
            within += dot(v + (size_t)ds->events[e].item * dim,
                          v + (size_t)ds->events[e - 1].item * dim, dim);
            across += dot(v + (size_t)ds->events[e].item * dim,
                          v + (size_t)ds->events[oe].item * dim, dim);
        }
    }
    within /= (double)cnt;
    across /= (double)cnt;
    print_message("no preference: consecutive %.3f, across users %.3f\n", within, across);
    assert_true(fabs(within - across) < 0.05);
    free(v);
    idx_dataset_close(ds);
}

static void test_bad_parameters(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_synth_params p = params("bad", 1);
    p.n_items = 0;
    assert_int_equal(idx_synth(&p, NULL, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "items"));
    p = params("bad", 1);
    p.dim = 0;
    assert_int_equal(idx_synth(&p, NULL, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "dim"));
    p = params("bad", 1);
    p.events_per_user = 2;
    assert_int_equal(idx_synth(&p, NULL, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "events-per-user"));
    p = params("bad", 1);
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s/missing/dir", td_root);
    p.out = out;
    assert_int_equal(idx_synth(&p, NULL, &err), RP_EIO);
    assert_non_null(strstr(err.msg, "missing"));
    assert_false(td_exists(td_path("bad")));

    /* an interrupted run leaves nothing */
    volatile sig_atomic_t stop = 1;
    p = params("stopped", 1);
    p.cancel = &stop;
    assert_int_equal(idx_synth(&p, NULL, &err), RP_ECANCELED);
    assert_false(td_exists(td_path("stopped")));

    /* tiny catalogues still work: one item, more clusters than items */
    p = params("tiny", 1);
    p.n_items = 1;
    p.n_users = 3;
    E(idx_synth(&p, NULL, &err));
    idx_dataset *ds;
    E(idx_dataset_open(td_path("tiny"), &ds, &err));
    assert_int_equal(ds->n_events, 3);
    idx_dataset_close(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic_for_a_seed),
        cmocka_unit_test(test_documented_properties),
        cmocka_unit_test(test_no_preference_control),
        cmocka_unit_test(test_bad_parameters),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
