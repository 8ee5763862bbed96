/*
 * recpipe retrieval — run the Retrieval service over one bundle (or one shard of it).
 *
 *   recpipe retrieval --bundle BUNDLE_DIR --listen ADDR [--shard I] [options]
 *
 * Serves recpipe.v1.Retrieval/Retrieve and Admin.Reload / UpsertItems / DeleteItems
 * (ret/service.h). SIGHUP re-reads --bundle (which may be a symlink a publisher flips).
 * Without --bundle the service starts empty: Health NOT_SERVING, Retrieve UNAVAILABLE.
 */
#include "cli.h"

#include "recpipe/v1/retrieval.pb-c.h"
#include "ret/service.h"
#include "rp/log.h"
#include "rp/ops.h"
#include "rp/rpc.h"
#include "rp/threads.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#ifndef RECPIPE_VERSION
#define RECPIPE_VERSION "0.0.0"
#endif

static const rp_method no_bundle_methods[] = {
    {"/recpipe.v1.Retrieval/Retrieve", &recpipe__v1__retrieve_request__descriptor,
     &recpipe__v1__retrieve_response__descriptor, rp_handler_no_bundle, NULL},
};

int cmd_retrieval(int argc, char **argv)
{
    const char *listen = NULL, *log_level = NULL, *port_file = NULL, *bundle = NULL;
    int64_t threads = 0, max_bytes = 0, shard = 0, exact_max = 0, max_widen = 0;
    rp_ops_flags ops = {0};
    double grace = 0, overfetch = 0, wide = 0, pop_half_life = 0, content_q = 0;
    const rp_opt opts[] = {
        {"bundle", RP_OPT_STR, &bundle, NULL, 0, 0,
         "bundle directory to serve (may be a symlink; SIGHUP re-reads it)", false},
        {"listen", RP_OPT_STR, &listen, "127.0.0.1:50051", 0, 0,
         "address to serve on (host:port; port 0 picks a free port)", false},
        {"shard", RP_OPT_INT, &shard, "0", 0, 65535, "the shard of the bundle to serve", false},
        {"threads", RP_OPT_INT, &threads, "0", 0, 1024,
         "request threads (0 = the number of cores); BLAS/OpenMP run 1 thread each", false},
        {"exact-max", RP_OPT_INT, &exact_max, "20000", 0, 100000000,
         "filtered search scans exactly when a filter admits at most this many items", false},
        {"overfetch", RP_OPT_DOUBLE, &overfetch, "1.5", 1, 100,
         "filtered ANN fetches (k + exclusions) / selectivity x this", false},
        {"max-widen", RP_OPT_INT, &max_widen, "3", 0, 10,
         "x4 widenings of a filtered ANN search before an exact scan", false},
        {"wide-factor", RP_OPT_DOUBLE, &wide, "2", 0, 64,
         "over-fetching searches use a second index copy with nprobe/efSearch x this (<= 1: off)",
         false},
        {"content-quantile", RP_OPT_DOUBLE, &content_q, "1", 0.01, 1,
         "upserts without an embedding get their categories' direction with this quantile of "
         "their items' lengths (1 = the longest)", false},
        {"popular-half-life", RP_OPT_DOUBLE, &pop_half_life, "0", 0, 36500,
         "days: popularity decays with the bundle's age (0 = no decay)", false},
        {"max-message-bytes", RP_OPT_INT, &max_bytes, "4194304", 1024, 2147483647,
         "largest request accepted; larger ones get RESOURCE_EXHAUSTED", false},
        {"grace", RP_OPT_DURATION, &grace, "10s", 0.001, 3600,
         "on SIGTERM/SIGINT, how long in-flight calls may take to finish", false},
        {"log-level", RP_OPT_STR, &log_level, "info", 0, 0,
         "debug, info (one access-log line per call), warn, error, off", false},
        {"port-file", RP_OPT_STR, &port_file, NULL, 0, 0,
         "write the bound port to this file once listening (for scripts using port 0)", false},
        RP_OPS_METRICS_OPTS(ops), RP_OPS_TOKEN_OPTS(ops), RP_OPS_SERVER_OPTS(ops),
    };
    int rc = cli_parse("retrieval", "retrieval --bundle BUNDLE_DIR [--listen ADDR] [--shard I] [options]",
                       "Serves recpipe.v1.Retrieval (one shard of a bundle) and Admin.Reload,\n"
                       "UpsertItems, DeleteItems. SIGHUP reloads --bundle; SIGTERM/SIGINT drain\n"
                       "in-flight calls (--grace) and exit 0. Without --bundle the service starts\n"
                       "empty (Health NOT_SERVING, Retrieve UNAVAILABLE). Logs JSON lines on stderr.",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);
    rp_log_level lvl;
    if (rp_log_parse_level(log_level, &lvl) != RP_OK) {
        fprintf(stderr, "recpipe retrieval: --log-level: unknown level \"%s\" (debug, info, warn, "
                        "error, off)\nTry 'recpipe retrieval --help'.\n",
                log_level);
        return RP_EXIT_USAGE;
    }
    rp_log_set_level(lvl);
    rp_compute_threads(1);
    rp_malloc_tune(); /* before the bundle loads: its buffers are mmapped (rp/rpc.h) */
    rp_error err = {0};
    if ((rc = rp_ops_apply(&ops, &err)) != RP_OK) return cli_fail("retrieval", &err);
    ret_service *svc = NULL;
    const rp_method *methods = no_bundle_methods;
    size_t nmethods = 1;
    if (bundle) {
        ret_service_opts so = {.bundle_path = bundle, .shard = (uint32_t)shard,
                               .search = {(uint32_t)exact_max, (float)overfetch, (uint32_t)max_widen,
                                          pop_half_life, false},
                               .wide_factor = wide <= 1 ? -1.0f : (float)wide,
                               .content_quantile = content_q};
        if ((rc = ret_service_create(&so, &svc, &err)) != RP_OK) return cli_fail("retrieval", &err);
        methods = ret_service_methods(svc, &nmethods);
    }
    rp_server_config cfg = {
        .service = "retrieval",
        .version = RECPIPE_VERSION,
        .listen = listen,
        .threads = (int)threads,
        .max_message_bytes = max_bytes,
        .grace_s = grace,
        .status_hook = svc ? ret_service_status_hook : NULL,
        .status_user = svc,
    };
    rp_server *srv = NULL;
    if ((rc = rp_server_start(&cfg, methods, nmethods, &srv, &err)) != RP_OK) {
        ret_service_destroy(svc);
        return cli_fail("retrieval", &err);
    }
    if (svc && (rc = ret_service_watch_sighup(svc, &err)) != RP_OK) goto fail;
    if (port_file && (rc = cli_write_port_file(port_file, rp_server_port(srv), &err)) != RP_OK) goto fail;
    if (svc) {
        char ver[64];
        ret_service_version(svc, ver, sizeof ver);
        rp_server_set_serving(srv, true);
        rp_info("cli", "retrieval serving bundle %s version %s, shard %lld", bundle, ver, (long long)shard);
    } else {
        rp_info("cli", "retrieval started without a bundle: NOT_SERVING");
    }
    rc = rp_server_run_until_signal(srv);
    rp_server_destroy(srv);
    ret_service_destroy(svc);
    if (port_file) remove(port_file);
    return rc == RP_OK ? RP_EXIT_OK : RP_EXIT_FAILURE;
fail:
    rp_server_destroy(srv);
    ret_service_destroy(svc);
    return cli_fail("retrieval", &err);
}
