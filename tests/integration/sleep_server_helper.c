/*
 * A server on the RPC layer with one slow method, run as a child process by
 * test_services to check the SIGTERM drain of rp_server_run_until_signal in a real
 * process. usage: rp_sleep_server LISTEN THREADS GRACE_S
 * /recpipe.test.Sleep/Sleep takes a ReloadRequest whose bundle_path is a number of
 * milliseconds, sleeps that long and answers a ReloadResponse with bundle_version "slept".
 */
#include "recpipe/v1/admin.pb-c.h"
#include "rp/clock.h"
#include "rp/log.h"
#include "rp/rpc.h"

#include <stdio.h>
#include <stdlib.h>

static int sleep_handler(rp_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                         rp_error *err)
{
    const Recpipe__V1__ReloadRequest *in = (const void *)req;
    long ms = strtol(in->bundle_path, NULL, 10);
    if (ms < 0 || ms > 60000) return rp_errorf(err, RP_EINVAL, "bundle_path: %ld ms is out of 0..60000", ms);
    rp_sleep_ns((uint64_t)ms * 1000000ull);
    Recpipe__V1__ReloadResponse *out = rp_arena_alloc(rp_call_arena(call), sizeof *out);
    if (!out) return rp_errorf(err, RP_ENOMEM, "arena");
    recpipe__v1__reload_response__init(out);
    out->bundle_version = "slept";
    *resp = &out->base;
    return RP_OK;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: rp_sleep_server LISTEN THREADS GRACE_S\n");
        return 2;
    }
    static const rp_method methods[] = {
        {"/recpipe.test.Sleep/Sleep", &recpipe__v1__reload_request__descriptor,
         &recpipe__v1__reload_response__descriptor, sleep_handler, NULL},
    };
    rp_server_config cfg = {.service = "sleep",
                            .version = "test",
                            .listen = argv[1],
                            .threads = atoi(argv[2]),
                            .grace_s = atof(argv[3])};
    rp_server *s;
    rp_error err = {0};
    if (rp_server_start(&cfg, methods, 1, &s, &err) != RP_OK) {
        fprintf(stderr, "rp_sleep_server: %s\n", rp_error_text(&err));
        return 1;
    }
    rp_server_set_serving(s, true);
    int rc = rp_server_run_until_signal(s);
    rp_server_destroy(s);
    return rc == RP_OK ? 0 : 1;
}
