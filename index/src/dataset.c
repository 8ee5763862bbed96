/* The DATA_DIR format (see dataset_int.h): writing it, and loading it into memory. */
#include "dataset_int.h"
#include "idx/fsutil.h"

#include "bundle_int.h" /* idx__sha256_file */

#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- byte order helpers ---- */

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void put_be64(unsigned char *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static unsigned char *put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
    return p + n;
}

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int lmdb_fail(rp_error *err, int rc, const char *dir, const char *what)
{
    rc = idx_write_errno(dir, rc);
    if (rc == MDB_MAP_FULL)
        return rp_errorf(err, RP_EFULL, "%s: %s: the LMDB map is full (%s)", dir, what,
                         mdb_strerror(rc));
    if (rc == ENOSPC)
        return rp_errorf(err, RP_EFULL, "%s: %s: %s", dir, what, strerror(rc));
    return rp_errorf(err, RP_ELMDB, "%s: %s: %s", dir, what, mdb_strerror(rc));
}

static const char *const DBS[] = {"meta", "users", "user_ext", "items", "item_ext",
                                  "categories", "tags"};
enum { DB_META, DB_USERS, DB_USER_EXT, DB_ITEMS, DB_ITEM_EXT, DB_CATS, DB_TAGS, NDB };

/* ---- writer ---- */

static int put(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t kn, const void *v, size_t vn,
               unsigned flags)
{
    MDB_val key = {kn, (void *)k}, val = {vn, (void *)v};
    return mdb_put(txn, dbi, &key, &val, flags);
}

static int put_meta(MDB_txn *txn, MDB_dbi dbi, const char *k, const char *v)
{
    return put(txn, dbi, k, strlen(k), v, strlen(v), 0);
}

static int put_meta_u64(MDB_txn *txn, MDB_dbi dbi, const char *k, uint64_t v)
{
    char b[32];
    snprintf(b, sizeof b, "%" PRIu64, v);
    return put_meta(txn, dbi, k, b);
}

int idx__dataset_write(const char *dir, const idx_dataset *ds, const char *const *meta,
                       size_t nmeta, rp_error *err)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi[NDB];
    unsigned char *rec = NULL;
    size_t rec_cap = 0;
    int rc, ret = RP_OK;
    const char *what = "create environment";

    /* The map is only address space (the file grows with what is written): size it
     * generously from the content. */
    uint64_t raw = ds->n_events * (uint64_t)IDX__EVENT_BYTES + (uint64_t)ds->n_users * 64 +
                   (uint64_t)ds->n_items * 96;
    for (uint32_t i = 0; i < ds->n_items; i++) raw += strlen(ds->titles[i]);
    if (ds->n_items) raw += (uint64_t)ds->item_cat_off[ds->n_items] * 2;
    if (ds->n_tags && ds->n_items) raw += (uint64_t)ds->item_tag_off[ds->n_items] * 4;
    size_t mapsize = (size_t)(1ull << 30) + (size_t)(raw * 3) + (size_t)ds->n_users * 8192;

    if ((rc = mdb_env_create(&env))) goto lmdb_err;
    what = "configure environment";
    if ((rc = mdb_env_set_maxdbs(env, NDB))) goto lmdb_err;
    if ((rc = mdb_env_set_mapsize(env, mapsize))) goto lmdb_err;
    what = "open environment";
    /* One writer into a private temporary directory: no lock file, and one sync at the
     * end (idx_fsync_tree) instead of one per commit. */
    if ((rc = mdb_env_open(env, dir, MDB_NOLOCK | MDB_NOSYNC, 0644))) goto lmdb_err;
    what = "begin transaction";
    if ((rc = mdb_txn_begin(env, NULL, 0, &txn))) goto lmdb_err;
    what = "create databases";
    for (int d = 0; d < NDB; d++)
        if ((rc = mdb_dbi_open(txn, DBS[d], MDB_CREATE, &dbi[d]))) goto lmdb_err;

    what = "write meta";
    if ((rc = put_meta(txn, dbi[DB_META], "format", IDX__DATASET_FORMAT))) goto lmdb_err;
    if ((rc = put_meta_u64(txn, dbi[DB_META], "version", IDX__DATASET_VERSION))) goto lmdb_err;
    if ((rc = put_meta_u64(txn, dbi[DB_META], "n_users", ds->n_users))) goto lmdb_err;
    if ((rc = put_meta_u64(txn, dbi[DB_META], "n_items", ds->n_items))) goto lmdb_err;
    if ((rc = put_meta_u64(txn, dbi[DB_META], "n_events", ds->n_events))) goto lmdb_err;
    if ((rc = put_meta_u64(txn, dbi[DB_META], "n_categories", ds->n_categories))) goto lmdb_err;
    if ((rc = put_meta_u64(txn, dbi[DB_META], "n_tags", ds->n_tags))) goto lmdb_err;
    for (size_t m = 0; m + 1 < nmeta * 2; m += 2)
        if ((rc = put_meta(txn, dbi[DB_META], meta[m], meta[m + 1]))) goto lmdb_err;

    unsigned char kb[8], vb[8];
    what = "write users";
    for (uint32_t u = 0; u < ds->n_users; u++) {
        uint64_t n = ds->user_off[u + 1] - ds->user_off[u];
        if (n > UINT32_MAX) {
            ret = rp_errorf(err, RP_ETOOBIG, "%s: user %" PRIu64 " has %" PRIu64
                            " events (limit 4294967295)", dir, ds->user_ids[u], n);
            goto cleanup;
        }
        size_t need = 12 + (size_t)n * IDX__EVENT_BYTES;
        if (need > rec_cap) {
            size_t cap = rec_cap ? rec_cap : 4096;
            while (cap < need) cap *= 2;
            unsigned char *r = realloc(rec, cap);
            if (!r) {
                ret = rp_errorf(err, RP_ENOMEM, "%s: out of memory", dir);
                goto cleanup;
            }
            rec = r;
            rec_cap = cap;
        }
        unsigned char *p = put_le(rec, ds->user_ids[u], 8);
        p = put_le(p, n, 4);
        for (uint64_t e = ds->user_off[u]; e < ds->user_off[u + 1]; e++) {
            const idx_event *ev = &ds->events[e];
            p = put_le(p, ev->item, 4);
            p = put_le(p, ev->type, 1);
            p = put_le(p, f2u(ev->value), 4);
            p = put_le(p, (uint64_t)ev->ts, 8);
        }
        put_be32(kb, u);
        if ((rc = put(txn, dbi[DB_USERS], kb, 4, rec, (size_t)(p - rec), MDB_APPEND)))
            goto lmdb_err;
        put_be64(kb, ds->user_ids[u]);
        put_le(vb, u, 4);
        if ((rc = put(txn, dbi[DB_USER_EXT], kb, 8, vb, 4, MDB_APPEND))) goto lmdb_err;
    }

    what = "write items";
    for (uint32_t i = 0; i < ds->n_items; i++) {
        uint32_t nc = ds->item_cat_off[i + 1] - ds->item_cat_off[i];
        uint32_t nt = ds->n_tags ? ds->item_tag_off[i + 1] - ds->item_tag_off[i] : 0;
        size_t tl = strlen(ds->titles[i]);
        if (nc > UINT16_MAX) {
            ret = rp_errorf(err, RP_ETOOBIG, "%s: item %" PRIu64 " has %u categories (limit 65535)",
                            dir, ds->item_ids[i], nc);
            goto cleanup;
        }
        size_t need = 27 + (size_t)nc * 2 + (size_t)nt * 4 + tl;
        if (need > rec_cap) {
            size_t cap = rec_cap ? rec_cap : 4096;
            while (cap < need) cap *= 2;
            unsigned char *r = realloc(rec, cap);
            if (!r) {
                ret = rp_errorf(err, RP_ENOMEM, "%s: out of memory", dir);
                goto cleanup;
            }
            rec = r;
            rec_cap = cap;
        }
        unsigned char *p = put_le(rec, ds->item_ids[i], 8);
        p = put_le(p, (uint64_t)ds->item_created[i], 8);
        p = put_le(p, ds->item_in_catalogue[i], 1);
        p = put_le(p, nc, 2);
        p = put_le(p, nt, 4);
        p = put_le(p, tl, 4);
        for (uint32_t c = ds->item_cat_off[i]; c < ds->item_cat_off[i + 1]; c++)
            p = put_le(p, ds->item_cats[c], 2);
        for (uint32_t t = 0; t < nt; t++) p = put_le(p, ds->item_tags[ds->item_tag_off[i] + t], 4);
        memcpy(p, ds->titles[i], tl);
        p += tl;
        put_be32(kb, i);
        if ((rc = put(txn, dbi[DB_ITEMS], kb, 4, rec, (size_t)(p - rec), MDB_APPEND)))
            goto lmdb_err;
        put_be64(kb, ds->item_ids[i]);
        put_le(vb, i, 4);
        if ((rc = put(txn, dbi[DB_ITEM_EXT], kb, 8, vb, 4, MDB_APPEND))) goto lmdb_err;
    }

    what = "write categories";
    for (uint32_t c = 0; c < ds->n_categories; c++) {
        put_be32(kb, c);
        const char *s = ds->category_names[c];
        if ((rc = put(txn, dbi[DB_CATS], kb, 4, s, strlen(s), MDB_APPEND))) goto lmdb_err;
    }
    what = "write tags";
    for (uint32_t t = 0; t < ds->n_tags; t++) {
        put_be32(kb, t);
        const char *s = ds->tag_names[t];
        if ((rc = put(txn, dbi[DB_TAGS], kb, 4, s, strlen(s), MDB_APPEND))) goto lmdb_err;
    }
    what = "commit";
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc) goto lmdb_err;
    what = "sync";
    if ((rc = mdb_env_sync(env, 1))) goto lmdb_err;
    goto cleanup;

lmdb_err:
    ret = lmdb_fail(err, rc, dir, what);
cleanup:
    if (txn) mdb_txn_abort(txn);
    if (env) mdb_env_close(env);
    free(rec);
    return ret;
}

/* ---- checksums ---- */

int idx__dataset_write_sums(const char *dir, const char *const *files, size_t n, rp_error *err)
{
    char path[4096], hex[65];
    snprintf(path, sizeof path, "%s/%s", dir, IDX__DATASET_SUMS);
    FILE *f = fopen(path, "w");
    if (!f) return rp_errorf(err, RP_EIO, "%s: %s", path, strerror(errno));
    int rc = RP_OK;
    for (size_t i = 0; i < n && rc == RP_OK; i++) {
        char fp[4096];
        snprintf(fp, sizeof fp, "%s/%s", dir, files[i]);
        uint64_t size;
        if ((rc = idx__sha256_file(fp, hex, &size, err))) break;
        if (fprintf(f, "%s  %s\n", hex, files[i]) < 0)
            rc = rp_errorf(err, RP_EIO, "%s: write: %s", path, strerror(errno));
    }
    if (fclose(f) != 0 && rc == RP_OK)
        rc = rp_errorf(err, errno == ENOSPC ? RP_EFULL : RP_EIO, "%s: %s", path, strerror(errno));
    return rc;
}

/* Checks the files of dir's SHA256SUMS: all of them, or only `only` when not NULL. */
static int check_sums(const char *dir, const char *only, rp_error *err)
{
    char path[4096], line[4200];
    snprintf(path, sizeof path, "%s/%s", dir, IDX__DATASET_SUMS);
    FILE *f = fopen(path, "r");
    if (!f)
        return rp_errorf(err, RP_ECORRUPT, "%s: no %s (an incomplete dataset, or one written "
                         "by an older recpipe: re-import it)", dir, IDX__DATASET_SUMS);
    int rc = RP_OK, found = 0, ln = 0;
    while (rc == RP_OK && fgets(line, sizeof line, f)) {
        ln++;
        char want[65], name[256];
        if (sscanf(line, "%64[0-9a-f]  %255[^\n]", want, name) != 2 || strlen(want) != 64 ||
            strchr(name, '/')) {
            rc = rp_errorf(err, RP_ECORRUPT, "%s:%d: malformed line", path, ln);
            break;
        }
        if (only && strcmp(name, only) != 0) continue;
        found++;
        char fp[4096], got[65];
        snprintf(fp, sizeof fp, "%s/%s", dir, name);
        rc = idx__sha256_file(fp, got, NULL, err);
        if (rc == RP_ENOENT) {
            rc = rp_errorf(err, RP_ECORRUPT, "%s: missing (listed in %s)", fp, IDX__DATASET_SUMS);
        } else if (rc == RP_OK && strcmp(got, want) != 0) {
            rc = rp_errorf(err, RP_ECORRUPT, "%s: checksum mismatch (the dataset is corrupt: "
                           "re-import it)", fp);
        }
    }
    fclose(f);
    if (rc == RP_OK && only && !found)
        rc = rp_errorf(err, RP_ECORRUPT, "%s: %s does not list %s", dir, IDX__DATASET_SUMS, only);
    return rc;
}

int idx_dataset_verify(const char *dir, rp_error *err)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return rp_errorf(err, RP_ENOENT, "%s: no dataset there", dir);
    return check_sums(dir, NULL, err);
}

/* ---- reader ---- */

typedef struct ds_impl {
    idx_dataset pub; /* first: the public pointer is the impl pointer */
    uint64_t *user_ids, *item_ids, *user_off;
    idx_event *events;
    char **titles, *title_blob;
    uint32_t *item_cat_off;
    uint16_t *item_cats;
    char **cat_names, *cat_blob;
    int64_t *created;
    uint8_t *in_cat;
    uint32_t *tag_off, *tags;
    char **tag_names, *tag_blob;
} ds_impl;

void idx_dataset_close(idx_dataset *pub)
{
    if (!pub) return;
    ds_impl *d = (ds_impl *)pub;
    free(d->user_ids);
    free(d->item_ids);
    free(d->user_off);
    free(d->events);
    free(d->titles);
    free(d->title_blob);
    free(d->item_cat_off);
    free(d->item_cats);
    free(d->cat_names);
    free(d->cat_blob);
    free(d->created);
    free(d->in_cat);
    free(d->tag_off);
    free(d->tags);
    free(d->tag_names);
    free(d->tag_blob);
    free(d);
}

static int meta_u64(MDB_txn *txn, MDB_dbi dbi, const char *dir, const char *key, uint64_t max,
                    uint64_t *out, rp_error *err)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return rp_errorf(err, RP_ECORRUPT, "%s: dataset meta has no '%s'", dir, key);
    if (rc) return lmdb_fail(err, rc, dir, "read meta");
    char b[32];
    if (v.mv_size == 0 || v.mv_size >= sizeof b) goto bad;
    memcpy(b, v.mv_data, v.mv_size);
    b[v.mv_size] = '\0';
    char *end;
    errno = 0;
    unsigned long long x = strtoull(b, &end, 10);
    if (errno || *end || b[0] == '-' || x > max) goto bad;
    *out = x;
    return RP_OK;
bad:
    return rp_errorf(err, RP_ECORRUPT, "%s: dataset meta '%s' is not a valid count", dir, key);
}

/* Reads the string database db (u32be index → text) of n entries into names/blob. */
static int load_names(MDB_txn *txn, MDB_dbi dbi, uint32_t n, const char *dir, const char *what,
                      char ***names, char **blob, rp_error *err)
{
    MDB_cursor *cur = NULL;
    size_t total = 0, used = 0;
    uint32_t count = 0;
    size_t *off = NULL;
    int rc, ret = RP_OK;
    MDB_val k, v;
    if ((rc = mdb_cursor_open(txn, dbi, &cur))) return lmdb_fail(err, rc, dir, what);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        total += v.mv_size + 1;
    *names = calloc(n ? n : 1, sizeof **names);
    *blob = malloc(total ? total : 1);
    off = malloc((n ? n : 1) * sizeof *off);
    if (!*names || !*blob || !off) {
        ret = rp_errorf(err, RP_ENOMEM, "%s: out of memory loading %s", dir, what);
        goto cleanup;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 4 || get_be32(k.mv_data) != count || count >= n) {
            ret = rp_errorf(err, RP_ECORRUPT, "%s: %s: entry %u out of sequence", dir, what, count);
            goto cleanup;
        }
        off[count++] = used;
        memcpy(*blob + used, v.mv_data, v.mv_size);
        used += v.mv_size;
        (*blob)[used++] = '\0';
    }
    if (rc != MDB_NOTFOUND) {
        ret = lmdb_fail(err, rc, dir, what);
        goto cleanup;
    }
    if (count != n) {
        ret = rp_errorf(err, RP_ECORRUPT, "%s: %s: %u entries, meta says %u", dir, what, count, n);
        goto cleanup;
    }
    for (uint32_t i = 0; i < n; i++) (*names)[i] = *blob + off[i];
cleanup:
    free(off);
    mdb_cursor_close(cur);
    return ret;
}

int idx_dataset_open(const char *dir, idx_dataset **out, rp_error *err)
{
    *out = NULL;
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_dbi dbi[NDB];
    ds_impl *d = NULL;
    int rc, ret = RP_OK;
    const char *what = "open";
    char path[4096];
    struct stat st;

    if (stat(dir, &st) != 0)
        return rp_errorf(err, RP_ENOENT, "%s: no dataset there (%s)", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return rp_errorf(err, RP_ENOENT, "%s: not a dataset directory", dir);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (stat(path, &st) != 0)
        return rp_errorf(err, RP_ENOENT, "%s: no dataset there (no data.mdb; run recpipe import)",
                         dir);

    /* LMDB trusts its pages: check the bytes before handing them to it */
    if ((ret = check_sums(dir, "data.mdb", err))) return ret;
    d = calloc(1, sizeof *d);
    if (!d) return rp_errorf(err, RP_ENOMEM, "%s: out of memory", dir);
    if ((rc = mdb_env_create(&env))) goto lmdb_err;
    if ((rc = mdb_env_set_maxdbs(env, NDB))) goto lmdb_err;
    /* A dataset is immutable once published: read it without a lock file, so that it
     * may sit on a read-only file system. */
    if ((rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK, 0644))) goto lmdb_err;
    what = "begin transaction";
    if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))) goto lmdb_err;
    for (int i = 0; i < NDB; i++) {
        rc = mdb_dbi_open(txn, DBS[i], 0, &dbi[i]);
        if (rc == MDB_NOTFOUND) {
            ret = rp_errorf(err, RP_ECORRUPT, "%s: not a recpipe dataset (no '%s' database)", dir,
                            DBS[i]);
            goto cleanup;
        }
        what = "open database";
        if (rc) goto lmdb_err;
    }

    {
        MDB_val k = {6, "format"}, v;
        rc = mdb_get(txn, dbi[DB_META], &k, &v);
        if (rc || v.mv_size != strlen(IDX__DATASET_FORMAT) ||
            memcmp(v.mv_data, IDX__DATASET_FORMAT, v.mv_size) != 0) {
            ret = rp_errorf(err, RP_ECORRUPT, "%s: not a recpipe dataset (meta 'format')", dir);
            goto cleanup;
        }
    }
    uint64_t version, nu, ni, ne, nc, nt;
    if ((ret = meta_u64(txn, dbi[DB_META], dir, "version", UINT32_MAX, &version, err)))
        goto cleanup;
    if (version != IDX__DATASET_VERSION) {
        ret = rp_errorf(err, RP_EVERSION, "%s: dataset format version %" PRIu64
                        " (this recpipe reads version %d; re-import it)", dir, version,
                        IDX__DATASET_VERSION);
        goto cleanup;
    }
    if ((ret = meta_u64(txn, dbi[DB_META], dir, "n_users", UINT32_MAX - 1, &nu, err)) ||
        (ret = meta_u64(txn, dbi[DB_META], dir, "n_items", UINT32_MAX - 1, &ni, err)) ||
        (ret = meta_u64(txn, dbi[DB_META], dir, "n_events", UINT64_MAX / 64, &ne, err)) ||
        (ret = meta_u64(txn, dbi[DB_META], dir, "n_categories", UINT16_MAX, &nc, err)) ||
        (ret = meta_u64(txn, dbi[DB_META], dir, "n_tags", UINT32_MAX - 1, &nt, err)))
        goto cleanup;

    d->user_ids = malloc((nu ? nu : 1) * sizeof *d->user_ids);
    d->user_off = malloc((nu + 1) * sizeof *d->user_off);
    d->events = malloc((ne ? ne : 1) * sizeof *d->events);
    d->item_ids = malloc((ni ? ni : 1) * sizeof *d->item_ids);
    d->titles = malloc((ni ? ni : 1) * sizeof *d->titles);
    d->item_cat_off = malloc((ni + 1) * sizeof *d->item_cat_off);
    d->created = malloc((ni ? ni : 1) * sizeof *d->created);
    d->in_cat = malloc(ni ? ni : 1);
    d->tag_off = calloc(ni + 1, sizeof *d->tag_off);
    if (!d->user_ids || !d->user_off || !d->events || !d->item_ids || !d->titles ||
        !d->item_cat_off || !d->created || !d->in_cat || !d->tag_off) {
        ret = rp_errorf(err, RP_ENOMEM, "%s: out of memory for %" PRIu64 " events", dir, ne);
        goto cleanup;
    }

    /* users */
    what = "read users";
    MDB_val k, v;
    uint64_t e = 0;
    uint32_t u = 0;
    if ((rc = mdb_cursor_open(txn, dbi[DB_USERS], &cur))) goto lmdb_err;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), u++) {
        const unsigned char *p = v.mv_data;
        if (k.mv_size != 4 || get_be32(k.mv_data) != u || u >= nu || v.mv_size < 12) {
            ret = rp_errorf(err, RP_ECORRUPT, "%s: users: record %u is malformed", dir, u);
            goto cleanup;
        }
        d->user_ids[u] = get_le(p, 8);
        uint64_t n = get_le(p + 8, 4);
        if (v.mv_size != 12 + n * IDX__EVENT_BYTES || e + n > ne ||
            (u > 0 && d->user_ids[u] <= d->user_ids[u - 1])) {
            ret = rp_errorf(err, RP_ECORRUPT, "%s: users: record %u is malformed", dir, u);
            goto cleanup;
        }
        d->user_off[u] = e;
        p += 12;
        for (uint64_t j = 0; j < n; j++, e++, p += IDX__EVENT_BYTES) {
            idx_event *ev = &d->events[e];
            ev->item = (uint32_t)get_le(p, 4);
            ev->type = p[4];
            ev->value = u2f((uint32_t)get_le(p + 5, 4));
            ev->ts = (int64_t)get_le(p + 9, 8);
            if (ev->item >= ni) {
                ret = rp_errorf(err, RP_ECORRUPT, "%s: users: user %u names item %u of %" PRIu64,
                                dir, u, ev->item, ni);
                goto cleanup;
            }
        }
    }
    if (rc != MDB_NOTFOUND) goto lmdb_err;
    if (u != nu || e != ne) {
        ret = rp_errorf(err, RP_ECORRUPT, "%s: %u users with %" PRIu64 " events, meta says %" PRIu64
                        " / %" PRIu64, dir, u, e, nu, ne);
        goto cleanup;
    }
    d->user_off[nu] = ne;
    mdb_cursor_close(cur);
    cur = NULL;

    /* items: two passes (sizes, then copy) so that titles and category lists each take
     * one allocation */
    what = "read items";
    size_t title_bytes = 0;
    uint64_t ncats_total = 0, ntags_total = 0;
    uint32_t i = 0;
    if ((rc = mdb_cursor_open(txn, dbi[DB_ITEMS], &cur))) goto lmdb_err;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), i++) {
        const unsigned char *p = v.mv_data;
        if (k.mv_size != 4 || get_be32(k.mv_data) != i || i >= ni || v.mv_size < 27) {
            ret = rp_errorf(err, RP_ECORRUPT, "%s: items: record %u is malformed", dir, i);
            goto cleanup;
        }
        uint64_t c = get_le(p + 17, 2), t = get_le(p + 19, 4), tl = get_le(p + 23, 4);
        if (v.mv_size != 27 + c * 2 + t * 4 + tl) {
            ret = rp_errorf(err, RP_ECORRUPT, "%s: items: record %u has a bad length", dir, i);
            goto cleanup;
        }
        title_bytes += tl + 1;
        ncats_total += c;
        ntags_total += t;
    }
    if (rc != MDB_NOTFOUND) goto lmdb_err;
    if (i != ni) {
        ret = rp_errorf(err, RP_ECORRUPT, "%s: %u items, meta says %" PRIu64, dir, i, ni);
        goto cleanup;
    }
    if (ncats_total > UINT32_MAX || ntags_total > UINT32_MAX) {
        ret = rp_errorf(err, RP_ECORRUPT, "%s: items: too many category or tag links", dir);
        goto cleanup;
    }
    d->title_blob = malloc(title_bytes ? title_bytes : 1);
    d->item_cats = malloc((ncats_total ? ncats_total : 1) * sizeof *d->item_cats);
    d->tags = malloc((ntags_total ? ntags_total : 1) * sizeof *d->tags);
    if (!d->title_blob || !d->item_cats || !d->tags) {
        ret = rp_errorf(err, RP_ENOMEM, "%s: out of memory for %" PRIu64 " items", dir, ni);
        goto cleanup;
    }
    size_t tpos = 0;
    uint32_t cpos = 0, gpos = 0;
    i = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), i++) {
        const unsigned char *p = v.mv_data;
        if (i >= ni) {
            ret = rp_errorf(err, RP_ECORRUPT, "%s: items changed while reading", dir);
            goto cleanup;
        }
        d->item_ids[i] = get_le(p, 8);
        d->created[i] = (int64_t)get_le(p + 8, 8);
        d->in_cat[i] = p[16];
        uint32_t c = (uint32_t)get_le(p + 17, 2), t = (uint32_t)get_le(p + 19, 4),
                 tl = (uint32_t)get_le(p + 23, 4);
        if (i > 0 && d->item_ids[i] <= d->item_ids[i - 1]) {
            ret = rp_errorf(err, RP_ECORRUPT, "%s: items: ids not ascending at %u", dir, i);
            goto cleanup;
        }
        p += 27;
        d->item_cat_off[i] = cpos;
        for (uint32_t j = 0; j < c; j++, p += 2) {
            d->item_cats[cpos] = (uint16_t)get_le(p, 2);
            if (d->item_cats[cpos++] >= nc) {
                ret = rp_errorf(err, RP_ECORRUPT, "%s: items: item %u names category %u of %"
                                PRIu64, dir, i, d->item_cats[cpos - 1], nc);
                goto cleanup;
            }
        }
        d->tag_off[i] = gpos;
        for (uint32_t j = 0; j < t; j++, p += 4) {
            d->tags[gpos] = (uint32_t)get_le(p, 4);
            if (d->tags[gpos++] >= nt) {
                ret = rp_errorf(err, RP_ECORRUPT, "%s: items: item %u names tag %u of %" PRIu64,
                                dir, i, d->tags[gpos - 1], nt);
                goto cleanup;
            }
        }
        memcpy(d->title_blob + tpos, p, tl);
        d->titles[i] = d->title_blob + tpos;
        tpos += tl;
        d->title_blob[tpos++] = '\0';
    }
    if (rc != MDB_NOTFOUND) goto lmdb_err;
    d->item_cat_off[ni] = cpos;
    d->tag_off[ni] = gpos;
    mdb_cursor_close(cur);
    cur = NULL;

    if ((ret = load_names(txn, dbi[DB_CATS], (uint32_t)nc, dir, "categories", &d->cat_names,
                          &d->cat_blob, err)) ||
        (ret = load_names(txn, dbi[DB_TAGS], (uint32_t)nt, dir, "tags", &d->tag_names,
                          &d->tag_blob, err)))
        goto cleanup;

    idx_dataset *p = &d->pub;
    p->n_users = (uint32_t)nu;
    p->n_items = (uint32_t)ni;
    p->n_categories = (uint32_t)nc;
    p->n_events = ne;
    p->user_ids = d->user_ids;
    p->item_ids = d->item_ids;
    p->user_off = d->user_off;
    p->events = d->events;
    p->titles = (const char *const *)d->titles;
    p->item_cat_off = d->item_cat_off;
    p->item_cats = d->item_cats;
    p->category_names = (const char *const *)d->cat_names;
    p->item_created = d->created;
    p->item_in_catalogue = d->in_cat;
    p->n_tags = (uint32_t)nt;
    p->item_tag_off = d->tag_off;
    p->item_tags = d->tags;
    p->tag_names = (const char *const *)d->tag_names;
    goto cleanup;

lmdb_err:
    ret = lmdb_fail(err, rc, dir, what);
cleanup:
    if (cur) mdb_cursor_close(cur);
    if (txn) mdb_txn_abort(txn);
    if (env) mdb_env_close(env);
    if (ret != RP_OK) {
        idx_dataset_close(&d->pub);
        return ret;
    }
    *out = &d->pub;
    return RP_OK;
}

bool idx_dataset_find_user(const idx_dataset *ds, uint64_t id, uint32_t *u)
{
    size_t lo = 0, hi = ds->n_users;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ds->user_ids[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    if (lo < ds->n_users && ds->user_ids[lo] == id) {
        if (u) *u = (uint32_t)lo;
        return true;
    }
    return false;
}

bool idx_dataset_find_item(const idx_dataset *ds, uint64_t id, uint32_t *i)
{
    size_t lo = 0, hi = ds->n_items;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ds->item_ids[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    if (lo < ds->n_items && ds->item_ids[lo] == id) {
        if (i) *i = (uint32_t)lo;
        return true;
    }
    return false;
}

bool idx_dataset_find_category(const idx_dataset *ds, const char *name, uint16_t *c)
{
    for (uint32_t k = 0; k < ds->n_categories; k++) {
        if (!strcmp(ds->category_names[k], name)) {
            if (c) *c = (uint16_t)k;
            return true;
        }
    }
    return false;
}
