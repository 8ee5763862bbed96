/*
 * ret/sources.h — candidate sources, their registry, filtered search and the merge.
 *
 * A source is one file (source_ann.c, source_popular.c, ...) exposing one ret_source
 * row; sources.c lists them all in RET_SOURCES. Each source writes up to `quota`
 * admitted candidates, best first, into arena memory. ret_retrieve runs the sources a
 * query asks for, merges their lists round-robin by rank, drops duplicates (a candidate
 * keeps the first source that found it) and cuts at k.
 *
 * Everything here reads an immutable catalog and side index: no locks, any number of
 * threads at once, each with its own arena.
 */
#ifndef RET_SOURCES_H
#define RET_SOURCES_H

#include "ret/catalog.h"
#include "ret/filter.h"
#include "ret/side_index.h"
#include "rp/arena.h"

#include <stdbool.h>
#include <stdint.h>

/* Source kinds: the values of recpipe.v1.Source. */
enum {
    RET_SRC_ANN = 1,
    RET_SRC_POPULAR = 2,
    RET_SRC_FRESH = 3,
    RET_SRC_SIMILAR = 4,
    RET_SRC_MAX = 5,
};

typedef struct ret_cand {
    uint64_t id;
    float score;
    uint8_t source;
} ret_cand;

typedef struct ret_cands {
    ret_cand *v;
    uint32_t n;
} ret_cands;

/* How filtered searches decide between exact scan and ANN (the service's config). */
typedef struct ret_search_opts {
    uint32_t exact_max;     /* scan exactly when a filter admits at most this many items */
    float overfetch;        /* ANN fetch = (k + hidden) / selectivity * overfetch */
    uint32_t max_widen;     /* widenings (x4 each) before falling back to an exact scan */
    double popular_half_life_days; /* popularity decay with the bundle's age; 0 = none */
    bool measure_ann_cpu;   /* fill ret_stats.ann_cpu_ns (two clock syscalls per ANN call) */
} ret_search_opts;

#define RET_SEARCH_OPTS_DEFAULT {20000u, 1.5f, 3u, 0.0, false}

typedef struct ret_quota {
    uint8_t source;  /* RET_SRC_* */
    uint32_t quota;
} ret_quota;

/* A validated query. Vectors have the catalog's dimension. Borrowed. */
typedef struct ret_query {
    const float *vector;      /* user or query vector for ANN, or NULL */
    const float *seed_vector; /* mean of the seed items' vectors for SIMILAR, or NULL */
    const uint64_t *seeds;    /* seed ids (never returned by SIMILAR) */
    uint32_t n_seeds;
    uint32_t k;
    ret_quota sources[RET_SRC_MAX];
    uint32_t n_sources;
    ret_filter filter;
    int64_t now;              /* Unix seconds */
    int64_t bundle_created;   /* for popularity decay; 0 = no decay */
} ret_query;

/* Counters a call reports (for logs, tests and the benchmark). */
typedef struct ret_stats {
    uint32_t exact_scans;    /* filtered searches answered by an exact scan */
    uint32_t ann_searches;   /* ANN calls (each widening counts) */
    uint32_t scanned;        /* items scored exactly */
    uint64_t ann_ns;         /* wall time spent inside the ANN function */
    uint64_t ann_cpu_ns;     /* thread CPU time inside it (opts.measure_ann_cpu) */
} ret_stats;

typedef struct ret_ctx {
    const ret_catalog *cat;
    const ret_side *side;
    const ret_query *q;
    const ret_search_opts *opts;
    rp_arena *arena;
    ret_stats *stats;
} ret_ctx;

typedef struct ret_source {
    uint8_t kind;      /* RET_SRC_* */
    const char *name;  /* "ann", "popular", ... */
    /* Writes up to quota candidates, best first, each admitted by the query's filter
     * and not hidden, into out (arena memory). A source with nothing to work from (no
     * vector) writes none. Returns RP_OK or an error in err. */
    int (*run)(const ret_ctx *ctx, uint32_t quota, ret_cands *out, rp_error *err);
} ret_source;

/* The registry. NULL for an unknown kind. */
const ret_source *ret_source_get(uint8_t kind);
const char *ret_source_name(uint8_t kind);

/*
 * Filtered top-k by inner product with vec over the catalog and the side index: exact
 * scan over the admitted items when the filter admits at most opts->exact_max of them,
 * otherwise ANN with over-fetch, widened until k admitted results (or an exact scan).
 * skip (may be NULL) are further ids not to return. Results best first, tagged source.
 */
int ret_search(const ret_ctx *ctx, const float *vec, uint32_t k, const ret_idset *skip,
               uint8_t source, ret_cands *out, rp_error *err);

/* Exact filtered top-k over the catalog only (the reference the tests compare with). */
int ret_search_exact(const ret_ctx *ctx, const float *vec, uint32_t k, const ret_idset *skip,
                     uint8_t source, ret_cands *out, rp_error *err);

/* Runs the query's sources and merges them into out (at most q->k, no duplicates). */
int ret_retrieve(const ret_ctx *ctx, ret_cands *out, rp_error *err);

/* Merges lists[0..n) round-robin by rank, dropping duplicates (first wins), up to k. */
int ret_merge(const ret_cands *lists, uint32_t n, uint32_t k, rp_arena *a, ret_cands *out);

#endif
