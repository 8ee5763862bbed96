/* Internals shared by service.c and request.c of the retrieval module. */
#ifndef RET_SERVICE_INT_H
#define RET_SERVICE_INT_H

#include "idx/bundle.h"
#include "recpipe/v1/retrieval.pb-c.h"
#include "ret/als.h"
#include "ret/content.h"
#include "ret/sources.h"

#include <limits.h>
#include <stdatomic.h>

/* One loaded bundle (or shard of it), immutable, reference counted. */
typedef struct ret__bundle {
    atomic_int refs;
    idx_bundle *b;          /* one reference held */
    idx_ann *ann;           /* the shard's index (owned by b) */
    uint64_t index_bytes;   /* the shard index's in-memory size, measured at load */
    double wide_nprobe;     /* IVF nprobe for over-fetching searches, per call; 0 = none */
    uint32_t *row_dense;    /* index row → catalog dense index; NULL = identity */
    uint64_t n_rows;
    ret_catalog *cat;       /* the shard's items */
    ret_als_gram *gram;     /* YᵀY + λI over every item of the bundle (fold-in) */
    float reg, alpha;       /* the ALS hyper-parameters the factors were trained with */
    int use_value;          /* trained on event values ("1+alpha*sum(value)"), not counts */
    ret_content *content;   /* NULL when the bundle's items have no usable categories */
    char version[64];
    char path[PATH_MAX];
    uint32_t shard, n_shards;
    int64_t created;
    uint64_t n_items_total; /* items of the whole bundle */
} ret__bundle;

/*
 * Validates a Retrieve request against the bundle and builds the query in arena a:
 * limits (k, dimension, NaN/inf, history, exclusions, seeds, categories, sources) →
 * RP_EINVAL naming the field; folds the history into the user vector; counts history
 * events naming unknown items into *unknown. now is the request's clock.
 */
int ret__build_query(const ret__bundle *rb, const ret_side *side,
                     const Recpipe__V1__RetrieveRequest *req, int64_t now, rp_arena *a,
                     ret_query *q, uint32_t *unknown, rp_error *err);

/* The vector of an item by id: the side index first, then the shard's catalog, then
 * the bundle's item store (other shards). Writes dim floats to out; false when unknown
 * or deleted. */
bool ret__item_vector(const ret__bundle *rb, const ret_side *side, uint64_t id, float *out);

#endif
