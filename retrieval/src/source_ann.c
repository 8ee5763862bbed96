/* Source "ann": nearest neighbours of the user or query vector, filtered. */
#include "ret/sources.h"

static int ann_run(const ret_ctx *ctx, uint32_t quota, ret_cands *out, rp_error *err)
{
    out->v = NULL;
    out->n = 0;
    if (!ctx->q->vector) return RP_OK;
    return ret_search(ctx, ctx->q->vector, quota, NULL, RET_SRC_ANN, out, err);
}

const ret_source ret__source_ann = {RET_SRC_ANN, "ann", ann_run};
