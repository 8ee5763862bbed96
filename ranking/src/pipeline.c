/* The `pipeline` evaluation model: iALS top-N, reranked (rank/pipeline.h). */
#include "rank/pipeline.h"

#include "ret/als.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

typedef struct pctx {
    const idx_dataset *ds;
    const rank_model *ranker;
    int rerank;
    uint32_t n_items, k, nc;
    float alpha;
    float *y, *q, *scores, *rscore;
    ret_als_gram *gram;
    uint32_t *to_model; /* dataset item → ranker item */
    uint32_t *hist_items;
    rank_event *hist;
    size_t hist_cap;
    rank_cand *cands;
    uint32_t *cand_items;
    rank_ws *ws;
} pctx;

static void pctx_free(void *p)
{
    pctx *c = p;
    if (!c) return;
    free(c->y);
    free(c->q);
    free(c->scores);
    free(c->rscore);
    ret_als_gram_free(c->gram);
    free(c->to_model);
    free(c->hist_items);
    free(c->hist);
    free(c->cands);
    free(c->cand_items);
    rank_ws_free(c->ws);
    free(c);
}

typedef struct sc {
    float s;
    uint32_t i;
} sc;

static int sc_cmp(const void *a, const void *b)
{
    const sc *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int recommend(void *ctx, uint32_t user, const idx_event *h, size_t n_hist,
                     const uint8_t *seen, size_t k, uint32_t *out, rp_error *err)
{
    (void)user;
    pctx *c = ctx;
    if (n_hist > c->hist_cap) {
        size_t cap = n_hist * 2;
        uint32_t *hi = realloc(c->hist_items, cap * sizeof *hi);
        if (hi) c->hist_items = hi;
        rank_event *he = realloc(c->hist, cap * sizeof *he);
        if (he) c->hist = he;
        if (!hi || !he) return rp_errorf(err, RP_ENOMEM, "pipeline: out of memory");
        c->hist_cap = cap;
    }
    for (size_t i = 0; i < n_hist; i++) c->hist_items[i] = h[i].item;
    int rc = ret_als_fold_in(c->y, c->n_items, c->gram, c->hist_items, NULL, n_hist, c->alpha,
                             NULL, c->q, err);
    if (rc) return rc;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)c->n_items, (int)c->k, 1.0f, c->y, (int)c->k,
                c->q, 1, 0.0f, c->scores, 1);
    /* top nc by iALS score (ties: lower index), train items excluded */
    sc *top = (sc *)c->rscore; /* scratch of nc pairs */
    uint32_t nt = 0;
    for (uint32_t i = 0; i < c->n_items; i++) {
        if (seen[i]) continue;
        sc v = {c->scores[i], i};
        if (nt < c->nc) {
            top[nt++] = v;
            if (nt == c->nc) qsort(top, nt, sizeof *top, sc_cmp);
            continue;
        }
        if (sc_cmp(&v, &top[nt - 1]) >= 0) continue;
        uint32_t j = nt - 1;
        while (j > 0 && sc_cmp(&v, &top[j - 1]) < 0) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = v;
    }
    if (nt < c->nc) qsort(top, nt, sizeof *top, sc_cmp);
    if (c->rerank && nt) {
        for (uint32_t j = 0; j < nt; j++) {
            c->cand_items[j] = top[j].i;
            c->cands[j] = (rank_cand){c->to_model[top[j].i], 1, top[j].s};
        }
        for (size_t i = 0; i < n_hist; i++)
            c->hist[i] = (rank_event){c->to_model[h[i].item], h[i].type, h[i].value, h[i].ts};
        int64_t now = n_hist ? h[n_hist - 1].ts : 0;
        float *s = c->scores; /* reuse: nc floats */
        rank_score(c->ranker, c->ws, c->hist, (uint32_t)n_hist, now, c->cands, nt, s, NULL, NULL);
        for (uint32_t j = 0; j < nt; j++) top[j] = (sc){s[j], c->cand_items[j]};
        qsort(top, nt, sizeof *top, sc_cmp);
    }
    size_t n = nt < k ? nt : k;
    for (size_t j = 0; j < n; j++) out[j] = top[j].i;
    return (int)n;
}

static int make(const idx_dataset *ds, const rank_pipeline_opts *o, int rerank, ev_model *out,
                rp_error *err)
{
    memset(out, 0, sizeof *out);
    if (o->k < 1 || o->k > RET_ALS_MAX_FACTORS)
        return rp_errorf(err, RP_EINVAL, "pipeline: k %u is outside 1..%u", o->k, RET_ALS_MAX_FACTORS);
    if (o->n_candidates < 1 || o->n_candidates > 10000)
        return rp_errorf(err, RP_EINVAL, "pipeline: candidates %u is outside 1..10000", o->n_candidates);
    if (rerank && !o->ranker) return rp_errorf(err, RP_EINVAL, "pipeline: no ranker");
    pctx *c = calloc(1, sizeof *c);
    if (!c) return rp_errorf(err, RP_ENOMEM, "pipeline: out of memory");
    c->ds = ds;
    c->ranker = o->ranker;
    c->rerank = rerank;
    c->n_items = ds->n_items;
    c->k = o->k;
    c->nc = o->n_candidates;
    c->alpha = o->alpha;
    size_t N = ds->n_items;
    c->y = malloc(N * o->k * sizeof(float) + 4);
    c->q = malloc(o->k * sizeof(float));
    c->scores = malloc((N > c->nc ? N : c->nc) * sizeof(float) + 4);
    c->rscore = malloc(c->nc * sizeof(sc));
    c->to_model = malloc(N * sizeof(uint32_t) + 4);
    c->cands = malloc(c->nc * sizeof *c->cands);
    c->cand_items = malloc(c->nc * sizeof(uint32_t));
    if (!c->y || !c->q || !c->scores || !c->rscore || !c->to_model || !c->cands || !c->cand_items) {
        pctx_free(c);
        return rp_errorf(err, RP_ENOMEM, "pipeline: out of memory");
    }
    memcpy(c->y, o->item_factors, N * o->k * sizeof(float));
    int rc = ret_als_gram_create(c->y, c->n_items, o->k, o->reg, &c->gram, err);
    if (rc) {
        pctx_free(c);
        return rc;
    }
    for (uint32_t i = 0; i < N; i++)
        c->to_model[i] = rerank ? rank_model_item(o->ranker, ds->item_ids[i]) : 0;
    if (rerank && rank_ws_create(o->ranker, &c->ws)) {
        pctx_free(c);
        return rp_errorf(err, RP_ENOMEM, "pipeline: out of memory");
    }
    out->name = rerank ? "pipeline" : "retrieval200";
    out->ctx = c;
    out->recommend = recommend;
    out->destroy = pctx_free;
    return RP_OK;
}

int rank_pipeline_model(const idx_dataset *ds, const rank_pipeline_opts *o, ev_model *out,
                        rp_error *err)
{
    return make(ds, o, 1, out, err);
}

int rank_retrieval_order_model(const idx_dataset *ds, const rank_pipeline_opts *o, ev_model *out,
                               rp_error *err)
{
    return make(ds, o, 0, out, err);
}
