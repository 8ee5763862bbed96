/*
 * rpc_client.c — unary calls over the gRPC C core: blocking (a private pluck queue per
 * call) and asynchronous (an rp_async's queue, a callback per call).
 *
 * Channels are created on first use of a target and kept until the client is destroyed;
 * a target "a:1,b:2" holds one channel per address and spreads calls round robin.
 */
#include "rpc_internal.h"
#include "rp/ops.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct chanset {
    struct chanset *next;
    char *target;
    size_t n;
    grpc_channel **ch;
    atomic_uint rr;
} chanset;

struct rp_client {
    pthread_mutex_t mu;
    chanset *sets;
    grpc_arg argv[4];
    grpc_channel_args args;
    grpc_channel_credentials *creds; /* shared by every channel; insecure or ssl */
};

int rp_client_create(const rp_client_config *cfg, rp_client **out, rp_error *err)
{
    *out = NULL;
    rp_client *c = calloc(1, sizeof *c);
    if (!c) return rp_errorf(err, RP_ENOMEM, "out of memory for the client");
    int64_t max = cfg && cfg->max_message_bytes > 0 ? cfg->max_message_bytes
                                                    : RP_DEFAULT_MAX_MESSAGE_BYTES;
    if (max > INT32_MAX) {
        free(c);
        return rp_errorf(err, RP_EINVAL, "max message bytes: %" PRId64 " is above the limit %d",
                         max, INT32_MAX);
    }
    grpc_init();
    pthread_mutex_init(&c->mu, NULL);
    size_t n = 0;
    c->argv[n].type = GRPC_ARG_INTEGER;
    c->argv[n].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    c->argv[n++].value.integer = (int)max;
    c->argv[n].type = GRPC_ARG_INTEGER;
    c->argv[n].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    c->argv[n++].value.integer = -1;
    /* A name that resolves to several addresses (a headless Service: every replica of a
     * shard) is balanced call by call rather than pinned to the first address. */
    c->argv[n].type = GRPC_ARG_STRING;
    c->argv[n].key = (char *)GRPC_ARG_SERVICE_CONFIG;
    c->argv[n++].value.string = (char *)"{\"loadBalancingConfig\":[{\"round_robin\":{}}]}";
    if (cfg && cfg->own_connections) {
        c->argv[n].type = GRPC_ARG_INTEGER;
        c->argv[n].key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
        c->argv[n++].value.integer = 1;
    }
    c->args.num_args = n;
    c->args.args = c->argv;
    const rp_tls_pem *tls = cfg && cfg->tls ? cfg->tls
                            : cfg && cfg->plaintext ? NULL : rp_ops_client_tls();
    if (tls) {
        if ((tls->cert != NULL) != (tls->key != NULL)) {
            rp_client_destroy(c);
            return rp_errorf(err, RP_EINVAL, "client TLS: a client certificate needs its key "
                             "(--tls-client-cert, --tls-client-key)");
        }
        grpc_ssl_pem_key_cert_pair pair = {tls->key, tls->cert};
        c->creds = grpc_ssl_credentials_create(tls->ca, tls->cert ? &pair : NULL, NULL, NULL);
    } else {
        c->creds = grpc_insecure_credentials_create();
    }
    if (!c->creds) {
        rp_client_destroy(c);
        return rp_errorf(err, RP_EINVAL, "client TLS: gRPC refused the CA or client certificate");
    }
    *out = c;
    return RP_OK;
}

void rp_client_destroy(rp_client *c)
{
    if (!c) return;
    while (c->sets) {
        chanset *cs = c->sets;
        c->sets = cs->next;
        for (size_t i = 0; i < cs->n; i++) grpc_channel_destroy(cs->ch[i]);
        free(cs->ch);
        free(cs->target);
        free(cs);
    }
    if (c->creds) grpc_channel_credentials_release(c->creds);
    pthread_mutex_destroy(&c->mu);
    free(c);
    grpc_shutdown();
}

static chanset *chanset_new(const rp_client *c, const char *target, rp_error *err)
{
    chanset *cs = calloc(1, sizeof *cs);
    char *copy = strdup(target);
    if (!cs || !copy || !(cs->target = strdup(target))) goto nomem;
    size_t cap = 1;
    for (const char *p = target; *p; p++) cap += *p == ',';
    cs->ch = calloc(cap, sizeof *cs->ch);
    if (!cs->ch) goto nomem;
    grpc_channel_credentials *creds = c->creds;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        size_t len = strlen(tok);
        while (len && tok[len - 1] == ' ') tok[--len] = '\0';
        if (!len) continue;
        cs->ch[cs->n++] = grpc_channel_create(tok, creds, &c->args);
    }
    free(copy);
    if (cs->n == 0) {
        free(cs->ch);
        free(cs->target);
        free(cs);
        rp_errorf(err, RP_EINVAL, "target '%s' lists no address (\"host:port[,host:port...]\")",
                  target);
        return NULL;
    }
    return cs;
nomem:
    free(copy);
    if (cs) {
        free(cs->target);
        free(cs);
    }
    rp_errorf(err, RP_ENOMEM, "out of memory for target '%s'", target);
    return NULL;
}

/* The next channel of target, creating its channels on first use. */
static grpc_channel *channel_for(rp_client *c, const char *target, rp_error *err)
{
    pthread_mutex_lock(&c->mu);
    chanset *cs = c->sets;
    while (cs && strcmp(cs->target, target)) cs = cs->next;
    if (!cs) {
        cs = chanset_new(c, target, err);
        if (cs) {
            cs->next = c->sets;
            c->sets = cs;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (!cs) return NULL;
    unsigned i = cs->n == 1 ? 0 : atomic_fetch_add(&cs->rr, 1) % (unsigned)cs->n;
    return cs->ch[i];
}

/* ------------------------------------------------------------------ one call */

typedef struct ccall {
    rp__tag tag;
    struct ccall *next, *prev;
    grpc_call *call;
    grpc_byte_buffer *send_bb, *recv_bb;
    grpc_metadata_array init_md, trailing_md;
    grpc_metadata *md;
    size_t nmd;
    grpc_status_code status;
    grpc_slice details;
    const ProtobufCMessageDescriptor *resp_desc;
    rp_arena *arena;
    rp_async *a;
    rp_async_cb cb;
    void *user;
} ccall;

static void ccall_free(ccall *x)
{
    if (x->call) grpc_call_unref(x->call);
    if (x->send_bb) grpc_byte_buffer_destroy(x->send_bb);
    if (x->recv_bb) grpc_byte_buffer_destroy(x->recv_bb);
    grpc_metadata_array_destroy(&x->init_md);
    grpc_metadata_array_destroy(&x->trailing_md);
    for (size_t i = 0; i < x->nmd; i++) {
        grpc_slice_unref(x->md[i].key);
        grpc_slice_unref(x->md[i].value);
    }
    free(x->md);
    grpc_slice_unref(x->details);
    free(x);
}

/* Creates the call on cq and starts its one batch; the batch's completion is the answer.
 * On error nothing was started and x is still the caller's. */
static int ccall_start(rp_client *c, grpc_completion_queue *cq, ccall *x, const char *target,
                       const char *method, const ProtobufCMessage *req,
                       const rp_call_opts *opts, rp_error *err)
{
    grpc_metadata_array_init(&x->init_md);
    grpc_metadata_array_init(&x->trailing_md);
    x->details = grpc_empty_slice();
    x->status = GRPC_STATUS_UNKNOWN;
    grpc_channel *ch = channel_for(c, target, err);
    if (!ch) return err ? err->code : RP_EINVAL;
    if (!method || method[0] != '/')
        return rp_errorf(err, RP_EINVAL, "method '%s' is not \"/package.Service/Method\"",
                         method ? method : "(null)");

    size_t len = protobuf_c_message_get_packed_size(req);
    grpc_slice body = grpc_slice_malloc(len);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(body));
    x->send_bb = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);

    if (opts && opts->nmd) {
        x->md = calloc(opts->nmd, sizeof *x->md);
        if (!x->md) return rp_errorf(err, RP_ENOMEM, "out of memory for request headers");
        for (size_t i = 0; i < opts->nmd; i++) {
            x->md[i].key = grpc_slice_from_copied_string(opts->md[i].key);
            x->md[i].value = grpc_slice_from_copied_string(opts->md[i].value);
            x->nmd++;
        }
    }
    gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_REALTIME);
    if (opts && opts->timeout_ms > 0)
        deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                gpr_time_from_millis(opts->timeout_ms, GPR_TIMESPAN));
    grpc_slice m = grpc_slice_from_copied_string(method);
    x->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, deadline,
                                       NULL);
    grpc_slice_unref(m);
    if (!x->call) return rp_errorf(err, RP_EINTERNAL, "cannot create a call to %s", method);

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = x->nmd;
    ops[0].data.send_initial_metadata.metadata = x->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = x->send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &x->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &x->recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &x->trailing_md;
    ops[5].data.recv_status_on_client.status = &x->status;
    ops[5].data.recv_status_on_client.status_details = &x->details;
    grpc_call_error e = grpc_call_start_batch(x->call, ops, 6, &x->tag, NULL);
    if (e != GRPC_CALL_OK)
        return rp_errorf(err, RP_EINTERNAL, "cannot start a call to %s (grpc_call_error %d)",
                         method, (int)e);
    return RP_OK;
}

/* Turns a completed batch into rc, *resp and st. */
static int ccall_finish(ccall *x, bool ok, ProtobufCMessage **resp, rp_status *st)
{
    rp_status local;
    if (!st) st = &local;
    *resp = NULL;
    st->code = ok ? (int)x->status : RP_GRPC_INTERNAL;
    size_t n = GRPC_SLICE_LENGTH(x->details);
    if (n >= sizeof st->msg) n = sizeof st->msg - 1;
    memcpy(st->msg, GRPC_SLICE_START_PTR(x->details), n);
    st->msg[n] = '\0';
    if (!ok) {
        snprintf(st->msg, sizeof st->msg, "the call failed inside gRPC");
        return RP_EINTERNAL;
    }
    if (st->code != RP_GRPC_OK) return rp_err_from_grpc_status(st->code);
    if (!x->recv_bb) {
        st->code = RP_GRPC_INTERNAL;
        snprintf(st->msg, sizeof st->msg, "the server answered OK without a message");
        return RP_EPARSE;
    }
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, x->recv_bb)) {
        st->code = RP_GRPC_INTERNAL;
        snprintf(st->msg, sizeof st->msg, "the response could not be decompressed");
        return RP_EPARSE;
    }
    grpc_slice raw = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCAllocator alloc;
    rp_arena_pb_allocator(x->arena, &alloc);
    *resp = protobuf_c_message_unpack(x->resp_desc, &alloc, GRPC_SLICE_LENGTH(raw),
                                      GRPC_SLICE_START_PTR(raw));
    grpc_slice_unref(raw);
    if (!*resp) {
        st->code = RP_GRPC_INTERNAL;
        snprintf(st->msg, sizeof st->msg, "the response is not a valid %s message (or the "
                 "arena is full)", x->resp_desc->name);
        return RP_EPARSE;
    }
    return RP_OK;
}

int rp_client_unary(rp_client *c, const char *target, const char *method,
                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                    rp_arena *arena, ProtobufCMessage **resp, const rp_call_opts *opts,
                    rp_status *st)
{
    rp_status local;
    if (!st) st = &local;
    *resp = NULL;
    ccall *x = calloc(1, sizeof *x);
    if (!x) {
        st->code = RP_GRPC_RESOURCE_EXHAUSTED;
        snprintf(st->msg, sizeof st->msg, "out of memory for a call");
        return RP_ENOMEM;
    }
    x->resp_desc = resp_desc;
    x->arena = arena;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    rp_error err = {0};
    int rc = ccall_start(c, cq, x, target, method, req, opts, &err);
    if (rc != RP_OK) {
        st->code = rp_err_grpc_status(rc);
        snprintf(st->msg, sizeof st->msg, "%s", rp_error_text(&err));
    } else {
        grpc_event ev = grpc_completion_queue_pluck(cq, &x->tag, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                    NULL);
        rc = ccall_finish(x, ev.type == GRPC_OP_COMPLETE && ev.success, resp, st);
    }
    ccall_free(x);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_completion_queue_destroy(cq);
    return rc;
}

/* ------------------------------------------------------------------ async */

struct rp_async {
    rp_client *c;
    grpc_completion_queue *cq;
    ccall *pending; /* doubly linked */
    size_t npending;
};

int rp_async_create(rp_client *c, rp_async **out, rp_error *err)
{
    *out = NULL;
    rp_async *a = calloc(1, sizeof *a);
    if (!a) return rp_errorf(err, RP_ENOMEM, "out of memory for an async call set");
    a->c = c;
    a->cq = grpc_completion_queue_create_for_next(NULL);
    *out = a;
    return RP_OK;
}

int rp_async_start(rp_async *a, const char *target, const char *method,
                   const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                   rp_arena *arena, const rp_call_opts *opts, rp_async_cb cb, void *user,
                   rp_error *err)
{
    ccall *x = calloc(1, sizeof *x);
    if (!x) return rp_errorf(err, RP_ENOMEM, "out of memory for a call");
    x->resp_desc = resp_desc;
    x->arena = arena;
    x->a = a;
    x->cb = cb;
    x->user = user;
    int rc = ccall_start(a->c, a->cq, x, target, method, req, opts, err);
    if (rc != RP_OK) {
        ccall_free(x);
        return rc;
    }
    x->next = a->pending;
    if (a->pending) a->pending->prev = x;
    a->pending = x;
    a->npending++;
    return RP_OK;
}

size_t rp_async_pending(const rp_async *a)
{
    return a->npending;
}

static void async_complete(rp_async *a, ccall *x, bool ok)
{
    if (x->prev) x->prev->next = x->next;
    else a->pending = x->next;
    if (x->next) x->next->prev = x->prev;
    a->npending--;
    ProtobufCMessage *resp = NULL;
    rp_status st;
    int rc = ccall_finish(x, ok, &resp, &st);
    rp_async_cb cb = x->cb;
    void *user = x->user;
    ccall_free(x);
    if (cb) cb(user, rc, resp, &st);
}

int rp_async_wait(rp_async *a, int64_t timeout_ms)
{
    gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_REALTIME);
    if (timeout_ms >= 0)
        deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    bool timed_out = false;
    while (a->npending > 0) {
        grpc_event ev = grpc_completion_queue_next(a->cq, deadline, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            timed_out = true;
            for (ccall *x = a->pending; x; x = x->next) grpc_call_cancel(x->call, NULL);
            deadline = gpr_inf_future(GPR_CLOCK_REALTIME);
            continue;
        }
        if (ev.type != GRPC_OP_COMPLETE) break;
        async_complete(a, RP__CONTAINER(ev.tag, ccall, tag), ev.success != 0);
    }
    return timed_out ? RP_ETIMEDOUT : RP_OK;
}

void rp_async_destroy(rp_async *a)
{
    if (!a) return;
    for (ccall *x = a->pending; x; x = x->next) grpc_call_cancel(x->call, NULL);
    rp_async_wait(a, -1);
    grpc_completion_queue_shutdown(a->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(a->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    }
    grpc_completion_queue_destroy(a->cq);
    free(a);
}
