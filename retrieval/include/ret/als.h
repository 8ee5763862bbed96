/*
 * ret/als.h — implicit-feedback ALS (Hu, Koren & Volinsky 2008) and user fold-in.
 *
 * Model: every observed (user, item) pair has preference 1 and confidence
 * c = 1 + alpha * r (r = 1 for every interaction, or the event's value); unobserved
 * pairs have preference 0 and confidence 1. Training alternates weighted least squares
 * over items and users, each row solving
 *
 *     (YᵀY + Σ_{i∈I(u)} (c_ui − 1) y_i y_iᵀ + λI) x_u = Σ_{i∈I(u)} c_ui y_i
 *
 * with YᵀY computed once per sweep (OpenBLAS ssyrk) and a Cholesky solve per row (rows
 * with at most 8 items instead update the shared factor of YᵀY + λI rank by rank).
 * Each sweep solves items first, then users: the trained user factors are therefore
 * exactly the fold-in of each user's history against the final item factors
 * (ret_als_fold_in runs the same row solve).
 *
 * Deterministic for a seed: the initial factors come from a seeded PRNG and every row
 * is solved independently, so neither the thread count nor scheduling changes a bit of
 * the result on a given machine.
 */
#ifndef RET_ALS_H
#define RET_ALS_H

#include "idx/dataset.h"
#include "rp/err.h"

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* Limits on what the trainer and fold-in accept. */
#define RET_ALS_MAX_FACTORS 1024u
#define RET_ALS_MAX_ITERS 1000u

/* Interactions as a sparse user × item matrix (CSR). Each row's columns are strictly
 * ascending (duplicates merged by summing r); r[j] >= 0. */
typedef struct ret_als_matrix {
    uint32_t n_users;
    uint32_t n_items;
    uint64_t nnz;
    uint64_t *row_off; /* [n_users + 1] */
    uint32_t *cols;    /* [nnz] dense item index */
    float *r;          /* [nnz] interaction strength (1 per event, or the event values) */
} ret_als_matrix;

/*
 * Builds the matrix from a dataset. take (may be NULL = all) gives, per user, how many
 * of its first events (in time order) to use — the train split of a temporal hold-out.
 * r of a pair is the number of its events, or with use_value the sum of their values
 * (the same rule ret_als_fold_in applies to a history).
 * On success *out is owned by the caller (ret_als_matrix_free). RP_ENOMEM, or RP_EINVAL
 * for a negative or non-finite event value when use_value is set.
 */
int ret_als_matrix_from_dataset(const idx_dataset *ds, const uint32_t *take, int use_value,
                                ret_als_matrix **out, rp_error *err);
/* Frees the matrix; NULL is a no-op. */
void ret_als_matrix_free(ret_als_matrix *m);

/* Called after each sweep (from the calling thread). */
typedef void (*ret_als_progress_fn)(void *ctx, uint32_t sweep, uint32_t sweeps,
                                    double elapsed_s);

typedef struct ret_als_params {
    uint32_t factors;  /* k: 1..RET_ALS_MAX_FACTORS (default 64) */
    float reg;         /* λ >= 0 added to each normal equation (default 30) */
    float alpha;       /* confidence scale >= 0 (default 5) */
    uint32_t iters;    /* sweeps, 1..RET_ALS_MAX_ITERS (default 10) */
    uint64_t seed;     /* PRNG seed of the initial user factors (default 1) */
    int threads;       /* OpenMP threads for the row solves; <= 0: all cores */
    ret_als_progress_fn progress; /* may be NULL */
    void *progress_ctx;
    /* When non-NULL and set (e.g. by a SIGINT handler), training stops after the
     * current sweep with RP_ECANCELED. */
    const volatile sig_atomic_t *cancel;
} ret_als_params;

/* Fills p with the defaults above (the reference: 64 factors, λ 30, alpha 5, 10 sweeps). */
void ret_als_params_default(ret_als_params *p);

typedef struct ret_als_model {
    uint32_t n_users;
    uint32_t n_items;
    uint32_t k;
    float reg;
    float alpha;
    float *user_factors; /* [n_users * k], row u = dense user u */
    float *item_factors; /* [n_items * k], row i = dense item i */
    double train_seconds;
} ret_als_model;

/*
 * Trains on m. On success *out is owned by the caller (ret_als_model_free).
 * Users or items without interactions get zero vectors.
 * RP_EINVAL (a parameter out of range, named with its limit), RP_ENOMEM,
 * RP_EINTERNAL when a normal equation is not positive definite (only possible with
 * reg = 0 and degenerate data), RP_ECANCELED when p->cancel was set.
 */
int ret_als_train(const ret_als_matrix *m, const ret_als_params *p, ret_als_model **out,
                  rp_error *err);
/* Frees the model; NULL is a no-op. */
void ret_als_model_free(ret_als_model *model);

/*
 * What every row solve against one set of item factors shares: YᵀY (k × k) and the
 * Cholesky factor of YᵀY + λI. Create it once per set of item factors (once per
 * bundle) and pass it to every ret_als_fold_in. Immutable once created: any number of
 * threads may use it at once. YᵀY is computed with OpenBLAS at its current thread
 * setting.
 */
typedef struct ret_als_gram ret_als_gram;

/* y: n_items × k row-major item factors (read during the call only); reg: λ >= 0.
 * RP_EINVAL (k or reg out of range; YᵀY + λI not positive definite, which means
 * NaN/inf factors or reg 0), RP_ENOMEM. *out is owned by the caller. */
int ret_als_gram_create(const float *y, uint32_t n_items, uint32_t k, float reg,
                        ret_als_gram **out, rp_error *err);
/* Frees g; NULL is a no-op. */
void ret_als_gram_free(ret_als_gram *g);
uint32_t ret_als_gram_dim(const ret_als_gram *g);
float ret_als_gram_reg(const ret_als_gram *g);
/* YᵀY, k × k full row-major; valid as long as g. */
const float *ret_als_gram_yty(const ret_als_gram *g);

/* Bytes of scratch ret_als_fold_in needs for k factors and a history of n events. */
size_t ret_als_fold_in_scratch(uint32_t k, size_t n);

/*
 * Fold-in: the user vector for a history, solved against fixed item factors — the
 * same row solve as the training user step, so a training user's history gives its
 * trained vector.
 *
 *   y      item factors, n_items × k row-major, the ones g was created from (not
 *          modified)
 *   g      ret_als_gram_create(y, n_items, k, λ): carries k and λ
 *   items  the history's dense item indices, any order, duplicates allowed
 *   r      per-event strength (e.g. 1, the event value, or a recency weight
 *          0.5^(age/half_life)); NULL means 1 for every event. Events of the same item
 *          add up: confidence = 1 + alpha * Σ r. Must be finite and >= 0.
 *   alpha  the confidence scale the item factors were trained with
 *   scratch     ret_als_fold_in_scratch(k, n) bytes, or NULL to allocate internally
 *   out         k floats; an empty history gives the zero vector
 *
 * Thread-safe (no shared state besides the read-only g and y); costs about
 * n·3k² flops for histories of up to 8 distinct items, else n·k² + k³/3. RP_EINVAL for
 * an item index >= n_items or a bad r (naming the position), RP_ENOMEM, RP_EINTERNAL
 * when the system is not positive definite.
 */
int ret_als_fold_in(const float *y, uint32_t n_items, const ret_als_gram *g,
                    const uint32_t *items, const float *r, size_t n, float alpha, void *scratch,
                    float *out, rp_error *err);

#endif
