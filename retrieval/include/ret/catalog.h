/*
 * ret/catalog.h — the read-only, in-memory view of one bundle (or one shard of it)
 * that candidate sources read: item ids, creation times, categories, per-category
 * posting lists, item vectors, popularity, and a function that searches the ANN index.
 *
 * A catalog is built once per loaded bundle (ret_catalog_build) and never changes; many
 * request threads read it at once without locks. Items have dense indices 0..n-1.
 */
#ifndef RET_CATALOG_H
#define RET_CATALOG_H

#include "rp/err.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * Searches the ANN index for the k items with the largest inner product with q (dim
 * floats). `effort` >= 1 asks for a deeper search (IVF nprobe) for over-fetching
 * searches, about sqrt(k / results wanted); 1 = the tuned default. Implementations
 * may use a fixed wider setting above RET_WIDE_EFFORT. Writes up to k results, best first, into dense[]
 * (dense item indices) and scores[], and their number into *n. Must be safe to call
 * from many threads at once. Returns RP_OK or an error filled into err.
 */
#define RET_WIDE_EFFORT 1.2f

typedef int (*ret_ann_search_fn)(void *ctx, const float *q, uint32_t k, float effort,
                                 uint32_t *dense, float *scores, uint32_t *n, rp_error *err);

/* What the builder is given; arrays are borrowed during ret_catalog_build only. */
typedef struct ret_catalog_input {
    uint32_t n_items;
    uint32_t dim;
    const uint64_t *ids;     /* [n_items] external ids, unique */
    const int64_t *created;  /* [n_items] Unix seconds, or NULL (all 0) */
    const uint32_t *cat_off; /* [n_items + 1], or NULL (no categories) */
    const uint16_t *cats;    /* category indices of item i: cats[cat_off[i]..cat_off[i+1]) */
    uint32_t n_categories;
    const char *const *category_names; /* [n_categories] */
    const float *vectors;    /* [n_items * dim] row-major item vectors (required) */
    const float *popularity; /* [n_items] higher = more popular, or NULL (all 0) */
    ret_ann_search_fn ann;   /* NULL = exact search over vectors */
    void *ann_ctx;
} ret_catalog_input;

typedef struct ret_catalog {
    uint32_t n_items;
    uint32_t dim;
    uint64_t *ids;       /* [n_items] */
    int64_t *created;    /* [n_items] */
    uint32_t *cat_off;   /* [n_items + 1] */
    uint16_t *cats;      /* [cat_off[n_items]] */
    uint32_t n_categories;
    char **category_names;  /* [n_categories] */
    uint32_t *cat_by_name;  /* [n_categories] category indices sorted by name */
    uint32_t *post_off;  /* [n_categories + 1] */
    uint32_t *post;      /* dense indices of category c, ascending: post[post_off[c]..) */
    float *vectors;      /* [n_items * dim] */
    float *popularity;   /* [n_items] */
    uint32_t *by_popularity; /* dense indices, most popular first (ties: lower id first) */
    uint32_t *by_created;    /* dense indices, newest first (ties: lower id first) */
    uint32_t *id_slots;      /* open-addressing table: dense index + 1, 0 = empty */
    uint32_t id_mask;
    ret_ann_search_fn ann;
    void *ann_ctx;
} ret_catalog;

/* Copies what it needs from in into a new catalog. RP_EINVAL (naming the field) when the
 * input is inconsistent (duplicate id, category index out of range, NaN in a vector),
 * RP_ENOMEM. *out is NULL on error. */
int ret_catalog_build(const ret_catalog_input *in, ret_catalog **out, rp_error *err);
/* Frees the catalog. NULL is a no-op. */
void ret_catalog_free(ret_catalog *c);

/* External id → dense index; true when found. */
bool ret_catalog_find(const ret_catalog *c, uint64_t id, uint32_t *dense);
/* Category name → index; true when found. */
bool ret_catalog_find_category(const ret_catalog *c, const char *name, uint16_t *idx);
/* Row i of the vectors. */
static inline const float *ret_catalog_vec(const ret_catalog *c, uint32_t i)
{
    return c->vectors + (uint64_t)i * c->dim;
}

/* Inner product of two dim-vectors. */
float ret_dot(const float *a, const float *b, uint32_t dim);

#endif
