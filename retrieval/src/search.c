/*
 * Filtered top-k search over the catalog and the side index (ret_search in
 * ret/sources.h): the selectivity decision between an exact scan over the admitted
 * items and an over-fetching, widening ANN search.
 */
#include "ret/sources.h"
#include "rp/clock.h"

#include <math.h>
#include <string.h>

/* A bounded min-heap keeping the k best (score, id) pairs. Ties go to the lower id,
 * so exact and ANN paths agree on equal scores. */
typedef struct topk {
    ret_cand *v;
    uint32_t n, k;
} topk;

static inline bool worse(const ret_cand *a, const ret_cand *b)
{
    return a->score < b->score || (a->score == b->score && a->id > b->id);
}

static void heap_down(topk *h, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && worse(&h->v[l], &h->v[m])) m = l;
        if (r < h->n && worse(&h->v[r], &h->v[m])) m = r;
        if (m == i) return;
        ret_cand t = h->v[i];
        h->v[i] = h->v[m];
        h->v[m] = t;
        i = m;
    }
}

static inline void topk_push(topk *h, uint64_t id, float score, uint8_t source)
{
    ret_cand c = {id, score, source};
    if (h->n < h->k) {
        uint32_t i = h->n++;
        h->v[i] = c;
        while (i > 0) {
            uint32_t p = (i - 1) / 2;
            if (!worse(&h->v[i], &h->v[p])) break;
            ret_cand t = h->v[i];
            h->v[i] = h->v[p];
            h->v[p] = t;
            i = p;
        }
    } else if (h->k && worse(&h->v[0], &c)) {
        h->v[0] = c;
        heap_down(h, 0);
    }
}

/* Pops everything: the heap array ends up sorted best first. */
static void topk_sort(topk *h)
{
    uint32_t n = h->n;
    while (h->n > 1) {
        ret_cand t = h->v[0];
        h->v[0] = h->v[--h->n];
        h->v[h->n] = t;
        heap_down(h, 0);
    }
    h->n = n;
}

static int topk_init(topk *h, uint32_t k, rp_arena *a)
{
    h->v = rp_arena_alloc(a, sizeof *h->v * (k ? k : 1));
    h->n = 0;
    h->k = k;
    return h->v ? RP_OK : RP_ENOMEM;
}

static inline bool skipped(const ret_idset *skip, uint64_t id)
{
    return skip && skip->count && ret_idset_has(skip, id);
}

/* First position in by_created (newest first) whose item is older than t: items
 * [0, pos) have created >= t. */
static uint32_t created_split(const ret_catalog *c, int64_t t)
{
    uint32_t lo = 0, hi = c->n_items;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->created[c->by_created[mid]] >= t) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The side index's items, scored exactly. */
static void scan_side(const ret_ctx *ctx, const float *vec, const ret_idset *skip, uint8_t source,
                      topk *h)
{
    const ret_side *s = ctx->side;
    const ret_filter *f = &ctx->q->filter;
    if (!s) return;
    for (uint32_t i = 0; i < s->n; i++) {
        const ret_side_item *it = &s->items[i];
        if (f->excluded.count && ret_idset_has(&f->excluded, it->id)) continue;
        if (skipped(skip, it->id)) continue;
        if (!ret_filter_admits_meta(f, s->cats + it->cat_off, it->n_cats, it->created)) continue;
        topk_push(h, it->id, ret_dot(vec, s->vectors + (uint64_t)i * s->dim, s->dim), source);
    }
    ctx->stats->scanned += s->n;
}

static void scan_list(const ret_ctx *ctx, const float *vec, const uint32_t *list, uint32_t n,
                      const ret_idset *skip, uint8_t source, topk *h)
{
    const ret_catalog *c = ctx->cat;
    const ret_idset *hidden = ctx->side ? &ctx->side->hidden : NULL;
    uint32_t scored = 0;
    for (uint32_t p = 0; p < n; p++) {
        uint32_t i = list ? list[p] : p;
        if (!ret_filter_admits(&ctx->q->filter, c, i, hidden) || skipped(skip, c->ids[i])) continue;
        topk_push(h, c->ids[i], ret_dot(vec, ret_catalog_vec(c, i), c->dim), source);
        scored++;
    }
    ctx->stats->scanned += scored;
}

static void finish(topk *h, ret_cands *out)
{
    topk_sort(h);
    out->v = h->v;
    out->n = h->n;
}

int ret_search_exact(const ret_ctx *ctx, const float *vec, uint32_t k, const ret_idset *skip,
                     uint8_t source, ret_cands *out, rp_error *err)
{
    topk h;
    if (topk_init(&h, k, ctx->arena)) return rp_errorf(err, RP_ENOMEM, "search: out of memory");
    scan_list(ctx, vec, NULL, ctx->cat->n_items, skip, source, &h);
    finish(&h, out);
    return RP_OK;
}

int ret_search(const ret_ctx *ctx, const float *vec, uint32_t k, const ret_idset *skip,
               uint8_t source, ret_cands *out, rp_error *err)
{
    const ret_catalog *c = ctx->cat;
    const ret_filter *f = &ctx->q->filter;
    const ret_search_opts *o = ctx->opts;
    out->v = NULL;
    out->n = 0;
    topk h;
    if (topk_init(&h, k, ctx->arena)) return rp_errorf(err, RP_ENOMEM, "search: out of memory");
    scan_side(ctx, vec, skip, source, &h);

    /* Which items can pass the filter, and how many at most. */
    uint32_t *cand = NULL, ncand = c->n_items;
    if (ret_filter_candidates(f, c, ctx->arena, &cand, &ncand))
        return rp_errorf(err, RP_ENOMEM, "search: out of memory");
    if (!cand && (f->created_after || f->created_before)) {
        /* The creation bounds select a contiguous run of by_created. */
        uint32_t lo = f->created_before ? created_split(c, f->created_before) : 0;
        uint32_t hi = f->created_after ? created_split(c, f->created_after) : c->n_items;
        cand = c->by_created + lo;
        ncand = hi > lo ? hi - lo : 0;
    }
    uint64_t nskip = f->excluded.count + (skip ? skip->count : 0) +
                     (ctx->side ? ctx->side->hidden.count : 0);

    if (!c->ann || ncand <= o->exact_max || ncand == 0) {
        scan_list(ctx, vec, cand, ncand, skip, source, &h);
        ctx->stats->exact_scans++;
        finish(&h, out);
        return RP_OK;
    }

    /* ANN with over-fetch: a filter admitting a fraction s of the items needs about
     * k/s results to hold k admitted ones; widen x4 (and search harder) until it does. */
    double sel = (double)ncand / (double)c->n_items;
    double factor = ret_filter_restricts(f) ? (double)o->overfetch : 1.0;
    double want = ((double)k + (double)nskip) / sel * factor + 16.0;
    uint32_t fetch = want >= c->n_items ? c->n_items : (uint32_t)want;
    float effort = 1.0f;
    if (fetch > k) effort = (float)sqrt((double)fetch / (double)(k ? k : 1));
    const ret_idset *hidden = ctx->side ? &ctx->side->hidden : NULL;
    for (uint32_t round = 0;; round++) {
        uint32_t *dense = rp_arena_alloc(ctx->arena, sizeof *dense * fetch);
        float *scores = rp_arena_alloc(ctx->arena, sizeof *scores * fetch);
        if (!dense || !scores) return rp_errorf(err, RP_ENOMEM, "search: out of memory for %u results", fetch);
        uint32_t got = 0;
        uint64_t t0 = rp_now_ns(), c0 = o->measure_ann_cpu ? rp_thread_cpu_ns() : 0;
        int rc = c->ann(c->ann_ctx, vec, fetch, effort, dense, scores, &got, err);
        ctx->stats->ann_ns += rp_now_ns() - t0;
        if (o->measure_ann_cpu) ctx->stats->ann_cpu_ns += rp_thread_cpu_ns() - c0;
        ctx->stats->ann_searches++;
        if (rc) return rc;
        /* The side items already in h carry over into each round's trial heap. */
        topk trial;
        if (topk_init(&trial, k, ctx->arena)) return rp_errorf(err, RP_ENOMEM, "search: out of memory");
        memcpy(trial.v, h.v, sizeof *h.v * h.n);
        trial.n = h.n;
        uint32_t admitted = 0;
        for (uint32_t j = 0; j < got; j++) {
            uint32_t i = dense[j];
            if (i >= c->n_items) continue;
            if (!ret_filter_admits(f, c, i, hidden) || skipped(skip, c->ids[i])) continue;
            topk_push(&trial, c->ids[i], scores[j], source);
            admitted++;
        }
        if (admitted >= k) {
            finish(&trial, out);
            return RP_OK;
        }
        /* An IVF search returns fewer results than asked when its probed lists run
         * out; past the catalogue's size or the widening budget, scan exactly. */
        if (round >= o->max_widen || fetch >= c->n_items) break;
        fetch = (uint64_t)fetch * 4 >= c->n_items ? c->n_items : fetch * 4;
        effort *= 2.0f;
    }
    /* The filter admits fewer items than estimated: scan them exactly. */
    scan_list(ctx, vec, cand, ncand, skip, source, &h);
    ctx->stats->exact_scans++;
    finish(&h, out);
    return RP_OK;
}
