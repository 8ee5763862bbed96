/*
 * gw/merge.h — merging candidate lists and the degradation policy.
 *
 * Shards of one bundle score candidates on the same scale (inner products against the
 * same user vector), so their lists merge by score. Items the user has seen or the
 * caller excluded are dropped; an item found twice keeps its best score and the source
 * that gave it.
 */
#ifndef GW_MERGE_H
#define GW_MERGE_H

#include "rp/arena.h"
#include "rp/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_cand {
    uint64_t item_id;
    float score;
    uint8_t source; /* recpipe.v1.Source value */
    uint32_t shard;
} gw_cand;

/* Sorts ids[0..n) ascending and removes duplicates in place; returns the new length. */
size_t gw_sort_unique(uint64_t *ids, size_t n);
/* True when id is in the sorted array set[0..n). */
bool gw_contains(const uint64_t *set, size_t n, uint64_t id);

/*
 * Merges lists[0..nlists) (lens[i] candidates each) into one list ordered by score,
 * best first (ties: lower item id first), without duplicates and without any id in
 * drop[0..ndrop) (sorted, see gw_sort_unique). *out is allocated from arena.
 * Returns RP_OK or RP_ENOMEM.
 */
int gw_merge(const gw_cand *const *lists, const size_t *lens, size_t nlists, const uint64_t *drop,
             size_t ndrop, rp_arena *arena, gw_cand **out, size_t *nout);

/* What happened on the way to an answer. */
typedef struct gw_outcome {
    uint32_t shards;     /* retrieval shards asked */
    uint32_t shards_ok;  /* shards that answered in time */
    bool rank_wanted;    /* there were candidates to rank */
    bool rank_ok;        /* ranking answered in time */
    bool cold_start;     /* the user has no history */
} gw_outcome;

/* recpipe.v1.Degradation values (kept numerically equal to the proto enum). */
enum {
    GW_DEGRADED_SHARD_PARTIAL = 1,
    GW_DEGRADED_RANKING_SKIPPED = 2,
    GW_DEGRADED_RETRIEVAL_FAILED = 3,
    GW_DEGRADED_COLD_START = 4,
    GW_DEGRADED_STALE = 5,
};

/* Writes the degradation flags an outcome calls for into flags (room for 4) and returns
 * how many: every shard failed → RETRIEVAL_FAILED (not SHARD_PARTIAL); some failed →
 * SHARD_PARTIAL; ranking wanted and not ok → RANKING_SKIPPED; cold start → COLD_START. */
size_t gw_degradations(const gw_outcome *o, int flags[4]);

#endif
