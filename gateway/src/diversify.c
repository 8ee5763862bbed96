/* MMR over embeddings and per-category caps. */
#include "gw/diversify.h"

#include <math.h>
#include <string.h>

static bool over_cap(const gw_div_item *it, const uint32_t *cat_count, uint32_t cap)
{
    if (!cap) return false;
    for (uint32_t j = 0; j < it->ncats; j++)
        if (cat_count[it->cats[j]] >= cap) return true;
    return false;
}

int gw_diversify(const gw_div_item *items, size_t n, size_t dim, const gw_div_opts *opts,
                 size_t count, rp_arena *arena, size_t *out, size_t *nout)
{
    *nout = 0;
    if (n == 0 || count == 0) return RP_OK;
    uint32_t max_cat = 0;
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < items[i].ncats; j++)
            if (items[i].cats[j] > max_cat) max_cat = items[i].cats[j];
    uint32_t *cat_count = rp_arena_calloc(arena, (size_t)max_cat + 1, sizeof *cat_count);
    bool *taken = rp_arena_calloc(arena, n, sizeof *taken);
    if (!cat_count || !taken) return RP_ENOMEM;
    uint32_t cap = opts->max_per_category;

    if (!opts->mmr || opts->lambda >= 1.0f || dim == 0) {
        /* Score order (stable for ties), caps applied. */
        for (size_t k = 0; k < count; k++) {
            size_t best = n;
            for (size_t i = 0; i < n; i++) {
                if (taken[i] || over_cap(&items[i], cat_count, cap)) continue;
                if (best == n || items[i].score > items[best].score) best = i;
            }
            if (best == n) break;
            taken[best] = true;
            for (uint32_t j = 0; j < items[best].ncats; j++) cat_count[items[best].cats[j]]++;
            out[(*nout)++] = best;
        }
        return RP_OK;
    }

    /* Unit-length copies of the embeddings, relevance scaled to 0..1, and each
     * candidate's largest similarity to what is selected so far. */
    float *unit = rp_arena_calloc(arena, n * dim, sizeof *unit);
    float *rel = rp_arena_alloc(arena, n * sizeof *rel);
    float *maxsim = rp_arena_alloc(arena, n * sizeof *maxsim);
    bool *has = rp_arena_calloc(arena, n, sizeof *has);
    if (!unit || !rel || !maxsim || !has) return RP_ENOMEM;
    float lo = items[0].score, hi = items[0].score;
    for (size_t i = 0; i < n; i++) {
        if (items[i].score < lo) lo = items[i].score;
        if (items[i].score > hi) hi = items[i].score;
    }
    for (size_t i = 0; i < n; i++) {
        rel[i] = hi > lo ? (items[i].score - lo) / (hi - lo) : 1.0f;
        maxsim[i] = 0.0f;
        if (!items[i].emb) continue;
        double norm = 0;
        for (size_t d = 0; d < dim; d++) norm += (double)items[i].emb[d] * items[i].emb[d];
        if (norm <= 0 || !isfinite(norm)) continue;
        float inv = (float)(1.0 / sqrt(norm));
        for (size_t d = 0; d < dim; d++) unit[i * dim + d] = items[i].emb[d] * inv;
        has[i] = true;
    }
    float lambda = opts->lambda;
    for (size_t k = 0; k < count; k++) {
        size_t best = n;
        float best_v = 0;
        for (size_t i = 0; i < n; i++) {
            if (taken[i] || over_cap(&items[i], cat_count, cap)) continue;
            float v = lambda * rel[i] - (1.0f - lambda) * maxsim[i];
            if (best == n || v > best_v) {
                best = i;
                best_v = v;
            }
        }
        if (best == n) break;
        taken[best] = true;
        for (uint32_t j = 0; j < items[best].ncats; j++) cat_count[items[best].cats[j]]++;
        out[(*nout)++] = best;
        if (!has[best]) continue;
        const float *b = unit + best * dim;
        for (size_t i = 0; i < n; i++) {
            if (taken[i] || !has[i]) continue;
            const float *a = unit + i * dim;
            float s = 0;
            for (size_t d = 0; d < dim; d++) s += a[d] * b[d];
            if (s > maxsim[i]) maxsim[i] = s;
        }
    }
    return RP_OK;
}
