/* Recall auto-tuning: the smallest nprobe / efSearch that reaches a target recall. */
#include "ann_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct probe {
    idx_ann *a;
    size_t nq, k;
    const float *q;
    const int64_t *truth;
    float *scores;
    int64_t *labels;
} probe;

static int measure(probe *p, double value, double *recall, rp_error *err)
{
    const char *name = idx_ann_param_name(p->a);
    int rc = name ? idx_ann_set_param(p->a, name, value, err) : RP_OK;
    if (!rc) rc = idx_ann_search_batch(p->a, p->nq, p->q, p->k, p->scores, p->labels, err);
    if (!rc) *recall = idx_recall_at(p->nq, p->k, p->labels, p->k, p->truth, p->k);
    return rc;
}

/*
 * For a bare IVF index over exact (Flat) codes, a true neighbour is returned at nprobe p
 * exactly when its list is among the query's p nearest lists: the whole recall curve
 * follows from one quantizer search of the queries and one assignment of the true
 * neighbours, instead of one full search per candidate value. The result is a guess:
 * it is confirmed by measuring (other codecs, ties), so it is never trusted blindly.
 * Returns 0 when no guess can be made.
 */
static double ivf_guess(idx_ann *a, const float *base, size_t nq, const float *q, size_t k,
                        const int64_t *truth, double target)
{
    uint32_t nlist = idx_ann_nlist(a), dim = idx_ann_dim(a);
    if (!base || nlist == 0) return 0;
    /* Ranks beyond the first `probe` lists of each query are not needed: a target that is
     * only reached further out falls back to plain measuring (and memory stays bounded). */
    uint32_t probe = nlist < 2048 ? nlist : 2048;
    double guess = 0;
    int64_t *qlists = malloc(nq * probe * sizeof *qlists);
    int64_t *tlists = malloc(nq * k * sizeof *tlists);
    float *tv = malloc(nq * k * dim * sizeof *tv);
    uint32_t *rank = malloc(nlist * sizeof *rank);
    double *curve = calloc(nlist + 1, sizeof *curve);
    if (!qlists || !tlists || !tv || !rank || !curve) goto out;
    for (size_t i = 0; i < nq * k; i++) {
        int64_t j = truth[i] < 0 ? 0 : truth[i];
        memcpy(tv + i * dim, base + (size_t)j * dim, dim * sizeof *tv);
    }
    if (idx__ann_ivf_lists(a, nq, q, probe, qlists, NULL) != RP_OK ||
        idx__ann_ivf_lists(a, nq * k, tv, 1, tlists, NULL) != RP_OK)
        goto out;
    for (size_t qi = 0; qi < nq; qi++) {
        for (uint32_t l = 0; l < nlist; l++) rank[l] = probe;
        for (uint32_t r = 0; r < probe; r++) {
            int64_t l = qlists[qi * probe + r];
            if (l >= 0 && l < nlist) rank[l] = r;
        }
        size_t nt = 0;
        for (size_t j = 0; j < k; j++) nt += truth[qi * k + j] >= 0;
        if (nt == 0) {
            curve[0] += 1.0 / nq;
            continue;
        }
        for (size_t j = 0; j < k; j++) {
            if (truth[qi * k + j] < 0) continue;
            int64_t l = tlists[qi * k + j];
            uint32_t need = l >= 0 && l < nlist && rank[l] < probe ? rank[l] + 1 : nlist;
            curve[need] += 1.0 / ((double)nt * (double)nq);
        }
    }
    double cum = 0;
    for (uint32_t p = 0; p <= probe; p++) {
        cum += curve[p];
        if (p >= 1 && cum >= target - 1e-12) {
            guess = p;
            break;
        }
    }
out:
    free(qlists);
    free(tlists);
    free(tv);
    free(rank);
    free(curve);
    return guess;
}

int idx_ann_tune_base(idx_ann *a, const float *base, size_t nq, const float *q, size_t k,
                      const int64_t *truth, double target, idx_tune_result *out, rp_error *err)
{
    memset(out, 0, sizeof *out);
    if (nq == 0) return rp_errorf(err, RP_EINVAL, "tuning: no queries");
    if (!(target > 0 && target <= 1))
        return rp_errorf(err, RP_EINVAL, "target recall: %g is outside (0, 1]", target);
    probe p = {a, nq, k, q, truth, malloc(nq * k * sizeof(float)), malloc(nq * k * sizeof(int64_t))};
    int rc = RP_OK;
    if (!p.scores || !p.labels) {
        rc = rp_errorf(err, RP_ENOMEM, "tuning: out of memory for %zu x %zu results", nq, k);
        goto out;
    }
    const char *name = idx_ann_param_name(a);
    if (!name) {
        rc = measure(&p, 0, &out->recall, err);
        out->reached = out->recall >= target;
        goto out;
    }
    snprintf(out->param, sizeof out->param, "%s", name);
    int nprobe = !strcmp(name, "nprobe");
    double min_v = nprobe ? 1 : 16;
    double max_v = nprobe ? (idx_ann_nlist(a) ? idx_ann_nlist(a) : 65536) : 4096;
    double v = nprobe ? ivf_guess(a, base, nq, q, k, truth, target) : 0;
    int guessed = v >= min_v;
    if (v < min_v) v = min_v;
    if (v > max_v) v = max_v;
    /* Invariant once both are known: lo fails (or is below the range), hi reaches. */
    double lo = min_v - 1, hi, r, hi_r;
    if ((rc = measure(&p, v, &r, err))) goto out;
    if (r >= target) {
        hi = v;
        hi_r = r;
        /* A good guess is confirmed by one measurement just below it. */
        if (guessed && hi - 1 >= min_v) {
            if ((rc = measure(&p, hi - 1, &r, err))) goto out;
            if (r >= target) {
                hi = hi - 1;
                hi_r = r;
            } else {
                lo = hi - 1;
            }
        }
    } else {
        /* Doubling from v: recall grows with the knob. */
        for (;;) {
            lo = v;
            if (v >= max_v) {
                out->value = v;
                out->recall = r;
                out->reached = 0;
                goto out;
            }
            v = v * 2 > max_v ? max_v : v * 2;
            if ((rc = measure(&p, v, &r, err))) goto out;
            if (r >= target) break;
        }
        hi = v;
        hi_r = r;
    }
    /* Bisection over the integers in (lo, hi]. */
    while (hi - lo > 1) {
        double mid = (double)(long long)((lo + hi) / 2);
        if ((rc = measure(&p, mid, &r, err))) goto out;
        if (r >= target) {
            hi = mid;
            hi_r = r;
        } else {
            lo = mid;
        }
    }
    rc = idx_ann_set_param(a, name, hi, err);
    out->value = hi;
    out->recall = hi_r;
    out->reached = 1;
out:
    free(p.scores);
    free(p.labels);
    return rc;
}

int idx_ann_tune(idx_ann *a, size_t nq, const float *q, size_t k, const int64_t *truth,
                 double target, idx_tune_result *out, rp_error *err)
{
    return idx_ann_tune_base(a, NULL, nq, q, k, truth, target, out, err);
}
