/*
 * rank/train.h — training the ranker: the two-stage recipe.
 *
 * 1. For each user, the train events (the first take[u]) are cut in time: the earlier
 *    (1 - label_fraction) are the history, the later ones the labels.
 * 2. An iALS model (ret/als.h) is fitted on the histories only; its top-n_candidates
 *    items per user (history items excluded) are out-of-sample candidates, like the
 *    ones the ranker sees when serving.
 * 3. A candidate is positive when it is among the user's later events. Each epoch draws
 *    hard negatives from the other candidates (neg_per_pos per positive) and a few from
 *    the most popular items (pop_neg per user).
 * 4. Features come from the histories only: iALS scores and factors of the early fit,
 *    popularity counted on the histories (never on the label events).
 * 5. Binary cross-entropy, Adam, L2, mini-batches of candidate groups (one user each),
 *    OpenMP over the groups of a batch with per-thread gradient buffers summed in thread
 *    order (deterministic for a seed and a thread count; bit-identical runs with one
 *    thread). Early stopping on a validation split of the users (the test split is never
 *    seen: only the first take[u] events of each user are read).
 * 6. The returned model's item-side tables (popularity, similarity factors) are then
 *    replaced by those of all train events and the serving factors, as served.
 */
#ifndef RANK_TRAIN_H
#define RANK_TRAIN_H

#include "idx/dataset.h"
#include "rank/model.h"
#include "ret/als.h"
#include "rp/err.h"

#include <stdint.h>

typedef void (*rank_train_progress_fn)(void *ctx, uint32_t epoch, uint32_t epochs, uint32_t batch,
                                       uint32_t batches, double loss);
/* Called after each epoch's validation. */
typedef void (*rank_train_epoch_fn)(void *ctx, uint32_t epoch, double train_loss, double val_auc,
                                    double val_ndcg, double val_ndcg_retrieval);

typedef struct rank_train_opts {
    rank_shape shape;        /* architecture; vocabulary fields are set from the data */
    ret_als_params als;      /* the first-stage iALS (factors = sim_dim of the model) */
    double label_fraction;   /* later share of each user's train events used as labels (0.2) */
    uint32_t n_candidates;   /* first-stage candidates per user (200) */
    uint32_t neg_per_pos;    /* hard negatives per positive (4) */
    uint32_t pop_neg;        /* popular negatives per user and epoch (4) */
    uint32_t group;          /* candidates per group (16) */
    uint32_t batch;          /* groups per mini-batch (16) */
    uint32_t epochs;         /* at most (20) */
    uint32_t patience;       /* epochs without validation gain before stopping (2) */
    double lr;               /* Adam step (1e-3) */
    double l2;               /* L2 on every weight (1e-6) */
    double val_fraction;     /* share of users held out for validation (0.15) */
    uint64_t seed;           /* (1) */
    int threads;             /* <= 0: all cores */
    rank_train_progress_fn progress; /* may be NULL */
    rank_train_epoch_fn on_epoch;    /* may be NULL */
    void *progress_ctx;
} rank_train_opts;

void rank_train_opts_default(rank_train_opts *o);

typedef struct rank_train_report {
    uint32_t epochs_run, best_epoch;
    double val_auc;              /* mean per-user AUC over the candidate lists, best epoch */
    double val_ndcg;             /* NDCG@20 of the reranked candidates, best epoch */
    double val_ndcg_retrieval;   /* NDCG@20 of the same candidates in iALS order */
    double train_loss;           /* mean BCE of the best epoch */
    uint32_t train_users, val_users;
    uint64_t positives;          /* positive candidates over all users */
    double seconds;
} rank_train_report;

/*
 * Trains a ranker on ds. take[u] (NULL = all events) is how many of user u's first events
 * are training data. serve_factors ([n_items][serve_k], may be NULL) are the item
 * factors of the retrieval model the ranker will serve behind (the bundle's iALS over
 * all train events); they become the model's similarity table. When NULL, the trainer
 * fits them itself with o->als on all train events. serve_k must equal o->als.factors.
 * On success *out is a trainable model owned by the caller (save it with
 * rank_model_save). RP_EINVAL (an option out of range, named), RP_ENOMEM, RP_EPRECOND
 * when no user has a positive candidate (too little data to train).
 */
int rank_train(const idx_dataset *ds, const uint32_t *take, const float *serve_factors,
               uint32_t serve_k, const rank_train_opts *o, rank_model **out,
               rank_train_report *rep, rp_error *err);

#endif
