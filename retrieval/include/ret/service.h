/*
 * ret/service.h — the Retrieval service: Retrieval.Retrieve plus Admin.Reload,
 * Admin.UpsertItems and Admin.DeleteItems over one bundle (or one shard of it).
 *
 * The service holds a "state": the loaded bundle (catalog, ANN index, fold-in Gram
 * matrix, content model) and the side index of upserts and tombstones. Each request
 * pins the state it starts with (a reference count taken under a mutex held for two
 * instructions — the only lock on the request path) and releases it at the end.
 * Reload opens, verifies and warms a new bundle completely, then swaps the state
 * pointer once; the old bundle is freed when its last request ends. Upserts and
 * deletes build a new side index (copy on write) and swap it the same way. Admin
 * calls are serialised among themselves by a second mutex no request takes.
 */
#ifndef RET_SERVICE_H
#define RET_SERVICE_H

#include "ret/sources.h"
#include "rp/rpc.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ret_service ret_service;

typedef struct ret_service_opts {
    const char *bundle_path;     /* required; kept (copied) for Reload with no path / SIGHUP */
    uint32_t shard;              /* the shard to serve (0 for an unsharded bundle) */
    ret_search_opts search;      /* RET_SEARCH_OPTS_DEFAULT when zeroed */
    float content_lambda;        /* ridge λ of the content model; 0 = 1.0 */
    /* Length of content embeddings: this quantile of the lengths of the items in the same
     * categories; 0 = 1.0 (the longest: new items compete with the strongest items of
     * their categories until they have interactions). */
    double content_quantile;
    /* Over-fetching (filtered) searches use a second copy of the index with its search
     * parameter (nprobe, efSearch) times this; 0 = 2, <= 1 = no second copy. */
    float wide_factor;
} ret_service_opts;

/* Loads the bundle (RP_ENOENT / RP_ECORRUPT / RP_EVERSION from the bundle, RP_EINVAL
 * when the shard is out of range or the metric is not inner product). *out is NULL on
 * error. */
int ret_service_create(const ret_service_opts *opts, ret_service **out, rp_error *err);
/* Frees the service; no call may be in progress (stop the server first). NULL ok. */
void ret_service_destroy(ret_service *s);

/* The method rows (Retrieve, Reload, UpsertItems, DeleteItems) with user = s, and the
 * Admin.Status hook. Valid as long as s. */
const rp_method *ret_service_methods(ret_service *s, size_t *n);
void ret_service_status_hook(void *user, struct Recpipe__V1__StatusResponse *resp,
                             rp_arena *arena);

/* Loads path (NULL or "" = the path the service was started with) and swaps it in.
 * On failure the old bundle keeps serving and err says why. prev/now (may be NULL,
 * 64 bytes each) receive the versions. */
int ret_service_reload(ret_service *s, const char *path, char *prev, char *now, double *seconds,
                       rp_error *err);

/* Installs a SIGHUP handler (process-wide; one service per process) and starts a thread
 * that reloads the start path on each SIGHUP. Stopped by ret_service_destroy. */
int ret_service_watch_sighup(ret_service *s, rp_error *err);

/* The version of the bundle being served (copied into buf of cap bytes). */
void ret_service_version(ret_service *s, char *buf, size_t cap);

#endif
