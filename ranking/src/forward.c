/*
 * Feature assembly, the forward pass (batched: every candidate of a chunk at once, as
 * matrix products) and the hand-written backward pass.
 *
 * The first attention layer over [h, t, h-t, h*t] is split algebraically:
 *   W1 [h; t; h-t; h*t] = (Wa + Wc) h + (Wb - Wc) t + Wd (h*t) = Wh h + Wt t + Wp (h*t),
 * so Wh h is computed once per history event, Wt t once per candidate and only the
 * Wp (h*t) part per (candidate, event) pair, as one GEMM over all pairs of a chunk.
 */
#include "rank_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RM CblasRowMajor
#define NT CblasNoTrans
#define TR CblasTrans

/* ---- features ---- */

static uint8_t kind_of(uint8_t type, float value)
{
    if (type == 5) { /* EVENT_TYPE_RATING */
        long b = lroundf(value * 2.0f);
        if (b < 0) b = 0;
        if (b > 10) b = 10;
        return (uint8_t)(8 + b);
    }
    return type < 8 ? type : 0;
}

static uint8_t log2_bucket(double x, unsigned nb)
{
    if (!(x > 0)) return 0;
    double b = floor(log2(1.0 + x));
    if (b > nb - 1) b = nb - 1;
    return (uint8_t)b;
}

void rank__user_features(const rank_model *m, const rank_event *hist, uint32_t n_hist,
                         int64_t now, rank__user *u)
{
    uint32_t L = m->s.max_hist, N = m->s.n_items;
    uint32_t start = n_hist > L ? n_hist - L : 0;
    u->n = n_hist - start;
    for (uint32_t l = 0; l < u->n; l++) {
        const rank_event *e = &hist[start + l];
        u->item[l] = e->item < N ? e->item : N;
        u->kind[l] = kind_of(e->type, e->value);
        double gap = now > e->ts ? (double)(now - e->ts) / 60.0 : 0.0;
        u->gap[l] = log2_bucket(gap, RANK_N_GAPS);
        u->src_index[l] = (int32_t)(start + l);
    }
    u->activity = (float)log1p((double)n_hist);
    u->act_bucket = log2_bucket((double)n_hist, RANK_N_ACT);
    u->n_sim = 0;
    uint32_t from = n_hist > RANK_SIM_WINDOW ? n_hist - RANK_SIM_WINDOW : 0;
    for (uint32_t i = n_hist; i-- > from;)
        if (hist[i].item < N && m->s.sim_dim) u->sim_item[u->n_sim++] = hist[i].item;
}

/* Everything but the similarity features (left 0). */
static void cand_base(const rank_model *m, const rank__user *u, const rank_cand *c, rank__cand *o)
{
    uint32_t N = m->s.n_items;
    o->item = c->item < N ? c->item : N;
    o->src = c->source < RANK_N_SRC ? c->source : 0;
    float *f = o->dense;
    f[RANK_F_RETRIEVAL_SCORE] = isfinite(c->retrieval_score) ? c->retrieval_score : 0.0f;
    f[RANK_F_SIM_MAX] = 0;
    f[RANK_F_SIM_MEAN] = 0;
    f[RANK_F_ACTIVITY] = u->activity;
    if (o->item == N) {
        o->pop_bucket = 0;
        f[RANK_F_POP_RECENT] = 0;
        f[RANK_F_POP_TOTAL] = 0;
        return;
    }
    o->pop_bucket = m->pop_bucket[o->item];
    f[RANK_F_POP_RECENT] = m->pop_recent[o->item];
    f[RANK_F_POP_TOTAL] = m->pop_total[o->item];
}

static void sim_from(float *f, const float *dots, uint32_t n)
{
    if (n == 0) return; /* cand_base left both features at 0 */
    float mx = -INFINITY, sum = 0;
    for (uint32_t j = 0; j < n; j++) {
        if (dots[j] > mx) mx = dots[j];
        sum += dots[j];
    }
    f[RANK_F_SIM_MAX] = mx;
    f[RANK_F_SIM_MEAN] = sum / (float)n;
}

void rank__cand_features(const rank_model *m, const rank__user *u, const rank_cand *c,
                         rank__cand *o)
{
    cand_base(m, u, c, o);
    uint32_t k = m->s.sim_dim;
    if (o->item == m->s.n_items || !u->n_sim) return;
    const float *t = m->sim + (size_t)o->item * k;
    float dots[RANK_SIM_WINDOW];
    for (uint32_t j = 0; j < u->n_sim; j++) {
        const float *h = m->sim + (size_t)u->sim_item[j] * k;
        float dot = 0;
        for (uint32_t q = 0; q < k; q++) dot += t[q] * h[q];
        dots[j] = dot;
    }
    sim_from(o->dense, dots, u->n_sim);
}

/* Inference: features of cands[0..C) into ws->cf, the cosines as one GEMM. */
static void cand_features_batch(const rank_model *m, rank_ws *ws, const rank_cand *cands,
                                uint32_t C)
{
    const rank__user *u = &ws->u;
    uint32_t k = m->s.sim_dim, ns = u->n_sim, N = m->s.n_items;
    for (uint32_t c = 0; c < C; c++) cand_base(m, u, &cands[c], &ws->cf[c]);
    if (!ns) return;
    for (uint32_t c = 0; c < C; c++) {
        uint32_t it = ws->cf[c].item;
        if (it < N) memcpy(ws->SimT + (size_t)c * k, m->sim + (size_t)it * k, k * sizeof(float));
        else memset(ws->SimT + (size_t)c * k, 0, k * sizeof(float));
    }
    cblas_sgemm(RM, NT, TR, (int)C, (int)ns, (int)k, 1.0f, ws->SimT, (int)k, ws->SimH, (int)k, 0.0f,
                ws->SimO, (int)ns);
    for (uint32_t c = 0; c < C; c++)
        if (ws->cf[c].item < N) sim_from(ws->cf[c].dense, ws->SimO + (size_t)c * ns, ns);
}

/* ---- workspace ---- */

int rank__ws_create(const rank_model *m, uint32_t Ca, uint32_t Cd, int train, rank_ws **out)
{
    *out = NULL;
    const rank_shape *s = &m->s;
    size_t L = s->max_hist, d = s->dim, a1 = s->att1, a2 = s->att2, D0 = m->D0;
    size_t r = s->cross_rank ? s->cross_rank : 1, nc = s->n_cross, nd = s->n_deep;
    size_t maxw = 1;
    for (size_t i = 0; i < nd; i++)
        if (s->deep[i] > maxw) maxw = s->deep[i];
    if (Cd < Ca) Cd = Ca;
    size_t CL = (size_t)Ca * L;
    rank_ws *ws = calloc(1, sizeof *ws);
    if (!ws) return RP_ENOMEM;
    ws->m = m;
    ws->L = (uint32_t)L;
    ws->Ca = Ca;
    ws->Cd = Cd;
    ws->train = train;
    /* Two passes over the same carving: count, then assign. */
    float **slots[64];
    size_t sizes[64];
    int ns = 0;
#define SLOT(ptr, n) (slots[ns] = &(ptr), sizes[ns++] = (n))
    SLOT(ws->H, L * d);
    SLOT(ws->HA, L * a1);
    SLOT(ws->M, d);
    if (!train) {
        size_t k = s->sim_dim;
        SLOT(ws->HP, (d + 1) * L * a1);
        SLOT(ws->T1, Ca * (d + 1));
        SLOT(ws->SimH, RANK_SIM_WINDOW * k);
        SLOT(ws->SimT, Cd * k);
        SLOT(ws->SimO, Cd * RANK_SIM_WINDOW);
        SLOT(ws->UBc, D0);
        SLOT(ws->UBd, maxw);
    }
    SLOT(ws->T, Ca * d);
    SLOT(ws->TA, Ca * a1);
    SLOT(ws->P, CL * d);
    SLOT(ws->R1, CL * a1);
    SLOT(ws->R2, CL * a2);
    SLOT(ws->S, CL);
    SLOT(ws->X, (nc + 1) * Cd * D0);
    SLOT(ws->U, (nc ? nc : 1) * Cd * D0);
    SLOT(ws->V, (nc ? nc : 1) * Cd * r);
    SLOT(ws->Y, (nd ? nd : 1) * Cd * maxw);
    SLOT(ws->logit, Cd);
    if (train) {
        SLOT(ws->dX0, Cd * D0);
        SLOT(ws->dXa, Cd * D0);
        SLOT(ws->dXb, Cd * D0);
        SLOT(ws->dUb, Cd * D0);
        SLOT(ws->dVb, Cd * r);
        SLOT(ws->dYa, Cd * maxw);
        SLOT(ws->dYb, Cd * maxw);
        SLOT(ws->dH, L * d + 2 * a1 * d); /* + two [a1][d] scratch matrices */
        SLOT(ws->dHA, L * a1);
        SLOT(ws->dT, Ca * d);
        SLOT(ws->dTA, Ca * a1);
        SLOT(ws->dP, CL * d);
        SLOT(ws->dR1, CL * a1);
        SLOT(ws->dR2, CL * a2);
        SLOT(ws->dS, CL);
    }
#undef SLOT
    size_t total = 0;
    for (int i = 0; i < ns; i++) total += (sizes[i] + 15) / 16 * 16;
    size_t ints = L * 4 * 2 + L * 2 + 64; /* item, src_index, kind, gap */
    size_t bytes = total * 4 + ints + (size_t)Cd * sizeof(rank__cand) + 128;
    bytes = (bytes + 63) / 64 * 64;
    char *mem = aligned_alloc(64, bytes);
    if (!mem) {
        free(ws);
        return RP_ENOMEM;
    }
    memset(mem, 0, bytes);
    ws->mem = mem;
    float *f = (float *)mem;
    for (int i = 0; i < ns; i++) {
        *slots[i] = f;
        f += (sizes[i] + 15) / 16 * 16;
    }
    char *b = (char *)f;
    ws->cf = (rank__cand *)b;
    b += (size_t)Cd * sizeof(rank__cand);
    ws->u.item = (uint32_t *)b;
    b += L * 4;
    ws->u.src_index = (int32_t *)b;
    b += L * 4;
    ws->u.kind = (uint8_t *)b;
    b += L;
    ws->u.gap = (uint8_t *)b;
    *out = ws;
    return RP_OK;
}

int rank_ws_create(const rank_model *m, rank_ws **out) { return rank__ws_create(m, 32, 128, 0, out); }

void rank_ws_free(rank_ws *ws)
{
    if (!ws) return;
    free(ws->mem);
    free(ws);
}

/* ---- forward ---- */

/* Small vectorisable kernels (restrict: the compiler may use SIMD without checks). */
static inline void add2_relu(float *restrict z, const float *restrict a, const float *restrict b,
                             uint32_t n)
{
    for (uint32_t j = 0; j < n; j++) {
        float v = z[j] + a[j] + b[j];
        z[j] = v > 0.0f ? v : 0.0f;
    }
}
static inline void add_relu(float *restrict z, const float *restrict b, uint32_t n)
{
    for (uint32_t j = 0; j < n; j++) {
        float v = z[j] + b[j];
        z[j] = v > 0.0f ? v : 0.0f;
    }
}
static inline void relu_n(float *restrict z, size_t n)
{
    for (size_t j = 0; j < n; j++) z[j] = z[j] > 0.0f ? z[j] : 0.0f;
}
static void softmax_rows(float *S, uint32_t C, uint32_t n)
{
    for (uint32_t c = 0; c < C; c++) {
        float *a = S + (size_t)c * n, mx = a[0], sum = 0;
        for (uint32_t l = 1; l < n; l++)
            if (a[l] > mx) mx = a[l];
        for (uint32_t l = 0; l < n; l++) {
            a[l] = expf(a[l] - mx);
            sum += a[l];
        }
        float inv = 1.0f / sum;
        for (uint32_t l = 0; l < n; l++) a[l] *= inv;
    }
}
static inline void mul(float *restrict p, const float *restrict h, const float *restrict t,
                       uint32_t n)
{
    for (uint32_t k = 0; k < n; k++) p[k] = h[k] * t[k];
}

void rank__forward_user(const rank_model *m, rank_ws *ws)
{
    const rank_shape *s = &m->s;
    const rank__user *u = &ws->u;
    uint32_t d = s->dim, n = u->n;
    for (uint32_t l = 0; l < n; l++) {
        float *h = ws->H + (size_t)l * d;
        const float *a = m->p.Eitem + (size_t)u->item[l] * d;
        const float *b = m->p.Ekind + (size_t)u->kind[l] * d;
        const float *c = m->p.Egap + (size_t)u->gap[l] * d;
        for (uint32_t k = 0; k < d; k++) h[k] = a[k] + b[k] + c[k];
    }
    memset(ws->M, 0, d * sizeof(float));
    if (!n) return;
    cblas_sgemm(RM, NT, TR, (int)n, (int)s->att1, (int)d, 1.0f, ws->H, (int)d, m->Wh, (int)d, 0.0f,
                ws->HA, (int)s->att1);
    for (uint32_t l = 0; l < n; l++)
        for (uint32_t k = 0; k < d; k++) ws->M[k] += ws->H[(size_t)l * d + k];
    float inv = 1.0f / (float)n;
    for (uint32_t k = 0; k < d; k++) ws->M[k] *= inv;
}

void rank__forward_att(const rank_model *m, rank_ws *ws, uint32_t c0, uint32_t C)
{
    const rank_shape *s = &m->s;
    uint32_t d = s->dim, a1 = s->att1, a2 = s->att2, n = ws->u.n, D0 = m->D0;
    float *X0 = ws->X + (size_t)c0 * D0;
    for (uint32_t c = 0; c < C; c++) {
        const float *e = m->p.Eitem + (size_t)ws->cf[c0 + c].item * d;
        memcpy(ws->T + (size_t)c * d, e, d * sizeof(float));
        memcpy(X0 + (size_t)c * D0, e, d * sizeof(float));
    }
    if (!n) {
        for (uint32_t c = 0; c < C; c++) memset(X0 + (size_t)c * D0 + 2 * d, 0, d * sizeof(float));
        return;
    }
    /* t-only part, once per candidate */
    cblas_sgemm(RM, NT, TR, (int)C, (int)a1, (int)d, 1.0f, ws->T, (int)d, m->Wt, (int)d, 0.0f,
                ws->TA, (int)a1);
    for (uint32_t c = 0; c < C; c++) {
        float *ta = ws->TA + (size_t)c * a1;
        for (uint32_t j = 0; j < a1; j++) ta[j] += m->p.b1[j];
    }
    /* h*t for every pair, then one GEMM with Wp */
    for (uint32_t c = 0; c < C; c++) {
        const float *t = ws->T + (size_t)c * d;
        for (uint32_t l = 0; l < n; l++) mul(ws->P + ((size_t)c * n + l) * d, ws->H + (size_t)l * d, t, d);
    }
    int CN = (int)(C * n);
    cblas_sgemm(RM, NT, TR, CN, (int)a1, (int)d, 1.0f, ws->P, (int)d, m->Wp, (int)d, 0.0f, ws->R1,
                (int)a1);
    for (uint32_t c = 0; c < C; c++) {
        const float *ta = ws->TA + (size_t)c * a1;
        for (uint32_t l = 0; l < n; l++)
            add2_relu(ws->R1 + ((size_t)c * n + l) * a1, ws->HA + (size_t)l * a1, ta, a1);
    }
    cblas_sgemm(RM, NT, TR, CN, (int)a2, (int)a1, 1.0f, ws->R1, (int)a1, m->p.W2, (int)a1, 0.0f,
                ws->R2, (int)a2);
    for (int q = 0; q < CN; q++) add_relu(ws->R2 + (size_t)q * a2, m->p.b2, a2);
    cblas_sgemv(RM, NT, CN, (int)a2, 1.0f, ws->R2, (int)a2, m->p.w3, 1, 0.0f, ws->S, 1);
    /* softmax over the history, per candidate: S becomes the attention weights */
    softmax_rows(ws->S, C, n);
    /* interest = A H, straight into x0's third block */
    cblas_sgemm(RM, NT, NT, (int)C, (int)d, (int)n, 1.0f, ws->S, (int)n, ws->H, (int)d, 0.0f,
                X0 + 2 * d, (int)D0);
}

/*
 * Inference: the first attention layer of pair (t, h_l) is
 *   z = Wp (h_l * t) + Wt t + Wh h_l + b1 = sum_k t_k (h_lk Wp[:,k] + Wt[:,k]) + (Wh h_l + b1),
 * linear in [t | 1]. HP[k][l*att1 + j] = h_lk Wp[j][k] + Wt[j][k] for k < d and
 * HP[d][l*att1 + j] = (Wh h_l + b1)_j, built once per request, so that the layer for all
 * pairs of a chunk is one GEMM [C x (d+1)] x [(d+1) x (n att1)] whose output rows are
 * already laid out as [candidate][event][unit].
 */
void rank__forward_user_fast(const rank_model *m, rank_ws *ws)
{
    rank__forward_user(m, ws);
    const rank_shape *s = &m->s;
    uint32_t d = s->dim, a1 = s->att1, n = ws->u.n;
    size_t row = (size_t)n * a1;
    for (uint32_t k = 0; k < d; k++) {
        float *hp = ws->HP + (size_t)k * row;
        for (uint32_t l = 0; l < n; l++) {
            float hk = ws->H[(size_t)l * d + k];
            float *o = hp + (size_t)l * a1;
            for (uint32_t j = 0; j < a1; j++)
                o[j] = hk * m->Wp[(size_t)j * d + k] + m->Wt[(size_t)j * d + k];
        }
    }
    float *hb = ws->HP + (size_t)d * row;
    for (uint32_t l = 0; l < n; l++)
        for (uint32_t j = 0; j < a1; j++) hb[(size_t)l * a1 + j] = ws->HA[(size_t)l * a1 + j] + m->p.b1[j];
}

void rank__forward_att_fast(const rank_model *m, rank_ws *ws, uint32_t c0, uint32_t C)
{
    const rank_shape *s = &m->s;
    uint32_t d = s->dim, a1 = s->att1, a2 = s->att2, n = ws->u.n, D0 = m->D0;
    float *X0 = ws->X + (size_t)c0 * D0;
    for (uint32_t c = 0; c < C; c++) {
        const float *e = m->p.Eitem + (size_t)ws->cf[c0 + c].item * d;
        memcpy(ws->T1 + (size_t)c * (d + 1), e, d * sizeof(float));
        ws->T1[(size_t)c * (d + 1) + d] = 1.0f;
        memcpy(X0 + (size_t)c * D0, e, d * sizeof(float));
    }
    if (!n) {
        for (uint32_t c = 0; c < C; c++) memset(X0 + (size_t)c * D0 + 2 * d, 0, d * sizeof(float));
        return;
    }
    int CN = (int)(C * n), row = (int)(n * a1);
    cblas_sgemm(RM, NT, NT, (int)C, row, (int)(d + 1), 1.0f, ws->T1, (int)(d + 1), ws->HP, row,
                0.0f, ws->R1, row);
    relu_n(ws->R1, (size_t)CN * a1);
    cblas_sgemm(RM, NT, TR, CN, (int)a2, (int)a1, 1.0f, ws->R1, (int)a1, m->p.W2, (int)a1, 0.0f,
                ws->R2, (int)a2);
    for (int q = 0; q < CN; q++) add_relu(ws->R2 + (size_t)q * a2, m->p.b2, a2);
    cblas_sgemv(RM, NT, CN, (int)a2, 1.0f, ws->R2, (int)a2, m->p.w3, 1, 0.0f, ws->S, 1);
    softmax_rows(ws->S, C, n);
    cblas_sgemm(RM, NT, NT, (int)C, (int)d, (int)n, 1.0f, ws->S, (int)n, ws->H, (int)d, 0.0f,
                X0 + 2 * d, (int)D0);
}

static inline void cross_combine(float *restrict xn, float *restrict u, const float *restrict x0,
                                 const float *restrict xl, const float *restrict b, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++) {
        float v = u[k] + b[k];
        u[k] = v;
        xn[k] = x0[k] * v + xl[k];
    }
}

void rank__dense_user_bias(const rank_model *m, rank_ws *ws)
{
    const rank_shape *s = &m->s;
    uint32_t d = s->dim, e = s->side_dim, D0 = m->D0, Ku = rank__x0_user(s), nu = D0 - Ku;
    float xu[RANK__ALIGN * 80];
    if (nu > sizeof xu / sizeof xu[0]) return; /* cannot happen: d <= 1024, e <= 256 */
    memcpy(xu, ws->M, d * sizeof(float));
    memcpy(xu + d, m->p.Eact + (size_t)ws->u.act_bucket * e, e * sizeof(float));
    if (s->n_cross && !s->cross_rank) {
        cblas_sgemv(RM, NT, (int)D0, (int)nu, 1.0f, m->p.cU[0] + Ku, (int)D0, xu, 1, 0.0f, ws->UBc, 1);
        for (uint32_t k = 0; k < D0; k++) ws->UBc[k] += m->p.cb[0][k];
    }
    if (s->n_deep) {
        uint32_t w = s->deep[0];
        cblas_sgemv(RM, NT, (int)w, (int)nu, 1.0f, m->p.dW[0] + Ku, (int)D0, xu, 1, 0.0f, ws->UBd, 1);
        for (uint32_t j = 0; j < w; j++) ws->UBd[j] += m->p.db[0][j];
    }
}

static void dense_impl(const rank_model *m, rank_ws *ws, uint32_t C, int fast)
{
    const rank_shape *s = &m->s;
    uint32_t d = s->dim, e = s->side_dim, D0 = m->D0, N = s->n_items, Ku = rank__x0_user(s);
    const rank__p *p = &m->p;
    const rank__user *u = &ws->u;
    for (uint32_t c = 0; c < C; c++) {
        const rank__cand *cf = &ws->cf[c];
        float *x = ws->X + (size_t)c * D0;
        float *g = x + d;
        memset(g, 0, d * sizeof(float));
        if (cf->item < N) {
            uint32_t a = m->cat_off[cf->item], b = m->cat_off[cf->item + 1];
            if (b > a) {
                float inv = 1.0f / (float)(b - a);
                for (uint32_t r = a; r < b; r++) {
                    const float *ec = p->Ecat + (size_t)m->cats[r] * d;
                    for (uint32_t k = 0; k < d; k++) g[k] += ec[k] * inv;
                }
            }
        }
        memcpy(x + 3 * d, p->Epop + (size_t)cf->pop_bucket * e, e * sizeof(float));
        memcpy(x + 3 * d + e, p->Esrc + (size_t)cf->src * e, e * sizeof(float));
        memcpy(x + Ku, ws->M, d * sizeof(float));
        memcpy(x + Ku + d, p->Eact + (size_t)u->act_bucket * e, e * sizeof(float));
        float *dn = x + 3 * d + 2 * e;
        for (int f = 0; f < RANK_N_DENSE; f++) {
            float v = (cf->dense[f] - m->norm_mean[f]) / m->norm_std[f];
            dn[f] = v > 8.0f ? 8.0f : v < -8.0f ? -8.0f : v;
        }
    }
    size_t CD = (size_t)ws->Cd * D0;
    const float *X0 = ws->X;
    uint32_t r = s->cross_rank;
    for (uint32_t l = 0; l < s->n_cross; l++) {
        const float *Xl = ws->X + l * CD;
        float *Xn = ws->X + (l + 1) * CD, *Ul = ws->U + l * CD;
        if (r) {
            float *Vl = ws->V + (size_t)l * ws->Cd * r;
            cblas_sgemm(RM, NT, NT, (int)C, (int)r, (int)D0, 1.0f, Xl, (int)D0, p->cV[l], (int)r,
                        0.0f, Vl, (int)r);
            cblas_sgemm(RM, NT, TR, (int)C, (int)D0, (int)r, 1.0f, Vl, (int)r, p->cU[l], (int)r,
                        0.0f, Ul, (int)D0);
        } else {
            /* fast: x_0's user columns are in UBc already */
            uint32_t K = fast && l == 0 ? Ku : D0;
            cblas_sgemm(RM, NT, TR, (int)C, (int)D0, (int)K, 1.0f, Xl, (int)D0, p->cU[l], (int)D0,
                        0.0f, Ul, (int)D0);
        }
        const float *bias = fast && l == 0 && !r ? ws->UBc : p->cb[l];
        for (uint32_t c = 0; c < C; c++) {
            size_t o = (size_t)c * D0;
            cross_combine(Xn + o, Ul + o, X0 + o, Xl + o, bias, D0);
        }
    }
    const float *xl = ws->X + s->n_cross * CD;
    const float *in = X0;
    uint32_t win = D0;
    size_t ystride = 0;
    for (uint32_t i = 0; i < s->n_deep; i++)
        if (s->deep[i] > ystride) ystride = s->deep[i];
    ystride *= ws->Cd;
    for (uint32_t i = 0; i < s->n_deep; i++) {
        uint32_t w = s->deep[i];
        float *Yi = ws->Y + i * ystride;
        uint32_t K = fast && i == 0 ? Ku : win;
        cblas_sgemm(RM, NT, TR, (int)C, (int)w, (int)K, 1.0f, in, (int)win, p->dW[i], (int)win,
                    0.0f, Yi, (int)w);
        const float *bias = fast && i == 0 ? ws->UBd : p->db[i];
        for (uint32_t c = 0; c < C; c++) add_relu(Yi + (size_t)c * w, bias, w);
        in = Yi;
        win = w;
    }
    for (uint32_t c = 0; c < C; c++) {
        const float *x = xl + (size_t)c * D0;
        float acc = p->bo[0];
        for (uint32_t k = 0; k < D0; k++) acc += x[k] * p->wo[k];
        if (s->n_deep) {
            const float *y = in + (size_t)c * win;
            for (uint32_t j = 0; j < win; j++) acc += y[j] * p->wo[D0 + j];
        }
        ws->logit[c] = acc;
    }
}

void rank__forward_dense(const rank_model *m, rank_ws *ws, uint32_t C) { dense_impl(m, ws, C, 0); }
void rank__forward_dense_fast(const rank_model *m, rank_ws *ws, uint32_t C) { dense_impl(m, ws, C, 1); }

void rank__forward(const rank_model *m, rank_ws *ws, uint32_t C)
{
    rank__forward_user(m, ws);
    rank__forward_att(m, ws, 0, C);
    rank__forward_dense(m, ws, C);
}

/* ---- backward ---- */

static void axpy(float *y, const float *x, float a, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

void rank__backward(const rank_model *m, rank_ws *ws, uint32_t C, const float *dlogit,
                    const rank__p *g)
{
    const rank_shape *s = &m->s;
    const rank__p *p = &m->p;
    const rank__user *u = &ws->u;
    uint32_t d = s->dim, e = s->side_dim, D0 = m->D0, a1 = s->att1, a2 = s->att2, n = u->n;
    uint32_t r = s->cross_rank, N = s->n_items, Ku = rank__x0_user(s);
    size_t CD = (size_t)ws->Cd * D0;
    size_t ystride = 0;
    for (uint32_t i = 0; i < s->n_deep; i++)
        if (s->deep[i] > ystride) ystride = s->deep[i];
    ystride *= ws->Cd;
    const float *X0 = ws->X, *XL = ws->X + s->n_cross * CD;
    uint32_t wlast = s->n_deep ? s->deep[s->n_deep - 1] : 0;
    const float *Ylast = s->n_deep ? ws->Y + (s->n_deep - 1) * ystride : NULL;

    /* output layer */
    float *dXa = ws->dXa, *dXb = ws->dXb;
    for (uint32_t c = 0; c < C; c++) {
        float gc = dlogit[c];
        g->bo[0] += gc;
        axpy(g->wo, XL + (size_t)c * D0, gc, D0);
        for (uint32_t k = 0; k < D0; k++) dXa[(size_t)c * D0 + k] = gc * p->wo[k];
        if (wlast) {
            axpy(g->wo + D0, Ylast + (size_t)c * wlast, gc, wlast);
            for (uint32_t j = 0; j < wlast; j++) ws->dYa[(size_t)c * wlast + j] = gc * p->wo[D0 + j];
        }
    }
    /* deep MLP */
    memset(ws->dX0, 0, (size_t)C * D0 * sizeof(float));
    float *dY = ws->dYa, *dYo = ws->dYb;
    for (uint32_t i = s->n_deep; i-- > 0;) {
        uint32_t w = s->deep[i], win = i ? s->deep[i - 1] : D0;
        const float *Yi = ws->Y + i * ystride;
        const float *in = i ? ws->Y + (i - 1) * ystride : X0;
        for (size_t q = 0; q < (size_t)C * w; q++)
            if (Yi[q] <= 0) dY[q] = 0;
        cblas_sgemm(RM, TR, NT, (int)w, (int)win, (int)C, 1.0f, dY, (int)w, in, (int)win, 1.0f,
                    g->dW[i], (int)win);
        for (uint32_t c = 0; c < C; c++) axpy(g->db[i], dY + (size_t)c * w, 1.0f, w);
        float *dst = i ? dYo : ws->dX0;
        cblas_sgemm(RM, NT, NT, (int)C, (int)win, (int)w, 1.0f, dY, (int)w, p->dW[i], (int)win,
                    0.0f, dst, (int)win);
        if (i) {
            float *t = dY;
            dY = dYo;
            dYo = t;
        }
    }
    /* cross layers: x_{l+1} = x0 * u_l + x_l, u_l = W_l x_l + b_l */
    for (uint32_t l = s->n_cross; l-- > 0;) {
        const float *Xl = ws->X + l * CD, *Ul = ws->U + l * CD;
        float *dU = ws->dUb;
        for (size_t q = 0; q < (size_t)C * D0; q++) {
            ws->dX0[q] += dXa[q] * Ul[q];
            dU[q] = dXa[q] * X0[q];
        }
        for (uint32_t c = 0; c < C; c++) axpy(g->cb[l], dU + (size_t)c * D0, 1.0f, D0);
        memcpy(dXb, dXa, (size_t)C * D0 * sizeof(float));
        if (r) {
            const float *Vl = ws->V + (size_t)l * ws->Cd * r;
            cblas_sgemm(RM, TR, NT, (int)D0, (int)r, (int)C, 1.0f, dU, (int)D0, Vl, (int)r, 1.0f,
                        g->cU[l], (int)r);
            cblas_sgemm(RM, NT, NT, (int)C, (int)r, (int)D0, 1.0f, dU, (int)D0, p->cU[l], (int)r,
                        0.0f, ws->dVb, (int)r);
            cblas_sgemm(RM, TR, NT, (int)D0, (int)r, (int)C, 1.0f, Xl, (int)D0, ws->dVb, (int)r,
                        1.0f, g->cV[l], (int)r);
            cblas_sgemm(RM, NT, TR, (int)C, (int)D0, (int)r, 1.0f, ws->dVb, (int)r, p->cV[l],
                        (int)r, 1.0f, dXb, (int)D0);
        } else {
            cblas_sgemm(RM, TR, NT, (int)D0, (int)D0, (int)C, 1.0f, dU, (int)D0, Xl, (int)D0, 1.0f,
                        g->cU[l], (int)D0);
            cblas_sgemm(RM, NT, NT, (int)C, (int)D0, (int)D0, 1.0f, dU, (int)D0, p->cU[l], (int)D0,
                        1.0f, dXb, (int)D0);
        }
        float *t = dXa;
        dXa = dXb;
        dXb = t;
    }
    for (size_t q = 0; q < (size_t)C * D0; q++) ws->dX0[q] += dXa[q];

    /* x0 blocks: T | cat bag | interest | mean history | pop | act | src | dense */
    float *dT = ws->dT;
    float *dMsum = ws->dXb; /* free now: [d] */
    memset(dMsum, 0, d * sizeof(float));
    for (uint32_t c = 0; c < C; c++) {
        const float *dx = ws->dX0 + (size_t)c * D0;
        const rank__cand *cf = &ws->cf[c];
        memcpy(dT + (size_t)c * d, dx, d * sizeof(float));
        if (cf->item < N) {
            uint32_t a = m->cat_off[cf->item], b = m->cat_off[cf->item + 1];
            for (uint32_t q = a; q < b; q++)
                axpy(g->Ecat + (size_t)m->cats[q] * d, dx + d, 1.0f / (float)(b - a), d);
        }
        axpy(g->Epop + (size_t)cf->pop_bucket * e, dx + 3 * d, 1.0f, e);
        axpy(g->Esrc + (size_t)cf->src * e, dx + 3 * d + e, 1.0f, e);
        axpy(dMsum, dx + Ku, 1.0f, d);
        axpy(g->Eact + (size_t)u->act_bucket * e, dx + Ku + d, 1.0f, e);
    }
    if (n) {
        float *dH = ws->dH, *gWh = ws->dH + (size_t)ws->L * d, *gWt = gWh + (size_t)a1 * d;
        for (uint32_t l = 0; l < n; l++)
            for (uint32_t k = 0; k < d; k++) dH[(size_t)l * d + k] = dMsum[k] / (float)n;
        const float *dI = ws->dX0 + 2 * d;
        const float *A = ws->S;
        float *dA = ws->dS;
        /* interest = A H */
        cblas_sgemm(RM, NT, TR, (int)C, (int)n, (int)d, 1.0f, dI, (int)D0, ws->H, (int)d, 0.0f, dA,
                    (int)n);
        cblas_sgemm(RM, TR, NT, (int)n, (int)d, (int)C, 1.0f, A, (int)n, dI, (int)D0, 1.0f, dH,
                    (int)d);
        /* softmax */
        for (uint32_t c = 0; c < C; c++) {
            const float *a = A + (size_t)c * n;
            float *da = dA + (size_t)c * n, dot = 0;
            for (uint32_t l = 0; l < n; l++) dot += a[l] * da[l];
            for (uint32_t l = 0; l < n; l++) da[l] = a[l] * (da[l] - dot);
        }
        /* layer 3 and 2 */
        int CN = (int)(C * n);
        for (int q = 0; q < CN; q++) {
            const float *r2 = ws->R2 + (size_t)q * a2;
            float *dr2 = ws->dR2 + (size_t)q * a2, ds = dA[q];
            for (uint32_t j = 0; j < a2; j++) {
                g->w3[j] += ds * r2[j];
                dr2[j] = r2[j] > 0 ? ds * p->w3[j] : 0.0f;
            }
            axpy(g->b2, dr2, 1.0f, a2);
        }
        cblas_sgemm(RM, TR, NT, (int)a2, (int)a1, CN, 1.0f, ws->dR2, (int)a2, ws->R1, (int)a1, 1.0f,
                    g->W2, (int)a1);
        cblas_sgemm(RM, NT, NT, CN, (int)a1, (int)a2, 1.0f, ws->dR2, (int)a2, p->W2, (int)a1, 0.0f,
                    ws->dR1, (int)a1);
        for (size_t q = 0; q < (size_t)CN * a1; q++)
            if (ws->R1[q] <= 0) ws->dR1[q] = 0;
        /* layer 1: Wp (h*t) + Wh h + Wt t + b1 */
        cblas_sgemm(RM, TR, NT, (int)a1, (int)d, CN, 1.0f, ws->dR1, (int)a1, ws->P, (int)d, 1.0f,
                    g->W1 + 3 * d, (int)(4 * d));
        memset(ws->dHA, 0, (size_t)n * a1 * sizeof(float));
        memset(ws->dTA, 0, (size_t)C * a1 * sizeof(float));
        for (uint32_t c = 0; c < C; c++)
            for (uint32_t l = 0; l < n; l++) {
                const float *dz = ws->dR1 + ((size_t)c * n + l) * a1;
                axpy(ws->dHA + (size_t)l * a1, dz, 1.0f, a1);
                axpy(ws->dTA + (size_t)c * a1, dz, 1.0f, a1);
            }
        for (uint32_t c = 0; c < C; c++) axpy(g->b1, ws->dTA + (size_t)c * a1, 1.0f, a1);
        cblas_sgemm(RM, NT, NT, CN, (int)d, (int)a1, 1.0f, ws->dR1, (int)a1, m->Wp, (int)d, 0.0f,
                    ws->dP, (int)d);
        for (uint32_t c = 0; c < C; c++) {
            const float *t = ws->T + (size_t)c * d;
            float *dt = dT + (size_t)c * d;
            for (uint32_t l = 0; l < n; l++) {
                const float *dp = ws->dP + ((size_t)c * n + l) * d;
                const float *h = ws->H + (size_t)l * d;
                float *dh = dH + (size_t)l * d;
                for (uint32_t k = 0; k < d; k++) {
                    dt[k] += dp[k] * h[k];
                    dh[k] += dp[k] * t[k];
                }
            }
        }
        cblas_sgemm(RM, TR, NT, (int)a1, (int)d, (int)n, 1.0f, ws->dHA, (int)a1, ws->H, (int)d, 0.0f,
                    gWh, (int)d);
        cblas_sgemm(RM, TR, NT, (int)a1, (int)d, (int)C, 1.0f, ws->dTA, (int)a1, ws->T, (int)d, 0.0f,
                    gWt, (int)d);
        for (uint32_t j = 0; j < a1; j++) {
            float *gw = g->W1 + (size_t)j * 4 * d;
            const float *wh = gWh + (size_t)j * d, *wt = gWt + (size_t)j * d;
            for (uint32_t k = 0; k < d; k++) {
                gw[k] += wh[k];
                gw[d + k] += wt[k];
                gw[2 * d + k] += wh[k] - wt[k];
            }
        }
        cblas_sgemm(RM, NT, NT, (int)n, (int)d, (int)a1, 1.0f, ws->dHA, (int)a1, m->Wh, (int)d, 1.0f,
                    dH, (int)d);
        cblas_sgemm(RM, NT, NT, (int)C, (int)d, (int)a1, 1.0f, ws->dTA, (int)a1, m->Wt, (int)d, 1.0f,
                    dT, (int)d);
        for (uint32_t l = 0; l < n; l++) {
            const float *dh = dH + (size_t)l * d;
            axpy(g->Eitem + (size_t)u->item[l] * d, dh, 1.0f, d);
            axpy(g->Ekind + (size_t)u->kind[l] * d, dh, 1.0f, d);
            axpy(g->Egap + (size_t)u->gap[l] * d, dh, 1.0f, d);
        }
    }
    for (uint32_t c = 0; c < C; c++) axpy(g->Eitem + (size_t)ws->cf[c].item * d, dT + (size_t)c * d, 1.0f, d);
}

/* ---- scoring ---- */

int rank_score(const rank_model *m, rank_ws *ws, const rank_event *hist, uint32_t n_hist,
               int64_t now, const rank_cand *cands, uint32_t n_cands, float *scores,
               int32_t *best_hist, float *best_weight)
{
    rank__user_features(m, hist, n_hist, now, &ws->u);
    rank__forward_user_fast(m, ws);
    for (uint32_t j = 0; j < ws->u.n_sim; j++)
        memcpy(ws->SimH + (size_t)j * m->s.sim_dim, m->sim + (size_t)ws->u.sim_item[j] * m->s.sim_dim,
               m->s.sim_dim * sizeof(float));
    rank__dense_user_bias(m, ws);
    uint32_t n = ws->u.n;
    for (uint32_t cs = 0; cs < n_cands; cs += ws->Cd) {
        uint32_t Cn = n_cands - cs < ws->Cd ? n_cands - cs : ws->Cd;
        cand_features_batch(m, ws, cands + cs, Cn);
        for (uint32_t c0 = 0; c0 < Cn; c0 += ws->Ca) {
            uint32_t C = Cn - c0 < ws->Ca ? Cn - c0 : ws->Ca;
            rank__forward_att_fast(m, ws, c0, C);
            if (best_hist) {
                for (uint32_t c = 0; c < C; c++) {
                    int32_t bi = -1;
                    float bw = 0;
                    const float *a = ws->S + (size_t)c * n;
                    for (uint32_t l = 0; l < n; l++)
                        if (bi < 0 || a[l] > bw) {
                            bi = (int32_t)l;
                            bw = a[l];
                        }
                    best_hist[cs + c0 + c] = bi < 0 ? -1 : ws->u.src_index[bi];
                    if (best_weight) best_weight[cs + c0 + c] = bw;
                }
            }
        }
        rank__forward_dense_fast(m, ws, Cn);
        for (uint32_t c = 0; c < Cn; c++) scores[cs + c] = 1.0f / (1.0f + expf(-ws->logit[c]));
    }
    return RP_OK;
}
