/* recpipe train embeddings — implicit ALS on a dataset, factors written as .fvecs. */
#include "cli.h"

#include "ev/eval.h"
#include "idx/dataset.h"
#include "idx/fsutil.h"
#include "idx/fvecs.h"
#include "ret/als.h"
#include "rp/threads.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void train_progress(void *ctx, uint32_t sweep, uint32_t sweeps, double elapsed)
{
    const char *what = ctx;
    fprintf(stderr, "\r%s: sweep %u/%u (%.2f s)%s", what, sweep, sweeps, elapsed,
            sweep == sweeps ? "\n" : "");
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Ctrl-C or SIGTERM stops training after the current sweep; nothing is written. */
static void catch_signals(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cmd_train_embeddings(int argc, char **argv)
{
    const char *data = NULL, *out = NULL;
    int64_t factors, iters, seed, threads;
    double reg, alpha;
    bool holdout, use_value, force;
    const rp_opt opts[] = {
        {"data", RP_OPT_STR, &data, NULL, 0, 0, "dataset directory (recpipe import)", true},
        {"out", RP_OPT_STR, &out, NULL, 0, 0, "output directory for the factor files", true},
        {"factors", RP_OPT_INT, &factors, "64", 1, RET_ALS_MAX_FACTORS, "latent factors k", false},
        {"reg", RP_OPT_DOUBLE, &reg, "30", 0, 1e9, "regularization lambda", false},
        {"alpha", RP_OPT_DOUBLE, &alpha, "5", 0, 1e9, "confidence scale: c = 1 + alpha*r", false},
        {"iters", RP_OPT_INT, &iters, "10", 1, RET_ALS_MAX_ITERS, "ALS sweeps", false},
        {"seed", RP_OPT_INT, &seed, "1", 0, 9e18, "seed of the initial factors", false},
        {"holdout", RP_OPT_BOOL, &holdout, "false", 0, 0,
         "train on the evaluation protocol's train split only", false},
        {"use-value", RP_OPT_BOOL, &use_value, "false", 0, 0,
         "r = the event's value (rating) instead of 1 per event", false},
        {"threads", RP_OPT_INT, &threads, "0", 0, 1024, "threads (0 = all cores)", false},
        {"force", RP_OPT_BOOL, &force, "false", 0, 0, "replace an existing output directory",
         false},
    };
    int rc = cli_parse("train embeddings",
                       "train embeddings --data DATA_DIR --out DIR [options]",
                       "Trains implicit ALS (Hu, Koren & Volinsky 2008) and writes\n"
                       "DIR/item_factors.fvecs (row = dense item, ascending item id) and\n"
                       "DIR/user_factors.fvecs (row = dense user, ascending user id).",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);

    rp_error err = {0};
    idx_dataset *ds = NULL;
    ev_split *split = NULL;
    ret_als_matrix *m = NULL;
    ret_als_model *model = NULL;
    char tmp[4096] = "", path[4200];
    int exit_code = RP_EXIT_FAILURE;
    rp_compute_threads((int)threads);

    struct stat st;
    if (!force && stat(out, &st) == 0) {
        fprintf(stderr, "recpipe: train embeddings: %s already exists (use --force to replace it)\n",
                out);
        goto done;
    }
    if ((rc = idx_dataset_open(data, &ds, &err))) {
        exit_code = cli_fail("train embeddings: open dataset", &err);
        goto done;
    }
    if (holdout) {
        ev_protocol proto = EV_PROTOCOL_DEFAULT;
        if ((rc = ev_split_make(ds, &proto, &split, &err))) {
            exit_code = cli_fail("train embeddings: split", &err);
            goto done;
        }
    }
    if ((rc = ret_als_matrix_from_dataset(ds, split ? split->take : NULL, use_value, &m, &err))) {
        exit_code = cli_fail("train embeddings", &err);
        goto done;
    }
    ret_als_params p;
    ret_als_params_default(&p);
    p.factors = (uint32_t)factors;
    p.reg = (float)reg;
    p.alpha = (float)alpha;
    p.iters = (uint32_t)iters;
    p.seed = (uint64_t)seed;
    p.threads = (int)threads;
    if (cli_progress_enabled()) {
        p.progress = train_progress;
        p.progress_ctx = "train embeddings";
    }
    p.cancel = &interrupted;
    catch_signals();
    if ((rc = ret_als_train(m, &p, &model, &err))) {
        exit_code = cli_fail("train embeddings", &err);
        goto done;
    }
    if (interrupted) {
        exit_code = cli_fail("train embeddings", &(rp_error){RP_ECANCELED, "interrupted"});
        goto done;
    }
    if ((rc = idx_tmpdir_near(out, tmp, sizeof tmp, &err))) {
        exit_code = cli_fail("train embeddings: output", &err);
        goto done;
    }
    snprintf(path, sizeof path, "%s/item_factors.fvecs", tmp);
    if ((rc = idx_fvecs_write(path, model->item_factors, model->n_items, model->k, &err))) {
        exit_code = cli_fail("train embeddings", &err);
        goto done;
    }
    snprintf(path, sizeof path, "%s/user_factors.fvecs", tmp);
    if ((rc = idx_fvecs_write(path, model->user_factors, model->n_users, model->k, &err))) {
        exit_code = cli_fail("train embeddings", &err);
        goto done;
    }
    if ((rc = idx_fsync_tree(tmp, &err)) || (rc = idx_publish_dir(tmp, out, force, &err))) {
        exit_code = cli_fail("train embeddings: output", &err);
        goto done;
    }
    tmp[0] = '\0';
    printf("trained implicit ALS: %u users x %u items, %llu interactions%s, %u factors, "
           "reg %g, alpha %g, %u sweeps in %.2f s\n"
           "wrote %s/item_factors.fvecs and %s/user_factors.fvecs\n",
           model->n_users, model->n_items, (unsigned long long)m->nnz,
           holdout ? " (train split)" : "", model->k, (double)model->reg,
           (double)model->alpha, p.iters, model->train_seconds, out, out);
    exit_code = RP_EXIT_OK;
done:
    if (tmp[0]) idx_rmtree(tmp);
    ret_als_model_free(model);
    ret_als_matrix_free(m);
    ev_split_free(split);
    idx_dataset_close(ds);
    return exit_code;
}
