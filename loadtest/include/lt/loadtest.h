/*
 * lt/loadtest.h — the load generator: open loop (a rate, constant or Poisson arrivals)
 * or closed loop (a number of callers), over the gRPC C core, against one target.
 *
 * Open loop measures each call from its INTENDED start time on the schedule, not from
 * when it was actually sent: when the server (or the generator) stalls, the calls that
 * should have been sent meanwhile are sent late and their wait counts in their latency.
 * This is the coordinated-omission correction (Gil Tene): a closed-loop tool stops
 * sending while the server stalls and so hides the stall from its percentiles.
 *
 * Each worker thread drives its own completion queue and records into its own
 * histograms; they are merged at the end. Every run stops by itself: at the end of
 * warmup + duration, or after max_calls calls, then waits for the calls in flight
 * (bounded by their deadline).
 */
#ifndef LT_LOADTEST_H
#define LT_LOADTEST_H

#include "lt/workload.h"
#include "rp/err.h"
#include "rp/hist.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LT_NSTATUS 17 /* gRPC status codes 0..16 */

/* "OK", "DEADLINE_EXCEEDED", ...; "UNKNOWN_STATUS" outside 0..16. Static string. */
const char *lt_status_name(int code);

/* Live figures, handed to the progress callback about every 250 ms, on the thread that
 * called lt_run. */
typedef struct lt_progress {
    double elapsed_s;  /* since the start, warmup included */
    double total_s;    /* warmup + duration */
    bool warmup;       /* still in warmup */
    uint64_t sent, completed, errors;
    uint32_t in_flight;
    double last_rate;  /* completions in the last whole second */
    uint64_t last_p99_ns;
} lt_progress;

typedef void (*lt_progress_fn)(void *user, const lt_progress *p);

typedef struct lt_config {
    const char *target;  /* "host:port", required; borrowed */
    double rate;         /* > 0: open loop at this many calls per second */
    uint32_t concurrency; /* > 0: closed loop with this many calls in flight (rate = 0) */
    lt_arrivals arrivals; /* open loop only */
    double duration_s;   /* measured window, > 0 */
    double warmup_s;     /* before the window, not recorded; >= 0 */
    uint32_t connections; /* TCP connections (channels), >= 1 */
    uint32_t threads;    /* worker threads, >= 1 */
    uint32_t deadline_ms; /* per call, counted from when it is sent, >= 1 */
    uint64_t max_calls;  /* stop after this many calls sent (0 = no limit) */
    uint32_t max_in_flight; /* open loop: calls in flight at most (>= 1); late calls wait */
    uint64_t seed;
    const lt_workload *workload; /* borrowed; what to send */
    lt_progress_fn progress;     /* may be NULL */
    void *progress_user;
    /* When non-NULL and set non-zero (e.g. by a SIGINT handler), the run stops sending
     * and drains. */
    const volatile sig_atomic_t *stop;
} lt_config;

/* Sets the defaults: closed loop off, rate 0, constant arrivals, 30 s, warmup 5 s, one
 * connection, one thread, 1 s deadline, no call limit, 20000 in flight, seed 1. */
void lt_config_defaults(lt_config *cfg);

/* One second of the run, by completion time. */
typedef struct lt_second {
    uint64_t completed; /* calls completed during this second */
    uint64_t errors;    /* of which with a status other than OK */
    uint64_t p50_ns, p99_ns, max_ns; /* of their latencies; 0 when none */
    bool warmup;        /* the second began before the end of warmup */
} lt_second;

typedef struct lt_result {
    /* As run. Its pointers (target, workload) are the caller's: the reports read them,
     * so keep them alive until the result is freed. */
    lt_config cfg;
    bool open_loop;
    /* Calls whose intended start fell in the measured window, whatever their status:
     * a call that timed out or failed counts at the time it took to fail. */
    rp_hist latency;
    rp_hist by_rpc[LT_RPC_COUNT];
    uint64_t calls_by_rpc[LT_RPC_COUNT];
    uint64_t status[LT_NSTATUS]; /* measured calls by gRPC status code */
    /* Latency by status: by_status[GRPC_STATUS_OK] is the admitted calls' latency when a
     * server sheds load (RESOURCE_EXHAUSTED answers fast and would flatter `latency`). */
    rp_hist by_status[LT_NSTATUS];
    uint64_t measured;           /* calls in the window (= latency.count) */
    uint64_t ok;                 /* of which OK */
    uint64_t errors;             /* of which not OK */
    uint64_t sent;               /* calls sent, warmup included */
    uint64_t completed;          /* calls completed, warmup included */
    uint64_t unsent;             /* open loop: intended calls never sent (in-flight cap) */
    uint32_t max_in_flight_seen;
    /* Open loop: calls sent more than 1 ms after their intended start (the generator
     * or its in-flight cap fell behind; their latency still counts from the intended
     * start), and the largest such lag. Many late sends mean the generator, not only
     * the target, was saturated: add --threads or lower the rate. */
    uint64_t late_sends;
    uint64_t max_send_lag_ns;
    double elapsed_s;            /* wall time of the whole run, drain included */
    double achieved_rate;        /* measured completions / window_s */
    double window_s;             /* the measured window: duration_s unless interrupted */
    bool interrupted;            /* the stop flag ended the run early */
    double start_wall_s;         /* Unix time of the start */
    lt_second *seconds;          /* per-second timeline from the start, warmup included */
    size_t nseconds;
} lt_result;

/*
 * Runs one load test as configured. Connects every channel first (RP_EUNAVAIL naming
 * the target when the connection is refused or not ready within 5 s), then sends,
 * then drains: calls due but unsent deadline + 2 s after the end are counted in
 * `unsent`, and calls still in flight deadline + 2 s after sending stopped are
 * cancelled (counted as CANCELLED). On success
 * *out is a new result (free with lt_result_free). Errors: RP_EINVAL naming the field
 * of cfg out of range, RP_EUNAVAIL, RP_ENOMEM. Individual call failures are not errors
 * of the run: they are counted by status.
 */
int lt_run(const lt_config *cfg, lt_result **out, rp_error *err);
void lt_result_free(lt_result *r);

/* ---------------------------------------------------------------- find the max rate */

typedef struct lt_step {
    double rate;      /* offered */
    double achieved;  /* measured completions per second */
    uint64_t p99_ns;
    uint64_t measured, errors;
    bool pass;        /* p99 <= SLO, errors <= 1 %, achieved >= 95 % of offered */
} lt_step;

#define LT_MAX_STEPS 32

typedef struct lt_find_result {
    double slo_p99_ms;
    double best_rate; /* the highest passing offered rate; 0 when none passed */
    lt_step steps[LT_MAX_STEPS];
    size_t nsteps;
    lt_result *best;  /* the run at best_rate (owned; NULL when none passed) */
} lt_find_result;

/*
 * Searches the highest open-loop rate whose p99 stays under slo_p99_ms: starting at
 * cfg->rate (> 0), doubles while steps pass (up to max_rate), then bisects between the
 * last pass and the first failure until they are within 5 % (at most LT_MAX_STEPS
 * runs in all). A step that fails is run again and fails only if it fails twice. Each step is a full lt_run with cfg's duration and warmup (keep them
 * short: a few seconds). Free out->best with lt_find_result_clear.
 */
int lt_find_max(const lt_config *cfg, double slo_p99_ms, double max_rate, lt_find_result *out,
                rp_error *err);
void lt_find_result_clear(lt_find_result *f);

#endif
