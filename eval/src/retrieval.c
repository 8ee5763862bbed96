/* The `retrieval` evaluation model: fold-in + ANN index or exact scores (ev/retrieval.h). */
#include "ev/retrieval.h"

#include "ret/als.h"

#include <cblas.h>
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    float score;
    uint32_t item;
} cand;

typedef struct ret_ctx {
    const idx_dataset *ds;
    uint32_t n_items, k;
    float reg, alpha;
    int use_value;
    float *y;    /* n_items × k */
    ret_als_gram *gram;
    float *q;    /* k: the user vector */
    float *scores;
    idx_bundle *bundle;
    uint32_t n_shards;
    void *scratch;
    size_t scratch_n; /* history length the scratch fits */
    uint32_t *hist;
    float *hist_r;
    cand *cands;
    size_t cands_cap;
    float *sbuf;
    uint64_t *ibuf;
    size_t buf_cap;
} ret_ctx;

/* Better first: higher score, then lower item index (a fixed order for ties). */
static int cand_better(const cand *a, const cand *b)
{
    return a->score > b->score || (a->score == b->score && a->item < b->item);
}

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return cand_better(x, y) ? -1 : cand_better(y, x) ? 1 : 0;
}

/* Keeps the best k of a stream in a heap whose root is the worst kept. */
static void heap_push(cand *h, size_t *n, size_t k, cand c)
{
    if (*n < k) {
        size_t i = (*n)++;
        h[i] = c;
        while (i > 0) {
            size_t p = (i - 1) / 2;
            if (!cand_better(&h[p], &h[i])) break;
            cand t = h[p];
            h[p] = h[i];
            h[i] = t;
            i = p;
        }
        return;
    }
    if (!cand_better(&c, &h[0])) return;
    h[0] = c;
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < *n && cand_better(&h[w], &h[l])) w = l;
        if (r < *n && cand_better(&h[w], &h[r])) w = r;
        if (w == i) break;
        cand t = h[w];
        h[w] = h[i];
        h[i] = t;
        i = w;
    }
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

static int ret_recommend(void *vctx, uint32_t user, const idx_event *hist, size_t n_hist,
                         const uint8_t *seen, size_t k, uint32_t *out, rp_error *err)
{
    (void)user;
    ret_ctx *c = vctx;
    if (n_hist > c->scratch_n) {
        free(c->scratch);
        free(c->hist);
        free(c->hist_r);
        c->scratch = malloc(ret_als_fold_in_scratch(c->k, n_hist));
        c->hist = malloc(n_hist * sizeof *c->hist);
        c->hist_r = malloc(n_hist * sizeof *c->hist_r);
        c->scratch_n = c->scratch && c->hist && c->hist_r ? n_hist : 0;
        if (!c->scratch_n) return rp_errorf(err, RP_ENOMEM, "retrieval model: out of memory");
    }
    for (size_t j = 0; j < n_hist; j++) {
        c->hist[j] = hist[j].item;
        c->hist_r[j] = hist[j].value;
    }
    int rc = ret_als_fold_in(c->y, c->n_items, c->gram, c->hist, c->use_value ? c->hist_r : NULL,
                             n_hist, c->alpha, c->scratch, c->q, err);
    if (rc) return rc;
    size_t n_seen = n_hist; /* at least the number of distinct seen items */

    size_t n = 0;
    if (!c->bundle) {
        if (grow((void **)&c->cands, &c->cands_cap, k, sizeof *c->cands))
            return rp_errorf(err, RP_ENOMEM, "retrieval model: out of memory");
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)c->n_items, (int)c->k, 1.0f, c->y,
                    (int)c->k, c->q, 1, 0.0f, c->scores, 1);
        for (uint32_t i = 0; i < c->n_items; i++)
            if (!seen[i]) heap_push(c->cands, &n, k, (cand){c->scores[i], i});
    } else {
        /* Ask each shard for enough neighbours that k remain after dropping the seen. */
        const idx_manifest *mf = idx_bundle_manifest(c->bundle);
        size_t total = 0;
        for (uint32_t s = 0; s < c->n_shards; s++) {
            size_t want = k + n_seen;
            if (want > mf->shard_items[s]) want = mf->shard_items[s];
            total += want;
        }
        size_t ibuf_cap = c->buf_cap;
        if (grow((void **)&c->cands, &c->cands_cap, total + 1, sizeof *c->cands) ||
            grow((void **)&c->ibuf, &ibuf_cap, total + 1, sizeof *c->ibuf) ||
            grow((void **)&c->sbuf, &c->buf_cap, total + 1, sizeof *c->sbuf))
            return rp_errorf(err, RP_ENOMEM, "retrieval model: out of memory");
        for (uint32_t s = 0; s < c->n_shards; s++) {
            size_t want = k + n_seen;
            if (want > mf->shard_items[s]) want = mf->shard_items[s];
            if (want == 0) continue;
            int got = idx_bundle_search(c->bundle, s, c->q, want, c->sbuf, c->ibuf, err);
            if (got < 0) return got;
            for (int j = 0; j < got; j++) {
                uint32_t item;
                if (!idx_dataset_find_item(c->ds, c->ibuf[j], &item) || seen[item]) continue;
                c->cands[n++] = (cand){c->sbuf[j], item};
            }
        }
    }
    qsort(c->cands, n, sizeof *c->cands, cand_cmp);
    if (n > k) n = k;
    for (size_t j = 0; j < n; j++) out[j] = c->cands[j].item;
    return (int)n;
}

static void ret_destroy(void *vctx)
{
    ret_ctx *c = vctx;
    if (!c) return;
    free(c->y);
    ret_als_gram_free(c->gram);
    free(c->q);
    free(c->scores);
    free(c->scratch);
    free(c->hist);
    free(c->hist_r);
    free(c->cands);
    free(c->sbuf);
    free(c->ibuf);
    free(c);
}

int ev_model_retrieval(const idx_dataset *ds, const ev_retrieval_opts *o, ev_model *out,
                       rp_error *err)
{
    memset(out, 0, sizeof *out);
    if (o->k == 0 || o->k > RET_ALS_MAX_FACTORS)
        return rp_errorf(err, RP_EINVAL, "retrieval model: factors %u is outside 1..%u", o->k,
                         RET_ALS_MAX_FACTORS);
    if (!isfinite(o->reg) || o->reg < 0 || !isfinite(o->alpha) || o->alpha < 0)
        return rp_errorf(err, RP_EINVAL,
                         "retrieval model: reg %g and alpha %g must be finite and >= 0",
                         (double)o->reg, (double)o->alpha);
    if (o->bundle && idx_bundle_manifest(o->bundle)->dim != o->k)
        return rp_errorf(err, RP_EINVAL,
                         "retrieval model: the bundle's dimension %u differs from the %u "
                         "factors",
                         idx_bundle_manifest(o->bundle)->dim, o->k);
    ret_ctx *c = calloc(1, sizeof *c);
    size_t ni = ds->n_items ? ds->n_items : 1;
    if (!c) return rp_errorf(err, RP_ENOMEM, "retrieval model: out of memory");
    c->ds = ds;
    c->n_items = ds->n_items;
    c->k = o->k;
    c->reg = o->reg;
    c->alpha = o->alpha;
    c->use_value = o->use_value;
    c->bundle = o->bundle;
    c->n_shards = o->bundle ? idx_bundle_manifest(o->bundle)->n_shards : 0;
    c->y = malloc(ni * o->k * sizeof *c->y);
    c->q = malloc(o->k * sizeof *c->q);
    c->scores = malloc(ni * sizeof *c->scores);
    if (!c->y || !c->q || !c->scores) {
        ret_destroy(c);
        return rp_errorf(err, RP_ENOMEM, "retrieval model: out of memory");
    }
    memcpy(c->y, o->item_factors, (size_t)ds->n_items * o->k * sizeof *c->y);
    int rc = ret_als_gram_create(c->y, ds->n_items, o->k, o->reg, &c->gram, err);
    if (rc) {
        ret_destroy(c);
        return rc;
    }
    out->name = "retrieval";
    out->ctx = c;
    out->recommend = ret_recommend;
    out->destroy = ret_destroy;
    return RP_OK;
}

static int json_number(json_object *o, const char *key, double *v)
{
    json_object *x;
    if (!json_object_object_get_ex(o, key, &x)) return -1;
    if (!json_object_is_type(x, json_type_double) && !json_object_is_type(x, json_type_int))
        return -1;
    *v = json_object_get_double(x);
    return 0;
}

int ev_bundle_factors(const idx_dataset *ds, idx_bundle *b, float **factors, uint32_t *k,
                      float *reg, float *alpha, uint32_t *missing, rp_error *err)
{
    *factors = NULL;
    if (missing) *missing = 0;
    const idx_manifest *mf = idx_bundle_manifest(b);
    json_object *tr = json_tokener_parse(mf->training_json ? mf->training_json : "{}");
    double r, a;
    int ok = tr && json_number(tr, "reg", &r) == 0 && json_number(tr, "alpha", &a) == 0;
    json_object_put(tr);
    if (!ok)
        return rp_errorf(err, RP_EINVAL,
                         "%s: the manifest's \"training\" object has no \"reg\" and \"alpha\" "
                         "(not built by `recpipe build`?)",
                         idx_bundle_path(b));
    uint32_t dim = mf->dim;
    float *y = calloc((ds->n_items ? ds->n_items : 1) * (size_t)dim, sizeof *y);
    if (!y) return rp_errorf(err, RP_ENOMEM, "bundle factors: out of memory");
    idx_itemstore *st = idx_bundle_items(b);
    int rc = idx_itemstore_embeddings(st, ds->n_items, ds->item_ids, y, err);
    if (rc == RP_ENOENT) {
        /* Some items are not in the bundle: fetch one by one and count the absent. */
        rc = RP_OK;
        for (uint32_t i = 0; i < ds->n_items; i++) {
            idx_item_view v;
            int r1 = idx_itemstore_get(st, ds->item_ids[i], &v, y + (size_t)i * dim, err);
            if (r1 == RP_ENOENT) {
                memset(y + (size_t)i * dim, 0, dim * sizeof *y);
                if (missing) (*missing)++;
            } else if (r1) {
                rc = r1;
                break;
            }
        }
    }
    if (rc) {
        free(y);
        return rc;
    }
    *factors = y;
    *k = dim;
    *reg = (float)r;
    *alpha = (float)a;
    return RP_OK;
}
