/* recpipe gateway: the Recommender service (gw/service.h). Without --bundle it starts
 * anyway: Health NOT_SERVING, Admin.Status answers, the Recommender RPCs answer
 * UNAVAILABLE "no bundle is loaded". */
#include "cli.h"
#include "gw/service.h"
#include "recpipe/v1/recommender.pb-c.h"
#include "rp/log.h"
#include "rp/rpc.h"
#include "rp/ops.h"
#include "rp/threads.h"

#include <stdio.h>
#include <string.h>

static const rp_method no_bundle_methods[] = {
    {"/recpipe.v1.Recommender/Recommend", &recpipe__v1__recommend_request__descriptor,
     &recpipe__v1__recommend_response__descriptor, rp_handler_no_bundle, NULL},
    {"/recpipe.v1.Recommender/Feedback", &recpipe__v1__feedback_request__descriptor,
     &recpipe__v1__feedback_response__descriptor, rp_handler_no_bundle, NULL},
    {"/recpipe.v1.Recommender/ForgetUser", &recpipe__v1__forget_user_request__descriptor,
     &recpipe__v1__forget_user_response__descriptor, rp_handler_no_bundle, NULL},
};

/* No bundle: the RPC layer's Health (NOT_SERVING) and Admin, and the Recommender
 * methods answering UNAVAILABLE, until SIGTERM/SIGINT. */
static int serve_without_bundle(const char *listen, int threads, double grace)
{
    rp_server_config cfg = {.service = "gateway",
                            .version = "0.1.0",
                            .listen = listen,
                            .threads = threads,
                            .grace_s = grace};
    rp_server *srv;
    rp_error err = {0};
    if (rp_server_start(&cfg, no_bundle_methods,
                        sizeof no_bundle_methods / sizeof no_bundle_methods[0], &srv,
                        &err) != RP_OK)
        return cli_fail("gateway", &err);
    rp_warn("gateway", "no --bundle: serving NOT_SERVING on port %d (the Recommender answers "
                       "UNAVAILABLE)", rp_server_port(srv));
    int rc = rp_server_run_until_signal(srv);
    rp_server_destroy(srv);
    return rc == RP_OK ? RP_EXIT_OK : RP_EXIT_FAILURE;
}

int cmd_gateway(int argc, char **argv)
{
    const char *listen = NULL, *bundle = NULL, *state = NULL, *retrieval = NULL, *ranking = NULL;
    const char *log_level = NULL, *token_file = NULL;
    int64_t threads = 0, history = 0, cache_entries = 0, map_mb = 0, cache_refreshes = 0;
    double cache_ttl = 0, cache_stale = 0, refresh_wait = 0, deadline = 0, grace = 0;
    rp_ops_flags ops = {0};
    const rp_opt opts[] = {
        {"listen", RP_OPT_STR, &listen, "127.0.0.1:50050", 0, 0, "address to serve on", false},
        {"bundle", RP_OPT_STR, &bundle, NULL, 0, 0,
         "BUNDLE_DIR: titles, categories, embeddings and popularity of the items; "
         "without it the gateway starts NOT_SERVING and the Recommender answers UNAVAILABLE",
         false},
        {"state", RP_OPT_STR, &state, NULL, 0, 0,
         "STATE_DIR: user histories (LMDB), created when missing", true},
        {"retrieval", RP_OPT_STR, &retrieval, "", 0, 0,
         "retrieval shard addresses, comma-separated (one per shard; the answers are merged)",
         false},
        {"ranking", RP_OPT_STR, &ranking, "", 0, 0,
         "ranking replica addresses, comma-separated (round robin); empty = retrieval order",
         false},
        {"threads", RP_OPT_INT, &threads, "8", 1, 256, "request threads", false},
        {"history", RP_OPT_INT, &history, "200", 1, 10000,
         "events kept per user (fixed when the state is created)", false},
        {"state-map-size", RP_OPT_INT, &map_mb, "1024", 1, 1048576,
         "LMDB map size of the user state, MiB (Feedback past it: RESOURCE_EXHAUSTED)", false},
        {"cache-entries", RP_OPT_INT, &cache_entries, "10000", 1, 10000000,
         "answers kept in the cache", false},
        {"cache-ttl", RP_OPT_DURATION, &cache_ttl, "30s", 0.001, 86400, "cache time to live",
         false},
        {"cache-stale", RP_OPT_DURATION, &cache_stale, "30s", 0, 86400,
         "after a reload or past the TTL, while a user's answer is recomputed (or "
         "--cache-refreshes others are), callers get the old one (flagged STALE) if it is "
         "past its TTL by at most this; 0 = they wait or compute",
         false},
        {"cache-refreshes", RP_OPT_INT, &cache_refreshes, "1", 1, 256,
         "answers with a stale one recomputed at once (after a reload, every user's); the "
         "other callers get the stale one meanwhile",
         false},
        {"cache-refresh-wait", RP_OPT_DURATION, &refresh_wait, "5ms", 0, 60,
         "a call that waited longer than this for a request thread, with other calls still "
         "waiting (the gateway is behind), gets the stale answer rather than recomputing it; "
         "0 = always recompute",
         false},
        {"default-deadline", RP_OPT_DURATION, &deadline, "100ms", 0.001, 60,
         "deadline of Recommend calls that set none", false},
        {"grace", RP_OPT_DURATION, &grace, "5s", 0.001, 600, "drain time on SIGTERM/SIGINT",
         false},
        {"log-level", RP_OPT_STR, &log_level, "info", 0, 0, "debug, info, warn, error, off",
         false},
        {"admin-token-file", RP_OPT_STR, &token_file, NULL, 0, 0,
         "file whose first line is the admin bearer token ForgetUser then requires", false},
        RP_OPS_METRICS_OPTS(ops), RP_OPS_SERVER_OPTS(ops), RP_OPS_CLIENT_OPTS(ops),
    };
    int rc = cli_parse("gateway",
                       "gateway [--bundle BUNDLE_DIR] --state STATE_DIR [--listen ADDR] "
                       "[--retrieval ADDR[,ADDR...]] [--ranking ADDR[,ADDR...]]",
                       "Serves recpipe.v1.Recommender (Recommend, Feedback, ForgetUser): user "
                       "state in LMDB,\nfan-out to retrieval shards, one ranking call, "
                       "diversification, a cache, and\na degradation ladder when downstream "
                       "services fail. Stops cleanly on SIGTERM/SIGINT.",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);
    rp_log_level lvl;
    if (rp_log_parse_level(log_level, &lvl) != RP_OK) {
        fprintf(stderr, "recpipe gateway: --log-level: unknown level \"%s\"\n"
                        "Try 'recpipe gateway --help'.\n", log_level);
        return RP_EXIT_USAGE;
    }
    rp_log_set_level(lvl);
    rp_compute_threads(1);
    rp_malloc_tune(); /* before the bundle loads: its buffers are mmapped (rp/rpc.h) */
    ops.admin_token_file = token_file;
    rp_error oerr = {0};
    if ((rc = rp_ops_apply(&ops, &oerr)) != RP_OK) return cli_fail("gateway", &oerr);
    /* --admin-token-file (or RECPIPE_ADMIN_TOKEN) is the process default rp_ops_apply
     * read: the RPC layer checks it on ForgetUser and Admin.Reload. */
    if (!bundle) return serve_without_bundle(listen, (int)threads, grace);
    gw_service_config cfg = {.listen = listen,
                             .bundle = bundle,
                             .state_dir = state,
                             .retrieval = retrieval,
                             .ranking = ranking,
                             .threads = (int)threads,
                             .history_len = (uint32_t)history,
                             .state_map_size = (size_t)map_mb << 20,
                             .cache_entries = (size_t)cache_entries,
                             .cache_ttl_s = cache_ttl,
                             .cache_stale_s = cache_stale > 0 ? cache_stale : -1,
                             .cache_refreshes = (size_t)cache_refreshes,
                             .cache_refresh_wait_s = refresh_wait > 0 ? refresh_wait : -1,
                             .default_deadline_ms = (int64_t)(deadline * 1000 + 0.5),
                             .grace_s = grace};
    gw_service *s;
    rp_error err = {0};
    if ((rc = gw_service_start(&cfg, &s, &err)) != RP_OK) return cli_fail("gateway", &err);
    rc = gw_service_run_until_signal(s);
    gw_service_destroy(s);
    return rc == RP_OK ? RP_EXIT_OK : RP_EXIT_FAILURE;
}
