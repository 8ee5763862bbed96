/*
 * idx/dataset.h — an imported dataset (DATA_DIR, written by `recpipe import` or
 * `recpipe synth`), loaded into memory read-only.
 *
 * Users and items have dense internal indices 0..n-1 and keep their external
 * (catalogue) ids. Each user's events are sorted by timestamp, ties in file order, so
 * a temporal hold-out is a suffix of each user's list. Every array below is owned by
 * the dataset and valid until idx_dataset_close; do not modify or free them.
 */
#ifndef IDX_DATASET_H
#define IDX_DATASET_H

#include "rp/err.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct idx_event {
    uint32_t item; /* dense item index */
    uint8_t type;  /* recpipe.v1.EventType value (imported ratings are RATING = 5) */
    float value;   /* the rating, or 1.0 when the input had none */
    int64_t ts;    /* Unix seconds (0 when the input had none) */
} idx_event;

typedef struct idx_dataset {
    uint32_t n_users;
    uint32_t n_items;      /* catalogue items plus items seen only in interactions */
    uint32_t n_categories;
    uint64_t n_events;

    const uint64_t *user_ids; /* [n_users] dense → external id, ascending */
    const uint64_t *item_ids; /* [n_items] dense → external id, ascending */

    /* Events of user u: events[user_off[u] .. user_off[u+1]). */
    const uint64_t *user_off; /* [n_users + 1] */
    const idx_event *events;  /* [n_events] */

    const char *const *titles;          /* [n_items] UTF-8; "" when unknown */
    const uint32_t *item_cat_off;       /* [n_items + 1] */
    const uint16_t *item_cats;          /* category indices of item i: item_cats[off[i]..off[i+1]) */
    const char *const *category_names;  /* [n_categories] */
    const int64_t *item_created;        /* [n_items] Unix seconds: first interaction, or 0
                                           (import); the generated creation time, before
                                           any interaction (synth) */
    const uint8_t *item_in_catalogue;   /* [n_items] 1 when the catalogue listed it */

    /* Optional free-text tags (from --tags): tags of item i are
     * tag_names[item_tags[item_tag_off[i] .. item_tag_off[i+1])]. n_tags may be 0. */
    uint32_t n_tags;
    const uint32_t *item_tag_off; /* [n_items + 1] */
    const uint32_t *item_tags;
    const char *const *tag_names; /* [n_tags] */
} idx_dataset;

/* Loads DATA_DIR into memory after checking data.mdb against DATA_DIR/SHA256SUMS. On
 * error *out is NULL and err names the path and reason (RP_ENOENT: no dataset there;
 * RP_ECORRUPT: a checksum mismatch, a missing SHA256SUMS or inconsistent content;
 * RP_EVERSION: a format this recpipe does not read). */
int idx_dataset_open(const char *dir, idx_dataset **out, rp_error *err);
/* Frees everything. NULL is a no-op. */
void idx_dataset_close(idx_dataset *ds);
/* Checks every file listed in DATA_DIR/SHA256SUMS (data.mdb, and item_vectors.fvecs for
 * a synthetic dataset) without loading anything. RP_ECORRUPT naming the file that does
 * not match or is missing. */
int idx_dataset_verify(const char *dir, rp_error *err);

/* External id → dense index by binary search. Return true when found. */
bool idx_dataset_find_user(const idx_dataset *ds, uint64_t user_id, uint32_t *u);
bool idx_dataset_find_item(const idx_dataset *ds, uint64_t item_id, uint32_t *i);
/* Category name → index; true when found. */
bool idx_dataset_find_category(const idx_dataset *ds, const char *name, uint16_t *c);

#endif
