/* The ranker's trainer: the two-stage recipe of rank/train.h. */
#include "rank/train.h"
#include "rank_internal.h"
#include "rp/clock.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define RECENT_WINDOW_S (365 * 86400LL)
#define POP_NEG_POOL 1000u
#define NDCG_K 20u

void rank_train_opts_default(rank_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->shape = rank_shape_default();
    ret_als_params_default(&o->als);
    o->label_fraction = 0.2;
    o->n_candidates = 200;
    o->neg_per_pos = 4;
    o->pop_neg = 4;
    o->group = 16;
    o->batch = 16;
    o->epochs = 20;
    o->patience = 2;
    o->lr = 1e-3;
    o->l2 = 1e-6;
    o->val_fraction = 0.15;
    o->seed = 1;
    o->threads = 0;
}

/* ---- small helpers ---- */

static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t rnd(uint64_t *st) { return mix64((*st)++); }
static uint32_t rnd_below(uint64_t *st, uint32_t n) { return (uint32_t)(((rnd(st) >> 32) * n) >> 32); }

typedef struct scored {
    float s;
    uint32_t i;
} scored;

/* Top-n of scores[0..N) with skip[i] == 0, best first, into out (min-heap then sort). */
static uint32_t top_n(const float *scores, uint32_t N, const uint8_t *skip, uint32_t n, scored *out)
{
    uint32_t h = 0;
    for (uint32_t i = 0; i < N; i++) {
        if (skip && skip[i]) continue;
        float s = scores[i];
        if (h < n) {
            uint32_t j = h++;
            while (j > 0) {
                uint32_t p = (j - 1) / 2;
                if (out[p].s <= s) break;
                out[j] = out[p];
                j = p;
            }
            out[j] = (scored){s, i};
        } else if (s > out[0].s) {
            uint32_t j = 0;
            for (;;) {
                uint32_t a = 2 * j + 1, b = a + 1, mn = j;
                float ms = s;
                if (a < h && out[a].s < ms) mn = a, ms = out[a].s;
                if (b < h && out[b].s < ms) mn = b;
                if (mn == j) break;
                out[j] = out[mn];
                j = mn;
            }
            out[j] = (scored){s, i};
        }
    }
    /* heap sort: repeatedly move the minimum to the end → descending order */
    for (uint32_t e = h; e > 1; e--) {
        scored mn = out[0], last = out[e - 1];
        uint32_t j = 0, m = e - 1;
        for (;;) {
            uint32_t a = 2 * j + 1, b = a + 1, c = j;
            float cs = last.s;
            if (a < m && out[a].s < cs) c = a, cs = out[a].s;
            if (b < m && out[b].s < cs) c = b;
            if (c == j) break;
            out[j] = out[c];
            j = c;
        }
        out[j] = last;
        out[e - 1] = mn;
    }
    return h;
}

/* Item-side tables from the first take[u] (or cut[u]) events of every user. */
typedef struct item_tables {
    float *pop_recent, *pop_total;
    uint32_t *count;
} item_tables;

static void item_tables_free(item_tables *t)
{
    free(t->pop_recent);
    free(t->pop_total);
    free(t->count);
}

static int item_tables_make(const idx_dataset *ds, const uint32_t *upto, item_tables *t)
{
    uint32_t N = ds->n_items;
    t->pop_recent = calloc(N + 1, sizeof(float));
    t->pop_total = calloc(N + 1, sizeof(float));
    t->count = calloc(N + 1, sizeof(uint32_t));
    uint32_t *recent = calloc(N + 1, sizeof(uint32_t));
    if (!t->pop_recent || !t->pop_total || !t->count || !recent) {
        free(recent);
        item_tables_free(t);
        return RP_ENOMEM;
    }
    int64_t tmax = INT64_MIN;
    uint64_t total = 0, total_recent = 0;
    for (uint32_t u = 0; u < ds->n_users; u++)
        for (uint64_t e = ds->user_off[u]; e < ds->user_off[u] + upto[u]; e++)
            if (ds->events[e].ts > tmax) tmax = ds->events[e].ts;
    for (uint32_t u = 0; u < ds->n_users; u++)
        for (uint64_t e = ds->user_off[u]; e < ds->user_off[u] + upto[u]; e++) {
            const idx_event *ev = &ds->events[e];
            t->count[ev->item]++;
            total++;
            if (ev->ts >= tmax - RECENT_WINDOW_S) {
                recent[ev->item]++;
                total_recent++;
            }
        }
    /* Per 100k events, so that counts over fewer events (the history cut) are on the
     * same scale as counts over all train events. */
    for (uint32_t i = 0; i < N; i++) {
        t->pop_total[i] = total ? (float)log1p(1e5 * t->count[i] / (double)total) : 0.0f;
        t->pop_recent[i] = total_recent ? (float)log1p(1e5 * recent[i] / (double)total_recent) : 0.0f;
    }
    free(recent);
    return RP_OK;
}

/* ---- per-user training data ---- */

typedef struct tuser {
    uint32_t u;
    uint32_t n_hist;   /* history events (the earlier cut) */
    uint32_t n_later;  /* label events */
    uint32_t n_cand, n_pos;
    int64_t now;
    int val;
} tuser;

typedef struct sample {
    uint32_t tu;   /* index into the tuser array */
    uint32_t item;
    float score;
    uint8_t source, label;
} sample;

typedef struct group {
    uint32_t tu, start, count;
} group;

typedef struct trainer {
    const idx_dataset *ds;
    const rank_train_opts *o;
    rank_model *m;
    rank_event *ev;      /* all events as rank_event */
    tuser *tus;
    uint32_t n_tus;
    uint32_t *cand;      /* [n_tus][n_candidates] */
    float *cscore;
    uint8_t *clabel;
    uint32_t *pop_pool;  /* most popular items of the histories */
    uint32_t n_pool;
    float *uf;           /* early user factors [n_users][k] */
    const float *yf;     /* early item factors */
    uint32_t k;
    int threads;
    /* optimiser */
    float *adam_m, *adam_v;
    float **tgrad;       /* [threads] gradient buffers */
    rank__p *tg;
    rank_ws **tws;       /* training workspaces */
    rank_ws **iws;       /* inference workspaces (validation) */
    uint64_t step;
} trainer;

static const rank_event *hist_of(const trainer *t, const tuser *tu)
{
    return t->ev + t->ds->user_off[tu->u];
}

/* Epoch samples: every positive, hard negatives, popular negatives; grouped by user. */
static int make_epoch(trainer *t, uint32_t epoch, sample **samples, size_t *ns, group **groups,
                      size_t *ng)
{
    const rank_train_opts *o = t->o;
    uint32_t NC = o->n_candidates;
    size_t cap = 0;
    for (uint32_t i = 0; i < t->n_tus; i++)
        if (!t->tus[i].val && t->tus[i].n_pos)
            cap += t->tus[i].n_pos * (1 + o->neg_per_pos) + o->pop_neg;
    sample *S = malloc((cap + 1) * sizeof *S);
    group *G = malloc((cap + 1) * sizeof *G);
    uint32_t *idx = malloc((NC + 1) * sizeof *idx);
    if (!S || !G || !idx) {
        free(S);
        free(G);
        free(idx);
        return RP_ENOMEM;
    }
    size_t n = 0, g = 0;
    uint64_t st = mix64(o->seed * 1000003ull + epoch);
    for (uint32_t i = 0; i < t->n_tus; i++) {
        const tuser *tu = &t->tus[i];
        if (tu->val || !tu->n_pos) continue;
        size_t first = n;
        const uint32_t *cand = t->cand + (size_t)i * NC;
        const float *cs = t->cscore + (size_t)i * NC;
        const uint8_t *cl = t->clabel + (size_t)i * NC;
        uint32_t nneg = 0;
        for (uint32_t c = 0; c < tu->n_cand; c++) {
            if (cl[c]) S[n++] = (sample){i, cand[c], cs[c], 1, 1};
            else idx[nneg++] = c;
        }
        uint32_t want = tu->n_pos * o->neg_per_pos;
        if (want > nneg) want = nneg;
        for (uint32_t q = 0; q < want; q++) {
            uint32_t r = q + rnd_below(&st, nneg - q);
            uint32_t tmp = idx[q];
            idx[q] = idx[r];
            idx[r] = tmp;
            S[n++] = (sample){i, cand[idx[q]], cs[idx[q]], 1, 0};
        }
        /* Popular negatives: items of the pool that are neither candidates, history nor
         * labels of this user; scored by the same early iALS. */
        const rank_event *h = hist_of(t, tu);
        for (uint32_t q = 0, tries = 0; q < o->pop_neg && tries < 8 * o->pop_neg + 8; tries++) {
            uint32_t item = t->pop_pool[rnd_below(&st, t->n_pool)];
            int bad = 0;
            for (uint32_t c = 0; c < tu->n_cand && !bad; c++) bad = cand[c] == item;
            for (uint32_t e = 0; e < tu->n_hist + tu->n_later && !bad; e++) bad = h[e].item == item;
            for (size_t s = first; s < n && !bad; s++) bad = S[s].item == item;
            if (bad) continue;
            float sc = cblas_sdot((int)t->k, t->uf + (size_t)tu->u * t->k, 1,
                                  t->yf + (size_t)item * t->k, 1);
            S[n++] = (sample){i, item, sc, 2, 0};
            q++;
        }
        /* shuffle within the user, then cut into groups */
        for (size_t q = first; q + 1 < n; q++) {
            size_t r = q + rnd_below(&st, (uint32_t)(n - q));
            sample tmp = S[q];
            S[q] = S[r];
            S[r] = tmp;
        }
        for (size_t s = first; s < n; s += o->group) {
            uint32_t cnt = (uint32_t)(n - s < o->group ? n - s : o->group);
            G[g++] = (group){i, (uint32_t)s, cnt};
        }
    }
    for (size_t q = 0; q + 1 < g; q++) {
        size_t r = q + rnd_below(&st, (uint32_t)(g - q));
        group tmp = G[q];
        G[q] = G[r];
        G[r] = tmp;
    }
    free(idx);
    *samples = S;
    *ns = n;
    *groups = G;
    *ng = g;
    return RP_OK;
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* One mini-batch: returns the summed BCE. */
static double train_batch(trainer *t, const sample *S, const group *G, size_t g0, size_t g1)
{
    rank_model *m = t->m;
    size_t np = m->nparams;
    uint32_t nsamp = 0;
    for (size_t q = g0; q < g1; q++) nsamp += G[q].count;
    double loss = 0;
    int T = t->threads;
#pragma omp parallel num_threads(T) reduction(+ : loss)
    {
        int tid = omp_get_thread_num();
        rank_ws *ws = t->tws[tid];
        float *grad = t->tgrad[tid];
        memset(grad, 0, np * sizeof(float));
        float dl[64];
#pragma omp for schedule(static)
        for (size_t q = g0; q < g1; q++) {
            const group *gr = &G[q];
            const tuser *tu = &t->tus[gr->tu];
            rank__user_features(m, hist_of(t, tu), tu->n_hist, tu->now, &ws->u);
            for (uint32_t c = 0; c < gr->count; c++) {
                const sample *s = &S[gr->start + c];
                rank_cand rc = {s->item, s->source, s->score};
                rank__cand_features(m, &ws->u, &rc, &ws->cf[c]);
            }
            rank__forward(m, ws, gr->count);
            for (uint32_t c = 0; c < gr->count; c++) {
                double z = ws->logit[c], y = S[gr->start + c].label;
                /* BCE with logits, stable: max(z,0) - z y + log(1 + e^-|z|) */
                loss += (z > 0 ? z : 0) - z * y + log1p(exp(-fabs(z)));
                dl[c] = (float)((sigmoid(z) - y) / nsamp);
            }
            rank__backward(m, ws, gr->count, dl, &t->tg[tid]);
        }
    }
    /* Sum the thread buffers in thread order: the same bits for the same thread count. */
    float *g = t->tgrad[0];
    for (int q = 1; q < T; q++) {
        const float *o = t->tgrad[q];
        for (size_t i = 0; i < np; i++) g[i] += o[i];
    }
    /* Adam with L2 (added to the gradient). */
    t->step++;
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    float lr = (float)t->o->lr, l2 = (float)t->o->l2;
    float c1 = 1.0f / (1.0f - powf(b1, (float)t->step)), c2 = 1.0f / (1.0f - powf(b2, (float)t->step));
    float *w = m->params, *am = t->adam_m, *av = t->adam_v;
    for (size_t i = 0; i < np; i++) {
        float gi = g[i] + l2 * w[i];
        am[i] = b1 * am[i] + (1 - b1) * gi;
        av[i] = b2 * av[i] + (1 - b2) * gi * gi;
        w[i] -= lr * (am[i] * c1) / (sqrtf(av[i] * c2) + eps);
    }
    rank__derive(m);
    return loss;
}

/* Validation on held-out users' full candidate lists: mean per-user AUC, NDCG@20 of the
 * reranked list and of the iALS order. */
static void validate(trainer *t, double *auc, double *ndcg, double *ndcg_ret)
{
    uint32_t NC = t->o->n_candidates;
    double sa = 0, sn = 0, sr = 0;
    uint32_t na = 0, nn = 0;
    int T = t->threads;
#pragma omp parallel num_threads(T) reduction(+ : sa, sn, sr, na, nn)
    {
        int tid = omp_get_thread_num();
        rank_ws *ws = t->iws[tid];
        rank_cand *rc = malloc(NC * sizeof *rc);
        float *sc = malloc(NC * sizeof *sc);
        scored *ord = malloc(NC * sizeof *ord);
#pragma omp for schedule(static)
        for (uint32_t i = 0; i < t->n_tus; i++) {
            const tuser *tu = &t->tus[i];
            if (!tu->val || !tu->n_later || !tu->n_cand) continue;
            const uint32_t *cand = t->cand + (size_t)i * NC;
            const uint8_t *cl = t->clabel + (size_t)i * NC;
            for (uint32_t c = 0; c < tu->n_cand; c++)
                rc[c] = (rank_cand){cand[c], 1, t->cscore[(size_t)i * NC + c]};
            rank_score(t->m, ws, hist_of(t, tu), tu->n_hist, tu->now, rc, tu->n_cand, sc, NULL,
                       NULL);
            /* NDCG@20 against all label events (ideal over min(20, |labels|)) */
            double idcg = 0;
            uint32_t ni = tu->n_later < NDCG_K ? tu->n_later : NDCG_K;
            for (uint32_t r = 0; r < ni; r++) idcg += 1.0 / log2(r + 2.0);
            uint32_t nt = top_n(sc, tu->n_cand, NULL, tu->n_cand, ord);
            double dcg = 0, dcg_r = 0;
            for (uint32_t r = 0; r < nt && r < NDCG_K; r++) {
                if (cl[ord[r].i]) dcg += 1.0 / log2(r + 2.0);
                if (cl[r]) dcg_r += 1.0 / log2(r + 2.0); /* candidates are in iALS order */
            }
            sn += dcg / idcg;
            sr += dcg_r / idcg;
            nn++;
            if (tu->n_pos && tu->n_pos < tu->n_cand) {
                /* AUC = P(score of a positive > score of a negative), ties half */
                double wins = 0;
                for (uint32_t a = 0; a < tu->n_cand; a++) {
                    if (!cl[a]) continue;
                    for (uint32_t b = 0; b < tu->n_cand; b++) {
                        if (cl[b]) continue;
                        wins += sc[a] > sc[b] ? 1.0 : sc[a] == sc[b] ? 0.5 : 0.0;
                    }
                }
                sa += wins / ((double)tu->n_pos * (tu->n_cand - tu->n_pos));
                na++;
            }
        }
        free(rc);
        free(sc);
        free(ord);
    }
    *auc = na ? sa / na : 0;
    *ndcg = nn ? sn / nn : 0;
    *ndcg_ret = nn ? sr / nn : 0;
}

static int check_opts(const rank_train_opts *o, rp_error *err)
{
    if (!(o->label_fraction > 0 && o->label_fraction < 1))
        return rp_errorf(err, RP_EINVAL, "label-fraction: %g is outside (0, 1)", o->label_fraction);
    if (!(o->val_fraction >= 0 && o->val_fraction < 1))
        return rp_errorf(err, RP_EINVAL, "val-fraction: %g is outside [0, 1)", o->val_fraction);
    if (o->n_candidates < 2 || o->n_candidates > 10000)
        return rp_errorf(err, RP_EINVAL, "candidates: %u is outside 2..10000", o->n_candidates);
    if (o->group < 1 || o->group > 64)
        return rp_errorf(err, RP_EINVAL, "group: %u is outside 1..64", o->group);
    if (o->batch < 1 || o->batch > 4096)
        return rp_errorf(err, RP_EINVAL, "batch: %u is outside 1..4096", o->batch);
    if (o->epochs < 1 || o->epochs > 1000)
        return rp_errorf(err, RP_EINVAL, "epochs: %u is outside 1..1000", o->epochs);
    if (!(o->lr > 0 && o->lr < 1)) return rp_errorf(err, RP_EINVAL, "lr: %g is outside (0, 1)", o->lr);
    if (!(o->l2 >= 0 && o->l2 < 1)) return rp_errorf(err, RP_EINVAL, "l2: %g is outside [0, 1)", o->l2);
    if (o->neg_per_pos > 1000) return rp_errorf(err, RP_EINVAL, "neg-per-pos: %u exceeds 1000", o->neg_per_pos);
    if (o->pop_neg > 1000) return rp_errorf(err, RP_EINVAL, "pop-neg: %u exceeds 1000", o->pop_neg);
    return RP_OK;
}

int rank_train(const idx_dataset *ds, const uint32_t *take, const float *serve_factors,
               uint32_t serve_k, const rank_train_opts *o, rank_model **out,
               rank_train_report *rep, rp_error *err)
{
    *out = NULL;
    memset(rep, 0, sizeof *rep);
    int rc = check_opts(o, err);
    if (rc) return rc;
    uint64_t t_start = rp_now_ns();
    uint32_t NU = ds->n_users, N = ds->n_items, NC = o->n_candidates;
    trainer t = {0};
    t.ds = ds;
    t.o = o;
    t.threads = o->threads > 0 ? o->threads : omp_get_num_procs();
    uint32_t *full = NULL, *cut = NULL;
    ret_als_matrix *mat = NULL;
    ret_als_model *early = NULL, *serve_fit = NULL;
    item_tables early_tab = {0}, serve_tab = {0};
    sample *S = NULL;
    group *G = NULL;
    float *best = NULL, *uscores = NULL;
    uint8_t *mark = NULL;
    scored *top = NULL;
    rank_model *m = NULL;
    int blas_threads = 0;

    full = malloc((size_t)NU * sizeof *full);
    cut = malloc((size_t)NU * sizeof *cut);
    t.tus = calloc(NU + 1, sizeof *t.tus);
    t.ev = malloc((ds->n_events + 1) * sizeof *t.ev);
    if (!full || !cut || !t.tus || !t.ev) goto nomem;
    for (uint64_t e = 0; e < ds->n_events; e++) {
        const idx_event *x = &ds->events[e];
        t.ev[e] = (rank_event){x->item, x->type, x->value, x->ts};
    }
    for (uint32_t u = 0; u < NU; u++) {
        uint32_t n = (uint32_t)(ds->user_off[u + 1] - ds->user_off[u]);
        full[u] = take ? (take[u] < n ? take[u] : n) : n;
        uint32_t later = (uint32_t)floor(o->label_fraction * full[u] + 0.5);
        if (full[u] < 5) later = 0; /* too short to split */
        cut[u] = full[u] - later;
    }

    /* Stage 1: iALS on the histories only. */
    if ((rc = ret_als_matrix_from_dataset(ds, cut, 0, &mat, err))) goto fail;
    ret_als_params ap = o->als;
    ap.progress = NULL;
    if (ap.threads <= 0) ap.threads = t.threads;
    if ((rc = ret_als_train(mat, &ap, &early, err))) {
        rp_error_prefix(err, "ranker first stage (iALS on the history cut)");
        goto fail;
    }
    ret_als_matrix_free(mat);
    mat = NULL;
    t.k = early->k;
    t.uf = early->user_factors;
    t.yf = early->item_factors;
    if (serve_factors && serve_k != t.k) {
        rc = rp_errorf(err, RP_EINVAL, "serving factors have dimension %u, the ranker's iALS %u",
                       serve_k, t.k);
        goto fail;
    }

    /* Candidates and labels per user. */
    t.cand = calloc((size_t)NU * NC + 1, sizeof *t.cand);
    t.cscore = calloc((size_t)NU * NC + 1, sizeof *t.cscore);
    t.clabel = calloc((size_t)NU * NC + 1, 1);
    uscores = malloc((size_t)N * sizeof *uscores + 4);
    mark = calloc(N + 1, 1);
    top = malloc((size_t)(NC > POP_NEG_POOL ? NC : POP_NEG_POOL) * sizeof *top);
    if (!t.cand || !t.cscore || !t.clabel || !uscores || !mark || !top) goto nomem;
    if ((rc = item_tables_make(ds, cut, &early_tab)) != RP_OK) goto nomem;
    {
        float *cnt = malloc((size_t)N * sizeof *cnt + 4);
        if (!cnt) goto nomem;
        for (uint32_t i = 0; i < N; i++) cnt[i] = (float)early_tab.count[i];
        t.n_pool = top_n(cnt, N, NULL, POP_NEG_POOL < N ? POP_NEG_POOL : N, top);
        free(cnt);
        t.pop_pool = malloc((t.n_pool + 1) * sizeof *t.pop_pool);
        if (!t.pop_pool) goto nomem;
        for (uint32_t i = 0; i < t.n_pool; i++) t.pop_pool[i] = top[i].i;
    }
    uint64_t vst = mix64(o->seed ^ 0x5EEDull);
    for (uint32_t u = 0; u < NU; u++) {
        tuser *tu = &t.tus[t.n_tus];
        tu->u = u;
        tu->n_hist = cut[u];
        tu->n_later = full[u] - cut[u];
        if (!tu->n_later || !tu->n_hist) continue;
        const idx_event *ev = ds->events + ds->user_off[u];
        tu->now = ev[cut[u] - 1].ts;
        tu->val = (double)(mix64(vst + u) >> 11) / 9007199254740992.0 < o->val_fraction;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)N, (int)t.k, 1.0f, t.yf, (int)t.k,
                    t.uf + (size_t)u * t.k, 1, 0.0f, uscores, 1);
        for (uint32_t e = 0; e < cut[u]; e++) mark[ev[e].item] = 1;
        tu->n_cand = top_n(uscores, N, mark, NC, top);
        for (uint32_t e = 0; e < cut[u]; e++) mark[ev[e].item] = 0;
        for (uint32_t e = cut[u]; e < full[u]; e++) mark[ev[e].item] = 2;
        size_t base = (size_t)t.n_tus * NC;
        for (uint32_t c = 0; c < tu->n_cand; c++) {
            t.cand[base + c] = top[c].i;
            t.cscore[base + c] = top[c].s;
            t.clabel[base + c] = mark[top[c].i] == 2;
            tu->n_pos += t.clabel[base + c];
        }
        for (uint32_t e = cut[u]; e < full[u]; e++) mark[ev[e].item] = 0;
        rep->positives += tu->n_pos;
        if (tu->val) rep->val_users++;
        else if (tu->n_pos) rep->train_users++;
        t.n_tus++;
    }
    if (!rep->train_users) {
        rc = rp_errorf(err, RP_EPRECOND,
                       "ranker: no training user has a later event among its %u candidates "
                       "(too little data)", NC);
        goto fail;
    }

    /* The model, its item table started from the early iALS factors. */
    rank_shape sh = o->shape;
    sh.n_items = N;
    sh.n_cats = ds->n_categories;
    sh.sim_dim = t.k;
    rank_items it = {N, ds->item_ids, ds->item_cat_off, ds->item_cats, early_tab.pop_recent,
                     early_tab.pop_total, early_tab.count, t.yf};
    if ((rc = rank_model_create(&sh, &it, t.yf, t.k, o->seed, &m, err))) goto fail;
    t.m = m;

    /* Dense-feature standardisation from one epoch's samples. */
    size_t ns = 0, ng = 0;
    if ((rc = make_epoch(&t, 0, &S, &ns, &G, &ng))) goto nomem;
    {
        double sum[RANK_N_DENSE] = {0}, sq[RANK_N_DENSE] = {0};
        rank_ws *ws;
        if (rank__ws_create(m, o->group, o->group, 0, &ws)) goto nomem;
        for (size_t q = 0; q < ns; q++) {
            const tuser *tu = &t.tus[S[q].tu];
            rank__user_features(m, hist_of(&t, tu), tu->n_hist, tu->now, &ws->u);
            rank_cand rcd = {S[q].item, S[q].source, S[q].score};
            rank__cand_features(m, &ws->u, &rcd, &ws->cf[0]);
            for (int f = 0; f < RANK_N_DENSE; f++) {
                sum[f] += ws->cf[0].dense[f];
                sq[f] += (double)ws->cf[0].dense[f] * ws->cf[0].dense[f];
            }
        }
        rank_ws_free(ws);
        float mean[RANK_N_DENSE], sd[RANK_N_DENSE];
        for (int f = 0; f < RANK_N_DENSE; f++) {
            double mu = sum[f] / (double)(ns ? ns : 1);
            mean[f] = (float)mu;
            sd[f] = (float)sqrt(fmax(sq[f] / (double)(ns ? ns : 1) - mu * mu, 0.0));
        }
        rank__set_norm(m, mean, sd);
    }

    /* Optimiser state and per-thread buffers. */
    size_t np = m->nparams;
    t.adam_m = calloc(np, sizeof(float));
    t.adam_v = calloc(np, sizeof(float));
    best = malloc(np * sizeof(float));
    t.tgrad = calloc((size_t)t.threads, sizeof *t.tgrad);
    t.tg = calloc((size_t)t.threads, sizeof *t.tg);
    t.tws = calloc((size_t)t.threads, sizeof *t.tws);
    t.iws = calloc((size_t)t.threads, sizeof *t.iws);
    if (!t.adam_m || !t.adam_v || !best || !t.tgrad || !t.tg || !t.tws || !t.iws) goto nomem;
    for (int q = 0; q < t.threads; q++) {
        t.tgrad[q] = aligned_alloc(64, (np * sizeof(float) + 63) / 64 * 64);
        if (!t.tgrad[q]) goto nomem;
        rank__layout(&m->s, t.tgrad[q], &t.tg[q]);
        if (rank__ws_create(m, o->group, o->group, 1, &t.tws[q]) || rank_ws_create(m, &t.iws[q]))
            goto nomem;
    }
    /* BLAS single-threaded inside the OpenMP loop over groups; restored at the end. */
    blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);

    double best_metric = -1;
    uint32_t since = 0;
    for (uint32_t ep = 1; ep <= o->epochs; ep++) {
        if (ep > 1) {
            free(S);
            free(G);
            S = NULL;
            G = NULL;
            if ((rc = make_epoch(&t, ep, &S, &ns, &G, &ng))) goto nomem;
        }
        double loss = 0;
        uint32_t nb = (uint32_t)((ng + o->batch - 1) / o->batch);
        for (uint32_t b = 0; b < nb; b++) {
            size_t g0 = (size_t)b * o->batch, g1 = g0 + o->batch < ng ? g0 + o->batch : ng;
            loss += train_batch(&t, S, G, g0, g1);
            if (o->progress && (b % 8 == 0 || b + 1 == nb))
                o->progress(o->progress_ctx, ep, o->epochs, b + 1, nb, loss / (double)(ns ? ns : 1));
        }
        loss /= (double)(ns ? ns : 1);
        double auc = 0, ndcg = 0, ndcg_r = 0;
        if (rep->val_users) validate(&t, &auc, &ndcg, &ndcg_r);
        if (o->on_epoch) o->on_epoch(o->progress_ctx, ep, loss, auc, ndcg, ndcg_r);
        rep->epochs_run = ep;
        double metric = rep->val_users ? auc : -loss;
        if (metric > best_metric) {
            best_metric = metric;
            memcpy(best, m->params, np * sizeof(float));
            rep->best_epoch = ep;
            rep->val_auc = auc;
            rep->val_ndcg = ndcg;
            rep->val_ndcg_retrieval = ndcg_r;
            rep->train_loss = loss;
            since = 0;
        } else if (++since >= o->patience) {
            break;
        }
    }
    memcpy(m->params, best, np * sizeof(float));
    rank__derive(m);

    /* Serve with the tables of all train events and the serving factors. */
    if (!serve_factors) {
        if ((rc = ret_als_matrix_from_dataset(ds, full, 0, &mat, err))) goto fail;
        if ((rc = ret_als_train(mat, &ap, &serve_fit, err))) goto fail;
        serve_factors = serve_fit->item_factors;
    }
    if ((rc = item_tables_make(ds, full, &serve_tab)) != RP_OK) goto nomem;
    rank_items sit = {N, ds->item_ids, ds->item_cat_off, ds->item_cats, serve_tab.pop_recent,
                      serve_tab.pop_total, serve_tab.count, serve_factors};
    if ((rc = rank_model_set_items(m, &sit, err))) goto fail;
    rep->seconds = (double)(rp_now_ns() - t_start) / 1e9;
    *out = m;
    m = NULL;
    rc = RP_OK;
    goto done;
nomem:
    rc = rp_errorf(err, RP_ENOMEM, "ranker training: out of memory");
fail:
done:
    if (blas_threads > 0) openblas_set_num_threads(blas_threads);
    if (t.tws && t.iws && t.tgrad)
        for (int q = 0; q < t.threads; q++) {
            rank_ws_free(t.tws[q]);
            rank_ws_free(t.iws[q]);
            free(t.tgrad[q]);
        }
    free(t.tws);
    free(t.iws);
    free(t.tgrad);
    free(t.tg);
    free(t.adam_m);
    free(t.adam_v);
    free(best);
    free(S);
    free(G);
    free(t.cand);
    free(t.cscore);
    free(t.clabel);
    free(t.pop_pool);
    free(t.tus);
    free(t.ev);
    free(uscores);
    free(mark);
    free(top);
    free(full);
    free(cut);
    item_tables_free(&early_tab);
    item_tables_free(&serve_tab);
    ret_als_matrix_free(mat);
    ret_als_model_free(early);
    ret_als_model_free(serve_fit);
    rank_model_free(m);
    return rc;
}
