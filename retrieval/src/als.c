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

/* Histories of at most this many distinct items update the precomputed Cholesky factor
 * of YᵀY + λI one rank at a time (about 3k² flops each) instead of forming and
 * factorising their own matrix (k³/3 flops): most items of a catalogue have few
 * interactions. */
#define ALS_UPDATE_MAX 8

struct ret_als_gram {
    uint32_t k;
    float reg;
    float *yty; /* k × k, full */
    float *r0;  /* k × k, upper Cholesky factor of YᵀY + λI (row-major, b >= a) */
};

/* The upper-triangle updates of row a start at column a rounded down to a multiple of
 * 8: the few extra (lower-triangle) elements are never read, and the loops then run in
 * whole vectors without a scalar tail (k is usually a multiple of 8). Every element is
 * computed by itself, so this changes no bit of the result. */
#define ALS_ROW_START(a) ((a) & ~7u)

/* dst[i] += s * a[i] */
static inline void axpy1(float *restrict dst, const float *restrict a, float s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) dst[i] += s * a[i];
}

/* dst[i] += s0 a[i] + s1 b[i] + s2 c[i] + s3 d[i] */
static inline void axpy4(float *restrict dst, const float *restrict a, const float *restrict b,
                         const float *restrict c, const float *restrict d, float s0, float s1,
                         float s2, float s3, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) dst[i] += s0 * a[i] + s1 * b[i] + s2 * c[i] + s3 * d[i];
}

/* Σ a[i] b[i] in eight interleaved partial sums added in a fixed order: vectorizable,
 * and the same bits whichever instructions the compiler picks. */
static inline float dot(const float *restrict a, const float *restrict b, uint32_t n)
{
    float acc[8] = {0};
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (uint32_t l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* In-place Cholesky A = RᵀR of the upper triangle of A (row-major), right-looking so
 * every inner loop is a contiguous axpy over a row. -1 when not positive definite. */
ALS_CLONES
static int als__cholesky(float *restrict A, uint32_t k)
{
    for (uint32_t c = 0; c < k; c++) {
        float *restrict rc = A + (size_t)c * k;
        float d = rc[c];
        if (!(d > 0.0f) || !isfinite(d)) return -1;
        d = sqrtf(d);
        rc[c] = d;
        float inv = 1.0f / d;
        for (uint32_t m = c + 1; m < k; m++) rc[m] *= inv;
        for (uint32_t m = c + 1; m < k; m++) {
            uint32_t b = ALS_ROW_START(m);
            axpy1(A + (size_t)m * k + b, rc + b, -rc[m], k - b);
        }
    }
    return 0;
}

/*
 * Solves (YᵀY + Σ_j alpha r_j y_j y_jᵀ + λI) x = Σ_j (1 + alpha r_j) y_j for the n
 * distinct, ascending items cols[] (r NULL = 1 each). A is k*k scratch and v k floats
 * of scratch. Returns 0, or -1 when the system is not positive definite.
 */
ALS_CLONES
static int als__solve_row(const float *restrict y, const ret_als_gram *g,
                          const uint32_t *restrict cols, const float *restrict r, size_t n,
                          float alpha, float *restrict A, float *restrict v, float *restrict x)
{
    const uint32_t k = g->k;
    memset(x, 0, k * sizeof *x);
    if (n == 0) return 0;
    if (n <= ALS_UPDATE_MAX) {
        /* R stays upper triangular through each rank-1 update with sqrt(w) y
         * (Givens-style, as LINPACK's schud). */
        memcpy(A, g->r0, (size_t)k * k * sizeof *A);
        for (size_t j = 0; j < n; j++) {
            const float *p = y + (size_t)cols[j] * k;
            float w = alpha * (r ? r[j] : 1.0f);
            axpy1(x, p, 1.0f + w, k);
            if (w == 0.0f) continue;
            float sw = sqrtf(w);
            for (uint32_t i = 0; i < k; i++) v[i] = sw * p[i];
            for (uint32_t c = 0; c < k; c++) {
                float *restrict rc = A + (size_t)c * k;
                float d = rc[c], vc = v[c];
                float nd = sqrtf(d * d + vc * vc), id = 1.0f / d;
                float s = vc * id, cs = nd * id, inv = d / nd;
                rc[c] = nd;
                for (uint32_t i = c + 1; i < k; i++) {
                    float rn = (rc[i] + s * v[i]) * inv;
                    v[i] = cs * v[i] - s * rn;
                    rc[i] = rn;
                }
            }
        }
    } else {
        memcpy(A, g->yty, (size_t)k * k * sizeof *A);
        size_t j = 0;
        /* Four rank-1 updates per pass over A: A stays in L1, and each load/store of
         * an element carries four multiply-adds. */
        for (; j + 4 <= n; j += 4) {
            const float *p0 = y + (size_t)cols[j] * k, *p1 = y + (size_t)cols[j + 1] * k;
            const float *p2 = y + (size_t)cols[j + 2] * k, *p3 = y + (size_t)cols[j + 3] * k;
            float w0 = alpha * (r ? r[j] : 1.0f), w1 = alpha * (r ? r[j + 1] : 1.0f);
            float w2 = alpha * (r ? r[j + 2] : 1.0f), w3 = alpha * (r ? r[j + 3] : 1.0f);
            for (uint32_t a = 0; a < k; a++) {
                uint32_t b = ALS_ROW_START(a);
                axpy4(A + (size_t)a * k + b, p0 + b, p1 + b, p2 + b, p3 + b, w0 * p0[a],
                      w1 * p1[a], w2 * p2[a], w3 * p3[a], k - b);
            }
            axpy4(x, p0, p1, p2, p3, 1.0f + w0, 1.0f + w1, 1.0f + w2, 1.0f + w3, k);
        }
        for (; j < n; j++) {
            const float *p0 = y + (size_t)cols[j] * k;
            float w0 = alpha * (r ? r[j] : 1.0f);
            for (uint32_t a = 0; a < k; a++) {
                uint32_t b = ALS_ROW_START(a);
                axpy1(A + (size_t)a * k + b, p0 + b, w0 * p0[a], k - b);
            }
            axpy1(x, p0, 1.0f + w0, k);
        }
        for (uint32_t a = 0; a < k; a++) A[(size_t)a * k + a] += g->reg;
        if (als__cholesky(A, k)) return -1;
    }
    /* Rᵀz = b (in place in x), then R x = z. */
    for (uint32_t c = 0; c < k; c++) {
        const float *rc = A + (size_t)c * k;
        float z = x[c] / rc[c];
        x[c] = z;
        axpy1(x + c + 1, rc + c + 1, -z, k - c - 1);
    }
    for (uint32_t c = k; c-- > 0;) {
        const float *rc = A + (size_t)c * k;
        x[c] = (x[c] - dot(rc + c + 1, x + c + 1, k - c - 1)) / rc[c];
    }
    return 0;
}

/* Fills g (already sized for k) from n item vectors. -1 when YᵀY + λI is not positive
 * definite (reg = 0 with too few or dependent vectors). */
static int als__gram_fill(ret_als_gram *g, const float *y, uint32_t n)
{
    const uint32_t k = g->k;
    if (n == 0)
        memset(g->yty, 0, (size_t)k * k * sizeof *g->yty);
    else
        /* Upper triangle of YᵀY, then mirrored so that both triangles are valid. */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)k, (int)n, 1.0f, y, (int)k,
                    0.0f, g->yty, (int)k);
    for (uint32_t a = 0; a < k; a++)
        for (uint32_t b = 0; b < a; b++) g->yty[(size_t)a * k + b] = g->yty[(size_t)b * k + a];
    memcpy(g->r0, g->yty, (size_t)k * k * sizeof *g->r0);
    for (uint32_t a = 0; a < k; a++) g->r0[(size_t)a * k + a] += g->reg;
    return als__cholesky(g->r0, k);
}

static ret_als_gram *als__gram_alloc(uint32_t k, float reg)
{
    ret_als_gram *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->k = k;
    g->reg = reg;
    g->yty = malloc((size_t)k * k * sizeof *g->yty);
    g->r0 = malloc((size_t)k * k * sizeof *g->r0);
    if (!g->yty || !g->r0) {
        ret_als_gram_free(g);
        return NULL;
    }
    return g;
}

int ret_als_gram_create(const float *y, uint32_t n_items, uint32_t k, float reg,
                        ret_als_gram **out, rp_error *err)
{
    *out = NULL;
    if (k == 0 || k > RET_ALS_MAX_FACTORS)
        return rp_errorf(err, RP_EINVAL, "ALS gram: factors %u is outside 1..%u", k,
                         RET_ALS_MAX_FACTORS);
    if (!isfinite(reg) || reg < 0)
        return rp_errorf(err, RP_EINVAL, "ALS gram: reg %g must be finite and >= 0", (double)reg);
    ret_als_gram *g = als__gram_alloc(k, reg);
    if (!g) return rp_errorf(err, RP_ENOMEM, "ALS gram: out of memory");
    if (als__gram_fill(g, y, n_items)) {
        ret_als_gram_free(g);
        return rp_errorf(err, RP_EINVAL,
                         "ALS gram: YᵀY + %gI of %u item vectors is not positive definite "
                         "(NaN/inf in the factors, or reg 0)",
                         (double)reg, n_items);
    }
    *out = g;
    return RP_OK;
}

void ret_als_gram_free(ret_als_gram *g)
{
    if (!g) return;
    free(g->yty);
    free(g->r0);
    free(g);
}

uint32_t ret_als_gram_dim(const ret_als_gram *g)
{
    return g->k;
}

float ret_als_gram_reg(const ret_als_gram *g)
{
    return g->reg;
}

const float *ret_als_gram_yty(const ret_als_gram *g)
{
    return g->yty;
}

size_t ret_als_fold_in_scratch(uint32_t k, size_t n)
{
    return ((size_t)k * k + k) * sizeof(float) +
           n * (sizeof(pairpos) + sizeof(uint32_t) + sizeof(float)) + 64;
}

int ret_als_fold_in(const float *y, uint32_t n_items, const ret_als_gram *g,
                    const uint32_t *items, const float *r, size_t n, float alpha, void *scratch,
                    float *out, rp_error *err)
{
    const uint32_t k = g->k;
    if (!(alpha >= 0) || !isfinite(alpha))
        return rp_errorf(err, RP_EINVAL, "fold-in: alpha %g must be finite and >= 0",
                         (double)alpha);
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
    float *A = mem, *v = A + (size_t)k * k;
    pairpos *pp = (pairpos *)(v + k);
    uint32_t *cols = (uint32_t *)(pp + n);
    float *rr = (float *)(cols + n);
    for (size_t j = 0; j < n; j++) pp[j] = (pairpos){items[j], (uint32_t)j, r ? r[j] : 1.0f};
    size_t m = merge_sorted(pp, n);
    for (size_t j = 0; j < m; j++) {
        cols[j] = pp[j].item;
        rr[j] = pp[j].r;
    }
    int bad = als__solve_row(y, g, cols, rr, m, alpha, A, v, out);
    if (!scratch) free(mem);
    if (bad)
        return rp_errorf(err, RP_EINTERNAL,
                         "fold-in: the normal equation is not positive definite (reg %g)",
                         (double)g->reg);
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
                          uint32_t nrows, const float *other, uint32_t nother, float alpha,
                          int threads, ret_als_gram *g, float *outf)
{
    if (als__gram_fill(g, other, nother)) return -1;
    const uint32_t k = g->k;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *A = malloc(((size_t)k * k + k) * sizeof *A);
        if (!A) failed = 1;
        /* Rows differ a lot in length (popular items): hand them out in small chunks. */
#pragma omp for schedule(dynamic, 8)
        for (uint32_t u = 0; u < nrows; u++) {
            if (!A) continue;
            if (als__solve_row(other, g, idx + off[u], r + off[u], (size_t)(off[u + 1] - off[u]),
                               alpha, A, A + (size_t)k * k, outf + (size_t)u * k))
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
    float *cr = NULL;
    ret_als_gram *gram = NULL;
    if (!model) goto fail;
    model->n_users = nu;
    model->n_items = ni;
    model->k = k;
    model->reg = p->reg;
    model->alpha = p->alpha;
    model->user_factors = malloc((size_t)nu * k * sizeof(float));
    model->item_factors = calloc((size_t)ni * k, sizeof(float));
    gram = als__gram_alloc(k, p->reg);
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
        if (als__half_step(coff, crow, cr, ni, model->user_factors, nu, p->alpha, threads, gram,
                           model->item_factors) ||
            als__half_step(m->row_off, m->cols, m->r, nu, model->item_factors, ni, p->alpha,
                           threads, gram, model->user_factors)) {
            openblas_set_num_threads(blas_threads);
            rc = rp_errorf(err, RP_EINTERNAL,
                           "ALS sweep %u: a normal equation is not positive definite (reg %g)",
                           it + 1, (double)p->reg);
            goto fail;
        }
        if (p->cancel && *p->cancel) {
            openblas_set_num_threads(blas_threads);
            rc = rp_errorf(err, RP_ECANCELED, "ALS training interrupted after sweep %u of %u",
                           it + 1, p->iters);
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
    ret_als_gram_free(gram);
    *out = model;
    return RP_OK;
fail:
    if (rc == RP_ENOMEM) rp_errorf(err, RP_ENOMEM, "ALS training: out of memory");
    free(coff);
    free(crow);
    free(cr);
    ret_als_gram_free(gram);
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
