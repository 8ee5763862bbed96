/* The ranker inside a bundle (rank/build.h). */
#include "rank/build.h"
#include "rank/pipeline.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rank_build_step(idx_builder *b, const idx_dataset *ds, const uint32_t *take,
                    const float *item_factors, uint32_t k, const ret_als_params *als,
                    const rank_train_opts *opts, rank_train_report *rep, rp_error *err)
{
    rank_train_opts o;
    if (opts) o = *opts;
    else rank_train_opts_default(&o);
    o.als = *als;
    o.als.progress = NULL;
    if (o.als.factors != k)
        return rp_errorf(err, RP_EINVAL, "ranker: iALS factors %u differ from the bundle's %u",
                         o.als.factors, k);
    rank_model *m = NULL;
    int rc = rank_train(ds, take, item_factors, k, &o, &m, rep, err);
    if (rc) return rc;
    char path[PATH_MAX];
    if ((rc = idx_builder_file(b, RANK_BUNDLE_FILE, path, sizeof path, err)) == RP_OK)
        rc = rank_model_save(m, path, err);
    rank_model_free(m);
    return rc;
}

const char *rank_train_report_json(const rank_train_report *r, const rank_shape *s, char *buf,
                                   size_t cap)
{
    snprintf(buf, cap,
             "{\"model\":\"din-dcnv2\",\"dim\":%u,\"max_hist\":%u,\"attention\":[%u,%u,1],"
             "\"cross_layers\":%u,\"cross_rank\":%u,\"deep\":[%u,%u],\"epochs\":%u,"
             "\"best_epoch\":%u,\"val_auc\":%.4f,\"val_ndcg@20\":%.4f,"
             "\"val_ndcg@20_retrieval_order\":%.4f,\"train_users\":%u,\"val_users\":%u,"
             "\"positives\":%llu,\"seconds\":%.1f}",
             s->dim, s->max_hist, s->att1, s->att2, s->n_cross, s->cross_rank, s->deep[0],
             s->n_deep > 1 ? s->deep[1] : 0, r->epochs_run, r->best_epoch, r->val_auc, r->val_ndcg,
             r->val_ndcg_retrieval, r->train_users, r->val_users,
             (unsigned long long)r->positives, r->seconds);
    return buf;
}

int rank_model_from_bundle(const idx_bundle *b, rank_model **out, rp_error *err)
{
    *out = NULL;
    char path[PATH_MAX];
    int rc = idx_bundle_file(b, RANK_BUNDLE_FILE, path, sizeof path, err);
    if (rc == RP_ENOENT)
        return rp_errorf(err, RP_ENOENT, "%s: the bundle has no ranker (%s); build it with one",
                         idx_bundle_path(b), RANK_BUNDLE_FILE);
    if (rc) return rc;
    return rank_model_load(path, out, err);
}

typedef struct owned {
    ev_model inner;
    rank_model *ranker;
} owned;

static int owned_recommend(void *ctx, uint32_t user, const idx_event *hist, size_t n_hist,
                           const uint8_t *seen, size_t k, uint32_t *out, rp_error *err)
{
    owned *o = ctx;
    return o->inner.recommend(o->inner.ctx, user, hist, n_hist, seen, k, out, err);
}

static void owned_destroy(void *ctx)
{
    owned *o = ctx;
    ev_model_release(&o->inner);
    rank_model_free(o->ranker);
    free(o);
}

int rank_pipeline_from_bundle(const idx_dataset *ds, const idx_bundle *b, const float *factors,
                              uint32_t k, float reg, float alpha, uint32_t n_candidates,
                              ev_model *out, rp_error *err)
{
    memset(out, 0, sizeof *out);
    owned *o = calloc(1, sizeof *o);
    if (!o) return rp_errorf(err, RP_ENOMEM, "pipeline: out of memory");
    int rc = rank_model_from_bundle(b, &o->ranker, err);
    if (rc == RP_OK) {
        rank_pipeline_opts po = {o->ranker, factors, k, reg, alpha, n_candidates};
        rc = rank_pipeline_model(ds, &po, &o->inner, err);
    }
    if (rc) {
        rank_model_free(o->ranker);
        free(o);
        return rc;
    }
    out->name = "pipeline";
    out->ctx = o;
    out->recommend = owned_recommend;
    out->destroy = owned_destroy;
    return RP_OK;
}
