/* The Recommender service: Recommend, Feedback, ForgetUser. */
#include "gw/service.h"

#include "catalog.h"
#include "gw/cache.h"
#include "gw/diversify.h"
#include "gw/merge.h"
#include "gw/state.h"
#include "gw/validate.h"
#include "recpipe/v1/admin.pb-c.h"
#include "recpipe/v1/ranking.pb-c.h"
#include "recpipe/v1/recommender.pb-c.h"
#include "recpipe/v1/retrieval.pb-c.h"
#include "rp/clock.h"
#include "rp/log.h"
#include "rp/mainq.h"
#include "rp/sighup.h"
#include "rp/metrics.h"
#include "rp/ops.h"
#include "rp/rpc.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SHARDS 64
#define RETRIEVE_PATH "/recpipe.v1.Retrieval/Retrieve"
#define RANK_PATH "/recpipe.v1.Ranking/Rank"
#define MMR_LAMBDA_DEFAULT 0.8f
#define EXPLAIN_HISTORY 50 /* history items compared for explanations */

/* A catalogue with the references of the requests using it: each request pins the
 * bundle it started with; the last reference frees it (the service holds one while the
 * bundle is current). */
typedef struct gw_pinned {
    atomic_int refs;
    gw__catalog *cat;
} gw_pinned;

struct gw_service {
    rp_server *server;
    rp_client *client;
    gw_state *state;
    gw_cache *cache;
    pthread_mutex_t pin_mu;   /* held only to read cur and take a reference */
    gw_pinned *cur;           /* the bundle new requests use */
    pthread_mutex_t admin_mu; /* serialises reloads */
    char start_path[PATH_MAX];
    atomic_ulong reloads;
    rp_sighup *hup; /* SIGHUP watcher, or NULL */
    atomic_bool stopping;
    char *retrieval_buf;
    const char *shards[MAX_SHARDS];
    uint32_t nshards;
    char *ranking;
    char *admin_token; /* NULL: the process default (rp_ops) */
    uint32_t nranking; /* replicas listed in ranking */
    int64_t default_deadline_ms;
    uint64_t refresh_wait_ns; /* 0: never defer a refresh (gw_service_config) */
    double grace_s;
    atomic_uint_fast64_t feedback_events;
    pthread_mutex_t ver_mu; /* guards the downstream bundle versions last seen */
    char retrieval_version[64];
    char ranking_version[64];
    rp_method methods[4];
};

/* ------------------------------------------------------------------ helpers */

static uint32_t us_since(uint64_t t0)
{
    uint64_t d = (rp_now_ns() - t0) / 1000;
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

static const char *verb_of(uint8_t type)
{
    switch (type) {
    case 2: return "clicked";
    case 3: return "added";
    case 4: return "bought";
    case 5: return "rated";
    default: return "watched";
    }
}

static void remember_version(gw_service *s, char *dst, const char *v)
{
    if (!v || !v[0]) return;
    pthread_mutex_lock(&s->ver_mu);
    snprintf(dst, 64, "%s", v);
    pthread_mutex_unlock(&s->ver_mu);
}

static void read_versions(gw_service *s, char *retr, char *rank)
{
    pthread_mutex_lock(&s->ver_mu);
    memcpy(retr, s->retrieval_version, 64);
    memcpy(rank, s->ranking_version, 64);
    pthread_mutex_unlock(&s->ver_mu);
}

static void pinned_unref(gw_pinned *p)
{
    if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1) return;
    gw__catalog_free(p->cat);
    free(p);
}

static gw_pinned *pin(gw_service *s)
{
    pthread_mutex_lock(&s->pin_mu);
    gw_pinned *p = s->cur;
    if (p) atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->pin_mu);
    return p;
}

/* The cache key's generation: the gateway's own bundle version and the downstream
 * versions last seen, so that a reload anywhere stops old answers from being served
 * (but as stale fallbacks, gw/cache.h). */
static uint64_t generation(gw_service *s, const gw__catalog *cat)
{
    char rv[64], kv[64];
    read_versions(s, rv, kv);
    uint64_t h = gw_hash(GW_HASH_INIT, cat->version, strlen(cat->version) + 1);
    h = gw_hash(h, rv, strnlen(rv, sizeof rv));
    h = gw_hash(h, "|", 1);
    return gw_hash(h, kv, strnlen(kv, sizeof kv));
}

/* The request fields that shape an answer. A caller's own clock counts to the minute;
 * without one, the TTL bounds how old the fresh items of an answer may be (a minute in
 * the key would make every user's answer expire at once, every minute). */
static uint64_t fingerprint(const Recpipe__V1__RecommendRequest *r, uint32_t count)
{
    uint64_t h = GW_HASH_INIT;
    h = gw_hash(h, &count, sizeof count);
    h = gw_hash(h, &r->n_exclude_ids, sizeof r->n_exclude_ids);
    if (r->n_exclude_ids) h = gw_hash(h, r->exclude_ids, r->n_exclude_ids * sizeof *r->exclude_ids);
    uint8_t dbg = r->debug;
    h = gw_hash(h, &dbg, 1);
    int64_t minute = r->now / 60;
    h = gw_hash(h, &minute, sizeof minute);
    if (r->filter) {
        const Recpipe__V1__Filter *f = r->filter;
        for (size_t i = 0; i < f->n_include_categories; i++)
            h = gw_hash(h, f->include_categories[i], strlen(f->include_categories[i]) + 1);
        h = gw_hash(h, "|", 1);
        for (size_t i = 0; i < f->n_exclude_categories; i++)
            h = gw_hash(h, f->exclude_categories[i], strlen(f->exclude_categories[i]) + 1);
        h = gw_hash(h, &f->created_after, sizeof f->created_after);
        h = gw_hash(h, &f->created_before, sizeof f->created_before);
    }
    if (r->diversity) {
        const Recpipe__V1__Diversity *d = r->diversity;
        h = gw_hash(h, &d->mmr_lambda, sizeof d->mmr_lambda);
        uint8_t off = d->disable_mmr;
        h = gw_hash(h, &off, 1);
        h = gw_hash(h, &d->max_per_category, sizeof d->max_per_category);
    }
    return h;
}

/* Category filter resolved to the catalogue's ids. */
typedef struct filter_ids {
    const Recpipe__V1__Filter *f;
    uint32_t *inc, *exc;
    size_t ninc, nexc;
} filter_ids;

static int resolve_filter(const gw__catalog *cat, const Recpipe__V1__Filter *f, rp_arena *a,
                          filter_ids *out, rp_error *err)
{
    memset(out, 0, sizeof *out);
    out->f = f;
    if (!f) return RP_OK;
    out->inc = rp_arena_alloc(a, (f->n_include_categories + 1) * sizeof *out->inc);
    out->exc = rp_arena_alloc(a, (f->n_exclude_categories + 1) * sizeof *out->exc);
    if (!out->inc || !out->exc) return rp_errorf(err, RP_ENOMEM, "out of memory");
    for (size_t i = 0; i < f->n_include_categories; i++)
        if (!gw__catalog_category(cat, f->include_categories[i], &out->inc[out->ninc++]))
            return rp_errorf(err, RP_EINVAL,
                             "filter.include_categories[%zu]: \"%s\" is not a category of "
                             "bundle %s",
                             i, f->include_categories[i], cat->version);
    for (size_t i = 0; i < f->n_exclude_categories; i++)
        if (!gw__catalog_category(cat, f->exclude_categories[i], &out->exc[out->nexc++]))
            return rp_errorf(err, RP_EINVAL,
                             "filter.exclude_categories[%zu]: \"%s\" is not a category of "
                             "bundle %s",
                             i, f->exclude_categories[i], cat->version);
    return RP_OK;
}

static bool filter_active(const filter_ids *fi)
{
    return fi->f && (fi->ninc || fi->nexc || fi->f->created_after || fi->f->created_before);
}

/* True when the item passes the filter. Unknown items pass only an empty filter. */
static bool filter_pass(const gw__catalog *cat, const filter_ids *fi, uint64_t id)
{
    if (!filter_active(fi)) return true;
    uint32_t ix;
    if (!gw__catalog_find(cat, id, &ix)) return false;
    const Recpipe__V1__Filter *f = fi->f;
    if (f->created_after && cat->created[ix] < f->created_after) return false;
    if (f->created_before && cat->created[ix] >= f->created_before) return false;
    bool inc = fi->ninc == 0;
    for (uint32_t k = cat->cat_off[ix]; k < cat->cat_off[ix + 1]; k++) {
        for (size_t j = 0; j < fi->nexc; j++)
            if (cat->cats[k] == fi->exc[j]) return false;
        for (size_t j = 0; j < fi->ninc && !inc; j++)
            if (cat->cats[k] == fi->inc[j]) inc = true;
    }
    return inc;
}

/* ------------------------------------------------------------------ fan-out */

typedef struct shard_call {
    gw_service *svc;
    uint32_t shard;
    int rc;
    Recpipe__V1__RetrieveResponse *resp;
    char msg[160];
} shard_call;

static void on_shard(void *user, int rc, ProtobufCMessage *resp, const rp_status *st)
{
    shard_call *sc = user;
    sc->rc = rc;
    sc->resp = rc == RP_OK ? (Recpipe__V1__RetrieveResponse *)resp : NULL;
    if (rc != RP_OK)
        snprintf(sc->msg, sizeof sc->msg, "%s %s", rp_grpc_status_name(st ? st->code : 2),
                 st ? st->msg : "");
}

/* In-process candidates: popular and fresh items of the gateway's bundle, interleaved,
 * filtered and without dropped ids. Scores are below any retrieval score so that merged
 * lists keep retrieval candidates first. */
static size_t inproc_candidates(const gw__catalog *cat, const filter_ids *fi, const uint64_t *drop,
                                size_t ndrop, uint8_t pop_source, uint8_t fresh_source, size_t k,
                                gw_cand *out)
{
    size_t n = 0, ip = 0, ifr = 0;
    while (n < k && (ip < cat->n_popular || ifr < cat->n_fresh)) {
        bool take_pop = (n % 2 == 0 && ip < cat->n_popular) || ifr >= cat->n_fresh;
        uint32_t ix = take_pop ? cat->popular[ip++] : cat->fresh[ifr++];
        uint64_t id = cat->ids[ix];
        if (gw_contains(drop, ndrop, id) || !filter_pass(cat, fi, id)) continue;
        bool dup = false;
        for (size_t j = 0; j < n && !dup; j++) dup = out[j].item_id == id;
        if (dup) continue;
        out[n] = (gw_cand){.item_id = id, .score = -1.0f - (float)n,
                           .source = take_pop ? pop_source : fresh_source};
        n++;
    }
    return n;
}

/* ------------------------------------------------------------------ Recommend */

typedef struct ranked {
    gw_cand c;
    uint64_t because;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->c.score != y->c.score) return x->c.score > y->c.score ? -1 : 1;
    return x->c.item_id < y->c.item_id ? -1 : x->c.item_id > y->c.item_id;
}

static Recpipe__V1__RecommendResponse *cached_answer(rp_arena *a, const void *buf, size_t len)
{
    ProtobufCAllocator al;
    rp_arena_pb_allocator(a, &al);
    return recpipe__v1__recommend_response__unpack(&al, len, buf);
}

static int recommend_on(const gw__catalog *cat, rp_call *call, const ProtobufCMessage *msg,
                        ProtobufCMessage **out, rp_error *err)
{
    gw_service *s = rp_call_user(call);
    const Recpipe__V1__RecommendRequest *req = (const Recpipe__V1__RecommendRequest *)msg;
    rp_arena *a = rp_call_arena(call);
    uint64_t t0 = rp_now_ns();
    int rc;
    if ((rc = gw_validate_recommend(req, err))) return rc;

    uint64_t deadline = rp_call_deadline_ns(call);
    if (deadline == UINT64_MAX) deadline = t0 + (uint64_t)s->default_deadline_ms * 1000000ull;
    if (deadline <= t0 + 1000000ull)
        return rp_errorf(err, RP_ETIMEDOUT, "deadline exceeded before the call started");
    uint64_t budget = deadline - t0;
    uint32_t count = req->count ? req->count : GW_COUNT_DEFAULT;
    int64_t now = req->now ? req->now : rp_wall_s();

    filter_ids fi;
    if ((rc = resolve_filter(cat, req->filter, a, &fi, err))) return rc;

    Recpipe__V1__StageTimings *tm = rp_arena_alloc(a, sizeof *tm);
    if (!tm) return rp_errorf(err, RP_ENOMEM, "out of memory");
    recpipe__v1__stage_timings__init(tm);

    /* 1. The user's history. */
    uint64_t ts = rp_now_ns();
    uint32_t hl = gw_state_history_len(s->state);
    gw_event *hist = rp_arena_alloc(a, (size_t)hl * sizeof *hist);
    size_t nhist = 0;
    uint64_t version = 0;
    if (!hist) return rp_errorf(err, RP_ENOMEM, "out of memory");
    if ((rc = gw_state_history(s->state, req->user_id, hist, hl, &nhist, &version, err)))
        return rc;
    tm->state_us = us_since(ts);

    /* 2. The cache. */
    ts = rp_now_ns();
    gw_cache_key key = {.user_id = req->user_id,
                        .fingerprint = fingerprint(req, count),
                        .state_version = version,
                        .generation = generation(s, cat)};
    void *cval;
    size_t clen;
    /* A call that waited for a thread while others still wait finds the gateway behind:
     * the recomputations that can wait (an older answer exists) wait for a caller that
     * finds it keeping up. (A lone caller's wait is a scheduling hiccup, not a backlog:
     * it gets the current answer.) */
    unsigned cflags = s->refresh_wait_ns && rp_call_queued_ns(call) > s->refresh_wait_ns &&
                              rp_call_waiting(call) > 0
                          ? GW_CACHE_BEHIND : 0;
    int crc = gw_cache_lookup(s->cache, &key, t0, deadline - budget / 2, cflags, a, &cval,
                              &clen);
    tm->cache_us = us_since(ts);
    if (crc == GW_CACHE_HIT || crc == GW_CACHE_STALE) {
        Recpipe__V1__RecommendResponse *r = cached_answer(a, cval, clen);
        if (r && crc == GW_CACHE_STALE) {
            /* Flagged: the answer of an older bundle, or past its TTL. */
            Recpipe__V1__Degradation *d = rp_arena_alloc(a, (r->n_degraded + 1) * sizeof *d);
            if (d) {
                if (r->n_degraded) memcpy(d, r->degraded, r->n_degraded * sizeof *d);
                d[r->n_degraded] = RECPIPE__V1__DEGRADATION__DEGRADATION_STALE;
                r->degraded = d;
                r->n_degraded++;
            } else {
                r = NULL;
            }
        }
        if (r) {
            r->cache_hit = true;
            r->request_id = (char *)rp_call_request_id(call);
            tm->total_us = us_since(t0);
            r->timings = tm;
            rp_metrics_recommend(r);
            *out = &r->base;
            return RP_OK;
        }
        crc = RP_ETIMEDOUT; /* unreadable entry: compute without caching */
    }
    bool lead = crc == GW_CACHE_LEAD;

    /* Seen items (the whole history) and the caller's exclusions are dropped. */
    size_t ndrop = nhist + req->n_exclude_ids;
    uint64_t *drop = rp_arena_alloc(a, (ndrop + 1) * sizeof *drop);
    if (!drop) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < nhist; i++) drop[i] = hist[i].item_id;
    if (req->n_exclude_ids) memcpy(drop + nhist, req->exclude_ids, req->n_exclude_ids * sizeof *drop);
    ndrop = gw_sort_unique(drop, ndrop);

    Recpipe__V1__Event *evs = rp_arena_alloc(a, (nhist + 1) * sizeof *evs);
    Recpipe__V1__Event **pevs = rp_arena_alloc(a, (nhist + 1) * sizeof *pevs);
    if (!evs || !pevs) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < nhist; i++) {
        recpipe__v1__event__init(&evs[i]);
        evs[i].item_id = hist[i].item_id;
        evs[i].type = (Recpipe__V1__EventType)hist[i].type;
        evs[i].value = hist[i].value;
        evs[i].timestamp = hist[i].ts;
        pevs[i] = &evs[i];
    }
    bool cold = nhist == 0;

    /* 3. Fan out to every shard, each under the retrieval share of the deadline. */
    ts = rp_now_ns();
    /* Retrieval already drops seen and excluded items, so each shard need return only
     * what ranking will look at: max(100, 5 x count). */
    uint32_t k = count * 5 < 100 ? 100 : count * 5;
    Recpipe__V1__RetrieveRequest rreq = RECPIPE__V1__RETRIEVE_REQUEST__INIT;
    rreq.n_history = nhist;
    rreq.history = pevs;
    rreq.k = k;
    rreq.n_exclude_ids = ndrop > 10000 ? 10000 : ndrop;
    rreq.exclude_ids = drop;
    rreq.filter = req->filter;
    rreq.now = now;
    shard_call sc[MAX_SHARDS];
    uint32_t shards_ok = 0;
    const char *retr_version = "";
    if (s->nshards) {
        rp_async *as = NULL;
        rp_error aerr;
        uint64_t retr_deadline = t0 + budget / 2;
        int64_t tmo = retr_deadline > rp_now_ns() ? (int64_t)((retr_deadline - rp_now_ns()) / 1000000) : 0;
        if (tmo < 1) tmo = 1;
        rp_call_opts copts = {.timeout_ms = tmo};
        rp_md md = {"x-request-id", rp_call_request_id(call)};
        copts.md = &md;
        copts.nmd = 1;
        for (uint32_t i = 0; i < s->nshards; i++)
            sc[i] = (shard_call){.svc = s, .shard = i, .rc = RP_ECANCELED};
        if (rp_async_create(s->client, &as, &aerr) == RP_OK) {
            for (uint32_t i = 0; i < s->nshards; i++)
                if (rp_async_start(as, s->shards[i], RETRIEVE_PATH, &rreq.base,
                                   &recpipe__v1__retrieve_response__descriptor, a, &copts,
                                   on_shard, &sc[i], &aerr) != RP_OK) {
                    sc[i].rc = aerr.code;
                    snprintf(sc[i].msg, sizeof sc[i].msg, "%s", aerr.msg);
                }
            rp_async_wait(as, tmo + 5);
            rp_async_destroy(as);
        }
        for (uint32_t i = 0; i < s->nshards; i++) {
            if (sc[i].rc == RP_OK && sc[i].resp) {
                shards_ok++;
                retr_version = sc[i].resp->bundle_version;
            } else {
                rp_warn("gateway", "retrieval shard %u (%s) gave nothing: %s", i, s->shards[i],
                        sc[i].msg[0] ? sc[i].msg : rp_strerror(sc[i].rc));
            }
        }
        remember_version(s, s->retrieval_version, retr_version);
    }

    /* 4. In-process sources: the cold-start mix, or popular and fresh when no shard
     * answered. */
    const gw_cand *lists[MAX_SHARDS + 1];
    size_t lens[MAX_SHARDS + 1], nlists = 0;
    for (uint32_t i = 0; i < s->nshards; i++) {
        if (sc[i].rc != RP_OK || !sc[i].resp) continue;
        Recpipe__V1__RetrieveResponse *r = sc[i].resp;
        gw_cand *l = rp_arena_alloc(a, (r->n_candidates + 1) * sizeof *l);
        if (!l) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory");
            goto fail;
        }
        size_t m = 0;
        for (size_t j = 0; j < r->n_candidates; j++) {
            const Recpipe__V1__Candidate *c = r->candidates[j];
            if (!filter_pass(cat, &fi, c->item_id)) continue;
            l[m++] = (gw_cand){c->item_id, c->score, (uint8_t)c->source, i};
        }
        lists[nlists] = l;
        lens[nlists++] = m;
    }
    gw_outcome oc = {.shards = s->nshards ? s->nshards : 1, .shards_ok = shards_ok,
                     .cold_start = cold};
    if (shards_ok == 0 || cold) {
        gw_cand *l = rp_arena_alloc(a, (size_t)k * sizeof *l);
        if (!l) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory");
            goto fail;
        }
        uint8_t ps = shards_ok == 0 ? RECPIPE__V1__SOURCE__SOURCE_POPULAR : RECPIPE__V1__SOURCE__SOURCE_COLD_START;
        uint8_t fs = shards_ok == 0 ? RECPIPE__V1__SOURCE__SOURCE_FRESH : RECPIPE__V1__SOURCE__SOURCE_COLD_START;
        lists[nlists] = l;
        lens[nlists++] = inproc_candidates(cat, &fi, drop, ndrop, ps, fs, k, l);
    }
    gw_cand *merged;
    size_t nmerged;
    if ((rc = gw_merge(lists, lens, nlists, drop, ndrop, a, &merged, &nmerged))) {
        rp_errorf(err, rc, "out of memory");
        goto fail;
    }
    tm->retrieval_us = us_since(ts);

    /* 5. One Rank call over the best candidates. */
    ts = rp_now_ns();
    size_t nrank = nmerged;
    size_t rank_cap = (size_t)count * 5 < 100 ? 100 : (size_t)count * 5;
    if (rank_cap > 1000) rank_cap = 1000;
    if (nrank > rank_cap) nrank = rank_cap;
    ranked *rk = rp_arena_alloc(a, (nrank + 1) * sizeof *rk);
    if (!rk) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < nrank; i++) rk[i] = (ranked){merged[i], 0};
    /* Without a ranking service configured, retrieval order is the design, not a
     * degradation. */
    oc.rank_wanted = nrank > 0 && s->ranking;
    const char *rank_version = "";
    if (nrank > 0 && s->ranking) {
        Recpipe__V1__RankRequest kreq = RECPIPE__V1__RANK_REQUEST__INIT;
        Recpipe__V1__RankCandidate *kc = rp_arena_alloc(a, nrank * sizeof *kc);
        Recpipe__V1__RankCandidate **pkc = rp_arena_alloc(a, nrank * sizeof *pkc);
        if (!kc || !pkc) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < nrank; i++) {
            recpipe__v1__rank_candidate__init(&kc[i]);
            kc[i].item_id = rk[i].c.item_id;
            kc[i].retrieval_score = rk[i].c.score;
            kc[i].source = (Recpipe__V1__Source)rk[i].c.source;
            pkc[i] = &kc[i];
        }
        kreq.n_history = nhist;
        kreq.history = pevs;
        kreq.n_candidates = nrank;
        kreq.candidates = pkc;
        kreq.explain = true;
        kreq.now = now;
        uint64_t rank_deadline = deadline - budget / 10;
        uint64_t nowns = rp_now_ns();
        int64_t tmo = rank_deadline > nowns ? (int64_t)((rank_deadline - nowns) / 1000000) : 0;
        if (tmo >= 1) {
            rp_md md = {"x-request-id", rp_call_request_id(call)};
            rp_call_opts copts = {.timeout_ms = tmo, .md = &md, .nmd = 1};
            ProtobufCMessage *kresp = NULL;
            rp_status st;
            /* A replica that refuses the call (down, no bundle) costs little: try the next
             * one in the round robin while the ranking share of the deadline lasts. */
            int krc = RP_EUNAVAIL;
            for (uint32_t attempt = 0; attempt < s->nranking; attempt++) {
                krc = rp_client_unary(s->client, s->ranking, RANK_PATH, &kreq.base,
                                      &recpipe__v1__rank_response__descriptor, a, &kresp, &copts,
                                      &st);
                if (krc != RP_EUNAVAIL) break;
                nowns = rp_now_ns();
                copts.timeout_ms = rank_deadline > nowns ? (int64_t)((rank_deadline - nowns) / 1000000) : 0;
                if (copts.timeout_ms < 1) break;
            }
            Recpipe__V1__RankResponse *kr = (Recpipe__V1__RankResponse *)kresp;
            if (krc == RP_OK && kr && kr->n_scores == nrank) {
                for (size_t i = 0; i < nrank; i++) {
                    if (kr->scores[i]->item_id != rk[i].c.item_id) {
                        krc = RP_EINTERNAL;
                        break;
                    }
                }
            } else if (krc == RP_OK) {
                krc = RP_EINTERNAL;
            }
            if (krc == RP_OK) {
                for (size_t i = 0; i < nrank; i++) {
                    rk[i].c.score = kr->scores[i]->score;
                    rk[i].because = kr->scores[i]->because_item_id;
                }
                qsort(rk, nrank, sizeof *rk, cmp_ranked);
                oc.rank_ok = true;
                rank_version = kr->bundle_version;
                remember_version(s, s->ranking_version, rank_version);
            } else {
                rp_warn("gateway", "ranking (%s) failed, serving retrieval order: %s %s",
                        s->ranking, rp_grpc_status_name(st.code), st.msg);
            }
        }
    }
    tm->rank_us = us_since(ts);

    /* 6. Diversify the head of the ranked list. */
    ts = rp_now_ns();
    size_t ndiv = nrank;
    size_t div_cap = (size_t)count * 3 < 50 ? 50 : (size_t)count * 3;
    if (ndiv > div_cap) ndiv = div_cap;
    uint32_t dim = cat->dim;
    gw_div_item *di = rp_arena_calloc(a, ndiv + 1, sizeof *di);
    uint32_t *cix = rp_arena_alloc(a, (ndiv + 1) * sizeof *cix);
    bool *known = rp_arena_calloc(a, ndiv + 1, sizeof *known);
    float *emb = rp_arena_alloc(a, (ndiv + 1) * (size_t)dim * sizeof *emb);
    size_t *pick = rp_arena_alloc(a, ((size_t)count + 1) * sizeof *pick);
    if (!di || !cix || !known || !emb || !pick) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto fail;
    }
    /* Embeddings of the known candidates, in one read. */
    uint32_t *kidx = rp_arena_alloc(a, (ndiv + 1) * sizeof *kidx);
    size_t nknown = 0;
    if (!kidx) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < ndiv; i++)
        if ((known[i] = gw__catalog_find(cat, rk[i].c.item_id, &cix[i]))) kidx[nknown++] = cix[i];
    rp_error eerr;
    bool have_emb = false;
    if (dim > 0) {
        int erc = gw__catalog_embeddings(cat, nknown, kidx, emb, &eerr);
        if (erc == RP_ENOMEM) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory");
            goto fail;
        }
        /* An unreadable embedding costs the diversification, not the answer. */
        if (erc != RP_OK) rp_warn("gateway", "diversifying without embeddings: %s", eerr.msg);
        have_emb = erc == RP_OK;
    }
    for (size_t i = 0, j = 0; i < ndiv; i++) {
        di[i].score = rk[i].c.score;
        if (!known[i]) continue;
        di[i].emb = have_emb ? emb + j * dim : NULL;
        di[i].cats = cat->cats + cat->cat_off[cix[i]];
        di[i].ncats = cat->cat_off[cix[i] + 1] - cat->cat_off[cix[i]];
        j++;
    }
    gw_div_opts dopt = {.mmr = true, .lambda = MMR_LAMBDA_DEFAULT};
    if (req->diversity) {
        if (req->diversity->mmr_lambda > 0) dopt.lambda = req->diversity->mmr_lambda;
        dopt.mmr = !req->diversity->disable_mmr;
        dopt.max_per_category = req->diversity->max_per_category;
    }
    size_t npick = 0;
    if ((rc = gw_diversify(di, ndiv, dim, &dopt, count, a, pick, &npick))) {
        rp_errorf(err, rc, "out of memory");
        goto fail;
    }
    tm->diversify_us = us_since(ts);

    /* 7. The answer. Explanations: the history item ranking named, else the history item
     * nearest in embedding space. */
    Recpipe__V1__RecommendResponse *resp = rp_arena_alloc(a, sizeof *resp);
    Recpipe__V1__RecommendedItem **items = rp_arena_alloc(a, (npick + 1) * sizeof *items);
    if (!resp || !items) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto fail;
    }
    recpipe__v1__recommend_response__init(resp);
    /* History items for nearest-neighbour explanations (newest first, known, not
     * dismissed), read lazily. */
    uint32_t hix[EXPLAIN_HISTORY];
    uint8_t htype[EXPLAIN_HISTORY];
    size_t nh = 0;
    float *hemb = NULL;
    for (size_t i = nhist; i-- > 0 && nh < EXPLAIN_HISTORY;) {
        uint32_t ix;
        if (hist[i].type == GW_EVENT_TYPE_DISMISS || !gw__catalog_find(cat, hist[i].item_id, &ix))
            continue;
        bool dup = false;
        for (size_t j = 0; j < nh && !dup; j++) dup = hix[j] == ix;
        if (dup) continue;
        htype[nh] = hist[i].type;
        hix[nh++] = ix;
    }
    if (nh && have_emb) {
        hemb = rp_arena_alloc(a, nh * (size_t)dim * sizeof *hemb);
        int erc = hemb ? gw__catalog_embeddings(cat, nh, hix, hemb, &eerr) : RP_ENOMEM;
        if (erc == RP_ENOMEM) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory");
            goto fail;
        }
        if (erc != RP_OK) hemb = NULL; /* explanations fall back to the sources' wording */
    }
    for (size_t p = 0; p < npick; p++) {
        size_t i = pick[p];
        Recpipe__V1__RecommendedItem *it = rp_arena_alloc(a, sizeof *it);
        if (!it) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory");
            goto fail;
        }
        recpipe__v1__recommended_item__init(it);
        it->item_id = rk[i].c.item_id;
        it->score = rk[i].c.score;
        it->source = (Recpipe__V1__Source)rk[i].c.source;
        if (known[i]) {
            uint32_t ix = cix[i];
            /* Copied: the response is packed after the bundle is unpinned. */
            it->title = rp_arena_strdup(a, cat->titles[ix]);
            it->n_categories = cat->cat_off[ix + 1] - cat->cat_off[ix];
            it->categories = rp_arena_alloc(a, (it->n_categories + 1) * sizeof(char *));
            if (!it->categories || !it->title) {
                rc = rp_errorf(err, RP_ENOMEM, "out of memory");
                goto fail;
            }
            for (size_t c = 0; c < it->n_categories; c++)
                if (!(it->categories[c] = rp_arena_strdup(a, cat->names[cat->cats[cat->cat_off[ix] + c]]))) {
                    rc = rp_errorf(err, RP_ENOMEM, "out of memory");
                    goto fail;
                }
        }
        uint64_t because = rk[i].because;
        uint8_t btype = 1;
        if (because) {
            for (size_t j = 0; j < nhist; j++)
                if (hist[j].item_id == because) btype = hist[j].type;
        } else if (hemb && known[i] && di[i].emb) {
            /* The candidate's norm is the same for every history item: dot / |h| ranks
             * history items by cosine. */
            float best = -INFINITY;
            size_t bj = 0;
            for (size_t j = 0; j < nh; j++) {
                const float *h = hemb + j * dim;
                double dot = 0, nn = 0;
                for (uint32_t d = 0; d < dim; d++) {
                    dot += (double)h[d] * di[i].emb[d];
                    nn += (double)h[d] * h[d];
                }
                float cs = nn > 0 ? (float)(dot / sqrt(nn)) : -INFINITY;
                if (cs > best) {
                    best = cs;
                    bj = j;
                }
            }
            if (best > -INFINITY) {
                because = cat->ids[hix[bj]];
                btype = htype[bj];
            }
        }
        uint32_t bix;
        if (because && gw__catalog_find(cat, because, &bix)) {
            it->because_item_id = because;
            it->explanation = rp_arena_sprintf(a, "because you %s %s", verb_of(btype),
                                               cat->titles[bix][0] ? cat->titles[bix] : "an item");
            if (!it->explanation) {
                rc = rp_errorf(err, RP_ENOMEM, "out of memory");
                goto fail;
            }
        } else if (it->source == RECPIPE__V1__SOURCE__SOURCE_POPULAR ||
                   it->source == RECPIPE__V1__SOURCE__SOURCE_COLD_START) {
            it->explanation = "popular right now";
        } else if (it->source == RECPIPE__V1__SOURCE__SOURCE_FRESH) {
            it->explanation = "new in the catalogue";
        }
        items[p] = it;
    }
    resp->n_items = npick;
    resp->items = items;
    char rv[64], kv[64];
    read_versions(s, rv, kv);
    resp->retrieval_bundle_version = rp_arena_strdup(a, retr_version[0] ? retr_version : rv);
    resp->ranking_bundle_version = rp_arena_strdup(a, rank_version[0] ? rank_version : "");
    resp->gateway_bundle_version = rp_arena_strdup(a, cat->version);
    if (!resp->retrieval_bundle_version || !resp->ranking_bundle_version ||
        !resp->gateway_bundle_version) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto fail;
    }
    int flags[4];
    size_t nflags = gw_degradations(&oc, flags);
    resp->degraded = rp_arena_alloc(a, (nflags + 1) * sizeof *resp->degraded);
    if (!resp->degraded) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < nflags; i++) resp->degraded[i] = (Recpipe__V1__Degradation)flags[i];
    resp->n_degraded = nflags;
    if (req->debug) resp->candidates_considered = (uint32_t)nmerged;

    /* Cache what the full pipeline produced (cold start is the full pipeline for a new
     * user); a degraded answer is not worth keeping once the cause is gone. */
    bool cacheable = lead && (nflags == 0 || (nflags == 1 && flags[0] == GW_DEGRADED_COLD_START));
    if (cacheable) {
        size_t plen = recpipe__v1__recommend_response__get_packed_size(resp);
        uint8_t *pb = rp_arena_alloc(a, plen + 1);
        if (pb) {
            recpipe__v1__recommend_response__pack(resp, pb);
            gw_cache_fill(s->cache, &key, t0, pb, plen);
        } else {
            gw_cache_abandon(s->cache, &key);
        }
    } else if (lead) {
        gw_cache_abandon(s->cache, &key);
    }
    resp->request_id = (char *)rp_call_request_id(call);
    tm->total_us = us_since(t0);
    resp->timings = tm;
    rp_metrics_recommend(resp);
    char fields[160], uid[17];
    snprintf(fields, sizeof fields, "\"user\":\"%s\",\"items\":%zu,\"degraded\":%zu,\"shards_ok\":%u",
             rp_log_user_id(req->user_id, uid), npick, nflags, shards_ok);
    rp_logx(RP_LOG_DEBUG, "gateway", fields, "recommend");
    *out = &resp->base;
    return RP_OK;

fail:
    if (lead) gw_cache_abandon(s->cache, &key);
    return rc;
}

/* Every Recommend runs on the bundle current when it started, to its end. */
static int recommend(rp_call *call, const ProtobufCMessage *msg, ProtobufCMessage **out,
                     rp_error *err)
{
    gw_service *s = rp_call_user(call);
    gw_pinned *p = pin(s);
    if (!p) return rp_no_bundle(err);
    int rc = recommend_on(p->cat, call, msg, out, err);
    pinned_unref(p);
    return rc;
}

/* ------------------------------------------------------------------ Feedback, ForgetUser */

static int feedback(rp_call *call, const ProtobufCMessage *msg, ProtobufCMessage **out,
                    rp_error *err)
{
    gw_service *s = rp_call_user(call);
    const Recpipe__V1__FeedbackRequest *req = (const Recpipe__V1__FeedbackRequest *)msg;
    rp_arena *a = rp_call_arena(call);
    int64_t now = rp_wall_s();
    int rc;
    if ((rc = gw_validate_feedback(req, now, err))) return rc;
    gw_user_event *ev = rp_arena_alloc(a, req->n_events * sizeof *ev);
    if (!ev) return rp_errorf(err, RP_ENOMEM, "out of memory");
    uint32_t unknown = 0;
    gw_pinned *p = pin(s);
    for (size_t i = 0; i < req->n_events; i++) {
        const Recpipe__V1__FeedbackEvent *e = req->events[i];
        ev[i] = (gw_user_event){.user_id = e->user_id,
                                .ev = {.item_id = e->item_id,
                                       .ts = e->timestamp ? e->timestamp : now,
                                       .value = e->value,
                                       .type = (uint8_t)e->type}};
        uint32_t ix;
        if (!p || !gw__catalog_find(p->cat, e->item_id, &ix)) unknown++;
    }
    pinned_unref(p);
    /* The answer exists before the events are stored: an error after the commit would
     * tell the caller to retry a batch that is already durable. */
    Recpipe__V1__FeedbackResponse *r = rp_arena_alloc(a, sizeof *r);
    if (!r) return rp_errorf(err, RP_ENOMEM, "out of memory");
    if ((rc = gw_state_append(s->state, ev, req->n_events, err))) return rc;
    atomic_fetch_add(&s->feedback_events, req->n_events);
    recpipe__v1__feedback_response__init(r);
    r->stored = (uint32_t)req->n_events;
    r->unknown_items = unknown;
    *out = &r->base;
    return RP_OK;
}

static int forget_user(rp_call *call, const ProtobufCMessage *msg, ProtobufCMessage **out,
                       rp_error *err)
{
    gw_service *s = rp_call_user(call);
    const Recpipe__V1__ForgetUserRequest *req = (const Recpipe__V1__ForgetUserRequest *)msg;
    int rc;
    /* The admin bearer token, when configured, was checked by the RPC layer. */
    if ((rc = gw_validate_forget(req, err))) return rc;
    bool existed;
    uint32_t deleted;
    /* Allocated first: once the user is forgotten, the answer must not fail. */
    Recpipe__V1__ForgetUserResponse *r = rp_arena_alloc(rp_call_arena(call), sizeof *r);
    if (!r) return rp_errorf(err, RP_ENOMEM, "out of memory");
    if ((rc = gw_state_forget(s->state, req->user_id, &existed, &deleted, err))) return rc;
    gw_cache_drop_user(s->cache, req->user_id);
    recpipe__v1__forget_user_response__init(r);
    r->existed = existed;
    r->events_deleted = deleted;
    char uid[17];
    rp_info("gateway", "forgot user %s (%u events)", rp_log_user_id(req->user_id, uid), deleted);
    *out = &r->base;
    return RP_OK;
}

/* ------------------------------------------------------------------ Reload */

/* Opens the bundle (checksums verified), builds its catalogue and reads the embeddings
 * of the items the in-process sources serve, so that the first requests after the swap
 * do not page them in. */
static int open_pinned(const char *path, gw_pinned **out, rp_error *err)
{
    *out = NULL;
    gw_pinned *p = calloc(1, sizeof *p);
    if (!p) return rp_errorf(err, RP_ENOMEM, "out of memory");
    atomic_init(&p->refs, 1);
    int rc = gw__catalog_load(path, &p->cat, err);
    if (rc) {
        rp_error_prefix(err, "bundle %s", path);
        free(p);
        return rc;
    }
    gw__catalog *c = p->cat;
    if (c->dim > 0 && c->n_popular > 0) {
        float *emb = malloc(c->n_popular * (size_t)c->dim * sizeof *emb);
        if (!emb) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory warming bundle %s", path);
            goto fail;
        }
        rc = gw__catalog_embeddings(c, c->n_popular, c->popular, emb, err);
        if (!rc && c->n_fresh) {
            size_t nf = c->n_fresh < c->n_popular ? c->n_fresh : c->n_popular;
            rc = gw__catalog_embeddings(c, nf, c->fresh, emb, err);
        }
        free(emb);
        if (rc) {
            rp_error_prefix(err, "bundle %s: embeddings", path);
            goto fail;
        }
    }
    *out = p;
    return RP_OK;
fail:
    pinned_unref(p);
    return rc;
}

/* A reload's open_pinned, run on the main thread (rp/mainq.h: the main heap gives a
 * swapped-out bundle's memory back). */
typedef struct load_job {
    const char *path;
    gw_pinned **out;
    rp_error *err;
} load_job;

static int run_load(void *arg)
{
    load_job *j = arg;
    return open_pinned(j->path, j->out, j->err);
}

/* Loads path (NULL or "" = the start path) and swaps it in; on error the current
 * bundle keeps serving. prev and now (64 bytes each) may be NULL. */
static int reload(gw_service *s, const char *path, char *prev, char *now, double *seconds,
                  rp_error *err)
{
    if (!path || !*path) path = s->start_path;
    uint64_t t0 = rp_now_ns();
    pthread_mutex_lock(&s->admin_mu);
    gw_pinned *np;
    load_job job = {path, &np, err};
    int rc = rp_main_run(run_load, &job);
    if (rc) {
        pthread_mutex_unlock(&s->admin_mu);
        rp_warn("gateway", "reload of %s refused: %s; the old bundle keeps serving", path,
                rp_error_text(err));
        return rc;
    }
    char ver[64];
    snprintf(ver, sizeof ver, "%s", np->cat->version);
    if (now) snprintf(now, 64, "%s", ver);
    /* Counted before the swap, so that a Status showing the new version also counts it. */
    atomic_fetch_add(&s->reloads, 1);
    pthread_mutex_lock(&s->pin_mu);
    gw_pinned *old = s->cur;
    s->cur = np;
    pthread_mutex_unlock(&s->pin_mu);
    if (prev) snprintf(prev, 64, "%s", old ? old->cat->version : "");
    pinned_unref(old);
    pthread_mutex_unlock(&s->admin_mu);
    double secs = (double)(rp_now_ns() - t0) / 1e9;
    if (seconds) *seconds = secs;
    rp_info("gateway", "bundle %s (version %s) swapped in after %.3f s", path, ver, secs);
    return RP_OK;
}

static int h_reload(rp_call *call, const ProtobufCMessage *msg, ProtobufCMessage **out,
                    rp_error *err)
{
    gw_service *s = rp_call_user(call);
    const Recpipe__V1__ReloadRequest *req = (const Recpipe__V1__ReloadRequest *)msg;
    rp_arena *a = rp_call_arena(call);
    Recpipe__V1__ReloadResponse *r = rp_arena_alloc(a, sizeof *r);
    char *prev = rp_arena_alloc(a, 64), *now = rp_arena_alloc(a, 64);
    if (!r || !prev || !now) return rp_errorf(err, RP_ENOMEM, "out of memory");
    recpipe__v1__reload_response__init(r);
    double secs = 0;
    int rc = reload(s, req->bundle_path, prev, now, &secs, err);
    if (rc) return rc;
    r->previous_version = prev;
    r->bundle_version = now;
    r->load_seconds = secs;
    *out = &r->base;
    return RP_OK;
}

static void on_hup(void *arg)
{
    gw_service *s = arg;
    rp_error err;
    rp_info("gateway", "SIGHUP: reloading %s", s->start_path);
    if (reload(s, NULL, NULL, NULL, NULL, &err) != RP_OK)
        rp_errlog("gateway", "SIGHUP reload failed: %s", rp_error_text(&err));
}

static int watch_sighup(gw_service *s, rp_error *err)
{
    return s->hup ? RP_OK : rp_sighup_start(on_hup, s, &s->hup, err);
}

static void status_hook(void *user, Recpipe__V1__StatusResponse *r, rp_arena *arena)
{
    gw_service *s = user;
    gw_cache_stats cs;
    gw_cache_get_stats(s->cache, &cs);
    gw_pinned *p = pin(s);
    if (p) {
        r->bundle_version = rp_arena_strdup(arena, p->cat->version);
        r->bundle_path = rp_arena_strdup(arena, idx_bundle_path(p->cat->bundle));
        r->item_count = p->cat->n;
    }
    pinned_unref(p);
    r->reloads = atomic_load(&s->reloads);
    r->cache_hits = cs.hits;
    r->cache_misses = cs.misses;
    r->cache_refreshes_deferred = cs.deferred;
    r->cache_entries = cs.entries;
    r->cache_bytes = cs.bytes;
    rp_metrics_cache(cs.evictions, cs.deferred, cs.entries, cs.bytes);
    r->feedback_events = atomic_load(&s->feedback_events);
    r->shard_count = s->nshards;
    uint64_t users, events;
    rp_error err;
    if (gw_state_stats(s->state, &users, &events, &err) == RP_OK) {
        r->state_users = users;
        r->state_events = events;
        rp_metrics_state(users, events);
    } else {
        rp_warn("gateway", "Status: no user state figures: %s", rp_error_text(&err));
    }
}

/* ------------------------------------------------------------------ lifecycle */

static const rp_method *methods(gw_service *s, size_t *n)
{
    rp_method *m = s->methods;
    m[0] = (rp_method){"/recpipe.v1.Recommender/Recommend", &recpipe__v1__recommend_request__descriptor,
                       &recpipe__v1__recommend_response__descriptor, recommend, s};
    m[1] = (rp_method){"/recpipe.v1.Recommender/Feedback", &recpipe__v1__feedback_request__descriptor,
                       &recpipe__v1__feedback_response__descriptor, feedback, s};
    m[2] = (rp_method){"/recpipe.v1.Recommender/ForgetUser",
                       &recpipe__v1__forget_user_request__descriptor,
                       &recpipe__v1__forget_user_response__descriptor, forget_user, s};
    m[3] = (rp_method){"/recpipe.v1.Admin/Reload", &recpipe__v1__reload_request__descriptor,
                       &recpipe__v1__reload_response__descriptor, h_reload, s};
    *n = 4;
    return m;
}

int gw_service_start(const gw_service_config *cfg, gw_service **out, rp_error *err)
{
    int rc;
    *out = NULL;
    gw_service *s = calloc(1, sizeof *s);
    if (!s) return rp_errorf(err, RP_ENOMEM, "out of memory");
    pthread_mutex_init(&s->ver_mu, NULL);
    pthread_mutex_init(&s->pin_mu, NULL);
    pthread_mutex_init(&s->admin_mu, NULL);
    s->default_deadline_ms = cfg->default_deadline_ms > 0 ? cfg->default_deadline_ms : 100;
    s->grace_s = cfg->grace_s > 0 ? cfg->grace_s : 5.0;
    if (cfg->retrieval && cfg->retrieval[0]) {
        if (!(s->retrieval_buf = strdup(cfg->retrieval))) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory");
            goto err;
        }
        char *save = NULL;
        for (char *tok = strtok_r(s->retrieval_buf, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            if (s->nshards == MAX_SHARDS) {
                rc = rp_errorf(err, RP_EINVAL, "--retrieval: more than %d shard addresses",
                               MAX_SHARDS);
                goto err;
            }
            s->shards[s->nshards++] = tok;
        }
    }
    if (cfg->ranking && cfg->ranking[0]) {
        if (!(s->ranking = strdup(cfg->ranking))) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory");
            goto err;
        }
        s->nranking = 1;
        for (const char *p = s->ranking; *p; p++) s->nranking += *p == ',';
    }
    if (cfg->admin_token && cfg->admin_token[0] && !(s->admin_token = strdup(cfg->admin_token))) {
        rc = rp_errorf(err, RP_ENOMEM, "out of memory");
        goto err;
    }
    if (!cfg->bundle || !cfg->bundle[0]) {
        rc = rp_errorf(err, RP_EINVAL, "--bundle: a bundle directory is required");
        goto err;
    }
    if (strlen(cfg->bundle) >= sizeof s->start_path) {
        rc = rp_errorf(err, RP_EINVAL, "--bundle: path longer than %zu bytes", sizeof s->start_path - 1);
        goto err;
    }
    snprintf(s->start_path, sizeof s->start_path, "%s", cfg->bundle);
    if ((rc = open_pinned(cfg->bundle, &s->cur, err))) {
        rp_error_prefix(err, "--bundle");
        goto err;
    }
    gw_state_opts so = {.map_size = cfg->state_map_size, .history_len = cfg->history_len};
    if ((rc = gw_state_open(cfg->state_dir, &so, &s->state, err))) goto err;
    int threads = cfg->threads > 0 ? cfg->threads : 8;
    s->refresh_wait_ns = cfg->cache_refresh_wait_s < 0 ? 0
                         : cfg->cache_refresh_wait_s == 0
                             ? 5000000ull
                             : (uint64_t)(cfg->cache_refresh_wait_s * 1e9);
    gw_cache_config cc = {.max_entries = cfg->cache_entries,
                          .ttl_s = cfg->cache_ttl_s,
                          .stale_s = cfg->cache_stale_s,
                          .max_refresh = cfg->cache_refreshes};
    if ((rc = gw_cache_create(&cc, &s->cache))) {
        rp_errorf(err, rc, "cache: out of memory");
        goto err;
    }
    if ((rc = rp_client_create(NULL, &s->client, err))) goto err;
    /* Durable writes (an fsync each) run in the I/O lane: a stalled disk holds a quarter
     * of the request threads while Recommend keeps the rest. */
    static const char *const io_methods[] = {"/recpipe.v1.Recommender/Feedback",
                                             "/recpipe.v1.Recommender/ForgetUser", NULL};
    rp_server_config sc = {.service = "gateway",
                           .version = "0.1.0",
                           .listen = cfg->listen,
                           .threads = threads,
                           .grace_s = s->grace_s,
                           .status_hook = status_hook,
                           .status_user = s,
                           .admin_token = s->admin_token,
                           .io_methods = io_methods};
    size_t nm;
    const rp_method *m = methods(s, &nm);
    if ((rc = rp_server_start(&sc, m, nm, &s->server, err))) goto err;
    rp_server_set_serving(s->server, true);
    rp_info("gateway", "serving bundle %s (%zu items) on port %d, %u retrieval shard(s), ranking %s",
            s->cur->cat->version, s->cur->cat->n, rp_server_port(s->server), s->nshards,
            s->ranking ? s->ranking : "(none)");
    *out = s;
    return RP_OK;

err:
    gw_service_destroy(s);
    return rc;
}

const rp_method *gw_service_methods(gw_service *s, size_t *n)
{
    *n = sizeof s->methods / sizeof s->methods[0];
    return s->methods;
}

int gw_service_port(const gw_service *s)
{
    return rp_server_port(s->server);
}

int gw_service_run_until_signal(gw_service *s)
{
    rp_error err;
    if (watch_sighup(s, &err) != RP_OK)
        rp_warn("gateway", "SIGHUP will not reload: %s", rp_error_text(&err));
    return rp_server_run_until_signal(s->server);
}

void gw_service_destroy(gw_service *s)
{
    if (!s) return;
    rp_sighup_stop(s->hup);
    rp_server_destroy(s->server);
    rp_client_destroy(s->client);
    gw_cache_destroy(s->cache);
    gw_state_close(s->state);
    pinned_unref(s->cur);
    free(s->ranking);
    free(s->admin_token);
    free(s->retrieval_buf);
    pthread_mutex_destroy(&s->ver_mu);
    pthread_mutex_destroy(&s->pin_mu);
    pthread_mutex_destroy(&s->admin_mu);
    free(s);
}
