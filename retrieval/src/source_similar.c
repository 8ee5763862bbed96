/* Source "similar": items nearest to the seed items ("more like these"), never the
 * seeds themselves. The seeds are represented by the mean of their vectors. */
#include "ret/sources.h"

static int similar_run(const ret_ctx *ctx, uint32_t quota, ret_cands *out, rp_error *err)
{
    const ret_query *q = ctx->q;
    out->v = NULL;
    out->n = 0;
    if (!q->seed_vector) return RP_OK;
    ret_idset seeds;
    if (ret_idset_init(&seeds, q->n_seeds, ctx->arena)) return rp_errorf(err, RP_ENOMEM, "similar: out of memory");
    for (uint32_t j = 0; j < q->n_seeds; j++)
        if (q->seeds[j]) ret_idset_add(&seeds, q->seeds[j]);
    return ret_search(ctx, q->seed_vector, quota, &seeds, RET_SRC_SIMILAR, out, err);
}

const ret_source ret__source_similar = {RET_SRC_SIMILAR, "similar", similar_run};
