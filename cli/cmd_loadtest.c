/* recpipe loadtest — open-loop (or closed-loop) load against one recpipe service. */
#include "cli.h"
#include "lt/ids.h"
#include "lt/loadtest.h"
#include "lt/report.h"
#include "lt/workload.h"
#include "rp/ops.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void show_progress(void *user, const lt_progress *p)
{
    (void)user;
    fprintf(stderr, "\r\033[K%s %5.1f/%.0f s  sent %llu  done %llu  errors %llu  in flight %u",
            p->warmup ? "warmup" : "run   ", p->elapsed_s, p->total_s,
            (unsigned long long)p->sent, (unsigned long long)p->completed,
            (unsigned long long)p->errors, p->in_flight);
    if (p->elapsed_s >= 2)
        fprintf(stderr, "  last second %.0f/s p99 %.3f ms", p->last_rate,
                (double)p->last_p99_ns / 1e6);
    fflush(stderr);
}

int cmd_loadtest(int argc, char **argv)
{
    const char *target = NULL, *rpc_name = NULL, *arrivals = NULL, *mix = NULL;
    const char *json_path = NULL, *svg_path = NULL, *bundle = NULL, *dataset = NULL;
    double rate = 0, duration = 0, warmup = 0, zipf = 0, slo_p99_ms = 0, max_rate = 0;
    double step_duration = 0, step_warmup = 0;
    int64_t concurrency = 0, connections = 0, threads = 0, users = 0, items = 0,
            deadline_ms = 0, max_calls = 0, max_in_flight = 0, seed = 0, count = 0,
            history = 0, candidates = 0;
    bool find_max = false;
    rp_ops_flags ops = {0};
    const rp_opt opts[] = {
        {"target", RP_OPT_STR, &target, NULL, 0, 0,
         "host:port of the service to load (given explicitly; nothing is discovered)", true},
        {"rpc", RP_OPT_STR, &rpc_name, "recommend", 0, 0,
         "recommend, feedback, retrieve, rank, status, or mix (see --mix)", false},
        {"rate", RP_OPT_DOUBLE, &rate, "0", 0, 10000000,
         "open loop: calls per second, latency from each call's intended start", false},
        {"concurrency", RP_OPT_INT, &concurrency, "0", 0, 100000,
         "closed loop: calls kept in flight (instead of --rate)", false},
        {"arrivals", RP_OPT_STR, &arrivals, "constant", 0, 0,
         "open-loop arrivals: constant or poisson", false},
        {"duration", RP_OPT_DURATION, &duration, "30s", 0.001, 86400, "measured window", false},
        {"warmup", RP_OPT_DURATION, &warmup, "5s", 0, 3600,
         "load before the window, not measured", false},
        {"connections", RP_OPT_INT, &connections, "1", 1, 1024, "TCP connections", false},
        {"threads", RP_OPT_INT, &threads, "1", 1, 64, "generator threads", false},
        {"deadline-ms", RP_OPT_INT, &deadline_ms, "1000", 1, 600000, "deadline of each call",
         false},
        {"max-calls", RP_OPT_INT, &max_calls, "0", 0, 1e15,
         "stop after this many calls (0 = no limit; duration still applies)", false},
        {"max-in-flight", RP_OPT_INT, &max_in_flight, "20000", 1, 1000000,
         "open loop: calls in flight at most; later calls wait and keep their intended start",
         false},
        {"users", RP_OPT_INT, &users, "100000", 1, 9007199254740992.0,
         "user ids 1..N, drawn Zipf", false},
        {"items", RP_OPT_INT, &items, "10000", 1, 9007199254740992.0,
         "item ids 1..N, drawn Zipf (rank 1 most popular)", false},
        {"zipf", RP_OPT_DOUBLE, &zipf, "1.0", 0, 10, "Zipf exponent for users and items (0 = uniform)",
         false},
        {"bundle", RP_OPT_STR, &bundle, NULL, 0, 0,
         "draw item ids from this bundle's items, most popular first (overrides --items)",
         false},
        {"dataset", RP_OPT_STR, &dataset, NULL, 0, 0,
         "draw user ids from this dataset's users, most active first (overrides --users)",
         false},
        {"mix", RP_OPT_STR, &mix, "recommend=0.9,feedback=0.1", 0, 0,
         "weights of the RPCs for --rpc mix", false},
        {"count", RP_OPT_INT, &count, "10", 1, 500, "Recommend: items asked for", false},
        {"history", RP_OPT_INT, &history, "20", 0, 1000, "Retrieve/Rank: events of history", false},
        {"candidates", RP_OPT_INT, &candidates, "100", 1, 5000,
         "Rank: candidates per call; Retrieve: k", false},
        {"seed", RP_OPT_INT, &seed, "1", 0, 1e18, "random seed (ids, arrivals)", false},
        {"json", RP_OPT_STR, &json_path, NULL, 0, 0, "write every figure as JSON to FILE", false},
        {"svg", RP_OPT_STR, &svg_path, NULL, 0, 0,
         "write a chart (percentile spectrum and per-second timeline) to FILE", false},
        {"find-max", RP_OPT_BOOL, &find_max, "false", 0, 0,
         "search the highest rate whose p99 stays under --slo-p99-ms, starting at --rate", false},
        {"slo-p99-ms", RP_OPT_DOUBLE, &slo_p99_ms, "0", 0, 600000, "find-max: the p99 objective",
         false},
        {"max-rate", RP_OPT_DOUBLE, &max_rate, "1000000", 1, 10000000,
         "find-max: never offer more than this", false},
        {"step-duration", RP_OPT_DURATION, &step_duration, "5s", 0.1, 3600,
         "find-max: measured window of each step (instead of --duration)", false},
        {"step-warmup", RP_OPT_DURATION, &step_warmup, "1s", 0, 600,
         "find-max: warmup of each step (instead of --warmup)", false},
        RP_OPS_CLIENT_OPTS(ops),
    };
    char *pos[1];
    size_t npos = 0;
    int rc = cli_parse("loadtest", "loadtest --target HOST:PORT [--rate R | --concurrency C] [options]",
                       "Sends load to one recpipe service and reports latency percentiles, the\n"
                       "achieved rate and errors by gRPC status. Open loop (--rate) measures\n"
                       "from each call's intended start, so a stalled server shows in the\n"
                       "percentiles (coordinated omission corrected); closed loop\n"
                       "(--concurrency) measures from the actual start. Every run stops by\n"
                       "itself after --warmup + --duration (or --max-calls).",
                       opts, sizeof opts / sizeof opts[0], argc, argv, pos, 0, &npos);
    if (rc) return cli_parse_exit(rc);

    rp_error err = {0};
    if (rp_ops_apply(&ops, &err) != RP_OK) return cli_fail("loadtest", &err);
    lt_workload_config wc = {0};
    wc.ids.n_users = (uint64_t)users;
    wc.ids.n_items = (uint64_t)items;
    wc.zipf_s = zipf;
    wc.count = (uint32_t)count;
    wc.history = (uint32_t)history;
    wc.candidates = (uint32_t)candidates;
    lt_rpc one;
    if (!strcmp(rpc_name, "mix")) {
        if (lt_mix_parse(mix, wc.mix, &err)) goto usage;
    } else if (lt_rpc_parse(rpc_name, &one)) {
        wc.mix[one] = 1;
    } else {
        rp_errorf(&err, RP_EINVAL,
                  "--rpc: '%s' is not one of recommend, feedback, retrieve, rank, status, mix",
                  rpc_name);
        goto usage;
    }
    lt_config cfg;
    lt_config_defaults(&cfg);
    cfg.target = target;
    cfg.rate = rate;
    cfg.concurrency = (uint32_t)concurrency;
    if (lt_arrivals_parse(arrivals, &cfg.arrivals, &err)) goto usage;
    cfg.duration_s = duration;
    cfg.warmup_s = warmup;
    cfg.connections = (uint32_t)connections;
    cfg.threads = (uint32_t)threads;
    cfg.deadline_ms = (uint32_t)deadline_ms;
    cfg.max_calls = (uint64_t)max_calls;
    cfg.max_in_flight = (uint32_t)max_in_flight;
    cfg.seed = (uint64_t)seed;
    cfg.stop = &interrupted;
    if (find_max) {
        if (!(slo_p99_ms > 0)) {
            rp_errorf(&err, RP_EINVAL, "--find-max needs --slo-p99-ms above 0");
            goto usage;
        }
        if (concurrency > 0) {
            rp_errorf(&err, RP_EINVAL, "--find-max searches a rate: drop --concurrency");
            goto usage;
        }
        if (!(rate > 0)) cfg.rate = 100; /* the first step */
        cfg.duration_s = step_duration;
        cfg.warmup_s = step_warmup;
    } else if ((rate > 0) == (concurrency > 0)) {
        rp_errorf(&err, RP_EINVAL, "give exactly one of --rate (open loop) and --concurrency "
                                   "(closed loop)");
        goto usage;
    }
    if (cli_progress_enabled()) {
        cfg.progress = show_progress;
        cfg.progress_user = NULL;
    }

    lt_id_source ids = {0};
    if ((bundle || dataset) && lt_ids_load(bundle, dataset, &ids, &err))
        return cli_fail("loadtest: reading ids", &err);
    lt_ids_apply(&ids, &wc.ids);
    lt_workload *wl = NULL;
    if (lt_workload_create(&wc, &wl, &err)) {
        lt_ids_free(&ids);
        goto usage;
    }
    cfg.workload = wl;
    signal(SIGINT, on_sigint);

    lt_result *res = NULL;
    lt_find_result fm;
    memset(&fm, 0, sizeof fm);
    int exit_code = RP_EXIT_OK;
    if (find_max) {
        rc = lt_find_max(&cfg, slo_p99_ms, max_rate, &fm, &err);
        res = fm.best;
    } else {
        rc = lt_run(&cfg, &res, &err);
    }
    if (cfg.progress) fputs("\r\033[K", stderr);
    if (rc) {
        exit_code = cli_fail("loadtest", &err);
        goto done;
    }
    if (find_max) lt_report_find_text(stdout, &fm);
    if (res) {
        lt_report_text(stdout, res);
        if (json_path && lt_report_json(json_path, res, find_max ? &fm : NULL, &err)) {
            exit_code = cli_fail("loadtest: --json", &err);
            goto done;
        }
        if (svg_path && lt_report_svg(svg_path, res, &err)) {
            exit_code = cli_fail("loadtest: --svg", &err);
            goto done;
        }
        /* Nothing came back right: the service is not usable at this load. */
        if (res->measured > 0 && res->ok == 0) {
            fprintf(stderr, "recpipe: loadtest: every measured call failed (see the status line)\n");
            exit_code = RP_EXIT_UNAVAILABLE;
        }
    } else if (find_max) {
        exit_code = RP_EXIT_UNAVAILABLE;
    }
done:
    if (find_max) lt_find_result_clear(&fm);
    else lt_result_free(res);
    lt_workload_destroy(wl);
    lt_ids_free(&ids);
    return exit_code;

usage:
    fprintf(stderr, "recpipe loadtest: %s\nTry 'recpipe loadtest --help'.\n", rp_error_text(&err));
    return RP_EXIT_USAGE;
}
