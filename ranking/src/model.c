/* The ranking model: shapes, parameter layout, initialisation, the model file. */
#include "rank_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define RANK_MAGIC 0x314B4E4152505200ull /* "\0RPRANK1" little-endian */
#define RANK_FORMAT_VERSION 1u
#define HDR_WORDS 64

rank_shape rank_shape_default(void)
{
    rank_shape s = {0};
    s.dim = 32;
    s.side_dim = 8;
    s.max_hist = 50;
    s.att1 = 64;
    s.att2 = 32;
    s.n_cross = 3;
    s.cross_rank = 0;
    s.n_deep = 2;
    s.deep[0] = 256;
    s.deep[1] = 128;
    return s;
}

uint32_t rank_shape_x0(const rank_shape *s) { return 4 * s->dim + 3 * s->side_dim + RANK_N_DENSE; }

static int check_range(rp_error *err, const char *name, uint32_t v, uint32_t lo, uint32_t hi)
{
    if (v < lo || v > hi)
        return rp_errorf(err, RP_EINVAL, "ranker shape: %s: %u is outside %u..%u", name, v, lo, hi);
    return RP_OK;
}

int rank_shape_check(const rank_shape *s, rp_error *err)
{
    int rc;
    if ((rc = check_range(err, "dim", s->dim, 1, 1024)) ||
        (rc = check_range(err, "side_dim", s->side_dim, 1, 256)) ||
        (rc = check_range(err, "max_hist", s->max_hist, 1, 1000)) ||
        (rc = check_range(err, "att1", s->att1, 1, 4096)) ||
        (rc = check_range(err, "att2", s->att2, 1, 4096)) ||
        (rc = check_range(err, "n_cross", s->n_cross, 0, RANK__MAX_CROSS)) ||
        (rc = check_range(err, "cross_rank", s->cross_rank, 0, 4096)) ||
        (rc = check_range(err, "n_deep", s->n_deep, 0, RANK_MAX_DEEP)) ||
        (rc = check_range(err, "n_items", s->n_items, 0, 200000000)) ||
        (rc = check_range(err, "n_cats", s->n_cats, 0, 65535)) ||
        (rc = check_range(err, "sim_dim", s->sim_dim, 0, 4096)))
        return rc;
    for (uint32_t i = 0; i < s->n_deep; i++) {
        char name[16];
        snprintf(name, sizeof name, "deep[%u]", i);
        if ((rc = check_range(err, name, s->deep[i], 1, 4096))) return rc;
    }
    return RP_OK;
}

static float *take(float **cur, size_t *n, size_t count)
{
    float *p = *cur ? *cur + *n : NULL;
    *n += (count + RANK__ALIGN - 1) / RANK__ALIGN * RANK__ALIGN;
    return p;
}

size_t rank__layout(const rank_shape *s, float *base, rank__p *p)
{
    size_t n = 0;
    float *b = base;
    uint32_t d = s->dim, e = s->side_dim, D0 = rank_shape_x0(s);
    memset(p, 0, sizeof *p);
    p->Eitem = take(&b, &n, (size_t)(s->n_items + 1) * d);
    p->Ekind = take(&b, &n, (size_t)RANK_N_KINDS * d);
    p->Egap = take(&b, &n, (size_t)RANK_N_GAPS * d);
    p->Ecat = take(&b, &n, (size_t)(s->n_cats ? s->n_cats : 1) * d);
    p->Epop = take(&b, &n, (size_t)RANK_N_POP * e);
    p->Eact = take(&b, &n, (size_t)RANK_N_ACT * e);
    p->Esrc = take(&b, &n, (size_t)RANK_N_SRC * e);
    p->W1 = take(&b, &n, (size_t)s->att1 * 4 * d);
    p->b1 = take(&b, &n, s->att1);
    p->W2 = take(&b, &n, (size_t)s->att2 * s->att1);
    p->b2 = take(&b, &n, s->att2);
    p->w3 = take(&b, &n, s->att2);
    for (uint32_t l = 0; l < s->n_cross; l++) {
        if (s->cross_rank) {
            p->cU[l] = take(&b, &n, (size_t)D0 * s->cross_rank);
            p->cV[l] = take(&b, &n, (size_t)D0 * s->cross_rank);
        } else {
            p->cU[l] = take(&b, &n, (size_t)D0 * D0);
        }
        p->cb[l] = take(&b, &n, D0);
    }
    uint32_t in = D0;
    for (uint32_t i = 0; i < s->n_deep; i++) {
        p->dW[i] = take(&b, &n, (size_t)s->deep[i] * in);
        p->db[i] = take(&b, &n, s->deep[i]);
        in = s->deep[i];
    }
    p->wo = take(&b, &n, (size_t)D0 + (s->n_deep ? s->deep[s->n_deep - 1] : 0));
    p->bo = take(&b, &n, 1);
    return n;
}

/* ---- random numbers (splitmix64) ---- */

static uint64_t rng_next(uint64_t *st)
{
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unif(uint64_t *st) { return (double)(rng_next(st) >> 11) * (1.0 / 9007199254740992.0); }
static double rng_normal(uint64_t *st)
{
    double u1 = rng_unif(st), u2 = rng_unif(st);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
static void init_uniform(float *w, size_t n, double a, uint64_t *st)
{
    for (size_t i = 0; i < n; i++) w[i] = (float)((2.0 * rng_unif(st) - 1.0) * a);
}
static void init_normal(float *w, size_t n, double sd, uint64_t *st)
{
    for (size_t i = 0; i < n; i++) w[i] = (float)(rng_normal(st) * sd);
}
static void init_glorot(float *w, uint32_t out, uint32_t in, uint64_t *st)
{
    init_uniform(w, (size_t)out * in, sqrt(6.0 / (in + out)), st);
}

void rank__derive(rank_model *m)
{
    uint32_t d = m->s.dim;
    for (uint32_t j = 0; j < m->s.att1; j++) {
        const float *w = m->p.W1 + (size_t)j * 4 * d;
        for (uint32_t k = 0; k < d; k++) {
            m->Wh[(size_t)j * d + k] = w[k] + w[2 * d + k];
            m->Wt[(size_t)j * d + k] = w[d + k] - w[2 * d + k];
            m->Wp[(size_t)j * d + k] = w[3 * d + k];
        }
    }
}

void rank__set_norm(rank_model *m, const float *mean, const float *std)
{
    for (int f = 0; f < RANK_N_DENSE; f++) {
        m->norm_mean[f] = mean[f];
        m->norm_std[f] = std[f] > 1e-6f ? std[f] : 1.0f;
    }
}

static void free_items(rank_model *m)
{
    free(m->item_ids);
    free(m->cat_off);
    free(m->cats);
    free(m->pop_recent);
    free(m->pop_total);
    free(m->pop_bucket);
    free(m->sim);
    m->item_ids = NULL;
    m->cat_off = NULL;
    m->cats = NULL;
    m->pop_recent = m->pop_total = m->sim = NULL;
    m->pop_bucket = NULL;
}

static int copy_items(rank_model *m, const rank_items *it, rp_error *err)
{
    const rank_shape *s = &m->s;
    uint32_t n = s->n_items;
    if (it->n_items != n)
        return rp_errorf(err, RP_EINVAL, "ranker items: n_items %u differs from the model's %u",
                         it->n_items, n);
    if (!it->item_ids || !it->pop_recent || !it->pop_total || !it->pop_count)
        return rp_errorf(err, RP_EINVAL, "ranker items: item_ids and popularity are required");
    if (s->sim_dim && !it->factors)
        return rp_errorf(err, RP_EINVAL, "ranker items: factors required (sim_dim %u)", s->sim_dim);
    for (uint32_t i = 1; i < n; i++)
        if (it->item_ids[i] <= it->item_ids[i - 1])
            return rp_errorf(err, RP_EINVAL, "ranker items: item_ids not strictly ascending at %u", i);
    uint32_t nref = it->cat_off ? it->cat_off[n] : 0;
    for (uint32_t r = 0; r < nref; r++)
        if (it->cats[r] >= s->n_cats)
            return rp_errorf(err, RP_EINVAL, "ranker items: category %u >= n_cats %u", it->cats[r],
                             s->n_cats);
    free_items(m);
    m->item_ids = malloc((size_t)n * 8 + 8);
    m->cat_off = calloc((size_t)n + 1, 4);
    m->cats = malloc((size_t)nref * 2 + 2);
    m->pop_recent = malloc((size_t)n * 4 + 4);
    m->pop_total = malloc((size_t)n * 4 + 4);
    m->pop_bucket = malloc((size_t)n + 1);
    m->sim = malloc((size_t)n * s->sim_dim * 4 + 4);
    if (!m->item_ids || !m->cat_off || !m->cats || !m->pop_recent || !m->pop_total ||
        !m->pop_bucket || !m->sim) {
        free_items(m);
        return rp_errorf(err, RP_ENOMEM, "ranker items: out of memory for %u items", n);
    }
    memcpy(m->item_ids, it->item_ids, (size_t)n * 8);
    if (it->cat_off) {
        memcpy(m->cat_off, it->cat_off, ((size_t)n + 1) * 4);
        memcpy(m->cats, it->cats, (size_t)nref * 2);
    }
    m->n_catref = nref;
    for (uint32_t i = 0; i < n; i++) {
        m->pop_recent[i] = it->pop_recent[i];
        m->pop_total[i] = it->pop_total[i];
        uint32_t b = 0;
        for (uint64_t c = (uint64_t)it->pop_count[i] + 1; c > 1; c >>= 1) b++;
        m->pop_bucket[i] = (uint8_t)(b < RANK_N_POP ? b : RANK_N_POP - 1);
        if (s->sim_dim) {
            const float *f = it->factors + (size_t)i * s->sim_dim;
            float *o = m->sim + (size_t)i * s->sim_dim;
            double nn = 0;
            for (uint32_t k = 0; k < s->sim_dim; k++) nn += (double)f[k] * f[k];
            float inv = nn > 0 ? (float)(1.0 / sqrt(nn)) : 0.0f;
            for (uint32_t k = 0; k < s->sim_dim; k++) o[k] = f[k] * inv;
        }
    }
    return RP_OK;
}

int rank_model_set_items(rank_model *m, const rank_items *items, rp_error *err)
{
    if (!m->owned) return rp_errorf(err, RP_EINVAL, "ranker: a loaded model is read-only");
    return copy_items(m, items, err);
}

static int alloc_params(rank_model *m)
{
    m->nparams = rank__layout(&m->s, NULL, &m->p);
    m->params = aligned_alloc(64, m->nparams * sizeof(float));
    size_t wn = ((size_t)m->s.att1 * m->s.dim + RANK__ALIGN) * sizeof(float);
    wn = (wn + 63) / 64 * 64;
    m->Wh = aligned_alloc(64, wn);
    m->Wt = aligned_alloc(64, wn);
    m->Wp = aligned_alloc(64, wn);
    if (!m->params || !m->Wh || !m->Wt || !m->Wp) return RP_ENOMEM;
    memset(m->params, 0, m->nparams * sizeof(float));
    rank__layout(&m->s, m->params, &m->p);
    return RP_OK;
}

int rank_model_create(const rank_shape *shape, const rank_items *items, const float *init_emb,
                      uint32_t init_dim, uint64_t seed, rank_model **out, rp_error *err)
{
    *out = NULL;
    int rc = rank_shape_check(shape, err);
    if (rc) return rc;
    rank_model *m = calloc(1, sizeof *m);
    if (!m) return rp_errorf(err, RP_ENOMEM, "ranker: out of memory");
    m->s = *shape;
    m->owned = 1;
    m->D0 = rank_shape_x0(shape);
    if (alloc_params(m)) {
        rc = rp_errorf(err, RP_ENOMEM, "ranker: out of memory for %zu parameters", m->nparams);
        goto err;
    }
    if ((rc = copy_items(m, items, err))) goto err;
    for (int f = 0; f < RANK_N_DENSE; f++) {
        m->norm_mean[f] = 0;
        m->norm_std[f] = 1;
    }

    const rank_shape *s = &m->s;
    uint32_t d = s->dim, e = s->side_dim, D0 = m->D0;
    uint64_t st = seed * 0x2545F4914F6CDD1Dull + 1;
    rank__p *p = &m->p;
    init_normal(p->Eitem, (size_t)(s->n_items + 1) * d, 0.05, &st);
    if (init_emb && init_dim) {
        /* A Gaussian random projection keeps the factors' geometry (dot products up to
         * noise); rescale so that rows have the spread of the other embeddings. */
        float *R = malloc((size_t)init_dim * d * sizeof(float));
        if (!R) {
            rc = rp_errorf(err, RP_ENOMEM, "ranker: out of memory");
            goto err;
        }
        init_normal(R, (size_t)init_dim * d, 1.0 / sqrt((double)d), &st);
        double ss = 0;
        for (uint32_t i = 0; i < s->n_items; i++) {
            const float *f = init_emb + (size_t)i * init_dim;
            float *o = p->Eitem + (size_t)i * d;
            for (uint32_t k = 0; k < d; k++) {
                double a = 0;
                for (uint32_t j = 0; j < init_dim; j++) a += (double)f[j] * R[(size_t)j * d + k];
                o[k] = (float)a;
                ss += a * a;
            }
        }
        free(R);
        double sd = s->n_items ? sqrt(ss / ((double)s->n_items * d)) : 0;
        if (sd > 0) {
            float scale = (float)(0.1 / sd);
            for (size_t i = 0; i < (size_t)s->n_items * d; i++) p->Eitem[i] *= scale;
        }
    }
    init_normal(p->Ekind, (size_t)RANK_N_KINDS * d, 0.05, &st);
    init_normal(p->Egap, (size_t)RANK_N_GAPS * d, 0.05, &st);
    init_normal(p->Ecat, (size_t)(s->n_cats ? s->n_cats : 1) * d, 0.05, &st);
    init_normal(p->Epop, (size_t)RANK_N_POP * e, 0.05, &st);
    init_normal(p->Eact, (size_t)RANK_N_ACT * e, 0.05, &st);
    init_normal(p->Esrc, (size_t)RANK_N_SRC * e, 0.05, &st);
    init_glorot(p->W1, s->att1, 4 * d, &st);
    init_glorot(p->W2, s->att2, s->att1, &st);
    init_glorot(p->w3, 1, s->att2, &st);
    for (uint32_t l = 0; l < s->n_cross; l++) {
        if (s->cross_rank) {
            init_glorot(p->cU[l], D0, s->cross_rank, &st);
            init_glorot(p->cV[l], D0, s->cross_rank, &st);
        } else {
            init_glorot(p->cU[l], D0, D0, &st);
        }
    }
    uint32_t in = D0;
    for (uint32_t i = 0; i < s->n_deep; i++) {
        init_glorot(p->dW[i], s->deep[i], in, &st);
        in = s->deep[i];
    }
    init_glorot(p->wo, 1, D0 + (s->n_deep ? s->deep[s->n_deep - 1] : 0), &st);
    rank__derive(m);
    *out = m;
    return RP_OK;
err:
    rank_model_free(m);
    return rc;
}

void rank_model_free(rank_model *m)
{
    if (!m) return;
    if (m->owned) {
        free(m->params);
        free_items(m);
    }
    if (m->map) munmap(m->map, m->map_len);
    free(m->Wh);
    free(m->Wt);
    free(m->Wp);
    free(m);
}

const rank_shape *rank_model_shape(const rank_model *m) { return &m->s; }
size_t rank_model_nparams(const rank_model *m) { return m->nparams; }

uint32_t rank_model_item(const rank_model *m, uint64_t id)
{
    uint32_t lo = 0, hi = m->s.n_items;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (m->item_ids[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < m->s.n_items && m->item_ids[lo] == id ? lo : m->s.n_items;
}

uint64_t rank_model_item_id(const rank_model *m, uint32_t i)
{
    return i < m->s.n_items ? m->item_ids[i] : 0;
}

double rank_model_flops_per_candidate(const rank_model *m, uint32_t n_hist)
{
    const rank_shape *s = &m->s;
    double L = n_hist < s->max_hist ? n_hist : s->max_hist;
    double d = s->dim, D0 = m->D0, f = 0;
    f += 2.0 * d * s->att1;                   /* t-only part of layer 1 */
    f += L * 2.0 * d * s->att1;               /* (h*t) Wp per pair */
    f += L * 2.0 * (double)s->att1 * s->att2; /* layer 2 per pair */
    f += L * 2.0 * s->att2;                   /* layer 3 per pair */
    f += 2.0 * L * d;                         /* weighted sum */
    /* the user-only columns of x0 enter the first cross and deep layers once per request */
    double Ku = rank__x0_user(s);
    for (uint32_t l = 0; l < s->n_cross; l++)
        f += s->cross_rank ? 4.0 * D0 * s->cross_rank : 2.0 * D0 * (l == 0 ? Ku : D0);
    double in = D0;
    for (uint32_t i = 0; i < s->n_deep; i++) {
        f += 2.0 * (i == 0 ? Ku : in) * s->deep[i];
        in = s->deep[i];
    }
    f += 2.0 * (D0 + (s->n_deep ? in : 0));
    return f;
}

/* ---- the model file ----
 * [header: 64 little-endian u64 words][sections, each 64-byte aligned][u64 FNV-1a of all
 * bytes before it]. Header words: see the H_* indices. */
enum {
    H_MAGIC, H_VERSION, H_DIM, H_SIDE, H_L, H_ATT1, H_ATT2, H_NCROSS, H_RANK, H_NDEEP,
    H_DEEP0, H_DEEP1, H_DEEP2, H_DEEP3, H_NITEMS, H_NCATS, H_SIMDIM,
    H_NKINDS, H_NGAPS, H_NPOP, H_NACT, H_NSRC, H_NDENSE, H_NCATREF, H_NPARAMS,
    H_NORM, /* 2 * RANK_N_DENSE words: float bits of mean then std */
    H_SEC = H_NORM + 2 * RANK_N_DENSE, /* 8 sections: offset, length */
    H_END = H_SEC + 16,
};
enum { S_PARAMS, S_IDS, S_CATOFF, S_CATS, S_POPR, S_POPT, S_POPB, S_SIM, S_COUNT };

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001B3ull;
    }
    return h;
}
#define FNV_INIT 0xCBF29CE484222325ull

static uint64_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bitsf(uint64_t w)
{
    uint32_t u = (uint32_t)w;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void section_sizes(const rank_model *m, size_t len[S_COUNT])
{
    uint32_t n = m->s.n_items;
    len[S_PARAMS] = m->nparams * 4;
    len[S_IDS] = (size_t)n * 8;
    len[S_CATOFF] = ((size_t)n + 1) * 4;
    len[S_CATS] = (size_t)m->n_catref * 2;
    len[S_POPR] = (size_t)n * 4;
    len[S_POPT] = (size_t)n * 4;
    len[S_POPB] = n;
    len[S_SIM] = (size_t)n * m->s.sim_dim * 4;
}

static int write_all(int fd, const void *p, size_t n, uint64_t *h)
{
    const char *b = p;
    *h = fnv1a(*h, p, n);
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int rank_model_save(const rank_model *m, const char *path, rp_error *err)
{
    size_t len[S_COUNT], off[S_COUNT];
    const void *src[S_COUNT] = {m->params, m->item_ids, m->cat_off, m->cats,
                                m->pop_recent, m->pop_total, m->pop_bucket, m->sim};
    section_sizes(m, len);
    uint64_t hdr[HDR_WORDS] = {0};
    size_t pos = sizeof hdr;
    for (int i = 0; i < S_COUNT; i++) {
        off[i] = pos;
        pos = (pos + len[i] + 63) / 64 * 64;
        hdr[H_SEC + 2 * i] = off[i];
        hdr[H_SEC + 2 * i + 1] = len[i];
    }
    const rank_shape *s = &m->s;
    hdr[H_MAGIC] = RANK_MAGIC;
    hdr[H_VERSION] = RANK_FORMAT_VERSION;
    hdr[H_DIM] = s->dim;
    hdr[H_SIDE] = s->side_dim;
    hdr[H_L] = s->max_hist;
    hdr[H_ATT1] = s->att1;
    hdr[H_ATT2] = s->att2;
    hdr[H_NCROSS] = s->n_cross;
    hdr[H_RANK] = s->cross_rank;
    hdr[H_NDEEP] = s->n_deep;
    for (int i = 0; i < RANK_MAX_DEEP; i++) hdr[H_DEEP0 + i] = s->deep[i];
    hdr[H_NITEMS] = s->n_items;
    hdr[H_NCATS] = s->n_cats;
    hdr[H_SIMDIM] = s->sim_dim;
    hdr[H_NKINDS] = RANK_N_KINDS;
    hdr[H_NGAPS] = RANK_N_GAPS;
    hdr[H_NPOP] = RANK_N_POP;
    hdr[H_NACT] = RANK_N_ACT;
    hdr[H_NSRC] = RANK_N_SRC;
    hdr[H_NDENSE] = RANK_N_DENSE;
    hdr[H_NCATREF] = m->n_catref;
    hdr[H_NPARAMS] = m->nparams;
    for (int f = 0; f < RANK_N_DENSE; f++) {
        hdr[H_NORM + f] = fbits(m->norm_mean[f]);
        hdr[H_NORM + RANK_N_DENSE + f] = fbits(m->norm_std[f]);
    }

    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return rp_errorf(err, RP_EINVAL, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return rp_errorf(err, RP_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    uint64_t h = FNV_INIT;
    static const char zeros[64];
    size_t at = 0;
    int rc = RP_OK;
    if (write_all(fd, hdr, sizeof hdr, &h)) goto io;
    at = sizeof hdr;
    for (int i = 0; i < S_COUNT; i++) {
        if (off[i] > at && write_all(fd, zeros, off[i] - at, &h)) goto io;
        if (len[i] && write_all(fd, src[i], len[i], &h)) goto io;
        at = off[i] + len[i];
    }
    if (pos > at && write_all(fd, zeros, pos - at, &h)) goto io;
    uint64_t sum = h, dummy = 0;
    if (write_all(fd, &sum, 8, &dummy)) goto io;
    if (fsync(fd)) goto io;
    if (close(fd)) {
        fd = -1;
        goto io;
    }
    fd = -1;
    if (rename(tmp, path)) goto io;
    return RP_OK;
io:
    rc = rp_errorf(err, RP_EIO, "%s: write failed: %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp);
    return rc;
}

int rank_model_load(const char *path, rank_model **out, rp_error *err)
{
    *out = NULL;
    int rc = RP_OK;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return rp_errorf(err, errno == ENOENT ? RP_ENOENT : RP_EIO, "%s: cannot open: %s", path,
                         strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        rc = rp_errorf(err, RP_EIO, "%s: stat: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    size_t flen = (size_t)st.st_size;
    if (flen < HDR_WORDS * 8 + 8) {
        close(fd);
        return rp_errorf(err, RP_ECORRUPT, "%s: %zu bytes is too short for a ranker model", path,
                         flen);
    }
    void *map = mmap(NULL, flen, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return rp_errorf(err, RP_EIO, "%s: mmap: %s", path, strerror(errno));
    rank_model *m = calloc(1, sizeof *m);
    if (!m) {
        munmap(map, flen);
        return rp_errorf(err, RP_ENOMEM, "ranker: out of memory");
    }
    m->map = map;
    m->map_len = flen;
    const uint64_t *hdr = map;
    if (hdr[H_MAGIC] != RANK_MAGIC) {
        rc = rp_errorf(err, RP_ECORRUPT, "%s: not a ranker model (bad magic)", path);
        goto err;
    }
    if (hdr[H_VERSION] != RANK_FORMAT_VERSION) {
        rc = rp_errorf(err, RP_EVERSION, "%s: format version %llu, this build reads %u", path,
                       (unsigned long long)hdr[H_VERSION], RANK_FORMAT_VERSION);
        goto err;
    }
    uint64_t sum;
    memcpy(&sum, (const char *)map + flen - 8, 8);
    if (fnv1a(FNV_INIT, map, flen - 8) != sum) {
        rc = rp_errorf(err, RP_ECORRUPT, "%s: checksum mismatch (file damaged or truncated)", path);
        goto err;
    }
    if (hdr[H_NKINDS] != RANK_N_KINDS || hdr[H_NGAPS] != RANK_N_GAPS || hdr[H_NPOP] != RANK_N_POP ||
        hdr[H_NACT] != RANK_N_ACT || hdr[H_NSRC] != RANK_N_SRC || hdr[H_NDENSE] != RANK_N_DENSE) {
        rc = rp_errorf(err, RP_EVERSION, "%s: feature vocabularies differ from this build's", path);
        goto err;
    }
    rank_shape *s = &m->s;
    uint64_t big = 1ull << 32;
    for (int i = H_DIM; i <= H_SIMDIM; i++)
        if (hdr[i] >= big) {
            rc = rp_errorf(err, RP_ECORRUPT, "%s: header word %d out of range", path, i);
            goto err;
        }
    s->dim = (uint32_t)hdr[H_DIM];
    s->side_dim = (uint32_t)hdr[H_SIDE];
    s->max_hist = (uint32_t)hdr[H_L];
    s->att1 = (uint32_t)hdr[H_ATT1];
    s->att2 = (uint32_t)hdr[H_ATT2];
    s->n_cross = (uint32_t)hdr[H_NCROSS];
    s->cross_rank = (uint32_t)hdr[H_RANK];
    s->n_deep = (uint32_t)hdr[H_NDEEP];
    for (int i = 0; i < RANK_MAX_DEEP; i++) s->deep[i] = (uint32_t)hdr[H_DEEP0 + i];
    s->n_items = (uint32_t)hdr[H_NITEMS];
    s->n_cats = (uint32_t)hdr[H_NCATS];
    s->sim_dim = (uint32_t)hdr[H_SIMDIM];
    if ((rc = rank_shape_check(s, err))) {
        rp_error_prefix(err, "%s", path);
        rc = err ? (err->code = RP_ECORRUPT) : RP_ECORRUPT;
        goto err;
    }
    m->D0 = rank_shape_x0(s);
    m->nparams = rank__layout(s, NULL, &m->p);
    m->n_catref = (uint32_t)hdr[H_NCATREF];
    if (hdr[H_NPARAMS] != m->nparams) {
        rc = rp_errorf(err, RP_ECORRUPT, "%s: %llu parameters, the shapes need %zu", path,
                       (unsigned long long)hdr[H_NPARAMS], m->nparams);
        goto err;
    }
    size_t len[S_COUNT];
    section_sizes(m, len);
    void *sec[S_COUNT];
    for (int i = 0; i < S_COUNT; i++) {
        uint64_t o = hdr[H_SEC + 2 * i], l = hdr[H_SEC + 2 * i + 1];
        if (l != len[i] || o % 64 || o > flen - 8 || l > flen - 8 - o) {
            rc = rp_errorf(err, RP_ECORRUPT, "%s: section %d has offset %llu length %llu (want %zu)",
                           path, i, (unsigned long long)o, (unsigned long long)l, len[i]);
            goto err;
        }
        sec[i] = (char *)map + o;
    }
    m->params = sec[S_PARAMS];
    rank__layout(s, m->params, &m->p);
    m->item_ids = sec[S_IDS];
    m->cat_off = sec[S_CATOFF];
    m->cats = sec[S_CATS];
    m->pop_recent = sec[S_POPR];
    m->pop_total = sec[S_POPT];
    m->pop_bucket = sec[S_POPB];
    m->sim = sec[S_SIM];
    if (m->cat_off[s->n_items] != m->n_catref) {
        rc = rp_errorf(err, RP_ECORRUPT, "%s: category offsets do not end at %u", path, m->n_catref);
        goto err;
    }
    for (uint32_t i = 0; i < s->n_items; i++)
        if (m->cat_off[i] > m->cat_off[i + 1]) {
            rc = rp_errorf(err, RP_ECORRUPT, "%s: category offsets decrease at item %u", path, i);
            goto err;
        }
    for (uint32_t r = 0; r < m->n_catref; r++)
        if (m->cats[r] >= s->n_cats) {
            rc = rp_errorf(err, RP_ECORRUPT, "%s: category %u >= %u", path, m->cats[r], s->n_cats);
            goto err;
        }
    for (uint32_t i = 0; i < s->n_items; i++)
        if (m->pop_bucket[i] >= RANK_N_POP) {
            rc = rp_errorf(err, RP_ECORRUPT, "%s: popularity bucket out of range", path);
            goto err;
        }
    for (int f = 0; f < RANK_N_DENSE; f++) {
        m->norm_mean[f] = bitsf(hdr[H_NORM + f]);
        m->norm_std[f] = bitsf(hdr[H_NORM + RANK_N_DENSE + f]);
    }
    size_t wn = ((size_t)s->att1 * s->dim + RANK__ALIGN) * sizeof(float);
    wn = (wn + 63) / 64 * 64;
    m->Wh = aligned_alloc(64, wn);
    m->Wt = aligned_alloc(64, wn);
    m->Wp = aligned_alloc(64, wn);
    if (!m->Wh || !m->Wt || !m->Wp) {
        rc = rp_errorf(err, RP_ENOMEM, "ranker: out of memory");
        goto err;
    }
    rank__derive(m);
    *out = m;
    return RP_OK;
err:
    rank_model_free(m);
    return rc;
}
