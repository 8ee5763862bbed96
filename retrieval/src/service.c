/*
 * The Retrieval service (ret/service.h): bundle loading, the pinned state, the
 * Retrieve handler and the Admin handlers (Reload, UpsertItems, DeleteItems).
 */
#include "ret/service.h"
#include "service_int.h"

#include "recpipe/v1/admin.pb-c.h"
#include "ret/als.h"
#include "rp/clock.h"
#include "rp/log.h"
#include "rp/mainq.h"
#include "rp/sighup.h"

#include <errno.h>
#include <json-c/json.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- loading a bundle ------------------------------------------------------------ */

static void bundle_unref(ret__bundle *rb)
{
    if (!rb || atomic_fetch_sub_explicit(&rb->refs, 1, memory_order_acq_rel) != 1) return;
    ret_catalog_free(rb->cat);
    ret_content_free(rb->content);
    free(rb->row_dense);
    ret_als_gram_free(rb->gram);
    idx_bundle_release(rb->b);
    free(rb);
    /* A bundle is hundreds of MB: give the pages back so that memory returns to its
     * level before a swap. */
    malloc_trim(0);
}

/* What the item store walk collects. */
typedef struct collect {
    uint32_t dim, shard, n_shards;
    uint64_t cap, n, nall;
    uint64_t *ids;
    int64_t *created;
    float *pop;
    uint32_t *cat_off;
    uint16_t *cats;
    uint64_t cats_cap, ncats;
    float *vecs;     /* the shard's vectors */
    float *allvecs;  /* every item's vectors (for the Gram matrix) */
    uint64_t all_cap;
    const char **names; /* sorted category names */
    size_t n_names;
    rp_error *err;
} collect;

static int grow(void **p, uint64_t n, size_t sz)
{
    void *q = realloc(*p, n * sz);
    if (!q) return RP_ENOMEM;
    *p = q;
    return RP_OK;
}

static int find_name(const collect *cl, const char *name)
{
    size_t lo = 0, hi = cl->n_names;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(cl->names[mid], name);
        if (r == 0) return (int)mid;
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static int collect_item(void *ctx, const idx_item_view *it, const float *emb)
{
    collect *cl = ctx;
    if (cl->nall == cl->all_cap) {
        cl->all_cap = cl->all_cap ? 2 * cl->all_cap : 4096;
        if (grow((void **)&cl->allvecs, cl->all_cap * cl->dim, sizeof *cl->allvecs)) return RP_ENOMEM;
    }
    memcpy(cl->allvecs + cl->nall * cl->dim, emb, sizeof *emb * cl->dim);
    cl->nall++;
    if (cl->n_shards > 1 && idx_shard_of(it->id, cl->n_shards) != cl->shard) return 0;
    if (cl->n == cl->cap) {
        cl->cap = cl->cap ? 2 * cl->cap : 4096;
        if (grow((void **)&cl->ids, cl->cap, sizeof *cl->ids) ||
            grow((void **)&cl->created, cl->cap, sizeof *cl->created) ||
            grow((void **)&cl->pop, cl->cap, sizeof *cl->pop) ||
            grow((void **)&cl->cat_off, cl->cap + 1, sizeof *cl->cat_off) ||
            grow((void **)&cl->vecs, cl->cap * cl->dim, sizeof *cl->vecs))
            return RP_ENOMEM;
    }
    uint64_t i = cl->n++;
    cl->ids[i] = it->id;
    cl->created[i] = it->created;
    cl->pop[i] = (float)it->popularity;
    cl->cat_off[i] = (uint32_t)cl->ncats;
    memcpy(cl->vecs + i * cl->dim, emb, sizeof *emb * cl->dim);
    const char *p = it->categories;
    for (uint32_t j = 0; j < it->n_categories; j++, p += strlen(p) + 1) {
        int k = find_name(cl, p);
        if (k < 0) continue;
        if (cl->ncats == cl->cats_cap) {
            cl->cats_cap = cl->cats_cap ? 2 * cl->cats_cap : 8192;
            if (grow((void **)&cl->cats, cl->cats_cap, sizeof *cl->cats)) return RP_ENOMEM;
        }
        cl->cats[cl->ncats++] = (uint16_t)k;
    }
    cl->cat_off[i + 1] = (uint32_t)cl->ncats;
    return 0;
}

/* The ALS hyper-parameters from the manifest's "training" object: "reg" and "alpha" at
 * its top level or one level down (e.g. {"als": {"reg": 30, ...}}), and whether the
 * confidence was built from event values ("confidence": "1+alpha*sum(value)"). */
static void training_params(const char *json, float *reg, float *alpha, int *use_value, int *found)
{
    *reg = 30.0f;
    *alpha = 5.0f;
    *use_value = 0;
    *found = 0;
    json_object *root = json ? json_tokener_parse(json) : NULL;
    if (!root) return;
    json_object *objs[16];
    int nobj = 0;
    objs[nobj++] = root;
    json_object_object_foreach(root, key, val)
    {
        (void)key;
        if (nobj < 16 && json_object_is_type(val, json_type_object)) objs[nobj++] = val;
    }
    for (int o = 0; o < nobj; o++) {
        json_object *v;
        if (json_object_object_get_ex(objs[o], "reg", &v) && (*found & 1) == 0) {
            *reg = (float)json_object_get_double(v);
            *found |= 1;
        }
        if (json_object_object_get_ex(objs[o], "alpha", &v) && (*found & 2) == 0) {
            *alpha = (float)json_object_get_double(v);
            *found |= 2;
        }
        if (json_object_object_get_ex(objs[o], "confidence", &v) && json_object_is_type(v, json_type_string))
            *use_value |= strstr(json_object_get_string(v), "value") != NULL;
    }
    json_object_put(root);
}

static int ann_search(void *ctx, const float *q, uint32_t k, float effort, uint32_t *dense,
                      float *scores, uint32_t *n, rp_error *err)
{
    const ret__bundle *rb = ctx;
    *n = 0;
    if (k > 100000) k = 100000;
    int64_t *labels = malloc(sizeof *labels * k);
    if (!labels) return rp_errorf(err, RP_ENOMEM, "ann: out of memory for %u results", k);
    /* Deeper (over-fetching) searches probe more IVF lists, set per call: the loaded
     * index stays untouched and shared by every thread. */
    int rc = effort > RET_WIDE_EFFORT && rb->wide_nprobe > 0
                 ? idx_ann_search_param(rb->ann, 1, q, k, rb->wide_nprobe, scores, labels, err)
                 : idx_ann_search(rb->ann, q, k, scores, labels, err);
    if (rc == RP_OK) {
        uint32_t m = 0;
        for (uint32_t j = 0; j < k; j++) {
            if (labels[j] < 0 || (uint64_t)labels[j] >= rb->n_rows) continue;
            dense[m] = rb->row_dense ? rb->row_dense[labels[j]] : (uint32_t)labels[j];
            scores[m++] = scores[j];
        }
        *n = m;
    }
    free(labels);
    return rc;
}

static int bundle_load(const char *path, uint32_t shard, float content_lambda,
                       double content_quantile, float wide_factor, ret__bundle **out, rp_error *err)
{
    *out = NULL;
    ret__bundle *rb = calloc(1, sizeof *rb);
    collect cl = {0};
    int rc;
    if (!rb) return rp_errorf(err, RP_ENOMEM, "out of memory");
    atomic_init(&rb->refs, 1);
    rc = idx_bundle_open_shard(path, shard, &rb->b, err);
    if (rc) goto fail;
    const idx_manifest *m = idx_bundle_manifest(rb->b);
    if (shard >= m->n_shards) {
        rc = rp_errorf(err, RP_EINVAL, "--shard: %u is out of range: the bundle %s has %u shard(s)", shard,
                       path, m->n_shards);
        goto fail;
    }
    if (m->metric != IDX_METRIC_IP) {
        rc = rp_errorf(err, RP_EPRECOND, "bundle %s: metric is %s; retrieval scores by inner product (ip)",
                       path, idx_metric_name(m->metric));
        goto fail;
    }
    snprintf(rb->version, sizeof rb->version, "%s", m->version);
    snprintf(rb->path, sizeof rb->path, "%s", path);
    rb->shard = shard;
    rb->n_shards = m->n_shards;
    rb->created = m->created;
    rb->ann = idx_bundle_shard(rb->b, shard);
    if (!rb->ann) {
        rc = rp_errorf(err, RP_ECORRUPT, "bundle %s: shard %u has no index", path, shard);
        goto fail;
    }
    rb->index_bytes = idx_ann_memory_bytes(rb->ann);
    uint32_t nlist = idx_ann_nlist(rb->ann);
    if (wide_factor > 1 && nlist && m->param_value > 0) {
        /* Filtered searches over-fetch, and a deeper list of neighbours needs a deeper
         * search to keep its recall. (IVF only: FAISS 1.7.3 has no per-call efSearch.) */
        double v = m->param_value * wide_factor;
        rb->wide_nprobe = v > nlist ? nlist : v;
    }
    idx_itemstore *store = idx_bundle_items(rb->b);
    cl.dim = idx_itemstore_dim(store);
    cl.shard = shard;
    cl.n_shards = m->n_shards;
    cl.err = err;
    if (cl.dim != m->dim || idx_ann_dim(rb->ann) != m->dim) {
        rc = rp_errorf(err, RP_ECORRUPT, "bundle %s: dimensions disagree (manifest %u, items %u, index %u)",
                       path, m->dim, cl.dim, idx_ann_dim(rb->ann));
        goto fail;
    }
    rc = idx_itemstore_categories(store, &cl.names, &cl.n_names, err);
    if (rc) goto fail;
    if (cl.n_names > 65535) {
        rc = rp_errorf(err, RP_EINVAL, "bundle %s: %zu categories exceed 65535", path, cl.n_names);
        goto fail;
    }
    rc = idx_itemstore_foreach(store, collect_item, &cl, err);
    if (rc) {
        if (rc == RP_ENOMEM) rp_errorf(err, rc, "bundle %s: out of memory reading the items", path);
        goto fail;
    }
    rb->n_items_total = cl.nall;
    int found;
    training_params(m->training_json, &rb->reg, &rb->alpha, &rb->use_value, &found);
    if (found != 3)
        rp_warn("retrieval", "bundle %s: no ALS reg/alpha in the manifest's training object; fold-in uses reg %g alpha %g",
                path, (double)rb->reg, (double)rb->alpha);
    rc = ret_als_gram_create(cl.allvecs, (uint32_t)cl.nall, cl.dim, rb->reg, &rb->gram, err);
    if (rc) {
        rp_error_prefix(err, "bundle %s: fold-in", path);
        goto fail;
    }
    free(cl.allvecs);
    cl.allvecs = NULL;
    ret_catalog_input in = {.n_items = (uint32_t)cl.n, .dim = cl.dim, .ids = cl.ids,
                            .created = cl.created, .cat_off = cl.cat_off, .cats = cl.cats,
                            .n_categories = (uint32_t)cl.n_names,
                            .category_names = cl.names, .vectors = cl.vecs,
                            .popularity = cl.pop, .ann = ann_search, .ann_ctx = rb};
    if (cl.cat_off) cl.cat_off[0] = 0;
    rc = ret_catalog_build(&in, &rb->cat, err);
    if (rc) {
        rp_error_prefix(err, "bundle %s", path);
        goto fail;
    }
    /* Index rows → catalog positions; the builder writes rows in ascending id order,
     * which is the catalog's order too, so this is usually the identity. */
    size_t nrows = 0;
    const uint64_t *row_ids = idx_bundle_shard_ids(rb->b, shard, &nrows);
    rb->n_rows = nrows;
    if (nrows != idx_ann_ntotal(rb->ann)) {
        rc = rp_errorf(err, RP_ECORRUPT, "bundle %s: shard %u lists %zu ids for %llu index rows", path, shard,
                       nrows, (unsigned long long)idx_ann_ntotal(rb->ann));
        goto fail;
    }
    bool identity = nrows == rb->cat->n_items;
    for (size_t r = 0; identity && r < nrows; r++) identity = row_ids[r] == rb->cat->ids[r];
    if (!identity) {
        rb->row_dense = malloc(sizeof *rb->row_dense * (nrows + 1));
        if (!rb->row_dense) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory");
            goto fail;
        }
        for (size_t r = 0; r < nrows; r++)
            if (!ret_catalog_find(rb->cat, row_ids[r], &rb->row_dense[r])) {
                rc = rp_errorf(err, RP_ECORRUPT, "bundle %s: index row %zu names item %llu, not in the item store",
                               path, r, (unsigned long long)row_ids[r]);
                goto fail;
            }
    }
    rp_error cerr;
    if (ret_content_fit(rb->cat, content_lambda, content_quantile, &rb->content, &cerr))
        rp_warn("retrieval", "bundle %s: no content model (%s); upserts need an embedding", path,
                rp_error_text(&cerr));
    /* Warm: a few real searches page the index and the catalogue in before any
     * request sees this bundle, and prove that the index answers. */
    for (uint32_t j = 0; j < 8 && j < rb->cat->n_items; j++) {
        uint32_t dense[100];
        float scores[100];
        uint32_t got;
        uint32_t i = (uint32_t)(((uint64_t)j * 2654435761u) % rb->cat->n_items);
        rc = ann_search(rb, ret_catalog_vec(rb->cat, i), 100, 1.0f, dense, scores, &got, err);
        if (rc) {
            rp_error_prefix(err, "bundle %s: warm-up search", path);
            goto fail;
        }
    }
    free(cl.ids);
    free(cl.created);
    free(cl.pop);
    free(cl.cat_off);
    free(cl.cats);
    free(cl.vecs);
    free(cl.names);
    *out = rb;
    return RP_OK;
fail:
    free(cl.ids);
    free(cl.created);
    free(cl.pop);
    free(cl.cat_off);
    free(cl.cats);
    free(cl.vecs);
    free(cl.allvecs);
    free(cl.names);
    bundle_unref(rb);
    return rc ? rc : RP_EINTERNAL;
}

/* ---- the pinned state ------------------------------------------------------------ */

typedef struct ret_state {
    atomic_int refs;
    ret__bundle *bundle;
    ret_side *side;
} ret_state;

struct ret_service {
    pthread_mutex_t pin_mu;   /* held only to read cur and take a reference */
    ret_state *cur;
    pthread_mutex_t admin_mu; /* serialises Reload, UpsertItems, DeleteItems */
    char start_path[PATH_MAX];
    uint32_t shard;
    ret_search_opts search;
    float content_lambda;
    float wide_factor;
    double content_quantile;
    atomic_ulong reloads;
    rp_method methods[4];
    rp_sighup *hup; /* SIGHUP watcher, or NULL */
    atomic_bool stopping;
};

static void state_unref(ret_state *st)
{
    if (!st || atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1) return;
    ret_side_unref(st->side);
    bundle_unref(st->bundle);
    free(st);
}

static ret_state *pin(ret_service *s)
{
    pthread_mutex_lock(&s->pin_mu);
    ret_state *st = s->cur;
    if (st) atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->pin_mu);
    return st;
}

/* Makes a state from bundle and side (consumes one reference of each) and swaps it
 * in; the previous state loses the service's reference. */
static int swap_in(ret_service *s, ret__bundle *rb, ret_side *side, rp_error *err)
{
    ret_state *st = malloc(sizeof *st);
    if (!st) {
        ret_side_unref(side);
        bundle_unref(rb);
        return rp_errorf(err, RP_ENOMEM, "out of memory");
    }
    atomic_init(&st->refs, 1);
    st->bundle = rb;
    st->side = side;
    pthread_mutex_lock(&s->pin_mu);
    ret_state *old = s->cur;
    s->cur = st;
    pthread_mutex_unlock(&s->pin_mu);
    state_unref(old);
    return RP_OK;
}

void ret_service_version(ret_service *s, char *buf, size_t cap)
{
    ret_state *st = pin(s);
    snprintf(buf, cap, "%s", st ? st->bundle->version : "");
    state_unref(st);
}

/* A reload's bundle_load, run on the main thread (rp/mainq.h: the main heap gives a
 * swapped-out bundle's memory back). */
typedef struct load_job {
    ret_service *s;
    const char *path;
    ret__bundle **out;
    rp_error *err;
} load_job;

static int run_load(void *arg)
{
    load_job *j = arg;
    ret_service *s = j->s;
    return bundle_load(j->path, s->shard, s->content_lambda, s->content_quantile, s->wide_factor,
                       j->out, j->err);
}

int ret_service_reload(ret_service *s, const char *path, char *prev, char *now, double *seconds,
                       rp_error *err)
{
    if (!path || !*path) path = s->start_path;
    uint64_t t0 = rp_now_ns();
    pthread_mutex_lock(&s->admin_mu);
    ret__bundle *rb;
    load_job job = {s, path, &rb, err};
    int rc = rp_main_run(run_load, &job);
    if (rc) {
        pthread_mutex_unlock(&s->admin_mu);
        rp_warn("retrieval", "reload of %s refused: %s; the old bundle keeps serving", path,
                rp_error_text(err));
        return rc;
    }
    ret_state *old = pin(s);
    ret_side *side;
    rc = ret_side_rebase(old->side, old->bundle->cat, rb->cat, &side, err);
    if (prev) snprintf(prev, 64, "%s", old->bundle->version);
    state_unref(old);
    if (rc) {
        bundle_unref(rb);
        pthread_mutex_unlock(&s->admin_mu);
        return rc;
    }
    if (now) snprintf(now, 64, "%s", rb->version);
    char ver[64];
    snprintf(ver, sizeof ver, "%s", rb->version);
    /* Counted before the swap, so that a Status showing the new version also counts it. */
    atomic_fetch_add(&s->reloads, 1);
    rc = swap_in(s, rb, side, err);
    pthread_mutex_unlock(&s->admin_mu);
    if (rc) {
        atomic_fetch_sub(&s->reloads, 1);
        return rc;
    }
    double secs = (double)(rp_now_ns() - t0) / 1e9;
    if (seconds) *seconds = secs;
    rp_info("retrieval", "bundle %s (version %s) swapped in after %.3f s", path, ver, secs);
    return RP_OK;
}

/* ---- handlers --------------------------------------------------------------------- */

static int h_retrieve(rp_call *call, const ProtobufCMessage *reqm, ProtobufCMessage **resp,
                      rp_error *err)
{
    ret_service *s = rp_call_user(call);
    const Recpipe__V1__RetrieveRequest *req = (const Recpipe__V1__RetrieveRequest *)reqm;
    rp_arena *a = rp_call_arena(call);
    if (rp_call_remaining_ms(call) < 0) return rp_errorf(err, RP_ETIMEDOUT, "deadline passed before retrieval started");
    ret_state *st = pin(s);
    if (!st) return rp_no_bundle(err);
    const ret__bundle *rb = st->bundle;
    int64_t now = req->now ? req->now : rp_wall_s();
    ret_query q;
    uint32_t unknown = 0;
    int rc = ret__build_query(rb, st->side, req, now, a, &q, &unknown, err);
    if (rc) goto done;
    ret_stats stats = {0};
    ret_ctx ctx = {rb->cat, st->side, &q, &s->search, a, &stats};
    ret_cands out;
    rc = ret_retrieve(&ctx, &out, err);
    if (rc) goto done;
    Recpipe__V1__RetrieveResponse *r = rp_arena_alloc(a, sizeof *r);
    Recpipe__V1__Candidate *cv = rp_arena_alloc(a, sizeof *cv * (out.n + 1));
    Recpipe__V1__Candidate **cp = rp_arena_alloc(a, sizeof *cp * (out.n + 1));
    char *version = rp_arena_strdup(a, rb->version);
    if (!r || !cv || !cp || !version) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory for %u candidates", out.n);
        goto done;
    }
    recpipe__v1__retrieve_response__init(r);
    for (uint32_t j = 0; j < out.n; j++) {
        recpipe__v1__candidate__init(&cv[j]);
        cv[j].item_id = out.v[j].id;
        cv[j].score = out.v[j].score;
        cv[j].source = (Recpipe__V1__Source)out.v[j].source;
        cv[j].shard = rb->shard;
        cp[j] = &cv[j];
    }
    r->n_candidates = out.n;
    r->candidates = cp;
    r->bundle_version = version;
    r->unknown_history_items = unknown;
    r->shard = rb->shard;
    r->shard_count = rb->n_shards;
    *resp = &r->base;
done:
    state_unref(st);
    return rc;
}

static int h_reload(rp_call *call, const ProtobufCMessage *reqm, ProtobufCMessage **resp,
                    rp_error *err)
{
    ret_service *s = rp_call_user(call);
    const Recpipe__V1__ReloadRequest *req = (const Recpipe__V1__ReloadRequest *)reqm;
    rp_arena *a = rp_call_arena(call);
    Recpipe__V1__ReloadResponse *r = rp_arena_alloc(a, sizeof *r);
    char *prev = rp_arena_alloc(a, 64), *now = rp_arena_alloc(a, 64);
    if (!r || !prev || !now) return rp_errorf(err, RP_ENOMEM, "out of memory");
    recpipe__v1__reload_response__init(r);
    double secs = 0;
    int rc = ret_service_reload(s, req->bundle_path, prev, now, &secs, err);
    if (rc) return rc;
    r->previous_version = prev;
    r->bundle_version = now;
    r->load_seconds = secs;
    *resp = &r->base;
    return RP_OK;
}

static int h_upsert(rp_call *call, const ProtobufCMessage *reqm, ProtobufCMessage **resp,
                    rp_error *err)
{
    ret_service *s = rp_call_user(call);
    const Recpipe__V1__UpsertItemsRequest *req = (const Recpipe__V1__UpsertItemsRequest *)reqm;
    rp_arena *a = rp_call_arena(call);
    if (req->n_items < 1 || req->n_items > 10000)
        return rp_errorf(err, RP_EINVAL, "items: %zu items, allowed 1..10000", req->n_items);
    pthread_mutex_lock(&s->admin_mu);
    ret_state *st = pin(s);
    int rc = RP_OK;
    if (!st) {
        rc = rp_no_bundle(err);
        goto done;
    }
    const ret__bundle *rb = st->bundle;
    uint32_t dim = rb->cat->dim;
    ret_side_upsert *up = rp_arena_alloc(a, sizeof *up * req->n_items);
    if (!up) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto done;
    }
    uint32_t n = 0, from_content = 0;
    int64_t now = rp_wall_s();
    for (size_t i = 0; i < req->n_items; i++) {
        const Recpipe__V1__Item *it = req->items[i];
        if (!it || it->item_id == 0) {
            rc = rp_errorf(err, RP_EINVAL, "items[%zu].item_id: required, non-zero", i);
            goto done;
        }
        if (it->title && strlen(it->title) > 1024) {
            rc = rp_errorf(err, RP_EINVAL, "items[%zu].title: %zu bytes exceed the limit of 1024", i,
                           strlen(it->title));
            goto done;
        }
        if (it->n_categories > 64) {
            rc = rp_errorf(err, RP_EINVAL, "items[%zu].categories: %zu exceed the limit of 64", i,
                           it->n_categories);
            goto done;
        }
        if (it->n_tags > 256) {
            rc = rp_errorf(err, RP_EINVAL, "items[%zu].tags: %zu exceed the limit of 256", i, it->n_tags);
            goto done;
        }
        if (it->n_embedding && it->n_embedding != dim) {
            rc = rp_errorf(err, RP_EINVAL, "items[%zu].embedding: has %zu values, the bundle's dimension is %u",
                           i, it->n_embedding, dim);
            goto done;
        }
        for (size_t d = 0; d < it->n_embedding; d++)
            if (!isfinite(it->embedding[d])) {
                rc = rp_errorf(err, RP_EINVAL, "items[%zu].embedding[%zu]: is NaN or infinite", i, d);
                goto done;
            }
        if (!it->n_embedding && !rb->content) {
            rc = rp_errorf(err, RP_EINVAL,
                           "items[%zu].embedding: required: the bundle has no content model to derive one", i);
            goto done;
        }
        /* Items of other shards belong to other processes. */
        if (rb->n_shards > 1 && idx_shard_of(it->item_id, rb->n_shards) != rb->shard) continue;
        uint16_t *cats = rp_arena_alloc(a, sizeof *cats * (it->n_categories + 1));
        if (!cats) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory");
            goto done;
        }
        uint32_t nc = 0;
        for (size_t j = 0; j < it->n_categories; j++)
            if (it->categories[j] && ret_catalog_find_category(rb->cat, it->categories[j], &cats[nc])) nc++;
        const float *vec = it->embedding;
        if (!it->n_embedding) {
            float *v = rp_arena_alloc(a, sizeof *v * dim);
            if (!v) {
                rc = rp_errorf(err, RP_ENOMEM, "out of memory");
                goto done;
            }
            ret_content_embed(rb->content, cats, nc, v);
            vec = v;
            from_content++;
        }
        up[n++] = (ret_side_upsert){it->item_id, it->created_at ? it->created_at : now, cats, nc, vec};
    }
    /* The answer is allocated before the swap: once swapped in, the call must succeed. */
    Recpipe__V1__UpsertItemsResponse *r = rp_arena_alloc(a, sizeof *r);
    if (!r) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto done;
    }
    ret_side *side;
    rc = ret_side_upsert_items(st->side, rb->cat, up, n, &side, err);
    if (rc) goto done;
    atomic_fetch_add(&st->bundle->refs, 1);
    rc = swap_in(s, st->bundle, side, err);
    if (rc) goto done;
    recpipe__v1__upsert_items_response__init(r);
    r->upserted = n;
    r->embedded_from_content = from_content;
    *resp = &r->base;
done:
    state_unref(st);
    pthread_mutex_unlock(&s->admin_mu);
    return rc;
}

static int h_delete(rp_call *call, const ProtobufCMessage *reqm, ProtobufCMessage **resp,
                    rp_error *err)
{
    ret_service *s = rp_call_user(call);
    const Recpipe__V1__DeleteItemsRequest *req = (const Recpipe__V1__DeleteItemsRequest *)reqm;
    rp_arena *a = rp_call_arena(call);
    if (req->n_item_ids < 1 || req->n_item_ids > 10000)
        return rp_errorf(err, RP_EINVAL, "item_ids: %zu ids, allowed 1..10000", req->n_item_ids);
    Recpipe__V1__DeleteItemsResponse *r = rp_arena_alloc(a, sizeof *r);
    if (!r) return rp_errorf(err, RP_ENOMEM, "out of memory");
    recpipe__v1__delete_items_response__init(r);
    pthread_mutex_lock(&s->admin_mu);
    ret_state *st = pin(s);
    int rc = RP_OK;
    if (!st) {
        rc = rp_no_bundle(err);
        goto done;
    }
    ret_side *side;
    rc = ret_side_delete_items(st->side, st->bundle->cat, req->item_ids, (uint32_t)req->n_item_ids,
                               &r->deleted, &r->not_found, &side, err);
    if (rc) goto done;
    atomic_fetch_add(&st->bundle->refs, 1);
    rc = swap_in(s, st->bundle, side, err);
    if (rc) goto done;
    *resp = &r->base;
done:
    state_unref(st);
    pthread_mutex_unlock(&s->admin_mu);
    return rc;
}

void ret_service_status_hook(void *user, struct Recpipe__V1__StatusResponse *resp,
                             rp_arena *arena)
{
    ret_service *s = user;
    ret_state *st = pin(s);
    if (st) {
        resp->bundle_version = rp_arena_strdup(arena, st->bundle->version);
        resp->bundle_path = rp_arena_strdup(arena, st->bundle->path);
        resp->item_count = st->bundle->cat->n_items + (st->side ? st->side->n : 0);
        resp->shard = st->bundle->shard;
        resp->shard_count = st->bundle->n_shards;
        resp->index_bytes = st->bundle->index_bytes;
    }
    resp->reloads = atomic_load(&s->reloads);
    state_unref(st);
}

const rp_method *ret_service_methods(ret_service *s, size_t *n)
{
    *n = sizeof s->methods / sizeof s->methods[0];
    return s->methods;
}

/* ---- lifecycle -------------------------------------------------------------------- */

int ret_service_create(const ret_service_opts *opts, ret_service **out, rp_error *err)
{
    *out = NULL;
    if (!opts->bundle_path || !*opts->bundle_path)
        return rp_errorf(err, RP_EINVAL, "--bundle: a bundle directory is required");
    ret_service *s = calloc(1, sizeof *s);
    if (!s) return rp_errorf(err, RP_ENOMEM, "out of memory");
    pthread_mutex_init(&s->pin_mu, NULL);
    pthread_mutex_init(&s->admin_mu, NULL);
    snprintf(s->start_path, sizeof s->start_path, "%s", opts->bundle_path);
    s->shard = opts->shard;
    ret_search_opts def = RET_SEARCH_OPTS_DEFAULT;
    s->search = opts->search.exact_max || opts->search.overfetch > 0 ? opts->search : def;
    if (s->search.overfetch <= 0) s->search.overfetch = def.overfetch;
    s->content_lambda = opts->content_lambda > 0 ? opts->content_lambda : 1.0f;
    s->wide_factor = opts->wide_factor == 0 ? 2.0f : opts->wide_factor;
    s->content_quantile = opts->content_quantile > 0 && opts->content_quantile <= 1 ? opts->content_quantile : 1.0;
    s->methods[0] = (rp_method){"/recpipe.v1.Retrieval/Retrieve", &recpipe__v1__retrieve_request__descriptor,
                                &recpipe__v1__retrieve_response__descriptor, h_retrieve, s};
    s->methods[1] = (rp_method){"/recpipe.v1.Admin/Reload", &recpipe__v1__reload_request__descriptor,
                                &recpipe__v1__reload_response__descriptor, h_reload, s};
    s->methods[2] = (rp_method){"/recpipe.v1.Admin/UpsertItems", &recpipe__v1__upsert_items_request__descriptor,
                                &recpipe__v1__upsert_items_response__descriptor, h_upsert, s};
    s->methods[3] = (rp_method){"/recpipe.v1.Admin/DeleteItems", &recpipe__v1__delete_items_request__descriptor,
                                &recpipe__v1__delete_items_response__descriptor, h_delete, s};
    ret__bundle *rb;
    int rc = bundle_load(s->start_path, s->shard, s->content_lambda, s->content_quantile, s->wide_factor, &rb, err);
    if (rc) goto fail;
    ret_side *side;
    rc = ret_side_new(rb->cat->dim, &side, err);
    if (rc) {
        bundle_unref(rb);
        goto fail;
    }
    rc = swap_in(s, rb, side, err);
    if (rc) goto fail;
    rp_info("retrieval", "bundle %s (version %s) loaded: %u items in shard %u of %u", rb->path, rb->version,
            rb->cat->n_items, rb->shard, rb->n_shards);
    *out = s;
    return RP_OK;
fail:
    ret_service_destroy(s);
    return rc;
}

static void on_hup(void *arg)
{
    ret_service *s = arg;
    rp_error err;
    rp_info("retrieval", "SIGHUP: reloading %s", s->start_path);
    if (ret_service_reload(s, NULL, NULL, NULL, NULL, &err) != RP_OK)
        rp_errlog("retrieval", "SIGHUP reload failed: %s", rp_error_text(&err));
}

int ret_service_watch_sighup(ret_service *s, rp_error *err)
{
    return s->hup ? RP_OK : rp_sighup_start(on_hup, s, &s->hup, err);
}

void ret_service_destroy(ret_service *s)
{
    if (!s) return;
    rp_sighup_stop(s->hup);
    state_unref(s->cur);
    pthread_mutex_destroy(&s->pin_mu);
    pthread_mutex_destroy(&s->admin_mu);
    free(s);
}
