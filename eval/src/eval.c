/* The evaluation protocol and its metrics (ev/eval.h). */
#include "ev/eval.h"

#include "rp/clock.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ev_split_make(const idx_dataset *ds, const ev_protocol *p, ev_split **out, rp_error *err)
{
    *out = NULL;
    if (!(p->test_fraction > 0.0 && p->test_fraction < 1.0))
        return rp_errorf(err, RP_EINVAL, "test fraction %g is outside (0, 1)", p->test_fraction);
    ev_split *s = calloc(1, sizeof *s);
    if (!s || !(s->take = malloc(((size_t)ds->n_users + 1) * sizeof *s->take))) {
        free(s);
        return rp_errorf(err, RP_ENOMEM, "evaluation split: out of memory");
    }
    s->n_users = ds->n_users;
    int fifth = p->test_fraction == 0.2;
    for (uint32_t u = 0; u < ds->n_users; u++) {
        uint64_t n = ds->user_off[u + 1] - ds->user_off[u];
        uint64_t test = 0;
        if (n >= p->min_events && n > 1) {
            test = fifth ? (n + 2) / 5 : (uint64_t)floor(p->test_fraction * (double)n + 0.5);
            if (test < 1) test = 1;
            if (test >= n) test = n - 1;
            s->test_users++;
        }
        s->take[u] = (uint32_t)(n - test);
        s->train_events += n - test;
        s->test_events += test;
    }
    *out = s;
    return RP_OK;
}

void ev_split_free(ev_split *s)
{
    if (!s) return;
    free(s->take);
    free(s);
}

void ev_model_release(ev_model *m)
{
    if (!m) return;
    if (m->destroy) m->destroy(m->ctx);
    memset(m, 0, sizeof *m);
}

/* ---- popularity ------------------------------------------------------------------ */

typedef struct pop_ctx {
    uint32_t n_items;
    uint32_t *order; /* items by descending train count, ties by index */
} pop_ctx;

static int pop_cmp(const void *a, const void *b, void *counts)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    const uint64_t *c = counts;
    uint64_t cx = c[x], cy = c[y];
    if (cx != cy) return cx > cy ? -1 : 1;
    return (x > y) - (x < y);
}

static int pop_recommend(void *ctx, uint32_t user, const idx_event *hist, size_t n_hist,
                         const uint8_t *seen, size_t k, uint32_t *out, rp_error *err)
{
    (void)user;
    (void)hist;
    (void)n_hist;
    (void)err;
    const pop_ctx *p = ctx;
    size_t n = 0;
    for (uint32_t j = 0; j < p->n_items && n < k; j++)
        if (!seen[p->order[j]]) out[n++] = p->order[j];
    return (int)n;
}

static void pop_destroy(void *ctx)
{
    pop_ctx *p = ctx;
    if (!p) return;
    free(p->order);
    free(p);
}

int ev_model_popularity(const idx_dataset *ds, const ev_split *split, ev_model *out,
                        rp_error *err)
{
    memset(out, 0, sizeof *out);
    pop_ctx *p = calloc(1, sizeof *p);
    uint64_t *counts = calloc(ds->n_items ? ds->n_items : 1, sizeof *counts);
    if (!p || !counts || !(p->order = malloc((ds->n_items ? ds->n_items : 1) * sizeof *p->order))) {
        free(counts);
        pop_destroy(p);
        return rp_errorf(err, RP_ENOMEM, "popularity model: out of memory");
    }
    p->n_items = ds->n_items;
    for (uint32_t u = 0; u < ds->n_users; u++) {
        uint64_t n = ds->user_off[u + 1] - ds->user_off[u];
        if (split && split->take[u] < n) n = split->take[u];
        for (uint64_t j = 0; j < n; j++) counts[ds->events[ds->user_off[u] + j].item]++;
    }
    for (uint32_t i = 0; i < ds->n_items; i++) p->order[i] = i;
    qsort_r(p->order, ds->n_items, sizeof *p->order, pop_cmp, counts);
    free(counts);
    out->name = "popularity";
    out->ctx = p;
    out->recommend = pop_recommend;
    out->destroy = pop_destroy;
    return RP_OK;
}

/* ---- metrics --------------------------------------------------------------------- */

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int ev_parse_cutoffs(const char *s, uint32_t *ks, size_t cap, size_t *n, rp_error *err)
{
    *n = 0;
    const char *p = s;
    if (!s || !*s) return rp_errorf(err, RP_EINVAL, "--k: empty list (expected e.g. 10,20)");
    for (size_t idx = 0;; idx++) {
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0') || *p == '-' || *p == '+')
            return rp_errorf(err, RP_EINVAL, "--k: element %zu of '%s' is not a whole number",
                             idx + 1, s);
        if (v < 1 || v > EV_MAX_K)
            return rp_errorf(err, RP_EINVAL, "--k: %llu is outside 1..%u", v, EV_MAX_K);
        int dup = 0;
        for (size_t j = 0; j < *n; j++) dup |= ks[j] == v;
        if (!dup) {
            if (*n == cap || *n == EV_MAX_CUTOFFS)
                return rp_errorf(err, RP_EINVAL, "--k: more than %u cut-offs", EV_MAX_CUTOFFS);
            ks[(*n)++] = (uint32_t)v;
        }
        if (*end == '\0') break;
        p = end + 1;
    }
    qsort(ks, *n, sizeof *ks, u32_cmp);
    return RP_OK;
}

/* Jaccard similarity of two ascending category lists (0 when both are empty). */
static double jaccard(const uint16_t *a, size_t na, const uint16_t *b, size_t nb)
{
    if (na + nb == 0) return 0.0;
    size_t i = 0, j = 0, inter = 0;
    while (i < na && j < nb) {
        if (a[i] == b[j]) {
            inter++;
            i++;
            j++;
        } else if (a[i] < b[j])
            i++;
        else
            j++;
    }
    return (double)inter / (double)(na + nb - inter);
}

static double intra_list_diversity(const idx_dataset *ds, const uint32_t *list, size_t n)
{
    double sim = 0;
    size_t pairs = 0;
    for (size_t a = 0; a < n; a++)
        for (size_t b = a + 1; b < n; b++) {
            const uint16_t *ca = NULL, *cb = NULL;
            size_t na = 0, nb = 0;
            if (ds->item_cat_off) {
                ca = ds->item_cats + ds->item_cat_off[list[a]];
                na = ds->item_cat_off[list[a] + 1] - ds->item_cat_off[list[a]];
                cb = ds->item_cats + ds->item_cat_off[list[b]];
                nb = ds->item_cat_off[list[b] + 1] - ds->item_cat_off[list[b]];
            }
            sim += jaccard(ca, na, cb, nb);
            pairs++;
        }
    return 1.0 - sim / (double)pairs;
}

int ev_evaluate(const idx_dataset *ds, const ev_split *split, ev_model *m, const uint32_t *ks_in,
                size_t n_ks, ev_progress_fn progress, void *progress_ctx, ev_result *out,
                rp_error *err)
{
    memset(out, 0, sizeof *out);
    if (n_ks == 0 || n_ks > EV_MAX_CUTOFFS)
        return rp_errorf(err, RP_EINVAL, "cut-offs: %zu given, expected 1..%u", n_ks,
                         EV_MAX_CUTOFFS);
    uint32_t ks[EV_MAX_CUTOFFS];
    memcpy(ks, ks_in, n_ks * sizeof *ks);
    qsort(ks, n_ks, sizeof *ks, u32_cmp);
    if (ks[0] < 1 || ks[n_ks - 1] > EV_MAX_K)
        return rp_errorf(err, RP_EINVAL, "cut-off %u is outside 1..%u",
                         ks[0] < 1 ? ks[0] : ks[n_ks - 1], EV_MAX_K);
    if (split->n_users != ds->n_users)
        return rp_errorf(err, RP_EINVAL, "split has %u users, dataset %u", split->n_users,
                         ds->n_users);
    const uint32_t kmax = ks[n_ks - 1];
    uint64_t t0 = rp_now_ns();
    int rc = RP_OK;
    uint8_t *seen = calloc(ds->n_items ? ds->n_items : 1, 1);
    uint8_t *test = calloc(ds->n_items ? ds->n_items : 1, 1);
    uint8_t *covered = calloc((size_t)(ds->n_items ? ds->n_items : 1) * n_ks, 1);
    uint32_t *list = malloc(kmax * sizeof *list);
    double *idcg = malloc(((size_t)kmax + 1) * sizeof *idcg);
    double sum[EV_MAX_CUTOFFS][5] = {{0}}; /* recall, precision, f1, ndcg, diversity */
    uint32_t div_users[EV_MAX_CUTOFFS] = {0};
    if (!seen || !test || !covered || !list || !idcg) {
        rc = rp_errorf(err, RP_ENOMEM, "evaluation: out of memory");
        goto done;
    }
    idcg[0] = 0;
    for (uint32_t i = 1; i <= kmax; i++) idcg[i] = idcg[i - 1] + 1.0 / log2((double)i + 1.0);

    uint32_t done_users = 0;
    for (uint32_t u = 0; u < ds->n_users; u++) {
        const idx_event *ev = ds->events + ds->user_off[u];
        uint64_t n = ds->user_off[u + 1] - ds->user_off[u], take = split->take[u];
        if (take >= n) continue;
        for (uint64_t j = 0; j < take; j++) seen[ev[j].item] = 1;
        /* the test set: held-out items not already in the train set (a re-interaction
         * with a train item cannot be recommended, so it is not a target) */
        uint64_t ntest = 0;
        for (uint64_t j = take; j < n; j++)
            if (!seen[ev[j].item] && !test[ev[j].item]) {
                test[ev[j].item] = 1;
                ntest++;
            }
        int got = ntest ? m->recommend(m->ctx, u, ev, (size_t)take, seen, kmax, list, err) : 0;
        if (got < 0) {
            rc = got;
            rp_error_prefix(err, "model %s, user %llu", m->name,
                            (unsigned long long)ds->user_ids[u]);
            for (uint64_t j = 0; j < n; j++) seen[ev[j].item] = test[ev[j].item] = 0;
            goto done;
        }
        if (ntest) {
            for (size_t c = 0; c < n_ks; c++) {
                uint32_t K = ks[c];
                size_t len = (size_t)got < K ? (size_t)got : K;
                uint32_t hits = 0;
                double dcg = 0;
                for (size_t r = 0; r < len; r++) {
                    covered[(size_t)c * ds->n_items + list[r]] = 1;
                    if (test[list[r]]) {
                        hits++;
                        dcg += 1.0 / log2((double)r + 2.0);
                    }
                }
                uint64_t denom = ntest < K ? ntest : K;
                double rec = (double)hits / (double)denom, prec = (double)hits / K;
                sum[c][0] += rec;
                sum[c][1] += prec;
                sum[c][2] += rec + prec > 0 ? 2 * rec * prec / (rec + prec) : 0;
                sum[c][3] += dcg / idcg[denom];
                if (len >= 2) {
                    sum[c][4] += intra_list_diversity(ds, list, len);
                    div_users[c]++;
                }
            }
            out->users++;
        }
        for (uint64_t j = 0; j < n; j++) seen[ev[j].item] = test[ev[j].item] = 0;
        if (progress && (++done_users % 64 == 0 || done_users == split->test_users))
            progress(progress_ctx, m->name, done_users, split->test_users);
    }
    snprintf(out->model, sizeof out->model, "%s", m->name);
    out->n_cutoffs = n_ks;
    for (size_t c = 0; c < n_ks; c++) {
        ev_metrics *x = &out->at[c];
        double nu = out->users ? (double)out->users : 1.0;
        x->k = ks[c];
        x->recall = sum[c][0] / nu;
        x->precision = sum[c][1] / nu;
        x->f1 = sum[c][2] / nu;
        x->ndcg = sum[c][3] / nu;
        x->diversity = div_users[c] ? sum[c][4] / div_users[c] : 0.0;
        uint64_t cov = 0;
        for (uint32_t i = 0; i < ds->n_items; i++) cov += covered[(size_t)c * ds->n_items + i];
        x->coverage = ds->n_items ? (double)cov / ds->n_items : 0.0;
    }
    out->seconds = (double)(rp_now_ns() - t0) / 1e9;
done:
    free(seen);
    free(test);
    free(covered);
    free(list);
    free(idcg);
    return rc;
}
