/*
 * Tests ranking/src/train.c on a small synthetic dataset built in memory (users who
 * prefer one cluster of items): training is bit-for-bit deterministic for a seed with one
 * thread (and for a given thread count), it learns (validation AUC above chance), bad
 * options are refused naming the option, and data without positives is refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rank/model.h"
#include "rank/train.h"
#include "rank_internal.h"

#define NU 120
#define NI 240
#define NEV 40
#define NCL 6

static uint64_t user_ids[NU], item_ids[NI], user_off[NU + 1];
static idx_event events[NU * NEV];
static uint32_t cat_off[NI + 1];
static uint16_t cats[NI];
static const char *cat_names[NCL] = {"a", "b", "c", "d", "e", "f"};

static idx_dataset make_ds(void)
{
    uint64_t st = 12345;
    for (uint32_t i = 0; i < NI; i++) {
        item_ids[i] = 1000 + i;
        cat_off[i] = i;
        cats[i] = (uint16_t)(i % NCL);
    }
    cat_off[NI] = NI;
    for (uint32_t u = 0; u < NU; u++) {
        user_ids[u] = u + 1;
        user_off[u] = (uint64_t)u * NEV;
        uint32_t pref = u % NCL;
        uint8_t used[NI] = {0};
        for (uint32_t e = 0; e < NEV; e++) {
            uint32_t item;
            do {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                uint32_t r = (uint32_t)(st >> 33);
                /* 80% from the preferred cluster, popular items of it more often */
                if (r % 10 < 8) item = pref + NCL * ((r / 10) % 20 < 12 ? (r / 200) % 8 : (r / 200) % (NI / NCL));
                else item = (r / 10) % NI;
            } while (used[item]);
            used[item] = 1;
            events[u * NEV + e] = (idx_event){item, 5, (float)(1 + e % 5), 1500000000 + 86400LL * e + u};
        }
    }
    user_off[NU] = (uint64_t)NU * NEV;
    idx_dataset ds = {0};
    ds.n_users = NU;
    ds.n_items = NI;
    ds.n_categories = NCL;
    ds.n_events = (uint64_t)NU * NEV;
    ds.user_ids = user_ids;
    ds.item_ids = item_ids;
    ds.user_off = user_off;
    ds.events = events;
    ds.item_cat_off = cat_off;
    ds.item_cats = cats;
    ds.category_names = cat_names;
    return ds;
}

static rank_train_opts small_opts(int threads)
{
    rank_train_opts o;
    rank_train_opts_default(&o);
    o.shape.dim = 8;
    o.shape.side_dim = 4;
    o.shape.max_hist = 20;
    o.shape.att1 = 16;
    o.shape.att2 = 8;
    o.shape.n_cross = 2;
    o.shape.deep[0] = 32;
    o.shape.deep[1] = 16;
    o.als.factors = 8;
    o.als.iters = 4;
    o.als.reg = 1;
    o.n_candidates = 40;
    o.epochs = 6;
    o.patience = 6;
    o.batch = 4; /* small data: more, smaller steps */
    o.lr = 3e-3;
    o.val_fraction = 0.2;
    o.threads = threads;
    return o;
}

static void test_deterministic_and_learns(void **state)
{
    (void)state;
    idx_dataset ds = make_ds();
    rp_error err = {0};
    rank_model *a, *b, *c;
    rank_train_report ra, rb, rc;
    rank_train_opts o = small_opts(1);
    assert_int_equal(rank_train(&ds, NULL, NULL, 0, &o, &a, &ra, &err), RP_OK);
    assert_int_equal(rank_train(&ds, NULL, NULL, 0, &o, &b, &rb, &err), RP_OK);
    assert_int_equal(rank_model_nparams(a), rank_model_nparams(b));
    assert_memory_equal(a->params, b->params, a->nparams * sizeof(float));
    assert_true(ra.val_auc == rb.val_auc);
    assert_true(ra.val_users > 0 && ra.train_users > 0 && ra.positives > 0);
    /* users prefer a cluster: the ranker must do better than chance */
    printf("synthetic data: validation AUC %.4f, NDCG@20 %.4f (iALS order %.4f), %u epochs\n",
           ra.val_auc, ra.val_ndcg, ra.val_ndcg_retrieval, ra.epochs_run);
    assert_true(ra.val_auc > 0.6);
    /* another seed gives other weights */
    o.seed = 2;
    assert_int_equal(rank_train(&ds, NULL, NULL, 0, &o, &c, &rc, &err), RP_OK);
    assert_true(memcmp(a->params, c->params, a->nparams * sizeof(float)) != 0);
    rank_model_free(c);
    /* two threads: deterministic for that thread count too */
    o = small_opts(2);
    assert_int_equal(rank_train(&ds, NULL, NULL, 0, &o, &c, &rc, &err), RP_OK);
    rank_model *d;
    rank_train_report rd;
    assert_int_equal(rank_train(&ds, NULL, NULL, 0, &o, &d, &rd, &err), RP_OK);
    assert_memory_equal(c->params, d->params, c->nparams * sizeof(float));
    rank_model_free(a);
    rank_model_free(b);
    rank_model_free(c);
    rank_model_free(d);
}

static void test_take_limits_training_data(void **state)
{
    (void)state;
    /* Training on the first 30 events only must not read the last 10: changing them
     * leaves the model bit-identical. */
    idx_dataset ds = make_ds();
    uint32_t take[NU];
    for (int u = 0; u < NU; u++) take[u] = 30;
    rp_error err = {0};
    rank_train_opts o = small_opts(1);
    o.epochs = 1;
    rank_model *a, *b;
    rank_train_report r;
    assert_int_equal(rank_train(&ds, take, NULL, 0, &o, &a, &r, &err), RP_OK);
    for (int u = 0; u < NU; u++)
        for (int e = 30; e < NEV; e++) events[u * NEV + e].item = (events[u * NEV + e].item + 7) % NI;
    assert_int_equal(rank_train(&ds, take, NULL, 0, &o, &b, &r, &err), RP_OK);
    assert_memory_equal(a->params, b->params, a->nparams * sizeof(float));
    rank_model_free(a);
    rank_model_free(b);
}

static void test_bad_options_and_data(void **state)
{
    (void)state;
    idx_dataset ds = make_ds();
    rp_error err = {0};
    rank_model *m = NULL;
    rank_train_report r;
    rank_train_opts o = small_opts(1);
    o.label_fraction = 1.5;
    assert_int_equal(rank_train(&ds, NULL, NULL, 0, &o, &m, &r, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "label-fraction"));
    o = small_opts(1);
    o.group = 100;
    assert_int_equal(rank_train(&ds, NULL, NULL, 0, &o, &m, &r, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "group"));
    o = small_opts(1);
    o.shape.att1 = 0;
    assert_int_equal(rank_train(&ds, NULL, NULL, 0, &o, &m, &r, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "att1"));
    /* serving factors of another dimension */
    o = small_opts(1);
    float f[NI * 4] = {0};
    assert_int_equal(rank_train(&ds, NULL, f, 4, &o, &m, &r, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "dimension"));
    /* every user with 4 events: too short to split, nothing to learn from */
    uint32_t take[NU];
    for (int u = 0; u < NU; u++) take[u] = 4;
    o = small_opts(1);
    assert_int_equal(rank_train(&ds, take, NULL, 0, &o, &m, &r, &err), RP_EPRECOND);
    assert_null(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic_and_learns),
        cmocka_unit_test(test_take_limits_training_data),
        cmocka_unit_test(test_bad_options_and_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
