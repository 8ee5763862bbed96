/* The load generator: worker threads, each with its own completion queue and
 * histograms, sending on a shared set of channels (one TCP connection each).
 *
 * Open loop: each worker has a sender thread that sleeps until the next call is due
 * (clock_nanosleep, microsecond timer slack) and starts it, while the worker's own thread
 * blocks on the completion queue and reaps each call as it completes. Neither waits for
 * the other and neither polls: a generator that polled between sends took a whole core
 * from the server it measured (the two share the cores in bench/overload), and one that
 * blocked in the queue's timed wait (millisecond granularity) sent up to 1 ms late.
 * Closed loop: the worker's thread starts the next call as it reaps one. */
#include "lt/loadtest.h"
#include "rp/clock.h"
#include "rp/ops.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

/* A worker looks at the clock (timeline, stop flag) at least this often. */
#define TICK_NS 100000000ull
#define RING 4
/* The sender's sleeps end this close to when asked (the kernel's default slack is
 * 50 us). */
#define SENDER_SLACK_NS 1000
/* With every call slot in flight, the sender looks for a free one this often. */
#define NO_SLOT_WAIT_NS 100000ull
#define LATE_NS 1000000ull
/* Completions reaped in a row at most (then the schedule is looked at again). */
#define REAP_MAX 4096

static const char *status_names[LT_NSTATUS] = {
    "OK",        "CANCELLED",           "UNKNOWN",           "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED", "NOT_FOUND",   "ALREADY_EXISTS",    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",       "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *lt_status_name(int code)
{
    return code >= 0 && code < LT_NSTATUS ? status_names[code] : "UNKNOWN_STATUS";
}

void lt_config_defaults(lt_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->arrivals = LT_ARRIVALS_CONSTANT;
    cfg->duration_s = 30;
    cfg->warmup_s = 5;
    cfg->connections = 1;
    cfg->threads = 1;
    cfg->deadline_ms = 1000;
    cfg->max_in_flight = 20000;
    cfg->seed = 1;
}

typedef struct worker worker;

/* One call in flight; also the completion-queue tag. */
typedef struct call_ctx {
    worker *w;
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array md_init, md_trail;
    grpc_status_code status;
    grpc_slice details;
    uint64_t intended_ns; /* from the run's start */
    lt_rpc rpc;
    struct call_ctx *next_free;
} call_ctx;

typedef struct slot {
    int64_t sec; /* -1 = empty */
    uint64_t completed, errors;
    rp_hist h;
} slot;

typedef struct run {
    const lt_config *cfg;
    grpc_channel **ch;
    uint32_t nch;
    uint64_t t0;          /* rp_now_ns() at the start */
    uint64_t warm_end_ns; /* from t0 */
    uint64_t end_ns;      /* from t0 */
    atomic_uint_fast64_t sent_total;
    atomic_int abort;   /* stop sending at once (set-up failed) */
    atomic_uint in_flight, max_in_flight; /* over all workers */
    atomic_uint done;   /* workers finished */
    pthread_mutex_t mu; /* guards the timeline below */
    slot ring[RING];
    lt_second *seconds;
    size_t cap_seconds;
    int64_t final_before; /* seconds < this are final */
} run;

struct worker {
    run *r;
    uint32_t id;
    pthread_t th, sender;
    grpc_completion_queue *cq;
    call_ctx *pool;
    pthread_mutex_t free_mu; /* guards free_list (sender and reaper) */
    call_ctx *free_list;
    uint32_t pool_size;
    atomic_uint in_flight;
    uint32_t closed_n; /* closed loop: calls this worker keeps in flight */
    double rate;       /* open loop: this worker's share */
    lt_rng rng;
    lt_schedule sched;
    uint64_t next_intended;
    /* Cleared once by whoever sends (the sender thread in open loop), after
     * stop_sending_at and its last call's in_flight count are written. */
    atomic_bool sending;
    uint64_t stop_sending_at; /* when sending stopped (from t0) */
    bool cancelled;
    uint32_t next_ch;
    uint8_t *buf;
    /* results */
    rp_hist latency, by_rpc[LT_RPC_COUNT], by_status[LT_NSTATUS];
    uint64_t calls_by_rpc[LT_RPC_COUNT], status[LT_NSTATUS];
    uint64_t measured, ok, errors, unsent, late_sends, max_send_lag;
    atomic_uint_fast64_t sent, completed, failed; /* for progress */
    /* the current second of the timeline */
    int64_t cur_s;
    uint64_t cur_completed, cur_errors;
    rp_hist cur_h;
    int rc;
    rp_error err;
};

static uint64_t rel_now(const run *r)
{
    return rp_now_ns() - r->t0;
}

static gpr_timespec mono_in(uint64_t ns)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos((int64_t)ns, GPR_TIMESPAN));
}

/* ---------------------------------------------------------------- timeline */

/* Caller holds r->mu. */
static void finalize_slot(run *r, slot *s)
{
    if (s->sec < 0) return;
    if ((size_t)s->sec < r->cap_seconds) {
        lt_second *o = &r->seconds[s->sec];
        o->completed = s->completed;
        o->errors = s->errors;
        o->p50_ns = rp_hist_percentile(&s->h, 50);
        o->p99_ns = rp_hist_percentile(&s->h, 99);
        o->max_ns = rp_hist_max(&s->h);
    }
    s->sec = -1;
}

static void flush_second(worker *w)
{
    run *r = w->r;
    if (w->cur_completed == 0) return;
    pthread_mutex_lock(&r->mu);
    if (w->cur_s < r->final_before) {
        /* Very late: that second is already summarised; keep the counts right. */
        if ((size_t)w->cur_s < r->cap_seconds) {
            lt_second *o = &r->seconds[w->cur_s];
            o->completed += w->cur_completed;
            o->errors += w->cur_errors;
            if (rp_hist_max(&w->cur_h) > o->max_ns) o->max_ns = rp_hist_max(&w->cur_h);
        }
    } else {
        slot *s = &r->ring[w->cur_s % RING];
        if (s->sec != w->cur_s) {
            finalize_slot(r, s);
            rp_hist_reset(&s->h);
            s->completed = s->errors = 0;
            s->sec = w->cur_s;
        }
        rp_hist_merge(&s->h, &w->cur_h);
        s->completed += w->cur_completed;
        s->errors += w->cur_errors;
    }
    pthread_mutex_unlock(&r->mu);
    rp_hist_reset(&w->cur_h);
    w->cur_completed = w->cur_errors = 0;
}

/* Summarises seconds that every worker has left (all but the last two). */
static void finalize_old(run *r, int64_t now_s, bool all)
{
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < RING; i++) {
        slot *s = &r->ring[i];
        if (s->sec >= 0 && (all || s->sec <= now_s - 2)) finalize_slot(r, s);
    }
    if (!all && now_s - 1 > r->final_before) r->final_before = now_s - 1;
    pthread_mutex_unlock(&r->mu);
}

/* ---------------------------------------------------------------- calls */

static call_ctx *slot_get(worker *w)
{
    pthread_mutex_lock(&w->free_mu);
    call_ctx *c = w->free_list;
    if (c) w->free_list = c->next_free;
    pthread_mutex_unlock(&w->free_mu);
    return c;
}

static void slot_put(worker *w, call_ctx *c)
{
    pthread_mutex_lock(&w->free_mu);
    c->next_free = w->free_list;
    w->free_list = c;
    pthread_mutex_unlock(&w->free_mu);
}

/* Starts a call in slot c (from slot_get; given back on failure). */
static int start_call(worker *w, call_ctx *c, uint64_t intended)
{
    run *r = w->r;
    lt_rpc rpc = lt_workload_pick(r->cfg->workload, &w->rng);
    size_t len;
    int erc = lt_workload_encode(r->cfg->workload, rpc, &w->rng, w->buf, LT_REQUEST_MAX, &len);
    if (erc) {
        slot_put(w, c);
        return rp_errorf(&w->err, erc, "cannot encode a %s request: %s", lt_rpc_name(rpc),
                         rp_strerror(erc));
    }
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)w->buf, len);
    c->send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    c->recv = NULL;
    c->rpc = rpc;
    c->intended_ns = intended;
    c->details = grpc_empty_slice();
    grpc_metadata_array_init(&c->md_init);
    grpc_metadata_array_init(&c->md_trail);
    grpc_channel *ch = r->ch[w->next_ch++ % r->nch];
    c->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, w->cq,
                                       grpc_slice_from_static_string(lt_rpc_path(rpc)), NULL,
                                       mono_in((uint64_t)r->cfg->deadline_ms * 1000000ull), NULL);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->md_init;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->md_trail;
    ops[5].data.recv_status_on_client.status = &c->status;
    ops[5].data.recv_status_on_client.status_details = &c->details;
    grpc_call_error ce = grpc_call_start_batch(c->call, ops, 6, c, NULL);
    if (ce != GRPC_CALL_OK) {
        grpc_call_unref(c->call);
        grpc_byte_buffer_destroy(c->send);
        grpc_metadata_array_destroy(&c->md_init);
        grpc_metadata_array_destroy(&c->md_trail);
        slot_put(w, c);
        return rp_errorf(&w->err, RP_EINTERNAL, "loadtest: grpc_call_start_batch failed (%d)",
                         (int)ce);
    }
    atomic_fetch_add(&w->in_flight, 1);
    unsigned all = atomic_fetch_add_explicit(&r->in_flight, 1, memory_order_relaxed) + 1;
    unsigned seen = atomic_load_explicit(&r->max_in_flight, memory_order_relaxed);
    while (all > seen && !atomic_compare_exchange_weak_explicit(&r->max_in_flight, &seen, all,
                                                                 memory_order_relaxed,
                                                                 memory_order_relaxed)) {
    }
    atomic_fetch_add_explicit(&w->sent, 1, memory_order_relaxed);
    return RP_OK;
}

static void complete_call(worker *w, call_ctx *c)
{
    run *r = w->r;
    uint64_t now = rel_now(r);
    uint64_t lat = now > c->intended_ns ? now - c->intended_ns : 0;
    int st = (int)c->status;
    if (st < 0 || st >= LT_NSTATUS) st = GRPC_STATUS_UNKNOWN;

    int64_t sec = (int64_t)(now / 1000000000ull);
    if (sec != w->cur_s) {
        flush_second(w);
        w->cur_s = sec;
    }
    rp_hist_record(&w->cur_h, lat);
    w->cur_completed++;
    if (st != GRPC_STATUS_OK) w->cur_errors++;

    if (c->intended_ns >= r->warm_end_ns) {
        rp_hist_record(&w->latency, lat);
        rp_hist_record(&w->by_rpc[c->rpc], lat);
        rp_hist_record(&w->by_status[st], lat);
        w->calls_by_rpc[c->rpc]++;
        w->status[st]++;
        w->measured++;
        if (st == GRPC_STATUS_OK) w->ok++;
        else w->errors++;
    }
    atomic_fetch_add_explicit(&w->completed, 1, memory_order_relaxed);
    if (st != GRPC_STATUS_OK) atomic_fetch_add_explicit(&w->failed, 1, memory_order_relaxed);

    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    grpc_byte_buffer_destroy(c->send);
    grpc_metadata_array_destroy(&c->md_init);
    grpc_metadata_array_destroy(&c->md_trail);
    grpc_slice_unref(c->details);
    grpc_call_unref(c->call);
    c->call = NULL;
    slot_put(w, c);
    atomic_fetch_sub(&w->in_flight, 1);
    atomic_fetch_sub_explicit(&r->in_flight, 1, memory_order_relaxed);
}

/* True while this worker may send another call (duration, call limit, stop flag). */
static bool may_send(worker *w, uint64_t intended)
{
    run *r = w->r;
    if (intended >= r->end_ns) return false;
    if (r->cfg->stop && *r->cfg->stop) return false;
    if (atomic_load_explicit(&r->abort, memory_order_relaxed)) return false;
    if (r->cfg->max_calls) {
        uint64_t n = atomic_fetch_add(&r->sent_total, 1);
        if (n >= r->cfg->max_calls) return false;
    }
    return true;
}

/* Called only by the thread that sends. */
static void stop_sending(worker *w, uint64_t now)
{
    if (!atomic_load(&w->sending)) return;
    w->stop_sending_at = now;
    atomic_store(&w->sending, false);
}

static void sleep_until(const run *r, uint64_t rel_ns)
{
    uint64_t abs = r->t0 + rel_ns;
    struct timespec ts = {(time_t)(abs / 1000000000ull), (long)(abs % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Open loop: sends every call when it is due; a call sent late keeps its intended time
 * (latency is measured from it). */
static void *sender_main(void *arg)
{
    worker *w = arg;
    run *r = w->r;
    const lt_config *cfg = r->cfg;
    /* Calls still due this long after the end will never be sent. */
    uint64_t drain_ns = (uint64_t)cfg->deadline_ms * 1000000ull + 2000000000ull;
    prctl(PR_SET_TIMERSLACK, SENDER_SLACK_NS, 0, 0, 0);
    w->next_intended = lt_schedule_next(&w->sched);
    if (!may_send(w, w->next_intended)) stop_sending(w, 0);
    while (atomic_load(&w->sending)) {
        uint64_t now = rel_now(r);
        if ((cfg->stop && *cfg->stop) || atomic_load_explicit(&r->abort, memory_order_relaxed)) {
            stop_sending(w, now);
            break;
        }
        if (w->next_intended > now) {
            sleep_until(r, w->next_intended - now > TICK_NS ? now + TICK_NS : w->next_intended);
            continue;
        }
        if (now > r->end_ns + drain_ns) {
            while (w->next_intended < r->end_ns) {
                w->unsent++;
                w->next_intended = lt_schedule_next(&w->sched);
            }
            stop_sending(w, now);
            break;
        }
        call_ctx *c = slot_get(w);
        if (!c) {
            sleep_until(r, now + NO_SLOT_WAIT_NS);
            continue;
        }
        uint64_t lag = now - w->next_intended;
        if (lag > LATE_NS) w->late_sends++;
        if (lag > w->max_send_lag) w->max_send_lag = lag;
        if ((w->rc = start_call(w, c, w->next_intended))) {
            stop_sending(w, rel_now(r));
            break;
        }
        w->next_intended = lt_schedule_next(&w->sched);
        if (!may_send(w, w->next_intended)) stop_sending(w, now);
    }
    return NULL;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    run *r = w->r;
    const lt_config *cfg = r->cfg;
    bool open = cfg->rate > 0;
    /* Calls are drained for at most their deadline after sending stops, then cancelled. */
    uint64_t drain_ns = (uint64_t)cfg->deadline_ms * 1000000ull + 2000000000ull;
    bool has_sender = false;
    atomic_store(&w->sending, true);
    w->cur_s = 0;

    if (open) {
        if (pthread_create(&w->sender, NULL, sender_main, w)) {
            w->rc = rp_errorf(&w->err, RP_EINTERNAL, "loadtest: cannot start a sender thread");
            stop_sending(w, 0);
        } else {
            has_sender = true;
        }
    } else {
        for (uint32_t i = 0; i < w->closed_n && atomic_load(&w->sending); i++) {
            uint64_t now = rel_now(r);
            if (!may_send(w, now)) {
                stop_sending(w, now);
                break;
            }
            if ((w->rc = start_call(w, slot_get(w), now))) stop_sending(w, now);
        }
        if (w->closed_n == 0) stop_sending(w, 0);
    }

    for (;;) {
        uint64_t now = rel_now(r);
        if (!open) {
            if ((cfg->stop && *cfg->stop) || atomic_load_explicit(&r->abort, memory_order_relaxed) ||
                now >= r->end_ns)
                stop_sending(w, now);
        }
        /* sending is read first: once it is false, the sender's last call is counted. */
        bool sending = atomic_load(&w->sending);
        if (!sending && atomic_load(&w->in_flight) == 0) break;
        if (!sending && !w->cancelled && (w->rc || now > w->stop_sending_at + drain_ns)) {
            for (uint32_t i = 0; i < w->pool_size; i++)
                if (w->pool[i].call) grpc_call_cancel(w->pool[i].call, NULL);
            w->cancelled = true;
        }
        grpc_event ev = grpc_completion_queue_next(w->cq, mono_in(TICK_NS), NULL);
        while (ev.type == GRPC_OP_COMPLETE) {
            complete_call(w, ev.tag);
            if (!open && atomic_load(&w->sending) && !w->rc) {
                uint64_t t = rel_now(r);
                if (!may_send(w, t)) stop_sending(w, t);
                else if ((w->rc = start_call(w, slot_get(w), t))) stop_sending(w, t);
            }
            ev = grpc_completion_queue_next(w->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
        }
        int64_t sec = (int64_t)(rel_now(r) / 1000000000ull);
        if (sec != w->cur_s) {
            flush_second(w);
            w->cur_s = sec;
        }
    }
    if (has_sender) pthread_join(w->sender, NULL);
    flush_second(w);
    atomic_fetch_add(&r->done, 1);
    return NULL;
}

/* ---------------------------------------------------------------- set-up */

static int check_config(const lt_config *c, rp_error *err)
{
    if (!c->target || !*c->target) return rp_errorf(err, RP_EINVAL, "--target: required (host:port)");
    if (!c->workload) return rp_errorf(err, RP_EINVAL, "loadtest: no workload given");
    if ((c->rate > 0) == (c->concurrency > 0))
        return rp_errorf(err, RP_EINVAL, "give exactly one of --rate (open loop) and "
                                         "--concurrency (closed loop)");
    if (c->rate > 0 && !(c->rate <= 10000000))
        return rp_errorf(err, RP_EINVAL, "--rate: %g is out of range (0, 10000000]", c->rate);
    if (c->concurrency > 100000)
        return rp_errorf(err, RP_EINVAL, "--concurrency: %u is out of range 1..100000",
                         c->concurrency);
    if (!(c->duration_s > 0) || c->duration_s > 86400)
        return rp_errorf(err, RP_EINVAL, "--duration: %g s is out of range (0, 86400]",
                         c->duration_s);
    if (!(c->warmup_s >= 0) || c->warmup_s > 3600)
        return rp_errorf(err, RP_EINVAL, "--warmup: %g s is out of range [0, 3600]", c->warmup_s);
    if (c->connections < 1 || c->connections > 1024)
        return rp_errorf(err, RP_EINVAL, "--connections: %u is out of range 1..1024",
                         c->connections);
    if (c->threads < 1 || c->threads > 64)
        return rp_errorf(err, RP_EINVAL, "--threads: %u is out of range 1..64", c->threads);
    if (c->deadline_ms < 1 || c->deadline_ms > 600000)
        return rp_errorf(err, RP_EINVAL, "--deadline-ms: %u is out of range 1..600000",
                         c->deadline_ms);
    if (c->max_in_flight < 1)
        return rp_errorf(err, RP_EINVAL, "--max-in-flight: must be at least 1");
    return RP_OK;
}

/* Waits until every channel is READY (or 5 s passed). */
static int connect_all(run *r, rp_error *err)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    int rc = RP_OK;
    uint64_t give_up = rp_now_ns() + 5000000000ull;
    for (uint32_t i = 0; i < r->nch && rc == RP_OK; i++) {
        grpc_connectivity_state st = grpc_channel_check_connectivity_state(r->ch[i], 1);
        while (st != GRPC_CHANNEL_READY) {
            uint64_t now = rp_now_ns();
            /* A refused connection fails at once: say so rather than wait for retries. */
            if (now >= give_up || st == GRPC_CHANNEL_SHUTDOWN ||
                st == GRPC_CHANNEL_TRANSIENT_FAILURE) {
                rc = rp_errorf(err, RP_EUNAVAIL, "cannot connect to %s: %s", r->cfg->target,
                               st == GRPC_CHANNEL_TRANSIENT_FAILURE ? "connection failed"
                                                                     : "no connection within 5 s");
                break;
            }
            grpc_channel_watch_connectivity_state(r->ch[i], st, mono_in(give_up - now), cq, NULL);
            grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
            st = grpc_channel_check_connectivity_state(r->ch[i], 1);
        }
    }
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    return rc;
}

static void free_worker(worker *w)
{
    if (!w) return;
    if (w->cq) {
        grpc_completion_queue_shutdown(w->cq);
        while (grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(w->cq);
    }
    pthread_mutex_destroy(&w->free_mu);
    free(w->pool);
    free(w->buf);
    free(w);
}

static void progress_tick(run *r, worker **ws, uint32_t nw, lt_progress_fn fn, void *user)
{
    uint64_t now = rel_now(r);
    int64_t now_s = (int64_t)(now / 1000000000ull);
    finalize_old(r, now_s, false);
    if (!fn) return;
    lt_progress p = {0};
    p.elapsed_s = (double)now / 1e9;
    p.total_s = r->cfg->warmup_s + r->cfg->duration_s;
    p.warmup = now < r->warm_end_ns;
    for (uint32_t i = 0; i < nw; i++) {
        p.sent += atomic_load_explicit(&ws[i]->sent, memory_order_relaxed);
        p.completed += atomic_load_explicit(&ws[i]->completed, memory_order_relaxed);
        p.errors += atomic_load_explicit(&ws[i]->failed, memory_order_relaxed);
    }
    p.in_flight = (uint32_t)(p.sent - p.completed);
    pthread_mutex_lock(&r->mu);
    int64_t last = now_s - 2;
    if (last >= 0 && (size_t)last < r->cap_seconds) {
        p.last_rate = (double)r->seconds[last].completed;
        p.last_p99_ns = r->seconds[last].p99_ns;
    }
    pthread_mutex_unlock(&r->mu);
    fn(user, &p);
}

int lt_run(const lt_config *cfg, lt_result **out, rp_error *err)
{
    *out = NULL;
    int rc = check_config(cfg, err);
    if (rc) return rc;

    grpc_init();
    run r;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    pthread_mutex_init(&r.mu, NULL);
    for (int i = 0; i < RING; i++) r.ring[i].sec = -1;
    worker **ws = calloc(cfg->threads, sizeof *ws);
    lt_result *res = calloc(1, sizeof *res);
    uint32_t started = 0;
    double total_s = cfg->warmup_s + cfg->duration_s;
    /* The run, then at most two drain periods (late sends, then in-flight calls). */
    r.cap_seconds = (size_t)ceil(total_s) + 2 * (cfg->deadline_ms / 1000) + 8;
    r.seconds = calloc(r.cap_seconds, sizeof *r.seconds);
    r.nch = cfg->connections;
    r.ch = calloc(r.nch, sizeof *r.ch);
    if (!ws || !res || !r.seconds || !r.ch) {
        rc = rp_errorf(err, RP_ENOMEM, "loadtest: out of memory");
        goto done;
    }

    /* Channels with identical arguments would share one TCP connection; the local
     * subchannel pool gives each channel its own. */
    grpc_arg args[3];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[0].value.integer = 1;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[1].value.integer = -1;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_ENABLE_RETRIES;
    args[2].value.integer = 0;
    grpc_channel_args cargs = {3, args};
    grpc_channel_credentials *creds = rp_ops_channel_credentials(); /* TLS per rp/ops.h */
    for (uint32_t i = 0; i < r.nch; i++) r.ch[i] = grpc_channel_create(cfg->target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    if ((rc = connect_all(&r, err))) goto done;

    bool open = cfg->rate > 0;
    uint32_t per_pool = open ? (cfg->max_in_flight + cfg->threads - 1) / cfg->threads : 0;
    for (uint32_t i = 0; i < cfg->threads; i++) {
        worker *w = calloc(1, sizeof *w);
        if (!w) {
            rc = rp_errorf(err, RP_ENOMEM, "loadtest: out of memory for worker %u", i);
            goto done;
        }
        ws[i] = w;
        w->r = &r;
        w->id = i;
        pthread_mutex_init(&w->free_mu, NULL);
        w->closed_n = open ? 0 : cfg->concurrency / cfg->threads + (i < cfg->concurrency % cfg->threads);
        w->pool_size = open ? per_pool : w->closed_n;
        if (w->pool_size == 0) w->pool_size = 1;
        w->pool = calloc(w->pool_size, sizeof *w->pool);
        w->buf = malloc(LT_REQUEST_MAX);
        if (!w->pool || !w->buf) {
            rc = rp_errorf(err, RP_ENOMEM, "loadtest: out of memory for %u calls in flight",
                           w->pool_size);
            goto done;
        }
        for (uint32_t j = 0; j < w->pool_size; j++) {
            w->pool[j].w = w;
            w->pool[j].next_free = j + 1 < w->pool_size ? &w->pool[j + 1] : NULL;
        }
        w->free_list = &w->pool[0];
        w->cq = grpc_completion_queue_create_for_next(NULL);
        rp_hist_reset(&w->latency);
        rp_hist_reset(&w->cur_h);
        for (int k = 0; k < LT_RPC_COUNT; k++) rp_hist_reset(&w->by_rpc[k]);
        for (int k = 0; k < LT_NSTATUS; k++) rp_hist_reset(&w->by_status[k]);
        lt_rng_seed(&w->rng, cfg->seed * 1000003u + i);
        if (open) {
            /* Threads interleave: thread i starts i/rate later, each at rate/threads. */
            w->rate = cfg->rate / cfg->threads;
            lt_schedule_init(&w->sched, cfg->arrivals, w->rate, (double)i * 1e9 / cfg->rate,
                             cfg->seed * 7919u + i);
        }
    }

    r.warm_end_ns = (uint64_t)(cfg->warmup_s * 1e9);
    r.end_ns = (uint64_t)(total_s * 1e9);
    r.t0 = rp_now_ns();
    res->start_wall_s = (double)rp_wall_ns() / 1e9;
    for (; started < cfg->threads; started++) {
        if (pthread_create(&ws[started]->th, NULL, worker_main, ws[started])) {
            rc = rp_errorf(err, RP_EINTERNAL, "loadtest: cannot start worker thread %u", started);
            atomic_store(&r.abort, 1);
            break;
        }
    }
    /* Progress and the timeline, until every worker is done. */
    while (atomic_load(&r.done) < started) {
        struct timespec nap = {0, 250000000};
        nanosleep(&nap, NULL);
        progress_tick(&r, ws, started, cfg->progress, cfg->progress_user);
    }
    for (uint32_t i = 0; i < started; i++) pthread_join(ws[i]->th, NULL);
    res->elapsed_s = (double)rel_now(&r) / 1e9;
    finalize_old(&r, 0, true);
    if (rc) goto done;

    res->cfg = *cfg;
    res->open_loop = open;
    rp_hist_reset(&res->latency);
    for (int k = 0; k < LT_RPC_COUNT; k++) rp_hist_reset(&res->by_rpc[k]);
    for (int k = 0; k < LT_NSTATUS; k++) rp_hist_reset(&res->by_status[k]);
    for (uint32_t i = 0; i < cfg->threads; i++) {
        worker *w = ws[i];
        if (w->rc && !rc) {
            rc = w->rc;
            if (err) *err = w->err;
        }
        rp_hist_merge(&res->latency, &w->latency);
        for (int k = 0; k < LT_RPC_COUNT; k++) {
            rp_hist_merge(&res->by_rpc[k], &w->by_rpc[k]);
            res->calls_by_rpc[k] += w->calls_by_rpc[k];
        }
        for (int k = 0; k < LT_NSTATUS; k++) {
            res->status[k] += w->status[k];
            rp_hist_merge(&res->by_status[k], &w->by_status[k]);
        }
        res->measured += w->measured;
        res->ok += w->ok;
        res->errors += w->errors;
        res->unsent += w->unsent;
        res->late_sends += w->late_sends;
        if (w->max_send_lag > res->max_send_lag_ns) res->max_send_lag_ns = w->max_send_lag;
        res->sent += atomic_load(&w->sent);
        res->completed += atomic_load(&w->completed);
    }
    if (rc) goto done;
    /* Interrupted runs measured a shorter window than asked for. */
    double window = cfg->duration_s;
    if (cfg->stop && *cfg->stop) {
        res->interrupted = true;
        uint64_t last = 0;
        for (uint32_t i = 0; i < cfg->threads; i++)
            if (ws[i]->stop_sending_at > last) last = ws[i]->stop_sending_at;
        double w = ((double)last - (double)r.warm_end_ns) / 1e9;
        if (w < window) window = w > 0.001 ? w : 0.001;
    }
    res->window_s = window;
    res->max_in_flight_seen = atomic_load(&r.max_in_flight);
    res->achieved_rate = (double)res->measured / window;
    size_t n = r.cap_seconds;
    while (n > 0 && r.seconds[n - 1].completed == 0) n--;
    for (size_t s = 0; s < n; s++) r.seconds[s].warmup = (double)s < cfg->warmup_s;
    res->seconds = r.seconds;
    res->nseconds = n;
    r.seconds = NULL;
    *out = res;
    res = NULL;

done:
    if (ws) {
        for (uint32_t i = 0; i < cfg->threads; i++) free_worker(ws[i]);
        free(ws);
    }
    if (r.ch) {
        for (uint32_t i = 0; i < r.nch; i++)
            if (r.ch[i]) grpc_channel_destroy(r.ch[i]);
        free(r.ch);
    }
    free(r.seconds);
    free(res);
    pthread_mutex_destroy(&r.mu);
    grpc_shutdown();
    return rc;
}

void lt_result_free(lt_result *r)
{
    if (!r) return;
    free(r->seconds);
    free(r);
}
