/*
 * idx/bundle.h — bundles: the unit of deployment (DESIGN.md "Bundles").
 *
 * A bundle is an immutable directory:
 *   manifest.json       format version, bundle version, creation time, dimension, metric,
 *                       counts, index factory + tuned parameter + measured recall, the
 *                       SHA-256 of every other file, "training" and "evaluation" objects
 *   items.mdb           the item store (idx/itemstore.h), one LMDB file
 *   shard-K.faiss       the ANN index of shard K (K = 0..n_shards-1), labels = rows
 *   shard-K.ids         row → item id of shard K (little-endian uint64)
 *   anything else       files added with idx_builder_file (the ranker model, ...)
 * Items are split into shards by idx_shard_of(id, n_shards). Within a shard, rows are in
 * ascending item id order.
 *
 * Writing: idx_builder_create → add items → set index → (files, training/evaluation
 * JSON) → idx_builder_commit, which builds into ".<name>.tmp-XXXXXX" next to the target
 * and renames it into place: an interrupted or failed build leaves no bundle (a process
 * killed mid-build may leave that hidden temp directory, never a bundle). One builder
 * is used by one thread at a time; separate builders may run concurrently.
 * Reading: idx_bundle_open verifies and loads; the handle is reference counted so a
 * service can pin the bundle a request started with while a reload swaps in another.
 */
#ifndef IDX_BUNDLE_H
#define IDX_BUNDLE_H

#include "idx/ann.h"
#include "idx/itemstore.h"
#include "rp/err.h"

#include <stddef.h>
#include <stdint.h>

/* The manifest format this code writes; it reads versions 1..IDX_BUNDLE_FORMAT and
 * refuses newer ones with RP_EVERSION. */
#define IDX_BUNDLE_FORMAT 1

/* The shard of an item: a 64-bit mix (splitmix64 finalizer) of the id, mod n_shards.
 * The gateway and the retrieval shards must agree on it: always call this. */
uint32_t idx_shard_of(uint64_t item_id, uint32_t n_shards);

typedef struct idx_file_entry {
    const char *name;   /* relative to the bundle directory: "shard-0.faiss" */
    uint64_t size;      /* bytes */
    const char *sha256; /* 64 lowercase hex digits */
} idx_file_entry;

/* The manifest, read-only; strings and arrays live as long as the bundle. */
typedef struct idx_manifest {
    int format;            /* manifest format version */
    const char *version;   /* bundle version: "v20261123T063012Z-3fa2" unless set */
    int64_t created;       /* Unix seconds */
    uint32_t dim;
    idx_metric metric;
    uint64_t n_items;
    uint32_t n_shards;
    const uint64_t *shard_items; /* [n_shards] items per shard */
    const char *factory;         /* FAISS index factory string */
    const char *param_name;      /* "nprobe" / "efSearch" / "" */
    double param_value;          /* set on every shard at open */
    double target_recall;        /* 0 when the index was not tuned */
    double recall;               /* measured recall@100 at param_value (-1: not measured) */
    const char *training_json;   /* the "training" object, serialized ("{}" when unset) */
    const char *evaluation_json; /* the "evaluation" object, serialized */
    size_t n_files;
    const idx_file_entry *files;
} idx_manifest;

/* ---- building ---------------------------------------------------------------- */

typedef struct idx_builder idx_builder;

/* How to index, for idx_builder_set_index. Zeroed fields take defaults. */
typedef struct idx_index_opts {
    const char *factory;   /* NULL or "": idx_ann_default_factory(items per shard) */
    uint32_t n_shards;     /* 0 → 1 */
    double target_recall;  /* 0: no tuning; else 0 < r <= 1, recall@100 against exact */
    size_t n_queries;      /* tuning queries (n_queries × dim), e.g. held-out user vectors; */
    const float *queries;  /* NULL: up to 1000 item vectors sampled with a fixed seed */
    int threads;           /* threads for the build; 0 = all cores. Commit sets the
                              process's OpenMP/OpenBLAS thread count to it (an offline
                              job's setting): services must not commit on request threads */
} idx_index_opts;

/*
 * Starts a bundle that will appear at out_path on commit (which must not exist unless
 * commit is told to replace it). Creates the temp directory at once: RP_EIO naming
 * the path when the parent is missing or not writable.
 */
int idx_builder_create(const char *out_path, uint32_t dim, idx_metric metric,
                       idx_builder **out, rp_error *err);
/* Sets the bundle version string (1..63 chars of [A-Za-z0-9._-]). */
int idx_builder_set_version(idx_builder *b, const char *version, rp_error *err);
/*
 * Adds one item and its embedding (dim floats, copied). RP_EINVAL for NaN/inf in the
 * vector, a title or category over its limit, or more than IDX_MAX_ITEM_CATEGORIES;
 * a duplicate id is reported at commit (RP_EINVAL naming the id).
 */
int idx_builder_add_item(idx_builder *b, const idx_item *item, const float *embedding,
                         rp_error *err);
/* Adds n items with ids only (no metadata): vecs is n × dim. */
int idx_builder_add_vectors(idx_builder *b, size_t n, const uint64_t *ids, const float *vecs,
                            rp_error *err);
/* Chooses the index. Opts are copied (queries too). Without this call commit uses the
 * defaults (default factory, 1 shard, no tuning). */
int idx_builder_set_index(idx_builder *b, const idx_index_opts *opts, rp_error *err);
/*
 * Reserves a file name inside the bundle and writes its full temp path into path: the
 * caller writes the file there before commit, which checksums it. name is a plain file
 * name ([A-Za-z0-9._-], not "manifest.json", "items", "shard-*"). RP_EEXIST when
 * reserved twice.
 */
int idx_builder_file(idx_builder *b, const char *name, char *path, size_t cap, rp_error *err);
/* Sets the free-form "training" / "evaluation" manifest objects (a JSON object as
 * text; RP_EPARSE when it is not one). Replaces any previous value. */
int idx_builder_set_training_json(idx_builder *b, const char *json, rp_error *err);
int idx_builder_set_evaluation_json(idx_builder *b, const char *json, rp_error *err);
/* Progress lines (index building, tuning) go to this callback when set. */
typedef void (*idx_progress_fn)(void *ctx, const char *line);
void idx_builder_set_progress(idx_builder *b, idx_progress_fn fn, void *ctx);

/* What commit did, for the caller to print. */
typedef struct idx_build_report {
    uint64_t n_items;
    uint32_t n_shards;
    char factory[128];
    idx_tune_result tune; /* param "" when no tuning was asked */
    double build_seconds; /* index training + adding, all shards */
    double tune_seconds;
    uint64_t index_bytes; /* shard index files on disk */
} idx_build_report;

/*
 * Writes the item store, builds, tunes and writes each shard index, checksums every
 * file, writes manifest.json, fsyncs, and renames the temp directory to out_path
 * (replacing an existing bundle there atomically when replace is non-zero). Always
 * consumes b: on failure the temp directory is removed and nothing appears at out_path.
 * report may be NULL. Errors: RP_EINVAL (no items, duplicate id, fewer items in a shard
 * than IVF lists), RP_EFAISS (FAISS's message), RP_ELMDB, RP_EIO, RP_EEXIST.
 */
int idx_builder_commit(idx_builder *b, int replace, idx_build_report *report, rp_error *err);
/* Removes the temp directory and frees b. NULL is a no-op. */
void idx_builder_abort(idx_builder *b);

/* ---- reading ------------------------------------------------------------------ */

typedef struct idx_bundle idx_bundle;

/*
 * Opens the bundle at path: reads manifest.json (RP_EVERSION for a format newer than
 * IDX_BUNDLE_FORMAT, RP_ECORRUPT for a malformed one), verifies the SHA-256 of every
 * listed file (RP_ECORRUPT naming the file), opens the item store and loads every
 * shard index with its parameter set from the manifest. The handle starts with one
 * reference, owned by the caller.
 */
int idx_bundle_open(const char *path, idx_bundle **out, rp_error *err);
/* Opens like idx_bundle_open but loads only the given shard's index (a retrieval
 * process serves one shard). Checksums are still verified for every file. */
int idx_bundle_open_shard(const char *path, uint32_t shard, idx_bundle **out, rp_error *err);
/* Adds a reference (thread-safe) and returns b. */
idx_bundle *idx_bundle_acquire(idx_bundle *b);
/* Drops a reference (thread-safe); the last one closes everything. NULL is a no-op. */
void idx_bundle_release(idx_bundle *b);

/* Reads only manifest.json (no checksums, nothing loaded): for `recpipe index info`.
 * Items and shards of such a handle are NULL. Errors as idx_bundle_open. */
int idx_bundle_read_manifest(const char *path, idx_bundle **out, rp_error *err);
/* Recomputes every checksum of the bundle at path without loading it. RP_ECORRUPT
 * naming the first file that differs or is missing; RP_EVERSION as above. */
int idx_bundle_verify(const char *path, rp_error *err);

/* Accessors: results live as long as the bundle. */
const idx_manifest *idx_bundle_manifest(const idx_bundle *b);
const char *idx_bundle_path(const idx_bundle *b);
idx_itemstore *idx_bundle_items(const idx_bundle *b);
/* The ANN index of a shard; NULL when out of range or not loaded (open_shard). */
idx_ann *idx_bundle_shard(const idx_bundle *b, uint32_t shard);
/* Row → item id of a shard's index; NULL when not loaded. */
const uint64_t *idx_bundle_shard_ids(const idx_bundle *b, uint32_t shard, size_t *n);
/* Full path of a bundle file by name, or RP_ENOENT when the manifest does not list it. */
int idx_bundle_file(const idx_bundle *b, const char *name, char *path, size_t cap,
                    rp_error *err);

/*
 * Searches one shard and maps rows to item ids: top-k into scores[k], ids[k]; returns
 * the number found (≤ k) or a negative error. Thread-safe.
 */
int idx_bundle_search(const idx_bundle *b, uint32_t shard, const float *q, size_t k,
                      float *scores, uint64_t *ids, rp_error *err);
/* Exact top-k of q over the given items' embeddings from the item store (filtered
 * search over a posting list). Returns the number found or a negative error. */
int idx_bundle_scan(const idx_bundle *b, const float *q, size_t n, const uint64_t *items,
                    size_t k, float *scores, uint64_t *ids, rp_error *err);

#endif
