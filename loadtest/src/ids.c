#include "lt/ids.h"

#include "idx/bundle.h"
#include "idx/dataset.h"

#include <stdlib.h>
#include <string.h>

typedef struct ranked {
    uint64_t id, weight;
} ranked;

/* Heaviest first; ties by id so the order is reproducible. */
static int cmp_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->weight != y->weight) return x->weight < y->weight ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

static uint64_t *ids_of(ranked *r, uint64_t n)
{
    qsort(r, n, sizeof *r, cmp_ranked);
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return NULL;
    for (uint64_t i = 0; i < n; i++) ids[i] = r[i].id;
    return ids;
}

typedef struct walk {
    ranked *r;
    uint64_t n, cap;
} walk;

static int collect(void *ctx, const idx_item_view *item, const float *embedding)
{
    (void)embedding;
    walk *w = ctx;
    if (w->n == w->cap) return RP_ETOOBIG; /* the store grew under us: cannot happen */
    w->r[w->n].id = item->id;
    w->r[w->n].weight = item->popularity;
    w->n++;
    return 0;
}

static int load_bundle(const char *dir, lt_id_source *out, rp_error *err)
{
    idx_bundle *b = NULL;
    walk w = {0};
    int rc = idx_bundle_open(dir, &b, err);
    if (rc) return rc;
    idx_itemstore *st = idx_bundle_items(b);
    w.cap = idx_itemstore_count(st);
    if (w.cap == 0) {
        rc = rp_errorf(err, RP_EINVAL, "--bundle %s: the bundle holds no items", dir);
        goto done;
    }
    w.r = malloc(w.cap * sizeof *w.r);
    if (!w.r) {
        rc = rp_errorf(err, RP_ENOMEM, "--bundle %s: out of memory for %llu items", dir,
                       (unsigned long long)w.cap);
        goto done;
    }
    if ((rc = idx_itemstore_foreach(st, collect, &w, err))) goto done;
    out->items = ids_of(w.r, w.n);
    out->n_items = w.n;
    if (!out->items) rc = rp_errorf(err, RP_ENOMEM, "--bundle %s: out of memory", dir);
done:
    free(w.r);
    idx_bundle_release(b);
    return rc;
}

static int load_dataset(const char *dir, bool want_items, lt_id_source *out, rp_error *err)
{
    idx_dataset *ds = NULL;
    ranked *r = NULL;
    int rc = idx_dataset_open(dir, &ds, err);
    if (rc) return rc;
    if (ds->n_users == 0 || ds->n_items == 0) {
        rc = rp_errorf(err, RP_EINVAL, "--dataset %s: no users or no items", dir);
        goto done;
    }
    size_t n = ds->n_users > ds->n_items ? ds->n_users : ds->n_items;
    r = malloc(n * sizeof *r);
    if (!r) {
        rc = rp_errorf(err, RP_ENOMEM, "--dataset %s: out of memory", dir);
        goto done;
    }
    for (uint32_t u = 0; u < ds->n_users; u++) {
        r[u].id = ds->user_ids[u];
        r[u].weight = ds->user_off[u + 1] - ds->user_off[u];
    }
    if (!(out->users = ids_of(r, ds->n_users))) {
        rc = rp_errorf(err, RP_ENOMEM, "--dataset %s: out of memory", dir);
        goto done;
    }
    out->n_users = ds->n_users;
    if (want_items) {
        for (uint32_t i = 0; i < ds->n_items; i++) {
            r[i].id = ds->item_ids[i];
            r[i].weight = 0;
        }
        for (uint64_t e = 0; e < ds->n_events; e++) r[ds->events[e].item].weight++;
        if (!(out->items = ids_of(r, ds->n_items))) {
            rc = rp_errorf(err, RP_ENOMEM, "--dataset %s: out of memory", dir);
            goto done;
        }
        out->n_items = ds->n_items;
    }
done:
    free(r);
    idx_dataset_close(ds);
    return rc;
}

int lt_ids_load(const char *bundle_dir, const char *dataset_dir, lt_id_source *out,
                rp_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = RP_OK;
    if (bundle_dir && (rc = load_bundle(bundle_dir, out, err))) goto err;
    if (dataset_dir && (rc = load_dataset(dataset_dir, !bundle_dir, out, err))) goto err;
    return RP_OK;
err:
    lt_ids_free(out);
    return rc;
}

void lt_ids_free(lt_id_source *s)
{
    if (!s) return;
    free(s->users);
    free(s->items);
    memset(s, 0, sizeof *s);
}

void lt_ids_apply(const lt_id_source *s, lt_ids *ids)
{
    if (s->users) {
        ids->user_ids = s->users;
        ids->n_users = s->n_users;
    }
    if (s->items) {
        ids->item_ids = s->items;
        ids->n_items = s->n_items;
    }
}
