/*
 * rpc_server.c — the unary server over the gRPC C core.
 *
 * Admission: every registered method has SLOTS_PER_METHOD requested calls posted, plus
 * GENERIC_SLOTS generic ones that answer UNIMPLEMENTED (without them a call to an
 * unknown method waits for its deadline). Slots are filled on their own completion
 * queue, driven by one admission thread that never runs a handler: it notes the arrival
 * time, posts a fresh slot, answers health checks and unknown methods itself, applies
 * the in-flight cap, and appends the call to the server's queue, then starts an empty
 * batch (a token) whose completion lands on the workers' completion queue. So no call
 * waits unseen inside gRPC, and the time each call waits for a worker is known.
 *
 * N worker threads drive that one shared completion queue, so that a call never waits
 * behind a slow handler while another worker is idle. A token lets a worker take one
 * call from the queue: the oldest, unless queue-time shedding is on (rpc_queue.h).
 * It sheds a call that waited too long (so does the admission thread, for the oldest
 * calls, whenever one arrives), else runs the handler in its thread's arena and answers
 * with one batch; the call struct goes back to the server's spare list when that batch
 * completes.
 */
#include "rpc_internal.h"

#include "grpc/health/v1/health.pb-c.h"
#include "recpipe/v1/admin.pb-c.h"
#include "rp/clock.h"
#include "rp/log.h"
#include "rp/mainq.h"
#include "rp/ops.h"
#include "rp/threads.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Requested calls per method. Calls beyond them wait inside gRPC until a worker re-posts
 * a slot; calls matched to a slot are answered even during a drain, calls still waiting
 * when the server stops get UNAVAILABLE (safe to retry elsewhere). */
#define SLOTS_PER_METHOD 64
#define GENERIC_SLOTS 8
#define SPARE_MAX 1024 /* call structs kept for reuse */
/* Free heap pages go back to the kernel this often. M_TRIM_THRESHOLD (below) keeps
 * 4 MiB free per heap for speed, and each thread's arena fragments on its own; without
 * a trim, RSS creeps up over hours of bundle swaps and cache churn while the memory in
 * use stays flat (bench/soak). malloc_trim(0) releases the free pages of every arena. */
#define HEAP_TRIM_S 10

static const char *const health_check_path = "/grpc.health.v1.Health/Check";
static const char *const health_watch_path = "/grpc.health.v1.Health/Watch";

/* ------------------------------------------------------------------ call slots */

static void on_arrived(rp__tag *t, bool ok);
static void on_token(rp__tag *t, bool ok);
static void on_done(rp__tag *t, bool ok);

static rp_call *call_get(rp_server *s)
{
    pthread_mutex_lock(&s->spare_mu);
    rp_call *c = s->spare;
    if (c) {
        s->spare = c->next_free;
        s->nspare--;
    }
    if (s->nspare < s->spare_low) s->spare_low = s->nspare;
    pthread_mutex_unlock(&s->spare_mu);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) return NULL;
        c->arrived.cb = on_arrived;
        c->done.cb = on_done;
        c->srv = s;
    }
    c->next_free = NULL;
    c->call = NULL;
    c->payload = NULL;
    c->resp_bb = NULL;
    c->peer[0] = '\0';
    c->status = RP_GRPC_OK;
    c->cancelled = 0;
    c->no_message = false;
    c->request_id[0] = '\0';
    c->id_from_caller = false;
    c->status_details = grpc_empty_slice();
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    return c;
}

static void call_free(rp_call *c)
{
    rp_arena_destroy(c->arena);
    free(c);
}

/* Releases what the call holds and keeps the struct (and its arena) for reuse, up to
 * SPARE_MAX of them. */
static void call_put(rp_call *c)
{
    if (c->call) grpc_call_unref(c->call);
    c->call = NULL;
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
    if (c->resp_bb) grpc_byte_buffer_destroy(c->resp_bb);
    c->resp_bb = NULL;
    grpc_slice_unref(c->status_details);
    c->status_details = grpc_empty_slice();
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->arena) rp_arena_reset(c->arena);
    rp_server *s = c->srv;
    pthread_mutex_lock(&s->spare_mu);
    bool keep = s->nspare < SPARE_MAX;
    if (keep) {
        c->next_free = s->spare;
        s->spare = c;
        s->nspare++;
    }
    pthread_mutex_unlock(&s->spare_mu);
    if (!keep) call_free(c);
}

/* Posts one slot for method m (NULL = generic). */
static int post_slot(rp_server *s, const rp__method *m)
{
    rp_call *c = call_get(s);
    if (!c) return RP_ENOMEM;
    c->method = m;
    grpc_call_error e;
    if (m) {
        e = grpc_server_request_registered_call(s->server, m->handle, &c->call, &c->deadline,
                                                &c->md, &c->payload, s->cq, s->acq, &c->arrived);
    } else {
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->acq,
                                     &c->arrived);
    }
    if (e != GRPC_CALL_OK) {
        call_put(c);
        return RP_EIO;
    }
    atomic_fetch_add(&s->slots_outstanding, 1);
    return RP_OK;
}

/* ------------------------------------------------------------------ call arenas */

/* The arena a call's handler allocates from belongs to the thread that runs it (a
 * worker; the admission thread for health checks; a stopping thread that drains the
 * queue), not to the call: it is lent for the handler and the packing of its answer,
 * which copies out, and reset when the handler is done. So a queued call or an answer
 * being sent holds no arena. (Each call struct used to keep its own, from the handler
 * until its answer was sent and then in the spare list: a gateway with 1,300 calls
 * queued held 1,300 first blocks of 16 KiB plus the extra blocks of those being
 * answered, 63 MB at the peak of heaptrack's run.) Destroyed when the thread ends. */
static pthread_key_t arena_key;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;
static bool arena_key_ok;
static _Thread_local int in_handler; /* the thread's arena is lent to a running call */

static void arena_key_free(void *a)
{
    rp_arena_destroy(a);
}

static void arena_key_init(void)
{
    arena_key_ok = pthread_key_create(&arena_key, arena_key_free) == 0;
    if (!arena_key_ok) rp_errlog("rpc", "pthread_key_create failed: calls cannot get an arena");
}

static rp_arena *thread_arena(void)
{
    pthread_once(&arena_once, arena_key_init);
    if (!arena_key_ok) return NULL;
    rp_arena *a = pthread_getspecific(arena_key);
    if (a) return a;
    if (rp_arena_create(0, &a) != RP_OK) return NULL;
    if (pthread_setspecific(arena_key, a) != 0) {
        rp_arena_destroy(a);
        return NULL;
    }
    return a;
}

/* For a thread that ran handlers and does not end now (the one that stopped a server),
 * unless a handler of its own is running (one that stops another server). */
static void thread_arena_release(void)
{
    pthread_once(&arena_once, arena_key_init);
    if (!arena_key_ok || in_handler) return;
    rp_arena *a = pthread_getspecific(arena_key);
    if (!a) return;
    pthread_setspecific(arena_key, NULL);
    rp_arena_destroy(a);
}

/* ------------------------------------------------------------------ answering */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static bool sane_request_id(const char *p, size_t n)
{
    if (n == 0 || n >= 40) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.' || ch == ':'))
            return false;
    }
    return true;
}

static void set_request_id(rp_call *c)
{
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_slice *k = &c->md.metadata[i].key;
        if (GRPC_SLICE_LENGTH(*k) == 12 && !memcmp(GRPC_SLICE_START_PTR(*k), "x-request-id", 12)) {
            const grpc_slice *v = &c->md.metadata[i].value;
            size_t n = GRPC_SLICE_LENGTH(*v);
            if (sane_request_id((const char *)GRPC_SLICE_START_PTR(*v), n)) {
                memcpy(c->request_id, GRPC_SLICE_START_PTR(*v), n);
                c->request_id[n] = '\0';
                c->id_from_caller = true;
                return;
            }
        }
    }
    static _Thread_local uint64_t state;
    if (!state) state = rp_now_ns() ^ ((uint64_t)(uintptr_t)&state << 16);
    snprintf(c->request_id, sizeof c->request_id, "%016" PRIx64, splitmix64(&state));
}

static void set_deadline(rp_call *c)
{
    gpr_timespec d = c->deadline;
    if (d.tv_sec == INT64_MAX || d.clock_type == GPR_TIMESPAN) {
        c->deadline_ns = UINT64_MAX;
        return;
    }
    gpr_timespec left = gpr_time_sub(d, gpr_now(d.clock_type));
    int64_t left_ns = (int64_t)left.tv_sec * 1000000000 + left.tv_nsec;
    uint64_t t = rp_now_ns();
    if (left_ns >= 0) c->deadline_ns = t + (uint64_t)left_ns;
    else c->deadline_ns = (uint64_t)-left_ns < t ? t - (uint64_t)-left_ns : 0;
}

static void access_log(rp_call *c, const char *method)
{
    if (rp_log_get_level() > RP_LOG_INFO) return;
    double ms = (double)(rp_now_ns() - c->t_start_ns) / 1e6;
    char fields[768];
    size_t n = 0;
    n += (size_t)snprintf(fields + n, sizeof fields - n, "\"method\":\"");
    rp_json_escape(fields, sizeof fields, &n, method);
    n += (size_t)snprintf(fields + n, sizeof fields - n,
                          "\",\"status\":\"%s\",\"code\":%d,\"latency_ms\":%.3f,"
                          "\"queue_ms\":%.3f,\"peer\":\"",
                          rp_grpc_status_name(c->status), c->status, ms,
                          (double)rp_call_queued_ns(c) / 1e6);
    if (n < sizeof fields) rp_json_escape(fields, sizeof fields, &n, rp_call_peer(c));
    if (c->status != RP_GRPC_OK && n + 12 < sizeof fields) {
        /* What the caller was told, so that a failure can be explained from the log. */
        char msg[320];
        size_t ml = GRPC_SLICE_LENGTH(c->status_details);
        if (ml >= sizeof msg) ml = sizeof msg - 1;
        memcpy(msg, GRPC_SLICE_START_PTR(c->status_details), ml);
        msg[ml] = '\0';
        n += (size_t)snprintf(fields + n, sizeof fields - n, "\",\"error\":\"");
        if (n < sizeof fields) rp_json_escape(fields, sizeof fields, &n, msg);
    }
    if (n + 2 < sizeof fields) {
        fields[n++] = '"';
        fields[n] = '\0';
    }
    rp_log_set_request_id(c->request_id);
    rp_logx(RP_LOG_INFO, "rpc", fields, "call");
    rp_log_set_request_id(NULL);
}

/* Sends the answer in one batch: headers, the message (when c->resp_bb), the status,
 * and waits for the close so that the batch completes when the call is over. */
static void answer(rp_call *c, int status, const char *details)
{
    /* The batch may complete (and c be reused) on another thread before this returns;
     * the arena stays with the thread that lent it. */
    c->arena = NULL;
    c->status = status;
    if (details && *details) {
        grpc_slice_unref(c->status_details);
        c->status_details = grpc_slice_from_copied_string(details);
    }
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->id_from_caller) {
        c->resp_md[0].key = grpc_slice_from_static_string("x-request-id");
        c->resp_md[0].value = grpc_slice_from_static_string(c->request_id);
        ops[n].data.send_initial_metadata.count = 1;
        ops[n].data.send_initial_metadata.metadata = c->resp_md;
    }
    n++;
    if (c->resp_bb && status == RP_GRPC_OK) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->resp_bb;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)status;
    ops[n].data.send_status_from_server.status_details = &c->status_details;
    n++;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
    n++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->done, NULL);
    if (e != GRPC_CALL_OK) {
        /* Only a programming error gets here; the call cannot be answered. */
        rp_errlog("rpc", "answering %s failed: grpc_call_start_batch error %d",
                  c->method ? c->method->m.path : "(unknown)", (int)e);
        on_done(&c->done, false);
    }
}

/* recpipe_rpc_calls_total{service,method,code} and recpipe_rpc_duration_seconds. */
static void record_call(rp_server *s, rp__method *m, int status, double seconds)
{
    if (status < 0 || status > 16) status = RP_GRPC_UNKNOWN;
    rp_series *calls = atomic_load_explicit(&m->calls[status], memory_order_acquire);
    if (!calls) {
        rp_metric *f = rp_metric_family(RP_METRIC_COUNTER, "recpipe_rpc_calls_total",
                                        "Calls answered, by method and gRPC status.",
                                        "service,method,code", NULL, 0);
        calls = rp_metric_series3(f, s->service, m->m.path, rp_grpc_status_name(status));
        atomic_store_explicit(&m->calls[status], calls, memory_order_release);
    }
    rp_counter_inc(calls);
    rp_histogram_observe(m->duration, seconds);
    if (status == RP_GRPC_OK && !strcmp(m->m.path, "/recpipe.v1.Admin/Reload")) {
        uint64_t bits;
        memcpy(&bits, &seconds, sizeof bits);
        atomic_store(&s->reload_duration_bits, bits);
        atomic_store(&s->bundle_loaded_wall_ns, rp_wall_ns());
    }
}

static void on_done(rp__tag *t, bool ok)
{
    rp_call *c = RP__CONTAINER(t, rp_call, done);
    rp_server *s = c->srv;
    (void)ok;
    /* A call with no message whose close says cancelled did not come from a client that
     * sent none: its client went away (gave up, or its deadline passed) before the
     * message arrived, and gRPC core hands such a call over with no payload. */
    if (c->cancelled && (c->status == RP_GRPC_OK || c->no_message)) c->status = RP_GRPC_CANCELLED;
    record_call(s, c->method ? (rp__method *)c->method : &s->unknown_m, c->status,
                (double)(rp_now_ns() - c->t_start_ns) / 1e9);
    atomic_fetch_add(&s->calls_total, 1);
    if (c->status != RP_GRPC_OK) atomic_fetch_add(&s->calls_failed, 1);
    if (c->method) {
        access_log(c, c->method->m.path);
    } else {
        char path[256];
        size_t n = GRPC_SLICE_LENGTH(c->details.method);
        snprintf(path, sizeof path, "%.*s", (int)(n < sizeof path ? n : sizeof path - 1),
                 (const char *)GRPC_SLICE_START_PTR(c->details.method));
        access_log(c, path);
    }
    atomic_fetch_sub(&s->in_flight, 1);
    rp_gauge_add(s->m_in_flight, -1);
    call_put(c);
}

/* Runs the handler of a registered unary method in c->arena and answers (every path
 * ends in answer(), which takes the arena back from c, or hands the call to a stream). */
static void serve_in_arena(rp_call *c)
{
    rp_server *s = c->srv;
    const rp__method *m = c->method;
    rp_error err = {0};
    char msg[600];
    grpc_slice raw = grpc_empty_slice();

    rp_arena_pb_allocator(c->arena, &c->alloc);
    if (m->admin && s->admin_token) {
        int arc = rp_check_bearer(rp_call_metadata(c, "authorization"), s->admin_token, m->m.path,
                                  &err);
        if (arc != RP_OK) {
            rp_warn("rpc", "%s refused: %s (peer %s)", m->m.path, err.msg, rp_call_peer(c));
            answer(c, rp_err_grpc_status(arc), err.msg);
            return;
        }
    }
    if (!c->payload) {
        snprintf(msg, sizeof msg, "%s: the request carries no message", m->m.path);
        c->no_message = true;
        answer(c, RP_GRPC_INVALID_ARGUMENT, msg);
        return;
    }
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, c->payload)) {
        snprintf(msg, sizeof msg, "%s: the request could not be decompressed", m->m.path);
        answer(c, RP_GRPC_INVALID_ARGUMENT, msg);
        return;
    }
    raw = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCMessage *req = protobuf_c_message_unpack(m->m.request, &c->alloc,
                                                      GRPC_SLICE_LENGTH(raw),
                                                      GRPC_SLICE_START_PTR(raw));
    grpc_slice_unref(raw);
    if (!req) {
        snprintf(msg, sizeof msg, "%s: the request is not a valid %s message", m->m.path,
                 m->m.request->name);
        answer(c, RP_GRPC_INVALID_ARGUMENT, msg);
        return;
    }
    if (m->kind == RP__WATCH) {
        /* The stream takes the grpc_call over; this slot is finished without a status. */
        rp__health_watch_start(c, req);
        atomic_fetch_sub(&s->in_flight, 1);
        rp_gauge_add(s->m_in_flight, -1);
        c->call = NULL;
        c->arena = NULL;
        call_put(c);
        return;
    }

    ProtobufCMessage *resp = NULL;
    rp_log_set_request_id(c->request_id);
    int rc = m->m.handler(c, req, &resp, &err);
    rp_log_set_request_id(NULL);
    if (rc != RP_OK) {
        const char *text = err.msg[0] ? err.msg : rp_strerror(rc);
        answer(c, rp_err_grpc_status(rc), text);
        return;
    }
    if (!resp || resp->descriptor != m->m.response) {
        snprintf(msg, sizeof msg, "%s: the handler returned %s instead of a %s", m->m.path,
                 resp ? resp->descriptor->name : "no message", m->m.response->name);
        rp_errlog("rpc", "%s", msg);
        answer(c, RP_GRPC_INTERNAL, msg);
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(resp);
    grpc_slice out = grpc_slice_malloc(len);
    protobuf_c_message_pack(resp, GRPC_SLICE_START_PTR(out));
    c->resp_bb = grpc_raw_byte_buffer_create(&out, 1);
    grpc_slice_unref(out);
    answer(c, RP_GRPC_OK, NULL);
}

/* Runs the handler of a registered unary method and answers. */
static void serve_unary(rp_call *c)
{
    c->t_run_ns = rp_now_ns();
    /* A call run inside another's handler (which stopped a server whose queue it then
     * drained) gets an arena of its own: the thread's is lent already. */
    rp_arena *own = NULL;
    rp_arena *a = in_handler ? (rp_arena_create(0, &own) == RP_OK ? own : NULL) : thread_arena();
    if (!a) {
        answer(c, RP_GRPC_RESOURCE_EXHAUSTED, "out of memory for the call's arena");
        return;
    }
    c->arena = a;
    in_handler++;
    serve_in_arena(c);
    in_handler--;
    if (own) rp_arena_destroy(own);
    else rp_arena_reset(a);
}

static void serve_unknown(rp_call *c)
{
    char msg[600];
    char path[400];
    size_t n = GRPC_SLICE_LENGTH(c->details.method);
    if (n >= sizeof path) n = sizeof path - 1;
    memcpy(path, GRPC_SLICE_START_PTR(c->details.method), n);
    path[n] = '\0';
    snprintf(msg, sizeof msg, "unknown method %s", path);
    answer(c, RP_GRPC_UNIMPLEMENTED, msg);
}

/* ------------------------------------------------------------------ the queue */

/* Answers a call the queue's policy shed (tk: its wait and the limit). */
static void shed(rp_server *s, rp_call *c, const rp__qtake *tk)
{
    char msg[200];
    snprintf(msg, sizeof msg, "overloaded: the call waited %.1f ms for a worker (limit %.1f ms)",
             (double)tk->waited_ns / 1e6, (double)tk->limit_ns / 1e6);
    rp_counter_inc(s->m_shed_queue);
    answer(c, RP_GRPC_RESOURCE_EXHAUSTED, msg);
}

/* Calls the admission thread sheds at most per arrival (the workers shed the rest). */
#define EXPIRE_MAX 32

/* On the admission thread: sheds the calls that waited past the limit (when every
 * worker is busy they would otherwise wait for a turn only to be shed), appends c
 * (policy: rpc_queue.h) and starts its token. A token whose call was shed here finds
 * another call or none. */
static void queue_push(rp_server *s, rp_call *c)
{
    rp_call *expired[EXPIRE_MAX];
    rp__qtake tk[EXPIRE_MAX];
    size_t nexp = 0;
    c->qnode.arrived_ns = c->t_start_ns;
    /* An operator's Reload must get through an overload: admin calls are never shed. */
    c->qnode.exempt = c->method->admin;
    /* Once c is queued a worker holding an earlier token may take it and finish it
     * (c may then be reused): keep the grpc_call alive for the token's batch. */
    grpc_call *gc = c->call;
    grpc_call_ref(gc);
    rp__queue *q = c->method->io ? &s->io_queue : &s->queue;
    pthread_mutex_lock(&s->qmu);
    for (rp__qnode *n; nexp < EXPIRE_MAX && (n = rp__queue_expire(q, c->t_start_ns, &tk[nexp]));)
        expired[nexp++] = RP__CONTAINER(n, rp_call, qnode);
    rp__queue_push(q, &c->qnode, c->t_start_ns);
    pthread_mutex_unlock(&s->qmu);
    for (size_t i = 0; i < nexp; i++) shed(s, expired[i], &tk[i]);
    grpc_call_error e = grpc_call_start_batch(gc, NULL, 0, &s->token, NULL);
    grpc_call_unref(gc);
    if (e != GRPC_CALL_OK) {
        /* One call too many is queued now (whichever: they are alike to the tokens). */
        pthread_mutex_lock(&s->qmu);
        rp__qnode *n = rp__queue_pop_tail(q);
        pthread_mutex_unlock(&s->qmu);
        if (n) answer(RP__CONTAINER(n, rp_call, qnode), RP_GRPC_INTERNAL,
                      "the call could not be queued to a worker");
    }
}

/* On the admission thread: never blocks, never runs a service handler. */
static void on_arrived(rp__tag *t, bool ok)
{
    rp_call *c = RP__CONTAINER(t, rp_call, arrived);
    rp_server *s = c->srv;
    atomic_fetch_sub(&s->slots_outstanding, 1);
    if (!ok) {
        /* The server is shutting down: this slot will never be filled. */
        call_put(c);
        return;
    }
    c->t_start_ns = rp_now_ns();
    c->t_run_ns = 0;
    unsigned now_in = atomic_fetch_add(&s->in_flight, 1) + 1;
    rp_gauge_add(s->m_in_flight, 1);
    if (!atomic_load(&s->stopping) && post_slot(s, c->method) != RP_OK && !atomic_load(&s->stopping))
        rp_errlog("rpc", "could not post a new call slot for %s",
                  c->method ? c->method->m.path : "unknown methods");
    set_request_id(c);
    if (!c->method) {
        c->deadline_ns = UINT64_MAX;
        serve_unknown(c);
        return;
    }
    set_deadline(c);
    if (c->method->exempt) {
        /* Health checks are answered here, ahead of any queue: a busy server is alive. */
        serve_unary(c);
        return;
    }
    if ((int64_t)now_in > s->max_in_flight) {
        /* Shed load rather than queue without bound: the caller may retry elsewhere. */
        char msg[200];
        snprintf(msg, sizeof msg, "overloaded: %u calls in flight (limit %" PRId64 ")", now_in,
                 s->max_in_flight);
        rp_counter_inc(s->m_rejected);
        answer(c, RP_GRPC_RESOURCE_EXHAUSTED, msg);
        return;
    }
    queue_push(s, c);
}

/* Under qmu: the call whose turn it is, of whichever queue's head came first (the I/O
 * lane's only while fewer than io_max of its calls run; with lane_only, the lane's
 * only). *io says which. */
static rp__qnode *take_next(rp_server *s, uint64_t now_ns, bool lane_only, rp__qtake *tk,
                            bool *io)
{
    bool io_ok = s->io_queue.len > 0 && s->io_running < s->io_max;
    bool main_ok = !lane_only && s->queue.len > 0;
    if (!io_ok && !main_ok) return NULL;
    *io = io_ok && (!main_ok || s->io_queue.head->arrived_ns <= s->queue.head->arrived_ns);
    rp__qnode *n = rp__queue_take(*io ? &s->io_queue : &s->queue, now_ns, tk);
    if (n && *io && !tk->shed) s->io_running++;
    return n;
}

/* On a worker: the completion of one token; each queued call started one. It runs the
 * call whose turn it is, then goes back to the completion queue (where the answers'
 * completions wait: they end the calls in flight). Tokens and calls need not pair up: a
 * call of the I/O lane may wait while io_max of its kind run (its token then finds
 * nothing to do), so a worker that ends a lane call runs the next waiting lane call,
 * if any, before it goes back; a token whose call was shed on the arrival of a later
 * one, or run that way, finds another call or none. */
static void on_token(rp__tag *t, bool ok)
{
    rp_server *s = RP__CONTAINER(t, rp_server, token);
    (void)ok; /* an empty batch always completes */
    bool lane_only = false;
    for (;;) {
        rp__qtake tk;
        bool io = false;
        pthread_mutex_lock(&s->qmu);
        rp__qnode *n = take_next(s, rp_now_ns(), lane_only, &tk, &io);
        pthread_mutex_unlock(&s->qmu);
        if (!n) return;
        rp_call *c = RP__CONTAINER(n, rp_call, qnode);
        if (tk.shed) {
            shed(s, c, &tk);
            if (lane_only) continue;
            return;
        }
        if (c->deadline_ns <= rp_now_ns()) {
            /* It waited for a worker past its deadline: the caller has given up already. */
            char msg[600];
            snprintf(msg, sizeof msg, "%s: the deadline passed before a worker was free",
                     c->method->m.path);
            answer(c, RP_GRPC_DEADLINE_EXCEEDED, msg);
        } else {
            serve_unary(c);
        }
        if (!io) return;
        pthread_mutex_lock(&s->qmu);
        s->io_running--;
        pthread_mutex_unlock(&s->qmu);
        lane_only = true;
    }
}

/* The heap trimmer. */
static void *trim_main(void *arg)
{
    rp_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->trim_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += HEAP_TRIM_S;
        int w = 0;
        while (!s->trim_stop && w != ETIMEDOUT) w = pthread_cond_timedwait(&s->trim_cv, &s->mu, &until);
        if (s->trim_stop) break;
        pthread_mutex_unlock(&s->mu);
        uint64_t t0 = rp_now_ns();
        /* Call structs that stayed in the spare list through a whole pass were not
         * needed: free them. A burst (calls queued behind a bundle swap) leaves up to
         * SPARE_MAX of them (each carried its arena's first 16 KiB block until arenas
         * became the threads': ~6 MiB of heap in use after the first swap under 1000
         * calls/s, kept for good (bench/soak)). The oldest (the tail of the LIFO list)
         * go; the structs in use are untouched. */
        rp_call *drop = NULL;
        pthread_mutex_lock(&s->spare_mu);
        size_t keep = s->nspare - s->spare_low;
        rp_call **pp = &s->spare;
        for (size_t i = 0; i < keep && *pp; i++) pp = &(*pp)->next_free;
        drop = *pp;
        *pp = NULL;
        s->nspare = keep;
        s->spare_low = keep;
        pthread_mutex_unlock(&s->spare_mu);
        size_t ndrop = 0;
        while (drop) {
            rp_call *c = drop;
            drop = c->next_free;
            call_free(c);
            ndrop++;
        }
        malloc_trim(0);
        rp_debug("rpc", "heap trim took %.2f ms (%zu spare calls freed)",
                 (double)(rp_now_ns() - t0) / 1e6, ndrop);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* The admission thread. */
static void *admit_main(void *arg)
{
    rp_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->acq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        rp__tag *t = ev.tag;
        t->cb(t, ev.success != 0);
    }
    return NULL;
}

/* ------------------------------------------------------------------ workers */

static void *worker_main(void *arg)
{
    rp__worker *w = arg;
    /* Linux gives each thread its own nice value; raising it needs no privilege. */
    if (w->srv->worker_nice > 0 &&
        setpriority(PRIO_PROCESS, (id_t)gettid(), getpriority(PRIO_PROCESS, 0) + w->srv->worker_nice) != 0)
        rp_warn("rpc", "worker %d: setpriority(+%d): %s; it runs at the process's priority",
                w->index, w->srv->worker_nice, strerror(errno));
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(w->srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                   NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        rp__tag *t = ev.tag;
        t->cb(t, ev.success != 0);
    }
    return NULL;
}

static void on_shutdown(rp__tag *t, bool ok)
{
    rp_server *s = RP__CONTAINER(t, rp_server, shutdown_tag);
    (void)ok;
    pthread_mutex_lock(&s->mu);
    s->shutdown_done = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------------ lifecycle */

static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

static bool has_path(const rp_method *methods, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(methods[i].path, path)) return true;
    return false;
}

/* The service's table, then each built-in the table does not override. */
static int build_methods(rp_server *s, const rp_method *methods, size_t n,
                         const char *const *extra_admin, const char *const *io_methods,
                         rp_error *err)
{
    const rp_method builtins[] = {
        {health_check_path, &grpc__health__v1__health_check_request__descriptor,
         &grpc__health__v1__health_check_response__descriptor, rp__health_check, NULL},
        {health_watch_path, &grpc__health__v1__health_check_request__descriptor,
         &grpc__health__v1__health_check_response__descriptor, NULL, NULL},
        {"/recpipe.v1.Admin/Status", &recpipe__v1__status_request__descriptor,
         &recpipe__v1__status_response__descriptor, rp__admin_status, NULL},
        {"/recpipe.v1.Admin/Reload", &recpipe__v1__reload_request__descriptor,
         &recpipe__v1__reload_response__descriptor, rp__admin_unimplemented, NULL},
        {"/recpipe.v1.Admin/UpsertItems", &recpipe__v1__upsert_items_request__descriptor,
         &recpipe__v1__upsert_items_response__descriptor, rp__admin_unimplemented, NULL},
        {"/recpipe.v1.Admin/DeleteItems", &recpipe__v1__delete_items_request__descriptor,
         &recpipe__v1__delete_items_response__descriptor, rp__admin_unimplemented, NULL},
    };
    size_t nb = sizeof builtins / sizeof builtins[0];
    s->methods = calloc(n + nb, sizeof *s->methods);
    if (!s->methods) return rp_errorf(err, RP_ENOMEM, "out of memory for the method table");
    for (size_t i = 0; i < n; i++) {
        const rp_method *m = &methods[i];
        if (!m->path || m->path[0] != '/' || !strchr(m->path + 1, '/'))
            return rp_errorf(err, RP_EINVAL, "method table row %zu: path '%s' is not "
                             "\"/package.Service/Method\"", i, m->path ? m->path : "(null)");
        if (!m->request || !m->response || !m->handler)
            return rp_errorf(err, RP_EINVAL, "method table row %zu (%s): request, response and "
                             "handler are required", i, m->path);
        if (has_path(methods, i, m->path))
            return rp_errorf(err, RP_EINVAL, "method table row %zu: %s is listed twice", i,
                             m->path);
        if (!strcmp(m->path, health_watch_path))
            return rp_errorf(err, RP_EINVAL, "method table row %zu: %s is built in", i, m->path);
        s->methods[s->nmethods++].m = *m;
    }
    for (size_t i = 0; i < nb; i++) {
        if (has_path(methods, n, builtins[i].path)) continue;
        rp__method *bm = &s->methods[s->nmethods++];
        bm->m = builtins[i];
        bm->kind = !strcmp(builtins[i].path, health_watch_path) ? RP__WATCH : RP__UNARY;
    }
    static const char *const admin_paths[] = {
        "/recpipe.v1.Admin/Reload", "/recpipe.v1.Admin/UpsertItems",
        "/recpipe.v1.Admin/DeleteItems", "/recpipe.v1.Recommender/ForgetUser"};
    rp_metric *dur = rp_metric_family(RP_METRIC_HISTOGRAM, "recpipe_rpc_duration_seconds",
                                      "Time from a call's arrival to its answer, by method.",
                                      "service,method", NULL, 0);
    for (size_t i = 0; i < s->nmethods; i++) {
        rp__method *m = &s->methods[i];
        for (size_t k = 0; extra_admin && extra_admin[k]; k++)
            if (!strcmp(m->m.path, extra_admin[k])) m->admin = true;
        for (size_t k = 0; io_methods && io_methods[k]; k++)
            if (!strcmp(m->m.path, io_methods[k])) m->io = true;
        for (size_t k = 0; k < sizeof admin_paths / sizeof admin_paths[0]; k++)
            if (!strcmp(m->m.path, admin_paths[k])) m->admin = true;
        m->exempt = !strcmp(m->m.path, health_check_path) || !strcmp(m->m.path, health_watch_path);
        if (m->kind == RP__UNARY) m->duration = rp_metric_series2(dur, s->service, m->m.path);
    }
    s->unknown_m.m.path = "unknown";
    s->unknown_m.duration = rp_metric_series2(dur, s->service, "unknown");
    return RP_OK;
}

/* Before each scrape: the Admin.Status fields as gauges and counters. */
static void metrics_hook(void *user)
{
    rp_server *s = user;
    static rp_metric *info, *items, *index_bytes, *serving, *hits, *misses, *feedback, *reloads, *uptime,
        *loaded_at, *reload_s;
    if (!info) {
        info = rp_metric_family(RP_METRIC_GAUGE, "recpipe_bundle_info",
                                "The bundle being served (value 1, version in a label).",
                                "service,version", NULL, 0);
        items = rp_metric_family(RP_METRIC_GAUGE, "recpipe_bundle_items",
                                 "Items in the served bundle (or index shard).", "service", NULL, 0);
        index_bytes = rp_metric_family(RP_METRIC_GAUGE, "recpipe_index_bytes",
                                       "Bytes the served ANN index holds in memory.", "service",
                                       NULL, 0);
        serving = rp_metric_family(RP_METRIC_GAUGE, "recpipe_serving",
                                   "1 when Health reports SERVING.", "service", NULL, 0);
        hits = rp_metric_family(RP_METRIC_COUNTER, "recpipe_cache_hits_total",
                                "Answers served from the gateway cache.", "service", NULL, 0);
        misses = rp_metric_family(RP_METRIC_COUNTER, "recpipe_cache_misses_total",
                                  "Gateway cache lookups that missed.", "service", NULL, 0);
        feedback = rp_metric_family(RP_METRIC_COUNTER, "recpipe_feedback_events_total",
                                    "Feedback events stored since the start.", "service", NULL, 0);
        reloads = rp_metric_family(RP_METRIC_COUNTER, "recpipe_bundle_reloads_total",
                                   "Bundle reloads since the start.", "service", NULL, 0);
        uptime = rp_metric_family(RP_METRIC_GAUGE, "recpipe_uptime_seconds",
                                  "Seconds since the server started.", "service", NULL, 0);
        loaded_at = rp_metric_family(RP_METRIC_GAUGE, "recpipe_bundle_loaded_timestamp_seconds",
                                     "When the served bundle was loaded (Unix time; a swap by "
                                     "SIGHUP is seen at the next scrape).", "service", NULL, 0);
        reload_s = rp_metric_family(RP_METRIC_GAUGE, "recpipe_bundle_reload_duration_seconds",
                                    "Duration of the last successful Admin.Reload (open, "
                                    "verify, warm, swap).", "service", NULL, 0);
    }
    Recpipe__V1__StatusResponse r;
    recpipe__v1__status_response__init(&r);
    rp_arena *a = NULL;
    if (s->status_hook && rp_arena_create(0, &a) == RP_OK) s->status_hook(s->status_user, &r, a);
    rp_metric_hide_where(info, s->service);
    if (r.bundle_version && r.bundle_version[0]) {
        rp_gauge_set(rp_metric_series2(info, s->service, r.bundle_version), 1);
        if (strcmp(s->last_version, r.bundle_version)) {
            /* An Admin.Reload records its own time. Otherwise: first sight = loaded
             * before the server started; a change = a SIGHUP swap since the last scrape. */
            int64_t prev = atomic_load(&s->bundle_loaded_wall_ns);
            if (!s->last_version[0] && prev == 0)
                atomic_store(&s->bundle_loaded_wall_ns,
                             rp_wall_ns() - (int64_t)(rp_now_ns() - s->start_ns));
            else if (s->last_version[0] && prev < s->last_scrape_wall_ns)
                atomic_store(&s->bundle_loaded_wall_ns, rp_wall_ns());
            snprintf(s->last_version, sizeof s->last_version, "%s", r.bundle_version);
        }
        rp_gauge_set(rp_metric_series1(loaded_at, s->service),
                     (double)atomic_load(&s->bundle_loaded_wall_ns) / 1e9);
        uint64_t bits = atomic_load(&s->reload_duration_bits);
        double d;
        memcpy(&d, &bits, sizeof d);
        if (bits) rp_gauge_set(rp_metric_series1(reload_s, s->service), d);
    }
    s->last_scrape_wall_ns = rp_wall_ns();
    rp_gauge_set(rp_metric_series1(serving, s->service), rp_server_serving(s) ? 1 : 0);
    rp_gauge_set(rp_metric_series1(uptime, s->service), (double)(rp_now_ns() - s->start_ns) / 1e9);
    if (s->status_hook) {
        rp_gauge_set(rp_metric_series1(items, s->service), (double)r.item_count);
        if (r.index_bytes)
            rp_gauge_set(rp_metric_series1(index_bytes, s->service), (double)r.index_bytes);
        rp_counter_set(rp_metric_series1(reloads, s->service), (double)r.reloads);
        if (!strcmp(s->service, "gateway")) {
            rp_counter_set(rp_metric_series1(hits, s->service), (double)r.cache_hits);
            rp_counter_set(rp_metric_series1(misses, s->service), (double)r.cache_misses);
            rp_counter_set(rp_metric_series1(feedback, s->service), (double)r.feedback_events);
        }
    }
    rp_arena_destroy(a);
}

/* "127.0.0.1:0" + 43121 → "127.0.0.1:43121". */
static char *bound_address(const char *listen, int port)
{
    const char *colon = strrchr(listen, ':');
    size_t host = colon ? (size_t)(colon - listen) : strlen(listen);
    char *out = malloc(host + 16);
    if (out) snprintf(out, host + 16, "%.*s:%d", (int)host, listen, port);
    return out;
}

/* Each call allocates a few KiB inside gRPC on a worker's malloc arena; with glibc's
 * defaults the arenas are trimmed and grown again all the time (madvise + page faults: a
 * third of the server's CPU per call, measured with bench/rpc). So a heap keeps some
 * free memory at its top: up to M_TRIM_THRESHOLD, and M_TOP_PAD after a trim. But only
 * the main arena's top is ever trimmed by malloc_trim (the trimmer below); a thread
 * arena's top shrinks only when a free leaves more than the threshold there, and glibc
 * makes up to 8 arenas per core, one per busy thread (gRPC's, the workers, OpenMP's).
 * With 16 MiB per heap and the default arena count, a retrieval server's anonymous
 * memory went from 12 to 24 MB in ten bundle swaps under load while its heap in use
 * stayed at 8-10 MB (bench/soak, reload experiments: 27 MB free kept). Now: 4 MiB per
 * heap (a few hundred calls' worth: bench/rpc shows no regrowth cost) and one arena per
 * two cores, at least one. Each arena fragments on its own: after a backlog (calls
 * queued for half a second, ~25 MB of call memory) a gateway with 4 arenas kept 3-6 MB
 * more than before it, five backlogs 30 s apart took it from 27-32 to 36 MB, with the
 * memory in use unchanged (malloc_stats: 33.4 and 32.2 MB in use, 37 and 56 MB held);
 * with one arena it came back to 30-31 MB. Per-thread caches (tcache) serve most small
 * blocks without the arena's lock: the three services used the same CPU per call with
 * 1 and 4 arenas (2 cores, 4,000 calls/s of the soak mix, 60 s, two runs each: gateway
 * 37.7-40.4 s, retrieval 12.6-14.1 s, ranking 25.8-28.9 s either way). More than 2 cores
 * were not measured.
 * The mmap threshold is set to 128 KiB, explicitly: glibc raises it to the size of any
 * mmapped block freed (up to 32 MiB) until a threshold is set, and setting
 * M_TRIM_THRESHOLD freezes whatever it is then. Services load their first bundle before
 * the server starts, and that load frees 1 MiB buffers (the checksum's), so the
 * threshold stayed raised: a ranking server's malloc_stats showed at most 1 mmapped
 * region ever, its scoring workspaces came from heaps, and its main heap held 2.9 MB
 * more in use a few seconds after a reload than before it. At 128 KiB such buffers are
 * mmapped and go back to the kernel when freed. Services call this before loading;
 * rp_server_start calls it too. An operator's own GLIBC_TUNABLES malloc settings win. */
void rp_malloc_tune(void)
{
    const char *tun = getenv("GLIBC_TUNABLES");
    if (tun && strstr(tun, "malloc")) return;
    int cores = rp_ncores();
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
    mallopt(M_TOP_PAD, 1024 * 1024);
    mallopt(M_ARENA_MAX, cores / 2 > 1 ? cores / 2 : 1);
}

int rp_server_start(const rp_server_config *cfg, const rp_method *methods, size_t n,
                    rp_server **out, rp_error *err)
{
    int rc = RP_OK;
    *out = NULL;
    if (!cfg || !cfg->listen || !*cfg->listen)
        return rp_errorf(err, RP_EINVAL, "listen: an address is required (\"127.0.0.1:50051\")");
    if (n && !methods) return rp_errorf(err, RP_EINVAL, "method table is NULL with %zu rows", n);

    rp_server *s = calloc(1, sizeof *s);
    if (!s) return rp_errorf(err, RP_ENOMEM, "out of memory for the server");
    rp_malloc_tune();
    /* Every call writes an access line: none may wait for the disk. */
    if (rp_log_async_start() != RP_OK)
        rp_warn("rpc", "no log thread: request threads write their log lines themselves");
    grpc_init();
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_mutex_init(&s->spare_mu, NULL);
    pthread_cond_init(&s->trim_cv, NULL);
    pthread_mutex_init(&s->qmu, NULL);
    s->shutdown_tag.cb = on_shutdown;
    s->token.cb = on_token;
    s->start_ns = rp_now_ns();
    s->service = xstrdup(cfg->service);
    s->version = xstrdup(cfg->version);
    s->listen = xstrdup(cfg->listen);
    s->nthreads = cfg->threads > 0 ? cfg->threads : rp_ncores();
    s->max_message_bytes = cfg->max_message_bytes > 0 ? cfg->max_message_bytes
                                                      : RP_DEFAULT_MAX_MESSAGE_BYTES;
    if (s->max_message_bytes > INT32_MAX) {
        rc = rp_errorf(err, RP_EINVAL, "max message bytes: %" PRId64 " is above the limit %d",
                       s->max_message_bytes, INT32_MAX);
        goto fail;
    }
    s->grace_s = cfg->grace_s > 0 ? cfg->grace_s : 10.0;
    s->status_hook = cfg->status_hook;
    s->status_user = cfg->status_user;
    const char *token = cfg->admin_token ? cfg->admin_token : rp_ops_admin_token();
    if (token && *token && !(s->admin_token = strdup(token))) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory for the server");
        goto fail;
    }
    s->max_in_flight = cfg->max_in_flight > 0 ? cfg->max_in_flight : rp_ops_max_in_flight();
    if (s->max_in_flight <= 0) s->max_in_flight = 4 * (int64_t)s->nthreads * SLOTS_PER_METHOD;
    double qt = cfg->queue_target_ms, qi = cfg->queue_interval_ms, ot, oi;
    bool ops_set = rp_ops_queue_limits(&ot, &oi);
    if (qt == 0) qt = ops_set && ot > 0 ? ot : -1;
    if (qi <= 0) qi = ops_set && oi > 0 ? oi : 100.0;
    /* Off: target 0 (the interval is then unused). */
    rp__queue_init(&s->queue, qt > 0 ? (uint64_t)(qt * 1e6) : 0, qt > 0 ? (uint64_t)(qi * 1e6) : 0);
    rp__queue_init(&s->io_queue, s->queue.target_ns, s->queue.interval_ns);
    s->io_max = cfg->io_threads > 0 ? cfg->io_threads : s->nthreads / 4;
    if (s->io_max < 1) s->io_max = 1;
    if (s->io_max > s->nthreads) s->io_max = s->nthreads;
    s->worker_nice = cfg->worker_nice > 0 ? cfg->worker_nice
                     : cfg->worker_nice < 0 ? 0 : rp_ops_worker_nice();
    if (s->worker_nice > 19) s->worker_nice = 19;
    int max_streams = cfg->max_streams > 0 ? cfg->max_streams : (int)rp_ops_max_streams();
    if (max_streams <= 0) max_streams = 100;
    const rp_tls_pem *tls = cfg->tls ? cfg->tls : cfg->plaintext ? NULL : rp_ops_server_tls();
    if (tls && (!tls->cert || !tls->key)) {
        rc = rp_errorf(err, RP_EINVAL, "TLS: a certificate and its key are required "
                       "(--tls-cert, --tls-key)");
        goto fail;
    }
    {
        rp_metric *inf = rp_metric_family(RP_METRIC_GAUGE, "recpipe_rpc_in_flight",
                                          "Calls admitted and not yet answered.",
                                          "service", NULL, 0);
        rp_metric *rej = rp_metric_family(RP_METRIC_COUNTER, "recpipe_rpc_rejected_total",
                                          "Calls refused with RESOURCE_EXHAUSTED by the "
                                          "in-flight cap.", "service", NULL, 0);
        rp_metric *shed = rp_metric_family(RP_METRIC_COUNTER, "recpipe_rpc_shed_total",
                                           "Calls answered RESOURCE_EXHAUSTED because they "
                                           "waited for a worker past the queue-time limit.",
                                           "service", NULL, 0);
        s->m_in_flight = rp_metric_series1(inf, s->service);
        s->m_rejected = rp_metric_series1(rej, s->service);
        s->m_shed_queue = rp_metric_series1(shed, s->service);
    }
    if (!s->service || !s->version || !s->listen) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory for the server");
        goto fail;
    }
    if ((rc = build_methods(s, methods, n, cfg->admin_methods, cfg->io_methods, err)) != RP_OK)
        goto fail;

    grpc_arg args[3];
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[2].value.integer = max_streams;
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)s->max_message_bytes;
    /* Without this, a second server on a taken port would silently share it. */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
    args[1].value.integer = 0;
    grpc_channel_args cargs = {3, args};
    s->server = grpc_server_create(&cargs, NULL);
    if (!s->server) {
        rc = rp_errorf(err, RP_EIO, "grpc_server_create failed");
        goto fail;
    }
    s->workers = calloc((size_t)s->nthreads, sizeof *s->workers);
    if (!s->workers) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory for %d workers", s->nthreads);
        goto fail;
    }
    for (int i = 0; i < s->nthreads; i++) {
        s->workers[i].srv = s;
        s->workers[i].index = i;
    }
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    s->acq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->acq, NULL);
    for (size_t i = 0; i < s->nmethods; i++) {
        s->methods[i].handle = grpc_server_register_method(
            s->server, s->methods[i].m.path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!s->methods[i].handle) {
            rc = rp_errorf(err, RP_EINVAL, "cannot register method %s", s->methods[i].m.path);
            goto fail;
        }
    }
    grpc_server_credentials *creds;
    if (tls) {
        grpc_ssl_pem_key_cert_pair pair = {tls->key, tls->cert};
        creds = grpc_ssl_server_credentials_create_ex(
            tls->ca, &pair, 1,
            tls->ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                    : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
        s->tls = true;
        s->mtls = tls->ca != NULL;
        if (!creds) {
            rc = rp_errorf(err, RP_EINVAL, "TLS: gRPC refused the certificate, key or CA");
            goto fail;
        }
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    s->port = grpc_server_add_http2_port(s->server, s->listen, creds);
    grpc_server_credentials_release(creds);
    if (s->port <= 0) {
        rc = rp_errorf(err, RP_EIO, "cannot listen on %s (address in use, or not "
                       "\"host:port\")", s->listen);
        goto fail;
    }
    s->bound_address = bound_address(s->listen, s->port);
    grpc_server_start(s->server);
    s->started = true;
    for (size_t k = 0; k < s->nmethods && rc == RP_OK; k++)
        for (int j = 0; j < SLOTS_PER_METHOD && rc == RP_OK; j++) rc = post_slot(s, &s->methods[k]);
    for (int j = 0; j < GENERIC_SLOTS && rc == RP_OK; j++) rc = post_slot(s, NULL);
    if (rc != RP_OK) {
        rp_errorf(err, rc, "cannot post call slots: %s", rp_strerror(rc));
        goto fail;
    }
    for (int i = 0; i < s->nthreads; i++) {
        if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]) != 0) {
            rc = rp_errorf(err, RP_ENOMEM, "cannot start worker thread %d: %s", i,
                           strerror(errno));
            goto fail;
        }
        s->nworkers_started++;
    }
    if (pthread_create(&s->admit_thread, NULL, admit_main, s) != 0) {
        rc = rp_errorf(err, RP_ENOMEM, "cannot start the admission thread: %s", strerror(errno));
        goto fail;
    }
    s->admit_started = true;
    if (pthread_create(&s->trim_thread, NULL, trim_main, s) == 0) s->trim_started = true;
    else rp_warn("rpc", "no heap trimmer thread: %s (RSS may exceed the heap in use)", strerror(errno));
    char fields[512];
    size_t fl = 0;
    fl += (size_t)snprintf(fields, sizeof fields, "\"service\":\"");
    rp_json_escape(fields, sizeof fields, &fl, s->service);
    fl += (size_t)snprintf(fields + fl, sizeof fields - fl, "\",\"address\":\"");
    rp_json_escape(fields, sizeof fields, &fl, s->bound_address ? s->bound_address : s->listen);
    snprintf(fields + fl, sizeof fields - fl,
             "\",\"port\":%d,\"threads\":%d,\"tls\":\"%s\",\"admin_token\":%s,"
             "\"max_in_flight\":%" PRId64 ",\"max_streams\":%d,\"queue_target_ms\":%.1f,"
             "\"queue_interval_ms\":%.1f,\"worker_nice\":%d,\"io_threads\":%d",
             s->port, s->nthreads, s->mtls ? "mutual" : s->tls ? "on" : "off",
             s->admin_token ? "true" : "false", s->max_in_flight, max_streams,
             (double)s->queue.target_ns / 1e6, (double)s->queue.interval_ns / 1e6,
             s->worker_nice, s->io_max);
    if (rp_metrics_add_hook(metrics_hook, s) == RP_OK) s->metrics_hooked = true;
    rp_logx(RP_LOG_INFO, "rpc", fields, "listening on %s",
            s->bound_address ? s->bound_address : s->listen);
    *out = s;
    return RP_OK;

fail:
    rp_server_destroy(s);
    return rc;
}

int rp_server_port(const rp_server *s)
{
    return s->port;
}

void rp_server_set_serving(rp_server *s, bool serving)
{
    if (atomic_load(&s->stopping) && serving) return;
    bool old = atomic_exchange(&s->serving, serving);
    if (old != serving) {
        rp_info("rpc", "%s is now %s", s->service, serving ? "SERVING" : "NOT_SERVING");
        rp__health_notify(s);
    }
}

bool rp_server_serving(const rp_server *s)
{
    return atomic_load(&s->serving);
}

void rp_server_get_stats(const rp_server *s, rp_server_stats *out)
{
    out->calls_total = atomic_load(&s->calls_total);
    out->calls_failed = atomic_load(&s->calls_failed);
    out->in_flight = atomic_load(&s->in_flight);
    out->uptime_s = (double)(rp_now_ns() - s->start_ns) / 1e9;
}

static bool wait_shutdown(rp_server *s, double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    double whole = (double)(int64_t)seconds;
    until.tv_sec += (time_t)whole;
    until.tv_nsec += (long)((seconds - whole) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->shutdown_done)
        if (pthread_cond_timedwait(&s->cond, &s->mu, &until) == ETIMEDOUT) break;
    bool done = s->shutdown_done;
    pthread_mutex_unlock(&s->mu);
    return done;
}

/* True once every call is answered: no slot left to fill (gRPC fails the unfilled ones
 * at shutdown), none in a handler, no Health/Watch stream open. */
static bool calls_drained(rp_server *s)
{
    pthread_mutex_lock(&s->mu);
    bool done = s->shutdown_done ||
                (atomic_load(&s->slots_outstanding) == 0 && atomic_load(&s->in_flight) == 0 &&
                 !s->watchers);
    pthread_mutex_unlock(&s->mu);
    return done;
}

/* Waits until the calls are drained or `seconds` passed; true when drained. */
static bool wait_drained(rp_server *s, double seconds)
{
    uint64_t until = rp_now_ns() + (uint64_t)(seconds * 1e9);
    while (!calls_drained(s)) {
        if (rp_now_ns() >= until) return false;
        rp_sleep_ns(2 * 1000000ull);
    }
    return true;
}

/* A shut-down queue no thread ever drove: fails every event on it (the slots posted). */
static void drain_undriven(grpc_completion_queue *q)
{
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(q, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) ((rp__tag *)ev.tag)->cb(ev.tag, false);
    }
}

int rp_server_stop(rp_server *s, double grace_s)
{
    if (s->stopped) return s->stop_rc;
    s->stopped = true;
    s->stop_rc = RP_OK;
    if (s->trim_started) {
        pthread_mutex_lock(&s->mu);
        s->trim_stop = true;
        pthread_cond_broadcast(&s->trim_cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->trim_thread, NULL);
        s->trim_started = false;
    }
    if (!s->server) return RP_OK;
    atomic_store(&s->stopping, true);
    if (s->nworkers_started == s->nthreads && s->admit_started) {
        rp_server_stats st;
        rp_server_get_stats(s, &st);
        rp_info("rpc", "stopping %s: %u calls in flight, draining them (grace %.1f s)", s->service,
                st.in_flight, grace_s);
        atomic_store(&s->serving, false);
        rp__health_notify(s);
        rp__health_end_watchers(s);
        grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
        if (!wait_drained(s, grace_s > 0 ? grace_s : 0.001)) {
            rp_server_get_stats(s, &st);
            rp_warn("rpc", "grace period of %.1f s over: cancelling %u calls", grace_s,
                    st.in_flight);
            s->stop_rc = RP_ETIMEDOUT;
        }
        /* Every call is answered (or the grace is over). Clients were sent GOAWAY; give
         * them a moment to read their last answers and hang up, then close what is left
         * (idle clients may otherwise hold the stop for seconds). */
        if (s->stop_rc == RP_OK) wait_shutdown(s, 1.0);
        grpc_server_cancel_all_calls(s->server);
        if (!wait_shutdown(s, 30.0))
            rp_errlog("rpc", "calls still not finished 30 s after cancelling them");
        /* Cancelled calls may still be in their handlers, which will answer on the queue:
         * it must outlive them. */
        for (int waited = 0;; waited++) {
            pthread_mutex_lock(&s->mu);
            bool idle = atomic_load(&s->in_flight) == 0 && !s->watchers;
            pthread_mutex_unlock(&s->mu);
            if (idle) break;
            if (waited % 5000 == 4999)
                rp_errlog("rpc", "%u handlers still running after the stop", atomic_load(&s->in_flight));
            rp_sleep_ns(2 * 1000000ull);
        }
    } else if (s->started) {
        /* Failed start: no worker may be running to see the notification. */
        grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
        grpc_server_shutdown_and_notify(s->server, cq, &s->shutdown_tag);
        grpc_completion_queue_pluck(cq, &s->shutdown_tag, gpr_inf_future(GPR_CLOCK_REALTIME),
                                    NULL);
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        grpc_completion_queue_destroy(cq);
    }
    grpc_server_destroy(s->server);
    s->server = NULL;
    /* The admission queue first: what it still holds may queue calls to the workers. */
    if (s->acq) {
        grpc_completion_queue_shutdown(s->acq);
        if (s->admit_started) {
            pthread_join(s->admit_thread, NULL);
        } else {
            drain_undriven(s->acq);
        }
        grpc_completion_queue_destroy(s->acq);
        s->acq = NULL;
    }
    if (s->cq) {
        grpc_completion_queue_shutdown(s->cq);
        for (int i = 0; i < s->nworkers_started; i++) pthread_join(s->workers[i].thread, NULL);
        if (s->nworkers_started == 0) {
            /* Never driven: release the slots posted on it. */
            drain_undriven(s->cq);
        }
        grpc_completion_queue_destroy(s->cq);
        s->cq = NULL;
    }
    thread_arena_release(); /* a drain above may have run handlers on this thread */
    if (s->nworkers_started == s->nthreads && s->admit_started)
        rp_info("rpc", "%s stopped", s->service);
    return s->stop_rc;
}

void rp_server_destroy(rp_server *s)
{
    if (!s) return;
    if (s->metrics_hooked) rp_metrics_remove_hook(metrics_hook, s);
    rp_server_stop(s, s->grace_s);
    if (s->admin_token) {
        memset(s->admin_token, 0, strlen(s->admin_token));
        free(s->admin_token);
    }
    while (s->spare) {
        rp_call *c = s->spare;
        s->spare = c->next_free;
        call_free(c);
    }
    pthread_mutex_destroy(&s->qmu);
    pthread_mutex_destroy(&s->spare_mu);
    pthread_cond_destroy(&s->trim_cv);
    free(s->workers);
    free(s->methods);
    free(s->service);
    free(s->version);
    free(s->listen);
    free(s->bound_address);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s);
    grpc_shutdown();
}

/* ------------------------------------------------------------------ signals */

static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(signal_pipe[1], &b, 1) < 0) {
        /* Nothing to do from a signal handler. */
    }
    errno = saved;
}

int rp_wait_for_signal(void)
{
    if (signal_pipe[0] < 0 && pipe(signal_pipe) != 0) {
        rp_errlog("rpc", "pipe: %s; not waiting for signals", strerror(errno));
        return 0;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    unsigned char b = 0;
    for (;;) {
        /* Meanwhile this thread runs the jobs posted to it (bundle loads: rp/mainq.h). */
        if (rp_main_wait(signal_pipe[0]) != 0) {
            rp_errlog("rpc", "poll on the signal pipe: %s; not waiting for signals", strerror(errno));
            return 0;
        }
        ssize_t r = read(signal_pipe[0], &b, 1);
        if (r == 1) break;
        if (r < 0 && errno == EINTR) continue;
        rp_errlog("rpc", "reading the signal pipe: %s",
                  r < 0 ? strerror(errno) : "end of file");
        return 0;
    }
    /* Later signals (a second Ctrl-C during the drain) only write to the pipe. */
    rp_info("rpc", "received %s", b == SIGINT ? "SIGINT" : "SIGTERM");
    return b;
}

int rp_server_run_until_signal(rp_server *s)
{
    rp_wait_for_signal();
    return rp_server_stop(s, s->grace_s);
}

/* ------------------------------------------------------------------ call accessors */

rp_arena *rp_call_arena(rp_call *c)
{
    return c->arena;
}

ProtobufCAllocator *rp_call_allocator(rp_call *c)
{
    return &c->alloc;
}

void *rp_call_user(const rp_call *c)
{
    return c->method ? c->method->m.user : NULL;
}

rp_server *rp_call_server(const rp_call *c)
{
    return c->srv;
}

const char *rp_call_method(const rp_call *c)
{
    return c->method ? c->method->m.path : "";
}

uint64_t rp_call_queued_ns(const rp_call *c)
{
    return c->t_run_ns > c->t_start_ns ? c->t_run_ns - c->t_start_ns : 0;
}

size_t rp_call_waiting(const rp_call *c)
{
    rp_server *s = c->srv;
    pthread_mutex_lock(&s->qmu);
    size_t n = c->method && c->method->io ? s->io_queue.len : s->queue.len;
    pthread_mutex_unlock(&s->qmu);
    return n;
}

uint64_t rp_call_deadline_ns(const rp_call *c)
{
    return c->deadline_ns;
}

int64_t rp_call_remaining_ms(const rp_call *c)
{
    if (c->deadline_ns == UINT64_MAX) return INT64_MAX;
    return ((int64_t)c->deadline_ns - (int64_t)rp_now_ns()) / 1000000;
}

const char *rp_call_peer(rp_call *c)
{
    if (c->peer[0] || !c->call) return c->peer;
    char *p = grpc_call_get_peer(c->call);
    if (p) snprintf(c->peer, sizeof c->peer, "%s", p);
    gpr_free(p);
    return c->peer;
}

const char *rp_call_request_id(const rp_call *c)
{
    return c->request_id;
}

const char *rp_call_metadata(rp_call *c, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_slice *k = &c->md.metadata[i].key;
        if (GRPC_SLICE_LENGTH(*k) != kl || memcmp(GRPC_SLICE_START_PTR(*k), key, kl)) continue;
        const grpc_slice *v = &c->md.metadata[i].value;
        size_t n = GRPC_SLICE_LENGTH(*v);
        char *out = rp_arena_alloc(c->arena, n + 1);
        if (!out) return NULL;
        memcpy(out, GRPC_SLICE_START_PTR(*v), n);
        out[n] = '\0';
        return out;
    }
    return NULL;
}

int rp_no_bundle(rp_error *err)
{
    return rp_errorf(err, RP_ENOBUNDLE, "no bundle is loaded (start the service with a bundle "
                     "or load one with Admin.Reload)");
}

int rp_handler_no_bundle(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                         rp_error *err)
{
    (void)call;
    (void)req;
    (void)resp;
    return rp_no_bundle(err);
}
