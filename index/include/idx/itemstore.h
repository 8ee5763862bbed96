/*
 * idx/itemstore.h — the item store of a bundle (LMDB, read-only once published).
 *
 * Item id → title, categories, creation time, popularity, embedding; per-category
 * posting lists of item ids (ascending). A bundle's store is opened by idx_bundle_open
 * and shared by every thread: each call runs its own read transaction. Because a
 * published store is never written again, pointers into it (titles, category names)
 * stay valid until the owning bundle is released for the last time.
 */
#ifndef IDX_ITEMSTORE_H
#define IDX_ITEMSTORE_H

#include "rp/err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct idx_itemstore idx_itemstore;

/* One item as given to the bundle builder (all pointers borrowed for the call). */
typedef struct idx_item {
    uint64_t id;                    /* catalogue id */
    const char *title;              /* UTF-8, NULL = "" */
    const char *const *categories;  /* n_categories names, may be NULL when 0 */
    size_t n_categories;            /* at most IDX_MAX_ITEM_CATEGORIES */
    int64_t created;                /* Unix seconds, 0 = unknown */
    uint64_t popularity;            /* interaction count, 0 = unknown */
} idx_item;

#define IDX_MAX_ITEM_CATEGORIES 64
#define IDX_MAX_TITLE_BYTES 4096
#define IDX_MAX_CATEGORY_BYTES 255

/* One item as read from a store. Strings point into the store (see above). */
typedef struct idx_item_view {
    uint64_t id;
    int64_t created;
    uint64_t popularity;
    const char *title;      /* NUL-terminated */
    uint32_t n_categories;
    const char *categories; /* n_categories NUL-terminated names, back to back */
} idx_item_view;

/* Number of items. */
uint64_t idx_itemstore_count(const idx_itemstore *s);
/* Embedding dimension. */
uint32_t idx_itemstore_dim(const idx_itemstore *s);

/* Looks one item up. embedding (dim floats, may be NULL) receives a copy of its vector.
 * RP_ENOENT when the id is not in the store. */
int idx_itemstore_get(idx_itemstore *s, uint64_t id, idx_item_view *out, float *embedding,
                      rp_error *err);
/* Copies the embeddings of n items into out (n × dim) in one transaction. RP_ENOENT
 * naming the first missing id. */
int idx_itemstore_embeddings(idx_itemstore *s, size_t n, const uint64_t *ids, float *out,
                             rp_error *err);
/* The posting list of a category: *ids is malloc'd (caller frees) ascending item ids;
 * an unknown category gives *n = 0, *ids = NULL and RP_OK. */
int idx_itemstore_category(idx_itemstore *s, const char *category, uint64_t **ids, size_t *n,
                           rp_error *err);
/* Category names, each once, ascending: *names is one malloc'd block holding the array
 * and the strings (free(*names) releases all). */
int idx_itemstore_categories(idx_itemstore *s, const char ***names, size_t *n, rp_error *err);
/* Calls fn for every item in ascending id order; a non-zero return stops the walk and
 * is returned. embedding points to a temporary copy valid during the call. */
typedef int (*idx_item_fn)(void *ctx, const idx_item_view *item, const float *embedding);
int idx_itemstore_foreach(idx_itemstore *s, idx_item_fn fn, void *ctx, rp_error *err);

#endif
