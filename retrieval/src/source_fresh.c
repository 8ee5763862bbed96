/*
 * Source "fresh": the newest admitted items created no later than the query's clock,
 * upserted items included. Score = minus the item's age in days (higher = newer).
 */
#include "ret/sources.h"

#include <stdlib.h>

typedef struct side_ref {
    int64_t t;
    uint64_t id;
} side_ref;

static int newest_first(const void *a, const void *b)
{
    const side_ref *x = a, *y = b;
    if (x->t != y->t) return x->t > y->t ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int fresh_run(const ret_ctx *ctx, uint32_t quota, ret_cands *out, rp_error *err)
{
    const ret_catalog *c = ctx->cat;
    const ret_query *q = ctx->q;
    const ret_side *s = ctx->side;
    const ret_idset *hidden = s ? &s->hidden : NULL;
    out->n = 0;
    out->v = rp_arena_alloc(ctx->arena, sizeof *out->v * (quota ? quota : 1));
    if (!out->v) return rp_errorf(err, RP_ENOMEM, "fresh: out of memory");
    /* The admitted side items, newest first, merged with the bundle's by_created. */
    side_ref *side = NULL;
    uint32_t ns = 0, si = 0;
    if (s && s->n) {
        side = rp_arena_alloc(ctx->arena, sizeof *side * s->n);
        if (!side) return rp_errorf(err, RP_ENOMEM, "fresh: out of memory");
        for (uint32_t j = 0; j < s->n; j++) {
            const ret_side_item *it = &s->items[j];
            if (it->created > q->now) continue;
            if (q->filter.excluded.count && ret_idset_has(&q->filter.excluded, it->id)) continue;
            if (!ret_filter_admits_meta(&q->filter, s->cats + it->cat_off, it->n_cats, it->created))
                continue;
            side[ns++] = (side_ref){it->created, it->id};
        }
        qsort(side, ns, sizeof *side, newest_first);
    }
    uint32_t p = 0;
    while (out->n < quota) {
        int64_t bundle_t = INT64_MIN;
        uint32_t bi = 0;
        for (; p < c->n_items; p++) {
            bi = c->by_created[p];
            if (c->created[bi] > q->now) continue;
            if (!ret_filter_admits(&q->filter, c, bi, hidden)) continue;
            bundle_t = c->created[bi];
            break;
        }
        if (si >= ns && p >= c->n_items) break;
        uint64_t id;
        int64_t t;
        if (si < ns && side[si].t >= bundle_t) {
            id = side[si].id;
            t = side[si++].t;
        } else {
            id = c->ids[bi];
            t = bundle_t;
            p++;
        }
        out->v[out->n++] = (ret_cand){id, -(float)((double)(q->now - t) / 86400.0), RET_SRC_FRESH};
    }
    return RP_OK;
}

const ret_source ret__source_fresh = {RET_SRC_FRESH, "fresh", fresh_run};
