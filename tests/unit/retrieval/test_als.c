/* Tests retrieval/src/als.c: the row solve against a double-precision
 * reference, fold-in == trained user vector, determinism across thread counts,
 * ranking quality on clustered data, bad input. */
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

#include "ret/als.h"

#define E(expr)                                                                            \
    do {                                                                                   \
        rp_error e_ = {0};                                                                 \
        (void)e_;                                                                          \
        int rc_ = (expr);                                                                  \
        if (rc_ != RP_OK) fail_msg("%s -> %s", #expr, rp_strerror(rc_));                   \
    } while (0)

/* A clustered synthetic dataset held in memory: user u belongs to cluster u % C and
 * interacts with items of its cluster (items i with i % C == cluster), plus a little
 * noise. Every array lives in this struct. */
typedef struct synth {
    idx_dataset ds;
    uint64_t *user_ids, *item_ids, *user_off;
    idx_event *events;
} synth;

static uint64_t rng_state;
static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)((rng_state >> 33) % n);
}

static void synth_make(synth *s, uint32_t nu, uint32_t ni, uint32_t clusters, uint32_t per_user)
{
    memset(s, 0, sizeof *s);
    rng_state = 42;
    s->user_ids = malloc(nu * sizeof *s->user_ids);
    s->item_ids = malloc(ni * sizeof *s->item_ids);
    s->user_off = malloc((nu + 1) * sizeof *s->user_off);
    s->events = malloc((size_t)nu * per_user * sizeof *s->events);
    for (uint32_t u = 0; u < nu; u++) s->user_ids[u] = 1000 + u;
    for (uint32_t i = 0; i < ni; i++) s->item_ids[i] = 5000 + i;
    uint64_t w = 0;
    for (uint32_t u = 0; u < nu; u++) {
        s->user_off[u] = w;
        uint32_t c = u % clusters;
        for (uint32_t j = 0; j < per_user; j++) {
            uint32_t item;
            if (j % 10 == 9) /* noise */
                item = rnd(ni);
            else {
                /* popular items of the cluster more often: a skewed pick */
                uint32_t slot = rnd(ni / clusters);
                slot = rnd(slot + 1);
                item = slot * clusters + c;
            }
            s->events[w++] = (idx_event){item, 5, 1.0f + (float)(j % 3), (int64_t)j};
        }
    }
    s->user_off[nu] = w;
    s->ds.n_users = nu;
    s->ds.n_items = ni;
    s->ds.n_events = w;
    s->ds.user_ids = s->user_ids;
    s->ds.item_ids = s->item_ids;
    s->ds.user_off = s->user_off;
    s->ds.events = s->events;
}

static void synth_free(synth *s)
{
    free(s->user_ids);
    free(s->item_ids);
    free(s->user_off);
    free(s->events);
}

/* Solves the normal equation of one row in double precision by Gaussian elimination
 * with partial pivoting, building A and b straight from the definition. */
static void reference_row(const float *y, uint32_t k, const uint32_t *items, const float *r,
                          size_t n, uint32_t n_items, float reg, float alpha, double *x)
{
    double *A = calloc((size_t)k * k, sizeof *A), *b = calloc(k, sizeof *b);
    /* YᵀY over all items, then confidence corrections per distinct item */
    for (uint32_t i = 0; i < n_items; i++)
        for (uint32_t a = 0; a < k; a++)
            for (uint32_t c = 0; c < k; c++)
                A[a * k + c] += (double)y[i * k + a] * y[i * k + c];
    double *rs = calloc(n_items, sizeof *rs);
    char *seen = calloc(n_items, 1);
    for (size_t j = 0; j < n; j++) {
        rs[items[j]] += r ? r[j] : 1.0;
        seen[items[j]] = 1;
    }
    for (uint32_t i = 0; i < n_items; i++) {
        if (!seen[i]) continue;
        double cm1 = alpha * rs[i];
        for (uint32_t a = 0; a < k; a++) {
            b[a] += (1.0 + cm1) * y[i * k + a];
            for (uint32_t c = 0; c < k; c++) A[a * k + c] += cm1 * y[i * k + a] * y[i * k + c];
        }
    }
    for (uint32_t a = 0; a < k; a++) A[a * k + a] += reg;
    for (uint32_t c = 0; c < k; c++) {
        uint32_t p = c;
        for (uint32_t i = c + 1; i < k; i++)
            if (fabs(A[i * k + c]) > fabs(A[p * k + c])) p = i;
        for (uint32_t j = 0; j < k; j++) {
            double t = A[c * k + j];
            A[c * k + j] = A[p * k + j];
            A[p * k + j] = t;
        }
        double t = b[c];
        b[c] = b[p];
        b[p] = t;
        for (uint32_t i = c + 1; i < k; i++) {
            double f = A[i * k + c] / A[c * k + c];
            for (uint32_t j = c; j < k; j++) A[i * k + j] -= f * A[c * k + j];
            b[i] -= f * b[c];
        }
    }
    for (uint32_t c = k; c-- > 0;) {
        double s = b[c];
        for (uint32_t j = c + 1; j < k; j++) s -= A[c * k + j] * x[j];
        x[c] = s / A[c * k + c];
    }
    free(A);
    free(b);
    free(rs);
    free(seen);
}

static void check_against_reference(const float *y, uint32_t n_items, uint32_t k,
                                    const ret_als_gram *g, const uint32_t *items,
                                    const float *r, size_t n, float reg, float alpha)
{
    float x[64];
    double ref[64];
    rp_error err = {0};
    if (ret_als_fold_in(y, n_items, g, items, r, n, alpha, NULL, x, &err) != RP_OK)
        fail_msg("fold-in: %s", rp_error_text(&err));
    reference_row(y, k, items, r, n, n_items, reg, alpha, ref);
    for (uint32_t a = 0; a < k; a++)
        if (fabs(x[a] - ref[a]) > 1e-4 * (1.0 + fabs(ref[a])))
            fail_msg("history of %zu: x[%u] = %.7f, reference %.7f", n, a, (double)x[a], ref[a]);
}

static void test_fold_in_matches_reference(void **state)
{
    (void)state;
    const uint32_t n_items = 50, k = 16;
    float *y = malloc(n_items * k * sizeof *y), x[16], x2[16];
    rng_state = 7;
    for (uint32_t i = 0; i < n_items * k; i++) y[i] = (float)rnd(2000) / 1000.0f - 1.0f;
    ret_als_gram *g = NULL;
    E(ret_als_gram_create(y, n_items, k, 3.0f, &g, &e_));
    assert_int_equal(ret_als_gram_dim(g), k);
    assert_true(ret_als_gram_reg(g) == 3.0f);
    /* a short history (rank updates of the shared factor): unsorted, with a duplicate
     * (item 3 twice: its strengths add up) */
    uint32_t items[] = {17, 3, 42, 3, 0, 49, 8};
    float r[] = {1.0f, 2.0f, 0.5f, 1.5f, 3.0f, 1.0f, 0.25f};
    check_against_reference(y, n_items, k, g, items, r, 7, 3.0f, 5.0f);
    /* a long history (its own matrix and Cholesky), one event with weight 0 */
    uint32_t many[30];
    float rm[30];
    for (uint32_t j = 0; j < 30; j++) {
        many[j] = (j * 7 + 3) % n_items;
        rm[j] = j == 4 ? 0.0f : 0.5f + (float)(j % 4);
    }
    check_against_reference(y, n_items, k, g, many, rm, 30, 3.0f, 5.0f);
    check_against_reference(y, n_items, k, g, many, NULL, 30, 3.0f, 0.5f);

    /* duplicates with r = NULL count once each: [5, 5] == [5] with r = 2 */
    float two = 2.0f;
    uint32_t dup[] = {5, 5}, one[] = {5};
    E(ret_als_fold_in(y, n_items, g, dup, NULL, 2, 5.0f, NULL, x, &e_));
    E(ret_als_fold_in(y, n_items, g, one, &two, 1, 5.0f, NULL, x2, &e_));
    assert_memory_equal(x, x2, sizeof x);
    ret_als_gram_free(g);
    free(y);
}

static void test_fold_in_bad_input(void **state)
{
    (void)state;
    const uint32_t n_items = 4, k = 2;
    float y[8] = {1, 0, 0, 1, 1, 1, 0.5f, -1}, x[2] = {9, 9};
    ret_als_gram *g = NULL;
    E(ret_als_gram_create(y, n_items, k, 1.0f, &g, &e_));
    rp_error err = {0};
    uint32_t bad[] = {1, 4};
    assert_int_equal(ret_als_fold_in(y, n_items, g, bad, NULL, 2, 1, NULL, x, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "history[1]"));
    assert_non_null(strstr(err.msg, "not below 4"));
    uint32_t ok[] = {1, 2};
    float neg[] = {1.0f, -0.5f};
    assert_int_equal(ret_als_fold_in(y, n_items, g, ok, neg, 2, 1, NULL, x, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "weight"));
    float nan_r[] = {NAN, 1.0f};
    assert_int_equal(ret_als_fold_in(y, n_items, g, ok, nan_r, 2, 1, NULL, x, &err), RP_EINVAL);
    assert_int_equal(ret_als_fold_in(y, n_items, g, ok, NULL, 2, -1, NULL, x, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "alpha"));
    /* an empty history is the zero vector */
    E(ret_als_fold_in(y, n_items, g, NULL, NULL, 0, 1, NULL, x, &e_));
    assert_true(x[0] == 0.0f && x[1] == 0.0f);
    /* a caller-provided scratch gives the same answer as an internal one */
    float x2[2];
    char scratch[1024];
    assert_true(ret_als_fold_in_scratch(k, 2) <= sizeof scratch);
    E(ret_als_fold_in(y, n_items, g, ok, NULL, 2, 1, NULL, x, &e_));
    E(ret_als_fold_in(y, n_items, g, ok, NULL, 2, 1, scratch, x2, &e_));
    assert_memory_equal(x, x2, sizeof x);
    ret_als_gram_free(g);

    /* bad gram inputs: k out of range, negative reg, NaN factors */
    ret_als_gram *g2 = NULL;
    assert_int_equal(ret_als_gram_create(y, n_items, 0, 1.0f, &g2, &err), RP_EINVAL);
    assert_int_equal(ret_als_gram_create(y, n_items, k, -1.0f, &g2, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "reg"));
    y[3] = NAN;
    assert_int_equal(ret_als_gram_create(y, n_items, k, 1.0f, &g2, &err), RP_EINVAL);
    assert_null(g2);
    assert_non_null(strstr(err.msg, "NaN"));
}

static void test_matrix_from_dataset(void **state)
{
    (void)state;
    synth s;
    synth_make(&s, 30, 40, 3, 20);
    /* a duplicate pair in user 0's events: items 7, 7 */
    s.events[0].item = 7;
    s.events[1].item = 7;
    uint32_t take[30];
    for (uint32_t u = 0; u < 30; u++) take[u] = 16;
    ret_als_matrix *m = NULL;
    E(ret_als_matrix_from_dataset(&s.ds, take, 0, &m, &e_));
    assert_int_equal(m->n_users, 30);
    assert_int_equal(m->n_items, 40);
    for (uint32_t u = 0; u < 30; u++) {
        float sum = 0;
        for (uint64_t j = m->row_off[u]; j < m->row_off[u + 1]; j++) {
            if (j > m->row_off[u]) assert_true(m->cols[j] > m->cols[j - 1]);
            sum += m->r[j];
        }
        assert_true(sum == 16.0f); /* each of the 16 kept events counted once */
    }
    int found7 = 0;
    for (uint64_t j = m->row_off[0]; j < m->row_off[1]; j++)
        if (m->cols[j] == 7) found7 = m->r[j] >= 2.0f;
    assert_true(found7);
    ret_als_matrix_free(m);
    /* use_value sums the event values; a negative value is refused */
    E(ret_als_matrix_from_dataset(&s.ds, NULL, 1, &m, &e_));
    ret_als_matrix_free(m);
    s.events[3].value = -1.0f;
    rp_error err = {0};
    assert_int_equal(ret_als_matrix_from_dataset(&s.ds, NULL, 1, &m, &err), RP_EINVAL);
    assert_null(m);
    assert_non_null(strstr(err.msg, "user 1000"));
    synth_free(&s);
}

static ret_als_model *train(const ret_als_matrix *m, uint32_t k, int threads, uint64_t seed)
{
    ret_als_params p;
    ret_als_params_default(&p);
    p.factors = k;
    p.iters = 6;
    p.reg = 1.0f;
    p.alpha = 5.0f;
    p.threads = threads;
    p.seed = seed;
    ret_als_model *model = NULL;
    rp_error err = {0};
    int rc = ret_als_train(m, &p, &model, &err);
    if (rc != RP_OK) fail_msg("ret_als_train: %s", rp_error_text(&err));
    return model;
}

static void test_train_fold_in_and_determinism(void **state)
{
    (void)state;
    synth s;
    synth_make(&s, 300, 400, 4, 30);
    ret_als_matrix *m = NULL;
    E(ret_als_matrix_from_dataset(&s.ds, NULL, 0, &m, &e_));
    ret_als_model *a = train(m, 16, 1, 1), *b = train(m, 16, 2, 1), *c = train(m, 16, 2, 2);
    size_t ub = (size_t)m->n_users * 16 * sizeof(float), ib = (size_t)m->n_items * 16 * sizeof(float);
    /* same seed, one thread or two: the very same bits */
    assert_memory_equal(a->user_factors, b->user_factors, ub);
    assert_memory_equal(a->item_factors, b->item_factors, ib);
    /* another seed: another model */
    assert_true(memcmp(a->user_factors, c->user_factors, ub) != 0);
    for (size_t j = 0; j < (size_t)m->n_users * 16; j++) assert_true(isfinite(a->user_factors[j]));

    /* Each user's history, folded in against the final item factors, is its trained
     * vector: the history in time order (with its duplicates) gives the same rows. */
    float x[16];
    ret_als_gram *g = NULL;
    E(ret_als_gram_create(a->item_factors, m->n_items, 16, a->reg, &g, &e_));
    uint32_t items[64];
    for (uint32_t u = 0; u < m->n_users; u++) {
        size_t n = 0;
        for (uint64_t j = s.user_off[u]; j < s.user_off[u + 1]; j++) items[n++] = s.events[j].item;
        E(ret_als_fold_in(a->item_factors, m->n_items, g, items, NULL, n, a->alpha, NULL, x,
                          &e_));
        for (uint32_t d = 0; d < 16; d++) {
            float t = a->user_factors[(size_t)u * 16 + d];
            if (x[d] != t)
                fail_msg("user %u dim %u: fold-in %.9g, trained %.9g", u, d, (double)x[d],
                         (double)t);
        }
    }
    ret_als_gram_free(g);

    /* Quality: the top-10 unseen items of each user come from its own cluster. */
    uint32_t good = 0, total = 0;
    float *scores = malloc(m->n_items * sizeof *scores);
    char *seen = malloc(m->n_items);
    for (uint32_t u = 0; u < m->n_users; u++) {
        memset(seen, 0, m->n_items);
        for (uint64_t j = m->row_off[u]; j < m->row_off[u + 1]; j++) seen[m->cols[j]] = 1;
        for (uint32_t i = 0; i < m->n_items; i++) {
            float sc = 0;
            for (uint32_t d = 0; d < 16; d++)
                sc += a->user_factors[(size_t)u * 16 + d] * a->item_factors[(size_t)i * 16 + d];
            scores[i] = seen[i] ? -INFINITY : sc;
        }
        for (int t = 0; t < 10; t++) {
            uint32_t best = 0;
            for (uint32_t i = 1; i < m->n_items; i++)
                if (scores[i] > scores[best]) best = i;
            good += best % 4 == u % 4;
            total++;
            scores[best] = -INFINITY;
        }
    }
    if (good < total * 9 / 10) fail_msg("only %u of %u top-10 items in the user's cluster", good, total);
    free(scores);
    free(seen);
    ret_als_model_free(a);
    ret_als_model_free(b);
    ret_als_model_free(c);
    ret_als_matrix_free(m);
    synth_free(&s);
}

static void test_train_bad_params(void **state)
{
    (void)state;
    synth s;
    synth_make(&s, 10, 10, 2, 5);
    ret_als_matrix *m = NULL;
    E(ret_als_matrix_from_dataset(&s.ds, NULL, 0, &m, &e_));
    ret_als_params p;
    ret_als_params_default(&p);
    assert_int_equal(p.factors, 64);
    assert_true(p.reg == 30.0f && p.alpha == 5.0f && p.iters == 10);
    ret_als_model *model = (ret_als_model *)1;
    rp_error err = {0};
    p.factors = 0;
    assert_int_equal(ret_als_train(m, &p, &model, &err), RP_EINVAL);
    assert_null(model);
    assert_non_null(strstr(err.msg, "factors"));
    p.factors = 8;
    p.iters = 0;
    assert_int_equal(ret_als_train(m, &p, &model, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "iters"));
    p.iters = 2;
    p.alpha = -1;
    assert_int_equal(ret_als_train(m, &p, &model, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "alpha"));
    p.alpha = 5;
    p.reg = NAN;
    assert_int_equal(ret_als_train(m, &p, &model, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "reg"));
    ret_als_matrix_free(m);
    synth_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_in_matches_reference),
        cmocka_unit_test(test_fold_in_bad_input),
        cmocka_unit_test(test_matrix_from_dataset),
        cmocka_unit_test(test_train_fold_in_and_determinism),
        cmocka_unit_test(test_train_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
