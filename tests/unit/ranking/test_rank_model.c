/*
 * Tests ranking/src/model.c and forward.c: finite-difference gradient checks of every
 * layer type (linear + ReLU deep layers, target attention, cross layers full and low
 * rank, embedding tables and the category bag, the whole model), batched scoring equal
 * to one-by-one scoring, the model file (round trip, damage detected).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rank/model.h"
#include "rank_internal.h"

#define NI 12
#define NC 3
#define SIMD 4

typedef struct fixture {
    rank_model *m;
    rank_ws *ws;
    float *grad;
    rank__p g;
    float wt[8];
    uint32_t C;
} fixture;

static uint64_t ids[NI];
static uint32_t cat_off[NI + 1];
static uint16_t cats[2 * NI];
static float popr[NI], popt[NI], fac[NI * SIMD];
static uint32_t popc[NI];

static rank_items make_items(void)
{
    uint32_t r = 0;
    for (uint32_t i = 0; i < NI; i++) {
        ids[i] = 100 + 7 * i;
        cat_off[i] = r;
        if (i % 3 != 2) cats[r++] = (uint16_t)(i % NC);
        if (i % 2 == 0) cats[r++] = (uint16_t)((i + 1) % NC);
        popr[i] = 0.3f * (float)i;
        popt[i] = 0.5f * (float)i;
        popc[i] = i * i;
        for (int k = 0; k < SIMD; k++) fac[i * SIMD + k] = sinf((float)(i * 3 + k));
    }
    cat_off[NI] = r;
    rank_items it = {NI, ids, cat_off, cats, popr, popt, popc, fac};
    return it;
}

static rank_shape small_shape(uint32_t cross_rank, uint32_t n_deep)
{
    rank_shape s = rank_shape_default();
    s.dim = 4;
    s.side_dim = 2;
    s.max_hist = 6;
    s.att1 = 6;
    s.att2 = 5;
    s.n_cross = 2;
    s.cross_rank = cross_rank;
    s.n_deep = n_deep;
    s.deep[0] = 7;
    s.deep[1] = 5;
    s.n_items = NI;
    s.n_cats = NC;
    s.sim_dim = SIMD;
    return s;
}

/* A user with n_hist events (one of them unknown) and C candidates (one unknown). */
static fixture *make(uint32_t cross_rank, uint32_t n_deep, uint32_t n_hist)
{
    fixture *f = calloc(1, sizeof *f);
    rank_items it = make_items();
    rank_shape s = small_shape(cross_rank, n_deep);
    rp_error err;
    assert_int_equal(rank_model_create(&s, &it, fac, SIMD, 7, &f->m, &err), RP_OK);
    /* Larger weights than the initialisation so that every path carries gradient. */
    for (size_t i = 0; i < f->m->nparams; i++) f->m->params[i] *= 1.5f;
    float mean[RANK_N_DENSE] = {0.5f, 0.1f, 0.0f, 1.0f, 1.0f, 2.0f};
    float sd[RANK_N_DENSE] = {2.0f, 0.5f, 0.5f, 1.0f, 2.0f, 1.0f};
    rank__set_norm(f->m, mean, sd);
    rank__derive(f->m);
    assert_int_equal(rank__ws_create(f->m, 8, 8, 1, &f->ws), RP_OK);
    rank_event hist[10];
    for (uint32_t l = 0; l < n_hist; l++) {
        hist[l].item = l == 2 ? 999 : (l * 5) % NI;
        hist[l].type = l % 3 ? 5 : 1;
        hist[l].value = 0.5f * (float)l;
        hist[l].ts = 1000000 + 3600 * (int64_t)l * (int64_t)l;
    }
    rank__user_features(f->m, hist, n_hist, 1000000 + 3600 * 100, &f->ws->u);
    f->C = 5;
    rank_cand cands[5] = {{1, 1, 0.7f}, {4, 2, -0.2f}, {NI, 1, 0.1f}, {9, 4, 1.5f}, {6, 0, 0.3f}};
    for (uint32_t c = 0; c < f->C; c++) {
        rank__cand_features(f->m, &f->ws->u, &cands[c], &f->ws->cf[c]);
        f->wt[c] = (float)(c % 2 ? 1.0 : -0.7) * (1.0f + 0.1f * (float)c);
    }
    f->grad = calloc(f->m->nparams, sizeof(float));
    rank__layout(&f->m->s, f->grad, &f->g);
    return f;
}

static void destroy(fixture *f)
{
    rank_ws_free(f->ws);
    rank_model_free(f->m);
    free(f->grad);
    free(f);
}

static double loss(fixture *f)
{
    rank__derive(f->m);
    rank__forward(f->m, f->ws, f->C);
    double l = 0;
    for (uint32_t c = 0; c < f->C; c++) l += (double)f->wt[c] * f->ws->logit[c];
    return l;
}

static void analytic(fixture *f)
{
    memset(f->grad, 0, f->m->nparams * sizeof(float));
    loss(f);
    rank__backward(f->m, f->ws, f->C, f->wt, &f->g);
}

/* Central differences for every element of tensor w (gradient gw) of n floats. */
static void check_tensor(fixture *f, const char *name, float *w, const float *gw, size_t n)
{
    const float eps = 2e-3f;
    size_t bad = 0, nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = w[i];
        w[i] = keep + eps;
        double lp = loss(f);
        w[i] = keep - eps;
        double lm = loss(f);
        w[i] = keep;
        double num = (lp - lm) / (2.0 * eps), ana = gw[i];
        if (fabs(ana) > 1e-4) nonzero++;
        if (fabs(num - ana) > 3e-3 + 2e-2 * fabs(ana)) {
            if (bad < 5)
                print_error("%s[%zu]: analytic %.6f, numeric %.6f\n", name, i, ana, num);
            bad++;
        }
    }
    loss(f);
    assert_int_equal(bad, 0);
    /* The check must exercise something: a tensor whose gradient is all zero is a bug
     * of the fixture (or of the backward pass). */
    assert_true(nonzero > 0);
}

#define CHECK(f, field, n) check_tensor(f, #field, (f)->m->p.field, (f)->g.field, n)

static void test_grad_linear_relu(void **state)
{
    (void)state;
    fixture *f = make(0, 2, 5);
    analytic(f);
    const rank_shape *s = &f->m->s;
    uint32_t D0 = f->m->D0;
    CHECK(f, dW[0], (size_t)s->deep[0] * D0);
    CHECK(f, db[0], s->deep[0]);
    CHECK(f, dW[1], (size_t)s->deep[1] * s->deep[0]);
    CHECK(f, db[1], s->deep[1]);
    CHECK(f, wo, D0 + s->deep[1]);
    CHECK(f, bo, 1);
    destroy(f);
}

static void test_grad_attention(void **state)
{
    (void)state;
    fixture *f = make(0, 2, 5);
    analytic(f);
    const rank_shape *s = &f->m->s;
    CHECK(f, W1, (size_t)s->att1 * 4 * s->dim);
    CHECK(f, b1, s->att1);
    CHECK(f, W2, (size_t)s->att2 * s->att1);
    CHECK(f, b2, s->att2);
    CHECK(f, w3, s->att2);
    destroy(f);
}

static void test_grad_cross_full(void **state)
{
    (void)state;
    fixture *f = make(0, 2, 5);
    analytic(f);
    uint32_t D0 = f->m->D0;
    for (int l = 0; l < 2; l++) {
        check_tensor(f, "cross W", f->m->p.cU[l], f->g.cU[l], (size_t)D0 * D0);
        check_tensor(f, "cross b", f->m->p.cb[l], f->g.cb[l], D0);
    }
    destroy(f);
}

static void test_grad_cross_low_rank(void **state)
{
    (void)state;
    fixture *f = make(3, 1, 5);
    analytic(f);
    uint32_t D0 = f->m->D0;
    for (int l = 0; l < 2; l++) {
        check_tensor(f, "cross U", f->m->p.cU[l], f->g.cU[l], (size_t)D0 * 3);
        check_tensor(f, "cross V", f->m->p.cV[l], f->g.cV[l], (size_t)D0 * 3);
        check_tensor(f, "cross b", f->m->p.cb[l], f->g.cb[l], D0);
    }
    destroy(f);
}

static void test_grad_embeddings(void **state)
{
    (void)state;
    fixture *f = make(0, 2, 5);
    analytic(f);
    const rank_shape *s = &f->m->s;
    uint32_t d = s->dim, e = s->side_dim;
    CHECK(f, Eitem, (size_t)(NI + 1) * d); /* includes the OOV row */
    CHECK(f, Ekind, (size_t)RANK_N_KINDS * d);
    CHECK(f, Egap, (size_t)RANK_N_GAPS * d);
    CHECK(f, Ecat, (size_t)NC * d); /* the category bag */
    CHECK(f, Epop, (size_t)RANK_N_POP * e);
    CHECK(f, Eact, (size_t)RANK_N_ACT * e);
    CHECK(f, Esrc, (size_t)RANK_N_SRC * e);
    destroy(f);
}

/* The whole model along random directions: every parameter at once. */
static void whole_model(uint32_t rank, uint32_t n_deep, uint32_t n_hist)
{
    fixture *f = make(rank, n_deep, n_hist);
    analytic(f);
    size_t np = f->m->nparams;
    float *keep = malloc(np * sizeof(float)), *v = malloc(np * sizeof(float));
    memcpy(keep, f->m->params, np * sizeof(float));
    uint64_t st = 42;
    for (int trial = 0; trial < 4; trial++) {
        double dot = 0;
        for (size_t i = 0; i < np; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            v[i] = (float)((double)(st >> 11) / 9007199254740992.0 * 2.0 - 1.0);
            dot += (double)v[i] * f->grad[i];
        }
        const float eps = 1e-3f;
        for (size_t i = 0; i < np; i++) f->m->params[i] = keep[i] + eps * v[i];
        double lp = loss(f);
        for (size_t i = 0; i < np; i++) f->m->params[i] = keep[i] - eps * v[i];
        double lm = loss(f);
        memcpy(f->m->params, keep, np * sizeof(float));
        double num = (lp - lm) / (2.0 * eps);
        if (fabs(num - dot) > 1e-2 + 1e-2 * fabs(dot))
            print_error("direction %d: analytic %.6f numeric %.6f\n", trial, dot, num);
        assert_true(fabs(num - dot) <= 1e-2 + 1e-2 * fabs(dot));
    }
    free(keep);
    free(v);
    destroy(f);
}

static void test_grad_whole_model(void **state)
{
    (void)state;
    whole_model(0, 2, 5);  /* default architecture, shrunk */
    whole_model(3, 1, 6);  /* low-rank cross, one deep layer, a full window */
    whole_model(0, 0, 0);  /* cross only, empty history */
}

/* The batched path (chunks of candidates, pairs as one GEMM) scores exactly what the
 * one-candidate-at-a-time path scores, whatever the chunk sizes. */
static void test_batched_equals_single(void **state)
{
    (void)state;
    rank_items it = make_items();
    rank_shape s = small_shape(0, 2);
    s.max_hist = 4;
    rank_model *m;
    rp_error err;
    assert_int_equal(rank_model_create(&s, &it, fac, SIMD, 3, &m, &err), RP_OK);
    for (size_t i = 0; i < m->nparams; i++) m->params[i] *= 1.5f;
    rank__derive(m);
    rank_event hist[7];
    for (int l = 0; l < 7; l++) hist[l] = (rank_event){(uint32_t)(l * 3 % NI), 5, 4.0f, 1000 + l};
    enum { NCAND = 37 };
    rank_cand cands[NCAND];
    for (int c = 0; c < NCAND; c++)
        cands[c] = (rank_cand){(uint32_t)(c * 5 % (NI + 3)), (uint8_t)(c % 5), 0.1f * (float)c};
    float all[NCAND], one[NCAND], w1[NCAND], w2[NCAND];
    int32_t b1[NCAND], b2[NCAND];
    rank_ws *ws, *small;
    assert_int_equal(rank_ws_create(m, &ws), RP_OK);
    assert_int_equal(rank__ws_create(m, 3, 7, 0, &small), RP_OK);
    assert_int_equal(rank_score(m, ws, hist, 7, 5000, cands, NCAND, all, b1, w1), RP_OK);
    for (int c = 0; c < NCAND; c++)
        assert_int_equal(rank_score(m, small, hist, 7, 5000, &cands[c], 1, &one[c], &b2[c], &w2[c]),
                         RP_OK);
    for (int c = 0; c < NCAND; c++) {
        if (!(all[c] > 0.0f && all[c] < 1.0f)) print_error("score %d: %g\n", c, all[c]);
        assert_true(all[c] > 0.0f && all[c] < 1.0f);
        assert_float_equal(all[c], one[c], 1e-5);
        assert_int_equal(b1[c], b2[c]);
        assert_true(b1[c] >= 3 && b1[c] < 7); /* only the last L = 4 events are read */
        assert_float_equal(w1[c], w2[c], 1e-5);
    }
    /* The inference path (first attention layer as [t | 1] x HP) equals the training
     * path that the gradient checks cover. */
    rank_ws *tw;
    assert_int_equal(rank__ws_create(m, 8, 8, 1, &tw), RP_OK);
    rank__user_features(m, hist, 7, 5000, &tw->u);
    for (int c = 0; c < 8; c++) rank__cand_features(m, &tw->u, &cands[c], &tw->cf[c]);
    rank__forward(m, tw, 8);
    for (int c = 0; c < 8; c++) assert_float_equal(all[c], 1.0f / (1.0f + expf(-tw->logit[c])), 1e-5);
    rank_ws_free(tw);
    /* An empty history still scores; no explanation. */
    assert_int_equal(rank_score(m, ws, hist, 0, 5000, cands, 3, all, b1, w1), RP_OK);
    assert_int_equal(b1[0], -1);
    rank_ws_free(ws);
    rank_ws_free(small);
    rank_model_free(m);
}

static void test_file_round_trip_and_damage(void **state)
{
    (void)state;
    rank_items it = make_items();
    rank_shape s = small_shape(2, 2);
    rank_model *m, *back;
    rp_error err;
    assert_int_equal(rank_model_create(&s, &it, fac, SIMD, 5, &m, &err), RP_OK);
    float mean[RANK_N_DENSE] = {1, 2, 3, 4, 5, 6}, sd[RANK_N_DENSE] = {1, 1, 2, 2, 3, 3};
    rank__set_norm(m, mean, sd);
    char path[] = "/tmp/rank_model_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(rank_model_save(m, path, &err), RP_OK);
    assert_int_equal(rank_model_load(path, &back, &err), RP_OK);
    assert_int_equal(rank_model_nparams(back), rank_model_nparams(m));
    assert_int_equal(rank_model_shape(back)->cross_rank, 2);
    assert_int_equal(rank_model_item(back, 100 + 7 * 5), 5);
    assert_int_equal(rank_model_item(back, 101), NI); /* unknown: the OOV row */
    rank_event hist[3] = {{1, 5, 4.0f, 10}, {2, 1, 0, 20}, {3, 5, 2.5f, 30}};
    rank_cand cands[4] = {{0, 1, 0.5f}, {5, 1, 0.2f}, {NI, 2, 0.0f}, {11, 3, 0.9f}};
    float a[4], b[4];
    rank_ws *wa, *wb;
    assert_int_equal(rank_ws_create(m, &wa), RP_OK);
    assert_int_equal(rank_ws_create(back, &wb), RP_OK);
    rank_score(m, wa, hist, 3, 100, cands, 4, a, NULL, NULL);
    rank_score(back, wb, hist, 3, 100, cands, 4, b, NULL, NULL);
    for (int c = 0; c < 4; c++) assert_float_equal(a[c], b[c], 0.0);
    rank_ws_free(wa);
    rank_ws_free(wb);
    rank_model_free(back);

    /* One flipped byte in the weights: refused, the message says checksum. */
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, 600, SEEK_SET);
    int ch = fgetc(fp);
    fseek(fp, 600, SEEK_SET);
    fputc(ch ^ 0x40, fp);
    fclose(fp);
    assert_int_equal(rank_model_load(path, &back, &err), RP_ECORRUPT);
    assert_null(back);
    assert_non_null(strstr(err.msg, "checksum"));
    /* Truncated. */
    assert_int_equal(truncate(path, 100), 0);
    assert_int_equal(rank_model_load(path, &back, &err), RP_ECORRUPT);
    /* Missing. */
    unlink(path);
    assert_int_equal(rank_model_load(path, &back, &err), RP_ENOENT);
    assert_non_null(strstr(err.msg, path));
    /* Another format version. */
    assert_int_equal(rank_model_save(m, path, &err), RP_OK);
    fp = fopen(path, "r+b");
    fseek(fp, 8, SEEK_SET);
    fputc(9, fp);
    fclose(fp);
    assert_int_equal(rank_model_load(path, &back, &err), RP_EVERSION);
    unlink(path);
    rank_model_free(m);
}

static void test_shape_errors_name_the_field(void **state)
{
    (void)state;
    rank_shape s = small_shape(0, 2);
    rp_error err;
    s.att1 = 0;
    assert_int_equal(rank_shape_check(&s, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "att1"));
    s = small_shape(0, 2);
    s.deep[1] = 99999;
    assert_int_equal(rank_shape_check(&s, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "deep[1]"));
    rank_shape def = rank_shape_default();
    assert_int_equal(rank_shape_x0(&def), 4 * 32 + 3 * 8 + RANK_N_DENSE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_linear_relu),
        cmocka_unit_test(test_grad_attention),
        cmocka_unit_test(test_grad_cross_full),
        cmocka_unit_test(test_grad_cross_low_rank),
        cmocka_unit_test(test_grad_embeddings),
        cmocka_unit_test(test_grad_whole_model),
        cmocka_unit_test(test_batched_equals_single),
        cmocka_unit_test(test_file_round_trip_and_damage),
        cmocka_unit_test(test_shape_errors_name_the_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
