/*
 * dataset_int.h — shared by the writers of DATA_DIR (import.c, synth.c) and its reader
 * (dataset.c). Not a public header.
 *
 * DATA_DIR is an LMDB environment (one data.mdb, written without a lock file) with the
 * named databases below, and SHA256SUMS: one line "<sha256 hex>  <file>" per file of the
 * dataset (the format of sha256sum, so `sha256sum -c SHA256SUMS` checks it by hand). Keys of dense indices are big-endian so that LMDB's byte order
 * is numeric order; values are little-endian, packed.
 *   meta        string key → string value: "format" = "recpipe-dataset", "version" = "1",
 *               "n_users", "n_items", "n_events", "n_categories", "n_tags" (decimal),
 *               plus what the writer records (source files, import counts, synth params)
 *   users       u32be dense user → u64 external id, u32 n, n × event
 *               (u32 item, u8 type, f32 value, i64 ts), sorted by (ts, file order)
 *   user_ext    u64be external user id → u32 dense
 *   items       u32be dense item → u64 external id, i64 created, u8 in_catalogue,
 *               u16 ncats, u32 ntags, u32 title_len, u16 cats[ncats], u32 tags[ntags],
 *               title bytes (UTF-8, no NUL)
 *   item_ext    u64be external item id → u32 dense
 *   categories  u32be category index → name
 *   tags        u32be tag index → text
 */
#ifndef IDX_DATASET_INT_H
#define IDX_DATASET_INT_H

#include "idx/dataset.h"

#include <stddef.h>

#define IDX__DATASET_SUMS "SHA256SUMS"
#define IDX__DATASET_FORMAT "recpipe-dataset"
#define IDX__DATASET_VERSION 1
#define IDX__EVENT_BYTES 17

/*
 * Writes ds into dir (an existing, empty directory) and syncs it to disk. ds must be
 * consistent (offsets ascending, indices in range); every array of ds is read only.
 * meta holds nmeta pairs key0, value0, key1, value1, ... recorded in the meta database.
 * Errors: RP_EFULL / RP_ELMDB / RP_EIO with err naming dir.
 */
int idx__dataset_write(const char *dir, const idx_dataset *ds, const char *const *meta,
                       size_t nmeta, rp_error *err);

/* Writes dir/SHA256SUMS for the n files named (plain names inside dir). */
int idx__dataset_write_sums(const char *dir, const char *const *files, size_t n, rp_error *err);

#endif
