#include "lt/workload.h"

#include "recpipe/v1/admin.pb-c.h"
#include "recpipe/v1/ranking.pb-c.h"
#include "recpipe/v1/recommender.pb-c.h"
#include "recpipe/v1/retrieval.pb-c.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ random numbers */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void lt_rng_seed(lt_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t lt_rng_next(lt_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double lt_rng_unif(lt_rng *r)
{
    return (double)((lt_rng_next(r) >> 11) + 1) * (1.0 / 9007199254740992.0);
}

/* ------------------------------------------------------------------ Zipf ranks */

/* The helpers of rejection-inversion sampling, accurate near 0. */
static double helper1(double x)
{
    return fabs(x) > 1e-8 ? log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
}

static double helper2(double x)
{
    return fabs(x) > 1e-8 ? expm1(x) / x : 1 + x * 0.5 * (1 + x / 3 * (1 + 0.25 * x));
}

static double zipf_h(double s, double x)
{
    return exp(-s * log(x));
}

static double zipf_hint(double s, double x)
{
    double lx = log(x);
    return helper2((1 - s) * lx) * lx;
}

static double zipf_hinv(double s, double x)
{
    double t = x * (1 - s);
    if (t < -1) t = -1;
    return exp(helper1(t) * x);
}

int lt_zipf_init(lt_zipf *z, uint64_t n, double s, rp_error *err)
{
    if (n < 1 || n > (1ull << 53))
        return rp_errorf(err, RP_EINVAL, "users: %llu is out of range 1..2^53",
                         (unsigned long long)n);
    if (!(s >= 0 && s <= 10))
        return rp_errorf(err, RP_EINVAL, "zipf: %g is out of range 0..10", s);
    z->n = n;
    z->s = s;
    z->h_x1 = zipf_hint(s, 1.5) - 1;
    z->h_n = zipf_hint(s, (double)n + 0.5);
    z->sdiv = 2 - zipf_hinv(s, zipf_hint(s, 2.5) - zipf_h(s, 2));
    return RP_OK;
}

uint64_t lt_zipf_draw(const lt_zipf *z, lt_rng *r)
{
    if (z->n == 1) return 1;
    for (;;) {
        double u = z->h_n + lt_rng_unif(r) * (z->h_x1 - z->h_n);
        double x = zipf_hinv(z->s, u);
        double kd = floor(x + 0.5);
        if (kd < 1) kd = 1;
        if (kd > (double)z->n) kd = (double)z->n;
        if (kd - x <= z->sdiv || u >= zipf_hint(z->s, kd + 0.5) - zipf_h(z->s, kd))
            return (uint64_t)kd;
    }
}

/* ------------------------------------------------------------------ arrivals */

int lt_arrivals_parse(const char *s, lt_arrivals *out, rp_error *err)
{
    if (!strcmp(s, "constant")) *out = LT_ARRIVALS_CONSTANT;
    else if (!strcmp(s, "poisson")) *out = LT_ARRIVALS_POISSON;
    else
        return rp_errorf(err, RP_EINVAL, "--arrivals: '%s' is not one of constant, poisson", s);
    return RP_OK;
}

const char *lt_arrivals_name(lt_arrivals a)
{
    return a == LT_ARRIVALS_POISSON ? "poisson" : "constant";
}

void lt_schedule_init(lt_schedule *sc, lt_arrivals kind, double rate, double first_ns,
                      uint64_t seed)
{
    sc->kind = kind;
    sc->gap_ns = 1e9 / rate;
    sc->next_ns = first_ns;
    lt_rng_seed(&sc->rng, seed);
}

uint64_t lt_schedule_next(lt_schedule *sc)
{
    uint64_t t = (uint64_t)sc->next_ns;
    if (sc->kind == LT_ARRIVALS_POISSON)
        sc->next_ns += -log(lt_rng_unif(&sc->rng)) * sc->gap_ns;
    else
        sc->next_ns += sc->gap_ns;
    return t;
}

/* ------------------------------------------------------------------ RPCs */

static const struct {
    const char *name, *path;
} rpcs[LT_RPC_COUNT] = {
    [LT_RPC_RECOMMEND] = {"recommend", "/recpipe.v1.Recommender/Recommend"},
    [LT_RPC_FEEDBACK] = {"feedback", "/recpipe.v1.Recommender/Feedback"},
    [LT_RPC_RETRIEVE] = {"retrieve", "/recpipe.v1.Retrieval/Retrieve"},
    [LT_RPC_RANK] = {"rank", "/recpipe.v1.Ranking/Rank"},
    [LT_RPC_STATUS] = {"status", "/recpipe.v1.Admin/Status"},
};

const char *lt_rpc_name(lt_rpc rpc)
{
    return (unsigned)rpc < LT_RPC_COUNT ? rpcs[rpc].name : "unknown";
}

const char *lt_rpc_path(lt_rpc rpc)
{
    return (unsigned)rpc < LT_RPC_COUNT ? rpcs[rpc].path : "";
}

bool lt_rpc_parse(const char *name, lt_rpc *out)
{
    for (int i = 0; i < LT_RPC_COUNT; i++) {
        if (!strcmp(name, rpcs[i].name)) {
            *out = (lt_rpc)i;
            return true;
        }
    }
    return false;
}

int lt_mix_parse(const char *spec, double w[LT_RPC_COUNT], rp_error *err)
{
    for (int i = 0; i < LT_RPC_COUNT; i++) w[i] = 0;
    const char *p = spec;
    double sum = 0;
    while (*p) {
        size_t len = strcspn(p, ",");
        char entry[128];
        if (len == 0 || len >= sizeof entry)
            return rp_errorf(err, RP_EINVAL, "--mix: empty or overlong entry in '%s'", spec);
        memcpy(entry, p, len);
        entry[len] = '\0';
        char *eq = strchr(entry, '=');
        if (!eq)
            return rp_errorf(err, RP_EINVAL, "--mix: '%s' is not rpc=weight", entry);
        *eq = '\0';
        lt_rpc rpc;
        if (!lt_rpc_parse(entry, &rpc))
            return rp_errorf(err, RP_EINVAL,
                             "--mix: unknown rpc '%s' (recommend, feedback, retrieve, rank, "
                             "status)",
                             entry);
        char *end;
        errno = 0;
        double v = strtod(eq + 1, &end);
        if (errno || end == eq + 1 || *end || !(v >= 0) || !isfinite(v))
            return rp_errorf(err, RP_EINVAL, "--mix: weight '%s' of %s is not a number >= 0",
                             eq + 1, entry);
        w[rpc] = v;
        sum += v;
        p += len;
        if (*p == ',') p++;
    }
    if (!(sum > 0)) return rp_errorf(err, RP_EINVAL, "--mix: weights of '%s' sum to 0", spec);
    for (int i = 0; i < LT_RPC_COUNT; i++) w[i] /= sum;
    return RP_OK;
}

/* ------------------------------------------------------------------ workload */

struct lt_workload {
    lt_workload_config cfg;
    double mix[LT_RPC_COUNT]; /* normalised */
    double cum[LT_RPC_COUNT]; /* cumulative normalised mix */
    lt_zipf users, items;
};

int lt_workload_create(const lt_workload_config *cfg, lt_workload **out, rp_error *err)
{
    *out = NULL;
    int rc;
    lt_workload *w = calloc(1, sizeof *w);
    if (!w) return rp_errorf(err, RP_ENOMEM, "loadtest: out of memory for the workload");
    w->cfg = *cfg;
    if ((rc = lt_zipf_init(&w->users, cfg->ids.n_users, cfg->zipf_s, err))) goto err;
    if ((rc = lt_zipf_init(&w->items, cfg->ids.n_items, cfg->zipf_s, err))) {
        rp_error_prefix(err, "items");
        goto err;
    }
    if (cfg->count < 1 || cfg->count > 500) {
        rc = rp_errorf(err, RP_EINVAL, "count: %u is out of range 1..500", cfg->count);
        goto err;
    }
    if (cfg->history > 1000) {
        rc = rp_errorf(err, RP_EINVAL, "history: %u is out of range 0..1000", cfg->history);
        goto err;
    }
    if (cfg->candidates < 1 || cfg->candidates > 5000) {
        rc = rp_errorf(err, RP_EINVAL, "candidates: %u is out of range 1..5000",
                       cfg->candidates);
        goto err;
    }
    double sum = 0;
    for (int i = 0; i < LT_RPC_COUNT; i++) {
        if (!(cfg->mix[i] >= 0)) {
            rc = rp_errorf(err, RP_EINVAL, "mix: weight of %s is negative", lt_rpc_name(i));
            goto err;
        }
        sum += cfg->mix[i];
    }
    if (!(sum > 0)) {
        rc = rp_errorf(err, RP_EINVAL, "mix: the weights sum to 0");
        goto err;
    }
    double acc = 0;
    for (int i = 0; i < LT_RPC_COUNT; i++) {
        w->mix[i] = cfg->mix[i] / sum;
        acc += w->mix[i];
        w->cum[i] = acc;
    }
    *out = w;
    return RP_OK;
err:
    free(w);
    return rc;
}

void lt_workload_destroy(lt_workload *w)
{
    free(w);
}

const double *lt_workload_mix(const lt_workload *w)
{
    return w->mix;
}

lt_rpc lt_workload_pick(const lt_workload *w, lt_rng *r)
{
    double u = lt_rng_unif(r);
    int last = 0;
    for (int i = 0; i < LT_RPC_COUNT; i++) {
        if (w->cfg.mix[i] <= 0) continue;
        last = i;
        if (u <= w->cum[i]) return (lt_rpc)i;
    }
    return (lt_rpc)last; /* rounding at the top end */
}

static uint64_t user_at(const lt_workload *w, uint64_t rank)
{
    return w->cfg.ids.user_ids ? w->cfg.ids.user_ids[rank - 1] : rank;
}

static uint64_t item_at(const lt_workload *w, uint64_t idx)
{
    return w->cfg.ids.item_ids ? w->cfg.ids.item_ids[idx] : idx + 1;
}

uint64_t lt_workload_user(const lt_workload *w, lt_rng *r)
{
    return user_at(w, lt_zipf_draw(&w->users, r));
}

uint64_t lt_workload_item(const lt_workload *w, lt_rng *r)
{
    return item_at(w, lt_zipf_draw(&w->items, r) - 1);
}

/* A history of n events, newest last, one minute apart, items drawn by popularity. */
static void fill_history(const lt_workload *w, lt_rng *r, Recpipe__V1__Event *ev,
                         Recpipe__V1__Event **evp, size_t n, int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        recpipe__v1__event__init(&ev[i]);
        ev[i].item_id = lt_workload_item(w, r);
        ev[i].type = (lt_rng_next(r) & 3) ? RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_VIEW
                                          : RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_CLICK;
        ev[i].timestamp = now - (int64_t)(n - i) * 60;
        evp[i] = &ev[i];
    }
}

int lt_workload_encode(const lt_workload *w, lt_rpc rpc, lt_rng *r, uint8_t *buf, size_t cap,
                       size_t *len)
{
    int rc = RP_ENOMEM;
    *len = 0;
    int64_t now = (int64_t)time(NULL);
    switch (rpc) {
    case LT_RPC_RECOMMEND: {
        Recpipe__V1__RecommendRequest m = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
        m.user_id = lt_workload_user(w, r);
        m.count = w->cfg.count;
        if (recpipe__v1__recommend_request__get_packed_size(&m) > cap) return RP_ETOOBIG;
        *len = recpipe__v1__recommend_request__pack(&m, buf);
        return RP_OK;
    }
    case LT_RPC_FEEDBACK: {
        Recpipe__V1__FeedbackEvent ev = RECPIPE__V1__FEEDBACK_EVENT__INIT;
        Recpipe__V1__FeedbackEvent *evp = &ev;
        Recpipe__V1__FeedbackRequest m = RECPIPE__V1__FEEDBACK_REQUEST__INIT;
        ev.user_id = lt_workload_user(w, r);
        ev.item_id = lt_workload_item(w, r);
        ev.type = (lt_rng_next(r) & 3) ? RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_VIEW
                                       : RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_CLICK;
        m.n_events = 1;
        m.events = &evp;
        if (recpipe__v1__feedback_request__get_packed_size(&m) > cap) return RP_ETOOBIG;
        *len = recpipe__v1__feedback_request__pack(&m, buf);
        return RP_OK;
    }
    case LT_RPC_STATUS: {
        Recpipe__V1__StatusRequest m = RECPIPE__V1__STATUS_REQUEST__INIT;
        if (recpipe__v1__status_request__get_packed_size(&m) > cap) return RP_ETOOBIG;
        *len = recpipe__v1__status_request__pack(&m, buf);
        return RP_OK;
    }
    case LT_RPC_RETRIEVE:
    case LT_RPC_RANK: break;
    default: return RP_EINVAL;
    }

    size_t nh = w->cfg.history;
    size_t nc = w->cfg.candidates;
    if (nc > w->cfg.ids.n_items) nc = (size_t)w->cfg.ids.n_items;
    Recpipe__V1__Event *ev = malloc((nh ? nh : 1) * sizeof *ev);
    Recpipe__V1__Event **evp = malloc((nh ? nh : 1) * sizeof *evp);
    Recpipe__V1__RankCandidate *cand = NULL;
    Recpipe__V1__RankCandidate **candp = NULL;
    if (!ev || !evp) goto done;
    fill_history(w, r, ev, evp, nh, now);
    if (rpc == LT_RPC_RETRIEVE) {
        Recpipe__V1__RetrieveRequest m = RECPIPE__V1__RETRIEVE_REQUEST__INIT;
        m.n_history = nh;
        m.history = evp;
        m.k = w->cfg.candidates;
        rc = RP_ETOOBIG;
        if (recpipe__v1__retrieve_request__get_packed_size(&m) <= cap) {
            *len = recpipe__v1__retrieve_request__pack(&m, buf);
            rc = RP_OK;
        }
        goto done;
    }
    cand = malloc(nc * sizeof *cand);
    candp = malloc(nc * sizeof *candp);
    if (!cand || !candp) goto done;
    /* Distinct candidates (Rank refuses duplicates): a run of nc items from a random
     * start in popularity order, scored as retrieval would, best first. */
    uint64_t start = lt_rng_next(r) % w->cfg.ids.n_items;
    for (size_t i = 0; i < nc; i++) {
        recpipe__v1__rank_candidate__init(&cand[i]);
        cand[i].item_id = item_at(w, (start + i) % w->cfg.ids.n_items);
        cand[i].retrieval_score = 1.0f - (float)i / (float)nc;
        cand[i].source = RECPIPE__V1__SOURCE__SOURCE_ANN;
        candp[i] = &cand[i];
    }
    Recpipe__V1__RankRequest m = RECPIPE__V1__RANK_REQUEST__INIT;
    m.n_history = nh;
    m.history = evp;
    m.n_candidates = nc;
    m.candidates = candp;
    rc = RP_ETOOBIG;
    if (recpipe__v1__rank_request__get_packed_size(&m) <= cap) {
        *len = recpipe__v1__rank_request__pack(&m, buf);
        rc = RP_OK;
    }
done:
    free(candp);
    free(cand);
    free(evp);
    free(ev);
    return rc;
}
