/*
 * gw/service.h — the Recommender service (recpipe.v1.Recommender): Recommend, Feedback,
 * ForgetUser over the RPC layer, with Admin.Status reporting the cache and feedback
 * counters.
 *
 * Recommend: user history (LMDB) → cache → Retrieve fanned out to every shard in
 * parallel, each under its share of the caller's deadline → in-process cold-start
 * sources → merge, dedupe, drop seen and excluded → one Rank call → MMR + category
 * caps → cache → answer. The degradation ladder (gw/merge.h) turns failures of
 * downstream services into flags, never into errors, while anything useful exists.
 *
 * Admin.Reload (empty bundle_path = the --bundle path, which may be a symlink) and
 * SIGHUP (once gw_service_run_until_signal runs) open, verify and warm a new bundle, then
 * swap one pointer: each Recommend keeps the bundle it started with to its end, the old
 * bundle is freed after its last request, and a bundle that fails to open is refused
 * (the error names the file) while the old one keeps serving.
 */
#ifndef GW_SERVICE_H
#define GW_SERVICE_H

#include "rp/err.h"
#include "rp/rpc.h"

#include <stddef.h>
#include <stdint.h>

typedef struct gw_service_config {
    const char *listen;      /* "127.0.0.1:50050"; port 0 picks a free one */
    const char *bundle;      /* bundle directory: titles, categories, embeddings, popularity */
    const char *state_dir;   /* user state (LMDB), created when missing */
    const char *retrieval;   /* shard addresses, comma-separated: "h:p0,h:p1"; NULL/"" = none */
    const char *ranking;     /* ranking replicas, comma-separated (round robin); NULL/"" = none */
    int threads;             /* request threads; <= 0 = 8 (handlers block on downstream calls) */
    size_t state_map_size;   /* LMDB map size; 0 = 1 GiB */
    uint32_t history_len;    /* events kept per user; 0 = 200 */
    size_t cache_entries;    /* 0 = 10,000 */
    double cache_ttl_s;      /* 0 = 30 s */
    double cache_stale_s;    /* an answer past its TTL (or of the previous bundle) may be
                              * served for this long while it is recomputed (gw/cache.h);
                              * 0 = cache_ttl_s; < 0 = never */
    size_t cache_refreshes;  /* recomputations of answers that have a stale one, at once
                              * (the rest get the stale one); 0 = 1 */
    double cache_refresh_wait_s; /* a Recommend that waited longer than this for a request
                              * thread, with others still waiting, finds the gateway behind:
                              * it gets the stale answer when there is one rather than
                              * recomputing (GW_CACHE_BEHIND); 0 = 5 ms; < 0 = never */
    int64_t default_deadline_ms; /* for callers that set none; <= 0 = 100 */
    double grace_s;          /* drain time on SIGTERM; <= 0 = 5 s */
    /* When set, ForgetUser and Admin.Reload require "authorization: Bearer <admin_token>"
     * (copied; checked by the RPC layer): none → UNAUTHENTICATED, another →
     * PERMISSION_DENIED. NULL: the process default (rp_ops: --admin-token-file,
     * RECPIPE_ADMIN_TOKEN), if any. */
    const char *admin_token;
} gw_service_config;

typedef struct gw_service gw_service;

/* Opens the bundle and the state store, connects the clients and starts serving.
 * Errors name the bundle, directory or address. *out is NULL on error. */
int gw_service_start(const gw_service_config *cfg, gw_service **out, rp_error *err);
/* The bound port. */
int gw_service_port(const gw_service *s);
/* Blocks until SIGTERM/SIGINT, drains, returns RP_OK after a clean drain. */
int gw_service_run_until_signal(gw_service *s);
/* The service's method table (Recommend, Feedback, ForgetUser, Admin.Reload), to run its
 * handlers in-process (the fault-injection tests). Owned by s, valid until destroy. */
const rp_method *gw_service_methods(gw_service *s, size_t *n);
/* Stops (if running) and frees everything. NULL is a no-op. */
void gw_service_destroy(gw_service *s);

#endif
