/* Recall auto-tuning: the smallest nprobe / efSearch that reaches a target recall. */
#include "idx/ann.h"

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

int idx_ann_tune(idx_ann *a, size_t nq, const float *q, size_t k, const int64_t *truth,
                 double target, idx_tune_result *out, rp_error *err)
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
    double lo_v = 0, hi_v, max_v, r = 0;
    if (!strcmp(name, "nprobe")) {
        hi_v = 1;
        max_v = idx_ann_nlist(a) ? idx_ann_nlist(a) : 65536;
    } else {
        hi_v = 16;
        max_v = 4096;
    }
    /* Doubling: recall grows with the knob; find the first power that reaches target. */
    for (;;) {
        rc = measure(&p, hi_v, &r, err);
        if (rc) goto out;
        if (r >= target) break;
        if (hi_v >= max_v) {
            out->value = hi_v;
            out->recall = r;
            out->reached = 0;
            goto out;
        }
        lo_v = hi_v;
        hi_v = hi_v * 2 > max_v ? max_v : hi_v * 2;
    }
    double best_v = hi_v, best_r = r;
    /* Bisection over the integers in (lo_v, hi_v]: hi reaches the target, lo does not. */
    while (hi_v - lo_v > 1) {
        double mid = (double)(long long)((lo_v + hi_v) / 2);
        rc = measure(&p, mid, &r, err);
        if (rc) goto out;
        if (r >= target) {
            hi_v = mid;
            best_v = mid;
            best_r = r;
        } else {
            lo_v = mid;
        }
    }
    rc = idx_ann_set_param(a, name, best_v, err);
    out->value = best_v;
    out->recall = best_r;
    out->reached = 1;
out:
    free(p.scores);
    free(p.labels);
    return rc;
}
