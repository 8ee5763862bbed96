/* Tests index/src/dataset.c through a real import of ml-latest-small: the counts, the
 * per-user order (time, ties in file order), lookups, titles, categories, tags, and
 * idx_dataset_open's errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>

#include "data_util.h"
#include "idx/dataset.h"
#include "idx/import.h"

#define E(expr)                                                                            \
    do {                                                                                   \
        int rc_ = (expr);                                                                  \
        if (rc_ != RP_OK) fail_msg("%s -> %d: %s", #expr, rc_, rp_error_text(&err));       \
    } while (0)

static idx_dataset *ml; /* imported once for the whole file */

static int setup(void **state)
{
    (void)state;
    td_make();
    rp_error err = {0};
    idx_import_opts o = {
        .ratings = td_ml("ratings.csv"),
        .items = td_ml("movies.csv"),
        .tags = td_ml("tags.csv"),
        .out = td_path("ml"),
        .ratings_header = -1,
        .items_header = -1,
    };
    idx_import_stats st;
    E(idx_import(&o, &st, &err));
    E(idx_dataset_open(td_path("ml"), &ml, &err));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    idx_dataset_close(ml);
    td_cleanup();
    return 0;
}

static void test_counts(void **state)
{
    (void)state;
    assert_int_equal(ml->n_users, 610);
    assert_int_equal(ml->n_items, 9742);
    assert_int_equal(ml->n_events, 100836);
    assert_int_equal(ml->user_off[ml->n_users], 100836);
    uint32_t in_cat = 0, rated = 0;
    uint8_t *seen = calloc(ml->n_items, 1);
    for (uint64_t e = 0; e < ml->n_events; e++) seen[ml->events[e].item] = 1;
    for (uint32_t i = 0; i < ml->n_items; i++) {
        in_cat += ml->item_in_catalogue[i];
        rated += seen[i];
    }
    free(seen);
    assert_int_equal(in_cat, 9742);
    assert_int_equal(rated, 9724);
    /* 19 genres; "(no genres listed)" means none */
    assert_int_equal(ml->n_categories, 19);
    assert_true(ml->n_tags > 1000);
    for (uint32_t u = 0; u < ml->n_users; u++) {
        assert_true(ml->user_off[u + 1] - ml->user_off[u] >= 20); /* MovieLens guarantee */
        if (u) assert_true(ml->user_ids[u] > ml->user_ids[u - 1]);
    }
    for (uint32_t i = 1; i < ml->n_items; i++) assert_true(ml->item_ids[i] > ml->item_ids[i - 1]);
    for (uint64_t e = 0; e < ml->n_events; e++) {
        assert_int_equal(ml->events[e].type, 5);
        assert_true(ml->events[e].value >= 0.5f && ml->events[e].value <= 5.0f);
    }
}

typedef struct line_ev {
    uint64_t user, item, line;
    int64_t ts;
} line_ev;

static int cmp_user_ts_line(const void *a, const void *b)
{
    const line_ev *x = a, *y = b;
    if (x->user != y->user) return x->user < y->user ? -1 : 1;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;
}

/* Each user's events are the file's events of that user ordered by timestamp, equal
 * timestamps in file order: read ratings.csv independently and compare every event. */
static void test_user_order_time_then_file(void **state)
{
    (void)state;
    FILE *f = fopen(td_ml("ratings.csv"), "r");
    assert_non_null(f);
    line_ev *ev = malloc(200000 * sizeof *ev);
    size_t n = 0;
    char line[256];
    uint64_t ln = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        if (ln == 1) continue;
        unsigned long long u, i;
        double r;
        long long ts;
        assert_int_equal(sscanf(line, "%llu,%llu,%lf,%lld", &u, &i, &r, &ts), 4);
        ev[n++] = (line_ev){u, i, ln, ts};
    }
    fclose(f);
    assert_int_equal(n, 100836);
    qsort(ev, n, sizeof *ev, cmp_user_ts_line);
    size_t ties = 0;
    for (size_t k = 0; k < n; k++) {
        const idx_event *got = &ml->events[k];
        uint32_t u;
        assert_true(idx_dataset_find_user(ml, ev[k].user, &u));
        assert_true(k >= ml->user_off[u] && k < ml->user_off[u + 1]);
        assert_int_equal(ml->item_ids[got->item], ev[k].item);
        assert_int_equal(got->ts, ev[k].ts);
        if (k && ev[k].user == ev[k - 1].user && ev[k].ts == ev[k - 1].ts) ties++;
    }
    /* the property is only tested if ties exist (MovieLens has many) */
    assert_true(ties > 1000);
    free(ev);
}

static void test_lookups_titles_categories(void **state)
{
    (void)state;
    uint32_t i, u;
    uint16_t c;
    assert_true(idx_dataset_find_user(ml, 1, &u));
    assert_int_equal(u, 0);
    assert_true(idx_dataset_find_user(ml, 610, &u));
    assert_int_equal(u, 609);
    assert_false(idx_dataset_find_user(ml, 0, &u));
    assert_false(idx_dataset_find_user(ml, 611, &u));

    assert_true(idx_dataset_find_item(ml, 1, &i));
    assert_int_equal(i, 0);
    assert_string_equal(ml->titles[i], "Toy Story (1995)");
    const char *want[] = {"Adventure", "Animation", "Children", "Comedy", "Fantasy"};
    assert_int_equal(ml->item_cat_off[i + 1] - ml->item_cat_off[i], 5);
    for (int k = 0; k < 5; k++) {
        assert_true(idx_dataset_find_category(ml, want[k], &c));
        assert_int_equal(ml->item_cats[ml->item_cat_off[i] + (uint32_t)k], c);
    }
    assert_true(idx_dataset_find_item(ml, 2, NULL));
    assert_false(idx_dataset_find_item(ml, 0, &i));
    assert_false(idx_dataset_find_item(ml, 1000000, &i));
    assert_true(idx_dataset_find_category(ml, "IMAX", &c));
    assert_false(idx_dataset_find_category(ml, "(no genres listed)", &c));
    assert_false(idx_dataset_find_category(ml, "imax", &c));

    /* RFC 4180: commas inside quotes, doubled quotes, UTF-8 */
    assert_true(idx_dataset_find_item(ml, 7789, &i));
    assert_string_equal(ml->titles[i], "11'09\"01 - September 11 (2002)");
    assert_true(idx_dataset_find_item(ml, 29, &i));
    assert_string_equal(ml->titles[i],
                        "City of Lost Children, The (Cité des enfants perdus, La) (1995)");
    /* an item with "(no genres listed)" has no categories */
    size_t none = 0;
    for (uint32_t k = 0; k < ml->n_items; k++)
        none += ml->item_cat_off[k + 1] == ml->item_cat_off[k];
    assert_int_equal(none, 34);
}

static void test_created_is_first_interaction(void **state)
{
    (void)state;
    int64_t *first = malloc(ml->n_items * sizeof *first);
    for (uint32_t i = 0; i < ml->n_items; i++) first[i] = INT64_MAX;
    for (uint64_t e = 0; e < ml->n_events; e++)
        if (ml->events[e].ts < first[ml->events[e].item])
            first[ml->events[e].item] = ml->events[e].ts;
    for (uint32_t i = 0; i < ml->n_items; i++)
        assert_int_equal(ml->item_created[i], first[i] == INT64_MAX ? 0 : first[i]);
    free(first);
}

static void test_tags(void **state)
{
    (void)state;
    uint32_t i;
    assert_true(idx_dataset_find_item(ml, 60756, &i));
    int funny = 0, quotable = 0;
    for (uint32_t k = ml->item_tag_off[i]; k < ml->item_tag_off[i + 1]; k++) {
        const char *t = ml->tag_names[ml->item_tags[k]];
        funny |= !strcmp(t, "funny");
        quotable |= !strcmp(t, "Highly quotable");
    }
    assert_true(funny && quotable);
    /* tags.csv line """artsy""" is the text "artsy" with its quotes */
    assert_true(idx_dataset_find_item(ml, 4552, &i));
    int artsy = 0;
    for (uint32_t k = ml->item_tag_off[i]; k < ml->item_tag_off[i + 1]; k++)
        artsy |= !strcmp(ml->tag_names[ml->item_tags[k]], "\"artsy\"");
    assert_true(artsy);
}

static void test_open_errors(void **state)
{
    (void)state;
    idx_dataset *ds = (idx_dataset *)1;
    rp_error err = {0};
    assert_int_equal(idx_dataset_open(td_path("nope"), &ds, &err), RP_ENOENT);
    assert_null(ds);
    assert_non_null(strstr(err.msg, "nope"));

    mkdir(td_path("empty"), 0755);
    assert_int_equal(idx_dataset_open(td_path("empty"), &ds, &err), RP_ENOENT);
    assert_non_null(strstr(err.msg, "data.mdb"));

    mkdir(td_path("junk"), 0755);
    char junk[8192];
    memset(junk, 'x', sizeof junk);
    td_write("junk/data.mdb", junk, sizeof junk);
    int rc = idx_dataset_open(td_path("junk"), &ds, &err);
    assert_true(rc == RP_ECORRUPT || rc == RP_ELMDB);
    assert_null(ds);
    assert_non_null(strstr(err.msg, "junk"));
    idx_dataset_close(NULL);
}

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    assert_true(a && b);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) assert_int_equal(fwrite(buf, 1, n, b), n);
    fclose(a);
    fclose(b);
}

/* A flipped byte anywhere in data.mdb is caught before LMDB reads it; a missing
 * SHA256SUMS is refused; the checksums match `sha256sum -c`'s format. */
static void test_corruption_detected(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_dataset *ds = NULL;
    assert_int_equal(idx_dataset_verify(td_path("ml"), &err), RP_OK);
    mkdir(td_path("copy"), 0755);
    char src[PATH_MAX], dst[PATH_MAX];
    snprintf(src, sizeof src, "%s/SHA256SUMS", td_path("ml"));
    snprintf(dst, sizeof dst, "%s/SHA256SUMS", td_path("copy"));
    copy_file(src, dst);
    snprintf(src, sizeof src, "%s/data.mdb", td_path("ml"));
    snprintf(dst, sizeof dst, "%s/data.mdb", td_path("copy"));
    long offsets[] = {0, 4096 + 17, 1000000, 3000000};
    for (size_t k = 0; k < sizeof offsets / sizeof offsets[0]; k++) {
        copy_file(src, dst);
        FILE *f = fopen(dst, "r+b");
        fseek(f, offsets[k], SEEK_SET);
        int c = fgetc(f);
        fseek(f, offsets[k], SEEK_SET);
        fputc(c ^ 0x40, f);
        fclose(f);
        assert_int_equal(idx_dataset_open(td_path("copy"), &ds, &err), RP_ECORRUPT);
        assert_null(ds);
        assert_non_null(strstr(err.msg, "data.mdb: checksum mismatch"));
    }
    copy_file(src, dst);
    E(idx_dataset_open(td_path("copy"), &ds, &err));
    idx_dataset_close(ds);
    snprintf(dst, sizeof dst, "%s/SHA256SUMS", td_path("copy"));
    unlink(dst);
    assert_int_equal(idx_dataset_open(td_path("copy"), &ds, &err), RP_ECORRUPT);
    assert_non_null(strstr(err.msg, "no SHA256SUMS"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_user_order_time_then_file),
        cmocka_unit_test(test_lookups_titles_categories),
        cmocka_unit_test(test_created_is_first_interaction),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_corruption_detected),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
