/*
 * Acceptance figures on ml-latest-small (../shared/data/README.md), through the real
 * recpipe binary: import, build (--holdout) with an exact and a tuned IVF index, eval
 * --json; train embeddings twice for determinism; bad invocations.
 *
 *   split: 80,672 train / 20,164 test events, 610 test users
 *   popularity Recall@20 within 0.005 of 0.097
 *   iALS (64, reg 30, alpha 5, 10 sweeps), exact index: Recall@20 >= 0.147, NDCG@20 >= 0.124
 *   IVF tuned to recall 0.95: Recall@20 within 0.01 of exact
 * plus: Flat through the index == two Flat shards == exact BLAS scoring.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "idx/fvecs.h"

static char tmp[256];
static char bin[1024];
static char mldir[1024];

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs a command and parses its stdout as one JSON object (fails the test otherwise). */
static json_object *run_json(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    int st = pclose(p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("%s: exit %d\n%s", cmd, st, buf);
    json_object *o = json_tokener_parse(buf);
    if (!o) fail_msg("%s: not JSON: %s", cmd, buf);
    return o;
}

static double get(json_object *o, const char *a, const char *b, const char *c)
{
    json_object *x = o;
    const char *path[3] = {a, b, c};
    for (int i = 0; i < 3 && path[i]; i++)
        if (!json_object_object_get_ex(x, path[i], &x)) fail_msg("JSON has no %s", path[i]);
    return json_object_get_double(x);
}

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("RECPIPE_BIN"), *src = getenv("RECPIPE_SOURCE_DIR");
    if (!b || !src) {
        fprintf(stderr, "RECPIPE_BIN and RECPIPE_SOURCE_DIR must be set (ctest sets them)\n");
        return -1;
    }
    snprintf(bin, sizeof bin, "%s", b);
    snprintf(mldir, sizeof mldir, "%s/data/ml-latest-small", src); /* the shipped copy */
    snprintf(tmp, sizeof tmp, "/tmp/test_eval_ml.XXXXXX");
    if (!mkdtemp(tmp)) return -1;
    if (run("'%s' import --ratings '%s/ratings.csv' --items '%s/movies.csv' --out %s/data "
            ">/dev/null",
            bin, mldir, mldir, tmp) != 0) {
        fprintf(stderr, "setup: '%s import' of %s failed\n", bin, mldir);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    run("rm -rf '%s'", tmp);
    return 0;
}

static void test_acceptance(void **state)
{
    (void)state;
    char cmd[4096];
    assert_int_equal(run("'%s' build --data %s/data --out %s/flat --holdout --index Flat "
                         ">/dev/null",
                         bin, tmp, tmp),
                     0);
    snprintf(cmd, sizeof cmd, "'%s' eval --data %s/data --bundle %s/flat --k 10,20 --json", bin,
             tmp, tmp);
    json_object *o = run_json(cmd);
    assert_int_equal((int64_t)get(o, "split", "train_events", NULL), 80672);
    assert_int_equal((int64_t)get(o, "split", "test_events", NULL), 20164);
    assert_int_equal((int64_t)get(o, "split", "test_users", NULL), 610);
    double pop_r20 = get(o, "models", "popularity", "recall@20");
    double ret_r20 = get(o, "models", "retrieval", "recall@20");
    double ret_n20 = get(o, "models", "retrieval", "ndcg@20");
    fprintf(stderr, "popularity recall@20 %.4f ndcg@20 %.4f; iALS exact recall@20 %.4f ndcg@20 %.4f\n",
            pop_r20, get(o, "models", "popularity", "ndcg@20"), ret_r20, ret_n20);
    if (fabs(pop_r20 - 0.097) > 0.005) fail_msg("popularity recall@20 %.4f, expected 0.097 ± 0.005", pop_r20);
    if (ret_r20 < 0.147) fail_msg("iALS recall@20 %.4f < 0.147", ret_r20);
    if (ret_n20 < 0.124) fail_msg("iALS ndcg@20 %.4f < 0.124", ret_n20);
    /* every metric is reported at both cut-offs, in range */
    const char *names[] = {"recall", "precision", "f1", "ndcg", "coverage", "diversity"};
    for (int i = 0; i < 6; i++)
        for (int k = 10; k <= 20; k += 10) {
            char key[32];
            snprintf(key, sizeof key, "%s@%d", names[i], k);
            double v = get(o, "models", "retrieval", key);
            if (!(v > 0 && v <= 1)) fail_msg("retrieval %s = %g", key, v);
        }
    json_object_put(o);

    /* the manifest carries what fold-in needs and the hold-out figures build measured */
    snprintf(cmd, sizeof cmd, "'%s' index info %s/flat --json", bin, tmp);
    o = run_json(cmd);
    assert_true(get(o, "training", "reg", NULL) == 30.0);
    assert_true(get(o, "training", "alpha", NULL) == 5.0);
    assert_int_equal((int)get(o, "training", "factors", NULL), 64);
    assert_int_equal((int)get(o, "training", "iters", NULL), 10);
    json_object *h;
    assert_true(json_object_object_get_ex(json_object_object_get(o, "training"), "holdout", &h) &&
                json_object_get_boolean(h));
    double built_r20 = get(o, "evaluation", "retrieval_exact", "recall@20");
    if (fabs(built_r20 - ret_r20) > 0.001)
        fail_msg("manifest hold-out recall@20 %.4f, recpipe eval %.4f", built_r20, ret_r20);
    json_object_put(o);

    /* Flat is exact: through the index, over two shards, or scored with BLAS, the same
     * figures (only ties in score may order differently) */
    snprintf(cmd, sizeof cmd,
             "'%s' eval --data %s/data --bundle %s/flat --models retrieval --k 20 --exact --json",
             bin, tmp, tmp);
    o = run_json(cmd);
    double exact_r20 = get(o, "models", "retrieval", "recall@20");
    json_object_put(o);
    if (fabs(exact_r20 - ret_r20) > 0.001)
        fail_msg("--exact recall@20 %.4f differs from the Flat index's %.4f", exact_r20, ret_r20);
    assert_int_equal(run("'%s' build --data %s/data --out %s/flat2 --holdout --index Flat "
                         "--shards 2 --eval=false >/dev/null",
                         bin, tmp, tmp),
                     0);
    assert_int_equal(run("'%s' index verify %s/flat2 >/dev/null", bin, tmp), 0);
    snprintf(cmd, sizeof cmd,
             "'%s' eval --data %s/data --bundle %s/flat2 --models retrieval --k 20 --json", bin,
             tmp, tmp);
    o = run_json(cmd);
    double shard_r20 = get(o, "models", "retrieval", "recall@20");
    json_object_put(o);
    if (fabs(shard_r20 - ret_r20) > 0.001)
        fail_msg("two Flat shards: recall@20 %.4f differs from one shard's %.4f", shard_r20, ret_r20);

    /* the same model through an IVF index tuned to recall 0.95 */
    assert_int_equal(run("'%s' build --data %s/data --out %s/ivf --holdout --index IVF128,Flat "
                         "--target-recall 0.95 --eval=false >/dev/null",
                         bin, tmp, tmp),
                     0);
    snprintf(cmd, sizeof cmd,
             "'%s' eval --data %s/data --bundle %s/ivf --models retrieval --k 20 --json", bin, tmp,
             tmp);
    o = run_json(cmd);
    double ivf_r20 = get(o, "models", "retrieval", "recall@20");
    double nprobe = get(o, "bundle", "param_value", NULL);
    fprintf(stderr, "IVF128,Flat nprobe=%g: recall@20 %.4f (exact %.4f)\n", nprobe, ivf_r20, ret_r20);
    assert_true(nprobe >= 1 && nprobe < 128);
    if (fabs(ivf_r20 - ret_r20) > 0.01)
        fail_msg("IVF recall@20 %.4f is more than 0.01 from exact %.4f", ivf_r20, ret_r20);
    json_object_put(o);
}

static void test_train_embeddings(void **state)
{
    (void)state;
    for (int i = 1; i <= 2; i++)
        assert_int_equal(run("'%s' train embeddings --data %s/data --out %s/emb%d --factors 16 "
                             "--iters 4 --seed 7 >/dev/null",
                             bin, tmp, tmp, i),
                         0);
    char path[512];
    float *items = NULL, *users = NULL;
    size_t n;
    uint32_t k;
    rp_error err = {0};
    snprintf(path, sizeof path, "%s/emb1/item_factors.fvecs", tmp);
    if (idx_fvecs_read(path, &items, &n, &k, &err)) fail_msg("%s", rp_error_text(&err));
    assert_int_equal(n, 9742);
    assert_int_equal(k, 16);
    snprintf(path, sizeof path, "%s/emb1/user_factors.fvecs", tmp);
    if (idx_fvecs_read(path, &users, &n, &k, &err)) fail_msg("%s", rp_error_text(&err));
    assert_int_equal(n, 610);
    size_t nonzero = 0;
    for (size_t j = 0; j < (size_t)n * k; j++) {
        assert_true(isfinite(users[j]));
        nonzero += users[j] != 0;
    }
    assert_true(nonzero > (size_t)n * k / 2);
    free(items);
    free(users);
    /* same seed, same bits */
    assert_int_equal(run("cmp -s %s/emb1/item_factors.fvecs %s/emb2/item_factors.fvecs", tmp, tmp), 0);
    assert_int_equal(run("cmp -s %s/emb1/user_factors.fvecs %s/emb2/user_factors.fvecs", tmp, tmp), 0);
    /* an existing output is refused without --force, kept intact, replaced with it */
    assert_int_equal(run("'%s' train embeddings --data %s/data --out %s/emb1 --factors 8 --iters 1 "
                         "2>/dev/null >/dev/null",
                         bin, tmp, tmp),
                     1);
    assert_int_equal(run("cmp -s %s/emb1/item_factors.fvecs %s/emb2/item_factors.fvecs", tmp, tmp), 0);
    assert_int_equal(run("'%s' train embeddings --data %s/data --out %s/emb1 --factors 8 --iters 1 "
                         "--force >/dev/null",
                         bin, tmp, tmp),
                     0);
    assert_int_not_equal(run("cmp -s %s/emb1/item_factors.fvecs %s/emb2/item_factors.fvecs", tmp, tmp), 0);
}

static void test_bad_invocations(void **state)
{
    (void)state;
    /* usage errors exit 2 */
    assert_int_equal(run("'%s' eval --data %s/data --k 0 2>/dev/null", bin, tmp), 2);
    assert_int_equal(run("'%s' eval --data %s/data --models nosuch 2>/dev/null", bin, tmp), 2);
    assert_int_equal(run("'%s' build --data %s/data 2>/dev/null", bin, tmp), 2);
    assert_int_equal(run("'%s' build --data %s/data --out %s/x --factors 0 2>/dev/null", bin, tmp, tmp), 2);
    /* a missing dataset is a runtime error naming it, and leaves no bundle behind */
    assert_int_equal(run("'%s' build --data %s/nodata --out %s/never 2>%s/err.txt", bin, tmp, tmp, tmp), 1);
    assert_int_equal(run("grep -q nodata %s/err.txt", tmp), 0);
    struct stat st;
    char path[512];
    snprintf(path, sizeof path, "%s/never", tmp);
    assert_int_not_equal(stat(path, &st), 0);
    /* a rejected factory string fails the build with FAISS's message, leaving nothing */
    assert_int_equal(run("'%s' build --data %s/data --out %s/never --index Bogus99 --iters 1 "
                         ">/dev/null 2>%s/err.txt",
                         bin, tmp, tmp, tmp),
                     1);
    assert_int_not_equal(stat(path, &st), 0);
    assert_int_equal(run("ls -a %s | grep -q tmp-", tmp), 1); /* no temp directory left */
    /* Ctrl-C during training stops after the current sweep: exit 1 naming the
     * interruption, no bundle and no temporary directory */
    assert_int_equal(run("'%s' build --data %s/data --out %s/never --iters 1000 >/dev/null "
                         "2>%s/err.txt & p=$!; sleep 3; kill -INT $p; wait $p",
                         bin, tmp, tmp, tmp),
                     1);
    assert_int_equal(run("grep -q interrupted %s/err.txt", tmp), 0);
    assert_int_not_equal(stat(path, &st), 0);
    assert_int_equal(run("ls -a %s | grep -q tmp-", tmp), 1);
    /* popularity alone needs no bundle */
    assert_int_equal(run("'%s' eval --data %s/data --k 5 >/dev/null", bin, tmp), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acceptance),
        cmocka_unit_test(test_train_embeddings),
        cmocka_unit_test(test_bad_invocations),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
