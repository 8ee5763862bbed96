/* recpipe train ranker — trains the ranking model behind a bundle's retrieval factors;
 * and cmd_ranking, the Ranking service over a bundle (see the end of the file). */
#include "cli.h"

#include "ev/eval.h"
#include "ev/retrieval.h"
#include "idx/bundle.h"
#include "idx/dataset.h"
#include "rank/build.h"
#include "rank/model.h"
#include "rank/service.h"
#include "rank/train.h"
#include "recpipe/v1/ranking.pb-c.h"
#include "rp/log.h"
#include "rp/ops.h"
#include "rp/rpc.h"
#include "rp/threads.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_progress(void *ctx, uint32_t epoch, uint32_t epochs, uint32_t batch,
                        uint32_t batches, double loss)
{
    (void)ctx;
    fprintf(stderr, "\rranker: epoch %u/%u batch %u/%u loss %.4f   ", epoch, epochs, batch, batches,
            loss);
}

static void on_epoch(void *ctx, uint32_t epoch, double loss, double auc, double ndcg,
                     double ndcg_r)
{
    int progress = *(int *)ctx;
    if (progress) fputc('\r', stderr);
    printf("epoch %u: train loss %.4f, validation AUC %.4f, NDCG@20 %.4f (iALS order %.4f)%s\n",
           epoch, loss, auc, ndcg, ndcg_r, progress ? "          " : "");
    fflush(stdout);
}

/* "256,128" → widths. */
static int parse_deep(const char *s, rank_shape *sh, rp_error *err)
{
    sh->n_deep = 0;
    if (!*s || !strcmp(s, "none")) return RP_OK;
    const char *p = s;
    while (*p) {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || v < 1 || v > 4096 || sh->n_deep == RANK_MAX_DEEP)
            return rp_errorf(err, RP_EINVAL,
                             "--deep: '%s' is not a list of at most %d widths 1..4096", s,
                             RANK_MAX_DEEP);
        sh->deep[sh->n_deep++] = (uint32_t)v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return rp_errorf(err, RP_EINVAL, "--deep: unexpected '%c' in '%s'", *end, s);
    }
    return RP_OK;
}

static int manifest_holdout(const idx_manifest *mf)
{
    json_object *tr = json_tokener_parse(mf->training_json ? mf->training_json : "{}"), *h;
    int holdout = -1;
    if (tr && json_object_object_get_ex(tr, "holdout", &h)) holdout = json_object_get_boolean(h);
    json_object_put(tr);
    return holdout;
}

int cmd_train_ranker(int argc, char **argv)
{
    const char *data = NULL, *bundle_dir = NULL, *out = NULL, *deep = NULL;
    int64_t dim, max_hist, att1, att2, n_cross, cross_rank, epochs, patience, batch, cands,
        neg, pop_neg, seed, threads, iters;
    double lr, l2, val_fraction, label_fraction;
    const rp_opt opts[] = {
        {"data", RP_OPT_STR, &data, NULL, 0, 0, "dataset directory (recpipe import)", true},
        {"bundle", RP_OPT_STR, &bundle_dir, NULL, 0, 0,
         "bundle whose iALS factors the ranker reranks (recpipe build)", true},
        {"out", RP_OPT_STR, &out, NULL, 0, 0, "model file to write (atomically)", true},
        {"dim", RP_OPT_INT, &dim, "32", 1, 1024, "embedding dimension d", false},
        {"max-hist", RP_OPT_INT, &max_hist, "50", 1, 1000, "history events read (L)", false},
        {"att1", RP_OPT_INT, &att1, "64", 1, 4096, "attention MLP first width", false},
        {"att2", RP_OPT_INT, &att2, "32", 1, 4096, "attention MLP second width", false},
        {"cross-layers", RP_OPT_INT, &n_cross, "3", 0, 8, "DCN-V2 cross layers", false},
        {"cross-rank", RP_OPT_INT, &cross_rank, "0", 0, 4096,
         "rank of the cross matrices (0 = full rank)", false},
        {"deep", RP_OPT_STR, &deep, "256,128", 0, 0, "deep MLP widths, comma-separated", false},
        {"epochs", RP_OPT_INT, &epochs, "20", 1, 1000, "at most this many epochs", false},
        {"patience", RP_OPT_INT, &patience, "2", 1, 1000,
         "stop after this many epochs without a better validation AUC", false},
        {"batch", RP_OPT_INT, &batch, "16", 1, 4096, "candidate groups per mini-batch", false},
        {"lr", RP_OPT_DOUBLE, &lr, "0.001", 1e-7, 0.5, "Adam step", false},
        {"l2", RP_OPT_DOUBLE, &l2, "0.000001", 0, 0.5, "L2 on every weight", false},
        {"candidates", RP_OPT_INT, &cands, "200", 2, 10000, "first-stage candidates per user",
         false},
        {"neg-per-pos", RP_OPT_INT, &neg, "4", 0, 1000, "hard negatives per positive", false},
        {"pop-neg", RP_OPT_INT, &pop_neg, "4", 0, 1000, "popular negatives per user", false},
        {"label-fraction", RP_OPT_DOUBLE, &label_fraction, "0.2", 0.01, 0.99,
         "later share of each user's train events used as labels", false},
        {"val-fraction", RP_OPT_DOUBLE, &val_fraction, "0.15", 0, 0.9,
         "share of users held out for validation (early stopping)", false},
        {"iters", RP_OPT_INT, &iters, "10", 1, 1000, "sweeps of the first-stage iALS", false},
        {"seed", RP_OPT_INT, &seed, "1", 0, 9e18, "seed (deterministic with --threads 1)", false},
        {"threads", RP_OPT_INT, &threads, "0", 0, 1024, "threads (0 = all cores)", false},
    };
    int rc = cli_parse(
        "train ranker", "train ranker --data DATA_DIR --bundle BUNDLE_DIR --out FILE [options]",
        "Trains the ranking model (DIN target attention + DCN-V2 cross network, see\n"
        "ranking/README.md) with the two-stage recipe: iALS on the earlier 80% of each\n"
        "user's train events retrieves candidates, the later 20% label them. Uses the\n"
        "train split only when the bundle was built with --holdout. `recpipe build`\n"
        "trains the ranker into the bundle itself; this command writes a model file.",
        opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);

    rp_error err = {0};
    rank_train_opts o;
    rank_train_opts_default(&o);
    o.shape.dim = (uint32_t)dim;
    o.shape.max_hist = (uint32_t)max_hist;
    o.shape.att1 = (uint32_t)att1;
    o.shape.att2 = (uint32_t)att2;
    o.shape.n_cross = (uint32_t)n_cross;
    o.shape.cross_rank = (uint32_t)cross_rank;
    if (parse_deep(deep, &o.shape, &err)) {
        fprintf(stderr, "recpipe train ranker: %s\nTry 'recpipe train ranker --help'.\n", err.msg);
        return RP_EXIT_USAGE;
    }
    o.epochs = (uint32_t)epochs;
    o.patience = (uint32_t)patience;
    o.batch = (uint32_t)batch;
    o.lr = lr;
    o.l2 = l2;
    o.n_candidates = (uint32_t)cands;
    o.neg_per_pos = (uint32_t)neg;
    o.pop_neg = (uint32_t)pop_neg;
    o.label_fraction = label_fraction;
    o.val_fraction = val_fraction;
    o.seed = (uint64_t)seed;
    o.threads = (int)threads;
    int progress = cli_progress_enabled();
    if (progress) o.progress = on_progress;
    o.on_epoch = on_epoch;
    o.progress_ctx = &progress;

    idx_dataset *ds = NULL;
    idx_bundle *b = NULL;
    ev_split *split = NULL;
    float *factors = NULL;
    rank_model *m = NULL;
    int exit_code = RP_EXIT_FAILURE;
    rp_compute_threads((int)threads);

    if ((rc = idx_dataset_open(data, &ds, &err))) {
        exit_code = cli_fail("train ranker: open dataset", &err);
        goto done;
    }
    if ((rc = idx_bundle_open(bundle_dir, &b, &err))) {
        exit_code = cli_fail("train ranker: open bundle", &err);
        goto done;
    }
    uint32_t k = 0, missing = 0;
    float reg = 0, alpha = 0;
    if ((rc = ev_bundle_factors(ds, b, &factors, &k, &reg, &alpha, &missing, &err))) {
        exit_code = cli_fail("train ranker: bundle factors", &err);
        goto done;
    }
    if (missing)
        fprintf(stderr, "recpipe train ranker: warning: %u of the dataset's %u items are not in "
                        "the bundle\n", missing, ds->n_items);
    int holdout = manifest_holdout(idx_bundle_manifest(b));
    if (holdout == 1) {
        ev_protocol proto = EV_PROTOCOL_DEFAULT;
        if ((rc = ev_split_make(ds, &proto, &split, &err))) {
            exit_code = cli_fail("train ranker: split", &err);
            goto done;
        }
    }
    o.als.factors = k;
    o.als.reg = reg;
    o.als.alpha = alpha;
    o.als.iters = (uint32_t)iters;
    o.als.seed = (uint64_t)seed;
    o.als.threads = (int)threads;
    rank_train_report rep;
    if ((rc = rank_train(ds, split ? split->take : NULL, factors, k, &o, &m, &rep, &err))) {
        if (progress) fputc('\n', stderr);
        exit_code = cli_fail("train ranker", &err);
        goto done;
    }
    if ((rc = rank_model_save(m, out, &err))) {
        exit_code = cli_fail("train ranker: write model", &err);
        goto done;
    }
    printf("ranker: %zu parameters, trained on %s, %u epochs (best %u) in %.1f s\n"
           "validation (%u users): AUC %.4f, NDCG@20 %.4f vs iALS order %.4f\n"
           "wrote %s\n",
           rank_model_nparams(m), split ? "the train split" : "every event", rep.epochs_run,
           rep.best_epoch, rep.seconds, rep.val_users, rep.val_auc, rep.val_ndcg,
           rep.val_ndcg_retrieval, out);
    exit_code = RP_EXIT_OK;
done:
    rank_model_free(m);
    free(factors);
    ev_split_free(split);
    idx_bundle_release(b);
    idx_dataset_close(ds);
    return exit_code;
}

/* ------------------------------------------------------------------------------------
 * recpipe ranking --bundle BUNDLE_DIR — the Ranking service over a bundle's ranker.
 * Without --bundle it starts empty: Health NOT_SERVING, Rank UNAVAILABLE.
 */
#ifndef RECPIPE_VERSION
#define RECPIPE_VERSION "0.0.0"
#endif

static const rp_method ranking_no_bundle[] = {
    {"/recpipe.v1.Ranking/Rank", &recpipe__v1__rank_request__descriptor,
     &recpipe__v1__rank_response__descriptor, rp_handler_no_bundle, NULL},
};

int cmd_ranking(int argc, char **argv)
{
    const char *listen = NULL, *log_level = NULL, *port_file = NULL, *bundle = NULL;
    int64_t threads = 0, max_bytes = 0;
    double grace = 0;
    rp_ops_flags ops = {0};
    const rp_opt opts[] = {
        {"bundle", RP_OPT_STR, &bundle, NULL, 0, 0,
         "bundle directory whose ranker to serve (may be a symlink; SIGHUP re-reads it)", false},
        {"listen", RP_OPT_STR, &listen, "127.0.0.1:50052", 0, 0,
         "address to serve on (host:port; port 0 picks a free port)", false},
        {"threads", RP_OPT_INT, &threads, "0", 0, 1024,
         "request threads (0 = the number of cores); BLAS/OpenMP run 1 thread each", false},
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
    int rc = cli_parse("ranking", "ranking --bundle BUNDLE_DIR [--listen ADDR] [options]",
                       "Serves recpipe.v1.Ranking/Rank with the bundle's ranker (all candidates\n"
                       "of a request scored as one batch) and Admin.Reload. SIGHUP reloads\n"
                       "--bundle; SIGTERM/SIGINT drain in-flight calls (--grace) and exit 0.\n"
                       "Without --bundle the service starts empty (Health NOT_SERVING, Rank\n"
                       "UNAVAILABLE). Logs JSON lines on stderr.",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);
    rp_log_level lvl;
    if (rp_log_parse_level(log_level, &lvl) != RP_OK) {
        fprintf(stderr, "recpipe ranking: --log-level: unknown level \"%s\" (debug, info, warn, "
                        "error, off)\nTry 'recpipe ranking --help'.\n",
                log_level);
        return RP_EXIT_USAGE;
    }
    rp_log_set_level(lvl);
    rp_compute_threads(1);
    rp_malloc_tune(); /* before the bundle loads: its buffers are mmapped (rp/rpc.h) */

    rp_error err = {0};
    if ((rc = rp_ops_apply(&ops, &err)) != RP_OK) return cli_fail("ranking", &err);
    rank_service *svc = NULL;
    const rp_method *methods = ranking_no_bundle;
    size_t nmethods = 1;
    if (bundle) {
        if ((rc = rank_service_create(bundle, &svc, &err)) != RP_OK) return cli_fail("ranking", &err);
        methods = rank_service_methods(svc, &nmethods);
    }
    rp_server_config cfg = {
        .service = "ranking",
        .version = RECPIPE_VERSION,
        .listen = listen,
        .threads = (int)threads,
        .max_message_bytes = max_bytes,
        .grace_s = grace,
        .status_hook = svc ? rank_service_status_hook : NULL,
        .status_user = svc,
    };
    rp_server *srv = NULL;
    if ((rc = rp_server_start(&cfg, methods, nmethods, &srv, &err)) != RP_OK) {
        rank_service_destroy(svc);
        return cli_fail("ranking", &err);
    }
    if (svc && (rc = rank_service_watch_sighup(svc, &err)) != RP_OK) goto fail;
    if (port_file && (rc = cli_write_port_file(port_file, rp_server_port(srv), &err)) != RP_OK)
        goto fail;
    if (svc) {
        rp_server_set_serving(srv, true);
        rp_info("cli", "ranking serving bundle %s", bundle);
    } else {
        rp_info("cli", "ranking started without a bundle: NOT_SERVING");
    }
    rc = rp_server_run_until_signal(srv);
    rp_server_destroy(srv);
    rank_service_destroy(svc);
    if (port_file) remove(port_file);
    return rc == RP_OK ? RP_EXIT_OK : RP_EXIT_FAILURE;
fail:
    rp_server_destroy(srv);
    rank_service_destroy(svc);
    return cli_fail("ranking", &err);
}
