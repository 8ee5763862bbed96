/* Tests eval/src/eval.c and retrieval.c on datasets built in memory: the split, every
 * metric against hand-computed values, popularity order, cut-off parsing, and that the
 * iALS retrieval model beats popularity on clustered data. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ev/eval.h"
#include "ev/retrieval.h"
#include "ret/als.h"

#define E(expr)                                                                            \
    do {                                                                                   \
        rp_error e_ = {0};                                                                 \
        int rc_ = (expr);                                                                  \
        if (rc_ != RP_OK) fail_msg("%s -> %s", #expr, rp_error_text(&e_));                 \
    } while (0)

#define NEAR(a, b) assert_true(fabs((a) - (b)) < 1e-4)

/* ---- a six-item dataset whose metrics are computed by hand ---------------------- */

static const uint64_t tiny_uids[] = {10, 20, 30};
static const uint64_t tiny_iids[] = {100, 101, 102, 103, 104, 105};
static const uint64_t tiny_off[] = {0, 5, 11, 15};
static idx_event tiny_events[15];
static const uint32_t tiny_items[] = {0, 2, 3, 4, 1, /* u0: test {1} */
                                      3, 2, 5, 1, 0, 4, /* u1: test {4} */
                                      0, 1, 2, 3};      /* u2: 4 events, train only */
/* categories: 0 {0}, 1 {0,1}, 2 {1}, 3 {}, 4 {2}, 5 {0} */
static const uint32_t tiny_cat_off[] = {0, 1, 3, 4, 4, 5, 6};
static const uint16_t tiny_cats[] = {0, 0, 1, 1, 2, 0};

static idx_dataset tiny(void)
{
    for (int j = 0; j < 15; j++) tiny_events[j] = (idx_event){tiny_items[j], 5, 4.0f, 1000 + j};
    idx_dataset ds = {0};
    ds.n_users = 3;
    ds.n_items = 6;
    ds.n_categories = 3;
    ds.n_events = 15;
    ds.user_ids = tiny_uids;
    ds.item_ids = tiny_iids;
    ds.user_off = tiny_off;
    ds.events = tiny_events;
    ds.item_cat_off = tiny_cat_off;
    ds.item_cats = tiny_cats;
    return ds;
}

/* A model that answers fixed lists (filtered by `seen`, as a real model must). */
static int fixed_recommend(void *ctx, uint32_t user, const idx_event *hist, size_t n_hist,
                           const uint8_t *seen, size_t k, uint32_t *out, rp_error *err)
{
    (void)ctx;
    (void)hist;
    (void)n_hist;
    (void)err;
    static const uint32_t lists[3][2] = {{5, 1}, {4, 4}, {0, 0}};
    static const size_t lens[3] = {2, 1, 0};
    size_t n = 0;
    for (size_t j = 0; j < lens[user] && n < k; j++)
        if (!seen[lists[user][j]]) out[n++] = lists[user][j];
    return (int)n;
}

static void test_split(void **state)
{
    (void)state;
    idx_dataset ds = tiny();
    ev_protocol p = EV_PROTOCOL_DEFAULT;
    ev_split *s = NULL;
    E(ev_split_make(&ds, &p, &s, &e_));
    assert_int_equal(s->take[0], 4);
    assert_int_equal(s->take[1], 5);
    assert_int_equal(s->take[2], 4);
    assert_int_equal(s->train_events, 13);
    assert_int_equal(s->test_events, 2);
    assert_int_equal(s->test_users, 2);
    ev_split_free(s);
    p.test_fraction = 1.0;
    rp_error err = {0};
    assert_int_equal(ev_split_make(&ds, &p, &s, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "fraction"));
}

/* The integer rounding equals round(0.2 n) for every n (n/5 never ends in .5). */
static void test_split_rounding(void **state)
{
    (void)state;
    enum { MAXN = 60 };
    static uint64_t uids[MAXN], off[MAXN + 1];
    static idx_event ev[MAXN * MAXN];
    static uint64_t iids[MAXN];
    uint64_t w = 0;
    for (uint32_t u = 0; u < MAXN; u++) {
        uids[u] = u;
        iids[u] = u;
        off[u] = w;
        for (uint32_t j = 0; j <= u; j++) ev[w++] = (idx_event){j, 5, 1.0f, j};
    }
    off[MAXN] = w;
    idx_dataset ds = {.n_users = MAXN, .n_items = MAXN, .n_events = w, .user_ids = uids,
                      .item_ids = iids, .user_off = off, .events = ev};
    ev_protocol p = EV_PROTOCOL_DEFAULT;
    ev_split *s = NULL;
    E(ev_split_make(&ds, &p, &s, &e_));
    for (uint32_t u = 0; u < MAXN; u++) {
        uint32_t n = u + 1;
        uint32_t want = n < 5 ? 0 : (uint32_t)lround(0.2 * n);
        if (n >= 5 && want < 1) want = 1;
        if (n - s->take[u] != want) fail_msg("n=%u: %u held out, expected %u", n, n - s->take[u], want);
    }
    ev_split_free(s);
}

static void test_metrics_by_hand(void **state)
{
    (void)state;
    idx_dataset ds = tiny();
    ev_protocol p = EV_PROTOCOL_DEFAULT;
    ev_split *s = NULL;
    E(ev_split_make(&ds, &p, &s, &e_));
    ev_model m = {"fixed", NULL, fixed_recommend, NULL};
    uint32_t ks[] = {2, 1};
    ev_result r;
    E(ev_evaluate(&ds, s, &m, ks, 2, NULL, NULL, &r, &e_));
    assert_string_equal(r.model, "fixed");
    assert_int_equal(r.users, 2);
    assert_int_equal(r.n_cutoffs, 2);
    /* K=1: u0 [5] misses, u1 [4] hits */
    assert_int_equal(r.at[0].k, 1);
    NEAR(r.at[0].recall, 0.5);
    NEAR(r.at[0].precision, 0.5);
    NEAR(r.at[0].f1, 0.5);
    NEAR(r.at[0].ndcg, 0.5);
    NEAR(r.at[0].coverage, 2.0 / 6);
    NEAR(r.at[0].diversity, 0.0); /* no list of two */
    /* K=2: u0 [5,1] hit at rank 2; u1 [4] (one item) hit */
    assert_int_equal(r.at[1].k, 2);
    NEAR(r.at[1].recall, 1.0);
    NEAR(r.at[1].precision, 0.5);
    NEAR(r.at[1].f1, 2.0 / 3);
    NEAR(r.at[1].ndcg, (1.0 / log2(3.0) + 1.0) / 2);
    NEAR(r.at[1].coverage, 3.0 / 6);
    NEAR(r.at[1].diversity, 0.5); /* 1 - J({0}, {0,1}) */

    /* bad cut-offs */
    rp_error err = {0};
    uint32_t bad[] = {0};
    assert_int_equal(ev_evaluate(&ds, s, &m, bad, 1, NULL, NULL, &r, &err), RP_EINVAL);
    assert_int_equal(ev_evaluate(&ds, s, &m, ks, 0, NULL, NULL, &r, &err), RP_EINVAL);
    ev_split_free(s);
}

static void test_popularity(void **state)
{
    (void)state;
    idx_dataset ds = tiny();
    ev_protocol p = EV_PROTOCOL_DEFAULT;
    ev_split *s = NULL;
    E(ev_split_make(&ds, &p, &s, &e_));
    ev_model m;
    E(ev_model_popularity(&ds, s, &m, &e_));
    /* train counts: 0,2,3 → 3 each; 1,4,5 → 1 each (held-out events do not count) */
    uint8_t seen[6] = {1, 0, 1, 1, 1, 0};
    uint32_t out[6];
    rp_error err = {0};
    int n = m.recommend(m.ctx, 0, NULL, 0, seen, 6, out, &err);
    assert_int_equal(n, 2);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 5);
    uint8_t none[6] = {0};
    n = m.recommend(m.ctx, 0, NULL, 0, none, 4, out, &err);
    assert_int_equal(n, 4);
    uint32_t want[] = {0, 2, 3, 1};
    assert_memory_equal(out, want, sizeof want);
    ev_model_release(&m);
    ev_model_release(&m); /* released twice: a no-op */
    ev_split_free(s);
}

static void test_parse_cutoffs(void **state)
{
    (void)state;
    uint32_t ks[EV_MAX_CUTOFFS];
    size_t n;
    E(ev_parse_cutoffs("20,10,20,5", ks, EV_MAX_CUTOFFS, &n, &e_));
    assert_int_equal(n, 3);
    assert_int_equal(ks[0], 5);
    assert_int_equal(ks[2], 20);
    rp_error err = {0};
    assert_int_equal(ev_parse_cutoffs("10,x", ks, EV_MAX_CUTOFFS, &n, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "element 2"));
    assert_int_equal(ev_parse_cutoffs("0", ks, EV_MAX_CUTOFFS, &n, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "1..1000"));
    assert_int_equal(ev_parse_cutoffs("", ks, EV_MAX_CUTOFFS, &n, &err), RP_EINVAL);
    assert_int_equal(ev_parse_cutoffs("10,", ks, EV_MAX_CUTOFFS, &n, &err), RP_EINVAL);
    assert_int_equal(ev_parse_cutoffs("-5", ks, EV_MAX_CUTOFFS, &n, &err), RP_EINVAL);
}

/* Clustered data: users of cluster c interact with items i % C == c, most with the
 * cluster's popular items, in random time order. iALS on the train split must find
 * the held-out items far better than global popularity. */
static void test_retrieval_beats_popularity(void **state)
{
    (void)state;
    enum { NU = 400, NI = 300, C = 6, PER = 25 };
    static uint64_t uids[NU], iids[NI], off[NU + 1];
    static idx_event ev[NU * PER];
    uint64_t rng = 99, w = 0;
    for (uint32_t i = 0; i < NI; i++) iids[i] = 7000 + i;
    for (uint32_t u = 0; u < NU; u++) {
        uids[u] = u + 1;
        off[u] = w;
        uint8_t used[NI] = {0};
        for (uint32_t j = 0; j < PER;) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t slot = (uint32_t)((rng >> 33) % (NI / C));
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            slot = (uint32_t)((rng >> 33) % (slot + 1));
            uint32_t item = slot * C + u % C;
            if (used[item]) continue;
            used[item] = 1;
            ev[w++] = (idx_event){item, 5, 1.0f, (int64_t)j};
            j++;
        }
    }
    off[NU] = w;
    idx_dataset ds = {.n_users = NU, .n_items = NI, .n_events = w, .user_ids = uids,
                      .item_ids = iids, .user_off = off, .events = ev};
    ev_protocol p = EV_PROTOCOL_DEFAULT;
    ev_split *s = NULL;
    E(ev_split_make(&ds, &p, &s, &e_));
    ret_als_matrix *m = NULL;
    E(ret_als_matrix_from_dataset(&ds, s->take, 0, &m, &e_));
    ret_als_params ap;
    ret_als_params_default(&ap);
    ap.factors = 16;
    ap.reg = 1;
    ap.iters = 8;
    ret_als_model *model = NULL;
    E(ret_als_train(m, &ap, &model, &e_));

    ev_model pop, ret;
    E(ev_model_popularity(&ds, s, &pop, &e_));
    ev_retrieval_opts o = {model->item_factors, model->k, model->reg, model->alpha, NULL, 0};
    E(ev_model_retrieval(&ds, &o, &ret, &e_));
    uint32_t ks[] = {10};
    ev_result rp, rr;
    E(ev_evaluate(&ds, s, &pop, ks, 1, NULL, NULL, &rp, &e_));
    E(ev_evaluate(&ds, s, &ret, ks, 1, NULL, NULL, &rr, &e_));
    if (!(rr.at[0].recall > 2 * rp.at[0].recall && rr.at[0].ndcg > rp.at[0].ndcg))
        fail_msg("retrieval recall@10 %.3f ndcg %.3f vs popularity %.3f / %.3f", rr.at[0].recall,
                 rr.at[0].ndcg, rp.at[0].recall, rp.at[0].ndcg);
    assert_true(rr.at[0].coverage > rp.at[0].coverage);

    /* the exact retrieval model never recommends a train item and fills k */
    uint8_t seen[NI] = {0};
    for (uint32_t j = 0; j < s->take[3]; j++) seen[ev[off[3] + j].item] = 1;
    uint32_t out[10];
    rp_error err = {0};
    int n = ret.recommend(ret.ctx, 3, ev + off[3], s->take[3], seen, 10, out, &err);
    assert_int_equal(n, 10);
    for (int j = 0; j < n; j++) assert_false(seen[out[j]]);

    ev_model_release(&pop);
    ev_model_release(&ret);
    ret_als_model_free(model);
    ret_als_matrix_free(m);
    ev_split_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_split_rounding),
        cmocka_unit_test(test_metrics_by_hand),
        cmocka_unit_test(test_popularity),
        cmocka_unit_test(test_parse_cutoffs),
        cmocka_unit_test(test_retrieval_beats_popularity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
