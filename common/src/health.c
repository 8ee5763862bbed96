/*
 * health.c — grpc.health.v1.Health, built into every server.
 *
 * Check answers from the server's serving flag. Watch is a server-streaming call: it
 * sends the current status, then each change, until the caller cancels or the server
 * stops (which ends the stream with status OK so that the drain is not held up).
 * A stream has at most one message in flight; a change that happens meanwhile is sent
 * when that message completes. Stream state is guarded by the server's mu.
 */
#include "rpc_internal.h"

#include "grpc/health/v1/health.pb-c.h"
#include "rp/log.h"

#include <stdlib.h>
#include <string.h>

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving_status;

struct rp__watcher {
    rp__tag sent, closed, finished;
    rp_server *s;
    grpc_call *call;
    rp__watcher *next, *prev;
    grpc_byte_buffer *bb;
    grpc_slice details;
    int cancelled;
    int refs;          /* batches not yet completed */
    int last_sent;     /* -1 before the first message */
    bool known;        /* the requested service exists */
    bool sending;
    bool closed_seen;  /* the call is over (caller cancelled or status sent) */
    bool finishing;    /* end the stream once the message in flight completes */
    bool finish_sent;
};

bool rp__server_knows_service(const rp_server *s, const char *name)
{
    if (!name || !*name) return true;
    size_t n = strlen(name);
    for (size_t i = 0; i < s->nmethods; i++) {
        const char *p = s->methods[i].m.path + 1;
        if (!strncmp(p, name, n) && p[n] == '/') return true;
    }
    return false;
}

static serving_status current(const rp_server *s, bool known)
{
    if (!known) return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    return atomic_load(&s->serving) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                    : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

int rp__health_check(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                     rp_error *err)
{
    const Grpc__Health__V1__HealthCheckRequest *in = (const void *)req;
    rp_server *s = rp_call_server(call);
    if (!rp__server_knows_service(s, in->service))
        return rp_errorf(err, RP_ENOENT, "service: '%s' is not served here", in->service);
    Grpc__Health__V1__HealthCheckResponse *out = rp_arena_alloc(rp_call_arena(call), sizeof *out);
    if (!out) return rp_errorf(err, RP_ENOMEM, "out of memory for the answer");
    grpc__health__v1__health_check_response__init(out);
    out->status = current(s, true);
    *resp = &out->base;
    return RP_OK;
}

/* ---- Watch ---- */

static void maybe_free(rp__watcher *w)
{
    if (w->refs > 0) return;
    rp_server *s = w->s;
    if (w->prev) w->prev->next = w->next;
    else s->watchers = w->next;
    if (w->next) w->next->prev = w->prev;
    grpc_call_unref(w->call);
    grpc_slice_unref(w->details);
    free(w);
}

static void finish(rp__watcher *w)
{
    if (w->finish_sent || w->closed_seen) return;
    if (w->sending) {
        w->finishing = true;
        return;
    }
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op.data.send_status_from_server.status = GRPC_STATUS_OK;
    w->details = grpc_slice_from_static_string("the server is stopping");
    op.data.send_status_from_server.status_details = &w->details;
    if (grpc_call_start_batch(w->call, &op, 1, &w->finished, NULL) == GRPC_CALL_OK) {
        w->refs++;
        w->finish_sent = true;
    }
}

/* Sends the current status when it differs from the last one sent. mu held. */
static void send_current(rp__watcher *w)
{
    if (w->sending || w->closed_seen || w->finish_sent) return;
    int status = (int)current(w->s, w->known);
    if (status == w->last_sent) return;
    Grpc__Health__V1__HealthCheckResponse msg = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    msg.status = (serving_status)status;
    uint8_t buf[16];
    size_t len = grpc__health__v1__health_check_response__pack(&msg, buf);
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)buf, len);
    w->bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = w->bb;
    if (grpc_call_start_batch(w->call, &op, 1, &w->sent, NULL) != GRPC_CALL_OK) {
        grpc_byte_buffer_destroy(w->bb);
        w->bb = NULL;
        return;
    }
    w->refs++;
    w->sending = true;
    w->last_sent = status;
}

static void on_sent(rp__tag *t, bool ok)
{
    rp__watcher *w = RP__CONTAINER(t, rp__watcher, sent);
    rp_server *s = w->s; /* w may be freed below */
    pthread_mutex_lock(&s->mu);
    w->refs--;
    w->sending = false;
    grpc_byte_buffer_destroy(w->bb);
    w->bb = NULL;
    if (ok) {
        /* A change that came while this message was in flight goes out before the end. */
        send_current(w);
        if (w->finishing) finish(w);
    }
    maybe_free(w);
    pthread_mutex_unlock(&s->mu);
}

static void on_closed(rp__tag *t, bool ok)
{
    rp__watcher *w = RP__CONTAINER(t, rp__watcher, closed);
    rp_server *s = w->s; /* w may be freed below */
    (void)ok;
    pthread_mutex_lock(&s->mu);
    w->refs--;
    w->closed_seen = true;
    maybe_free(w);
    pthread_mutex_unlock(&s->mu);
}

static void on_finished(rp__tag *t, bool ok)
{
    rp__watcher *w = RP__CONTAINER(t, rp__watcher, finished);
    rp_server *s = w->s; /* w may be freed below */
    (void)ok;
    pthread_mutex_lock(&s->mu);
    w->refs--;
    maybe_free(w);
    pthread_mutex_unlock(&s->mu);
}

void rp__health_watch_start(rp_call *call, const ProtobufCMessage *req)
{
    const Grpc__Health__V1__HealthCheckRequest *in = (const void *)req;
    rp_server *s = rp_call_server(call);
    rp__watcher *w = calloc(1, sizeof *w);
    if (!w) {
        /* Cannot track the stream: cancel it so the caller sees a status. */
        grpc_call_cancel_with_status(call->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "out of memory for a Health/Watch stream", NULL);
        grpc_call_unref(call->call);
        return;
    }
    w->sent.cb = on_sent;
    w->closed.cb = on_closed;
    w->finished.cb = on_finished;
    w->s = s;
    w->call = call->call;
    w->last_sent = -1;
    w->known = rp__server_knows_service(s, in->service);
    w->details = grpc_empty_slice();

    pthread_mutex_lock(&s->mu);
    w->next = s->watchers;
    if (s->watchers) s->watchers->prev = w;
    s->watchers = w;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[1].data.recv_close_on_server.cancelled = &w->cancelled;
    if (grpc_call_start_batch(w->call, ops, 2, &w->closed, NULL) == GRPC_CALL_OK) {
        w->refs++;
        send_current(w);
        if (atomic_load(&s->stopping)) finish(w);
    }
    maybe_free(w);
    pthread_mutex_unlock(&s->mu);
}

void rp__health_notify(rp_server *s)
{
    pthread_mutex_lock(&s->mu);
    for (rp__watcher *w = s->watchers; w; w = w->next) send_current(w);
    pthread_mutex_unlock(&s->mu);
}

void rp__health_end_watchers(rp_server *s)
{
    pthread_mutex_lock(&s->mu);
    for (rp__watcher *w = s->watchers; w; w = w->next) finish(w);
    pthread_mutex_unlock(&s->mu);
}
