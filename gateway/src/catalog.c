/* The gateway's catalogue: one walk over the item store at start. */
#include "catalog.h"

#include <stdlib.h>
#include <string.h>

#define GW__SOURCE_LIST 2000 /* items kept in the popular and fresh lists */

typedef struct load_ctx {
    gw__catalog *c;
    size_t cap, ncats, cats_cap;
    rp_error *err;
} load_ctx;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

bool gw__catalog_category(const gw__catalog *c, const char *name, uint32_t *id)
{
    const char **hit = bsearch(&name, c->names, c->n_names, sizeof *c->names, cmp_str);
    if (!hit) return false;
    *id = (uint32_t)(hit - c->names);
    return true;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 1024;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np) return -1;
    *p = np;
    *cap = nc;
    return 0;
}

static int add_item(void *ctx, const idx_item_view *it, const float *embedding)
{
    (void)embedding;
    load_ctx *l = ctx;
    gw__catalog *c = l->c;
    size_t i = c->n;
    if (i + 1 > l->cap) {
        size_t cap = l->cap;
        size_t nc = cap ? cap * 2 : 1024;
        uint64_t *ids = realloc(c->ids, nc * sizeof *ids);
        if (ids) c->ids = ids;
        const char **t = realloc(c->titles, nc * sizeof *t);
        if (t) c->titles = t;
        int64_t *cr = realloc(c->created, nc * sizeof *cr);
        if (cr) c->created = cr;
        uint64_t *po = realloc(c->popularity, nc * sizeof *po);
        if (po) c->popularity = po;
        uint32_t *off = realloc(c->cat_off, (nc + 1) * sizeof *off);
        if (off) c->cat_off = off;
        if (!ids || !t || !cr || !po || !off)
            return rp_errorf(l->err, RP_ENOMEM, "gateway catalogue: out of memory");
        l->cap = nc;
    }
    c->ids[i] = it->id;
    c->titles[i] = it->title;
    c->created[i] = it->created;
    c->popularity[i] = it->popularity;
    if (i == 0) c->cat_off[0] = 0;
    if (grow((void **)&c->cats, &l->cats_cap, l->ncats + it->n_categories, sizeof *c->cats))
        return rp_errorf(l->err, RP_ENOMEM, "gateway catalogue: out of memory");
    const char *name = it->categories;
    for (uint32_t k = 0; k < it->n_categories; k++) {
        uint32_t id;
        if (!gw__catalog_category(c, name, &id))
            return rp_errorf(l->err, RP_ECORRUPT,
                             "gateway catalogue: item %llu has category \"%s\" that the "
                             "store does not list",
                             (unsigned long long)it->id, name);
        c->cats[l->ncats++] = id;
        name += strlen(name) + 1;
    }
    c->cat_off[i + 1] = (uint32_t)l->ncats;
    c->n++;
    return 0;
}

static const gw__catalog *sort_cat;

static int by_popularity(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    uint64_t px = sort_cat->popularity[x], py = sort_cat->popularity[y];
    if (px != py) return px > py ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int by_created(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    int64_t cx = sort_cat->created[x], cy = sort_cat->created[y];
    if (cx != cy) return cx > cy ? -1 : 1;
    /* Same age: the more popular first. */
    return by_popularity(a, b);
}

int gw__catalog_load(const char *path, gw__catalog **out, rp_error *err)
{
    gw__catalog *c = calloc(1, sizeof *c);
    uint32_t *order = NULL;
    int rc;
    *out = NULL;
    if (!c) return rp_errorf(err, RP_ENOMEM, "gateway catalogue: out of memory");
    /* The gateway searches no index; shard 0 is the smallest thing open_shard loads. */
    if ((rc = idx_bundle_open_shard(path, 0, &c->bundle, err))) goto err;
    idx_itemstore *store = idx_bundle_items(c->bundle);
    const idx_manifest *m = idx_bundle_manifest(c->bundle);
    c->version = m->version;
    c->dim = idx_itemstore_dim(store);
    if ((rc = idx_itemstore_categories(store, &c->names, &c->n_names, err))) goto err;
    load_ctx l = {.c = c, .err = err};
    if ((rc = idx_itemstore_foreach(store, add_item, &l, err))) goto err;
    if (c->n == 0) {
        c->cat_off = calloc(1, sizeof *c->cat_off);
        if (!c->cat_off) {
            rc = rp_errorf(err, RP_ENOMEM, "gateway catalogue: out of memory");
            goto err;
        }
    }
    order = malloc((c->n ? c->n : 1) * sizeof *order);
    if (!order) {
        rc = rp_errorf(err, RP_ENOMEM, "gateway catalogue: out of memory");
        goto err;
    }
    size_t keep = c->n < GW__SOURCE_LIST ? c->n : GW__SOURCE_LIST;
    c->popular = malloc((keep ? keep : 1) * sizeof *c->popular);
    c->fresh = malloc((keep ? keep : 1) * sizeof *c->fresh);
    if (!c->popular || !c->fresh) {
        rc = rp_errorf(err, RP_ENOMEM, "gateway catalogue: out of memory");
        goto err;
    }
    /* qsort has no context argument; loading happens once, before any request. */
    sort_cat = c;
    for (size_t i = 0; i < c->n; i++) order[i] = (uint32_t)i;
    qsort(order, c->n, sizeof *order, by_popularity);
    memcpy(c->popular, order, keep * sizeof *order);
    c->n_popular = keep;
    qsort(order, c->n, sizeof *order, by_created);
    memcpy(c->fresh, order, keep * sizeof *order);
    c->n_fresh = keep;
    sort_cat = NULL;
    free(order);
    *out = c;
    return RP_OK;

err:
    free(order);
    gw__catalog_free(c);
    return rc;
}

void gw__catalog_free(gw__catalog *c)
{
    if (!c) return;
    free(c->ids);
    free(c->titles);
    free(c->created);
    free(c->popularity);
    free(c->cat_off);
    free(c->cats);
    free(c->names);
    free(c->popular);
    free(c->fresh);
    idx_bundle_release(c->bundle);
    free(c);
}

bool gw__catalog_find(const gw__catalog *c, uint64_t id, uint32_t *idx)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->ids[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    if (lo < c->n && c->ids[lo] == id) {
        *idx = (uint32_t)lo;
        return true;
    }
    return false;
}

int gw__catalog_embeddings(const gw__catalog *c, size_t n, const uint32_t *idx, float *out,
                           rp_error *err)
{
    if (n == 0) return RP_OK;
    uint64_t *ids = malloc(n * sizeof *ids);
    if (!ids) return rp_errorf(err, RP_ENOMEM, "gateway catalogue: out of memory");
    for (size_t i = 0; i < n; i++) ids[i] = c->ids[idx[i]];
    int rc = idx_itemstore_embeddings(idx_bundle_items(c->bundle), n, ids, out, err);
    free(ids);
    return rc;
}
