/*
 * gateway/src/catalog.h — the gateway's in-memory view of its bundle's items (internal).
 *
 * Loaded once at start from the item store: ids (ascending), titles and category names
 * (pointers into the store, valid while the bundle is held), category ids, creation
 * times, popularity, and the most popular and newest items for the in-process sources.
 * Embeddings stay in the item store and are read per request for the few items that
 * need them. Read-only after load: any thread may use it.
 */
#ifndef GW_CATALOG_H
#define GW_CATALOG_H

#include "idx/bundle.h"
#include "rp/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw__catalog {
    idx_bundle *bundle; /* one reference, released by gw__catalog_free */
    const char *version;
    uint32_t dim;
    size_t n;
    uint64_t *ids;          /* [n] ascending */
    const char **titles;    /* [n] */
    int64_t *created;       /* [n] */
    uint64_t *popularity;   /* [n] */
    uint32_t *cat_off;      /* [n + 1] */
    uint32_t *cats;         /* category ids of item i: cats[cat_off[i] .. cat_off[i+1]) */
    size_t n_names;
    const char **names;     /* [n_names] category names, ascending */
    size_t n_popular, n_fresh;
    uint32_t *popular;      /* item indices, most popular first */
    uint32_t *fresh;        /* item indices, newest first */
} gw__catalog;

/* Loads the catalogue of the bundle at path (opened read-only, checksums verified). */
int gw__catalog_load(const char *path, gw__catalog **out, rp_error *err);
void gw__catalog_free(gw__catalog *c);
/* Item id → index; false when the bundle does not know the item. */
bool gw__catalog_find(const gw__catalog *c, uint64_t id, uint32_t *idx);
/* Category name → id; false when unknown. */
bool gw__catalog_category(const gw__catalog *c, const char *name, uint32_t *id);
/* Copies the embeddings of items idx[0..n) (known items) into out (n × dim). */
int gw__catalog_embeddings(const gw__catalog *c, size_t n, const uint32_t *idx, float *out,
                           rp_error *err);

#endif
