/* recpipe build — dataset → implicit ALS → bundle (items, embeddings, popularity,
 * ANN index tuned on user vectors, training parameters), in one command. */
#include "cli.h"

#include "ev/eval.h"
#include "ev/retrieval.h"
#include "idx/bundle.h"
#include "idx/dataset.h"
#include "rank/build.h"
#include "ret/als.h"
#include "rp/threads.h"

#include <json-c/json.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Users whose vectors tune the index (a fixed, evenly spread sample). */
#define BUILD_TUNE_USERS 1000
/* Largest evaluation `build --holdout` records by itself (test users × items × k). */
#define BUILD_EVAL_MAX_FLOPS 4e9

static void train_progress(void *ctx, uint32_t sweep, uint32_t sweeps, double elapsed)
{
    (void)ctx;
    fprintf(stderr, "\rbuild: ALS sweep %u/%u (%.2f s)%s", sweep, sweeps, elapsed,
            sweep == sweeps ? "\n" : "");
}

static void index_progress(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "build: %s\n", line);
}

/* Evaluates popularity and exact retrieval on the split the model was trained on and
 * returns the "evaluation" manifest object (NULL on failure, err set). */
static json_object *build_evaluation(const idx_dataset *ds, const ev_split *split,
                                     const ret_als_model *model, int use_value, rp_error *err)
{
    static const uint32_t ks[] = {10, 20};
    ev_model pop = {0}, ret = {0};
    ev_result rp, rr;
    json_object *o = NULL;
    if (ev_model_popularity(ds, split, &pop, err)) goto done;
    ev_retrieval_opts ro = {model->item_factors, model->k, model->reg, model->alpha, NULL,
                            use_value};
    if (ev_model_retrieval(ds, &ro, &ret, err)) goto done;
    if (ev_evaluate(ds, split, &pop, ks, 2, NULL, NULL, &rp, err) ||
        ev_evaluate(ds, split, &ret, ks, 2, NULL, NULL, &rr, err))
        goto done;
    o = json_object_new_object();
    json_object_object_add(o, "protocol", json_object_new_string("temporal hold-out, last round(0.2n) of users with >= 5 events"));
    json_object_object_add(o, "train_events", json_object_new_int64((int64_t)split->train_events));
    json_object_object_add(o, "test_events", json_object_new_int64((int64_t)split->test_events));
    json_object_object_add(o, "test_users", json_object_new_int64(split->test_users));
    const ev_result *res[2] = {&rp, &rr};
    const char *names[2] = {"popularity", "retrieval_exact"};
    for (int i = 0; i < 2; i++) {
        json_object *m = json_object_new_object();
        for (size_t c = 0; c < res[i]->n_cutoffs; c++) {
            char key[32];
            snprintf(key, sizeof key, "recall@%u", res[i]->at[c].k);
            json_object_object_add(m, key, json_object_new_double(res[i]->at[c].recall));
            snprintf(key, sizeof key, "ndcg@%u", res[i]->at[c].k);
            json_object_object_add(m, key, json_object_new_double(res[i]->at[c].ndcg));
        }
        json_object_object_add(o, names[i], m);
    }
done:
    ev_model_release(&pop);
    ev_model_release(&ret);
    return o;
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

int cmd_build(int argc, char **argv)
{
    const char *data = NULL, *out = NULL, *factory = NULL, *version = NULL;
    int64_t factors, iters, seed, shards, threads;
    double reg, alpha, target_recall;
    bool holdout, use_value, force, do_eval, ranker;
    const rp_opt opts[] = {
        {"data", RP_OPT_STR, &data, NULL, 0, 0, "dataset directory (recpipe import)", true},
        {"out", RP_OPT_STR, &out, NULL, 0, 0, "bundle directory to create", true},
        {"factors", RP_OPT_INT, &factors, "64", 1, RET_ALS_MAX_FACTORS, "latent factors k", false},
        {"reg", RP_OPT_DOUBLE, &reg, "30", 0, 1e9, "ALS regularization lambda", false},
        {"alpha", RP_OPT_DOUBLE, &alpha, "5", 0, 1e9, "ALS confidence scale: c = 1 + alpha*r",
         false},
        {"iters", RP_OPT_INT, &iters, "10", 1, RET_ALS_MAX_ITERS, "ALS sweeps", false},
        {"seed", RP_OPT_INT, &seed, "1", 0, 9e18, "seed of the initial factors", false},
        {"use-value", RP_OPT_BOOL, &use_value, "false", 0, 0,
         "r = the event's value (rating) instead of 1 per event", false},
        {"holdout", RP_OPT_BOOL, &holdout, "false", 0, 0,
         "train on the evaluation protocol's train split only (honest `recpipe eval`)", false},
        {"index", RP_OPT_STR, &factory, NULL, 0, 0,
         "FAISS index factory (Flat, IVF256,Flat, HNSW32, ...); default by catalogue size",
         false},
        {"target-recall", RP_OPT_DOUBLE, &target_recall, "0.95", 0, 1,
         "tune nprobe/efSearch to this recall@100 on user vectors (0 = no tuning)", false},
        {"shards", RP_OPT_INT, &shards, "1", 1, 1024, "index shards (items split by id hash)",
         false},
        {"version", RP_OPT_STR, &version, NULL, 0, 0, "bundle version string (default: time-based)",
         false},
        {"eval", RP_OPT_BOOL, &do_eval, "true", 0, 0,
         "with --holdout, record popularity and exact retrieval figures in the manifest", false},
        {"ranker", RP_OPT_BOOL, &ranker, "true", 0, 0,
         "train the ranking model into the bundle (--ranker=false skips it)", false},
        {"threads", RP_OPT_INT, &threads, "0", 0, 1024, "threads (0 = all cores)", false},
        {"force", RP_OPT_BOOL, &force, "false", 0, 0, "replace an existing bundle at --out",
         false},
    };
    int rc = cli_parse("build", "build --data DATA_DIR --out BUNDLE_DIR [options]",
                       "Trains implicit ALS on the dataset and writes a bundle: every item with\n"
                       "its title, categories, creation time, popularity and embedding (its\n"
                       "item factors), the ANN index (tuned to --target-recall on user\n"
                       "vectors) and the training parameters (lambda and alpha, which the\n"
                       "retrieval service needs for fold-in). The bundle appears only when\n"
                       "complete.",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);

    rp_error err = {0};
    idx_dataset *ds = NULL;
    ev_split *split = NULL;
    ret_als_matrix *m = NULL;
    ret_als_model *model = NULL;
    idx_builder *b = NULL;
    float *queries = NULL;
    uint64_t *pop = NULL;
    json_object *training = NULL, *evaluation = NULL;
    int exit_code = RP_EXIT_FAILURE;
    int progress = cli_progress_enabled();
    rp_compute_threads((int)threads);

    /* Refuse what would fail only after training: an existing bundle, a factory FAISS
     * rejects. */
    struct stat st;
    if (!force && stat(out, &st) == 0) {
        fprintf(stderr, "recpipe: build: %s already exists (use --force to replace it)\n", out);
        goto done;
    }
    if (factory && factory[0]) {
        idx_ann *probe = NULL;
        if ((rc = idx_ann_create(factory, (uint32_t)factors, IDX_METRIC_IP, &probe, &err))) {
            exit_code = cli_fail("build: --index", &err);
            goto done;
        }
        idx_ann_close(probe);
    }

    /* 1. the data */
    if ((rc = idx_dataset_open(data, &ds, &err))) {
        exit_code = cli_fail("build: open dataset", &err);
        goto done;
    }
    if (holdout) {
        ev_protocol proto = EV_PROTOCOL_DEFAULT;
        if ((rc = ev_split_make(ds, &proto, &split, &err))) {
            exit_code = cli_fail("build: split", &err);
            goto done;
        }
    }

    /* 2. implicit ALS */
    if ((rc = ret_als_matrix_from_dataset(ds, split ? split->take : NULL, use_value, &m, &err))) {
        exit_code = cli_fail("build: interactions", &err);
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
    if (progress) p.progress = train_progress;
    p.cancel = &interrupted;
    catch_signals();
    if ((rc = ret_als_train(m, &p, &model, &err))) {
        exit_code = cli_fail("build: train embeddings", &err);
        goto done;
    }
    printf("trained implicit ALS: %u users x %u items, %llu interactions%s, %u factors, reg %g, "
           "alpha %g, %u sweeps in %.2f s\n",
           model->n_users, model->n_items, (unsigned long long)m->nnz,
           holdout ? " (train split)" : "", model->k, reg, alpha, p.iters, model->train_seconds);

    /* 3. the bundle: items with metadata, popularity (train events) and embeddings */
    if ((rc = idx_builder_create(out, model->k, IDX_METRIC_IP, &b, &err))) {
        exit_code = cli_fail("build: bundle", &err);
        goto done;
    }
    if (version && (rc = idx_builder_set_version(b, version, &err))) {
        exit_code = cli_fail("build: --version", &err);
        goto done;
    }
    if (progress) idx_builder_set_progress(b, index_progress, NULL);
    pop = calloc(ds->n_items ? ds->n_items : 1, sizeof *pop);
    if (!pop) {
        exit_code = cli_fail("build", &(rp_error){RP_ENOMEM, "out of memory"});
        goto done;
    }
    for (uint32_t u = 0; u < ds->n_users; u++) {
        uint64_t n = ds->user_off[u + 1] - ds->user_off[u];
        if (split && split->take[u] < n) n = split->take[u];
        for (uint64_t j = 0; j < n; j++) pop[ds->events[ds->user_off[u] + j].item]++;
    }
    for (uint32_t i = 0; i < ds->n_items; i++) {
        const char *cats[IDX_MAX_ITEM_CATEGORIES];
        size_t nc = 0;
        if (ds->item_cat_off)
            for (uint32_t c = ds->item_cat_off[i]; c < ds->item_cat_off[i + 1] && nc < IDX_MAX_ITEM_CATEGORIES; c++)
                cats[nc++] = ds->category_names[ds->item_cats[c]];
        idx_item it = {
            .id = ds->item_ids[i],
            .title = ds->titles ? ds->titles[i] : NULL,
            .categories = cats,
            .n_categories = nc,
            .created = ds->item_created ? ds->item_created[i] : 0,
            .popularity = pop[i],
        };
        if ((rc = idx_builder_add_item(b, &it, model->item_factors + (size_t)i * model->k, &err))) {
            rp_error_prefix(&err, "item %llu", (unsigned long long)ds->item_ids[i]);
            exit_code = cli_fail("build: bundle", &err);
            goto done;
        }
    }

    /* 4. the index, tuned on user vectors (users with a history; an even sample) */
    size_t nq = 0;
    queries = malloc((size_t)BUILD_TUNE_USERS * model->k * sizeof *queries);
    if (!queries) {
        exit_code = cli_fail("build", &(rp_error){RP_ENOMEM, "out of memory"});
        goto done;
    }
    {
        uint32_t step = model->n_users / BUILD_TUNE_USERS + 1;
        for (uint32_t u = 0; u < model->n_users && nq < BUILD_TUNE_USERS; u += step) {
            const float *x = model->user_factors + (size_t)u * model->k;
            float norm = 0;
            for (uint32_t d = 0; d < model->k; d++) norm += x[d] * x[d];
            if (norm > 0) memcpy(queries + nq++ * model->k, x, model->k * sizeof *x);
        }
    }
    idx_index_opts io = {
        .factory = factory,
        .n_shards = (uint32_t)shards,
        .target_recall = target_recall,
        .n_queries = nq,
        .queries = nq ? queries : NULL,
        .threads = (int)threads,
    };
    if ((rc = idx_builder_set_index(b, &io, &err))) {
        exit_code = cli_fail("build: --index", &err);
        goto done;
    }

    /* 5. what fold-in needs (lambda, alpha) and how the factors were made */
    training = json_object_new_object();
    json_object_object_add(training, "algorithm", json_object_new_string("implicit-als"));
    json_object_object_add(training, "factors", json_object_new_int64(model->k));
    json_object_object_add(training, "reg", json_object_new_double(reg));
    json_object_object_add(training, "alpha", json_object_new_double(alpha));
    json_object_object_add(training, "iters", json_object_new_int64(iters));
    json_object_object_add(training, "seed", json_object_new_int64(seed));
    json_object_object_add(training, "confidence", json_object_new_string(use_value ? "1+alpha*sum(value)" : "1+alpha*count"));
    json_object_object_add(training, "holdout", json_object_new_boolean(holdout));
    json_object_object_add(training, "users", json_object_new_int64(model->n_users));
    json_object_object_add(training, "items", json_object_new_int64(model->n_items));
    json_object_object_add(training, "interactions", json_object_new_int64((int64_t)m->nnz));
    json_object_object_add(training, "train_events", json_object_new_int64(split ? (int64_t)split->train_events : (int64_t)ds->n_events));
    json_object_object_add(training, "train_seconds", json_object_new_double(model->train_seconds));
    json_object_object_add(training, "dataset", json_object_new_string(data));
    if ((rc = idx_builder_set_training_json(b, json_object_to_json_string_ext(training, JSON_C_TO_STRING_PLAIN), &err))) {
        exit_code = cli_fail("build: manifest", &err);
        goto done;
    }
    /* The recorded evaluation scores every item for every test user; past this many
     * multiply-adds it would take longer than the build itself. */
    double eval_cost = (double)ds->n_items * (split ? split->test_users : 0) * model->k;
    if (holdout && do_eval && eval_cost > BUILD_EVAL_MAX_FLOPS) {
        fprintf(stderr,
                "build: hold-out evaluation skipped (%u test users x %u items is large; run "
                "`recpipe eval`)\n",
                split->test_users, ds->n_items);
        do_eval = false;
    }
    if (holdout && do_eval) {
        evaluation = build_evaluation(ds, split, model, use_value, &err);
        if (!evaluation) {
            exit_code = cli_fail("build: evaluation", &err);
            goto done;
        }
        if ((rc = idx_builder_set_evaluation_json(b, json_object_to_json_string_ext(evaluation, JSON_C_TO_STRING_PLAIN), &err))) {
            exit_code = cli_fail("build: manifest", &err);
            goto done;
        }
    }

    /* 5b. the ranker, trained behind these factors on the same split, into the bundle. */
    if (ranker && !interrupted) {
        rank_train_opts ro;
        rank_train_opts_default(&ro);
        ro.threads = (int)threads;
        rank_train_report rr;
        if ((rc = rank_build_step(b, ds, split ? split->take : NULL, model->item_factors,
                                  model->k, &p, &ro, &rr, &err))) {
            exit_code = cli_fail("build: ranker", &err);
            goto done;
        }
        char rj[2048];
        json_object *rjo = json_tokener_parse(rank_train_report_json(&rr, &ro.shape, rj, sizeof rj));
        if (rjo) json_object_object_add(training, "ranker", rjo);
        if ((rc = idx_builder_set_training_json(
                 b, json_object_to_json_string_ext(training, JSON_C_TO_STRING_PLAIN), &err))) {
            exit_code = cli_fail("build: manifest", &err);
            goto done;
        }
    }

    /* 6. commit: the bundle appears complete, or not at all. Until here an interrupt
     * is answered by removing the temporary bundle (idx_builder_abort below); from
     * here on it kills the process at once, leaving at most the builder's hidden temp
     * directory, never a bundle. */
    if (interrupted) {
        exit_code = cli_fail("build", &(rp_error){RP_ECANCELED, "interrupted"});
        goto done;
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    idx_build_report rep;
    rc = idx_builder_commit(b, force, &rep, &err);
    b = NULL; /* consumed */
    if (rc) {
        exit_code = cli_fail("build: commit", &err);
        goto done;
    }
    printf("bundle %s: %llu items, %u shard%s, index %s", out, (unsigned long long)rep.n_items,
           rep.n_shards, rep.n_shards == 1 ? "" : "s", rep.factory);
    if (rep.tune.param[0])
        printf(" (%s=%g, recall@100 %.3f%s)", rep.tune.param, rep.tune.value, rep.tune.recall,
               rep.tune.reached ? "" : ", target not reached");
    else if (target_recall > 0 && rep.tune.recall > 0)
        printf(" (recall@100 %.3f)", rep.tune.recall);
    printf(", built in %.2f s, %llu index bytes\n", rep.build_seconds + rep.tune_seconds,
           (unsigned long long)rep.index_bytes);
    if (evaluation) {
        json_object *r, *v;
        if (json_object_object_get_ex(evaluation, "retrieval_exact", &r) &&
            json_object_object_get_ex(r, "recall@20", &v))
            printf("hold-out: retrieval recall@20 %.4f", json_object_get_double(v));
        if (json_object_object_get_ex(evaluation, "popularity", &r) &&
            json_object_object_get_ex(r, "recall@20", &v))
            printf(", popularity recall@20 %.4f\n", json_object_get_double(v));
    }
    exit_code = RP_EXIT_OK;
done:
    idx_builder_abort(b);
    json_object_put(training);
    json_object_put(evaluation);
    free(queries);
    free(pop);
    ret_als_model_free(model);
    ret_als_matrix_free(m);
    ev_split_free(split);
    idx_dataset_close(ds);
    return exit_code;
}
