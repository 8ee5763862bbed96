/*
 * rank_internal.h — what the ranking module's files share: the parameter layout, the
 * model struct, the workspace, assembled features, forward and backward passes.
 * Not a public header: tests include it to check gradients layer by layer.
 */
#ifndef RANK_INTERNAL_H
#define RANK_INTERNAL_H

#include "rank/model.h"

#include <stddef.h>
#include <stdint.h>

#define RANK__MAX_CROSS 8
#define RANK__ALIGN 16 /* floats: every tensor starts on a 64-byte boundary */

/* Pointers to every trainable tensor inside one flat float array (weights, gradients and
 * Adam moments all share this layout). Row-major; a linear layer's W is [out][in]. */
typedef struct rank__p {
    float *Eitem; /* [n_items + 1][d], the last row is the OOV embedding */
    float *Ekind; /* [RANK_N_KINDS][d] */
    float *Egap;  /* [RANK_N_GAPS][d] */
    float *Ecat;  /* [max(n_cats,1)][d] */
    float *Epop, *Eact, *Esrc; /* [RANK_N_POP|ACT|SRC][side_dim] */
    float *W1;  /* [att1][4d]: columns h | t | h-t | h*t */
    float *b1;  /* [att1] */
    float *W2;  /* [att2][att1] */
    float *b2;  /* [att2] */
    float *w3;  /* [att2] (no bias: the softmax ignores it) */
    float *cU[RANK__MAX_CROSS]; /* full rank: W_l [D0][D0]; low rank: U_l [D0][r] */
    float *cV[RANK__MAX_CROSS]; /* low rank: V_l [D0][r]; NULL for full rank */
    float *cb[RANK__MAX_CROSS]; /* [D0] */
    float *dW[RANK_MAX_DEEP];   /* [deep_i][in] */
    float *db[RANK_MAX_DEEP];
    float *wo;  /* [D0 + deep_last] */
    float *bo;  /* [1] */
} rank__p;

/* Assigns the pointers for base (which may be NULL to count) and returns the number of
 * floats the layout needs. */
size_t rank__layout(const rank_shape *s, float *base, rank__p *p);

/* x0 = [t | category bag | interest | pop e | source e | dense | mean history | activity e]:
 * the columns from rank__x0_user on depend on the user only (the inference path folds
 * them into a per-request bias of the first cross and deep layers). */
static inline uint32_t rank__x0_user(const rank_shape *s)
{
    return 3 * s->dim + 2 * s->side_dim + RANK_N_DENSE;
}

struct rank_model {
    rank_shape s;
    uint32_t D0;
    size_t nparams;
    float *params;
    rank__p p;
    float norm_mean[RANK_N_DENSE], norm_std[RANK_N_DENSE];
    /* item tables */
    uint64_t *item_ids;   /* [n_items] */
    uint32_t *cat_off;    /* [n_items + 1] */
    uint16_t *cats;       /* [n_catref] */
    uint32_t n_catref;
    float *pop_recent, *pop_total; /* [n_items] */
    uint8_t *pop_bucket;  /* [n_items] */
    float *sim;           /* [n_items][sim_dim], unit rows (zero rows stay zero) */
    /* derived from W1 for inference: Wh = W1[:,h] + W1[:,h-t], Wt = W1[:,t] - W1[:,h-t],
     * Wp = W1[:,h*t] as contiguous [att1][d] matrices */
    float *Wh, *Wt, *Wp;
    /* ownership */
    void *map;
    size_t map_len;
    int owned; /* 1: the arrays above were malloc'd */
};

/* Recomputes Wh, Wt, Wp from W1 (after every optimiser step in training). */
void rank__derive(rank_model *m);
void rank__set_norm(rank_model *m, const float *mean, const float *std);

/* Assembled features of one user. Arrays have max_hist entries. */
typedef struct rank__user {
    uint32_t n;         /* history events read (<= max_hist) */
    uint32_t *item;     /* dense item or n_items */
    uint8_t *kind, *gap;
    int32_t *src_index; /* index into the caller's history array */
    uint8_t act_bucket;
    float activity;     /* RANK_F_ACTIVITY raw */
    uint32_t n_sim;     /* known items among the last RANK_SIM_WINDOW events */
    uint32_t sim_item[RANK_SIM_WINDOW];
} rank__user;

/* Assembled features of one candidate (dense values raw, standardised in the model). */
typedef struct rank__cand {
    uint32_t item;
    uint8_t src, pop_bucket;
    float dense[RANK_N_DENSE];
} rank__cand;

void rank__user_features(const rank_model *m, const rank_event *hist, uint32_t n_hist,
                         int64_t now, rank__user *u);
void rank__cand_features(const rank_model *m, const rank__user *u, const rank_cand *c,
                         rank__cand *out);

struct rank_ws {
    const rank_model *m;
    uint32_t L, Ca, Cd; /* history, attention chunk and dense chunk capacities */
    int train;          /* backward buffers allocated */
    /* user part */
    float *H, *HA, *M;
    /* inference only: HP [(d+1)][L*att1], the first attention layer of every history
     * event as a function of t (see forward.c), and T1 [Ca][d+1] = [t | 1] */
    float *HP, *T1;
    /* inference only: similarity features as one GEMM per chunk: the window's unit
     * factors SimH [RANK_SIM_WINDOW][sim_dim], the candidates' SimT [Cd][sim_dim], their
     * cosines SimO [Cd][RANK_SIM_WINDOW] */
    float *SimH, *SimT, *SimO;
    /* inference only: the user columns' share of the first cross layer (UBc [D0], full
     * rank) and of the first deep layer (UBd [deep0]), biases included */
    float *UBc, *UBd;
    /* attention chunk */
    float *T, *TA, *P, *Z1, *R1, *Z2, *R2, *S;
    /* dense chunk */
    float *X;   /* [n_cross + 1][Cd][D0]: x_0 .. x_n */
    float *U;   /* [n_cross][Cd][D0]: W x_l + b */
    float *V;   /* [n_cross][Cd][r] low rank only */
    float *Y;   /* [n_deep][Cd][maxw] */
    float *logit; /* [Cd] */
    /* features */
    rank__user u;
    rank__cand *cf; /* [Cd] */
    /* backward */
    float *dX0, *dXa, *dXb, *dUb, *dVb, *dYa, *dYb;
    float *dH, *dHA, *dT, *dTA, *dP, *dR1, *dR2, *dS;
    void *mem;
};

/* A workspace with chosen chunk sizes; train = 1 allocates backward buffers too. */
int rank__ws_create(const rank_model *m, uint32_t Ca, uint32_t Cd, int train, rank_ws **out);

/* Forward of the user part (H, HA, M). */
void rank__forward_user(const rank_model *m, rank_ws *ws);
/* Attention for candidates cf[c0 .. c0+C) (C <= Ca), writing rows c0.. of x_0. */
void rank__forward_att(const rank_model *m, rank_ws *ws, uint32_t c0, uint32_t C);
/* Fills the rest of x_0 rows [0, C) and runs cross + deep + output: ws->logit[0..C). */
void rank__forward_dense(const rank_model *m, rank_ws *ws, uint32_t C);
/* Inference: UBc / UBd for the current user (after rank__forward_user*), then the dense
 * part with the user columns left out of the first cross and deep GEMMs. */
void rank__dense_user_bias(const rank_model *m, rank_ws *ws);
void rank__forward_dense_fast(const rank_model *m, rank_ws *ws, uint32_t C);
/* The inference variants: the first attention layer for all pairs of a chunk as one
 * GEMM [t | 1] x HP. Same results as rank__forward_user / _att up to rounding. */
void rank__forward_user_fast(const rank_model *m, rank_ws *ws);
void rank__forward_att_fast(const rank_model *m, rank_ws *ws, uint32_t c0, uint32_t C);
/* Whole forward of C <= Ca candidates (training and gradient checks). */
void rank__forward(const rank_model *m, rank_ws *ws, uint32_t C);
/* Backward of rank__forward given dlogit[C]: adds every gradient into g (layout of m). */
void rank__backward(const rank_model *m, rank_ws *ws, uint32_t C, const float *dlogit,
                    const rank__p *g);

#endif
