/*
 * Source "popular": the most popular admitted items. Scores are the bundle's
 * popularity decayed with the bundle's age (half-life from the service's options), so
 * that a caller mixing sources sees stale counts weigh less.
 */
#include "ret/sources.h"

#include <math.h>

static int popular_run(const ret_ctx *ctx, uint32_t quota, ret_cands *out, rp_error *err)
{
    const ret_catalog *c = ctx->cat;
    const ret_query *q = ctx->q;
    const ret_idset *hidden = ctx->side ? &ctx->side->hidden : NULL;
    double decay = 1.0;
    if (ctx->opts->popular_half_life_days > 0 && q->bundle_created && q->now > q->bundle_created)
        decay = exp2(-(double)(q->now - q->bundle_created) / 86400.0 / ctx->opts->popular_half_life_days);
    out->n = 0;
    out->v = rp_arena_alloc(ctx->arena, sizeof *out->v * (quota ? quota : 1));
    if (!out->v) return rp_errorf(err, RP_ENOMEM, "popular: out of memory");
    /* Walk the items most popular first; a selective filter makes this walk long, but
     * it stays linear in the catalogue and never touches vectors. */
    for (uint32_t p = 0; p < c->n_items && out->n < quota; p++) {
        uint32_t i = c->by_popularity[p];
        if (!ret_filter_admits(&q->filter, c, i, hidden)) continue;
        out->v[out->n++] = (ret_cand){c->ids[i], (float)(c->popularity[i] * decay), RET_SRC_POPULAR};
    }
    return RP_OK;
}

const ret_source ret__source_popular = {RET_SRC_POPULAR, "popular", popular_run};
