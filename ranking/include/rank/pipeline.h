/*
 * rank/pipeline.h — the `pipeline` model of `recpipe eval`: iALS retrieves the top
 * n_candidates items of each user (fold-in of the train history, exact inner products
 * over every item, train items excluded), the ranker reorders them, the best k are
 * returned. Implements ev_model (ev/eval.h) so that ev_evaluate runs it like any model.
 */
#ifndef RANK_PIPELINE_H
#define RANK_PIPELINE_H

#include "ev/eval.h"
#include "idx/dataset.h"
#include "rank/model.h"
#include "rp/err.h"

typedef struct rank_pipeline_opts {
    const rank_model *ranker;  /* borrowed: must outlive the ev_model */
    const float *item_factors; /* [ds->n_items][k] the retrieval factors; copied */
    uint32_t k;
    float reg, alpha;          /* the iALS hyper-parameters of the factors */
    uint32_t n_candidates;     /* retrieved per user before reranking (200) */
} rank_pipeline_opts;

/* Fills *out (name "pipeline"). Items of ds are matched to the ranker's by external id
 * (unknown ones use the OOV embedding). RP_EINVAL (k, reg, alpha, n_candidates out of
 * range), RP_ENOMEM. Release with ev_model_release. */
int rank_pipeline_model(const idx_dataset *ds, const rank_pipeline_opts *o, ev_model *out,
                        rp_error *err);

/* Same as above, but only reorders the retrieval candidates by their iALS score: the
 * `retrieval order` baseline over exactly the same candidates (name "retrieval200"). */
int rank_retrieval_order_model(const idx_dataset *ds, const rank_pipeline_opts *o, ev_model *out,
                               rp_error *err);

#endif
