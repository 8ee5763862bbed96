/* recpipe serve: retrieval (one process per shard), ranking (--ranking-replicas processes,
 * round robin from the gateway) and gateway on loopback as children of one command; one
 * Ctrl-C stops them all (gw/supervise.h). */
#include "cli.h"
#include "gw/supervise.h"
#include "idx/bundle.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SERVE_MAX_SHARDS 64
#define SERVE_MAX_RANKERS 16

static volatile sig_atomic_t stop_sig;

static void on_signal(int sig)
{
    stop_sig = sig;
}

int cmd_serve(int argc, char **argv)
{
    const char *bundle = NULL, *state = NULL, *listen = NULL, *log_level = NULL;
    bool no_ranking = false;
    double ready_timeout = 0, grace = 0;
    int64_t replicas = 0;
    const rp_opt opts[] = {
        {"bundle", RP_OPT_STR, &bundle, NULL, 0, 0, "BUNDLE_DIR to serve", true},
        {"state", RP_OPT_STR, &state, NULL, 0, 0, "STATE_DIR of the gateway (user histories)",
         true},
        {"listen", RP_OPT_STR, &listen, "127.0.0.1:50050", 0, 0,
         "address of the gateway (the other services take free loopback ports)", false},
        {"no-ranking", RP_OPT_BOOL, &no_ranking, "false", 0, 0,
         "do not start ranking (answers in retrieval order)", false},
        {"ranking-replicas", RP_OPT_INT, &replicas, "1", 1, SERVE_MAX_RANKERS,
         "ranking processes; the gateway calls them round robin and retries a failed call "
         "on the next", false},
        {"ready-timeout", RP_OPT_DURATION, &ready_timeout, "120s", 1, 3600,
         "how long each service may take to load the bundle", false},
        {"grace", RP_OPT_DURATION, &grace, "5s", 0.1, 600, "drain time when stopping", false},
        {"log-level", RP_OPT_STR, &log_level, "warn", 0, 0,
         "log level of the services (JSON lines on stderr)", false},
    };
    int rc = cli_parse("serve", "serve --bundle BUNDLE_DIR --state STATE_DIR [--listen ADDR] "
                       "[--ranking-replicas M]",
                       "Runs retrieval (one process per shard of the bundle), ranking and the "
                       "gateway\non loopback as children of this command. Prints one line when "
                       "the gateway is\nready. Ctrl-C (SIGINT) or SIGTERM stops every service; "
                       "if one of them dies,\nthe others are stopped and serve exits 1.",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);

    rp_error err = {0};
    idx_bundle *b = NULL;
    if ((rc = idx_bundle_read_manifest(bundle, &b, &err)) != RP_OK)
        return cli_fail("serve: --bundle", &err);
    uint32_t nshards = idx_bundle_manifest(b)->n_shards;
    char version[128];
    snprintf(version, sizeof version, "%s", idx_bundle_manifest(b)->version);
    idx_bundle_release(b);
    if (nshards > SERVE_MAX_SHARDS) {
        rp_errorf(&err, RP_EINVAL, "bundle has %u shards; serve runs at most %d", nshards,
                  SERVE_MAX_SHARDS);
        return cli_fail("serve", &err);
    }

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    const char *exe = gw_self_exe();
    pid_t pids[SERVE_MAX_SHARDS + SERVE_MAX_RANKERS + 1] = {0};
    const char *names[SERVE_MAX_SHARDS + SERVE_MAX_RANKERS + 1];
    size_t np = 0;
    char shard_addr[SERVE_MAX_SHARDS][32], shard_arg[SERVE_MAX_SHARDS][12];
    char retrieval[SERVE_MAX_SHARDS * 32] = "";
    char rank_addr[SERVE_MAX_RANKERS][32];
    char ranking[SERVE_MAX_RANKERS * 32] = "";
    int code = RP_EXIT_FAILURE;
    /* Ranking replicas until they are SERVING; then they move into pids[]. */
    pid_t rank_pid[SERVE_MAX_RANKERS] = {0};
    size_t nrank = no_ranking ? 0 : (size_t)replicas;

    for (uint32_t i = 0; i < nshards; i++) {
        snprintf(shard_addr[i], sizeof shard_addr[i], "127.0.0.1:%d", gw_free_port());
        snprintf(shard_arg[i], sizeof shard_arg[i], "%u", i);
        const char *av[] = {"retrieval", "--bundle", bundle, "--shard", shard_arg[i], "--listen",
                            shard_addr[i], "--log-level", log_level, NULL};
        if (gw_spawn(exe, av, NULL, &pids[np], &err) != RP_OK) goto stop;
        names[np++] = "retrieval";
        size_t len = strlen(retrieval);
        snprintf(retrieval + len, sizeof retrieval - len, "%s%s", i ? "," : "", shard_addr[i]);
    }
    for (size_t r = 0; r < nrank; r++) {
        snprintf(rank_addr[r], sizeof rank_addr[r], "127.0.0.1:%d", gw_free_port());
        const char *av[] = {"ranking", "--bundle", bundle, "--listen", rank_addr[r],
                            "--log-level", log_level, NULL};
        if (gw_spawn(exe, av, NULL, &rank_pid[r], &err) != RP_OK) goto stop;
    }
    for (uint32_t i = 0; i < nshards; i++) {
        if (gw_wait_serving(shard_addr[i], pids[i], ready_timeout, &err) != RP_OK) {
            if (err.code == RP_EUNAVAIL) pids[i] = 0; /* already reaped */
            rp_error_prefix(&err, "retrieval shard %u", i);
            goto stop;
        }
        if (stop_sig) goto interrupted;
    }
    /* A replica that does not come up is stopped and left out; with none, the gateway
     * serves retrieval order. */
    for (size_t r = 0; r < nrank; r++) {
        if (rank_pid[r] <= 0) continue;
        if (gw_wait_serving(rank_addr[r], rank_pid[r], ready_timeout, &err) != RP_OK) {
            fprintf(stderr, "recpipe serve: ranking replica %zu (%s) is not available (%s)\n", r,
                    rank_addr[r], rp_error_text(&err));
            pid_t one[1] = {err.code == RP_EUNAVAIL ? 0 : rank_pid[r]};
            gw_stop_all(one, 1, SIGTERM, grace);
            rank_pid[r] = 0;
            err = (rp_error){0};
        } else {
            pids[np] = rank_pid[r];
            names[np++] = "ranking";
            rank_pid[r] = 0;
            size_t len = strlen(ranking);
            snprintf(ranking + len, sizeof ranking - len, "%s%s", len ? "," : "", rank_addr[r]);
        }
        if (stop_sig) goto interrupted;
    }
    if (nrank && !ranking[0])
        fprintf(stderr, "recpipe serve: no ranking replica is available; the gateway serves "
                        "retrieval order\n");
    if (stop_sig) goto interrupted;
    {
        const char *av[] = {"gateway", "--bundle", bundle, "--state", state, "--listen", listen,
                            "--retrieval", retrieval, "--ranking", ranking, "--log-level",
                            log_level, NULL};
        if (gw_spawn(exe, av, NULL, &pids[np], &err) != RP_OK) goto stop;
        names[np++] = "gateway";
        if (gw_wait_serving(listen, pids[np - 1], ready_timeout, &err) != RP_OK) {
            if (err.code == RP_EUNAVAIL) pids[np - 1] = 0;
            rp_error_prefix(&err, "gateway");
            goto stop;
        }
    }
    printf("recpipe serve: ready: gateway on %s, bundle %s, %u retrieval shard(s) (%s), ranking "
           "%s\n",
           listen, version, nshards, retrieval, ranking[0] ? ranking : "off");
    fflush(stdout);

    /* Supervise: a stop signal stops everyone; a child that dies stops everyone too. */
    while (!stop_sig) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p > 0) {
            for (size_t i = 0; i < np; i++) {
                if (pids[i] != p) continue;
                char how[64];
                gw_describe_status(status, how, sizeof how);
                pids[i] = 0;
                rp_errorf(&err, RP_EUNAVAIL, "%s (pid %d) %s", names[i], (int)p, how);
                goto stop;
            }
            continue;
        }
        usleep(100000);
    }
interrupted:
    fprintf(stderr, "recpipe serve: stopping (signal %d)\n", (int)stop_sig);
    for (size_t r = 0; r < nrank; r++)
        if (rank_pid[r] > 0) pids[np++] = rank_pid[r];
    gw_stop_all(pids, np, SIGTERM, grace);
    return RP_EXIT_OK;

stop:
    code = cli_fail("serve", &err);
    for (size_t r = 0; r < nrank; r++)
        if (rank_pid[r] > 0) pids[np++] = rank_pid[r];
    gw_stop_all(pids, np, SIGTERM, grace);
    return code;
}
