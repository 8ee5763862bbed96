/*
 * gw/diversify.h — diversification of a ranked list: maximal marginal relevance (MMR)
 * over item embeddings, then per-category caps.
 *
 * MMR (Carbonell & Goldstein 1998) picks, one at a time, the candidate maximising
 *     lambda * rel(c) - (1 - lambda) * max_{s selected} cos(emb(c), emb(s))
 * with rel the candidate's score min-max scaled to 0..1 over the input. lambda = 1 keeps
 * score order. A candidate without an embedding has similarity 0 to everything.
 * A per-category cap is a hard limit: a candidate that would exceed it is skipped, so
 * fewer than count items may come back.
 */
#ifndef GW_DIVERSIFY_H
#define GW_DIVERSIFY_H

#include "rp/arena.h"
#include "rp/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_div_item {
    float score;          /* higher is better */
    const float *emb;     /* [dim] or NULL; not modified */
    const uint32_t *cats; /* category ids (small integers); not modified */
    uint32_t ncats;
} gw_div_item;

typedef struct gw_div_opts {
    bool mmr;                  /* false: keep score order (caps still apply) */
    float lambda;              /* 0..1 */
    uint32_t max_per_category; /* 0 = no cap */
} gw_div_opts;

/*
 * Selects up to count of items[0..n) and writes their indices, in the chosen order, to
 * out[0..*nout). out must hold count entries. Scratch memory comes from arena.
 * Returns RP_OK or RP_ENOMEM.
 */
int gw_diversify(const gw_div_item *items, size_t n, size_t dim, const gw_div_opts *opts,
                 size_t count, rp_arena *arena, size_t *out, size_t *nout);

#endif
