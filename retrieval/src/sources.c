/* The registry of candidate sources, the merge and ret_retrieve (ret/sources.h). */
#include "ret/sources.h"

#include <string.h>

extern const ret_source ret__source_ann;
extern const ret_source ret__source_popular;
extern const ret_source ret__source_fresh;
extern const ret_source ret__source_similar;

/* Adding a source: write source_NAME.c defining ret__source_NAME, add one line here. */
#define RET_SOURCES(XX) \
    XX(ann)             \
    XX(popular)         \
    XX(fresh)           \
    XX(similar)

#define RET__SOURCE_ROW(name) &ret__source_##name,
static const ret_source *const sources[] = {RET_SOURCES(RET__SOURCE_ROW)};
#undef RET__SOURCE_ROW

const ret_source *ret_source_get(uint8_t kind)
{
    for (size_t i = 0; i < sizeof sources / sizeof sources[0]; i++)
        if (sources[i]->kind == kind) return sources[i];
    return NULL;
}

const char *ret_source_name(uint8_t kind)
{
    const ret_source *s = ret_source_get(kind);
    return s ? s->name : "unknown";
}

int ret_merge(const ret_cands *lists, uint32_t n, uint32_t k, rp_arena *a, ret_cands *out)
{
    uint32_t total = 0, longest = 0;
    for (uint32_t j = 0; j < n; j++) {
        total += lists[j].n;
        if (lists[j].n > longest) longest = lists[j].n;
    }
    uint32_t cap = total < k ? total : k;
    out->v = rp_arena_alloc(a, sizeof *out->v * (cap ? cap : 1));
    out->n = 0;
    ret_idset seen;
    if (!out->v || ret_idset_init(&seen, cap, a)) return RP_ENOMEM;
    for (uint32_t r = 0; r < longest && out->n < cap; r++)
        for (uint32_t j = 0; j < n && out->n < cap; j++)
            if (r < lists[j].n && ret_idset_add(&seen, lists[j].v[r].id)) out->v[out->n++] = lists[j].v[r];
    return RP_OK;
}

int ret_retrieve(const ret_ctx *ctx, ret_cands *out, rp_error *err)
{
    const ret_query *q = ctx->q;
    ret_cands lists[RET_SRC_MAX + 2];
    uint32_t nl = 0;
    bool personal = false;
    for (uint32_t j = 0; j < q->n_sources; j++) {
        const ret_source *s = ret_source_get(q->sources[j].source);
        if (!s) return rp_errorf(err, RP_EINVAL, "sources[%u].source: unknown source %u", j, q->sources[j].source);
        uint32_t quota = q->sources[j].quota ? q->sources[j].quota : q->k;
        if (quota > q->k) quota = q->k;
        int rc = s->run(ctx, quota, &lists[nl], err);
        if (rc) return rp_error_prefix(err, "source %s", s->name);
        nl++;
        if (s->kind == RET_SRC_ANN || s->kind == RET_SRC_SIMILAR) personal = true;
    }
    /* Nothing to personalise from (a user nobody has seen): popular and fresh items
     * fill what the vector sources could not. */
    if (personal && !q->vector && !q->seed_vector) {
        const ret_source *fill[2] = {ret_source_get(RET_SRC_POPULAR), ret_source_get(RET_SRC_FRESH)};
        for (int j = 0; j < 2; j++) {
            int rc = fill[j]->run(ctx, q->k, &lists[nl], err);
            if (rc) return rp_error_prefix(err, "source %s", fill[j]->name);
            nl++;
        }
    }
    if (ret_merge(lists, nl, q->k, ctx->arena, out)) return rp_errorf(err, RP_ENOMEM, "merge: out of memory");
    return RP_OK;
}
