/*
 * lt/ids.h — realistic ids for the load: the items of a bundle (by popularity) and the
 * users of a dataset (by activity), so that Zipf rank 1 is the most popular item and
 * the most active user, as in production traffic.
 */
#ifndef LT_IDS_H
#define LT_IDS_H

#include "lt/workload.h"
#include "rp/err.h"

/* Owns the id arrays that an lt_ids borrows. */
typedef struct lt_id_source {
    uint64_t *users; /* NULL when no dataset was given */
    uint64_t n_users;
    uint64_t *items; /* NULL when neither a bundle nor a dataset was given */
    uint64_t n_items;
} lt_id_source;

/*
 * Loads ids: items from bundle_dir (its item store, most popular first; the bundle is
 * verified and closed again) or, without a bundle, from dataset_dir (most interacted
 * first); users from dataset_dir (most events first). Either path may be NULL. Errors
 * are those of idx_bundle_open / idx_dataset_open, naming the path; RP_EINVAL when the
 * bundle or dataset holds no items (or users).
 */
int lt_ids_load(const char *bundle_dir, const char *dataset_dir, lt_id_source *out,
                rp_error *err);
/* Frees the arrays; the struct may be reused. NULL is a no-op. */
void lt_ids_free(lt_id_source *s);
/* Points ids at the loaded arrays (keeps the synthetic counts where nothing loaded). */
void lt_ids_apply(const lt_id_source *s, lt_ids *ids);

#endif
