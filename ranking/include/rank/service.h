/*
 * rank/service.h — the Ranking service: Ranking.Rank and Admin.Reload over the ranker
 * of a bundle (rank/build.h, RANK_BUNDLE_FILE).
 *
 * The service holds a state (the loaded model and the bundle's version). Each request
 * pins the state it starts with (a reference taken under a mutex held for two
 * instructions) and releases it when it ends; Reload verifies the bundle's checksums,
 * loads and warms the new model completely, then swaps the state pointer: in-flight
 * requests finish on the model they started with, the old model is freed by the last of
 * them. A bundle that fails verification is refused and the old one keeps serving.
 *
 * Rank: up to RANK_MAX_CANDIDATES candidates (more: INVALID_ARGUMENT naming
 * "candidates" and the limit), up to RANK_MAX_HISTORY history events, no duplicate
 * candidate (INVALID_ARGUMENT naming the index and id), finite retrieval scores
 * (INVALID_ARGUMENT naming candidates[i].retrieval_score). Unknown item ids use the shared
 * out-of-vocabulary embedding. An empty candidate list gets an empty answer. All
 * candidates are scored as one batch (rank_score) in a per-thread workspace; with
 * explain, each score names the history item with the largest attention weight.
 * OpenBLAS must run one thread inside the service (rp_compute_threads(1)).
 */
#ifndef RANK_SERVICE_H
#define RANK_SERVICE_H

#include "rp/rpc.h"

#include <stddef.h>
#include <stdint.h>

#define RANK_MAX_CANDIDATES 5000
#define RANK_MAX_HISTORY 10000

typedef struct rank_service rank_service;

/* Loads the ranker of the bundle at bundle_path (kept, copied, for Reload without a
 * path and SIGHUP). RP_ENOENT (no bundle, or a bundle without a ranker), RP_ECORRUPT /
 * RP_EVERSION (verification). *out is NULL on error. */
int rank_service_create(const char *bundle_path, rank_service **out, rp_error *err);
/* Frees the service; no call may be in progress (stop the server first). NULL ok. */
void rank_service_destroy(rank_service *s);

/* The method rows (Ranking.Rank, Admin.Reload) with user = s, and the Admin.Status
 * hook. Valid as long as s. */
const rp_method *rank_service_methods(rank_service *s, size_t *n);
void rank_service_status_hook(void *user, struct Recpipe__V1__StatusResponse *resp,
                              rp_arena *arena);

/* Loads path (NULL or "" = the start path) and swaps it in. On failure the old model
 * keeps serving and err says why. prev/now (may be NULL, 64 bytes each) receive the
 * bundle versions; seconds (may be NULL) the load time. */
int rank_service_reload(rank_service *s, const char *path, char *prev, char *now,
                        double *seconds, rp_error *err);

/* Installs a SIGHUP handler (process-wide) and starts a thread that reloads the start
 * path on each SIGHUP; do not block SIGHUP in every thread. One service per process may
 * watch. rank_service_destroy stops the thread and restores the default action. */
int rank_service_watch_sighup(rank_service *s, rp_error *err);

#endif
