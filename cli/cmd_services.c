/*
 * recpipe retrieval | ranking — run a service with no bundle loaded.
 *
 * The service answers Health (NOT_SERVING), Admin.Status, and its business methods with
 * UNAVAILABLE "no bundle is loaded": what a Kubernetes readiness probe sees before a
 * bundle exists. A service that gains a real implementation moves its cmd_NAME out of
 * this file (its --bundle flag joins the same option rows).
 */
#include "cli.h"

#include "recpipe/v1/ranking.pb-c.h"
#include "recpipe/v1/retrieval.pb-c.h"
#include "rp/log.h"
#include "rp/rpc.h"
#include "rp/threads.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#ifndef RECPIPE_VERSION
#define RECPIPE_VERSION "0.0.0"
#endif

typedef struct service_def {
    const char *name;
    const char *default_listen;
    const char *summary;
    const rp_method *methods;
    size_t nmethods;
} service_def;

/* Writes the port to path atomically (a reader never sees a partial file). */
static int write_port_file(const char *path, int port, rp_error *err)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return rp_errorf(err, RP_EIO, "--port-file %s: %s", tmp, strerror(errno));
    int ok = fprintf(f, "%d\n", port) > 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return rp_errorf(err, RP_EIO, "--port-file %s: %s", path, strerror(errno));
    }
    return RP_OK;
}

static int serve_without_bundle(const service_def *def, int argc, char **argv)
{
    const char *listen = NULL, *log_level = NULL, *port_file = NULL;
    int64_t threads = 0, max_bytes = 0;
    double grace = 0;
    const rp_opt opts[] = {
        {"listen", RP_OPT_STR, &listen, def->default_listen, 0, 0,
         "address to serve on (host:port; port 0 picks a free port)", false},
        {"threads", RP_OPT_INT, &threads, "0", 0, 1024,
         "request threads (0 = the number of cores)", false},
        {"max-message-bytes", RP_OPT_INT, &max_bytes, "4194304", 1024, 2147483647,
         "largest request accepted; larger ones get RESOURCE_EXHAUSTED", false},
        {"grace", RP_OPT_DURATION, &grace, "10s", 0.001, 3600,
         "on SIGTERM/SIGINT, how long in-flight calls may take to finish", false},
        {"log-level", RP_OPT_STR, &log_level, "info", 0, 0,
         "debug, info (one access-log line per call), warn, error, off", false},
        {"port-file", RP_OPT_STR, &port_file, NULL, 0, 0,
         "write the bound port to this file once listening (for scripts using port 0)", false},
    };
    char usage[128], desc[512];
    snprintf(usage, sizeof usage, "%s [--listen ADDR] [options]", def->name);
    snprintf(desc, sizeof desc,
             "%s\nStarts with no bundle: Health answers NOT_SERVING, Admin.Status answers, and\n"
             "business methods answer UNAVAILABLE \"no bundle is loaded\". Logs JSON lines on\n"
             "stderr. SIGTERM/SIGINT drain in-flight calls (--grace) and exit 0.",
             def->summary);
    int rc = cli_parse(def->name, usage, desc, opts, sizeof opts / sizeof opts[0], argc, argv,
                       NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);
    rp_log_level lvl;
    if (rp_log_parse_level(log_level, &lvl) != RP_OK) {
        fprintf(stderr, "recpipe %s: --log-level: unknown level \"%s\" (debug, info, warn, "
                        "error, off)\nTry 'recpipe %s --help'.\n",
                def->name, log_level, def->name);
        return RP_EXIT_USAGE;
    }
    rp_log_set_level(lvl);
    rp_compute_threads(1);

    rp_server_config cfg = {
        .service = def->name,
        .version = RECPIPE_VERSION,
        .listen = listen,
        .threads = (int)threads,
        .max_message_bytes = max_bytes,
        .grace_s = grace,
    };
    rp_server *srv = NULL;
    rp_error err = {0};
    if ((rc = rp_server_start(&cfg, def->methods, def->nmethods, &srv, &err)) != RP_OK)
        return cli_fail(def->name, &err);
    if (port_file && (rc = write_port_file(port_file, rp_server_port(srv), &err)) != RP_OK) {
        rp_server_destroy(srv);
        return cli_fail(def->name, &err);
    }
    rp_info("cli", "%s started without a bundle: NOT_SERVING", def->name);
    rc = rp_server_run_until_signal(srv);
    rp_server_destroy(srv);
    if (port_file) remove(port_file);
    return rc == RP_OK ? RP_EXIT_OK : RP_EXIT_FAILURE;
}

static const rp_method ranking_methods[] = {
    {"/recpipe.v1.Ranking/Rank", &recpipe__v1__rank_request__descriptor,
     &recpipe__v1__rank_response__descriptor, rp_handler_no_bundle, NULL},
};

int cmd_ranking(int argc, char **argv)
{
    static const service_def def = {"ranking", "127.0.0.1:50052",
                                    "Serves recpipe.v1.Ranking (rescoring of candidates).",
                                    ranking_methods, 1};
    return serve_without_bundle(&def, argc, argv);
}
