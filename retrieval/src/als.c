/* Implicit ALS: the trainer and the fold-in share als__solve_row (see ret/als.h). */
#include "ret/als.h"

#include "rp/clock.h"
#include "rp/threads.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* The row kernels are cloned for AVX2 where the compiler supports it: the dispatch
 * happens once at load time, so training and fold-in on one machine run the same
 * clone and produce the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define ALS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ALS_CLONES
#endif

void ret_als_params_default(ret_als_params *p)
{
    memset(p, 0, sizeof *p);
    p->factors = 64;
    p->reg = 30.0f;
    p->alpha = 5.0f;
    p->iters = 10;
    p->seed = 1;
    p->threads = 0;
}

/* ---- interactions ---------------------------------------------------------------- */

/* An event of a history: its item, its position (so equal items merge in a fixed
 * order) and its strength. */
typedef struct pairpos {
    uint32_t item;
    uint32_t pos;
    float r;
} pairpos;

static int pairpos_cmp(const void *a, const void *b)
{
    const pairpos *x = a, *y = b;
    if (x->item != y->item) return (x->item > y->item) - (x->item < y->item);
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Sorts by (item, position) and merges equal items by summing r in position order.
 * Returns the number of distinct items. */
static size_t merge_sorted(pairpos *p, size_t n)
{
    if (n == 0) return 0;
    qsort(p, n, sizeof *p, pairpos_cmp);
    size_t w = 0;
    for (size_t i = 1; i < n; i++) {
        if (p[i].item == p[w].item)
            p[w].r += p[i].r;
        else
            p[++w] = p[i];
    }
    return w + 1;
}

int ret_als_matrix_from_dataset(const idx_dataset *ds, const uint32_t *take, int use_value,
                                ret_als_matrix **out, rp_error *err)
{
    *out = NULL;
    int rc = RP_ENOMEM;
    ret_als_matrix *m = calloc(1, sizeof *m);
    pairpos *tmp = NULL;
    if (!m) goto fail;
    m->n_users = ds->n_users;
    m->n_items = ds->n_items;
    uint64_t total = 0, longest = 0;
    for (uint32_t u = 0; u < ds->n_users; u++) {
        uint64_t n = ds->user_off[u + 1] - ds->user_off[u];
        if (take && take[u] < n) n = take[u];
        total += n;
        if (n > longest) longest = n;
    }
    m->row_off = malloc(((size_t)ds->n_users + 1) * sizeof *m->row_off);
    m->cols = malloc((total ? total : 1) * sizeof *m->cols);
    m->r = malloc((total ? total : 1) * sizeof *m->r);
    tmp = malloc((longest ? longest : 1) * sizeof *tmp);
    if (!m->row_off || !m->cols || !m->r || !tmp) goto fail;

    uint64_t w = 0;
    m->row_off[0] = 0;
    for (uint32_t u = 0; u < ds->n_users; u++) {
        const idx_event *ev = ds->events + ds->user_off[u];
        uint64_t n = ds->user_off[u + 1] - ds->user_off[u];
        if (take && take[u] < n) n = take[u];
        for (uint64_t j = 0; j < n; j++) {
            float r = use_value ? ev[j].value : 1.0f;
            if (!isfinite(r) || r < 0) {
                rc = rp_errorf(err, RP_EINVAL,
                               "interaction value %g of user %llu, event %llu: must be finite "
                               "and >= 0 for ALS confidence",
                               (double)r, (unsigned long long)ds->user_ids[u],
                               (unsigned long long)j);
                goto fail;
            }
            tmp[j] = (pairpos){ev[j].item, (uint32_t)j, r};
        }
        size_t k = merge_sorted(tmp, (size_t)n);
        for (size_t j = 0; j < k; j++) {
            m->cols[w] = tmp[j].item;
            m->r[w] = tmp[j].r;
            w++;
        }
        m->row_off[u + 1] = w;
    }
    m->nnz = w;
    free(tmp);
    *out = m;
    return RP_OK;
fail:
    if (rc == RP_ENOMEM) rp_errorf(err, RP_ENOMEM, "ALS interaction matrix: out of memory");
    free(tmp);
    ret_als_matrix_free(m);
    return rc;
}

void ret_als_matrix_free(ret_als_matrix *m)
{
    if (!m) return;
    free(m->row_off);
    free(m->cols);
    free(m->r);
    free(m);
}

/* ---- the row solve ---------------------------------------------------------------- */

/*
 * Solves (G + Σ_j alpha r_j y_j y_jᵀ + reg I) x = Σ_j (1 + alpha r_j) y_j for the n
 * distinct, ascending items cols[] (r NULL = 1 each). A is k*k scratch; only its upper
 * triangle (row-major, b >= a) is used. Returns 0, or -1 when not positive definite.
 */
ALS_CLONES
static int als__solve_row(const float *restrict y, uint32_t k, const float *restrict gram,
                          const uint32_t *restrict cols, const float *restrict r, size_t n,
                          float reg, float alpha, float *restrict A, float *restrict x)
{
    if (n == 0) {
        memset(x, 0, k * sizeof *x);
        return 0;
    }
    memcpy(A, gram, (size_t)k * k * sizeof *A);
    memset(x, 0, k * sizeof *x);
    size_t j = 0;
    /* Four rank-1 updates per pass over A: A stays in L1, and each load/store of an
     * element carries four multiply-adds. */
    for (; j + 4 <= n; j += 4) {
        const float *p0 = y + (size_t)cols[j] * k, *p1 = y + (size_t)cols[j + 1] * k;
        const float *p2 = y + (size_t)cols[j + 2] * k, *p3 = y + (size_t)cols[j + 3] * k;
        float w0 = alpha * (r ? r[j] : 1.0f), w1 = alpha * (r ? r[j + 1] : 1.0f);
        float w2 = alpha * (r ? r[j + 2] : 1.0f), w3 = alpha * (r ? r[j + 3] : 1.0f);
        for (uint32_t a = 0; a < k; a++) {
            float s0 = w0 * p0[a], s1 = w1 * p1[a], s2 = w2 * p2[a], s3 = w3 * p3[a];
            float *restrict row = A + (size_t)a * k;
            for (uint32_t b = a; b < k; b++)
                row[b] += s0 * p0[b] + s1 * p1[b] + s2 * p2[b] + s3 * p3[b];
            x[a] += (1.0f + w0) * p0[a] + (1.0f + w1) * p1[a] + (1.0f + w2) * p2[a] +
                    (1.0f + w3) * p3[a];
        }
    }
    for (; j < n; j++) {
        const float *p0 = y + (size_t)cols[j] * k;
        float w0 = alpha * (r ? r[j] : 1.0f);
        for (uint32_t a = 0; a < k; a++) {
            float s0 = w0 * p0[a];
            float *restrict row = A + (size_t)a * k;
            for (uint32_t b = a; b < k; b++) row[b] += s0 * p0[b];
            x[a] += (1.0f + w0) * p0[a];
        }
    }
    for (uint32_t a = 0; a < k; a++) A[(size_t)a * k + a] += reg;

    /* Cholesky A = RᵀR, R upper, right-looking so every inner loop is a contiguous
     * axpy over a row. */
    for (uint32_t c = 0; c < k; c++) {
        float *restrict rc = A + (size_t)c * k;
        float d = rc[c];
        if (!(d > 0.0f) || !isfinite(d)) return -1;
        d = sqrtf(d);
        rc[c] = d;
        float inv = 1.0f / d;
        for (uint32_t m = c + 1; m < k; m++) rc[m] *= inv;
        for (uint32_t m = c + 1; m < k; m++) {
            float f = rc[m];
            float *restrict rm = A + (size_t)m * k;
            for (uint32_t i = m; i < k; i++) rm[i] -= f * rc[i];
        }
    }
    /* Rᵀz = b (in place in x), then R x = z. */
    for (uint32_t c = 0; c < k; c++) {
        const float *rc = A + (size_t)c * k;
        float z = x[c] / rc[c];
        x[c] = z;
        for (uint32_t i = c + 1; i < k; i++) x[i] -= z * rc[i];
    }
    for (uint32_t c = k; c-- > 0;) {
        const float *rc = A + (size_t)c * k;
        float s = x[c];
        for (uint32_t i = c + 1; i < k; i++) s -= rc[i] * x[i];
        x[c] = s / rc[c];
    }
    return 0;
}

void ret_als_gram(const float *y, uint32_t n, uint32_t k, float *gram)
{
    if (n == 0) {
        memset(gram, 0, (size_t)k * k * sizeof *gram);
        return;
    }
    /* Upper triangle of YᵀY, then mirrored so callers get the full matrix. */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)k, (int)n, 1.0f, y, (int)k, 0.0f,
                gram, (int)k);
    for (uint32_t a = 0; a < k; a++)
        for (uint32_t b = 0; b < a; b++) gram[(size_t)a * k + b] = gram[(size_t)b * k + a];
}

size_t ret_als_fold_in_scratch(uint32_t k, size_t n)
{
    return (size_t)k * k * sizeof(float) + n * (sizeof(pairpos) + sizeof(uint32_t) + sizeof(float)) +
           64;
}

int ret_als_fold_in(const float *y, uint32_t n_items, const float *gram, uint32_t k,
                    const uint32_t *items, const float *r, size_t n, float reg, float alpha,
                    void *scratch, float *out, rp_error *err)
{
    if (k == 0 || k > RET_ALS_MAX_FACTORS)
        return rp_errorf(err, RP_EINVAL, "fold-in: factors %u is outside 1..%u", k,
                         RET_ALS_MAX_FACTORS);
    if (!(reg >= 0) || !(alpha >= 0) || !isfinite(reg) || !isfinite(alpha))
        return rp_errorf(err, RP_EINVAL, "fold-in: reg %g and alpha %g must be finite and >= 0",
                         (double)reg, (double)alpha);
    for (size_t j = 0; j < n; j++) {
        if (items[j] >= n_items)
            return rp_errorf(err, RP_EINVAL, "fold-in: history[%zu]: item %u is not below %u",
                             j, items[j], n_items);
        if (r && (!isfinite(r[j]) || r[j] < 0))
            return rp_errorf(err, RP_EINVAL,
                             "fold-in: history[%zu]: weight %g must be finite and >= 0", j,
                             (double)r[j]);
    }
    if (n == 0) {
        memset(out, 0, k * sizeof *out);
        return RP_OK;
    }
    void *mem = scratch;
    if (!mem) {
        mem = malloc(ret_als_fold_in_scratch(k, n));
        if (!mem) return rp_errorf(err, RP_ENOMEM, "fold-in: out of memory");
    }
    float *A = mem;
    pairpos *pp = (pairpos *)(A + (size_t)k * k);
    uint32_t *cols = (uint32_t *)(pp + n);
    float *rr = (float *)(cols + n);
    for (size_t j = 0; j < n; j++) pp[j] = (pairpos){items[j], (uint32_t)j, r ? r[j] : 1.0f};
    size_t m = merge_sorted(pp, n);
    for (size_t j = 0; j < m; j++) {
        cols[j] = pp[j].item;
        rr[j] = pp[j].r;
    }
    int bad = als__solve_row(y, k, gram, cols, rr, m, reg, alpha, A, out);
    if (!scratch) free(mem);
    if (bad)
        return rp_errorf(err, RP_EINTERNAL,
                         "fold-in: the normal equation is not positive definite (reg %g)",
                         (double)reg);
    return RP_OK;
}

/* ---- training --------------------------------------------------------------------- */

/* splitmix64: a small, well-mixed PRNG; one stream per seed. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Solves every row of one side against the other side's factors `other`. */
static int als__half_step(const uint64_t *off, const uint32_t *idx, const float *r,
                          uint32_t nrows, const float *other, uint32_t nother, uint32_t k,
                          float reg, float alpha, int threads, float *gram, float *outf)
{
    ret_als_gram(other, nother, k, gram);
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *A = malloc((size_t)k * k * sizeof *A);
        if (!A) failed = 1;
        /* Rows differ a lot in length (popular items): hand them out in small chunks. */
#pragma omp for schedule(dynamic, 8)
        for (uint32_t u = 0; u < nrows; u++) {
            if (!A) continue;
            if (als__solve_row(other, k, gram, idx + off[u], r + off[u],
                               (size_t)(off[u + 1] - off[u]), reg, alpha, A,
                               outf + (size_t)u * k))
                failed = 1;
        }
        free(A);
    }
    return failed ? -1 : 0;
}

int ret_als_train(const ret_als_matrix *m, const ret_als_params *p, ret_als_model **out,
                  rp_error *err)
{
    *out = NULL;
    if (p->factors == 0 || p->factors > RET_ALS_MAX_FACTORS)
        return rp_errorf(err, RP_EINVAL, "factors: %u is outside 1..%u", p->factors,
                         RET_ALS_MAX_FACTORS);
    if (p->iters == 0 || p->iters > RET_ALS_MAX_ITERS)
        return rp_errorf(err, RP_EINVAL, "iters: %u is outside 1..%u", p->iters,
                         RET_ALS_MAX_ITERS);
    if (!isfinite(p->reg) || p->reg < 0)
        return rp_errorf(err, RP_EINVAL, "reg: %g must be finite and >= 0", (double)p->reg);
    if (!isfinite(p->alpha) || p->alpha < 0)
        return rp_errorf(err, RP_EINVAL, "alpha: %g must be finite and >= 0", (double)p->alpha);
    if (m->n_users == 0 || m->n_items == 0)
        return rp_errorf(err, RP_EINVAL, "ALS needs at least one user and one item (%u users, %u items)",
                         m->n_users, m->n_items);

    uint64_t t0 = rp_now_ns();
    const uint32_t k = p->factors, nu = m->n_users, ni = m->n_items;
    int threads = p->threads > 0 ? p->threads : rp_ncores();
    int rc = RP_ENOMEM;
    ret_als_model *model = calloc(1, sizeof *model);
    uint64_t *coff = NULL;
    uint32_t *crow = NULL;
    float *cr = NULL, *gram = NULL;
    if (!model) goto fail;
    model->n_users = nu;
    model->n_items = ni;
    model->k = k;
    model->reg = p->reg;
    model->alpha = p->alpha;
    model->user_factors = malloc((size_t)nu * k * sizeof(float));
    model->item_factors = calloc((size_t)ni * k, sizeof(float));
    gram = malloc((size_t)k * k * sizeof *gram);
    /* The item-major copy (CSC) for the item step; users ascend within each item. */
    coff = calloc((size_t)ni + 1, sizeof *coff);
    crow = malloc((m->nnz ? m->nnz : 1) * sizeof *crow);
    cr = malloc((m->nnz ? m->nnz : 1) * sizeof *cr);
    if (!model->user_factors || !model->item_factors || !gram || !coff || !crow || !cr)
        goto fail;
    for (uint64_t j = 0; j < m->nnz; j++) coff[m->cols[j] + 1]++;
    for (uint32_t i = 0; i < ni; i++) coff[i + 1] += coff[i];
    {
        uint64_t *fill = malloc(((size_t)ni + 1) * sizeof *fill);
        if (!fill) goto fail;
        memcpy(fill, coff, ((size_t)ni + 1) * sizeof *fill);
        for (uint32_t u = 0; u < nu; u++)
            for (uint64_t j = m->row_off[u]; j < m->row_off[u + 1]; j++) {
                uint64_t at = fill[m->cols[j]]++;
                crow[at] = u;
                cr[at] = m->r[j];
            }
        free(fill);
    }

    /* Small positive initial user factors, as in the common implicit-ALS codes: the
     * first item step then sees a well-conditioned, nearly λI system. */
    uint64_t s = p->seed;
    for (size_t j = 0; j < (size_t)nu * k; j++)
        model->user_factors[j] = (float)((splitmix64(&s) >> 40) * (1.0 / 16777216.0)) * 0.01f;

    /* The Gram matrix is 64 × 64: one BLAS thread computes it in about a millisecond,
     * and a BLAS thread pool spinning next to the OpenMP workers would only steal
     * their cores. */
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    for (uint32_t it = 0; it < p->iters; it++) {
        if (als__half_step(coff, crow, cr, ni, model->user_factors, nu, k, p->reg, p->alpha,
                           threads, gram, model->item_factors) ||
            als__half_step(m->row_off, m->cols, m->r, nu, model->item_factors, ni, k, p->reg,
                           p->alpha, threads, gram, model->user_factors)) {
            openblas_set_num_threads(blas_threads);
            rc = rp_errorf(err, RP_EINTERNAL,
                           "ALS sweep %u: a normal equation is not positive definite (reg %g)",
                           it + 1, (double)p->reg);
            goto fail;
        }
        if (p->progress)
            p->progress(p->progress_ctx, it + 1, p->iters, (double)(rp_now_ns() - t0) / 1e9);
    }
    openblas_set_num_threads(blas_threads);
    model->train_seconds = (double)(rp_now_ns() - t0) / 1e9;
    free(coff);
    free(crow);
    free(cr);
    free(gram);
    *out = model;
    return RP_OK;
fail:
    if (rc == RP_ENOMEM) rp_errorf(err, RP_ENOMEM, "ALS training: out of memory");
    free(coff);
    free(crow);
    free(cr);
    free(gram);
    ret_als_model_free(model);
    return rc;
}

void ret_als_model_free(ret_als_model *model)
{
    if (!model) return;
    free(model->user_factors);
    free(model->item_factors);
    free(model);
}
