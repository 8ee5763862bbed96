/* The bundle builder: items in memory → item store, shard indexes, tuning, manifest. */
#include "bundle_int.h"
#include "idx/fsutil.h"
#include "rp/clock.h"
#include "rp/threads.h"

#include <errno.h>
#include <stdarg.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FILES 64
#define TUNE_K 100
#define TUNE_SAMPLE 1000

struct idx_builder {
    char out_path[PATH_MAX];
    char tmp[PATH_MAX];
    uint32_t dim;
    idx_metric metric;
    char version[64];

    size_t n, cap;
    uint64_t *ids;
    float *vecs;
    int64_t *created;
    uint64_t *pop;
    uint32_t *title_off; /* into titles; 0 = "" (titles[0] is '\0') */
    uint32_t *cat_off;   /* [cap + 1] into catidx */
    char *titles;
    size_t titles_len, titles_cap;
    uint32_t *catidx;
    size_t ncat, catcap;
    idx__strtab cats;
    size_t meta_bytes; /* titles + category names, for sizing the item store */

    idx_index_opts index;
    float *queries;

    char *files[MAX_FILES];
    size_t nfiles;
    json_object *training, *evaluation;
    idx_progress_fn progress;
    void *progress_ctx;
};

static void say(idx_builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(idx_builder *b, const char *fmt, ...)
{
    if (!b->progress) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    b->progress(b->progress_ctx, line);
}

static void builder_free(idx_builder *b)
{
    free(b->ids);
    free(b->vecs);
    free(b->created);
    free(b->pop);
    free(b->title_off);
    free(b->cat_off);
    free(b->titles);
    free(b->catidx);
    idx__strtab_free(&b->cats);
    free(b->queries);
    for (size_t i = 0; i < b->nfiles; i++) free(b->files[i]);
    if (b->training) json_object_put(b->training);
    if (b->evaluation) json_object_put(b->evaluation);
    free(b);
}

int idx_builder_create(const char *out_path, uint32_t dim, idx_metric metric, idx_builder **out,
                       rp_error *err)
{
    *out = NULL;
    if (dim < 1 || dim > IDX_ANN_MAX_DIM)
        return rp_errorf(err, RP_EINVAL, "dimension: %u is outside 1..%u", dim, IDX_ANN_MAX_DIM);
    if (metric != IDX_METRIC_IP && metric != IDX_METRIC_L2)
        return rp_errorf(err, RP_EINVAL, "metric: %d is not ip or l2", (int)metric);
    if (!out_path || !*out_path) return rp_errorf(err, RP_EINVAL, "bundle path: empty");
    idx_builder *b = calloc(1, sizeof *b);
    if (!b) return rp_errorf(err, RP_ENOMEM, "bundle builder: out of memory");
    snprintf(b->out_path, sizeof b->out_path, "%s", out_path);
    b->dim = dim;
    b->metric = metric;
    b->titles = malloc(1024);
    b->cat_off = malloc(sizeof *b->cat_off);
    if (!b->titles || !b->cat_off) {
        builder_free(b);
        return rp_errorf(err, RP_ENOMEM, "bundle builder: out of memory");
    }
    b->titles[0] = '\0';
    b->titles_len = 1;
    b->titles_cap = 1024;
    b->cat_off[0] = 0;
    int rc = idx_tmpdir_near(out_path, b->tmp, sizeof b->tmp, err);
    if (rc) {
        builder_free(b);
        return rc;
    }
    *out = b;
    return RP_OK;
}

void idx_builder_abort(idx_builder *b)
{
    if (!b) return;
    idx_rmtree(b->tmp);
    builder_free(b);
}

static int valid_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n < 1 || n > max || !strcmp(s, ".") || !strcmp(s, "..")) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

int idx_builder_set_version(idx_builder *b, const char *version, rp_error *err)
{
    if (!version || !valid_name(version, 63))
        return rp_errorf(err, RP_EINVAL,
                         "bundle version '%s': use 1..63 characters of A-Z a-z 0-9 . _ -",
                         version ? version : "");
    snprintf(b->version, sizeof b->version, "%s", version);
    return RP_OK;
}

void idx_builder_set_progress(idx_builder *b, idx_progress_fn fn, void *ctx)
{
    b->progress = fn;
    b->progress_ctx = ctx;
}

static int grow(idx_builder *b, size_t need, rp_error *err)
{
    if (need <= b->cap) return RP_OK;
    size_t nc = b->cap ? b->cap : 1024;
    while (nc < need) nc *= 2;
#define GROW(field, count)                                                                 \
    do {                                                                                   \
        void *g_ = realloc(b->field, (count) * sizeof *b->field);                         \
        if (!g_) return rp_errorf(err, RP_ENOMEM, "bundle builder: out of memory at %zu items", b->n); \
        b->field = g_;                                                                     \
    } while (0)
    GROW(ids, nc);
    GROW(vecs, nc * b->dim);
    GROW(created, nc);
    GROW(pop, nc);
    GROW(title_off, nc);
    GROW(cat_off, nc + 1);
#undef GROW
    b->cap = nc;
    return RP_OK;
}

int idx_builder_add_item(idx_builder *b, const idx_item *item, const float *embedding,
                         rp_error *err)
{
    int rc = idx_check_finite(embedding, 1, b->dim, "embedding", err);
    if (rc) return rp_error_prefix(err, "item %llu", (unsigned long long)item->id);
    const char *title = item->title ? item->title : "";
    size_t tl = strlen(title);
    if (tl > IDX_MAX_TITLE_BYTES)
        return rp_errorf(err, RP_EINVAL, "item %llu: title of %zu bytes exceeds %d",
                         (unsigned long long)item->id, tl, IDX_MAX_TITLE_BYTES);
    if (item->n_categories > IDX_MAX_ITEM_CATEGORIES)
        return rp_errorf(err, RP_EINVAL, "item %llu: %zu categories exceed %d",
                         (unsigned long long)item->id, item->n_categories, IDX_MAX_ITEM_CATEGORIES);
    for (size_t i = 0; i < item->n_categories; i++) {
        size_t cl = strlen(item->categories[i]);
        if (cl < 1 || cl > IDX_MAX_CATEGORY_BYTES)
            return rp_errorf(err, RP_EINVAL, "item %llu: category %zu has %zu bytes (1..%d)",
                             (unsigned long long)item->id, i, cl, IDX_MAX_CATEGORY_BYTES);
    }
    if ((rc = grow(b, b->n + 1, err))) return rc;
    if (tl) {
        if (b->titles_len + tl + 1 > UINT32_MAX)
            return rp_errorf(err, RP_ETOOBIG, "bundle builder: titles exceed 4 GiB");
        if (b->titles_len + tl + 1 > b->titles_cap) {
            size_t nc = b->titles_cap * 2;
            while (nc < b->titles_len + tl + 1) nc *= 2;
            char *g = realloc(b->titles, nc);
            if (!g) return rp_errorf(err, RP_ENOMEM, "bundle builder: out of memory for titles");
            b->titles = g;
            b->titles_cap = nc;
        }
        memcpy(b->titles + b->titles_len, title, tl + 1);
        b->title_off[b->n] = (uint32_t)b->titles_len;
        b->titles_len += tl + 1;
    } else {
        b->title_off[b->n] = 0;
    }
    if (b->ncat + item->n_categories > b->catcap) {
        size_t nc = b->catcap ? b->catcap * 2 : 1024;
        while (nc < b->ncat + item->n_categories) nc *= 2;
        uint32_t *g = realloc(b->catidx, nc * sizeof *g);
        if (!g) return rp_errorf(err, RP_ENOMEM, "bundle builder: out of memory for categories");
        b->catidx = g;
        b->catcap = nc;
    }
    for (size_t i = 0; i < item->n_categories; i++) {
        uint32_t c = idx__strtab_intern(&b->cats, item->categories[i]);
        if (c == UINT32_MAX) return rp_errorf(err, RP_ENOMEM, "bundle builder: out of memory");
        b->catidx[b->ncat++] = c;
        b->meta_bytes += strlen(item->categories[i]) + 1;
    }
    b->meta_bytes += tl;
    memcpy(b->vecs + b->n * b->dim, embedding, (size_t)b->dim * sizeof(float));
    b->ids[b->n] = item->id;
    b->created[b->n] = item->created;
    b->pop[b->n] = item->popularity;
    b->n++;
    b->cat_off[b->n] = (uint32_t)b->ncat;
    return RP_OK;
}

int idx_builder_add_vectors(idx_builder *b, size_t n, const uint64_t *ids, const float *vecs,
                            rp_error *err)
{
    for (size_t i = 0; i < n; i++) {
        idx_item it = {.id = ids[i]};
        int rc = idx_builder_add_item(b, &it, vecs + i * b->dim, err);
        if (rc) return rc;
    }
    return RP_OK;
}

int idx_builder_set_index(idx_builder *b, const idx_index_opts *o, rp_error *err)
{
    if (o->n_shards > 4096)
        return rp_errorf(err, RP_EINVAL, "shards: %u is outside 1..4096", o->n_shards);
    if (o->target_recall < 0 || o->target_recall > 1)
        return rp_errorf(err, RP_EINVAL, "target recall: %g is outside 0..1 (0 = no tuning)",
                         o->target_recall);
    if (o->factory && strlen(o->factory) >= 120)
        return rp_errorf(err, RP_EINVAL, "index factory: longer than 119 characters");
    float *q = NULL;
    if (o->queries && o->n_queries) {
        int rc = idx_check_finite(o->queries, o->n_queries, b->dim, "tuning queries", err);
        if (rc) return rc;
        q = malloc(o->n_queries * b->dim * sizeof *q);
        if (!q) return rp_errorf(err, RP_ENOMEM, "tuning queries: out of memory");
        memcpy(q, o->queries, o->n_queries * b->dim * sizeof *q);
    }
    free(b->queries);
    b->queries = q;
    b->index = *o;
    b->index.queries = q;
    b->index.n_queries = q ? o->n_queries : 0;
    return RP_OK;
}

int idx_builder_file(idx_builder *b, const char *name, char *path, size_t cap, rp_error *err)
{
    if (!name || !valid_name(name, 100) || !strcmp(name, "manifest.json") ||
        !strcmp(name, IDX__ITEMS_FILE) || !strncmp(name, "shard-", 6) || name[0] == '.')
        return rp_errorf(err, RP_EINVAL,
                         "bundle file '%s': use a plain name of A-Z a-z 0-9 . _ - (not "
                         "manifest.json, %s, shard-*, or starting with '.')",
                         name ? name : "", IDX__ITEMS_FILE);
    for (size_t i = 0; i < b->nfiles; i++)
        if (!strcmp(b->files[i], name))
            return rp_errorf(err, RP_EEXIST, "bundle file '%s': reserved twice", name);
    if (b->nfiles == MAX_FILES)
        return rp_errorf(err, RP_ETOOBIG, "bundle file '%s': more than %d extra files", name, MAX_FILES);
    int n = snprintf(path, cap, "%s/%s", b->tmp, name);
    if (n < 0 || (size_t)n >= cap) return rp_errorf(err, RP_EINVAL, "bundle file '%s': path too long", name);
    if (!(b->files[b->nfiles] = strdup(name))) return rp_errorf(err, RP_ENOMEM, "out of memory");
    b->nfiles++;
    return RP_OK;
}

static int set_json(json_object **slot, const char *what, const char *json, rp_error *err)
{
    json_tokener *tok = json_tokener_new();
    if (!tok) return rp_errorf(err, RP_ENOMEM, "%s JSON: out of memory", what);
    json_object *o = json_tokener_parse_ex(tok, json ? json : "", json ? (int)strlen(json) : 0);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t off = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || e != json_tokener_success || !json_object_is_type(o, json_type_object)) {
        if (o) json_object_put(o);
        return rp_errorf(err, RP_EPARSE, "%s JSON: not a JSON object (%s at offset %zu)", what,
                         e != json_tokener_success ? json_tokener_error_desc(e) : "wrong type",
                         off);
    }
    if (*slot) json_object_put(*slot);
    *slot = o;
    return RP_OK;
}

int idx_builder_set_training_json(idx_builder *b, const char *json, rp_error *err)
{
    return set_json(&b->training, "training", json, err);
}

int idx_builder_set_evaluation_json(idx_builder *b, const char *json, rp_error *err)
{
    return set_json(&b->evaluation, "evaluation", json, err);
}

/* ---- commit ---- */

static int by_id(const void *x, const void *y, void *ids)
{
    const uint64_t *v = ids;
    uint64_t a = v[*(const size_t *)x], c = v[*(const size_t *)y];
    return a < c ? -1 : a > c;
}

static int write_items(idx_builder *b, const size_t *perm, rp_error *err)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/%s", b->tmp, IDX__ITEMS_FILE);
    uint64_t bytes = (uint64_t)b->n * idx__itemstore_record_size(b->dim, 0, 0) + b->meta_bytes +
                     (uint64_t)b->ncat * 8 + (uint64_t)b->n * 32;
    idx__itemstore_writer *w;
    int rc = idx__itemstore_writer_open(p, b->dim, bytes, &w, err);
    if (rc) return rc;
    const char *cats[IDX_MAX_ITEM_CATEGORIES];
    for (size_t r = 0; r < b->n; r++) {
        size_t i = perm[r];
        idx_item it = {.id = b->ids[i], .title = b->titles + b->title_off[i],
                       .created = b->created[i], .popularity = b->pop[i]};
        for (uint32_t c = b->cat_off[i]; c < b->cat_off[i + 1]; c++)
            cats[it.n_categories++] = b->cats.names[b->catidx[c]];
        it.categories = cats;
        if ((rc = idx__itemstore_writer_put(w, &it, b->vecs + i * b->dim, err))) {
            idx__itemstore_writer_abort(w);
            return rc;
        }
    }
    return idx__itemstore_writer_finish(w, err);
}

static int write_ids(const char *path, const uint64_t *ids, size_t n, rp_error *err)
{
    FILE *f = fopen(path, "wb");
    if (!f) return rp_errorf(err, RP_EIO, "%s: %s", path, strerror(errno));
    size_t w = fwrite(ids, 8, n, f);
    if (fclose(f) != 0 || w != n) return rp_errorf(err, RP_EIO, "%s: write: %s", path, strerror(errno));
    return RP_OK;
}

/* Builds, tunes and writes one shard. rows: indices into b (ascending id). */
static int build_shard(idx_builder *b, uint32_t s, const size_t *rows, size_t n,
                       const char *factory, const float *tq, size_t ntq, idx_build_report *rep,
                       rp_error *err)
{
    int rc;
    idx_ann *a = NULL;
    int64_t *truth = NULL;
    float *x = malloc((n ? n : 1) * (size_t)b->dim * sizeof *x);
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!x || !ids) {
        rc = rp_errorf(err, RP_ENOMEM, "shard %u: out of memory for %zu vectors", s, n);
        goto out;
    }
    for (size_t r = 0; r < n; r++) {
        memcpy(x + r * b->dim, b->vecs + rows[r] * b->dim, (size_t)b->dim * sizeof *x);
        ids[r] = b->ids[rows[r]];
    }
    if ((rc = idx_ann_create(factory, b->dim, b->metric, &a, err))) goto out;
    say(b, "shard %u: building %s over %zu vectors", s, factory, n);
    double t0 = (rp_now_ns() * 1e-9);
    if ((rc = idx_ann_build(a, n, x, err))) {
        rp_error_prefix(err, "shard %u (%zu items)", s, n);
        goto out;
    }
    rep->build_seconds += (rp_now_ns() * 1e-9) - t0;
    if (b->index.target_recall > 0) {
        t0 = (rp_now_ns() * 1e-9);
        size_t k = n < TUNE_K ? n : TUNE_K;
        truth = malloc(ntq * k * sizeof *truth);
        if (!truth) {
            rc = rp_errorf(err, RP_ENOMEM, "tuning: out of memory");
            goto out;
        }
        if ((rc = idx_exact_knn(b->metric, b->dim, n, x, ntq, tq, k, truth, err))) goto out;
        idx_tune_result t;
        if ((rc = idx_ann_tune_base(a, x, ntq, tq, k, truth, b->index.target_recall, &t, err)))
            goto out;
        say(b, "shard %u: %s%s%g gives recall@%zu %.4f%s", s, t.param, t.param[0] ? "=" : "",
            t.value, k, t.recall, t.reached ? "" : " (below the target)");
        /* One setting for every shard: the largest any shard needs; the recall reported
         * is the lowest a shard measured at its own setting. */
        if (s == 0 || t.value > rep->tune.value) rep->tune.value = t.value;
        if (s == 0 || t.recall < rep->tune.recall) rep->tune.recall = t.recall;
        rep->tune.reached = s == 0 ? t.reached : rep->tune.reached && t.reached;
        snprintf(rep->tune.param, sizeof rep->tune.param, "%s", t.param);
        rep->tune_seconds += (rp_now_ns() * 1e-9) - t0;
    }
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/shard-%u.faiss", b->tmp, s);
    if ((rc = idx_ann_write(a, p, err))) goto out;
    struct stat st;
    if (stat(p, &st) == 0) rep->index_bytes += (uint64_t)st.st_size;
    snprintf(p, sizeof p, "%s/shard-%u.ids", b->tmp, s);
    rc = write_ids(p, ids, n, err);
out:
    idx_ann_close(a);
    free(truth);
    free(x);
    free(ids);
    return rc;
}

static json_object *jstr(const char *s)
{
    return json_object_new_string(s);
}

static int add_file_entry(json_object *files, const char *dir, const char *name, rp_error *err)
{
    char p[PATH_MAX + 128], hex[65];
    uint64_t size;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int rc = idx__sha256_file(p, hex, &size, err);
    if (rc == RP_ENOENT)
        return rp_errorf(err, RP_EIO, "bundle file '%s' was reserved but never written", name);
    if (rc) return rc;
    json_object *f = json_object_new_object();
    json_object_object_add(f, "name", jstr(name));
    json_object_object_add(f, "size", json_object_new_int64((int64_t)size));
    json_object_object_add(f, "sha256", jstr(hex));
    json_object_array_add(files, f);
    return RP_OK;
}

int idx_builder_commit(idx_builder *b, int replace, idx_build_report *report, rp_error *err)
{
    idx_build_report local;
    idx_build_report *rep = report ? report : &local;
    memset(rep, 0, sizeof *rep);
    size_t *perm = NULL, *rows = NULL;
    float *tq_owned = NULL;
    json_object *root = NULL;
    int rc = RP_OK;
    if (b->n == 0) {
        rc = rp_errorf(err, RP_EINVAL, "%s: no items to build a bundle from", b->out_path);
        goto fail;
    }
    uint32_t ns = b->index.n_shards ? b->index.n_shards : 1;
    if (ns > b->n) {
        rc = rp_errorf(err, RP_EINVAL, "shards: %u shards for %zu items; use at most %zu", ns,
                       b->n, b->n);
        goto fail;
    }
    perm = malloc(b->n * sizeof *perm);
    rows = malloc(b->n * sizeof *rows);
    if (!perm || !rows) {
        rc = rp_errorf(err, RP_ENOMEM, "bundle builder: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < b->n; i++) perm[i] = i;
    qsort_r(perm, b->n, sizeof *perm, by_id, b->ids);
    for (size_t r = 1; r < b->n; r++)
        if (b->ids[perm[r]] == b->ids[perm[r - 1]]) {
            rc = rp_errorf(err, RP_EINVAL, "item %llu: added twice",
                           (unsigned long long)b->ids[perm[r]]);
            goto fail;
        }
    rp_compute_threads(b->index.threads);

    say(b, "writing the item store (%zu items)", b->n);
    if ((rc = write_items(b, perm, err))) goto fail;

    /* Tuning queries: the caller's, else a fixed-seed sample of item vectors. */
    const float *tq = b->index.queries;
    size_t ntq = b->index.n_queries;
    if (b->index.target_recall > 0 && !tq) {
        ntq = b->n < TUNE_SAMPLE ? b->n : TUNE_SAMPLE;
        tq_owned = malloc(ntq * b->dim * sizeof *tq_owned);
        if (!tq_owned) {
            rc = rp_errorf(err, RP_ENOMEM, "tuning: out of memory");
            goto fail;
        }
        uint64_t seed = 0x5eed;
        for (size_t i = 0; i < ntq; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            memcpy(tq_owned + i * b->dim, b->vecs + ((seed >> 33) % b->n) * b->dim,
                   (size_t)b->dim * sizeof(float));
        }
        tq = tq_owned;
    }

    json_object *shards = json_object_new_array();
    root = json_object_new_object();
    json_object_object_add(root, "format", json_object_new_int(IDX_BUNDLE_FORMAT));
    char factory[128] = "";
    for (uint32_t s = 0; s < ns; s++) {
        size_t n = 0;
        for (size_t r = 0; r < b->n; r++)
            if (idx_shard_of(b->ids[perm[r]], ns) == s) rows[n++] = perm[r];
        if (n == 0) {
            json_object_put(shards);
            rc = rp_errorf(err, RP_EINVAL, "shard %u of %u received no items; use fewer shards",
                           s, ns);
            goto fail;
        }
        if (s == 0) {
            if (b->index.factory && *b->index.factory)
                snprintf(factory, sizeof factory, "%s", b->index.factory);
            else
                idx_ann_default_factory(n, factory, sizeof factory);
        }
        if ((rc = build_shard(b, s, rows, n, factory, tq, ntq, rep, err))) {
            json_object_put(shards);
            goto fail;
        }
        json_object *so = json_object_new_object();
        char name[64];
        snprintf(name, sizeof name, "shard-%u.faiss", s);
        json_object_object_add(so, "index", jstr(name));
        snprintf(name, sizeof name, "shard-%u.ids", s);
        json_object_object_add(so, "ids", jstr(name));
        json_object_object_add(so, "items", json_object_new_int64((int64_t)n));
        json_object_array_add(shards, so);
    }

    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char created[32];
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!b->version[0]) {
        char stamp[32];
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
        snprintf(b->version, sizeof b->version, "v%s-%04x", stamp,
                 (unsigned)((rp_now_ns() ^ (uint64_t)getpid() * 40503u) & 0xffff));
    }
    json_object_object_add(root, "version", jstr(b->version));
    json_object_object_add(root, "created", json_object_new_int64((int64_t)now));
    json_object_object_add(root, "created_utc", jstr(created));
    json_object_object_add(root, "dim", json_object_new_int64(b->dim));
    json_object_object_add(root, "metric", jstr(idx_metric_name(b->metric)));
    json_object_object_add(root, "items", json_object_new_int64((int64_t)b->n));
    json_object_object_add(root, "categories", json_object_new_int64(b->cats.n));
    json_object_object_add(root, "shards", shards);
    json_object *ix = json_object_new_object();
    json_object_object_add(ix, "factory", jstr(factory));
    json_object_object_add(ix, "shard_rule", jstr("splitmix64(id) mod shards"));
    json_object_object_add(ix, "param", jstr(rep->tune.param));
    json_object_object_add(ix, "value", json_object_new_double(rep->tune.value));
    json_object_object_add(ix, "target_recall", json_object_new_double(b->index.target_recall));
    json_object_object_add(ix, "recall",
                           json_object_new_double(b->index.target_recall > 0 ? rep->tune.recall : -1));
    json_object_object_add(ix, "recall_k", json_object_new_int(TUNE_K));
    json_object_object_add(ix, "tuning_queries", json_object_new_int64((int64_t)ntq));
    json_object_object_add(ix, "build_seconds", json_object_new_double(rep->build_seconds));
    json_object_object_add(root, "index", ix);
    json_object_object_add(root, "training",
                           b->training ? json_object_get(b->training) : json_object_new_object());
    json_object_object_add(root, "evaluation",
                           b->evaluation ? json_object_get(b->evaluation) : json_object_new_object());

    say(b, "checksumming");
    json_object *files = json_object_new_array();
    json_object_object_add(root, "files", files);
    if ((rc = add_file_entry(files, b->tmp, IDX__ITEMS_FILE, err))) goto fail;
    for (uint32_t s = 0; s < ns; s++) {
        char name[64];
        snprintf(name, sizeof name, "shard-%u.faiss", s);
        if ((rc = add_file_entry(files, b->tmp, name, err))) goto fail;
        snprintf(name, sizeof name, "shard-%u.ids", s);
        if ((rc = add_file_entry(files, b->tmp, name, err))) goto fail;
    }
    for (size_t i = 0; i < b->nfiles; i++)
        if ((rc = add_file_entry(files, b->tmp, b->files[i], err))) goto fail;

    char mpath[PATH_MAX + 32];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", b->tmp);
    if (json_object_to_file_ext(mpath, root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED) != 0) {
        rc = rp_errorf(err, RP_EIO, "%s: write: %s", mpath, json_util_get_last_err());
        goto fail;
    }
    if ((rc = idx_fsync_tree(b->tmp, err))) goto fail;
    if ((rc = idx_publish_dir(b->tmp, b->out_path, replace, err))) goto fail;

    rep->n_items = b->n;
    rep->n_shards = ns;
    snprintf(rep->factory, sizeof rep->factory, "%s", factory);
    json_object_put(root);
    free(perm);
    free(rows);
    free(tq_owned);
    builder_free(b);
    return RP_OK;
fail:
    if (root) json_object_put(root);
    free(perm);
    free(rows);
    free(tq_owned);
    idx_builder_abort(b);
    return rc;
}
