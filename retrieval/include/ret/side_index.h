/*
 * ret/side_index.h — items changed since the bundle was built: a small exact side index
 * of upserted items, and the set of ids whose bundle copy must no longer be served
 * (deleted, or replaced by an upsert). Deletions are tombstones applied by every source.
 *
 * A ret_side is immutable once built: an upsert or delete builds a new one from the old
 * (copy on write) and the service swaps it in with its bundle pin, so request threads
 * read it without locks. Reference-counted: ret_side_ref / ret_side_unref.
 */
#ifndef RET_SIDE_INDEX_H
#define RET_SIDE_INDEX_H

#include "ret/catalog.h"
#include "ret/filter.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct ret_side_item {
    uint64_t id;
    int64_t created;
    uint32_t cat_off; /* categories of this item: ret_side.cats[cat_off..cat_off+n_cats) */
    uint32_t n_cats;
} ret_side_item;

typedef struct ret_side {
    atomic_int refs;
    uint32_t dim;
    uint32_t n;            /* upserted items, searched exactly */
    ret_side_item *items;  /* [n] */
    float *vectors;        /* [n * dim] */
    uint16_t *cats;        /* category indices (of the bundle's catalog) */
    ret_idset hidden;      /* bundle ids not to serve: deleted or replaced */
    ret_idset deleted;     /* ids deleted since the bundle (tombstones) */
    uint32_t *slots;       /* id → position + 1 (open addressing over items) */
    uint32_t mask;
} ret_side;

/* One item to upsert: categories already resolved to the catalog's indices (names the
 * bundle does not know are dropped by the caller); vec has dim floats. Borrowed. */
typedef struct ret_side_upsert {
    uint64_t id;
    int64_t created;
    const uint16_t *cats;
    uint32_t n_cats;
    const float *vec;
} ret_side_upsert;

/* An empty side index for vectors of dim floats (refs = 1). */
int ret_side_new(uint32_t dim, ret_side **out, rp_error *err);
/* A new side index = old + upserts (replacing same ids, later rows win); ids present
 * in catalog c are added to hidden. old is not modified. refs = 1. */
int ret_side_upsert_items(const ret_side *old, const ret_catalog *c, const ret_side_upsert *up,
                          uint32_t n, ret_side **out, rp_error *err);
/* A new side index = old minus ids (removed from the side items, tombstoned in the
 * bundle). *deleted counts ids that existed (in the side index or catalog c and not
 * already deleted); *not_found the others. */
int ret_side_delete_items(const ret_side *old, const ret_catalog *c, const uint64_t *ids,
                          uint32_t n, uint32_t *deleted, uint32_t *not_found, ret_side **out,
                          rp_error *err);
/* A copy of old (built against old_cat) for a new catalog c after a reload: keeps the
 * side items (categories mapped by name; at most 256 per item) and the tombstones, and
 * recomputes hidden against c. Side items are dropped when c's dim differs. */
int ret_side_rebase(const ret_side *old, const ret_catalog *old_cat, const ret_catalog *c,
                    ret_side **out, rp_error *err);

ret_side *ret_side_ref(ret_side *s);
/* Drops a reference; frees on the last one. NULL is a no-op. */
void ret_side_unref(ret_side *s);

/* Position of id among the side items, or -1. */
int64_t ret_side_find(const ret_side *s, uint64_t id);

#endif
