/* The Ranking service (rank/service.h). */
#include "rank/service.h"

#include "idx/bundle.h"
#include "rank/build.h"
#include "rank/model.h"
#include "recpipe/v1/admin.pb-c.h"
#include "recpipe/v1/ranking.pb-c.h"
#include "rp/clock.h"
#include "rp/log.h"
#include "rp/mainq.h"
#include "rp/sighup.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rank_state {
    atomic_int refs;
    rank_model *model;
    uint64_t gen; /* distinct per load: thread workspaces follow it */
    uint32_t n_items;
    char version[64];
    char path[PATH_MAX];
} rank_state;

struct rank_service {
    pthread_mutex_t pin_mu; /* held only to read cur and take a reference */
    rank_state *cur;
    pthread_mutex_t admin_mu; /* serialises reloads */
    char start_path[PATH_MAX];
    atomic_ulong reloads;
    atomic_ulong gen;
    rp_method methods[2];
    rp_sighup *hup; /* SIGHUP watcher, or NULL */
    atomic_bool stopping;
};

static void state_unref(rank_state *st)
{
    if (!st || atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1) return;
    rank_model_free(st->model);
    free(st);
}

static rank_state *pin(rank_service *s)
{
    pthread_mutex_lock(&s->pin_mu);
    rank_state *st = s->cur;
    if (st) atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->pin_mu);
    return st;
}

/* ---- per-thread workspace, rebuilt when the thread first meets a new model ---- */

typedef struct tls_ws {
    rank_ws *ws;
    uint64_t gen;
} tls_ws;

static pthread_key_t ws_key;
static pthread_once_t ws_once = PTHREAD_ONCE_INIT;

static void tls_free(void *p)
{
    tls_ws *t = p;
    if (t) rank_ws_free(t->ws);
    free(t);
}
static void make_key(void) { pthread_key_create(&ws_key, tls_free); }

static rank_ws *thread_ws(const rank_state *st)
{
    pthread_once(&ws_once, make_key);
    tls_ws *t = pthread_getspecific(ws_key);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) return NULL;
        pthread_setspecific(ws_key, t);
    }
    if (!t->ws || t->gen != st->gen) {
        rank_ws_free(t->ws);
        t->ws = NULL;
        if (rank_ws_create(st->model, &t->ws)) return NULL;
        t->gen = st->gen;
    }
    return t->ws;
}

/* ---- loading ---- */

static int state_load(rank_service *s, const char *path, rank_state **out, rp_error *err)
{
    *out = NULL;
    rank_state *st = calloc(1, sizeof *st);
    if (!st) return rp_errorf(err, RP_ENOMEM, "out of memory");
    /* Resolve a symlink once, so that verification and loading read the same bundle even
     * when a publisher flips the link meanwhile. */
    if (!realpath(path, st->path)) {
        free(st);
        return rp_errorf(err, RP_ENOENT, "%s: no bundle there", path);
    }
    idx_bundle *b = NULL;
    int rc = idx_bundle_verify(st->path, err);
    if (!rc) rc = idx_bundle_read_manifest(st->path, &b, err);
    if (!rc) rc = rank_model_from_bundle(b, &st->model, err);
    if (rc) {
        idx_bundle_release(b);
        free(st);
        return rc;
    }
    const idx_manifest *mf = idx_bundle_manifest(b);
    snprintf(st->version, sizeof st->version, "%s", mf->version ? mf->version : "");
    idx_bundle_release(b);
    st->n_items = rank_model_shape(st->model)->n_items;
    st->gen = atomic_fetch_add(&s->gen, 1) + 1;
    atomic_init(&st->refs, 1);
    /* Warm: touch every page of the model by scoring once (the first request of each
     * thread then only builds its workspace). */
    rank_ws *ws;
    if (rank_ws_create(st->model, &ws) == RP_OK) {
        rank_event h = {0, 1, 1.0f, 0};
        rank_cand c = {0, 1, 0.0f};
        float sc;
        rank_score(st->model, ws, &h, 1, 0, &c, 1, &sc, NULL, NULL);
        rank_ws_free(ws);
    }
    *out = st;
    return RP_OK;
}

/* A reload's state_load, run on the main thread (rp/mainq.h: the main heap gives a
 * swapped-out model's memory back). */
typedef struct load_job {
    rank_service *s;
    const char *path;
    rank_state **out;
    rp_error *err;
} load_job;

static int run_load(void *arg)
{
    load_job *j = arg;
    return state_load(j->s, j->path, j->out, j->err);
}

int rank_service_reload(rank_service *s, const char *path, char *prev, char *now,
                        double *seconds, rp_error *err)
{
    if (!path || !*path) path = s->start_path;
    uint64_t t0 = rp_now_ns();
    pthread_mutex_lock(&s->admin_mu);
    rank_state *st;
    load_job job = {s, path, &st, err};
    int rc = rp_main_run(run_load, &job);
    if (rc) {
        pthread_mutex_unlock(&s->admin_mu);
        rp_warn("ranking", "reload of %s refused: %s; the old bundle keeps serving", path,
                rp_error_text(err));
        return rc;
    }
    pthread_mutex_lock(&s->pin_mu);
    rank_state *old = s->cur;
    s->cur = st;
    pthread_mutex_unlock(&s->pin_mu);
    if (prev) snprintf(prev, 64, "%s", old ? old->version : "");
    if (now) snprintf(now, 64, "%s", st->version);
    rp_info("ranking", "bundle %s (version %s) swapped in, replacing %s", st->path, st->version,
            old ? old->version : "none");
    state_unref(old);
    pthread_mutex_unlock(&s->admin_mu);
    atomic_fetch_add(&s->reloads, 1);
    if (seconds) *seconds = (double)(rp_now_ns() - t0) / 1e9;
    return RP_OK;
}

/* ---- handlers ---- */

typedef struct idpos {
    uint64_t id;
    uint32_t pos;
} idpos;

static int idpos_cmp(const void *a, const void *b)
{
    const idpos *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int h_rank(rp_call *call, const ProtobufCMessage *reqm, ProtobufCMessage **resp,
                  rp_error *err)
{
    rank_service *s = rp_call_user(call);
    const Recpipe__V1__RankRequest *req = (const Recpipe__V1__RankRequest *)reqm;
    rp_arena *a = rp_call_arena(call);
    if (req->n_candidates > RANK_MAX_CANDIDATES)
        return rp_errorf(err, RP_EINVAL, "candidates: %zu candidates, at most %d", req->n_candidates,
                         RANK_MAX_CANDIDATES);
    if (req->n_history > RANK_MAX_HISTORY)
        return rp_errorf(err, RP_EINVAL, "history: %zu events, at most %d", req->n_history,
                         RANK_MAX_HISTORY);
    size_t nc = req->n_candidates, nh = req->n_history;
    if (nc > 1) {
        idpos *ids = rp_arena_alloc(a, nc * sizeof *ids);
        if (!ids) return rp_errorf(err, RP_ENOMEM, "out of memory");
        for (size_t i = 0; i < nc; i++) ids[i] = (idpos){req->candidates[i]->item_id, (uint32_t)i};
        qsort(ids, nc, sizeof *ids, idpos_cmp);
        for (size_t i = 1; i < nc; i++)
            if (ids[i].id == ids[i - 1].id)
                return rp_errorf(err, RP_EINVAL,
                                 "candidates[%u]: item_id %llu already appears at candidates[%u]",
                                 ids[i].pos, (unsigned long long)ids[i].id, ids[i - 1].pos);
    }
    /* A NaN or infinite retrieval score is the caller's bug: refuse it, naming the field. */
    for (size_t i = 0; i < nc; i++)
        if (!isfinite(req->candidates[i]->retrieval_score))
            return rp_errorf(err, RP_EINVAL, "candidates[%zu].retrieval_score: not a finite number",
                             i);
    rank_state *st = pin(s);
    if (!st) return rp_no_bundle(err);
    int rc = RP_OK;
    Recpipe__V1__RankResponse *r = rp_arena_alloc(a, sizeof *r);
    if (!r) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto done;
    }
    recpipe__v1__rank_response__init(r);
    r->bundle_version = rp_arena_strdup(a, st->version);
    if (!r->bundle_version) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto done;
    }
    if (!nc) {
        *resp = &r->base;
        goto done;
    }
    rank_event *hist = rp_arena_alloc(a, (nh ? nh : 1) * sizeof *hist);
    rank_cand *cands = rp_arena_alloc(a, nc * sizeof *cands);
    float *scores = rp_arena_alloc(a, nc * sizeof *scores), *weights = NULL;
    int32_t *best = NULL;
    Recpipe__V1__RankScore *out = rp_arena_alloc(a, nc * sizeof *out);
    Recpipe__V1__RankScore **outp = rp_arena_alloc(a, nc * sizeof *outp);
    if (req->explain) {
        best = rp_arena_alloc(a, nc * sizeof *best);
        weights = rp_arena_alloc(a, nc * sizeof *weights);
    }
    rank_ws *ws = thread_ws(st);
    if (!hist || !cands || !scores || !out || !outp || (req->explain && (!best || !weights)) || !ws) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto done;
    }
    /* Only the last max_hist events are read; the rest count for activity only. */
    uint32_t L = rank_model_shape(st->model)->max_hist;
    if (L < RANK_SIM_WINDOW) L = RANK_SIM_WINDOW;
    for (size_t i = 0; i < nh; i++) {
        const Recpipe__V1__Event *e = req->history[i];
        uint32_t item = i + L >= nh ? rank_model_item(st->model, e->item_id) : st->n_items;
        hist[i] = (rank_event){item, (uint8_t)(e->type >= 0 && e->type < 256 ? e->type : 0),
                               e->value != 0 ? e->value : 1.0f, e->timestamp};
    }
    for (size_t i = 0; i < nc; i++) {
        const Recpipe__V1__RankCandidate *c = req->candidates[i];
        cands[i] = (rank_cand){rank_model_item(st->model, c->item_id),
                               (uint8_t)(c->source >= 0 && c->source < 256 ? c->source : 0),
                               c->retrieval_score};
    }
    int64_t now = req->now ? req->now : rp_wall_s();
    rc = rank_score(st->model, ws, hist, (uint32_t)nh, now, cands, (uint32_t)nc, scores, best,
                    weights);
    if (rc) {
        rp_errorf(err, rc, "scoring failed");
        goto done;
    }
    for (size_t i = 0; i < nc; i++) {
        recpipe__v1__rank_score__init(&out[i]);
        out[i].item_id = req->candidates[i]->item_id;
        out[i].score = scores[i];
        if (best && best[i] >= 0) {
            out[i].because_item_id = req->history[best[i]]->item_id;
            out[i].attention_weight = weights[i];
        }
        outp[i] = &out[i];
    }
    r->n_scores = nc;
    r->scores = outp;
    *resp = &r->base;
done:
    state_unref(st);
    return rc;
}

static int h_reload(rp_call *call, const ProtobufCMessage *reqm, ProtobufCMessage **resp,
                    rp_error *err)
{
    rank_service *s = rp_call_user(call);
    const Recpipe__V1__ReloadRequest *req = (const Recpipe__V1__ReloadRequest *)reqm;
    rp_arena *a = rp_call_arena(call);
    Recpipe__V1__ReloadResponse *r = rp_arena_alloc(a, sizeof *r);
    char *prev = rp_arena_alloc(a, 64), *now = rp_arena_alloc(a, 64);
    if (!r || !prev || !now) return rp_errorf(err, RP_ENOMEM, "out of memory");
    recpipe__v1__reload_response__init(r);
    double secs = 0;
    int rc = rank_service_reload(s, req->bundle_path, prev, now, &secs, err);
    if (rc) return rc;
    r->previous_version = prev;
    r->bundle_version = now;
    r->load_seconds = secs;
    *resp = &r->base;
    return RP_OK;
}

void rank_service_status_hook(void *user, struct Recpipe__V1__StatusResponse *resp,
                              rp_arena *arena)
{
    rank_service *s = user;
    rank_state *st = pin(s);
    if (st) {
        resp->bundle_version = rp_arena_strdup(arena, st->version);
        resp->bundle_path = rp_arena_strdup(arena, st->path);
        resp->item_count = st->n_items;
    }
    resp->reloads = atomic_load(&s->reloads);
    state_unref(st);
}

const rp_method *rank_service_methods(rank_service *s, size_t *n)
{
    *n = 2;
    return s->methods;
}

int rank_service_create(const char *bundle_path, rank_service **out, rp_error *err)
{
    *out = NULL;
    rank_service *s = calloc(1, sizeof *s);
    if (!s) return rp_errorf(err, RP_ENOMEM, "out of memory");
    pthread_mutex_init(&s->pin_mu, NULL);
    pthread_mutex_init(&s->admin_mu, NULL);
    atomic_init(&s->reloads, 0);
    atomic_init(&s->gen, 0);
    atomic_init(&s->stopping, false);
    snprintf(s->start_path, sizeof s->start_path, "%s", bundle_path);
    s->methods[0] = (rp_method){"/recpipe.v1.Ranking/Rank", &recpipe__v1__rank_request__descriptor,
                                &recpipe__v1__rank_response__descriptor, h_rank, s};
    s->methods[1] = (rp_method){"/recpipe.v1.Admin/Reload", &recpipe__v1__reload_request__descriptor,
                                &recpipe__v1__reload_response__descriptor, h_reload, s};
    int rc = state_load(s, bundle_path, &s->cur, err);
    if (rc) {
        rank_service_destroy(s);
        return rc;
    }
    rp_info("ranking", "bundle %s (version %s) loaded: ranker with %zu parameters, %u items",
            s->cur->path, s->cur->version, rank_model_nparams(s->cur->model), s->cur->n_items);
    *out = s;
    return RP_OK;
}

static void on_hup(void *arg)
{
    rank_service *s = arg;
    rp_error err;
    rp_info("ranking", "SIGHUP: reloading %s", s->start_path);
    if (rank_service_reload(s, NULL, NULL, NULL, NULL, &err) != RP_OK)
        rp_errlog("ranking", "SIGHUP reload failed: %s", rp_error_text(&err));
}

int rank_service_watch_sighup(rank_service *s, rp_error *err)
{
    return s->hup ? RP_OK : rp_sighup_start(on_hup, s, &s->hup, err);
}

void rank_service_destroy(rank_service *s)
{
    if (!s) return;
    rp_sighup_stop(s->hup);
    state_unref(s->cur);
    pthread_mutex_destroy(&s->pin_mu);
    pthread_mutex_destroy(&s->admin_mu);
    free(s);
}
