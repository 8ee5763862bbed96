/* rpc_internal.h — what the files of the RPC layer share (rpc_server.c, health.c, admin.c). */
#ifndef RP_RPC_INTERNAL_H
#define RP_RPC_INTERNAL_H

#include "rp/metrics.h"
#include "rp/rpc.h"
#include "rpc_queue.h"

#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>

/* A completion-queue tag: every tag the layer posts embeds one; the worker loop calls
 * tag->cb(tag, ok). */
typedef struct rp__tag rp__tag;
struct rp__tag {
    void (*cb)(rp__tag *tag, bool ok);
};

#define RP__CONTAINER(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

typedef enum rp__kind {
    RP__UNARY = 0,  /* the method table's handler */
    RP__WATCH = 1,  /* grpc.health.v1.Health/Watch (server streaming) */
} rp__kind;

/* A registered method: a row of the service's table or a built-in. */
typedef struct rp__method {
    rp_method m;
    rp__kind kind;
    void *handle; /* grpc_server_register_method */
    bool admin;   /* bearer token required */
    bool exempt;  /* health checks: not subject to the in-flight cap */
    bool io;      /* waits on disk: runs in the I/O lane (rp_server_config.io_methods) */
    rp_series *duration;                /* recpipe_rpc_duration_seconds */
    _Atomic(rp_series *) calls[17];     /* recpipe_rpc_calls_total by status, lazily */
} rp__method;

typedef struct rp__worker rp__worker;

/* One call slot, then the call that arrived in it. Its events come one after the other,
 * possibly on different threads (admission, then the worker that takes it from the
 * queue), so it is never touched by two threads at once. */
struct rp_call {
    rp__tag arrived;  /* the requested call matched (on the admission thread) */
    rp__tag done;     /* the answering batch completed */
    rp__qnode qnode; /* in the server's queue of calls waiting for a worker */
    rp_server *srv;
    const rp__method *method; /* NULL for a generic (unknown method) slot */
    rp_call *next_free;

    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* generic slots only */

    rp_arena *arena;
    ProtobufCAllocator alloc;
    uint64_t t_start_ns; /* arrival */
    uint64_t t_run_ns;   /* a worker took it (0 until then) */
    uint64_t deadline_ns;
    char peer[64]; /* filled on first use */
    char request_id[40];
    bool id_from_caller; /* echo it in the response headers */

    /* the answer */
    grpc_metadata resp_md[1];
    grpc_byte_buffer *resp_bb;
    grpc_slice status_details;
    int status;
    int cancelled;
    bool no_message; /* answered INVALID_ARGUMENT for carrying no message */
};

struct rp__worker {
    rp_server *srv;
    int index;
    pthread_t thread;
};

typedef struct rp__watcher rp__watcher;

struct rp_server {
    char *service, *version, *listen, *bound_address;
    int port;
    int nthreads;
    int64_t max_message_bytes;
    double grace_s;
    rp_status_hook status_hook;
    void *status_user;
    char *admin_token; /* NULL: admin methods are open */
    int64_t max_in_flight;
    bool tls, mtls;
    rp_series *m_in_flight, *m_rejected;
    rp__method unknown_m; /* metrics of calls to unknown methods (method="unknown") */
    bool metrics_hooked;
    /* Bundle load times for the metrics: wall ns of the last load, the duration of the
     * last Admin.Reload; last_version is touched only by the metrics hook. */
    _Atomic int64_t bundle_loaded_wall_ns;
    _Atomic uint64_t reload_duration_bits;
    char last_version[128];
    int64_t last_scrape_wall_ns;

    rp__method *methods;
    size_t nmethods;
    grpc_server *server;
    grpc_completion_queue *cq; /* shared by every worker */
    rp__worker *workers;
    int nworkers_started;
    /* Admission: calls arrive on acq, driven by one thread that posts the next slot,
     * applies the in-flight cap and appends the call to the queue below, then starts an
     * empty batch tagged `token` whose completion lands on cq: each token a worker takes
     * lets it take one call from the queue (which one is the queue's policy). */
    grpc_completion_queue *acq;
    pthread_t admit_thread;
    bool admit_started;
    rp__tag token;
    pthread_mutex_t qmu; /* guards queue, io_queue and io_running */
    rp__queue queue;     /* its target 0: no shedding, strict FIFO */
    /* The I/O lane: calls of io methods wait here, and at most io_max of them run at
     * once, so that a stalled disk holds io_max workers, not all of them. */
    rp__queue io_queue;
    int io_max, io_running;
    int worker_nice; /* 0: workers at the process's priority */
    rp_series *m_shed_queue;
    /* The heap trimmer (malloc_trim every RP__HEAP_TRIM_S), stopped under mu. */
    pthread_t trim_thread;
    bool trim_started, trim_stop;
    pthread_cond_t trim_cv;
    /* Call structs ready for reuse (with their arenas), any thread. */
    pthread_mutex_t spare_mu;
    rp_call *spare;
    size_t nspare;
    size_t spare_low; /* the fewest spares since the trimmer's last pass: unused all along */
    bool started; /* grpc_server_start was called */

    atomic_bool serving;
    atomic_bool stopping;
    atomic_uint_fast64_t calls_total, calls_failed;
    atomic_uint in_flight;
    atomic_int slots_outstanding; /* posted, not yet filled or failed */
    uint64_t start_ns;

    /* shutdown notification */
    rp__tag shutdown_tag;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool shutdown_done;
    bool stopped;
    int stop_rc;

    /* Health/Watch streams, under mu */
    rp__watcher *watchers;
};

/* health.c */
int rp__health_check(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                     rp_error *err);
/* Takes over call->call for a Watch stream; the slot is recycled by the caller. */
void rp__health_watch_start(rp_call *call, const ProtobufCMessage *req);
/* Sends the current status to every Watch stream (mu held by caller: no). */
void rp__health_notify(rp_server *s);
/* Ends every Watch stream with status OK (stopping). */
void rp__health_end_watchers(rp_server *s);
/* True when name is "" or a service whose methods this server answers. */
bool rp__server_knows_service(const rp_server *s, const char *name);

/* admin.c */
int rp__admin_status(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                     rp_error *err);
int rp__admin_unimplemented(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                            rp_error *err);

#endif
