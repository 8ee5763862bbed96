/* The item store: LMDB, one file (items.mdb), written once by the bundle builder. */
#include "bundle_int.h"
#include "idx/fsutil.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Layout. Sub-databases:
 *   "items" (MDB_INTEGERKEY, uint64 id) → record: rec_head, float[dim], title NUL,
 *           categories (each NUL-terminated, back to back)
 *   "cats"  category name → ascending uint64 item ids
 *   "meta"  "dim" → uint32, "count" → uint64
 * Records are copied out field by field: LMDB aligns values to 2 bytes only.
 */
typedef struct rec_head {
    int64_t created;
    uint64_t popularity;
    uint32_t dim;
    uint16_t n_cats;
    uint16_t title_len;
} rec_head;

struct idx_itemstore {
    MDB_env *env;
    MDB_dbi items, cats;
    uint32_t dim;
    uint64_t count;
};

static int lmdb_fail(rp_error *err, int rc, const char *path, const char *what)
{
    rc = idx_write_errno(path, rc);
    return rp_errorf(err, rc == MDB_MAP_FULL || rc == ENOSPC ? RP_EFULL : RP_ELMDB, "%s: %s: %s",
                     path, what, mdb_strerror(rc));
}

/* ---- string interning ---- */

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int strtab_grow(idx__strtab *t)
{
    uint32_t ns = t->nslots ? t->nslots * 2 : 64;
    uint32_t *slots = calloc(ns, sizeof *slots);
    if (!slots) return -1;
    for (uint32_t i = 0; i < t->n; i++) {
        uint32_t h = fnv1a(t->names[i]) & (ns - 1);
        while (slots[h]) h = (h + 1) & (ns - 1);
        slots[h] = i + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = ns;
    return 0;
}

uint32_t idx__strtab_intern(idx__strtab *t, const char *s)
{
    if ((t->n + 1) * 2 > t->nslots && strtab_grow(t) != 0) return UINT32_MAX;
    uint32_t h = fnv1a(s) & (t->nslots - 1);
    while (t->slots[h]) {
        uint32_t i = t->slots[h] - 1;
        if (!strcmp(t->names[i], s)) return i;
        h = (h + 1) & (t->nslots - 1);
    }
    if (t->n == t->cap) {
        uint32_t nc = t->cap ? t->cap * 2 : 16;
        char **g = realloc(t->names, nc * sizeof *g);
        if (!g) return UINT32_MAX;
        t->names = g;
        t->cap = nc;
    }
    char *copy = strdup(s);
    if (!copy) return UINT32_MAX;
    t->names[t->n] = copy;
    t->slots[h] = t->n + 1;
    return t->n++;
}

void idx__strtab_free(idx__strtab *t)
{
    for (uint32_t i = 0; i < t->n; i++) free(t->names[i]);
    free(t->names);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

/* ---- writer ---- */

typedef struct posting {
    uint64_t *ids;
    size_t n, cap;
} posting;

struct idx__itemstore_writer {
    char path[4096];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi items, cats, meta;
    uint32_t dim;
    uint64_t count, last_id;
    size_t in_txn;
    idx__strtab names;
    posting *post; /* [names.cap] */
    size_t npost;
    unsigned char *buf;
    size_t bufcap;
};

size_t idx__itemstore_record_size(uint32_t dim, size_t title_len, size_t cats_len)
{
    return sizeof(rec_head) + (size_t)dim * 4 + title_len + 1 + cats_len;
}

int idx__itemstore_writer_open(const char *path, uint32_t dim, uint64_t bytes,
                               idx__itemstore_writer **out, rp_error *err)
{
    *out = NULL;
    idx__itemstore_writer *w = calloc(1, sizeof *w);
    if (!w) return rp_errorf(err, RP_ENOMEM, "%s: out of memory", path);
    snprintf(w->path, sizeof w->path, "%s", path);
    w->dim = dim;
    /* B-tree pages, half-full leaves after splits, and the posting lists: 3x plus slack. */
    uint64_t map = bytes * 3 + (64u << 20);
    map = (map + 4095) & ~(uint64_t)4095;
    int rc = mdb_env_create(&w->env);
    if (rc) goto lmdb_err;
    if ((rc = mdb_env_set_maxdbs(w->env, 4)) || (rc = mdb_env_set_mapsize(w->env, map)))
        goto lmdb_err;
    /* One writer and no readers while building: no lock file, no per-commit fsync (the
     * builder fsyncs the whole tree before publishing). */
    rc = mdb_env_open(w->env, path, MDB_NOSUBDIR | MDB_NOLOCK | MDB_NOSYNC | MDB_NOTLS, 0644);
    if (rc) goto lmdb_err;
    if ((rc = mdb_txn_begin(w->env, NULL, 0, &w->txn))) goto lmdb_err;
    if ((rc = mdb_dbi_open(w->txn, "items", MDB_CREATE | MDB_INTEGERKEY, &w->items)) ||
        (rc = mdb_dbi_open(w->txn, "cats", MDB_CREATE, &w->cats)) ||
        (rc = mdb_dbi_open(w->txn, "meta", MDB_CREATE, &w->meta)))
        goto lmdb_err;
    *out = w;
    return RP_OK;
lmdb_err:
    idx__itemstore_writer_abort(w);
    return lmdb_fail(err, rc, path, "create the item store");
}

void idx__itemstore_writer_abort(idx__itemstore_writer *w)
{
    if (!w) return;
    if (w->txn) mdb_txn_abort(w->txn);
    if (w->env) mdb_env_close(w->env);
    for (size_t i = 0; i < w->npost; i++) free(w->post[i].ids);
    free(w->post);
    idx__strtab_free(&w->names);
    free(w->buf);
    free(w);
}

static int posting_add(idx__itemstore_writer *w, uint32_t cat, uint64_t id)
{
    if (cat >= w->npost) {
        size_t n = w->names.cap > cat ? w->names.cap : cat + 1;
        posting *g = realloc(w->post, n * sizeof *g);
        if (!g) return -1;
        memset(g + w->npost, 0, (n - w->npost) * sizeof *g);
        w->post = g;
        w->npost = n;
    }
    posting *p = &w->post[cat];
    if (p->n && p->ids[p->n - 1] == id) return 0; /* category listed twice on one item */
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 16;
        uint64_t *g = realloc(p->ids, nc * sizeof *g);
        if (!g) return -1;
        p->ids = g;
        p->cap = nc;
    }
    p->ids[p->n++] = id;
    return 0;
}

int idx__itemstore_writer_put(idx__itemstore_writer *w, const idx_item *item, const float *vec,
                              rp_error *err)
{
    if (w->count && item->id <= w->last_id)
        return rp_errorf(err, RP_EINVAL, "item store: ids out of order at %llu",
                         (unsigned long long)item->id);
    const char *title = item->title ? item->title : "";
    size_t tl = strlen(title), cl = 0;
    for (size_t i = 0; i < item->n_categories; i++) cl += strlen(item->categories[i]) + 1;
    size_t need = idx__itemstore_record_size(w->dim, tl, cl);
    if (need > w->bufcap) {
        unsigned char *g = realloc(w->buf, need);
        if (!g) return rp_errorf(err, RP_ENOMEM, "item store: out of memory");
        w->buf = g;
        w->bufcap = need;
    }
    rec_head h = {item->created, item->popularity, w->dim, (uint16_t)item->n_categories,
                  (uint16_t)tl};
    unsigned char *p = w->buf;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    memcpy(p, vec, (size_t)w->dim * 4);
    p += (size_t)w->dim * 4;
    memcpy(p, title, tl + 1);
    p += tl + 1;
    for (size_t i = 0; i < item->n_categories; i++) {
        size_t l = strlen(item->categories[i]) + 1;
        memcpy(p, item->categories[i], l);
        p += l;
        uint32_t c = idx__strtab_intern(&w->names, item->categories[i]);
        if (c == UINT32_MAX || posting_add(w, c, item->id) != 0)
            return rp_errorf(err, RP_ENOMEM, "item store: out of memory for categories");
    }
    uint64_t id = item->id;
    MDB_val k = {sizeof id, &id}, v = {need, w->buf};
    int rc = mdb_put(w->txn, w->items, &k, &v, MDB_APPEND);
    if (rc) return lmdb_fail(err, rc, w->path, "write an item");
    w->count++;
    w->last_id = id;
    /* Bounded transactions keep the dirty page list small at 1M items. */
    if (++w->in_txn >= 8192) {
        if ((rc = mdb_txn_commit(w->txn))) {
            w->txn = NULL;
            return lmdb_fail(err, rc, w->path, "commit");
        }
        w->txn = NULL;
        if ((rc = mdb_txn_begin(w->env, NULL, 0, &w->txn))) return lmdb_fail(err, rc, w->path, "begin");
        w->in_txn = 0;
    }
    return RP_OK;
}

int idx__itemstore_writer_finish(idx__itemstore_writer *w, rp_error *err)
{
    int rc;
    for (uint32_t c = 0; c < w->names.n; c++) {
        posting *p = &w->post[c];
        MDB_val k = {strlen(w->names.names[c]), w->names.names[c]};
        MDB_val v = {p->n * sizeof(uint64_t), p->ids};
        if ((rc = mdb_put(w->txn, w->cats, &k, &v, 0))) {
            rc = lmdb_fail(err, rc, w->path, "write a posting list");
            goto fail;
        }
    }
    MDB_val kd = {3, "dim"}, vd = {sizeof w->dim, &w->dim};
    MDB_val kc = {5, "count"}, vc = {sizeof w->count, &w->count};
    if ((rc = mdb_put(w->txn, w->meta, &kd, &vd, 0)) || (rc = mdb_put(w->txn, w->meta, &kc, &vc, 0))) {
        rc = lmdb_fail(err, rc, w->path, "write counts");
        goto fail;
    }
    rc = mdb_txn_commit(w->txn);
    w->txn = NULL;
    if (rc) {
        rc = lmdb_fail(err, rc, w->path, "commit");
        goto fail;
    }
    if ((rc = mdb_env_sync(w->env, 1))) {
        rc = lmdb_fail(err, rc, w->path, "sync");
        goto fail;
    }
    idx__itemstore_writer_abort(w); /* frees; nothing left to abort */
    return RP_OK;
fail:
    idx__itemstore_writer_abort(w);
    return rc;
}

/* ---- reader ---- */

int idx__itemstore_open(const char *path, idx_itemstore **out, rp_error *err)
{
    *out = NULL;
    idx_itemstore *s = calloc(1, sizeof *s);
    if (!s) return rp_errorf(err, RP_ENOMEM, "%s: out of memory", path);
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&s->env);
    if (rc || (rc = mdb_env_set_maxdbs(s->env, 4))) goto lmdb_err;
    /* Published stores never change: read-only, no lock file, any thread. */
    rc = mdb_env_open(s->env, path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0);
    if (rc) goto lmdb_err;
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))) goto lmdb_err;
    MDB_dbi meta;
    if ((rc = mdb_dbi_open(txn, "items", MDB_INTEGERKEY, &s->items)) ||
        (rc = mdb_dbi_open(txn, "cats", 0, &s->cats)) || (rc = mdb_dbi_open(txn, "meta", 0, &meta)))
        goto lmdb_err;
    MDB_val k = {3, "dim"}, v;
    if ((rc = mdb_get(txn, meta, &k, &v)) || v.mv_size != 4) goto corrupt;
    memcpy(&s->dim, v.mv_data, 4);
    k = (MDB_val){5, "count"};
    if ((rc = mdb_get(txn, meta, &k, &v)) || v.mv_size != 8) goto corrupt;
    memcpy(&s->count, v.mv_data, 8);
    /* Committing (not aborting) keeps the DBI handles open for later transactions. */
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc) goto lmdb_err;
    *out = s;
    return RP_OK;
corrupt:
    rc = rp_errorf(err, RP_ECORRUPT, "%s: item store has no dimension/count record", path);
    mdb_txn_abort(txn);
    idx__itemstore_close(s);
    return rc;
lmdb_err:
    if (txn) mdb_txn_abort(txn);
    idx__itemstore_close(s);
    return rp_errorf(err,
                     rc == ENOENT ? RP_ENOENT
                     : rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_NOTFOUND ? RP_ECORRUPT
                                                                                      : RP_ELMDB,
                     "%s: open the item store: %s", path, mdb_strerror(rc));
}

void idx__itemstore_close(idx_itemstore *s)
{
    if (!s) return;
    if (s->env) mdb_env_close(s->env);
    free(s);
}

uint64_t idx_itemstore_count(const idx_itemstore *s)
{
    return s->count;
}

uint32_t idx_itemstore_dim(const idx_itemstore *s)
{
    return s->dim;
}

/* Decodes a record; embedding may be NULL. */
static int decode(const idx_itemstore *s, uint64_t id, const MDB_val *v, idx_item_view *out,
                  float *embedding, rp_error *err)
{
    rec_head h;
    if (v->mv_size < sizeof h) goto bad;
    memcpy(&h, v->mv_data, sizeof h);
    size_t fixed = sizeof h + (size_t)s->dim * 4;
    if (h.dim != s->dim || v->mv_size < fixed + h.title_len + 1) goto bad;
    const char *p = (const char *)v->mv_data;
    if (embedding) memcpy(embedding, p + sizeof h, (size_t)s->dim * 4);
    if (out) {
        out->id = id;
        out->created = h.created;
        out->popularity = h.popularity;
        out->title = p + fixed;
        out->n_categories = h.n_cats;
        out->categories = p + fixed + h.title_len + 1;
    }
    return RP_OK;
bad:
    return rp_errorf(err, RP_ECORRUPT, "item store: record of item %llu is malformed",
                     (unsigned long long)id);
}

int idx_itemstore_get(idx_itemstore *s, uint64_t id, idx_item_view *out, float *embedding,
                      rp_error *err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return lmdb_fail(err, rc, "item store", "begin");
    MDB_val k = {sizeof id, &id}, v;
    rc = mdb_get(txn, s->items, &k, &v);
    if (rc == MDB_NOTFOUND) rc = rp_errorf(err, RP_ENOENT, "item %llu: not in the bundle", (unsigned long long)id);
    else if (rc) rc = lmdb_fail(err, rc, "item store", "get");
    else rc = decode(s, id, &v, out, embedding, err);
    mdb_txn_abort(txn);
    return rc;
}

int idx_itemstore_embeddings(idx_itemstore *s, size_t n, const uint64_t *ids, float *out,
                             rp_error *err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return lmdb_fail(err, rc, "item store", "begin");
    for (size_t i = 0; i < n && rc == RP_OK; i++) {
        uint64_t id = ids[i];
        MDB_val k = {sizeof id, &id}, v;
        int r = mdb_get(txn, s->items, &k, &v);
        if (r == MDB_NOTFOUND)
            rc = rp_errorf(err, RP_ENOENT, "item %llu: not in the bundle", (unsigned long long)id);
        else if (r)
            rc = lmdb_fail(err, r, "item store", "get");
        else
            rc = decode(s, id, &v, NULL, out + i * s->dim, err);
    }
    mdb_txn_abort(txn);
    return rc;
}

int idx_itemstore_category(idx_itemstore *s, const char *category, uint64_t **ids, size_t *n,
                           rp_error *err)
{
    *ids = NULL;
    *n = 0;
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return lmdb_fail(err, rc, "item store", "begin");
    MDB_val k = {strlen(category), (void *)category}, v;
    int r = mdb_get(txn, s->cats, &k, &v);
    if (r == MDB_NOTFOUND || (r == 0 && v.mv_size == 0)) {
        rc = RP_OK;
    } else if (r) {
        rc = lmdb_fail(err, r, "item store", "get a category");
    } else if (v.mv_size % 8) {
        rc = rp_errorf(err, RP_ECORRUPT, "item store: posting list of '%s' is malformed", category);
    } else if (!(*ids = malloc(v.mv_size))) {
        rc = rp_errorf(err, RP_ENOMEM, "category '%s': out of memory", category);
    } else {
        memcpy(*ids, v.mv_data, v.mv_size);
        *n = v.mv_size / 8;
    }
    mdb_txn_abort(txn);
    return rc;
}

int idx_itemstore_categories(idx_itemstore *s, const char ***names, size_t *n, rp_error *err)
{
    *names = NULL;
    *n = 0;
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return lmdb_fail(err, rc, "item store", "begin");
    if ((rc = mdb_cursor_open(txn, s->cats, &cur))) {
        rc = lmdb_fail(err, rc, "item store", "cursor");
        goto out;
    }
    size_t cap = 0;
    MDB_val k, v;
    int r;
    /* Keys are not NUL-terminated in LMDB: copy them into the block after the array. */
    const char **arr = NULL;
    size_t bytes = 0, cnt = 0;
    for (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0; r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        bytes += k.mv_size + 1;
        cnt++;
    }
    cap = cnt;
    arr = malloc(cap * sizeof *arr + bytes + 1);
    if (!arr) {
        rc = rp_errorf(err, RP_ENOMEM, "categories: out of memory");
        goto out;
    }
    char *pool = (char *)(arr + cap);
    size_t i = 0;
    for (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0 && i < cnt; r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        memcpy(pool, k.mv_data, k.mv_size);
        pool[k.mv_size] = '\0';
        arr[i++] = pool;
        pool += k.mv_size + 1;
    }
    *names = arr;
    *n = i;
    rc = RP_OK;
out:
    if (cur) mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

int idx_itemstore_foreach(idx_itemstore *s, idx_item_fn fn, void *ctx, rp_error *err)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    float *emb = malloc((size_t)s->dim * sizeof *emb);
    if (!emb) return rp_errorf(err, RP_ENOMEM, "item store: out of memory");
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        free(emb);
        return lmdb_fail(err, rc, "item store", "begin");
    }
    if ((rc = mdb_cursor_open(txn, s->items, &cur))) {
        rc = lmdb_fail(err, rc, "item store", "cursor");
        goto out;
    }
    MDB_val k, v;
    int r;
    for (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0; r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint64_t id;
        if (k.mv_size != 8) {
            rc = rp_errorf(err, RP_ECORRUPT, "item store: malformed key");
            goto out;
        }
        memcpy(&id, k.mv_data, 8);
        idx_item_view view;
        if ((rc = decode(s, id, &v, &view, emb, err))) goto out;
        if ((rc = fn(ctx, &view, emb))) goto out;
    }
    rc = r == MDB_NOTFOUND ? RP_OK : lmdb_fail(err, r, "item store", "walk");
out:
    if (cur) mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    free(emb);
    return rc;
}
