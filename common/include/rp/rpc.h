/*
 * rp/rpc.h — the RPC layer of recpipe over the gRPC C core API (grpc/grpc.h).
 *
 * SERVER. A service describes its unary methods in a table (full path, protobuf-c
 * request and response descriptors, handler, user data) and gets:
 *   - N worker threads (default: the number of cores) driving one shared completion
 *     queue with request slots posted for every method; a handler runs on whichever
 *     worker took the call and may block (it then holds that worker, and calls queue
 *     for the others: size `threads` for services whose handlers wait on I/O, such as
 *     the gateway's fan-out). One queue rather than one per worker, so that no call
 *     waits behind a slow handler while another worker is idle;
 *   - grpc.health.v1.Health/Check and Watch, NOT_SERVING until rp_server_set_serving;
 *   - recpipe.v1.Admin/Status filled by the layer (service, version, serving, uptime,
 *     call counters) plus an optional hook for the rest; Admin/Reload, UpsertItems and
 *     DeleteItems answer UNIMPLEMENTED unless the method table lists them (a service
 *     overrides any built-in method by listing its path);
 *   - UNIMPLEMENTED at once for unknown methods, INVALID_ARGUMENT naming the method for
 *     request bytes that do not parse, RESOURCE_EXHAUSTED for messages over the size
 *     limit, DEADLINE_EXCEEDED without running the handler for calls whose deadline
 *     passed while they waited for a worker;
 *   - admin methods (rp_method.admin) checked against a bearer token; a cap on calls in
 *     flight (RESOURCE_EXHAUSTED "overloaded: ..."), TLS / mutual TLS (rp/ops.h);
 *   - Prometheus metrics (rp/metrics.h): recpipe_rpc_calls_total{service,method,code},
 *     recpipe_rpc_duration_seconds{service,method}, recpipe_rpc_in_flight{service}, and
 *     gauges from the Admin.Status hook (bundle info, items, cache, feedback, reloads);
 *   - one JSON access-log line per call (rp/log.h, component "rpc": request id, method,
 *     status, latency) at level info;
 *   - graceful stop: report NOT_SERVING, stop accepting, let every call already
 *     received finish within a grace period, cancel the rest (rp_server_stop,
 *     rp_server_run_until_signal). Calls that reached the server but no worker before
 *     the stop are answered too (up to 64 waiting per method; more waiting than that,
 *     and calls arriving after the stop, get UNAVAILABLE: safe to retry elsewhere).
 *
 * THREADING. rp_server_set_serving, rp_server_get_stats and the rp_client functions are
 * thread-safe; rp_server_stop/destroy are called once, from one thread, never from a
 * handler. An rp_call and an rp_async belong to one thread at a time.
 *
 * CLIENT. rp_client keeps one channel per address and reuses it; a target may list
 * several comma-separated addresses, used round robin. rp_client_unary is a blocking
 * unary call usable from any thread; rp_async starts many calls on one completion queue
 * and runs a callback for each (the gateway's shard fan-out).
 *
 * ERRORS. Functions return RP_OK or a negative rp error code (rp/err.h) and fill the
 * optional rp_error. Handlers return an rp error code: the caller sees the gRPC status
 * rp_err_grpc_status(code) with err->msg (or rp_strerror(code) when empty) as details.
 * Clients map a gRPC status back with rp_err_from_grpc_status.
 */
#ifndef RP_RPC_H
#define RP_RPC_H

#include "rp/arena.h"
#include "rp/err.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Forward declaration of the generated recpipe.v1.StatusResponse (admin.pb-c.h). */
struct Recpipe__V1__StatusResponse;
/* TLS material as PEM text (rp/ops.h). */
struct rp_tls_pem;

/* gRPC status codes (same values as grpc_status_code, without including grpc.h). */
enum {
    RP_GRPC_OK = 0,
    RP_GRPC_CANCELLED = 1,
    RP_GRPC_UNKNOWN = 2,
    RP_GRPC_INVALID_ARGUMENT = 3,
    RP_GRPC_DEADLINE_EXCEEDED = 4,
    RP_GRPC_NOT_FOUND = 5,
    RP_GRPC_ALREADY_EXISTS = 6,
    RP_GRPC_PERMISSION_DENIED = 7,
    RP_GRPC_RESOURCE_EXHAUSTED = 8,
    RP_GRPC_FAILED_PRECONDITION = 9,
    RP_GRPC_ABORTED = 10,
    RP_GRPC_OUT_OF_RANGE = 11,
    RP_GRPC_UNIMPLEMENTED = 12,
    RP_GRPC_INTERNAL = 13,
    RP_GRPC_UNAVAILABLE = 14,
    RP_GRPC_DATA_LOSS = 15,
    RP_GRPC_UNAUTHENTICATED = 16,
};

/* The rp error code for a gRPC status code: RP_OK for OK, RP_ETIMEDOUT for
 * DEADLINE_EXCEEDED, RP_EUNAVAIL for UNAVAILABLE, RP_EINVAL for INVALID_ARGUMENT,
 * RP_EOVERLOAD for RESOURCE_EXHAUSTED, RP_EUNIMPL, RP_ENOENT, RP_ECANCELED, ... and
 * RP_EINTERNAL for anything without a closer match. */
int rp_err_from_grpc_status(int grpc_code);
/* "OK", "INVALID_ARGUMENT", ...; "UNKNOWN_STATUS" outside 0..16. Static string. */
const char *rp_grpc_status_name(int grpc_code);

/* ======================================================================== server */

typedef struct rp_server rp_server;
/* One call in progress, valid only inside the handler it is given to. */
typedef struct rp_call rp_call;

/*
 * A unary handler. req was unpacked from the call's arena and is valid until the
 * handler returns (do not keep pointers into it). On success set *resp to a message
 * of the method's response type, allocated from rp_call_arena(call) (or static), and
 * return RP_OK; the layer packs and sends it and frees the arena afterwards. On
 * failure return an rp error code and describe it in err (rp_errorf); *resp is ignored.
 * Runs on a worker thread; several handlers of the same method run concurrently.
 */
typedef int (*rp_handler)(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                          rp_error *err);

/* One row of a method table. All pointers must outlive the server. */
typedef struct rp_method {
    const char *path; /* full path: "/recpipe.v1.Retrieval/Retrieve" */
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *response;
    rp_handler handler;
    void *user; /* handed back by rp_call_user */
} rp_method;

/* ADMIN METHODS. When the server has an admin token (rp_server_config.admin_token or
 * the process default of rp/ops.h), these methods require "authorization: Bearer
 * <token>": UNAUTHENTICATED without it, PERMISSION_DENIED with a wrong token (compared
 * in constant time); the handler does not run. Always admin: Admin.Reload,
 * Admin.UpsertItems, Admin.DeleteItems, Recommender.ForgetUser; a service adds others
 * with rp_server_config.admin_methods. */

/*
 * Fills the service-specific fields of Admin/Status (bundle_version, item_count,
 * cache counters...). The layer has already set service, software_version, serving,
 * uptime_seconds, calls_total, calls_failed and in_flight. Strings must be allocated
 * from arena (or be static). Runs on a worker thread, concurrently with handlers.
 */
typedef void (*rp_status_hook)(void *user, struct Recpipe__V1__StatusResponse *resp,
                               rp_arena *arena);

typedef struct rp_server_config {
    const char *service;        /* "retrieval", "ranking", "gateway": logs and Admin.Status */
    const char *version;        /* software version reported by Admin.Status; NULL = "" */
    const char *listen;         /* "127.0.0.1:50051"; port 0 picks a free port */
    int threads;                /* worker threads; <= 0 = the number of cores */
    int64_t max_message_bytes;  /* largest request accepted; <= 0 = 4 MiB */
    double grace_s;             /* drain time for rp_server_run_until_signal; <= 0 = 10 s */
    rp_status_hook status_hook; /* may be NULL */
    void *status_user;
    /* Security and limits. Each field left NULL / 0 takes the process default set by
     * rp_ops_apply (rp/ops.h), which is itself "off" unless configured. */
    const char *admin_token;       /* bearer token of admin methods (copied) */
    const char *const *admin_methods; /* more admin paths, NULL-terminated; may be NULL */
    const struct rp_tls_pem *tls;  /* cert+key: TLS; with ca: clients must present a
                                    * certificate signed by ca (mutual TLS). Copied. */
    int64_t max_in_flight;         /* calls handled at once; more get RESOURCE_EXHAUSTED
                                    * (health checks exempt); 0 = 4 x threads x 64 */
    int max_streams;               /* GRPC_ARG_MAX_CONCURRENT_STREAMS per connection;
                                    * 0 = 100 */
    bool plaintext;                /* ignore the process TLS default (tests) */
    /* Load shedding by waiting time (the server's queue of calls waiting for a worker,
     * after "Fail at Scale", Maurer 2015, a CoDel for RPC queues, with adaptive LIFO):
     * a burst may wait queue_interval_ms; once calls have waited longer than
     * queue_target_ms for a whole interval the queue is standing, and only the target
     * is allowed until waits stay within it for an interval. A call that waited longer
     * than allowed is answered RESOURCE_EXHAUSTED at once, and while the queue stands
     * the newest calls are served first, so that admitted calls keep a normal latency
     * under overload (policy: common/src/rpc_queue.h). Off by default: a closed-loop client keeping more calls in flight than
     * there are workers makes a standing queue on purpose. 0 = the process default
     * (rp_ops: --queue-target-ms, --queue-interval-ms; off unless set; interval 100 ms);
     * target < 0 = off (first come, first served; calls wait up to their deadline). */
    double queue_target_ms;
    double queue_interval_ms;
    /* The request threads' nice value above the rest of the process (admission, gRPC's
     * own threads), 1..19: under CPU saturation reading, shedding and answering calls
     * goes first, so the backlog forms in the queue above, where it is measured and
     * shed, not unseen in socket buffers. 0 = the process default (rp_ops:
     * --worker-nice; 0 unless set); < 0 = same priority. */
    int worker_nice;
    /* Methods whose handlers wait on the disk (durable writes), NULL-terminated; may be
     * NULL. They wait in a queue of their own (same policy) and at most io_threads of
     * them run at once: an fsync that stalls for a second holds those workers, while
     * the others keep answering everything else. 0 = a quarter of the threads, at
     * least 1. */
    const char *const *io_methods;
    int io_threads;
} rp_server_config;

#define RP_DEFAULT_MAX_MESSAGE_BYTES (4 * 1024 * 1024)

/* Sets glibc malloc up for a long-running server (rpc_server.c says why): mmap for
 * blocks of 128 KiB and more, 4 MiB kept free per heap, one arena per two cores. Call it before
 * loading a bundle; rp_server_start calls it too. Idempotent; does nothing when
 * GLIBC_TUNABLES sets malloc options. */
void rp_malloc_tune(void);

/*
 * Creates a server: copies cfg (strings are copied), registers methods[0..n) and the
 * built-in Health and Admin methods, binds cfg->listen (so rp_server_port is known at
 * once) and starts the worker threads. Calls are answered from then on. Process-wide
 * side effect: rp_malloc_tune (up to 4 MiB of free heap kept, one arena per two cores,
 * mmap from 128 KiB) unless GLIBC_TUNABLES sets malloc options; it saves a third of the
 * server's CPU per call (bench/rpc); and a
 * thread of the server returns free heap pages to the kernel every 10 s (malloc_trim),
 * so that RSS follows the memory in use. Errors:
 * RP_EINVAL (bad config or method table: names the row), RP_EIO (cannot bind: names the
 * address). *out is NULL on error.
 */
int rp_server_start(const rp_server_config *cfg, const rp_method *methods, size_t n,
                    rp_server **out, rp_error *err);
/* The bound TCP port (useful with port 0). */
int rp_server_port(const rp_server *s);
/* Sets what Health reports for every service of this server (and notifies Watch
 * streams). Thread-safe. Starts false. */
void rp_server_set_serving(rp_server *s, bool serving);
bool rp_server_serving(const rp_server *s);

/* Counters, as Admin.Status reports them. Thread-safe. */
typedef struct rp_server_stats {
    uint64_t calls_total;  /* finished calls, built-ins included */
    uint64_t calls_failed; /* finished with a status other than OK */
    uint32_t in_flight;    /* calls taken by a worker and not yet finished */
    double uptime_s;
} rp_server_stats;
void rp_server_get_stats(const rp_server *s, rp_server_stats *out);

/*
 * Stops the server: reports NOT_SERVING, ends Health/Watch streams, stops accepting,
 * waits up to grace_s for in-flight calls (calls already received are still answered),
 * then cancels what is left and joins the workers. Returns RP_OK when every call
 * finished within the grace period, RP_ETIMEDOUT when some were cancelled. Idempotent;
 * call from one thread, never from a handler.
 */
int rp_server_stop(rp_server *s, double grace_s);
/* Stops (grace from the config) if still running, then frees. NULL is a no-op. */
void rp_server_destroy(rp_server *s);

/*
 * Blocks until SIGTERM or SIGINT (installing handlers for both), then rp_server_stop
 * with the configured grace. Returns RP_OK after a clean drain (the service exits 0),
 * RP_ETIMEDOUT when calls had to be cancelled. Call from the main thread.
 */
int rp_server_run_until_signal(rp_server *s);
/* The waiting part alone, for a process running several servers: installs handlers for
 * SIGTERM and SIGINT, blocks until one arrives and returns its number (0 if waiting
 * failed). Later signals are absorbed, so a second Ctrl-C does not cut the drain short.
 * While it waits, the calling thread runs the jobs posted with rp_main_run (rp/mainq.h):
 * call it from the main thread. */
int rp_wait_for_signal(void);

/* ---- inside a handler ---- */

/* The call's arena: request, response and scratch memory, freed after the response is
 * sent. Not thread-safe (one call, one thread). */
rp_arena *rp_call_arena(rp_call *c);
/* A protobuf-c allocator over the arena (to unpack nested messages, etc.). */
ProtobufCAllocator *rp_call_allocator(rp_call *c);
/* The method row's user data. */
void *rp_call_user(const rp_call *c);
rp_server *rp_call_server(const rp_call *c);
/* The full method path ("/recpipe.v1.Ranking/Rank"). */
const char *rp_call_method(const rp_call *c);
/* The caller's deadline on the rp_now_ns() clock; UINT64_MAX when it set none. */
uint64_t rp_call_deadline_ns(const rp_call *c);
/* How long the call waited for a worker (arrival to handler), in nanoseconds. */
uint64_t rp_call_queued_ns(const rp_call *c);
/* Calls of the same queue (the I/O lane's, or the other one) waiting for a worker now.
 * With rp_call_queued_ns, how a handler tells a server that is behind (a backlog that
 * made this call wait) from a scheduling hiccup of a lone call. */
size_t rp_call_waiting(const rp_call *c);
/* Milliseconds left before the deadline (negative when past; INT64_MAX when none). */
int64_t rp_call_remaining_ms(const rp_call *c);
/* "ipv4:127.0.0.1:41234". Owned by the call. */
const char *rp_call_peer(rp_call *c);
/* The "x-request-id" header when the caller sent a sane one (1..39 characters of
 * [A-Za-z0-9._:-]; it is then echoed in the response headers), else a generated id of
 * 16 hex digits. Also the log request id of the worker thread while the handler runs.
 * Owned by the call. */
const char *rp_call_request_id(const rp_call *c);
/* The first value of request header key (lower case, e.g. "authorization") as a
 * NUL-terminated copy in the call's arena, or NULL when absent. */
const char *rp_call_metadata(rp_call *c, const char *key);

/* A handler for business methods of a service that has no bundle: answers UNAVAILABLE
 * "no bundle is loaded ...". Services put it in their table until a bundle exists (or
 * return rp_no_bundle(err) from their own handler). */
int rp_handler_no_bundle(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                         rp_error *err);
int rp_no_bundle(rp_error *err);

/* ======================================================================== client */

typedef struct rp_client rp_client;

typedef struct rp_client_config {
    int64_t max_message_bytes; /* largest response accepted; <= 0 = 4 MiB */
    /* Separate TCP connections per rp_client (by default gRPC shares one connection
     * among channels with identical arguments in the process). */
    bool own_connections;
    /* TLS: ca = the CA of the servers (TLS on), cert+key = the client certificate for
     * mutual TLS (may be NULL). NULL = the process default of rp_ops_apply (plaintext
     * unless configured). Copied. */
    const struct rp_tls_pem *tls;
    bool plaintext; /* ignore the process TLS default */
} rp_client_config;

/* Creates a client (cfg may be NULL for defaults). Thread-safe once created. */
int rp_client_create(const rp_client_config *cfg, rp_client **out, rp_error *err);
/* Closes every channel. No call may be in progress. NULL is a no-op. */
void rp_client_destroy(rp_client *c);

/* A request header. */
typedef struct rp_md {
    const char *key; /* lower case: "authorization", "x-request-id" */
    const char *value;
} rp_md;

/* Options of one call; NULL = defaults. */
typedef struct rp_call_opts {
    int64_t timeout_ms; /* <= 0: no deadline (avoid it) */
    const rp_md *md;    /* extra request headers, copied at start */
    size_t nmd;
} rp_call_opts;

/* The outcome of a call as the server (or the transport) stated it. */
typedef struct rp_status {
    int code;      /* gRPC status code (RP_GRPC_*) */
    char msg[512]; /* status details, possibly empty */
} rp_status;

/*
 * A blocking unary call: sends req to method on target ("host:port" or
 * "h1:p1,h2:p2"), waits at most opts->timeout_ms, and on OK unpacks the response (of
 * type resp_desc) into arena: *resp is valid until the arena is reset or destroyed.
 * Returns RP_OK, or rp_err_from_grpc_status(st->code) for a non-OK status, RP_EPARSE
 * when the response does not parse (st->code is then INTERNAL), RP_EINVAL for an
 * unusable target. st (may be NULL) receives the status either way. Thread-safe.
 */
int rp_client_unary(rp_client *c, const char *target, const char *method,
                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                    rp_arena *arena, ProtobufCMessage **resp, const rp_call_opts *opts,
                    rp_status *st);

/* ---- asynchronous calls: start many, then drive them to completion ---- */

typedef struct rp_async rp_async;

/*
 * Called once per started call, from the thread driving rp_async_wait. rc and st are as
 * for rp_client_unary; resp (NULL unless rc == RP_OK) lives in the arena given at start.
 */
typedef void (*rp_async_cb)(void *user, int rc, ProtobufCMessage *resp, const rp_status *st);

/* A set of calls sharing one completion queue. One thread at a time uses it. Calls make
 * progress (connect, send, receive) only while some thread drives a queue: start them,
 * then rp_async_wait. */
int rp_async_create(rp_client *c, rp_async **out, rp_error *err);
/* Cancels and drains calls still pending (their callbacks run), then frees. NULL ok. */
void rp_async_destroy(rp_async *a);
/*
 * Starts a unary call; returns at once. The request is serialized before returning
 * (req may be freed then). The response is unpacked into arena, which must stay valid
 * and unused by other threads until the callback ran. When this returns an error the
 * callback is never called.
 */
int rp_async_start(rp_async *a, const char *target, const char *method,
                   const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                   rp_arena *arena, const rp_call_opts *opts, rp_async_cb cb, void *user,
                   rp_error *err);
/* Calls started and whose callback has not run yet. */
size_t rp_async_pending(const rp_async *a);
/*
 * Runs callbacks as calls complete until none is pending or timeout_ms passed
 * (timeout_ms < 0: no limit). At the timeout the calls still pending are cancelled and
 * their callbacks run with CANCELLED before this returns. A callback may start new calls
 * on the same rp_async (a closed loop); they are waited for too. Returns RP_OK when all
 * completed on their own, RP_ETIMEDOUT otherwise.
 */
int rp_async_wait(rp_async *a, int64_t timeout_ms);

#endif
