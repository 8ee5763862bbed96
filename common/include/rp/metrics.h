/*
 * rp/metrics.h — a process-wide metrics registry (counters, gauges, histograms with
 * labels) rendered in the Prometheus text exposition format 0.0.4, and an HTTP endpoint
 * serving it (libmicrohttpd) on GET /metrics.
 *
 * A family (name, help, type, label names) is created once and lives as long as the
 * process; asking for the same name again returns the same family. A series is one set
 * of label values of a family; it also lives as long as the process, so callers may
 * cache the pointer (the RPC layer does, per method and status). Updates are lock-free
 * (atomics); creating a series and rendering take the registry mutex.
 *
 * Hooks run before each rendering (one at a time, under a hook mutex) to refresh
 * gauges from state kept elsewhere: process memory and CPU, or a service's Admin.Status
 * fields. A hook must not call rp_metrics_render or add/remove hooks.
 *
 * THREADING: every function is thread-safe.
 */
#ifndef RP_METRICS_H
#define RP_METRICS_H

#include "rp/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum rp_metric_type {
    RP_METRIC_COUNTER = 0,
    RP_METRIC_GAUGE = 1,
    RP_METRIC_HISTOGRAM = 2,
} rp_metric_type;

typedef struct rp_metric rp_metric; /* a family */
typedef struct rp_series rp_series; /* one labelled series of a family */

#define RP_METRIC_MAX_LABELS 4
#define RP_METRIC_MAX_BUCKETS 24

/*
 * The family `name` (created on first use). labels: comma-separated label names
 * ("service,method,code") or NULL/"" for none. buckets: ascending upper bounds for a
 * histogram (+Inf is implicit; NULL = rp_metric_default_buckets), ignored otherwise.
 * Returns NULL when name is taken by a family of another type or label set, or on bad
 * arguments (logged). Strings are copied.
 */
rp_metric *rp_metric_family(rp_metric_type type, const char *name, const char *help,
                            const char *labels, const double *buckets, size_t nbuckets);

/* Latency buckets in seconds: 0.0005 s to 10 s. */
extern const double rp_metric_default_buckets[];
extern const size_t rp_metric_default_nbuckets;

/* The series of family m with these label values (as many as label names; values are
 * copied and escaped when rendered). NULL-safe: returns NULL when m is NULL. */
rp_series *rp_metric_series(rp_metric *m, const char *const *values);
/* Shorthands for families with 0, 1, 2 or 3 labels. */
rp_series *rp_metric_series0(rp_metric *m);
rp_series *rp_metric_series1(rp_metric *m, const char *v1);
rp_series *rp_metric_series2(rp_metric *m, const char *v1, const char *v2);
rp_series *rp_metric_series3(rp_metric *m, const char *v1, const char *v2, const char *v3);

/* Updates; all are no-ops on NULL. */
void rp_counter_add(rp_series *s, double v); /* v >= 0 */
void rp_counter_inc(rp_series *s);
/* Counters whose total is kept elsewhere (monotonic): sets the value. */
void rp_counter_set(rp_series *s, double v);
void rp_gauge_set(rp_series *s, double v);
void rp_gauge_add(rp_series *s, double v);
void rp_histogram_observe(rp_series *s, double v);
double rp_series_value(const rp_series *s); /* counter/gauge value; histogram: count */

/* Hides every series of m whose first label value is v1 (they are not rendered until
 * set again). For info gauges: hide the service's old version, set the new one. */
void rp_metric_hide_where(rp_metric *m, const char *v1);

/* A hook run before each rendering. Returns RP_OK or RP_ENOMEM. */
typedef void (*rp_metrics_hook)(void *user);
int rp_metrics_add_hook(rp_metrics_hook fn, void *user);
/* Removes the hook (fn, user); after it returns the hook is not running and will not run. */
void rp_metrics_remove_hook(rp_metrics_hook fn, void *user);

/* The exposition text of every family (after running the hooks), plus the process
 * metrics (process_resident_memory_bytes, process_cpu_seconds_total,
 * process_start_time_seconds, process_virtual_memory_bytes, process_open_fds).
 * Returns a malloc'd NUL-terminated string (caller frees) and its length in *len, or
 * NULL when out of memory. */
char *rp_metrics_render(size_t *len);

/*
 * Serves GET /metrics (and /) over HTTP on listen ("127.0.0.1:9100", port 0 picks a
 * free port) from a libmicrohttpd thread; one endpoint per process (a second call
 * answers RP_EINVAL). *port (may be NULL) receives the bound port; logs "metrics
 * listening on ADDR" with a "metrics_port" field. Errors: RP_EINVAL (bad address),
 * RP_EIO (cannot bind: names the address).
 */
int rp_metrics_http_start(const char *listen, int *port, rp_error *err);
/* The bound port, or 0 when not serving. */
int rp_metrics_http_port(void);
/* Stops the endpoint (no-op when not running). */
void rp_metrics_http_stop(void);

struct Recpipe__V1__RecommendResponse;
/*
 * The gateway's per-answer metrics, from a finished Recommend answer (its timings and
 * degradation flags): recpipe_gateway_stage_duration_seconds{stage} for state, cache,
 * retrieval, rank, diversify and total (stages at 0 us, which did not run, are
 * skipped, except total), and
 * recpipe_gateway_degraded_total{reason} per flag ("shard_partial", "ranking_skipped",
 * "retrieval_failed", "cold_start"). NULL-safe. Thread-safe.
 */
void rp_metrics_recommend(const struct Recpipe__V1__RecommendResponse *resp);
/* The gateway cache's figures: entries pushed out by the size bounds
 * (recpipe_cache_evictions_total{service="gateway"}), stale answers served because
 * the gateway was behind, with no refresh running
 * (recpipe_cache_refreshes_deferred_total), and the answers held now and their bytes
 * (gauges recpipe_cache_entries and recpipe_cache_bytes); called from its Admin.Status
 * hook, which the RPC layer runs before each scrape. */
void rp_metrics_cache(uint64_t evictions, uint64_t deferred, uint64_t entries, uint64_t bytes);
/* The gateway's user state: users with a history and the events those histories hold
 * (gauges recpipe_state_users and recpipe_state_events{service="gateway"}); called from
 * its Admin.Status hook, as rp_metrics_cache. */
void rp_metrics_state(uint64_t users, uint64_t events);

#endif
