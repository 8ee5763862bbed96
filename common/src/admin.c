/*
 * admin.c — recpipe.v1.Admin as built into every server: Status filled from the
 * server's counters plus the service's hook; the other methods answer UNIMPLEMENTED
 * unless the service's method table lists them.
 */
#include "rpc_internal.h"

#include "recpipe/v1/admin.pb-c.h"

#include <malloc.h>

int rp__admin_status(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                     rp_error *err)
{
    (void)req;
    rp_server *s = rp_call_server(call);
    rp_arena *a = rp_call_arena(call);
    Recpipe__V1__StatusResponse *out = rp_arena_alloc(a, sizeof *out);
    if (!out) return rp_errorf(err, RP_ENOMEM, "out of memory for the answer");
    recpipe__v1__status_response__init(out);
    rp_server_stats st;
    rp_server_get_stats(s, &st);
    out->service = s->service;
    out->software_version = s->version;
    out->serving = rp_server_serving(s);
    out->uptime_seconds = st.uptime_s;
    out->calls_total = st.calls_total;
    out->calls_failed = st.calls_failed;
    out->in_flight = st.in_flight;
    struct mallinfo2 mi = mallinfo2();
    out->heap_in_use_bytes = mi.uordblks + mi.hblkhd;
    out->heap_free_bytes = mi.fordblks;
    if (s->status_hook) s->status_hook(s->status_user, out, a);
    *resp = &out->base;
    return RP_OK;
}

int rp__admin_unimplemented(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                            rp_error *err)
{
    (void)req;
    (void)resp;
    rp_server *s = rp_call_server(call);
    return rp_errorf(err, RP_EUNIMPL, "%s is not served by the %s service", rp_call_method(call),
                     s->service[0] ? s->service : "this");
}
