/* metrics_gateway.c — the gateway's per-answer metrics (rp_metrics_recommend, rp/metrics.h). */
#include "rp/metrics.h"

#include "recpipe/v1/recommender.pb-c.h"

#include <ctype.h>
#include <stdatomic.h>
#include <string.h>

/* Stage buckets: 50 us to 1 s. */
static const double stage_buckets[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                       0.01,    0.025,  0.05,    0.1,    0.25,   0.5,    1};

enum { ST_STATE, ST_CACHE, ST_RETRIEVAL, ST_RANK, ST_DIVERSIFY, ST_TOTAL, ST_N };
static const char *const stage_names[ST_N] = {"state", "cache", "retrieval", "rank", "diversify",
                                              "total"};
#define MAX_REASONS 16

static _Atomic(rp_series *) stage[ST_N];
static _Atomic(rp_series *) reason[MAX_REASONS];

static rp_series *stage_series(int i)
{
    rp_series *s = atomic_load(&stage[i]);
    if (s) return s;
    rp_metric *f = rp_metric_family(RP_METRIC_HISTOGRAM, "recpipe_gateway_stage_duration_seconds",
                                    "Time spent in each stage of a Recommend call.", "stage",
                                    stage_buckets, sizeof stage_buckets / sizeof stage_buckets[0]);
    s = rp_metric_series1(f, stage_names[i]);
    atomic_store(&stage[i], s);
    return s;
}

/* "DEGRADATION_SHARD_PARTIAL" → "shard_partial". */
static rp_series *reason_series(int v)
{
    if (v < 0 || v >= MAX_REASONS) v = 0;
    rp_series *s = atomic_load(&reason[v]);
    if (s) return s;
    const ProtobufCEnumValue *ev =
        protobuf_c_enum_descriptor_get_value(&recpipe__v1__degradation__descriptor, v);
    char name[64] = "unknown";
    if (ev) {
        const char *n = ev->name;
        if (!strncmp(n, "DEGRADATION_", 12)) n += 12;
        size_t i = 0;
        for (; n[i] && i + 1 < sizeof name; i++) name[i] = (char)tolower((unsigned char)n[i]);
        name[i] = '\0';
    }
    rp_metric *f = rp_metric_family(RP_METRIC_COUNTER, "recpipe_gateway_degraded_total",
                                    "Recommend answers carrying a degradation flag, by reason.",
                                    "reason", NULL, 0);
    s = rp_metric_series1(f, name);
    atomic_store(&reason[v], s);
    return s;
}

void rp_metrics_recommend(const struct Recpipe__V1__RecommendResponse *resp)
{
    if (!resp) return;
    const Recpipe__V1__StageTimings *t = resp->timings;
    if (t) {
        const uint64_t us[ST_N] = {t->state_us, t->cache_us, t->retrieval_us, t->rank_us,
                                   t->diversify_us, t->total_us};
        for (int i = 0; i < ST_N; i++) {
            if (us[i] > 0 || i == ST_TOTAL) rp_histogram_observe(stage_series(i), (double)us[i] / 1e6);
        }
    }
    for (size_t i = 0; i < resp->n_degraded; i++) rp_counter_inc(reason_series((int)resp->degraded[i]));
}

static void set_value(_Atomic(rp_series *) *slot, rp_metric_type type, const char *name,
                      const char *help, uint64_t v)
{
    rp_series *s = atomic_load(slot);
    if (!s) {
        s = rp_metric_series1(rp_metric_family(type, name, help, "service", NULL, 0), "gateway");
        atomic_store(slot, s);
    }
    rp_gauge_set(s, (double)v);
}

void rp_metrics_cache(uint64_t evictions, uint64_t deferred, uint64_t entries, uint64_t bytes)
{
    static _Atomic(rp_series *) ev, df, en, by;
    set_value(&ev, RP_METRIC_COUNTER, "recpipe_cache_evictions_total",
              "Gateway cache entries pushed out by the size bounds.", evictions);
    set_value(&df, RP_METRIC_COUNTER, "recpipe_cache_refreshes_deferred_total",
              "Stale answers served because the gateway was behind (no refresh running).",
              deferred);
    set_value(&en, RP_METRIC_GAUGE, "recpipe_cache_entries",
              "Answers the gateway cache holds (stale ones included).", entries);
    set_value(&by, RP_METRIC_GAUGE, "recpipe_cache_bytes",
              "Bytes of the answers the gateway cache holds.", bytes);
}

void rp_metrics_state(uint64_t users, uint64_t events)
{
    static _Atomic(rp_series *) us, ev;
    set_value(&us, RP_METRIC_GAUGE, "recpipe_state_users",
              "Users with a stored history in the gateway's user state.", users);
    set_value(&ev, RP_METRIC_GAUGE, "recpipe_state_events",
              "Events held in the gateway's user histories (each at most --history).", events);
}
