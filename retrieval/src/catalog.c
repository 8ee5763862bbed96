/* The in-memory view of a bundle that sources read (ret/catalog.h). */
#include "ret/catalog.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

float ret_dot(const float *a, const float *b, uint32_t dim)
{
    /* Four partial sums let the compiler vectorise without -ffast-math. */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    uint32_t j = 0;
    for (; j + 4 <= dim; j += 4) {
        s0 += a[j] * b[j];
        s1 += a[j + 1] * b[j + 1];
        s2 += a[j + 2] * b[j + 2];
        s3 += a[j + 3] * b[j + 3];
    }
    for (; j < dim; j++) s0 += a[j] * b[j];
    return (s0 + s1) + (s2 + s3);
}

/* qsort has no context argument: the sort keys are passed through this pointer,
 * set only while ret_catalog_build sorts (builds are not concurrent with each other
 * within a thread, and the key arrays are read-only). */
static _Thread_local const ret_catalog *sort_cat;

static int by_pop_cmp(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    float pi = sort_cat->popularity[i], pj = sort_cat->popularity[j];
    if (pi != pj) return pi > pj ? -1 : 1;
    return sort_cat->ids[i] < sort_cat->ids[j] ? -1 : sort_cat->ids[i] > sort_cat->ids[j];
}

static int by_created_cmp(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    int64_t ci = sort_cat->created[i], cj = sort_cat->created[j];
    if (ci != cj) return ci > cj ? -1 : 1;
    return sort_cat->ids[i] < sort_cat->ids[j] ? -1 : sort_cat->ids[i] > sort_cat->ids[j];
}

static int by_name_cmp(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    return strcmp(sort_cat->category_names[i], sort_cat->category_names[j]);
}

int ret_catalog_build(const ret_catalog_input *in, ret_catalog **out, rp_error *err)
{
    *out = NULL;
    uint32_t n = in->n_items, dim = in->dim;
    if (dim == 0 || dim > 4096) return rp_errorf(err, RP_EINVAL, "catalog: dimension %u is out of range 1..4096", dim);
    if (!in->vectors && n) return rp_errorf(err, RP_EINVAL, "catalog: item vectors are missing");
    if (in->n_categories > 65535) return rp_errorf(err, RP_EINVAL, "catalog: %u categories exceed 65535", in->n_categories);
    ret_catalog *c = calloc(1, sizeof *c);
    if (!c) return rp_errorf(err, RP_ENOMEM, "catalog: out of memory");
    c->n_items = n;
    c->dim = dim;
    c->n_categories = in->n_categories;
    c->ann = in->ann;
    c->ann_ctx = in->ann_ctx;
    uint32_t ncat_entries = in->cat_off ? in->cat_off[n] : 0;
    uint32_t cap = 16;
    while (cap < 2 * (uint64_t)n + 2) cap <<= 1;
    c->id_mask = cap - 1;
    c->ids = malloc(sizeof *c->ids * (n ? n : 1));
    c->created = calloc(n ? n : 1, sizeof *c->created);
    c->cat_off = malloc(sizeof *c->cat_off * (n + 1));
    c->cats = malloc(sizeof *c->cats * (ncat_entries ? ncat_entries : 1));
    c->category_names = calloc(in->n_categories ? in->n_categories : 1, sizeof *c->category_names);
    c->cat_by_name = malloc(sizeof *c->cat_by_name * (in->n_categories ? in->n_categories : 1));
    c->post_off = calloc(in->n_categories + 1, sizeof *c->post_off);
    c->post = malloc(sizeof *c->post * (ncat_entries ? ncat_entries : 1));
    c->vectors = malloc(sizeof *c->vectors * ((uint64_t)n * dim + 1));
    c->popularity = calloc(n ? n : 1, sizeof *c->popularity);
    c->by_popularity = malloc(sizeof *c->by_popularity * (n ? n : 1));
    c->by_created = malloc(sizeof *c->by_created * (n ? n : 1));
    c->id_slots = calloc(cap, sizeof *c->id_slots);
    if (!c->ids || !c->created || !c->cat_off || !c->cats || !c->category_names ||
        !c->cat_by_name || !c->post_off || !c->post || !c->vectors || !c->popularity ||
        !c->by_popularity || !c->by_created || !c->id_slots) {
        rp_errorf(err, RP_ENOMEM, "catalog: out of memory for %u items", n);
        goto err;
    }
    for (uint32_t k = 0; k < in->n_categories; k++) {
        const char *name = in->category_names && in->category_names[k] ? in->category_names[k] : "";
        if (!(c->category_names[k] = strdup(name))) {
            rp_errorf(err, RP_ENOMEM, "catalog: out of memory");
            goto err;
        }
        c->cat_by_name[k] = k;
    }
    if (n) memcpy(c->ids, in->ids, sizeof *c->ids * n);
    if (n && in->created) memcpy(c->created, in->created, sizeof *c->created * n);
    if (n && in->popularity) memcpy(c->popularity, in->popularity, sizeof *c->popularity * n);
    if (n) memcpy(c->vectors, in->vectors, sizeof *c->vectors * (uint64_t)n * dim);
    for (uint64_t j = 0; j < (uint64_t)n * dim; j++) {
        if (!isfinite(c->vectors[j])) {
            rp_errorf(err, RP_EINVAL, "catalog: item %llu has a NaN/inf in its vector",
                      (unsigned long long)c->ids[j / dim]);
            goto err;
        }
    }
    c->cat_off[0] = 0;
    for (uint32_t i = 0; i < n; i++) {
        c->cat_off[i + 1] = in->cat_off ? in->cat_off[i + 1] : 0;
        for (uint32_t j = c->cat_off[i]; j < c->cat_off[i + 1]; j++) {
            uint16_t k = in->cats[j];
            if (k >= in->n_categories) {
                rp_errorf(err, RP_EINVAL, "catalog: item %llu has category index %u, only %u exist",
                          (unsigned long long)c->ids[i], k, in->n_categories);
                goto err;
            }
            c->cats[j] = k;
            c->post_off[k + 1]++;
        }
        uint64_t id = c->ids[i];
        if (id == 0) {
            rp_errorf(err, RP_EINVAL, "catalog: item id 0 at row %u", i);
            goto err;
        }
        for (uint32_t h = ret__hash64(id) & c->id_mask;; h = (h + 1) & c->id_mask) {
            if (!c->id_slots[h]) {
                c->id_slots[h] = i + 1;
                break;
            }
            if (c->ids[c->id_slots[h] - 1] == id) {
                rp_errorf(err, RP_EINVAL, "catalog: duplicate item id %llu", (unsigned long long)id);
                goto err;
            }
        }
        c->by_popularity[i] = i;
        c->by_created[i] = i;
    }
    for (uint32_t k = 0; k < in->n_categories; k++) c->post_off[k + 1] += c->post_off[k];
    {
        uint32_t *fill = calloc(in->n_categories ? in->n_categories : 1, sizeof *fill);
        if (!fill) {
            rp_errorf(err, RP_ENOMEM, "catalog: out of memory");
            goto err;
        }
        /* Items are visited in dense order, so each posting list comes out ascending;
         * an item listing a category twice appears once. */
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = c->cat_off[i]; j < c->cat_off[i + 1]; j++) {
                uint16_t k = c->cats[j];
                uint32_t at = c->post_off[k] + fill[k];
                if (fill[k] && c->post[at - 1] == i) continue;
                c->post[at] = i;
                fill[k]++;
            }
        /* Compact lists shortened by duplicate categories. */
        uint32_t w = 0;
        for (uint32_t k = 0; k < in->n_categories; k++) {
            uint32_t start = c->post_off[k];
            c->post_off[k] = w;
            memmove(c->post + w, c->post + start, sizeof *c->post * fill[k]);
            w += fill[k];
        }
        c->post_off[in->n_categories] = w;
        free(fill);
    }
    sort_cat = c;
    qsort(c->by_popularity, n, sizeof *c->by_popularity, by_pop_cmp);
    qsort(c->by_created, n, sizeof *c->by_created, by_created_cmp);
    qsort(c->cat_by_name, c->n_categories, sizeof *c->cat_by_name, by_name_cmp);
    sort_cat = NULL;
    *out = c;
    return RP_OK;
err:
    ret_catalog_free(c);
    return err ? err->code : RP_EINVAL;
}

void ret_catalog_free(ret_catalog *c)
{
    if (!c) return;
    if (c->category_names)
        for (uint32_t k = 0; k < c->n_categories; k++) free(c->category_names[k]);
    free(c->category_names);
    free(c->cat_by_name);
    free(c->ids);
    free(c->created);
    free(c->cat_off);
    free(c->cats);
    free(c->post_off);
    free(c->post);
    free(c->vectors);
    free(c->popularity);
    free(c->by_popularity);
    free(c->by_created);
    free(c->id_slots);
    free(c);
}

bool ret_catalog_find(const ret_catalog *c, uint64_t id, uint32_t *dense)
{
    for (uint32_t h = ret__hash64(id) & c->id_mask;; h = (h + 1) & c->id_mask) {
        uint32_t s = c->id_slots[h];
        if (!s) return false;
        if (c->ids[s - 1] == id) {
            if (dense) *dense = s - 1;
            return true;
        }
    }
}

bool ret_catalog_find_category(const ret_catalog *c, const char *name, uint16_t *idx)
{
    uint32_t lo = 0, hi = c->n_categories;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int r = strcmp(c->category_names[c->cat_by_name[mid]], name);
        if (r == 0) {
            if (idx) *idx = (uint16_t)c->cat_by_name[mid];
            return true;
        }
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return false;
}
