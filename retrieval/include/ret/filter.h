/*
 * ret/filter.h — exclusions and filters evaluated inside retrieval.
 *
 * A ret_idset is an open-addressing set of external item ids. A ret_filter is the
 * compiled form of a request's Filter plus its exclusions: category bitmaps, creation
 * bounds and an id set. Both live in the request's arena (or, for sets held by the
 * service, on the heap) and are read-only once built, so many threads may test them.
 */
#ifndef RET_FILTER_H
#define RET_FILTER_H

#include "ret/catalog.h"
#include "rp/arena.h"
#include "rp/err.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ret_idset {
    uint64_t *slots; /* 0 = empty; id 0 is never stored (item ids are non-zero) */
    uint32_t mask;   /* capacity - 1; capacity is a power of two */
    uint32_t count;
} ret_idset;

/* Initialises s for up to n ids, in arena a (or on the heap when a is NULL; then free
 * with ret_idset_free). Returns RP_OK or RP_ENOMEM. */
int ret_idset_init(ret_idset *s, uint32_t n, rp_arena *a);
void ret_idset_free(ret_idset *s);
/* Adds id (not 0); returns true when it was new. The set must have room (it was
 * initialised for at least as many ids as are added). */
bool ret_idset_add(ret_idset *s, uint64_t id);
bool ret_idset_has(const ret_idset *s, uint64_t id);

typedef struct ret_filter {
    const uint8_t *include_bits; /* bitmap over the catalog's categories, NULL = all */
    const uint8_t *exclude_bits; /* NULL = none */
    const uint16_t *include;     /* the include categories (for posting lists) */
    uint32_t n_include;
    uint32_t n_exclude;
    int64_t created_after;       /* inclusive; 0 = no bound */
    int64_t created_before;      /* exclusive; 0 = no bound */
    ret_idset excluded;          /* external ids never to return (may be empty) */
} ret_filter;

/* Limits of the API (recpipe/v1/retrieval.proto, common.proto). */
#define RET_MAX_K 10000u
#define RET_MAX_EXCLUDE 10000u
#define RET_MAX_HISTORY 10000u
#define RET_MAX_SEEDS 1000u
#define RET_MAX_FILTER_CATEGORIES 256u

/*
 * Compiles a filter in arena a. include/exclude are category names; an unknown name is
 * RP_EINVAL with err naming "filter.include_categories[i]" (or exclude_categories) and
 * the name; more than RET_MAX_FILTER_CATEGORIES is RP_EINVAL; more than RET_MAX_EXCLUDE
 * exclusions is RP_EINVAL naming "exclude_ids". created_before <= created_after (both
 * set) is RP_EINVAL. The names are not kept.
 */
int ret_filter_compile(ret_filter *f, const ret_catalog *c, const char *const *include,
                       uint32_t n_include, const char *const *exclude, uint32_t n_exclude,
                       int64_t created_after, int64_t created_before,
                       const uint64_t *exclude_ids, uint32_t n_exclude_ids, rp_arena *a,
                       rp_error *err);

/* True when the filter restricts anything beyond id exclusions. */
bool ret_filter_restricts(const ret_filter *f);

/* Whether an item with these categories and creation time passes the category and
 * time parts of the filter (not the id exclusions). */
static inline bool ret_filter_admits_meta(const ret_filter *f, const uint16_t *cats,
                                          uint32_t n_cats, int64_t created)
{
    if (f->created_after && created < f->created_after) return false;
    if (f->created_before && created >= f->created_before) return false;
    if (f->include_bits) {
        bool any = false;
        for (uint32_t j = 0; j < n_cats && !any; j++)
            any = (f->include_bits[cats[j] >> 3] >> (cats[j] & 7)) & 1;
        if (!any) return false;
    }
    if (f->exclude_bits) {
        for (uint32_t j = 0; j < n_cats; j++)
            if ((f->exclude_bits[cats[j] >> 3] >> (cats[j] & 7)) & 1) return false;
    }
    return true;
}

/* Whether catalog item i passes the whole filter; hidden (may be NULL) holds ids whose
 * bundle copy must not be served (deleted or replaced by an upsert). */
static inline bool ret_filter_admits(const ret_filter *f, const ret_catalog *c, uint32_t i,
                                     const ret_idset *hidden)
{
    uint64_t id = c->ids[i];
    if (f->excluded.count && ret_idset_has(&f->excluded, id)) return false;
    if (hidden && hidden->count && ret_idset_has(hidden, id)) return false;
    return ret_filter_admits_meta(f, c->cats + c->cat_off[i], c->cat_off[i + 1] - c->cat_off[i],
                                  c->created[i]);
}

/*
 * The candidate items of a filter before the full test: the union of the include
 * categories' posting lists (ascending dense indices, in arena a), or, without include
 * categories, NULL with *n = c->n_items meaning "every item". *n is an upper bound of
 * how many items the filter admits.
 */
int ret_filter_candidates(const ret_filter *f, const ret_catalog *c, rp_arena *a,
                          uint32_t **out, uint32_t *n);

#endif
