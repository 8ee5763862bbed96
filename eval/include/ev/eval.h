/*
 * ev/eval.h — offline evaluation: the temporal hold-out protocol and its metrics.
 *
 * The protocol (../shared/data/README.md): every interaction is an implicit positive;
 * each user with at least ev_protocol.min_events events holds out the last
 * round(test_fraction · n) of them (at least 1) by time — ties in time keep file order,
 * which is the order idx_dataset already holds, so the test set is a suffix of the
 * user's list. A model ranks every item outside the user's train set; for each cut-off
 * K, over test users:
 *   Recall@K    hits / min(K, |test|)
 *   Precision@K hits / K
 *   F1@K        2·P·R / (P + R) per user (0 when P + R = 0)
 *   NDCG@K      binary gains, DCG = Σ_{hit at rank i (1-based)} 1/log2(i + 1), ideal DCG
 *               over min(K, |test|) hits
 *   coverage@K  distinct items in all users' top-K lists / items in the dataset
 *   diversity@K intra-list diversity: 1 − mean pairwise Jaccard similarity of the
 *               items' category sets (two items without categories: similarity 0),
 *               averaged over users whose list has at least 2 items
 * Each metric except coverage is averaged over test users (a user for whom a model
 * returns fewer than K items scores as if the missing ranks were misses). A held-out
 * event whose item is also in the user's train set cannot be recommended and is not a
 * target (MovieLens has no repeated pairs, so this never applies there).
 *
 * Rounding: round(0.2·n) is computed exactly in integers as (n + 2) / 5 for the default
 * fraction; n/5 never ends in .5 for an integer n, so round-half-up and
 * round-half-to-even agree (ml-latest-small: 80,672 train / 20,164 test events, 610
 * test users either way). Other fractions use floor(f·n + 0.5).
 */
#ifndef EV_EVAL_H
#define EV_EVAL_H

#include "idx/dataset.h"
#include "rp/err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ev_protocol {
    double test_fraction; /* 0 < f < 1, default 0.2 */
    uint32_t min_events;  /* users with fewer events are train-only, default 5 */
} ev_protocol;

#define EV_PROTOCOL_DEFAULT {0.2, 5}

/* The split: user u trains on its first take[u] events and, when take[u] < its event
 * count, is a test user whose test set is the rest. */
typedef struct ev_split {
    uint32_t n_users;
    uint32_t *take;        /* [n_users] */
    uint64_t train_events;
    uint64_t test_events;
    uint32_t test_users;
} ev_split;

/* Computes the split of ds. *out is owned by the caller (ev_split_free). RP_EINVAL for
 * a fraction outside (0, 1), RP_ENOMEM. */
int ev_split_make(const idx_dataset *ds, const ev_protocol *p, ev_split **out, rp_error *err);
void ev_split_free(ev_split *s);

/*
 * A model under evaluation: given a user and its train history, writes up to k dense
 * item indices, best first, none of them in the train set, and returns how many (or a
 * negative error with err set). `seen` has n_items bytes, 1 for the user's train items.
 * Called for one user at a time from one thread.
 *
 * Models shipped here: popularity (ev_model_popularity) and retrieval (ev/retrieval.h:
 * iALS fold-in + the bundle's ANN index). The ranking module adds `pipeline` the same
 * way: implement recommend (retrieval top-200, reranked), then list the model in
 * `recpipe eval` (cli/cmd_eval.c, the EV_PIPELINE_HOOK comment).
 */
typedef struct ev_model {
    const char *name;
    void *ctx;
    int (*recommend)(void *ctx, uint32_t user, const idx_event *hist, size_t n_hist,
                     const uint8_t *seen, size_t k, uint32_t *out, rp_error *err);
    void (*destroy)(void *ctx); /* frees ctx; may be NULL */
} ev_model;

/* Releases what the model holds (calls destroy). NULL or a zeroed model is a no-op. */
void ev_model_release(ev_model *m);

/* Most interacted-with items of the train split first (ties: lower dense index
 * first). The model keeps no pointer to ds or split. RP_ENOMEM. */
int ev_model_popularity(const idx_dataset *ds, const ev_split *split, ev_model *out,
                        rp_error *err);

#define EV_MAX_K 1000
#define EV_MAX_CUTOFFS 16

/* Metrics at one cut-off. */
typedef struct ev_metrics {
    uint32_t k;
    double recall, precision, f1, ndcg, coverage, diversity;
} ev_metrics;

typedef struct ev_result {
    char model[32];
    size_t n_cutoffs;
    ev_metrics at[EV_MAX_CUTOFFS];
    uint32_t users;   /* test users evaluated */
    double seconds;   /* wall time of the evaluation */
} ev_result;

/* Progress: called every few users from the calling thread (done of total). */
typedef void (*ev_progress_fn)(void *ctx, const char *model, uint32_t done, uint32_t total);

/*
 * Evaluates model m on the split at the cut-offs ks[0..n_ks) (each 1..EV_MAX_K,
 * n_ks 1..EV_MAX_CUTOFFS; any order). The model is asked once per test user for
 * max(ks) items. RP_EINVAL for bad cut-offs, or the model's own error (prefixed with
 * the model name and user id).
 */
int ev_evaluate(const idx_dataset *ds, const ev_split *split, ev_model *m, const uint32_t *ks,
                size_t n_ks, ev_progress_fn progress, void *progress_ctx, ev_result *out,
                rp_error *err);

/* Parses "10,20" into ks (sorted ascending, duplicates removed). RP_EINVAL naming the
 * bad element or the limits. */
int ev_parse_cutoffs(const char *s, uint32_t *ks, size_t cap, size_t *n, rp_error *err);

#endif
