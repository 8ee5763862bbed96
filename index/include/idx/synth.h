/*
 * idx/synth.h — `recpipe synth`: a synthetic catalogue and its users, of any size.
 *
 * The model, all of it drawn from one seed (same parameters and seed → the same dataset
 * and vectors, byte for byte):
 * - K clusters with unit-length Gaussian centres in D dimensions; cluster sizes vary
 *   (log-normal weights). Item i belongs to one cluster; its vector is the centre plus
 *   isotropic Gaussian noise of total norm about `spread`, normalized to unit length (so
 *   inner product = cosine; the same vectors serve L2 indexes).
 * - Popularity follows Zipf: items get random ranks r = 1..N and weight 1 / r^zipf, so a
 *   few items take most interactions whatever their cluster.
 * - Categories follow clusters: cluster k has primary category k mod C; an item takes its
 *   cluster's primary category with probability 0.9 (else a random one) and a second
 *   random category with probability 0.3. Names "category-00", "category-01", ...
 * - Items are created at uniform times in the first 80% of [t_start, t_end); that
 *   creation time is the dataset's item_created (every interaction comes after it).
 * - Each user has 1–3 preferred clusters; the number of events is 5 + an exponential
 *   with mean (events_per_user - 5), capped at min(5000, N/2). An event picks, with
 *   probability pref_share, a preferred cluster and an item in it by popularity, else any
 *   item by popularity; a user never repeats an item. Event times fall after both the
 *   item's creation and the user's arrival; events are EVENT_TYPE_VIEW (1), value 1.0.
 * Users and items get external ids 1..U and 1..N (dense index + 1).
 *
 * Output: a normal DATA_DIR (idx/dataset.h) plus DATA_DIR/item_vectors.fvecs, row i the
 * vector of dense item i. Written next to the target and renamed when complete.
 */
#ifndef IDX_SYNTH_H
#define IDX_SYNTH_H

#include "rp/err.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#define IDX_SYNTH_VECTORS_FILE "item_vectors.fvecs"

typedef struct idx_synth_params {
    uint32_t n_items;        /* >= 1 */
    uint32_t n_users;        /* >= 1 */
    uint32_t dim;            /* 1..4096 */
    uint64_t seed;
    uint32_t n_categories;   /* 1..65535; 0 = 20 */
    uint32_t n_clusters;     /* 0 = clamp(sqrt(n_items) / 2, 4, 1024), at most n_items */
    double zipf;             /* popularity exponent, >= 0; 0 is taken as 1.0 */
    double events_per_user;  /* mean events per user, >= 5; 0 = 20 */
    double spread;           /* noise norm relative to the unit centre; 0 = 0.5 */
    double pref_share;       /* share of events from preferred clusters, <= 1; 0 = 0.8;
                                negative = none (every event by global popularity) */
    int64_t t_start, t_end;  /* time span (Unix seconds); both 0 = 2015-01-01 .. 2020-01-01 */
    const char *out;         /* DATA_DIR to create */
    bool force;              /* replace an existing out */
    /* Called now and then with the phase ("users", "vectors") and its progress; may be
     * NULL. Does not change the output. */
    void (*progress)(void *ctx, const char *phase, uint64_t done, uint64_t total);
    void *progress_ctx;
    /* When non-NULL and set (by a signal handler), generation stops with RP_ECANCELED
     * and what was written is removed. */
    const volatile sig_atomic_t *cancel;
} idx_synth_params;

typedef struct idx_synth_stats {
    uint32_t users, items, categories, clusters, dim;
    uint64_t events;
    double top1pct_share;    /* share of events on the 1% most popular items */
    double seconds_generate, seconds_write;
} idx_synth_stats;

/* Generates and writes the dataset. stats may be NULL. Errors: RP_EINVAL (a parameter
 * out of range, named), RP_EEXIST (out exists, force off), RP_EIO / RP_EFULL (cannot
 * write), RP_ENOMEM, RP_ECANCELED. Nothing is left at out on error. */
int idx_synth(const idx_synth_params *p, idx_synth_stats *stats, rp_error *err);

#endif
