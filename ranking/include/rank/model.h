/*
 * rank/model.h — the ranking model: DIN target attention over the user's history and a
 * DCN-V2 cross network in parallel with a deep MLP, one logit, sigmoid.
 *
 * ranking/README.md draws the shapes. A model holds its shapes, its trainable weights
 * and the item-side tables the features need (external item ids, categories,
 * popularity, the retrieval factors used for the similarity features), so a model
 * file is self-contained: a service needs nothing else to score a request.
 *
 * A model opened from a file is read-only (the file is mapped PROT_READ) and may be
 * shared by any number of threads; each thread brings its own rank_ws workspace.
 */
#ifndef RANK_MODEL_H
#define RANK_MODEL_H

#include "rp/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Fixed feature vocabularies (stored in the file as well; a file with others is refused). */
#define RANK_N_KINDS 20   /* event kind: type 0..7, or 8 + rating bucket (value*2, 0..10) */
#define RANK_N_GAPS 24    /* time gap to `now`: floor(log2(1 + minutes)), clipped */
#define RANK_N_POP 16     /* popularity bucket: floor(log2(1 + count)), clipped */
#define RANK_N_ACT 16     /* user activity bucket: floor(log2(1 + history length)) */
#define RANK_N_SRC 8      /* recpipe.v1.Source value, clipped */
#define RANK_N_DENSE 6    /* dense features, see rank_dense_feature */
#define RANK_SIM_WINDOW 10 /* similarity features look at the last 10 history events */
#define RANK_MAX_DEEP 4   /* at most 4 deep layers */

/* The dense features of a (user, candidate) pair, in x0 order (standardised inside the
 * model with the mean and deviation measured on the training samples). */
enum rank_dense_feature {
    RANK_F_RETRIEVAL_SCORE = 0, /* the score retrieval gave the candidate */
    RANK_F_SIM_MAX = 1,         /* max cosine of its factors to the last 10 history items */
    RANK_F_SIM_MEAN = 2,        /* mean of those cosines */
    RANK_F_POP_RECENT = 3,      /* log1p(recent events of the item per 100k events) */
    RANK_F_POP_TOTAL = 4,       /* log1p(all events of the item per 100k events) */
    RANK_F_ACTIVITY = 5,        /* log1p(length of the user's history) */
};

/* Shapes chosen at training time. Zero fields take the defaults of rank_shape_default. */
typedef struct rank_shape {
    uint32_t dim;          /* embedding dimension d (32) */
    uint32_t side_dim;     /* dimension of bucket/source embeddings (8) */
    uint32_t max_hist;     /* L: history events read (50) */
    uint32_t att1, att2;   /* attention MLP hidden widths (64, 32); output width 1 */
    uint32_t n_cross;      /* cross layers (3) */
    uint32_t cross_rank;   /* 0 = full-rank W_l, else W_l = U_l V_l^T of this rank */
    uint32_t n_deep;       /* deep MLP layers (2) */
    uint32_t deep[RANK_MAX_DEEP]; /* widths (256, 128) */
    /* Vocabulary sizes, set from the data. */
    uint32_t n_items;      /* known items; row n_items of the item table is the OOV row */
    uint32_t n_cats;       /* categories (0 allowed) */
    uint32_t sim_dim;      /* dimension of the retrieval factors (0: no similarity) */
} rank_shape;

/* Default shape (the benchmark's): d 32, side 8, L 50, attention 64-32-1, 3 full-rank
 * cross layers, deep 256-128. Vocabulary fields are left 0. */
rank_shape rank_shape_default(void);
/* Width of x0: 4 d + 3 side_dim + RANK_N_DENSE. */
uint32_t rank_shape_x0(const rank_shape *s);
/* Checks bounds (each width 1..4096, L 1..1000, ...). RP_EINVAL names the field. */
int rank_shape_check(const rank_shape *s, rp_error *err);

typedef struct rank_model rank_model;

/*
 * Item-side tables, copied into the model by rank_model_create / rank_model_set_items.
 * Arrays are caller-owned and only read during the call.
 */
typedef struct rank_items {
    uint32_t n_items;
    const uint64_t *item_ids;     /* [n_items] external ids, strictly ascending */
    const uint32_t *cat_off;      /* [n_items + 1]; may be NULL (no categories) */
    const uint16_t *cats;         /* category indices < n_cats */
    const float *pop_recent;      /* [n_items] RANK_F_POP_RECENT values */
    const float *pop_total;       /* [n_items] RANK_F_POP_TOTAL values */
    const uint32_t *pop_count;    /* [n_items] event counts, for the popularity bucket */
    const float *factors;         /* [n_items][sim_dim] retrieval factors (normalised on
                                   * copy); NULL when sim_dim is 0 */
} rank_items;

/* Creates a trainable model with weights initialised from seed (Glorot-uniform layers,
 * small normal embeddings). init_emb, when not NULL, is [n_items][init_dim] (for
 * example the iALS item factors): the item table starts as its random projection to
 * d dimensions, rescaled. Returns RP_OK, RP_EINVAL (shape) or RP_ENOMEM. */
int rank_model_create(const rank_shape *shape, const rank_items *items, const float *init_emb,
                      uint32_t init_dim, uint64_t seed, rank_model **out, rp_error *err);
/* Replaces the item-side tables (not the learned embeddings) of a trainable model, for
 * example with those of the full training data after fitting on an earlier cut. The
 * item count, category count and sim_dim must match. */
int rank_model_set_items(rank_model *m, const rank_items *items, rp_error *err);
/* Frees the model (unmaps a loaded file). NULL is a no-op. */
void rank_model_free(rank_model *m);

/* Writes the model to path atomically (temporary file + fsync + rename): magic, format
 * version, shapes, every section 64-byte aligned, and a 64-bit FNV-1a checksum of
 * everything before it. Errors name the path. */
int rank_model_save(const rank_model *m, const char *path, rp_error *err);
/* Maps a model file read-only and verifies magic, version, sizes and checksum.
 * RP_ENOENT (missing), RP_EVERSION, RP_ECORRUPT (the message says which check). */
int rank_model_load(const char *path, rank_model **out, rp_error *err);

const rank_shape *rank_model_shape(const rank_model *m);
/* Number of trainable parameters. */
size_t rank_model_nparams(const rank_model *m);
/* Dense item index of an external id, or n_items (the OOV row) when unknown. */
uint32_t rank_model_item(const rank_model *m, uint64_t item_id);
/* External id of dense index i < n_items. */
uint64_t rank_model_item_id(const rank_model *m, uint32_t i);
/* Multiply-adds × 2 per candidate for a user with n_hist history events, as performed by
 * rank_score (the attention's first layer split; see README). */
double rank_model_flops_per_candidate(const rank_model *m, uint32_t n_hist);

/* ---- scoring ---- */

/* One history event as the model reads it. item is a dense index (n_items = unknown). */
typedef struct rank_event {
    uint32_t item;
    uint8_t type;   /* recpipe.v1.EventType */
    float value;    /* rating for type RATING */
    int64_t ts;     /* Unix seconds */
} rank_event;

/* One candidate. item is a dense index (n_items = unknown). */
typedef struct rank_cand {
    uint32_t item;
    uint8_t source;         /* recpipe.v1.Source */
    float retrieval_score;
} rank_cand;

/* A per-thread workspace: every buffer scoring needs, sized once for the model's shape
 * (history window, a chunk of candidates). Not thread-safe; one per thread. It reads the
 * model it was created for: use it only with that model (freeing it reads nothing of it).
 * rank_ws_create returns RP_OK or RP_ENOMEM. */
typedef struct rank_ws rank_ws;
int rank_ws_create(const rank_model *m, rank_ws **out);
void rank_ws_free(rank_ws *ws);

/*
 * Scores n_cands candidates for a user whose history is hist[0..n_hist) in time order
 * (the last max_hist are read; all count for the activity feature). now is the Unix time
 * the gaps are measured to. Writes probabilities to scores[n_cands]; when best_hist is
 * not NULL also the index into hist of the event with the largest attention weight
 * (-1 when the history is empty) and that weight to best_weight. All candidates are
 * scored together as matrix products, in chunks sized by the workspace, so any n_cands
 * works and nothing is allocated per call. Thread-safe for distinct workspaces (the
 * model is only read). Returns RP_OK.
 */
int rank_score(const rank_model *m, rank_ws *ws, const rank_event *hist, uint32_t n_hist,
               int64_t now, const rank_cand *cands, uint32_t n_cands, float *scores,
               int32_t *best_hist, float *best_weight);

#endif
