/* Bundles: manifest, checksums, open/verify, reference counting, search helpers. */
#include "bundle_int.h"
#include "idx/fsutil.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

uint32_t idx_shard_of(uint64_t item_id, uint32_t n_shards)
{
    if (n_shards <= 1) return 0;
    uint64_t z = item_id + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (uint32_t)(z % n_shards);
}

int idx__sha256_file(const char *path, char hex[65], uint64_t *size, rp_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return rp_errorf(err, errno == ENOENT ? RP_ENOENT : RP_EIO, "%s: %s", path,
                         strerror(errno));
    int rc = RP_OK;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 20);
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        rc = rp_errorf(err, RP_ENOMEM, "%s: cannot start SHA-256", path);
        goto out;
    }
    uint64_t total = 0;
    size_t got;
    while ((got = fread(buf, 1, 1 << 20, f)) > 0) {
        EVP_DigestUpdate(ctx, buf, got);
        total += got;
    }
    if (ferror(f)) {
        rc = rp_errorf(err, RP_EIO, "%s: read: %s", path, strerror(errno));
        goto out;
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    if (size) *size = total;
out:
    free(buf);
    EVP_MD_CTX_free(ctx);
    fclose(f);
    return rc;
}

/* ---- the manifest ---- */

struct idx_bundle {
    atomic_int refs;
    char path[PATH_MAX];
    idx_manifest m;
    json_object *root; /* owns the manifest's strings */
    idx_file_entry *files;
    uint64_t *shard_items;
    char *training_json, *evaluation_json;
    idx_itemstore *items;
    idx_ann **shards;     /* [n_shards], NULL when not loaded */
    uint64_t **shard_ids; /* [n_shards] */
};

static int field(json_object *o, const char *name, json_type t, json_object **out,
                 const char *mpath, rp_error *err)
{
    *out = NULL;
    if (!json_object_object_get_ex(o, name, out) || !json_object_is_type(*out, t)) {
        /* Numbers may be written as integers or doubles. */
        if (*out && t == json_type_double && json_object_is_type(*out, json_type_int))
            return RP_OK;
        return rp_errorf(err, RP_ECORRUPT, "%s: field \"%s\" is missing or not a %s", mpath,
                         name, json_type_to_name(t));
    }
    return RP_OK;
}

/* Reads and validates manifest.json of the bundle at b->path into b->m. */
static int read_manifest(idx_bundle *b, rp_error *err)
{
    char mpath[PATH_MAX + 16];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", b->path);
    struct stat st;
    if (stat(b->path, &st) != 0 || !S_ISDIR(st.st_mode))
        return rp_errorf(err, RP_ENOENT, "%s: no bundle directory there", b->path);
    if (stat(mpath, &st) != 0)
        return rp_errorf(err, RP_ECORRUPT, "%s: missing (not a bundle, or an unfinished one)",
                         mpath);
    b->root = json_object_from_file(mpath);
    if (!b->root || !json_object_is_type(b->root, json_type_object))
        return rp_errorf(err, RP_ECORRUPT, "%s: not a JSON object: %s", mpath,
                         json_util_get_last_err() ? json_util_get_last_err() : "wrong type");
    json_object *o = b->root, *v, *ix;
    int rc;
    if ((rc = field(o, "format", json_type_int, &v, mpath, err))) return rc;
    int64_t format = json_object_get_int64(v);
    if (format > IDX_BUNDLE_FORMAT)
        return rp_errorf(err, RP_EVERSION,
                         "%s: bundle format %lld is newer than this recpipe reads (up to %d): "
                         "upgrade recpipe or rebuild the bundle",
                         mpath, (long long)format, IDX_BUNDLE_FORMAT);
    if (format < 1)
        return rp_errorf(err, RP_ECORRUPT, "%s: bundle format %lld is not valid", mpath,
                         (long long)format);
    idx_manifest *m = &b->m;
    m->format = (int)format;
    if ((rc = field(o, "version", json_type_string, &v, mpath, err))) return rc;
    m->version = json_object_get_string(v);
    if ((rc = field(o, "created", json_type_int, &v, mpath, err))) return rc;
    m->created = json_object_get_int64(v);
    if ((rc = field(o, "dim", json_type_int, &v, mpath, err))) return rc;
    int64_t dim = json_object_get_int64(v);
    if (dim < 1 || dim > IDX_ANN_MAX_DIM)
        return rp_errorf(err, RP_ECORRUPT, "%s: dim %lld is outside 1..%d", mpath, (long long)dim,
                         IDX_ANN_MAX_DIM);
    m->dim = (uint32_t)dim;
    if ((rc = field(o, "metric", json_type_string, &v, mpath, err))) return rc;
    if (idx_metric_parse(json_object_get_string(v), &m->metric, NULL))
        return rp_errorf(err, RP_ECORRUPT, "%s: metric '%s' is not ip or l2", mpath,
                         json_object_get_string(v));
    if ((rc = field(o, "items", json_type_int, &v, mpath, err))) return rc;
    m->n_items = (uint64_t)json_object_get_int64(v);

    if ((rc = field(o, "shards", json_type_array, &v, mpath, err))) return rc;
    size_t ns = json_object_array_length(v);
    if (ns < 1 || ns > 4096)
        return rp_errorf(err, RP_ECORRUPT, "%s: %zu shards (must be 1..4096)", mpath, ns);
    m->n_shards = (uint32_t)ns;
    b->shard_items = calloc(ns, sizeof *b->shard_items);
    if (!b->shard_items) return rp_errorf(err, RP_ENOMEM, "%s: out of memory", mpath);
    uint64_t sum = 0;
    for (size_t i = 0; i < ns; i++) {
        json_object *s = json_object_array_get_idx(v, i), *c;
        if ((rc = field(s, "items", json_type_int, &c, mpath, err))) return rc;
        b->shard_items[i] = (uint64_t)json_object_get_int64(c);
        sum += b->shard_items[i];
    }
    if (sum != m->n_items)
        return rp_errorf(err, RP_ECORRUPT, "%s: shards hold %llu items, manifest says %llu", mpath,
                         (unsigned long long)sum, (unsigned long long)m->n_items);
    m->shard_items = b->shard_items;

    if ((rc = field(o, "index", json_type_object, &ix, mpath, err))) return rc;
    if ((rc = field(ix, "factory", json_type_string, &v, mpath, err))) return rc;
    m->factory = json_object_get_string(v);
    if ((rc = field(ix, "param", json_type_string, &v, mpath, err))) return rc;
    m->param_name = json_object_get_string(v);
    if ((rc = field(ix, "value", json_type_double, &v, mpath, err))) return rc;
    m->param_value = json_object_get_double(v);
    if ((rc = field(ix, "target_recall", json_type_double, &v, mpath, err))) return rc;
    m->target_recall = json_object_get_double(v);
    if ((rc = field(ix, "recall", json_type_double, &v, mpath, err))) return rc;
    m->recall = json_object_get_double(v);

    const char *names[2] = {"training", "evaluation"};
    char **dst[2] = {&b->training_json, &b->evaluation_json};
    for (int i = 0; i < 2; i++) {
        if (!json_object_object_get_ex(o, names[i], &v)) v = NULL;
        if (v && !json_object_is_type(v, json_type_object))
            return rp_errorf(err, RP_ECORRUPT, "%s: \"%s\" is not an object", mpath, names[i]);
        *dst[i] = strdup(v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN) : "{}");
        if (!*dst[i]) return rp_errorf(err, RP_ENOMEM, "%s: out of memory", mpath);
    }
    m->training_json = b->training_json;
    m->evaluation_json = b->evaluation_json;

    if ((rc = field(o, "files", json_type_array, &v, mpath, err))) return rc;
    size_t nf = json_object_array_length(v);
    b->files = calloc(nf ? nf : 1, sizeof *b->files);
    if (!b->files) return rp_errorf(err, RP_ENOMEM, "%s: out of memory", mpath);
    for (size_t i = 0; i < nf; i++) {
        json_object *f = json_object_array_get_idx(v, i), *x;
        idx_file_entry *e = &b->files[i];
        if ((rc = field(f, "name", json_type_string, &x, mpath, err))) return rc;
        e->name = json_object_get_string(x);
        if (!*e->name || strchr(e->name, '/') || !strcmp(e->name, "..") || !strcmp(e->name, "."))
            return rp_errorf(err, RP_ECORRUPT, "%s: file name '%s' is not a plain name", mpath,
                             e->name);
        if ((rc = field(f, "size", json_type_int, &x, mpath, err))) return rc;
        e->size = (uint64_t)json_object_get_int64(x);
        if ((rc = field(f, "sha256", json_type_string, &x, mpath, err))) return rc;
        e->sha256 = json_object_get_string(x);
        if (strlen(e->sha256) != 64)
            return rp_errorf(err, RP_ECORRUPT, "%s: sha256 of %s is not 64 hex digits", mpath,
                             e->name);
    }
    m->n_files = nf;
    m->files = b->files;
    return RP_OK;
}

static int verify_files(const idx_bundle *b, rp_error *err)
{
    char p[PATH_MAX + 256];
    for (size_t i = 0; i < b->m.n_files; i++) {
        const idx_file_entry *e = &b->m.files[i];
        snprintf(p, sizeof p, "%s/%s", b->path, e->name);
        char hex[65];
        uint64_t size = 0;
        int rc = idx__sha256_file(p, hex, &size, err);
        if (rc == RP_ENOENT)
            return rp_errorf(err, RP_ECORRUPT, "%s: listed in the manifest but missing", p);
        if (rc) return rc;
        if (size != e->size)
            return rp_errorf(err, RP_ECORRUPT, "%s: size %llu differs from the manifest's %llu",
                             p, (unsigned long long)size, (unsigned long long)e->size);
        if (strcmp(hex, e->sha256) != 0)
            return rp_errorf(err, RP_ECORRUPT,
                             "%s: checksum mismatch (sha256 %.16s..., manifest says %.16s...): "
                             "the file is corrupt",
                             p, hex, e->sha256);
    }
    return RP_OK;
}

static int listed(const idx_bundle *b, const char *name)
{
    for (size_t i = 0; i < b->m.n_files; i++)
        if (!strcmp(b->m.files[i].name, name)) return 1;
    return 0;
}

static void bundle_free(idx_bundle *b)
{
    if (!b) return;
    if (b->shards)
        for (uint32_t i = 0; i < b->m.n_shards; i++) idx_ann_close(b->shards[i]);
    if (b->shard_ids)
        for (uint32_t i = 0; i < b->m.n_shards; i++) free(b->shard_ids[i]);
    free(b->shards);
    free(b->shard_ids);
    idx__itemstore_close(b->items);
    free(b->files);
    free(b->shard_items);
    free(b->training_json);
    free(b->evaluation_json);
    if (b->root) json_object_put(b->root);
    free(b);
}

static int alloc_bundle(const char *path, idx_bundle **out, rp_error *err)
{
    idx_bundle *b = calloc(1, sizeof *b);
    if (!b) return rp_errorf(err, RP_ENOMEM, "%s: out of memory", path);
    size_t l = strlen(path);
    while (l > 1 && path[l - 1] == '/') l--;
    if (l >= sizeof b->path) {
        free(b);
        return rp_errorf(err, RP_EINVAL, "%s: path too long", path);
    }
    memcpy(b->path, path, l);
    atomic_init(&b->refs, 1);
    *out = b;
    return RP_OK;
}

int idx_bundle_read_manifest(const char *path, idx_bundle **out, rp_error *err)
{
    *out = NULL;
    idx_bundle *b;
    int rc = alloc_bundle(path, &b, err);
    if (rc) return rc;
    if ((rc = read_manifest(b, err))) {
        bundle_free(b);
        return rc;
    }
    *out = b;
    return RP_OK;
}

int idx_bundle_verify(const char *path, rp_error *err)
{
    idx_bundle *b;
    int rc = alloc_bundle(path, &b, err);
    if (rc) return rc;
    rc = read_manifest(b, err);
    if (!rc) rc = verify_files(b, err);
    bundle_free(b);
    return rc;
}

static int load_shard(idx_bundle *b, uint32_t s, rp_error *err)
{
    char name[64], p[PATH_MAX + 64];
    snprintf(name, sizeof name, "shard-%u.faiss", s);
    if (!listed(b, name))
        return rp_errorf(err, RP_ECORRUPT, "%s/manifest.json: %s is not listed", b->path, name);
    snprintf(p, sizeof p, "%s/%s", b->path, name);
    int rc = idx_ann_read(p, b->m.factory, &b->shards[s], err);
    if (rc) return rc == RP_ENOENT ? RP_ECORRUPT : rc;
    idx_ann *a = b->shards[s];
    if (idx_ann_dim(a) != b->m.dim)
        return rp_errorf(err, RP_ECORRUPT, "%s: dimension %u, the manifest says %u", p,
                         idx_ann_dim(a), b->m.dim);
    if (idx_ann_metric(a) != b->m.metric)
        return rp_errorf(err, RP_ECORRUPT, "%s: metric %s, the manifest says %s", p,
                         idx_metric_name(idx_ann_metric(a)), idx_metric_name(b->m.metric));
    if (idx_ann_ntotal(a) != b->m.shard_items[s])
        return rp_errorf(err, RP_ECORRUPT, "%s: %llu vectors, the manifest says %llu", p,
                         (unsigned long long)idx_ann_ntotal(a),
                         (unsigned long long)b->m.shard_items[s]);
    /* nprobe is stored in the FAISS file; the manifest's tuned value is the one to use. */
    if (b->m.param_name[0] && b->m.param_value >= 1) {
        rc = idx_ann_set_param(a, b->m.param_name, b->m.param_value, err);
        if (rc) return rp_error_prefix(err, "%s", p);
    }
    snprintf(name, sizeof name, "shard-%u.ids", s);
    if (!listed(b, name))
        return rp_errorf(err, RP_ECORRUPT, "%s/manifest.json: %s is not listed", b->path, name);
    snprintf(p, sizeof p, "%s/%s", b->path, name);
    FILE *f = fopen(p, "rb");
    if (!f) return rp_errorf(err, RP_ECORRUPT, "%s: %s", p, strerror(errno));
    size_t n = (size_t)b->m.shard_items[s];
    b->shard_ids[s] = malloc((n ? n : 1) * sizeof(uint64_t));
    size_t got = b->shard_ids[s] ? fread(b->shard_ids[s], 8, n, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (!b->shard_ids[s]) return rp_errorf(err, RP_ENOMEM, "%s: out of memory", p);
    if (got != n || extra)
        return rp_errorf(err, RP_ECORRUPT, "%s: expected %zu ids", p, n);
    return RP_OK;
}

static int open_impl(const char *path, int64_t only_shard, idx_bundle **out, rp_error *err)
{
    *out = NULL;
    idx_bundle *b;
    int rc = alloc_bundle(path, &b, err);
    if (rc) return rc;
    if ((rc = read_manifest(b, err)) || (rc = verify_files(b, err))) goto fail;
    if (only_shard >= (int64_t)b->m.n_shards) {
        rc = rp_errorf(err, RP_EINVAL, "shard %lld: the bundle has %u shards (0..%u)",
                       (long long)only_shard, b->m.n_shards, b->m.n_shards - 1);
        goto fail;
    }
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/%s", b->path, IDX__ITEMS_FILE);
    if (!listed(b, IDX__ITEMS_FILE)) {
        rc = rp_errorf(err, RP_ECORRUPT, "%s/manifest.json: %s is not listed", b->path,
                       IDX__ITEMS_FILE);
        goto fail;
    }
    if ((rc = idx__itemstore_open(p, &b->items, err))) goto fail;
    if (idx_itemstore_dim(b->items) != b->m.dim || idx_itemstore_count(b->items) != b->m.n_items) {
        rc = rp_errorf(err, RP_ECORRUPT, "%s: %llu items of dimension %u, the manifest says %llu of %u",
                       p, (unsigned long long)idx_itemstore_count(b->items),
                       idx_itemstore_dim(b->items), (unsigned long long)b->m.n_items, b->m.dim);
        goto fail;
    }
    b->shards = calloc(b->m.n_shards, sizeof *b->shards);
    b->shard_ids = calloc(b->m.n_shards, sizeof *b->shard_ids);
    if (!b->shards || !b->shard_ids) {
        rc = rp_errorf(err, RP_ENOMEM, "%s: out of memory", b->path);
        goto fail;
    }
    for (uint32_t s = 0; s < b->m.n_shards; s++)
        if ((only_shard < 0 || s == only_shard) && (rc = load_shard(b, s, err))) goto fail;
    *out = b;
    return RP_OK;
fail:
    bundle_free(b);
    return rc;
}

int idx_bundle_open(const char *path, idx_bundle **out, rp_error *err)
{
    return open_impl(path, -1, out, err);
}

int idx_bundle_open_shard(const char *path, uint32_t shard, idx_bundle **out, rp_error *err)
{
    return open_impl(path, shard, out, err);
}

idx_bundle *idx_bundle_acquire(idx_bundle *b)
{
    if (b) atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

void idx_bundle_release(idx_bundle *b)
{
    if (!b) return;
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) bundle_free(b);
}

const idx_manifest *idx_bundle_manifest(const idx_bundle *b)
{
    return &b->m;
}

const char *idx_bundle_path(const idx_bundle *b)
{
    return b->path;
}

idx_itemstore *idx_bundle_items(const idx_bundle *b)
{
    return b->items;
}

idx_ann *idx_bundle_shard(const idx_bundle *b, uint32_t shard)
{
    return shard < b->m.n_shards && b->shards ? b->shards[shard] : NULL;
}

const uint64_t *idx_bundle_shard_ids(const idx_bundle *b, uint32_t shard, size_t *n)
{
    if (shard >= b->m.n_shards || !b->shard_ids || !b->shard_ids[shard]) {
        if (n) *n = 0;
        return NULL;
    }
    if (n) *n = (size_t)b->m.shard_items[shard];
    return b->shard_ids[shard];
}

int idx_bundle_file(const idx_bundle *b, const char *name, char *path, size_t cap,
                    rp_error *err)
{
    if (!listed(b, name))
        return rp_errorf(err, RP_ENOENT, "%s: the bundle has no file '%s'", b->path, name);
    int n = snprintf(path, cap, "%s/%s", b->path, name);
    if (n < 0 || (size_t)n >= cap) return rp_errorf(err, RP_EINVAL, "%s/%s: path too long", b->path, name);
    return RP_OK;
}

int idx_bundle_search(const idx_bundle *b, uint32_t shard, const float *q, size_t k,
                      float *scores, uint64_t *ids, rp_error *err)
{
    idx_ann *a = idx_bundle_shard(b, shard);
    if (!a)
        return rp_errorf(err, RP_EINVAL, "shard %u: not loaded (the bundle has %u shards)", shard,
                         b->m.n_shards);
    int64_t stackbuf[256];
    int64_t *labels = k <= 256 ? stackbuf : malloc(k * sizeof *labels);
    if (!labels) return rp_errorf(err, RP_ENOMEM, "search: out of memory for k=%zu", k);
    int rc = idx_ann_search(a, q, k, scores, labels, err);
    int found = 0;
    if (rc == RP_OK) {
        uint64_t n = b->m.shard_items[shard];
        for (size_t i = 0; i < k; i++) {
            if (labels[i] < 0 || (uint64_t)labels[i] >= n) continue;
            scores[found] = scores[i];
            ids[found++] = b->shard_ids[shard][labels[i]];
        }
    }
    if (labels != stackbuf) free(labels);
    return rc ? rc : found;
}

int idx_bundle_scan(const idx_bundle *b, const float *q, size_t n, const uint64_t *items,
                    size_t k, float *scores, uint64_t *ids, rp_error *err)
{
    if (k == 0) return 0;
    if (!b->items) return rp_errorf(err, RP_EPRECOND, "%s: item store not loaded", b->path);
    float *vecs = malloc((n ? n : 1) * (size_t)b->m.dim * sizeof *vecs);
    int64_t *labels = malloc(k * sizeof *labels);
    int rc = RP_OK;
    if (!vecs || !labels) {
        rc = rp_errorf(err, RP_ENOMEM, "scan: out of memory for %zu items", n);
        goto out;
    }
    if ((rc = idx_itemstore_embeddings(b->items, n, items, vecs, err))) goto out;
    /* Labels are positions in items[]: ids are copied after. */
    size_t found = idx_exact_topk(b->m.metric, b->m.dim, q, n, vecs, NULL, k, scores, labels);
    for (size_t i = 0; i < found; i++) ids[i] = items[labels[i]];
    rc = (int)found;
out:
    free(vecs);
    free(labels);
    return rc;
}
