/*
 * ev/retrieval.h — the `retrieval` model of the evaluation: iALS through the index.
 *
 * Each test user's vector is the fold-in of its train history (every event r = 1, or
 * its value when the factors were trained that way)
 * against the item factors with the bundle's lambda/alpha — exactly what the retrieval
 * service computes per request. Candidates come from the bundle's ANN index at its
 * tuned setting (every shard searched, merged by score), or from exact inner products
 * over all item factors (BLAS) when no index is given. The user's train items are
 * dropped, then the top k are returned.
 */
#ifndef EV_RETRIEVAL_H
#define EV_RETRIEVAL_H

#include "ev/eval.h"
#include "idx/bundle.h"

typedef struct ev_retrieval_opts {
    const float *item_factors; /* n_items × k, dense item order of the dataset; copied */
    uint32_t k;
    float reg, alpha;          /* the ALS hyper-parameters the factors were trained with */
    idx_bundle *bundle;        /* NULL: exact scoring; else searched. Borrowed: it must
                                  outlive the model. Its item ids map to the dataset's. */
    int use_value;             /* fold in with r = the event value (as `--use-value`
                                  training did) instead of 1 per event */
} ev_retrieval_opts;

/* Builds the model. out->name is "retrieval". RP_EINVAL (k, reg, alpha out of range;
 * bundle dimension != k), RP_ENOMEM. */
int ev_model_retrieval(const idx_dataset *ds, const ev_retrieval_opts *o, ev_model *out,
                       rp_error *err);

/*
 * Reads what ev_model_retrieval needs from a bundle written by `recpipe build`: the
 * item factors of ds's items from the item store (items absent from the bundle get
 * zero vectors and are counted in *missing, which may be NULL) and lambda/alpha from
 * the manifest's "training" object ("reg", "alpha"). *factors is malloc'd n_items × k
 * (caller frees). RP_EINVAL when the manifest lacks reg/alpha (not an ALS bundle).
 */
int ev_bundle_factors(const idx_dataset *ds, idx_bundle *b, float **factors, uint32_t *k,
                      float *reg, float *alpha, uint32_t *missing, rp_error *err);

#endif
