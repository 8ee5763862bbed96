/* recpipe synth: the generative model described in idx/synth.h. */
#include "idx/synth.h"

#include "dataset_int.h"
#include "idx/fsutil.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum { TYPE_VIEW = 1 };

/* ---- random numbers: xoshiro256**, seeded by splitmix64; one stream per phase so that
 * each phase's draws do not depend on how many the others made ---- */

typedef struct rng {
    uint64_t s[4];
    double spare;
    bool has_spare;
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ull);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    r->has_spare = false;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* uniform in [0, 1) with 53 bits */
static inline double unif(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static inline uint32_t below(rng *r, uint32_t n)
{
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* standard normal (Marsaglia's polar method, both values used) */
static double normal(rng *r)
{
    if (r->has_spare) {
        r->has_spare = false;
        return r->spare;
    }
    double u, v, q;
    do {
        u = 2.0 * unif(r) - 1.0;
        v = 2.0 * unif(r) - 1.0;
        q = u * u + v * v;
    } while (q >= 1.0 || q == 0.0);
    double m = sqrt(-2.0 * log(q) / q);
    r->spare = v * m;
    r->has_spare = true;
    return u * m;
}

/* Walker's alias table over weights w[0..n) (Vose's construction): sampling is one
 * uniform index and one comparison, with two memory reads, where a binary search over
 * a million prefix sums costs some twenty cache misses. w is overwritten; work holds n
 * indices: the stack of small entries grows up from 0, that of large ones down from n. */
static void alias_build(double *w, uint32_t n, float *prob, uint32_t *alias, uint32_t *work)
{
    double sum = 0;
    for (uint32_t i = 0; i < n; i++) sum += w[i];
    uint32_t ns = 0, nl = n;
    for (uint32_t i = 0; i < n; i++) {
        w[i] = w[i] * n / sum;
        alias[i] = i;
        if (w[i] < 1.0) work[ns++] = i;
        else work[--nl] = i;
    }
    while (ns > 0 && nl < n) {
        uint32_t sm = work[--ns], lg = work[nl++];
        prob[sm] = (float)w[sm];
        alias[sm] = lg;
        w[lg] = w[lg] + w[sm] - 1.0;
        if (w[lg] < 1.0) work[ns++] = lg;
        else work[--nl] = lg;
    }
    while (nl < n) prob[work[nl++]] = 1.0f;
    while (ns > 0) prob[work[--ns]] = 1.0f; /* rounding leftovers */
}

static inline uint32_t alias_draw(rng *r, const float *prob, const uint32_t *alias, uint32_t n)
{
    uint32_t i = below(r, n);
    return unif(r) < prob[i] ? i : alias[i];
}

/* index of the first prefix sum > x in cum[lo..hi) *//* index of the first prefix sum > x in cum[lo..hi) */
static uint32_t pick(const double *cum, uint32_t lo, uint32_t hi, double x)
{
    while (lo + 1 < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cum[mid - 1] > x) hi = mid;
        else lo = mid;
    }
    return lo;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct gen_ev {
    int64_t ts;
    uint32_t item, order;
} gen_ev;

static int cmp_gen(const void *a, const void *b)
{
    const gen_ev *x = a, *y = b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return (x->order > y->order) - (x->order < y->order);
}

static int cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x < y) - (x > y);
}

/* Streams the item vectors to path: centre of the item's cluster plus noise, unit norm. */
static int write_vectors(const char *path, const idx_synth_params *p, const float *centres,
                         const uint32_t *cluster, double spread, rp_error *err)
{
    FILE *f = fopen(path, "wb");
    if (!f) return rp_errorf(err, RP_EIO, "%s: %s", path, strerror(errno));
    size_t rec = 4 + (size_t)p->dim * 4;
    unsigned char *buf = malloc(rec);
    float *v = malloc((size_t)p->dim * sizeof *v);
    int ret = RP_OK;
    if (!buf || !v) {
        ret = rp_errorf(err, RP_ENOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    rng r;
    rng_seed(&r, p->seed, 4);
    double sd = spread / sqrt((double)p->dim);
    int32_t d32 = (int32_t)p->dim;
    uint32_t step = p->n_items / 100 + 1;
    for (uint32_t i = 0; i < p->n_items; i++) {
        if (i % step == 0) {
            if (p->progress) p->progress(p->progress_ctx, "vectors", i, p->n_items);
            if (p->cancel && *p->cancel) {
                ret = rp_errorf(err, RP_ECANCELED, "interrupted; nothing was written");
                goto cleanup;
            }
        }
        const float *c = centres + (size_t)cluster[i] * p->dim;
        double norm = 0;
        for (uint32_t k = 0; k < p->dim; k++) {
            v[k] = c[k] + (float)(sd * normal(&r));
            norm += (double)v[k] * v[k];
        }
        float inv = norm > 0 ? (float)(1.0 / sqrt(norm)) : 1.0f;
        memcpy(buf, &d32, 4); /* little-endian host (x86-64, aarch64) */
        for (uint32_t k = 0; k < p->dim; k++) {
            float x = v[k] * inv;
            memcpy(buf + 4 + 4 * (size_t)k, &x, 4);
        }
        if (fwrite(buf, 1, rec, f) != rec) {
            ret = rp_errorf(err, errno == ENOSPC ? RP_EFULL : RP_EIO, "%s: write: %s", path,
                            strerror(errno));
            goto cleanup;
        }
    }
cleanup:
    free(buf);
    free(v);
    if (fclose(f) != 0 && ret == RP_OK)
        ret = rp_errorf(err, errno == ENOSPC ? RP_EFULL : RP_EIO, "%s: close: %s", path,
                        strerror(errno));
    return ret;
}

int idx_synth(const idx_synth_params *in, idx_synth_stats *stats, rp_error *err)
{
    idx_synth_params p = *in;
    if (!p.out) return rp_errorf(err, RP_EINVAL, "out: a DATA_DIR is required");
    if (p.n_items < 1) return rp_errorf(err, RP_EINVAL, "items: must be at least 1");
    if (p.n_items > 100000000u)
        return rp_errorf(err, RP_EINVAL, "items: %u is above the limit 100000000", p.n_items);
    if (p.n_users < 1) return rp_errorf(err, RP_EINVAL, "users: must be at least 1");
    if (p.n_users > 100000000u)
        return rp_errorf(err, RP_EINVAL, "users: %u is above the limit 100000000", p.n_users);
    if (p.dim < 1 || p.dim > 4096)
        return rp_errorf(err, RP_EINVAL, "dim: %u is out of range 1..4096", p.dim);
    if (!p.n_categories) p.n_categories = 20;
    if (p.n_categories > UINT16_MAX + 1u)
        return rp_errorf(err, RP_EINVAL, "categories: %u is above the limit 65536",
                         p.n_categories);
    if (!p.n_clusters) {
        double k = sqrt((double)p.n_items) / 2;
        p.n_clusters = k < 4 ? 4 : k > 1024 ? 1024 : (uint32_t)k;
    }
    if (p.n_clusters > p.n_items) p.n_clusters = p.n_items;
    if (p.zipf == 0) p.zipf = 1.0;
    if (!(p.zipf > 0 && p.zipf <= 10))
        return rp_errorf(err, RP_EINVAL, "zipf: %g is out of range (0, 10]", p.zipf);
    if (p.events_per_user == 0) p.events_per_user = 20;
    if (!(p.events_per_user >= 5 && p.events_per_user <= 5000))
        return rp_errorf(err, RP_EINVAL, "events-per-user: %g is out of range 5..5000",
                         p.events_per_user);
    if (p.spread == 0) p.spread = 0.5;
    if (!(p.spread > 0 && p.spread <= 100))
        return rp_errorf(err, RP_EINVAL, "spread: %g is out of range (0, 100]", p.spread);
    if (p.pref_share == 0) p.pref_share = 0.8;
    else if (p.pref_share < 0) p.pref_share = 0; /* asked for no preference at all */
    if (p.pref_share > 1)
        return rp_errorf(err, RP_EINVAL, "pref-share: %g is out of range 0..1", p.pref_share);
    if (p.t_start == 0 && p.t_end == 0) {
        p.t_start = 1420070400; /* 2015-01-01 */
        p.t_end = 1577836800;   /* 2020-01-01 */
    }
    if (p.t_end - p.t_start < 1000)
        return rp_errorf(err, RP_EINVAL, "time span: t_end must be at least 1000 s after t_start");
    struct stat st;
    if (lstat(p.out, &st) == 0 && !p.force)
        return rp_errorf(err, RP_EEXIST, "%s already exists (use --force to replace it)", p.out);

    const uint32_t N = p.n_items, U = p.n_users, K = p.n_clusters, C = p.n_categories,
                   D = p.dim;
    int ret = RP_OK;
    char tmp[PATH_MAX] = "";
    double t0 = now_s();

    float *centres = malloc((size_t)K * D * sizeof *centres);
    double *cw = malloc((size_t)K * sizeof *cw);     /* cluster weights, prefix sums */
    uint32_t *cluster = malloc((size_t)N * sizeof *cluster);
    int64_t *created = malloc((size_t)N * sizeof *created);
    uint32_t *rank = malloc((size_t)N * sizeof *rank);
    uint32_t *cat_off = malloc(((size_t)N + 1) * sizeof *cat_off);
    uint16_t *cats = malloc((size_t)N * 2 * sizeof *cats);
    uint32_t *cl_off = calloc((size_t)K + 1, sizeof *cl_off);
    uint32_t *cl_items = malloc((size_t)N * sizeof *cl_items);
    double *pw = malloc((size_t)N * sizeof *pw); /* popularity weights, in cl_items order */
    float *cl_prob = malloc((size_t)N * sizeof *cl_prob);
    uint32_t *cl_alias = malloc((size_t)N * sizeof *cl_alias);
    float *g_prob = malloc((size_t)N * sizeof *g_prob);
    uint32_t *g_alias = malloc((size_t)N * sizeof *g_alias);
    uint32_t *work = malloc((size_t)N * sizeof *work);
    uint64_t *user_ids = malloc((size_t)U * sizeof *user_ids);
    uint64_t *user_off = malloc(((size_t)U + 1) * sizeof *user_off);
    uint64_t *item_ids = malloc((size_t)N * sizeof *item_ids);
    uint8_t *in_cat = malloc(N);
    uint32_t *tag_off = calloc((size_t)N + 1, sizeof *tag_off);
    char **titles = malloc((size_t)N * sizeof *titles);
    char *title_blob = malloc((size_t)N * 32);
    char **cat_names = malloc((size_t)C * sizeof *cat_names);
    char *cat_blob = malloc((size_t)C * 16);
    idx_event *events = NULL;
    gen_ev *uev = NULL;
    uint32_t *seen = NULL;
    uint64_t *counts = NULL;
    size_t nev = 0, ev_cap = 0;
    if (!centres || !cw || !cluster || !created || !rank || !cat_off || !cats || !cl_off ||
        !cl_items || !pw || !cl_prob || !cl_alias || !g_prob || !g_alias || !work || !user_ids || !user_off || !item_ids || !in_cat ||
        !tag_off || !titles || !title_blob || !cat_names || !cat_blob)
        goto oom;

    /* clusters: unit centres, log-normal weights */
    rng r;
    rng_seed(&r, p.seed, 1);
    for (uint32_t k = 0; k < K; k++) {
        float *c = centres + (size_t)k * D;
        double norm = 0;
        for (uint32_t d = 0; d < D; d++) {
            c[d] = (float)normal(&r);
            norm += (double)c[d] * c[d];
        }
        for (uint32_t d = 0; d < D; d++) c[d] = (float)(c[d] / sqrt(norm));
        cw[k] = exp(0.5 * normal(&r)) + (k ? cw[k - 1] : 0);
    }

    /* items: cluster, creation time, categories, popularity rank */
    rng_seed(&r, p.seed, 2);
    int64_t span = p.t_end - p.t_start;
    uint32_t cpos = 0;
    for (uint32_t i = 0; i < N; i++) {
        uint32_t k = pick(cw, 0, K, unif(&r) * cw[K - 1]);
        cluster[i] = k;
        created[i] = p.t_start + (int64_t)(unif(&r) * 0.8 * (double)span);
        cat_off[i] = cpos;
        uint16_t c0 = unif(&r) < 0.9 ? (uint16_t)(k % C) : (uint16_t)below(&r, C);
        cats[cpos++] = c0;
        if (C > 1 && unif(&r) < 0.3) {
            uint16_t c1 = (uint16_t)below(&r, C - 1);
            if (c1 >= c0) c1++;
            cats[cpos++] = c1;
        }
        rank[i] = i;
        item_ids[i] = (uint64_t)i + 1;
        in_cat[i] = 1;
    }
    cat_off[N] = cpos;
    for (uint32_t i = N - 1; i > 0; i--) { /* Fisher-Yates: rank[i] is item i's rank */
        uint32_t j = below(&r, i + 1);
        uint32_t t = rank[i];
        rank[i] = rank[j];
        rank[j] = t;
    }
    size_t tpos = 0;
    for (uint32_t i = 0; i < N; i++) {
        titles[i] = title_blob + tpos;
        tpos += (size_t)snprintf(title_blob + tpos, 32, "Synthetic item %u", i + 1) + 1;
    }
    for (uint32_t c = 0; c < C; c++) {
        cat_names[c] = cat_blob + (size_t)c * 16;
        snprintf(cat_names[c], 16, "category-%02u", c);
    }

    /* popularity: global and per-cluster prefix sums of 1 / rank^zipf */
    for (uint32_t i = 0; i < N; i++) cl_off[cluster[i] + 1]++;
    for (uint32_t k = 0; k < K; k++) cl_off[k + 1] += cl_off[k];
    {
        uint32_t *fill = malloc((size_t)K * sizeof *fill);
        if (!fill) goto oom;
        memcpy(fill, cl_off, (size_t)K * sizeof *fill);
        for (uint32_t i = 0; i < N; i++) cl_items[fill[cluster[i]]++] = i;
        free(fill);
    }
    for (uint32_t i = 0; i < N; i++) pw[i] = pow((double)rank[i] + 1, -p.zipf);
    alias_build(pw, N, g_prob, g_alias, work);
    for (uint32_t j = 0; j < N; j++) pw[j] = pow((double)rank[cl_items[j]] + 1, -p.zipf);
    for (uint32_t k = 0; k < K; k++) {
        uint32_t lo = cl_off[k], hi = cl_off[k + 1];
        if (lo < hi) alias_build(pw + lo, hi - lo, cl_prob + lo, cl_alias + lo, work);
    }

    /* users */
    rng_seed(&r, p.seed, 3);
    uint32_t cap = N / 2 < 5 ? (N < 5 ? N : 5) : N / 2;
    if (cap > 5000) cap = 5000;
    size_t seen_cap = 16;
    while (seen_cap < (size_t)cap * 4) seen_cap *= 2;
    uev = malloc((size_t)cap * sizeof *uev);
    seen = malloc(seen_cap * sizeof *seen);
    if (!uev || !seen) goto oom;
    uint32_t ustep = U / 100 + 1;
    for (uint32_t u = 0; u < U; u++) {
        if (u % ustep == 0) {
            if (p.progress) p.progress(p.progress_ctx, "users", u, U);
            if (p.cancel && *p.cancel) {
                ret = rp_errorf(err, RP_ECANCELED, "interrupted; nothing was written");
                goto cleanup;
            }
        }
        user_ids[u] = (uint64_t)u + 1;
        user_off[u] = nev;
        double m = p.events_per_user - 5;
        double x = 5 + (m > 0 ? -log(1 - unif(&r)) * m : 0);
        uint32_t n = x >= cap ? cap : (uint32_t)x;
        uint32_t np = 1 + below(&r, 3), pref[3];
        for (uint32_t j = 0; j < np; j++) pref[j] = pick(cw, 0, K, unif(&r) * cw[K - 1]);
        int64_t arrive = p.t_start + (int64_t)(unif(&r) * 0.9 * (double)span);
        size_t mask = 1;
        while (mask < (size_t)n * 4) mask *= 2;
        memset(seen, 0xff, mask * sizeof *seen);
        mask -= 1;
        uint32_t got = 0;
        for (uint32_t e = 0; e < n; e++) {
            for (int tries = 0; tries < 32; tries++) {
                uint32_t item;
                uint32_t k = pref[below(&r, np)];
                uint32_t lo = cl_off[k], hi = cl_off[k + 1];
                if (unif(&r) < p.pref_share && lo < hi) {
                    item = cl_items[lo + alias_draw(&r, cl_prob + lo, cl_alias + lo, hi - lo)];
                } else {
                    item = alias_draw(&r, g_prob, g_alias, N);
                }
                size_t h = ((uint64_t)item * 0x9e3779b97f4a7c15ull >> 20) & mask;
                bool dup = false;
                while (seen[h] != UINT32_MAX) {
                    if (seen[h] == item) {
                        dup = true;
                        break;
                    }
                    h = (h + 1) & mask;
                }
                if (dup) continue;
                seen[h] = item;
                int64_t after = arrive > created[item] ? arrive : created[item];
                int64_t ts =
                    after + 1 + (int64_t)(unif(&r) * 0.5 * (double)(p.t_end - after - 1));
                uev[got] = (gen_ev){ts, item, got};
                got++;
                break;
            }
        }
        qsort(uev, got, sizeof *uev, cmp_gen);
        if (nev + got > ev_cap) {
            size_t nc = ev_cap ? ev_cap : 1 << 16;
            while (nc < nev + got) nc *= 2;
            idx_event *ne = realloc(events, nc * sizeof *ne);
            if (!ne) goto oom;
            events = ne;
            ev_cap = nc;
        }
        for (uint32_t j = 0; j < got; j++)
            events[nev++] = (idx_event){.item = uev[j].item, .type = TYPE_VIEW, .value = 1.0f,
                                        .ts = uev[j].ts};
    }
    user_off[U] = nev;

    /* the documented skew, measured */
    counts = calloc(N, sizeof *counts);
    if (!counts) goto oom;
    for (size_t e = 0; e < nev; e++) counts[events[e].item]++;
    qsort(counts, N, sizeof *counts, cmp_u64_desc);
    uint64_t top = 0;
    for (uint32_t i = 0; i < (N + 99) / 100; i++) top += counts[i];
    double t1 = now_s();

    idx_dataset ds = {
        .n_users = U, .n_items = N, .n_categories = C, .n_events = nev,
        .user_ids = user_ids, .item_ids = item_ids, .user_off = user_off, .events = events,
        .titles = (const char *const *)titles, .item_cat_off = cat_off, .item_cats = cats,
        .category_names = (const char *const *)cat_names, .item_created = created,
        .item_in_catalogue = in_cat, .n_tags = 0, .item_tag_off = tag_off, .item_tags = NULL,
        .tag_names = NULL,
    };
    char sb[10][32];
    snprintf(sb[0], 32, "%" PRIu64, p.seed);
    snprintf(sb[1], 32, "%u", K);
    snprintf(sb[2], 32, "%g", p.zipf);
    snprintf(sb[3], 32, "%g", p.events_per_user);
    snprintf(sb[4], 32, "%g", p.spread);
    snprintf(sb[5], 32, "%g", p.pref_share);
    snprintf(sb[6], 32, "%u", D);
    const char *meta[] = {
        "kind", "synth",
        "synth.seed", sb[0],
        "synth.clusters", sb[1],
        "synth.zipf", sb[2],
        "synth.events_per_user", sb[3],
        "synth.spread", sb[4],
        "synth.pref_share", sb[5],
        "synth.dim", sb[6],
        "synth.vectors", IDX_SYNTH_VECTORS_FILE,
    };
    if ((ret = idx_tmpdir_near(p.out, tmp, sizeof tmp, err))) {
        tmp[0] = '\0';
        goto cleanup;
    }
    if ((ret = idx__dataset_write(tmp, &ds, meta, sizeof meta / sizeof meta[0] / 2, err)))
        goto cleanup;
    char vpath[PATH_MAX + 32];
    snprintf(vpath, sizeof vpath, "%s/%s", tmp, IDX_SYNTH_VECTORS_FILE);
    if ((ret = write_vectors(vpath, &p, centres, cluster, p.spread, err))) goto cleanup;
    static const char *const files[] = {"data.mdb", IDX_SYNTH_VECTORS_FILE};
    if ((ret = idx__dataset_write_sums(tmp, files, 2, err))) goto cleanup;
    if ((ret = idx_fsync_tree(tmp, err))) goto cleanup;
    if ((ret = idx_publish_dir(tmp, p.out, p.force, err))) goto cleanup;
    tmp[0] = '\0';
    if (stats) {
        *stats = (idx_synth_stats){
            .users = U, .items = N, .categories = C, .clusters = K, .dim = D, .events = nev,
            .top1pct_share = nev ? (double)top / (double)nev : 0,
            .seconds_generate = t1 - t0, .seconds_write = now_s() - t1,
        };
    }
    goto cleanup;

oom:
    ret = rp_errorf(err, RP_ENOMEM, "synth: out of memory for %u items, %u users", N, U);
cleanup:
    if (tmp[0]) idx_rmtree(tmp);
    free(centres);
    free(cw);
    free(cluster);
    free(created);
    free(rank);
    free(cat_off);
    free(cats);
    free(cl_off);
    free(cl_items);
    free(pw);
    free(cl_prob);
    free(cl_alias);
    free(g_prob);
    free(g_alias);
    free(work);
    free(user_ids);
    free(user_off);
    free(item_ids);
    free(in_cat);
    free(tag_off);
    free(titles);
    free(title_blob);
    free(cat_names);
    free(cat_blob);
    free(events);
    free(uev);
    free(seen);
    free(counts);
    return ret;
}
