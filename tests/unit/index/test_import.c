/* Tests index/src/import.c and `recpipe import` (the real binary, as a child process):
 * MovieLens 100k's format through flags (tab data, Latin-1 u.item), RFC 4180 titles,
 * header and column variants, duplicates, items missing from the catalogue, and every
 * bad-input case: FILE:LINE: reason, exit code 3, no output directory left behind. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <sys/wait.h>

#include "data_util.h"
#include "idx/dataset.h"
#include "idx/import.h"

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

/* ---- running the binary ---- */

static char out_text[1 << 16], err_text[1 << 16];

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

/* Runs `recpipe import ARGS...` (NULL-terminated); returns the exit code, with stdout and
 * stderr in out_text / err_text. */
static int run_import(const char *first, ...)
{
    const char *bin = getenv("RECPIPE_BIN");
    assert_non_null(bin);
    char *argv[64];
    int argc = 0;
    argv[argc++] = (char *)bin;
    argv[argc++] = "import";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    char o[PATH_MAX], e[PATH_MAX];
    snprintf(o, sizeof o, "%s/.stdout", td_root);
    snprintf(e, sizeof e, "%s/.stderr", td_root);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fo = open(o, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(e, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fo, 1);
        dup2(fe, 2);
        execv(bin, argv);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    slurp(o, out_text, sizeof out_text);
    slurp(e, err_text, sizeof err_text);
    unlink(o);
    unlink(e);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* ---- MovieLens 100k through flags ---- */

static void test_ml100k_fixture(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_import_opts o = {
        .ratings = td_fixture("ml100k/u.data"),
        .items = td_fixture("ml100k/u.item"),
        .out = td_path("ml100k"),
        .ratings_header = -1,
        .items_format = IDX_ITEMS_ML100K,
        .items_encoding = "latin1",
    };
    idx_import_stats st;
    E(idx_import(&o, &st, &err));
    assert_int_equal(st.users, 3);
    assert_int_equal(st.items, 7); /* 6 listed + item 9, rated but not listed */
    assert_int_equal(st.catalogue_items, 6);
    assert_int_equal(st.events, 6);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.not_in_catalogue_events, 1);
    assert_int_equal(st.not_in_catalogue_items, 1);
    assert_int_equal(st.skipped, 0);

    idx_dataset *ds;
    E(idx_dataset_open(td_path("ml100k"), &ds, &err));
    uint32_t i, u;
    uint16_t c;
    /* Latin-1 → UTF-8 */
    assert_true(idx_dataset_find_item(ds, 4, &i));
    assert_string_equal(ds->titles[i], "Caf\xc3\xa9 au lait (1993)");
    assert_true(idx_dataset_find_item(ds, 5, &i));
    assert_string_equal(ds->titles[i], "Mis\xc3\xa9rables, Les (1995)");
    /* the 19 genres in u.item's order, flags mapped to names */
    assert_int_equal(ds->n_categories, 19);
    assert_string_equal(ds->category_names[0], "unknown");
    assert_string_equal(ds->category_names[4], "Children's");
    assert_string_equal(ds->category_names[18], "Western");
    assert_true(idx_dataset_find_item(ds, 1, &i));
    assert_int_equal(ds->item_cat_off[i + 1] - ds->item_cat_off[i], 3);
    const char *toy[] = {"Animation", "Children's", "Comedy"};
    for (int k = 0; k < 3; k++) {
        assert_true(idx_dataset_find_category(ds, toy[k], &c));
        assert_int_equal(ds->item_cats[ds->item_cat_off[i] + (uint32_t)k], c);
    }
    assert_true(idx_dataset_find_item(ds, 267, &i));
    assert_string_equal(ds->titles[i], "unknown");
    assert_int_equal(ds->item_cats[ds->item_cat_off[i]], 0);
    /* item 9 is kept, marked as not in the catalogue */
    assert_true(idx_dataset_find_item(ds, 9, &i));
    assert_int_equal(ds->item_in_catalogue[i], 0);
    assert_string_equal(ds->titles[i], "");
    /* user 7: by time, the tie (items 1 and 4 at 881250949) in file order, and the
     * repeated (7, 1) merged into its later occurrence (rating 4 at 881260000) */
    assert_true(idx_dataset_find_user(ds, 7, &u));
    assert_int_equal(ds->user_off[u + 1] - ds->user_off[u], 3);
    const idx_event *ev = ds->events + ds->user_off[u];
    assert_int_equal(ds->item_ids[ev[0].item], 2);
    assert_int_equal(ev[0].ts, 881250000);
    assert_int_equal(ds->item_ids[ev[1].item], 4);
    assert_int_equal(ds->item_ids[ev[2].item], 1);
    assert_int_equal(ev[2].ts, 881260000);
    assert_true(ev[2].value == 4.0f);
    assert_int_equal(ev[2].type, 5);
    /* created time: first interaction over all occurrences, including merged ones */
    assert_true(idx_dataset_find_item(ds, 1, &i));
    assert_int_equal(ds->item_created[i], 881250949);
    assert_true(idx_dataset_find_item(ds, 267, &i));
    assert_int_equal(ds->item_created[i], 0);
    idx_dataset_close(ds);
}

static void test_ml100k_cli_reports_missing_items(void **state)
{
    (void)state;
    int rc = run_import("--ratings", td_fixture("ml100k/u.data"), "--items",
                        td_fixture("ml100k/u.item"), "--items-format", "ml100k", "--out",
                        td_path("cli100k"), NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(err_text, "u.data:7: item 9 is not in the catalogue"));
    assert_non_null(strstr(out_text, "users                    3"));
    assert_non_null(strstr(out_text, "events                   6"));
    assert_non_null(strstr(out_text, "duplicates merged        1"));
    assert_non_null(strstr(out_text, "items not in catalogue   1"));
    idx_dataset *ds;
    rp_error err = {0};
    E(idx_dataset_open(td_path("cli100k"), &ds, &err));
    uint32_t i;
    assert_true(idx_dataset_find_item(ds, 4, &i));
    assert_string_equal(ds->titles[i], "Caf\xc3\xa9 au lait (1993)"); /* latin1 by default */
    idx_dataset_close(ds);
}

/* ---- CSV variants ---- */

static void test_rfc4180_titles_round_trip(void **state)
{
    (void)state;
    rp_error err = {0};
    idx_import_opts o = {.ratings = td_fixture("ratings_small.csv"),
                         .items = td_fixture("movies_small.csv"),
                         .out = td_path("rfc"),
                         .ratings_header = -1,
                         .items_header = -1};
    E(idx_import(&o, NULL, &err));
    idx_dataset *ds;
    E(idx_dataset_open(td_path("rfc"), &ds, &err));
    uint32_t i;
    assert_true(idx_dataset_find_item(ds, 2, &i));
    assert_string_equal(ds->titles[i], "Hello, \"World\" (2000)");
    assert_true(idx_dataset_find_item(ds, 3, &i));
    assert_string_equal(ds->titles[i], "Two\nLines (2001)");
    assert_int_equal(ds->item_cat_off[i + 1] - ds->item_cat_off[i], 2);
    idx_dataset_close(ds);
}

static void test_tab_crlf_named_columns_no_rating(void **state)
{
    (void)state;
    rp_error err = {0};
    /* columns named in another order; tab; CRLF; no rating, no timestamp */
    const char *ratings = td_writes("r.tsv", "item_id\tuser_id\r\n30\t2\r\n10\t1\r\n20\t1\r\n"
                                             "10\t2\r\n");
    char items[PATH_MAX]; /* td_path's buffers are reused: keep a copy */
    snprintf(items, sizeof items, "%s", td_writes("i.csv", "10,Ten,A|B\n20,Twenty,B\n30,Thirty,\n"));
    idx_import_opts o = {.ratings = ratings, .items = items, .out = td_path("tab"),
                         .ratings_header = -1, .items_header = -1};
    idx_import_stats st;
    E(idx_import(&o, &st, &err));
    assert_int_equal(st.users, 2);
    assert_int_equal(st.events, 4);
    idx_dataset *ds;
    E(idx_dataset_open(td_path("tab"), &ds, &err));
    uint32_t u;
    assert_true(idx_dataset_find_user(ds, 1, &u));
    const idx_event *ev = ds->events + ds->user_off[u];
    /* without timestamps the order is the file's */
    assert_int_equal(ds->item_ids[ev[0].item], 10);
    assert_int_equal(ds->item_ids[ev[1].item], 20);
    assert_int_equal(ev[0].type, 1); /* EVENT_TYPE_VIEW */
    assert_true(ev[0].value == 1.0f);
    assert_int_equal(ev[0].ts, 0);
    assert_true(idx_dataset_find_user(ds, 2, &u));
    ev = ds->events + ds->user_off[u];
    assert_int_equal(ds->item_ids[ev[0].item], 30);
    assert_int_equal(ds->item_ids[ev[1].item], 10);
    idx_dataset_close(ds);

    /* no header at all, comma, explicit --ratings-header no */
    ratings = td_writes("r2.csv", "1,10,5\n1,20,3\n");
    o = (idx_import_opts){.ratings = ratings, .items = items, .out = td_path("nohdr"),
                          .ratings_header = 0, .items_header = -1};
    E(idx_import(&o, &st, &err));
    assert_int_equal(st.events, 2);

    /* a header naming user and item among other columns: the others are ignored */
    ratings = td_writes("r3.csv", "ts,movieId,comment,userId\n9,10,\"nice, really\",4\n"
                                  "8,20,meh,4\n");
    o = (idx_import_opts){.ratings = ratings, .items = items, .out = td_path("named"),
                          .ratings_header = -1, .items_header = -1};
    E(idx_import(&o, &st, &err));
    idx_dataset *nd;
    E(idx_dataset_open(td_path("named"), &nd, &err));
    assert_int_equal(nd->n_users, 1);
    assert_int_equal(nd->user_ids[0], 4);
    assert_int_equal(nd->item_ids[nd->events[0].item], 20); /* ts 8 before ts 9 */
    assert_int_equal(nd->events[1].ts, 9);
    idx_dataset_close(nd);

    /* a catalogue header naming its columns in another order, with one to ignore */
    const char *named_items = td_writes("i2.csv", "year,title,genres,movieId\n"
                                                  "1999,\"Ten, the\",A|C,10\n2001,Twenty,,20\n");
    o = (idx_import_opts){.ratings = ratings, .items = named_items, .out = td_path("named2"),
                          .ratings_header = -1, .items_header = -1};
    E(idx_import(&o, &st, &err));
    assert_int_equal(st.catalogue_items, 2);
    E(idx_dataset_open(td_path("named2"), &nd, &err));
    uint32_t ti;
    assert_true(idx_dataset_find_item(nd, 10, &ti));
    assert_string_equal(nd->titles[ti], "Ten, the");
    assert_int_equal(nd->item_cat_off[ti + 1] - nd->item_cat_off[ti], 2);
    assert_string_equal(nd->category_names[nd->item_cats[nd->item_cat_off[ti] + 1]], "C");
    assert_false(idx_dataset_find_item(nd, 1999, NULL));
    idx_dataset_close(nd);

    /* explicit roles, '-' ignoring a column; a bad role list is EINVAL naming it */
    ratings = td_writes("r4.csv", "9,10,x,4\n8,20,y,4\n");
    o.ratings = ratings;
    o.out = td_path("roles");
    o.ratings_columns = "timestamp,item,-,user";
    E(idx_import(&o, &st, &err));
    assert_int_equal(st.users, 1);
    assert_int_equal(st.events, 2);
    o.out = td_path("roles2");
    o.ratings_columns = "timestamp,item,-,usr";
    assert_int_equal(idx_import(&o, &st, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "'usr'"));
    assert_false(td_exists(td_path("roles2")));
}

static void test_long_title_accepted(void **state)
{
    (void)state;
    size_t big = 1 << 20;
    char *t = malloc(big + 64);
    strcpy(t, "1,\"");
    size_t n = strlen(t);
    memset(t + n, 'x', big);
    n += big;
    strcpy(t + n, "\",Drama\n");
    n += strlen(t + n);
    const char *items = td_write("big.csv", t, n);
    free(t);
    rp_error err = {0};
    idx_import_opts o = {.ratings = td_fixture("ratings_small.csv"), .items = items,
                         .out = td_path("big"), .ratings_header = -1, .items_header = -1};
    E(idx_import(&o, NULL, &err));
    idx_dataset *ds;
    E(idx_dataset_open(td_path("big"), &ds, &err));
    uint32_t i;
    assert_true(idx_dataset_find_item(ds, 1, &i));
    assert_int_equal(strlen(ds->titles[i]), big);
    idx_dataset_close(ds);
}

/* ---- bad input through the CLI ---- */

typedef struct bad_case {
    const char *ratings, *items; /* fixture names, or "@name" for a file made here */
    int exit_code;
    const char *expect; /* in stderr */
} bad_case;

static const char *resolve(const char *name)
{
    return name[0] == '@' ? td_path(name + 1) : td_fixture(name);
}

static void test_bad_inputs_fail_cleanly(void **state)
{
    (void)state;
    /* a 17 MB line: refused with the limit named, no crash */
    size_t huge = (17u << 20);
    char *t = malloc(huge + 64);
    strcpy(t, "userId,movieId,rating,timestamp\n1,1,4.0,1\n2,");
    size_t n = strlen(t);
    memset(t + n, '7', huge);
    n += huge;
    strcpy(t + n, ",1,4.0,1\n");
    td_write("huge.csv", t, n + strlen(t + n));
    free(t);
    td_writes("not_a_file_parent", "x");
    td_writes("dup_items.csv", "1,One,A\n2,Two,B\n1,Again,C\n");
    td_writes("wide.csv", "1,2,3,4,5\n");

    const bad_case cases[] = {
        {"bad/ratings_nonnumeric.csv", "movies_small.csv", 3,
         "ratings_nonnumeric.csv:3:3: item id 'abc' is not a non-negative integer"},
        {"bad/ratings_missing_column.csv", "movies_small.csv", 3,
         "ratings_missing_column.csv:4: missing column 4 (timestamp)"},
        {"ratings_small.csv", "bad/movies_unclosed_quote.csv", 3,
         "movies_unclosed_quote.csv:3:3: quoted field never closed"},
        {"ratings_small.csv", "bad/movies_text_after_quote.csv", 3,
         "movies_text_after_quote.csv:3:12: unexpected ' ' after a closing quote"},
        {"ratings_small.csv", "bad/movies_latin1.csv", 3,
         "movies_latin1.csv:3:6: invalid UTF-8 (byte 0xE9); if the file is Latin-1, pass "
         "--items-encoding latin1"},
        {"bad/empty.csv", "movies_small.csv", 3, "empty.csv: no interactions (the file is empty)"},
        {"bad/ratings_header_only.csv", "movies_small.csv", 3,
         "ratings_header_only.csv: no interactions (only a header)"},
        {"ratings_small.csv", "bad/empty.csv", 3, "empty.csv: the catalogue is empty"},
        {"bad/ratings_some_bad.csv", "movies_small.csv", 3,
         "ratings_some_bad.csv:3:1: user id 'x' is not a non-negative integer"},
        {"@huge.csv", "movies_small.csv", 3, "huge.csv:3: line longer than 16777216 bytes"},
        {"ratings_small.csv", "@dup_items.csv", 3,
         "dup_items.csv:3:1: item id 1 is listed twice (first on line 1)"},
        {"@wide.csv", "movies_small.csv", 3,
         "wide.csv:1: 5 columns; expected user,item[,rating][,timestamp] separated by ','"},
        {"bad/no_such_file.csv", "movies_small.csv", 1,
         "no_such_file.csv: No such file or directory"},
        {"ratings_small.csv", "bad", 1, "bad: is a directory"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const bad_case *c = &cases[k];
        int before = td_count_entries(td_root);
        int rc = run_import("--ratings", resolve(c->ratings), "--items", resolve(c->items),
                            "--out", td_path("bad_out"), NULL);
        if (rc != c->exit_code || !strstr(err_text, c->expect) ||
            strncmp(err_text, "recpipe: import: ", 17) != 0 || count_lines(err_text) != 1)
            fail_msg("case %zu (%s, %s): exit %d (want %d), stderr: %s", k, c->ratings, c->items,
                     rc, c->exit_code, err_text);
        assert_false(td_exists(td_path("bad_out")));
        assert_int_equal(td_count_entries(td_root), before); /* no temporary left over */
        assert_string_equal(out_text, "");
    }

    /* unwritable output: the parent is a file */
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s/sub", td_path("not_a_file_parent"));
    int rc = run_import("--ratings", td_fixture("ratings_small.csv"), "--items",
                        td_fixture("movies_small.csv"), "--out", out, NULL);
    assert_int_equal(rc, 1);
    assert_true(!strncmp(err_text, "recpipe: import: ", 17) && count_lines(err_text) == 1);
    assert_non_null(strstr(err_text, "not_a_file_parent"));

    /* misuse is exit 2 */
    rc = run_import("--ratings", td_fixture("ratings_small.csv"), "--out", td_path("x"), NULL);
    assert_int_equal(rc, 2);
    rc = run_import("--ratings", "a", "--items", "b", "--out", "c", "--items-format", "xml",
                    NULL);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(err_text, "--items-format"));
}

static void test_bom_accepted(void **state)
{
    (void)state;
    int rc = run_import("--ratings", td_fixture("bad/ratings_bom.csv"), "--items",
                        td_fixture("movies_small.csv"), "--out", td_path("bom"), NULL);
    assert_int_equal(rc, 0);
    idx_dataset *ds;
    rp_error err = {0};
    E(idx_dataset_open(td_path("bom"), &ds, &err));
    assert_int_equal(ds->n_users, 1);
    assert_int_equal(ds->n_events, 2);
    idx_dataset_close(ds);
}

static void test_skip_bad_counts(void **state)
{
    (void)state;
    int rc = run_import("--ratings", td_fixture("bad/ratings_some_bad.csv"), "--items",
                        td_fixture("movies_small.csv"), "--out", td_path("skip"), "--skip-bad",
                        "--max-reported", "2", NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out_text, "lines skipped            4"));
    assert_non_null(strstr(out_text, "events                   2"));
    /* the first two reasons, then a note */
    assert_non_null(strstr(err_text, "ratings_some_bad.csv:3:1: user id 'x'"));
    assert_non_null(strstr(err_text, "ratings_some_bad.csv:4:5: rating 'four' is not a number"));
    assert_null(strstr(err_text, "yesterday"));
    assert_non_null(strstr(err_text, "more skipped lines are not shown"));

    /* API: the same counts */
    rp_error err = {0};
    idx_import_opts o = {.ratings = td_fixture("bad/ratings_some_bad.csv"),
                         .items = td_fixture("bad/movies_unclosed_quote.csv"),
                         .out = td_path("skip2"), .ratings_header = -1, .items_header = -1,
                         .skip_bad = true};
    idx_import_stats st;
    E(idx_import(&o, &st, &err));
    assert_int_equal(st.skipped, 5); /* 4 interactions + the unclosed catalogue record */
    assert_int_equal(st.catalogue_items, 1);
    assert_int_equal(st.events, 2);
    assert_int_equal(st.not_in_catalogue_items, 1); /* item 2 went with the bad record */
}

static void test_existing_out_refused_unless_force(void **state)
{
    (void)state;
    int rc = run_import("--ratings", td_fixture("ratings_small.csv"), "--items",
                        td_fixture("movies_small.csv"), "--out", td_path("exists"), NULL);
    assert_int_equal(rc, 0);
    rc = run_import("--ratings", td_fixture("ml100k/u.data"), "--items",
                    td_fixture("ml100k/u.item"), "--items-format", "ml100k", "--out",
                    td_path("exists"), NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err_text, "already exists (use --force to replace it)"));
    rc = run_import("--ratings", td_fixture("ml100k/u.data"), "--items",
                    td_fixture("ml100k/u.item"), "--items-format", "ml100k", "--out",
                    td_path("exists"), "--force", NULL);
    assert_int_equal(rc, 0);
    idx_dataset *ds;
    rp_error err = {0};
    E(idx_dataset_open(td_path("exists"), &ds, &err));
    assert_int_equal(ds->n_events, 6);
    idx_dataset_close(ds);
}

static void test_duplicates_merge_latest_wins(void **state)
{
    (void)state;
    const char *r = td_writes("dup.csv", "user,item,rating,timestamp\n"
                                         "1,10,5,100\n"
                                         "1,20,1,150\n"
                                         "1,10,2,300\n" /* later: wins */
                                         "1,10,4,200\n" /* earlier than 300: loses */
                                         "2,10,3,50\n"
                                         "2,10,4,50\n"); /* same time: the later line wins */
    const char *i = td_writes("dup_items.csv", "10,Ten,A\n20,Twenty,B\n");
    rp_error err = {0};
    idx_import_opts o = {.ratings = r, .items = i, .out = td_path("dup"),
                         .ratings_header = -1, .items_header = -1};
    idx_import_stats st;
    E(idx_import(&o, &st, &err));
    assert_int_equal(st.duplicates, 3);
    assert_int_equal(st.events, 3);
    idx_dataset *ds;
    E(idx_dataset_open(td_path("dup"), &ds, &err));
    const idx_event *ev = ds->events;
    assert_int_equal(ds->item_ids[ev[0].item], 20);
    assert_int_equal(ds->item_ids[ev[1].item], 10);
    assert_int_equal(ev[1].ts, 300);
    assert_true(ev[1].value == 2.0f);
    assert_true(ds->events[ds->user_off[1]].value == 4.0f);
    uint32_t k;
    assert_true(idx_dataset_find_item(ds, 10, &k));
    assert_int_equal(ds->item_created[k], 50);
    idx_dataset_close(ds);
}

/* Garbage interactions and catalogues: with skip_bad the import either succeeds with
 * what was valid or fails with RP_EPARSE naming the file; it never crashes and never
 * leaves an output behind on failure. */
static void test_random_files_with_skip_bad(void **state)
{
    (void)state;
    static const char alphabet[] = "0123456789012345678901234567890123456789,,,,,\"\n\n\r\t|. -x";
    uint64_t x = 99;
    char rb[400], ib[400];
    for (int round = 0; round < 60; round++) {
        size_t nr = 50 + (size_t)round * 5, ni = 30 + (size_t)round * 4;
        for (size_t k = 0; k < nr + ni; k++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            char c = alphabet[(x >> 33) % (sizeof alphabet - 1)];
            if (k < nr) rb[k] = c;
            else ib[k - nr] = c;
        }
        char rpath[PATH_MAX], ipath[PATH_MAX], out[PATH_MAX];
        snprintf(rpath, sizeof rpath, "%s", td_write("rand_r.csv", rb, nr));
        snprintf(ipath, sizeof ipath, "%s", td_write("rand_i.csv", ib, ni));
        snprintf(out, sizeof out, "%s", td_path("rand_out"));
        idx_import_opts o = {.ratings = rpath, .items = ipath, .out = out,
                             .ratings_header = -1, .items_header = -1, .skip_bad = true};
        idx_import_stats st;
        rp_error err = {0};
        int rc = idx_import(&o, &st, &err);
        if (rc == RP_OK) {
            idx_dataset *ds;
            if (idx_dataset_open(out, &ds, &err)) fail_msg("round %d: %s", round, err.msg);
            assert_int_equal(ds->n_events, st.events);
            idx_dataset_close(ds);
            idx_rmtree(out);
        } else {
            if (rc != RP_EPARSE) fail_msg("round %d: %d %s", round, rc, err.msg);
            assert_true(strstr(err.msg, "rand_r.csv") || strstr(err.msg, "rand_i.csv"));
            assert_false(td_exists(out));
        }
    }
}

static void test_cancel_leaves_nothing(void **state)
{
    (void)state;
    volatile sig_atomic_t stop = 1;
    rp_error err = {0};
    idx_import_opts o = {.ratings = td_ml("ratings.csv"), .items = td_ml("movies.csv"),
                         .out = td_path("canceled"), .ratings_header = -1, .items_header = -1,
                         .cancel = &stop};
    int before = td_count_entries(td_root);
    assert_int_equal(idx_import(&o, NULL, &err), RP_ECANCELED);
    assert_non_null(strstr(err.msg, "interrupted"));
    assert_false(td_exists(td_path("canceled")));
    assert_int_equal(td_count_entries(td_root), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ml100k_fixture),
        cmocka_unit_test(test_ml100k_cli_reports_missing_items),
        cmocka_unit_test(test_rfc4180_titles_round_trip),
        cmocka_unit_test(test_tab_crlf_named_columns_no_rating),
        cmocka_unit_test(test_long_title_accepted),
        cmocka_unit_test(test_bad_inputs_fail_cleanly),
        cmocka_unit_test(test_bom_accepted),
        cmocka_unit_test(test_skip_bad_counts),
        cmocka_unit_test(test_existing_out_refused_unless_force),
        cmocka_unit_test(test_duplicates_merge_latest_wins),
        cmocka_unit_test(test_random_files_with_skip_bad),
        cmocka_unit_test(test_cancel_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
