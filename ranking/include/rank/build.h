/*
 * rank/build.h — the ranker inside a bundle.
 *
 * A bundle carries its ranker as the file RANK_BUNDLE_FILE (the model file of
 * rank/model.h), added through the bundle builder so that it is checksummed with the
 * rest. `recpipe build` calls rank_build_step before committing (its RANKER_HOOK);
 * services and `recpipe eval` read it back with rank_model_from_bundle.
 */
#ifndef RANK_BUILD_H
#define RANK_BUILD_H

#include "ev/eval.h"
#include "idx/bundle.h"
#include "idx/dataset.h"
#include "rank/model.h"
#include "rank/train.h"
#include "ret/als.h"
#include "rp/err.h"

#include <stddef.h>

#define RANK_BUNDLE_FILE "ranker.bin"

/*
 * Trains a ranker (rank_train) behind the bundle's retrieval factors and writes it into
 * the bundle being built as RANK_BUNDLE_FILE.
 *   b             the builder (not committed, not consumed)
 *   take          the train split per user (NULL = every event), as given to the iALS
 *   item_factors  the bundle's iALS item factors, [ds->n_items][k] in dataset order
 *   als           the iALS parameters those factors were trained with (the ranker's first
 *                 stage uses the same; als->factors must equal k)
 *   opts          NULL for rank_train_opts_default; its als field is ignored
 *   rep           filled (may not be NULL)
 * Errors of rank_train, of idx_builder_file and of rank_model_save.
 */
int rank_build_step(idx_builder *b, const idx_dataset *ds, const uint32_t *take,
                    const float *item_factors, uint32_t k, const ret_als_params *als,
                    const rank_train_opts *opts, rank_train_report *rep, rp_error *err);

/* The report as a JSON object text (for the manifest's "training" object under
 * "ranker"): writes at most cap bytes to buf, returns buf. */
const char *rank_train_report_json(const rank_train_report *rep, const rank_shape *shape,
                                   char *buf, size_t cap);

/* Loads the bundle's ranker (read-only, shareable by threads). RP_ENOENT when the bundle
 * has none (built without a ranker), else the errors of rank_model_load. */
int rank_model_from_bundle(const idx_bundle *b, rank_model **out, rp_error *err);

/*
 * The `pipeline` model of `recpipe eval` over a bundle: loads the bundle's ranker (owned
 * by the model, freed by ev_model_release) and reranks the top n_candidates of exact
 * iALS scoring with the given factors (ev_bundle_factors gives them with reg and alpha).
 */
int rank_pipeline_from_bundle(const idx_dataset *ds, const idx_bundle *b, const float *factors,
                              uint32_t k, float reg, float alpha, uint32_t n_candidates,
                              ev_model *out, rp_error *err);

#endif
