/* recpipe eval — the temporal hold-out protocol on a dataset, for popularity and for the
 * bundle's retrieval (iALS fold-in through the ANN index). */
#include "cli.h"

#include "ev/eval.h"
#include "ev/retrieval.h"
#include "idx/bundle.h"
#include "idx/dataset.h"
#include "rank/build.h"
#include "rp/log.h"
#include "rp/threads.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODELS 4

static void eval_progress(void *ctx, const char *model, uint32_t done, uint32_t total)
{
    (void)ctx;
    fprintf(stderr, "\reval %s: %u/%u users%s", model, done, total, done == total ? "\n" : "");
}

static json_object *metrics_json(const ev_result *r)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "users", json_object_new_int64(r->users));
    json_object_object_add(o, "seconds", json_object_new_double(r->seconds));
    for (size_t c = 0; c < r->n_cutoffs; c++) {
        const ev_metrics *m = &r->at[c];
        char key[48];
#define PUT(field)                                                                          \
    snprintf(key, sizeof key, #field "@%u", m->k);                                          \
    json_object_object_add(o, key, json_object_new_double(m->field));
        PUT(recall)
        PUT(precision)
        PUT(f1)
        PUT(ndcg)
        PUT(coverage)
        PUT(diversity)
#undef PUT
    }
    return o;
}

/* The training object of the manifest says whether the bundle saw the test events
 * (-1: unknown) and whether r was the event value (`--use-value`). */
static int bundle_holdout(const idx_manifest *mf, int *use_value)
{
    json_object *tr = json_tokener_parse(mf->training_json ? mf->training_json : "{}"), *h;
    int holdout = -1;
    *use_value = 0;
    if (tr && json_object_object_get_ex(tr, "holdout", &h)) holdout = json_object_get_boolean(h);
    if (tr && json_object_object_get_ex(tr, "confidence", &h) &&
        json_object_is_type(h, json_type_string))
        *use_value = strstr(json_object_get_string(h), "value") != NULL;
    json_object_put(tr);
    return holdout;
}

int cmd_eval(int argc, char **argv)
{
    const char *data = NULL, *bundle_dir = NULL, *k_list = NULL, *models_list = NULL;
    bool as_json, exact;
    int64_t threads;
    const rp_opt opts[] = {
        {"data", RP_OPT_STR, &data, NULL, 0, 0, "dataset directory (recpipe import)", true},
        {"bundle", RP_OPT_STR, &bundle_dir, NULL, 0, 0,
         "bundle directory (recpipe build); without it only popularity is evaluated", false},
        {"k", RP_OPT_STR, &k_list, "10,20", 0, 0, "cut-offs, comma-separated (1..1000)", false},
        {"models", RP_OPT_STR, &models_list, "popularity,retrieval", 0, 0,
         "models to evaluate: popularity, retrieval", false},
        {"exact", RP_OPT_BOOL, &exact, "false", 0, 0,
         "score retrieval exactly over all items instead of through the ANN index", false},
        {"json", RP_OPT_BOOL, &as_json, "false", 0, 0, "print one JSON object", false},
        {"threads", RP_OPT_INT, &threads, "0", 0, 1024, "threads (0 = all cores)", false},
    };
    int rc = cli_parse("eval", "eval --data DATA_DIR [--bundle BUNDLE_DIR] [--k 10,20] [--json]",
                       "Evaluates on a temporal hold-out: for each user with at least 5\n"
                       "interactions, the last round(0.2 n) by time are the test set; every\n"
                       "item outside the user's train set is ranked. Reports Recall, Precision,\n"
                       "F1, NDCG (binary), catalogue coverage and intra-list diversity @K.\n"
                       "Build the bundle with `recpipe build --holdout` for honest figures.",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);

    rp_error err = {0};
    uint32_t ks[EV_MAX_CUTOFFS];
    size_t n_ks = 0;
    if (ev_parse_cutoffs(k_list, ks, EV_MAX_CUTOFFS, &n_ks, &err)) {
        fprintf(stderr, "recpipe eval: %s\nTry 'recpipe eval --help'.\n", rp_error_text(&err));
        return RP_EXIT_USAGE;
    }
    bool want_pop = false, want_ret = false, want_pipe = false;
    /* The default list adds `pipeline` when the bundle carries a ranker. */
    bool default_models = strcmp(models_list, "popularity,retrieval") == 0;
    {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", models_list);
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (!strcmp(t, "popularity"))
                want_pop = true;
            else if (!strcmp(t, "retrieval"))
                want_ret = true;
            else if (!strcmp(t, "pipeline"))
                want_pipe = true;
            else {
                fprintf(stderr,
                        "recpipe eval: --models: unknown model '%s' (known: popularity, "
                        "retrieval, pipeline)\nTry 'recpipe eval --help'.\n",
                        t);
                return RP_EXIT_USAGE;
            }
        }
    }
    if ((want_ret || want_pipe) && !bundle_dir) {
        if (!default_models) {
            fprintf(stderr, "recpipe eval: --models retrieval and pipeline need --bundle\n"
                            "Try 'recpipe eval --help'.\n");
            return RP_EXIT_USAGE;
        }
        want_ret = false;
    }

    idx_dataset *ds = NULL;
    ev_split *split = NULL;
    idx_bundle *bundle = NULL;
    float *factors = NULL;
    ev_model models[MAX_MODELS];
    ev_result results[MAX_MODELS];
    size_t n_models = 0;
    int holdout = -1;
    int exit_code = RP_EXIT_FAILURE;
    memset(models, 0, sizeof models);
    rp_compute_threads((int)threads);

    if ((rc = idx_dataset_open(data, &ds, &err))) {
        exit_code = cli_fail("eval: open dataset", &err);
        goto done;
    }
    ev_protocol proto = EV_PROTOCOL_DEFAULT;
    if ((rc = ev_split_make(ds, &proto, &split, &err))) {
        exit_code = cli_fail("eval: split", &err);
        goto done;
    }
    if (want_pop) {
        if ((rc = ev_model_popularity(ds, split, &models[n_models], &err))) {
            exit_code = cli_fail("eval: popularity", &err);
            goto done;
        }
        n_models++;
    }
    uint32_t k = 0;
    float reg = 0, alpha = 0;
    if (want_ret || want_pipe) {
        if ((rc = idx_bundle_open(bundle_dir, &bundle, &err))) {
            exit_code = cli_fail("eval: open bundle", &err);
            goto done;
        }
        uint32_t missing = 0;
        if ((rc = ev_bundle_factors(ds, bundle, &factors, &k, &reg, &alpha, &missing, &err))) {
            exit_code = cli_fail("eval: bundle", &err);
            goto done;
        }
        if (missing)
            fprintf(stderr,
                    "recpipe eval: warning: %u of the dataset's %u items are not in the bundle "
                    "(scored as zero vectors)\n",
                    missing, ds->n_items);
        int use_value = 0;
        holdout = bundle_holdout(idx_bundle_manifest(bundle), &use_value);
        if (holdout == 0)
            fprintf(stderr, "recpipe eval: warning: the bundle was trained on every event, test "
                            "events included: retrieval figures are optimistic (build with "
                            "--holdout)\n");
        ev_retrieval_opts o = {factors, k, reg, alpha, exact ? NULL : bundle, use_value};
        if (want_ret && (rc = ev_model_retrieval(ds, &o, &models[n_models++], &err))) {
            exit_code = cli_fail("eval: retrieval", &err);
            goto done;
        }
        char ranker_path[4096];
        if (default_models && idx_bundle_file(bundle, RANK_BUNDLE_FILE, ranker_path,
                                              sizeof ranker_path, NULL) == RP_OK)
            want_pipe = true;
    }
    if (want_pipe) {
        /* iALS's top 200 reranked by the bundle's ranker. */
        if ((rc = rank_pipeline_from_bundle(ds, bundle, factors, k, reg, alpha, 200,
                                            &models[n_models++], &err))) {
            exit_code = cli_fail("eval: pipeline", &err);
            goto done;
        }
    }

    for (size_t i = 0; i < n_models; i++) {
        if ((rc = ev_evaluate(ds, split, &models[i], ks, n_ks,
                              cli_progress_enabled() && !as_json ? eval_progress : NULL, NULL,
                              &results[i], &err))) {
            exit_code = cli_fail("eval", &err);
            goto done;
        }
    }

    if (as_json) {
        json_object *root = json_object_new_object(), *sp = json_object_new_object();
        json_object_object_add(sp, "train_events", json_object_new_int64((int64_t)split->train_events));
        json_object_object_add(sp, "test_events", json_object_new_int64((int64_t)split->test_events));
        json_object_object_add(sp, "test_users", json_object_new_int64(split->test_users));
        json_object_object_add(sp, "users", json_object_new_int64(ds->n_users));
        json_object_object_add(sp, "items", json_object_new_int64(ds->n_items));
        json_object_object_add(root, "split", sp);
        json_object *ka = json_object_new_array();
        for (size_t c = 0; c < n_ks; c++) json_object_array_add(ka, json_object_new_int64(ks[c]));
        json_object_object_add(root, "k", ka);
        if (bundle) {
            const idx_manifest *mf = idx_bundle_manifest(bundle);
            json_object *b = json_object_new_object();
            json_object_object_add(b, "path", json_object_new_string(bundle_dir));
            json_object_object_add(b, "version", json_object_new_string(mf->version ? mf->version : ""));
            json_object_object_add(b, "factory", json_object_new_string(mf->factory ? mf->factory : ""));
            json_object_object_add(b, "param", json_object_new_string(mf->param_name ? mf->param_name : ""));
            json_object_object_add(b, "param_value", json_object_new_double(mf->param_value));
            json_object_object_add(b, "index_recall", json_object_new_double(mf->recall));
            json_object_object_add(b, "holdout", holdout < 0 ? NULL : json_object_new_boolean(holdout));
            json_object_object_add(b, "exact", json_object_new_boolean(exact));
            json_object_object_add(root, "bundle", b);
        }
        json_object *mo = json_object_new_object();
        for (size_t i = 0; i < n_models; i++)
            json_object_object_add(mo, results[i].model, metrics_json(&results[i]));
        json_object_object_add(root, "models", mo);
        printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
        json_object_put(root);
    } else {
        printf("split: %llu train / %llu test events, %u test users (of %u), %u items\n",
               (unsigned long long)split->train_events, (unsigned long long)split->test_events,
               split->test_users, ds->n_users, ds->n_items);
        if (bundle) {
            const idx_manifest *mf = idx_bundle_manifest(bundle);
            printf("bundle: %s (%s, %s", bundle_dir, mf->version ? mf->version : "?",
                   exact ? "exact scoring" : mf->factory ? mf->factory : "?");
            if (!exact && mf->param_name && mf->param_name[0])
                printf(" %s=%g", mf->param_name, mf->param_value);
            printf(", trained on %s)\n", holdout == 1 ? "the train split" : holdout == 0 ? "everything" : "?");
        }
        printf("\n%-12s %5s %8s %9s %8s %8s %8s %9s\n", "model", "K", "recall", "precision",
               "f1", "ndcg", "coverage", "diversity");
        for (size_t i = 0; i < n_models; i++)
            for (size_t c = 0; c < results[i].n_cutoffs; c++) {
                const ev_metrics *m = &results[i].at[c];
                printf("%-12s %5u %8.4f %9.4f %8.4f %8.4f %8.4f %9.4f\n", results[i].model, m->k,
                       m->recall, m->precision, m->f1, m->ndcg, m->coverage, m->diversity);
            }
    }
    exit_code = RP_EXIT_OK;
done:
    for (size_t i = 0; i < MAX_MODELS; i++) ev_model_release(&models[i]);
    free(factors);
    idx_bundle_release(bundle);
    ev_split_free(split);
    idx_dataset_close(ds);
    return exit_code;
}
