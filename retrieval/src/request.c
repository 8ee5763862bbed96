/*
 * Retrieve requests: validation against the API's limits, user fold-in, the default
 * source mix (ret__build_query in service_int.h).
 */
#include "service_int.h"
#include "internal.h"
#include "ret/als.h"

#include <math.h>
#include <string.h>

bool ret__item_vector(const ret__bundle *rb, const ret_side *side, uint64_t id, float *out)
{
    uint32_t dim = rb->cat->dim;
    if (side) {
        int64_t p = ret_side_find(side, id);
        if (p >= 0) {
            memcpy(out, side->vectors + (uint64_t)p * side->dim, sizeof *out * dim);
            return true;
        }
        if (side->hidden.count && ret_idset_has(&side->hidden, id)) return false;
    }
    uint32_t d;
    if (ret_catalog_find(rb->cat, id, &d)) {
        memcpy(out, ret_catalog_vec(rb->cat, d), sizeof *out * dim);
        return true;
    }
    if (rb->n_shards > 1) {
        idx_item_view v;
        if (idx_itemstore_get(idx_bundle_items(rb->b), id, &v, out, NULL) == RP_OK) return true;
    }
    return false;
}

static int check_vector(const float *v, size_t n, uint32_t dim, const char *field, rp_error *err)
{
    if (n != dim)
        return rp_errorf(err, RP_EINVAL, "%s: has %zu values, the bundle's dimension is %u", field, n, dim);
    for (size_t j = 0; j < n; j++)
        if (!isfinite(v[j])) return rp_errorf(err, RP_EINVAL, "%s[%zu]: is NaN or infinite", field, j);
    return RP_OK;
}

/* Folds the history into a user vector (out, dim floats). Returns RP_OK with *have = 0
 * when no event names a known item. */
static int fold_history(const ret__bundle *rb, const ret_side *side,
                        const Recpipe__V1__RetrieveRequest *req, int64_t now, rp_arena *a,
                        float *out, int *have, uint32_t *unknown, rp_error *err)
{
    uint32_t dim = rb->cat->dim;
    size_t n = req->n_history;
    *have = 0;
    float *y = rp_arena_alloc(a, sizeof *y * n * dim + 1);
    float *r = rp_arena_alloc(a, sizeof *r * n + 1);
    uint32_t *items = rp_arena_alloc(a, sizeof *items * n + 1);
    uint64_t *ids = rp_arena_alloc(a, sizeof *ids * n + 1);
    uint32_t cap = 8;
    while (cap < 2 * n) cap <<= 1;
    uint32_t *slot = rp_arena_calloc(a, cap, sizeof *slot); /* id → position + 1 */
    if (!y || !r || !items || !ids || !slot) return rp_errorf(err, RP_ENOMEM, "history: out of memory");
    double half_life_s = (double)req->recency_half_life_days * 86400.0;
    uint32_t m = 0;
    for (size_t j = 0; j < n; j++) {
        const Recpipe__V1__Event *e = req->history[j];
        if (!e) continue;
        if (e->type == RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_DISMISS) continue;
        /* As in training: one per event, or the rating when the bundle was trained on
         * values; other events may carry an optional weight. */
        float w = 1.0f;
        bool rating = e->type == RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_RATING;
        if ((!rating || rb->use_value) && e->value > 0 && isfinite(e->value)) w = e->value;
        if (half_life_s > 0 && e->timestamp && e->timestamp < now)
            w *= (float)exp2(-(double)(now - e->timestamp) / half_life_s);
        /* Events of one item add up. */
        uint32_t h = ret__hash64(e->item_id) & (cap - 1);
        while (slot[h] && ids[slot[h] - 1] != e->item_id) h = (h + 1) & (cap - 1);
        uint32_t p = slot[h] ? slot[h] - 1 : m;
        if (p == m) {
            if (!e->item_id || !ret__item_vector(rb, side, e->item_id, y + (size_t)m * dim)) {
                (*unknown)++;
                continue;
            }
            ids[m] = e->item_id;
            r[m] = 0;
            items[m] = m;
            slot[h] = ++m;
        }
        r[p] += w;
    }
    if (m == 0) return RP_OK;
    void *scratch = rp_arena_alloc(a, ret_als_fold_in_scratch(dim, m));
    if (!scratch) return rp_errorf(err, RP_ENOMEM, "history: out of memory for the fold-in");
    int rc = ret_als_fold_in(y, m, rb->gram, items, r, m, rb->alpha, scratch, out, err);
    if (rc) return rp_error_prefix(err, "history: fold-in");
    *have = 1;
    return RP_OK;
}

int ret__build_query(const ret__bundle *rb, const ret_side *side,
                     const Recpipe__V1__RetrieveRequest *req, int64_t now, rp_arena *a,
                     ret_query *q, uint32_t *unknown, rp_error *err)
{
    const ret_catalog *c = rb->cat;
    memset(q, 0, sizeof *q);
    *unknown = 0;
    if (req->k < 1 || req->k > RET_MAX_K)
        return rp_errorf(err, RP_EINVAL, "k: %u is out of range 1..%u", req->k, RET_MAX_K);
    if (req->n_history > RET_MAX_HISTORY)
        return rp_errorf(err, RP_EINVAL, "history: %zu events exceed the limit of %u", req->n_history,
                         RET_MAX_HISTORY);
    if (req->n_seed_items > RET_MAX_SEEDS)
        return rp_errorf(err, RP_EINVAL, "seed_items: %zu ids exceed the limit of %u", req->n_seed_items,
                         RET_MAX_SEEDS);
    if (req->n_exclude_ids > RET_MAX_EXCLUDE)
        return rp_errorf(err, RP_EINVAL, "exclude_ids: %zu ids exceed the limit of %u",
                         req->n_exclude_ids, RET_MAX_EXCLUDE);
    if (!isfinite(req->recency_half_life_days) || req->recency_half_life_days < 0)
        return rp_errorf(err, RP_EINVAL, "recency_half_life_days: %g is not a finite number >= 0",
                         (double)req->recency_half_life_days);
    if (req->n_sources > RET_SRC_MAX)
        return rp_errorf(err, RP_EINVAL, "sources: %zu entries, at most %u (one per source)",
                         req->n_sources, (unsigned)RET_SRC_MAX - 1);
    for (size_t j = 0; j < req->n_sources; j++) {
        const Recpipe__V1__SourceQuota *sq = req->sources[j];
        if (!sq || (int)sq->source <= 0 || (int)sq->source >= (int)RET_SRC_MAX || !ret_source_get((uint8_t)sq->source))
            return rp_errorf(err, RP_EINVAL,
                             "sources[%zu].source: %d is not a retrieval source (ANN, POPULAR, FRESH, SIMILAR)",
                             j, sq ? (int)sq->source : 0);
        if (sq->quota > RET_MAX_K)
            return rp_errorf(err, RP_EINVAL, "sources[%zu].quota: %u exceeds the limit of %u", j, sq->quota,
                             RET_MAX_K);
        for (size_t p = 0; p < j; p++)
            if (req->sources[p]->source == sq->source)
                return rp_errorf(err, RP_EINVAL, "sources[%zu].source: %s is listed twice", j,
                                 ret_source_name((uint8_t)sq->source));
        q->sources[q->n_sources++] = (ret_quota){(uint8_t)sq->source, sq->quota};
    }
    const Recpipe__V1__Filter *f = req->filter;
    int rc = ret_filter_compile(&q->filter, c, f ? (const char *const *)f->include_categories : NULL,
                                f ? (uint32_t)f->n_include_categories : 0,
                                f ? (const char *const *)f->exclude_categories : NULL,
                                f ? (uint32_t)f->n_exclude_categories : 0, f ? f->created_after : 0,
                                f ? f->created_before : 0, req->exclude_ids,
                                (uint32_t)req->n_exclude_ids, a, err);
    if (rc) return rc;
    if (f && (f->n_include_categories > RET_MAX_FILTER_CATEGORIES ||
              f->n_exclude_categories > RET_MAX_FILTER_CATEGORIES))
        return rp_errorf(err, RP_EINVAL, "filter: more than %u categories", RET_MAX_FILTER_CATEGORIES);

    q->k = req->k;
    q->now = now;
    q->bundle_created = rb->created;
    uint32_t dim = c->dim;
    if (req->n_query_vector) {
        rc = check_vector(req->query_vector, req->n_query_vector, dim, "query_vector", err);
        if (rc) return rc;
        q->vector = req->query_vector;
    } else if (req->n_history) {
        float *u = rp_arena_alloc(a, sizeof *u * dim);
        if (!u) return rp_errorf(err, RP_ENOMEM, "out of memory");
        int have;
        rc = fold_history(rb, side, req, now, a, u, &have, unknown, err);
        if (rc) return rc;
        if (have) q->vector = u;
    }
    if (req->n_seed_items) {
        float *sv = rp_arena_calloc(a, dim, sizeof *sv);
        float *tmp = rp_arena_alloc(a, sizeof *tmp * dim);
        if (!sv || !tmp) return rp_errorf(err, RP_ENOMEM, "out of memory");
        uint32_t found = 0;
        for (size_t j = 0; j < req->n_seed_items; j++) {
            if (!ret__item_vector(rb, side, req->seed_items[j], tmp)) continue;
            for (uint32_t d = 0; d < dim; d++) sv[d] += tmp[d];
            found++;
        }
        if (found) {
            for (uint32_t d = 0; d < dim; d++) sv[d] /= (float)found;
            q->seed_vector = sv;
        }
        q->seeds = req->seed_items;
        q->n_seeds = (uint32_t)req->n_seed_items;
    }
    if (q->n_sources == 0) {
        /* The documented default mix. */
        if (req->n_seed_items) q->sources[q->n_sources++] = (ret_quota){RET_SRC_SIMILAR, 0};
        if (q->vector || (!req->n_seed_items && (req->n_history || req->n_query_vector)))
            q->sources[q->n_sources++] = (ret_quota){RET_SRC_ANN, 0};
        if (!req->n_seed_items && !req->n_history && !req->n_query_vector) {
            q->sources[q->n_sources++] = (ret_quota){RET_SRC_POPULAR, 0};
            q->sources[q->n_sources++] = (ret_quota){RET_SRC_FRESH, 0};
        }
    }
    return RP_OK;
}
