/* Merge, dedupe, drop; the degradation policy. */
#include "gw/merge.h"

#include <stdlib.h>
#include <string.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

size_t gw_sort_unique(uint64_t *ids, size_t n)
{
    if (n < 2) return n;
    qsort(ids, n, sizeof *ids, cmp_u64);
    size_t m = 1;
    for (size_t i = 1; i < n; i++)
        if (ids[i] != ids[m - 1]) ids[m++] = ids[i];
    return m;
}

bool gw_contains(const uint64_t *set, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (set[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && set[lo] == id;
}

/* By item id, then best score first, then the earlier list. */
static int cmp_id_score(const void *a, const void *b)
{
    const gw_cand *x = a, *y = b;
    if (x->item_id != y->item_id) return x->item_id < y->item_id ? -1 : 1;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return 0;
}

static int cmp_score(const void *a, const void *b)
{
    const gw_cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->item_id < y->item_id ? -1 : x->item_id > y->item_id;
}

int gw_merge(const gw_cand *const *lists, const size_t *lens, size_t nlists, const uint64_t *drop,
             size_t ndrop, rp_arena *arena, gw_cand **out, size_t *nout)
{
    size_t total = 0;
    for (size_t l = 0; l < nlists; l++) total += lens[l];
    gw_cand *all = rp_arena_alloc(arena, (total ? total : 1) * sizeof *all);
    if (!all) return RP_ENOMEM;
    size_t n = 0;
    for (size_t l = 0; l < nlists; l++)
        for (size_t i = 0; i < lens[l]; i++)
            if (!gw_contains(drop, ndrop, lists[l][i].item_id)) all[n++] = lists[l][i];
    qsort(all, n, sizeof *all, cmp_id_score);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || all[i].item_id != all[m - 1].item_id) all[m++] = all[i];
    qsort(all, m, sizeof *all, cmp_score);
    *out = all;
    *nout = m;
    return RP_OK;
}

size_t gw_degradations(const gw_outcome *o, int flags[4])
{
    size_t n = 0;
    if (o->shards && o->shards_ok == 0) flags[n++] = GW_DEGRADED_RETRIEVAL_FAILED;
    else if (o->shards_ok < o->shards) flags[n++] = GW_DEGRADED_SHARD_PARTIAL;
    if (o->rank_wanted && !o->rank_ok) flags[n++] = GW_DEGRADED_RANKING_SKIPPED;
    if (o->cold_start) flags[n++] = GW_DEGRADED_COLD_START;
    return n;
}
