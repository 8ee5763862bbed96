/* Tests index/src/{bundle,builder,itemstore}.c: build, open, verify, corrupt, shard. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idx/bundle.h"
#include "idx/fsutil.h"
#include "rp/threads.h"

#define E(expr)                                                                            \
    do {                                                                                   \
        int rc_ = (expr);                                                                  \
        if (rc_ < 0) fail_msg("%s -> %s: %s", #expr, rp_err_name(rc_), rp_error_text(&err)); \
    } while (0)

#define D 16
static char root[PATH_MAX];

static int setup(void **state)
{
    (void)state;
    /* One OpenMP/BLAS thread: spinning thread pools crawl on a loaded 2-core machine. */
    rp_compute_threads(1);
    snprintf(root, sizeof root, "/tmp/rp-bundle-test-XXXXXX");
    assert_non_null(mkdtemp(root));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    idx_rmtree(root);
    return 0;
}

static float *vectors(size_t n, unsigned seed)
{
    float *x = malloc(n * D * sizeof *x);
    srand(seed);
    for (size_t i = 0; i < n * D; i++) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    return x;
}

/* Entries in root other than the given names (leftover temp dirs). */
static int count_entries(void)
{
    DIR *d = opendir(root);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static const char *cat_names[] = {"Action", "Comedy", "Drama", "Sci-Fi"};

/* Builds a bundle of n items (ids 10 + 7i) with metadata. */
static int build(const char *path, size_t n, const idx_index_opts *opts, float *x, rp_error *err)
{
    idx_builder *b;
    int rc = idx_builder_create(path, D, IDX_METRIC_IP, &b, err);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        char title[64];
        snprintf(title, sizeof title, "Item \"%zu\", the sequel", i);
        const char *cats[2] = {cat_names[i % 4], cat_names[(i / 4) % 4]};
        idx_item it = {.id = 10 + 7 * i, .title = title, .categories = cats,
                       .n_categories = i % 3 == 0 ? 1 : 2, .created = 1500000000 + (int64_t)i,
                       .popularity = i * 3};
        if ((rc = idx_builder_add_item(b, &it, x + i * D, err))) {
            idx_builder_abort(b);
            return rc;
        }
    }
    if (opts && (rc = idx_builder_set_index(b, opts, err))) {
        idx_builder_abort(b);
        return rc;
    }
    char fpath[PATH_MAX];
    if ((rc = idx_builder_file(b, "ranker.bin", fpath, sizeof fpath, err))) {
        idx_builder_abort(b);
        return rc;
    }
    FILE *f = fopen(fpath, "wb");
    fputs("ranker weights", f);
    fclose(f);
    if ((rc = idx_builder_set_training_json(b, "{\"factors\": 64, \"reg\": 30}", err)) ||
        (rc = idx_builder_set_evaluation_json(b, "{\"recall@20\": 0.15}", err))) {
        idx_builder_abort(b);
        return rc;
    }
    return idx_builder_commit(b, 0, NULL, err);
}

static void test_round_trip(void **state)
{
    (void)state;
    rp_error err = {0};
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/b1", root);
    float *x = vectors(500, 1);
    E(build(path, 500, NULL, x, &err));
    assert_int_equal(count_entries(), 1); /* no temp dir left */

    idx_bundle *b;
    E(idx_bundle_open(path, &b, &err));
    const idx_manifest *m = idx_bundle_manifest(b);
    assert_int_equal(m->format, IDX_BUNDLE_FORMAT);
    assert_int_equal(m->dim, D);
    assert_int_equal(m->metric, IDX_METRIC_IP);
    assert_int_equal(m->n_items, 500);
    assert_int_equal(m->n_shards, 1);
    assert_string_equal(m->factory, "Flat");
    assert_true(m->version[0] == 'v');
    assert_true(m->created > 1700000000);
    assert_int_equal(m->n_files, 4); /* items.mdb, shard-0.faiss, shard-0.ids, ranker.bin */
    json_object *tr = json_tokener_parse(m->training_json);
    json_object *v;
    assert_true(json_object_object_get_ex(tr, "factors", &v) && json_object_get_int(v) == 64);
    json_object_put(tr);
    assert_non_null(strstr(m->evaluation_json, "recall@20"));

    /* Items. */
    idx_itemstore *s = idx_bundle_items(b);
    assert_int_equal(idx_itemstore_count(s), 500);
    idx_item_view it;
    float emb[D];
    E(idx_itemstore_get(s, 10 + 7 * 7, &it, emb, &err));
    assert_string_equal(it.title, "Item \"7\", the sequel");
    assert_int_equal(it.n_categories, 2);
    assert_string_equal(it.categories, "Sci-Fi");
    assert_string_equal(it.categories + strlen(it.categories) + 1, "Comedy");
    assert_int_equal(it.created, 1500000007);
    assert_int_equal(it.popularity, 21);
    assert_memory_equal(emb, x + 7 * D, sizeof emb);
    assert_int_equal(idx_itemstore_get(s, 11, &it, NULL, &err), RP_ENOENT);
    assert_non_null(strstr(err.msg, "11"));

    uint64_t *ids;
    size_t n;
    E(idx_itemstore_category(s, "Drama", &ids, &n, &err));
    size_t expect = 0;
    for (size_t i = 0; i < 500; i++)
        if (i % 4 == 2 || (i % 3 != 0 && (i / 4) % 4 == 2)) expect++;
    assert_int_equal(n, expect);
    for (size_t i = 1; i < n; i++) assert_true(ids[i] > ids[i - 1]);
    /* Filtered exact search over the posting list. */
    float sc[5];
    uint64_t top[5];
    int found = idx_bundle_scan(b, x + 2 * D, n, ids, 5, sc, top, &err);
    assert_int_equal(found, 5);
    /* The best must be the brute-force best inner product over the list. */
    float best = -1e30f;
    uint64_t best_id = 0;
    for (size_t j = 0; j < n; j++) {
        const float *e = x + (ids[j] - 10) / 7 * D;
        float dot = 0;
        for (int d = 0; d < D; d++) dot += x[2 * D + d] * e[d];
        if (dot > best) best = dot, best_id = ids[j];
    }
    assert_int_equal(top[0], best_id);
    for (int i = 0; i < 5; i++) {
        int in = 0;
        for (size_t j = 0; j < n; j++) in |= ids[j] == top[i];
        assert_true(in);
        if (i) assert_true(sc[i] <= sc[i - 1]);
    }
    free(ids);
    E(idx_itemstore_category(s, "Western", &ids, &n, &err));
    assert_int_equal(n, 0);
    const char **names;
    E(idx_itemstore_categories(s, &names, &n, &err));
    assert_int_equal(n, 4);
    assert_string_equal(names[0], "Action");
    assert_string_equal(names[3], "Sci-Fi");
    free(names);

    /* ANN search maps rows to item ids. */
    int got = idx_bundle_search(b, 0, x + 9 * D, 3, sc, top, &err);
    assert_int_equal(got, 3);
    float self = 0;
    for (int j = 0; j < D; j++) self += x[9 * D + j] * x[9 * D + j];
    int has = 0;
    for (int i = 0; i < 3; i++) has |= top[i] == 10 + 7 * 9;
    assert_true(has || sc[2] >= self);
    assert_int_equal(idx_bundle_search(b, 1, x, 3, sc, top, &err), RP_EINVAL);

    char fp[PATH_MAX];
    E(idx_bundle_file(b, "ranker.bin", fp, sizeof fp, &err));
    assert_non_null(strstr(fp, "/b1/ranker.bin"));
    assert_int_equal(idx_bundle_file(b, "nope", fp, sizeof fp, &err), RP_ENOENT);
    idx_bundle_release(b);
    idx_bundle_release(NULL);
    E(idx_bundle_verify(path, &err));

    /* A second commit to the same path is refused without replace. */
    assert_int_equal(build(path, 10, NULL, x, &err), RP_EEXIST);
    assert_int_equal(count_entries(), 1);
    free(x);
}

static void flip_byte(const char *path, long off)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, off, SEEK_SET);
    int c = fgetc(f);
    fseek(f, off, SEEK_SET);
    fputc(c ^ 0x01, f);
    fclose(f);
}

static void test_corruption_names_the_file(void **state)
{
    (void)state;
    rp_error err = {0};
    char path[PATH_MAX], fp[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/b2", root);
    float *x = vectors(300, 2);
    E(build(path, 300, NULL, x, &err));
    const char *files[] = {"shard-0.faiss", "items.mdb", "shard-0.ids", "ranker.bin"};
    for (int i = 0; i < 4; i++) {
        snprintf(fp, sizeof fp, "%s/%s", path, files[i]);
        flip_byte(fp, 5);
        assert_int_equal(idx_bundle_verify(path, &err), RP_ECORRUPT);
        assert_non_null(strstr(err.msg, files[i]));
        assert_non_null(strstr(err.msg, "checksum"));
        idx_bundle *b = NULL;
        assert_int_equal(idx_bundle_open(path, &b, &err), RP_ECORRUPT);
        assert_null(b);
        assert_non_null(strstr(err.msg, files[i]));
        flip_byte(fp, 5);
        E(idx_bundle_verify(path, &err));
    }
    /* A missing file is named too. */
    snprintf(fp, sizeof fp, "%s/shard-0.ids", path);
    char moved[PATH_MAX + 32];
    snprintf(moved, sizeof moved, "%s.away", fp);
    assert_int_equal(rename(fp, moved), 0);
    assert_int_equal(idx_bundle_verify(path, &err), RP_ECORRUPT);
    assert_non_null(strstr(err.msg, "shard-0.ids"));
    assert_non_null(strstr(err.msg, "missing"));
    assert_int_equal(rename(moved, fp), 0);
    free(x);
}

static void test_future_format_refused(void **state)
{
    (void)state;
    rp_error err = {0};
    char path[PATH_MAX], mp[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/b3", root);
    float *x = vectors(50, 3);
    E(build(path, 50, NULL, x, &err));
    snprintf(mp, sizeof mp, "%s/manifest.json", path);
    json_object *o = json_object_from_file(mp);
    json_object_object_add(o, "format", json_object_new_int(IDX_BUNDLE_FORMAT + 1));
    assert_int_equal(json_object_to_file(mp, o), 0);
    json_object_put(o);
    idx_bundle *b = NULL;
    assert_int_equal(idx_bundle_open(path, &b, &err), RP_EVERSION);
    assert_non_null(strstr(err.msg, "format 2 is newer"));
    assert_int_equal(idx_bundle_verify(path, &err), RP_EVERSION);
    /* Not JSON at all. */
    FILE *f = fopen(mp, "w");
    fputs("{\"format\": 1,", f);
    fclose(f);
    assert_int_equal(idx_bundle_open(path, &b, &err), RP_ECORRUPT);
    assert_non_null(strstr(err.msg, "manifest.json"));
    /* Not a bundle. */
    assert_int_equal(idx_bundle_open(root, &b, &err), RP_ECORRUPT);
    char nope[PATH_MAX + 8];
    snprintf(nope, sizeof nope, "%s/nope", root);
    assert_int_equal(idx_bundle_open(nope, &b, &err), RP_ENOENT);
    free(x);
}

static void test_abort_and_failed_commit_leave_nothing(void **state)
{
    (void)state;
    rp_error err = {0};
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/b4", root);
    int before = count_entries();
    float *x = vectors(100, 4);
    idx_builder *b;
    E(idx_builder_create(path, D, IDX_METRIC_L2, &b, &err));
    uint64_t ids[100];
    for (int i = 0; i < 100; i++) ids[i] = (uint64_t)i;
    E(idx_builder_add_vectors(b, 100, ids, x, &err));
    assert_int_equal(count_entries(), before + 1); /* the temp dir */
    idx_builder_abort(b);
    assert_int_equal(count_entries(), before);
    idx_builder_abort(NULL);

    /* A factory FAISS rejects: its message, and no bundle. */
    idx_index_opts o = {.factory = "IVF16,Nonsense"};
    assert_int_equal(build(path, 100, &o, x, &err), RP_EFAISS);
    assert_non_null(strstr(err.msg, "IVF16,Nonsense"));
    assert_non_null(strstr(err.msg, "could not parse"));
    assert_int_equal(count_entries(), before);
    /* Too few items for the list count. */
    o.factory = "IVF256,Flat";
    assert_int_equal(build(path, 100, &o, x, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "at least 256"));
    assert_int_equal(count_entries(), before);
    /* Duplicate ids. */
    E(idx_builder_create(path, D, IDX_METRIC_L2, &b, &err));
    ids[7] = ids[3];
    E(idx_builder_add_vectors(b, 100, ids, x, &err));
    assert_int_equal(idx_builder_commit(b, 0, NULL, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "item 3: added twice"));
    assert_int_equal(count_entries(), before);
    /* Bad input at add time. */
    E(idx_builder_create(path, D, IDX_METRIC_L2, &b, &err));
    x[5] = 0.0f / 0.0f;
    idx_item it = {.id = 1};
    assert_int_equal(idx_builder_add_item(b, &it, x, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "item 1"));
    assert_non_null(strstr(err.msg, "NaN"));
    assert_int_equal(idx_builder_set_training_json(b, "[1,2]", &err), RP_EPARSE);
    assert_int_equal(idx_builder_set_training_json(b, "{\"a\":", &err), RP_EPARSE);
    char fp[PATH_MAX];
    assert_int_equal(idx_builder_file(b, "../evil", fp, sizeof fp, &err), RP_EINVAL);
    assert_int_equal(idx_builder_file(b, "manifest.json", fp, sizeof fp, &err), RP_EINVAL);
    E(idx_builder_file(b, "model.bin", fp, sizeof fp, &err));
    assert_int_equal(idx_builder_file(b, "model.bin", fp, sizeof fp, &err), RP_EEXIST);
    assert_int_equal(idx_builder_commit(b, 0, NULL, &err), RP_EINVAL); /* no items */
    assert_int_equal(count_entries(), before);
    /* Missing parent directory. */
    assert_int_equal(idx_builder_create("/nonexistent/dir/b", D, IDX_METRIC_L2, &b, &err), RP_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/dir"));
    free(x);
}

/* Merged top-k over N exact shards equals the unsharded exact top-k. */
static void test_sharded_equals_unsharded(void **state)
{
    (void)state;
    rp_error err = {0};
    const size_t n = 2000, k = 20;
    float *x = vectors(n, 5);
    char p1[PATH_MAX], p3[PATH_MAX];
    snprintf(p1, sizeof p1, "%s/one", root);
    snprintf(p3, sizeof p3, "%s/three", root);
    idx_index_opts o1 = {.factory = "Flat", .n_shards = 1};
    idx_index_opts o3 = {.factory = "Flat", .n_shards = 3};
    E(build(p1, n, &o1, x, &err));
    E(build(p3, n, &o3, x, &err));
    idx_bundle *b1, *b3;
    E(idx_bundle_open(p1, &b1, &err));
    E(idx_bundle_open(p3, &b3, &err));
    const idx_manifest *m3 = idx_bundle_manifest(b3);
    assert_int_equal(m3->n_shards, 3);
    for (uint32_t s = 0; s < 3; s++) {
        assert_true(m3->shard_items[s] > n / 5); /* the hash spreads the ids */
        size_t ns;
        const uint64_t *ids = idx_bundle_shard_ids(b3, s, &ns);
        for (size_t i = 0; i < ns; i++) assert_int_equal(idx_shard_of(ids[i], 3), s);
    }
    for (int q = 0; q < 20; q++) {
        const float *qv = x + (size_t)(q * 97 % n) * D;
        float s1[20];
        uint64_t i1[20];
        assert_int_equal(idx_bundle_search(b1, 0, qv, k, s1, i1, &err), (int)k);
        float all_s[60];
        uint64_t all_i[60];
        int total = 0;
        for (uint32_t s = 0; s < 3; s++) {
            int got = idx_bundle_search(b3, s, qv, k, all_s + total, all_i + total, &err);
            assert_true(got > 0);
            total += got;
        }
        /* merge: selection of the k best by score (ties by id) */
        for (size_t r = 0; r < k; r++) {
            int best = -1;
            for (int j = 0; j < total; j++) {
                if (all_i[j] == UINT64_MAX) continue;
                if (best < 0 || all_s[j] > all_s[best] ||
                    (all_s[j] == all_s[best] && all_i[j] < all_i[best]))
                    best = j;
            }
            assert_int_equal(all_i[best], i1[r]);
            all_i[best] = UINT64_MAX;
        }
    }
    /* Opening only one shard loads only that index. */
    idx_bundle *one;
    E(idx_bundle_open_shard(p3, 2, &one, &err));
    assert_null(idx_bundle_shard(one, 0));
    assert_non_null(idx_bundle_shard(one, 2));
    idx_bundle_release(one);
    assert_int_equal(idx_bundle_open_shard(p3, 3, &one, &err), RP_EINVAL);
    idx_bundle_release(b1);
    idx_bundle_release(b3);
    free(x);
}

static void test_tuned_ivf_setting_survives_open(void **state)
{
    (void)state;
    rp_error err = {0};
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/ivf", root);
    float *x = vectors(4000, 6);
    idx_builder *b;
    E(idx_builder_create(path, D, IDX_METRIC_L2, &b, &err));
    uint64_t *ids = malloc(4000 * sizeof *ids);
    for (int i = 0; i < 4000; i++) ids[i] = 1000000 + (uint64_t)i;
    E(idx_builder_add_vectors(b, 4000, ids, x, &err));
    float *q = vectors(200, 60);
    idx_index_opts o = {.factory = "IVF32,Flat", .target_recall = 0.9, .n_queries = 200,
                        .queries = q};
    E(idx_builder_set_index(b, &o, &err));
    free(q); /* copied */
    idx_build_report rep;
    E(idx_builder_commit(b, 0, &rep, &err));
    assert_string_equal(rep.tune.param, "nprobe");
    assert_true(rep.tune.reached && rep.tune.recall >= 0.9);
    assert_true(rep.tune.value > 1 && rep.tune.value <= 32);
    idx_bundle *bb;
    E(idx_bundle_open(path, &bb, &err));
    const idx_manifest *m = idx_bundle_manifest(bb);
    assert_string_equal(m->param_name, "nprobe");
    assert_true(m->param_value == rep.tune.value);
    assert_true(m->recall >= 0.9 && m->target_recall == 0.9);
    assert_true(idx_ann_param_value(idx_bundle_shard(bb, 0)) == rep.tune.value);
    idx_bundle_release(bb);
    free(ids);
    free(x);
}

static void *pin_loop(void *arg)
{
    idx_bundle *b = arg;
    for (int i = 0; i < 100000; i++) idx_bundle_release(idx_bundle_acquire(b));
    idx_bundle_release(b); /* the reference the spawner took for this thread */
    return NULL;
}

static void test_acquire_release_across_threads(void **state)
{
    (void)state;
    rp_error err = {0};
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/pin", root);
    float *x = vectors(50, 7);
    E(build(path, 50, NULL, x, &err));
    idx_bundle *b;
    E(idx_bundle_open(path, &b, &err));
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, pin_loop, idx_bundle_acquire(b));
    /* The opener's reference keeps it alive while the threads run. */
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    assert_int_equal(idx_bundle_manifest(b)->n_items, 50);
    idx_bundle_release(b); /* last reference: closes (ASan would flag a leak or double free) */
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_corruption_names_the_file),
        cmocka_unit_test(test_future_format_refused),
        cmocka_unit_test(test_abort_and_failed_commit_leave_nothing),
        cmocka_unit_test(test_sharded_equals_unsharded),
        cmocka_unit_test(test_tuned_ivf_setting_survives_open),
        cmocka_unit_test(test_acquire_release_across_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
