/* The side index of upserted items and the tombstones (ret/side_index.h). */
#include "ret/side_index.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static void side_free(ret_side *s)
{
    if (!s) return;
    free(s->items);
    free(s->vectors);
    free(s->cats);
    free(s->slots);
    ret_idset_free(&s->hidden);
    ret_idset_free(&s->deleted);
    free(s);
}

ret_side *ret_side_ref(ret_side *s)
{
    if (s) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void ret_side_unref(ret_side *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) side_free(s);
}

int64_t ret_side_find(const ret_side *s, uint64_t id)
{
    if (!s->n) return -1;
    for (uint32_t h = ret__hash64(id) & s->mask;; h = (h + 1) & s->mask) {
        uint32_t v = s->slots[h];
        if (!v) return -1;
        if (s->items[v - 1].id == id) return v - 1;
    }
}

/* Allocates a side index with room for n items, ncats category entries and the given
 * set sizes. */
static int side_alloc(uint32_t dim, uint32_t n, uint32_t ncats, uint32_t nhidden,
                      uint32_t ndeleted, ret_side **out, rp_error *err)
{
    ret_side *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    atomic_init(&s->refs, 1);
    s->dim = dim;
    uint32_t cap = 8;
    while (cap < 2 * (uint64_t)n + 2) cap <<= 1;
    s->mask = cap - 1;
    s->items = calloc(n ? n : 1, sizeof *s->items);
    s->vectors = malloc(sizeof *s->vectors * ((uint64_t)n * dim + 1));
    s->cats = malloc(sizeof *s->cats * (ncats ? ncats : 1));
    s->slots = calloc(cap, sizeof *s->slots);
    if (!s->items || !s->vectors || !s->cats || !s->slots) goto oom;
    if (ret_idset_init(&s->hidden, nhidden, NULL) || ret_idset_init(&s->deleted, ndeleted, NULL))
        goto oom;
    *out = s;
    return RP_OK;
oom:
    side_free(s);
    return rp_errorf(err, RP_ENOMEM, "side index: out of memory for %u items", n);
}

/* Appends item (id, created, cats, vec) to s, which has room; indexes it. */
static void side_push(ret_side *s, uint64_t id, int64_t created, const uint16_t *cats,
                      uint32_t n_cats, const float *vec, uint32_t *cat_fill)
{
    ret_side_item *it = &s->items[s->n];
    it->id = id;
    it->created = created;
    it->cat_off = *cat_fill;
    it->n_cats = n_cats;
    memcpy(s->cats + *cat_fill, cats, sizeof *cats * n_cats);
    *cat_fill += n_cats;
    memcpy(s->vectors + (uint64_t)s->n * s->dim, vec, sizeof *vec * s->dim);
    s->n++;
    for (uint32_t h = ret__hash64(id) & s->mask;; h = (h + 1) & s->mask)
        if (!s->slots[h]) {
            s->slots[h] = s->n;
            break;
        }
}

static void copy_set(ret_idset *dst, const ret_idset *src)
{
    for (uint32_t h = 0; src->slots && h <= src->mask; h++)
        if (src->slots[h]) ret_idset_add(dst, src->slots[h]);
}

int ret_side_new(uint32_t dim, ret_side **out, rp_error *err)
{
    return side_alloc(dim, 0, 0, 0, 0, out, err);
}

int ret_side_upsert_items(const ret_side *old, const ret_catalog *c, const ret_side_upsert *up,
                          uint32_t n, ret_side **out, rp_error *err)
{
    *out = NULL;
    /* Later rows win: mark, for each id, the last row that carries it. */
    ret_idset seen;
    if (ret_idset_init(&seen, n, NULL)) return rp_errorf(err, RP_ENOMEM, "side index: out of memory");
    uint8_t *keep = calloc(n ? n : 1, 1);
    if (!keep) {
        ret_idset_free(&seen);
        return rp_errorf(err, RP_ENOMEM, "side index: out of memory");
    }
    uint32_t nnew = 0, ncats = 0;
    for (uint32_t i = n; i-- > 0;)
        if (ret_idset_add(&seen, up[i].id)) {
            keep[i] = 1;
            nnew++;
            ncats += up[i].n_cats;
        }
    for (uint32_t i = 0; i < old->n; i++) ncats += old->items[i].n_cats;
    ret_side *s;
    int rc = side_alloc(old->dim, old->n + nnew, ncats, old->hidden.count + nnew,
                        old->deleted.count, &s, err);
    if (rc) goto done;
    uint32_t fill = 0;
    for (uint32_t i = 0; i < old->n; i++) {
        const ret_side_item *it = &old->items[i];
        if (ret_idset_has(&seen, it->id)) continue;
        side_push(s, it->id, it->created, old->cats + it->cat_off, it->n_cats,
                  old->vectors + (uint64_t)i * old->dim, &fill);
    }
    for (uint32_t i = 0; i < n; i++)
        if (keep[i]) side_push(s, up[i].id, up[i].created, up[i].cats, up[i].n_cats, up[i].vec, &fill);
    copy_set(&s->hidden, &old->hidden);
    /* A deleted id that comes back is no longer a tombstone; its bundle copy stays
     * hidden, replaced by the side copy. */
    for (uint32_t h = 0; old->deleted.slots && h <= old->deleted.mask; h++) {
        uint64_t id = old->deleted.slots[h];
        if (id && !ret_idset_has(&seen, id)) ret_idset_add(&s->deleted, id);
    }
    for (uint32_t i = 0; i < n; i++)
        if (keep[i] && c && ret_catalog_find(c, up[i].id, NULL)) ret_idset_add(&s->hidden, up[i].id);
    *out = s;
done:
    free(keep);
    ret_idset_free(&seen);
    return rc;
}

int ret_side_delete_items(const ret_side *old, const ret_catalog *c, const uint64_t *ids,
                          uint32_t n, uint32_t *deleted, uint32_t *not_found, ret_side **out,
                          rp_error *err)
{
    *out = NULL;
    *deleted = *not_found = 0;
    ret_idset gone;
    if (ret_idset_init(&gone, n, NULL)) return rp_errorf(err, RP_ENOMEM, "side index: out of memory");
    for (uint32_t i = 0; i < n; i++) {
        uint64_t id = ids[i];
        bool exists = ret_side_find(old, id) >= 0 ||
                      (c && ret_catalog_find(c, id, NULL) && !ret_idset_has(&old->deleted, id));
        if (exists && ret_idset_add(&gone, id)) (*deleted)++;
        else if (!exists) (*not_found)++;
    }
    uint32_t ncats = 0, nkeep = 0;
    for (uint32_t i = 0; i < old->n; i++)
        if (!ret_idset_has(&gone, old->items[i].id)) {
            ncats += old->items[i].n_cats;
            nkeep++;
        }
    ret_side *s;
    int rc = side_alloc(old->dim, nkeep, ncats, old->hidden.count + gone.count,
                        old->deleted.count + gone.count, &s, err);
    if (rc) goto done;
    uint32_t fill = 0;
    for (uint32_t i = 0; i < old->n; i++) {
        const ret_side_item *it = &old->items[i];
        if (ret_idset_has(&gone, it->id)) continue;
        side_push(s, it->id, it->created, old->cats + it->cat_off, it->n_cats,
                  old->vectors + (uint64_t)i * old->dim, &fill);
    }
    copy_set(&s->hidden, &old->hidden);
    copy_set(&s->deleted, &old->deleted);
    for (uint32_t h = 0; gone.slots && h <= gone.mask; h++)
        if (gone.slots[h]) {
            ret_idset_add(&s->deleted, gone.slots[h]);
            if (c && ret_catalog_find(c, gone.slots[h], NULL)) ret_idset_add(&s->hidden, gone.slots[h]);
        }
    *out = s;
done:
    ret_idset_free(&gone);
    return rc;
}

int ret_side_rebase(const ret_side *old, const ret_catalog *old_cat, const ret_catalog *c,
                    ret_side **out, rp_error *err)
{
    *out = NULL;
    bool keep_items = old->dim == c->dim;
    uint32_t ncats = 0;
    for (uint32_t i = 0; keep_items && i < old->n; i++) ncats += old->items[i].n_cats;
    ret_side *s;
    int rc = side_alloc(c->dim, keep_items ? old->n : 0, ncats,
                        (keep_items ? old->n : 0) + old->deleted.count, old->deleted.count, &s, err);
    if (rc) return rc;
    uint32_t fill = 0;
    uint16_t mapped[256];
    /* Category indices belong to the old catalog: map them by name to the new one;
     * names the new catalog does not know are dropped. */
    for (uint32_t i = 0; keep_items && i < old->n; i++) {
        const ret_side_item *it = &old->items[i];
        uint32_t m = 0;
        for (uint32_t j = 0; j < it->n_cats && m < 256; j++) {
            uint16_t k = old->cats[it->cat_off + j];
            if (old_cat && k < old_cat->n_categories &&
                ret_catalog_find_category(c, old_cat->category_names[k], &mapped[m]))
                m++;
        }
        side_push(s, it->id, it->created, mapped, m, old->vectors + (uint64_t)i * old->dim, &fill);
        if (ret_catalog_find(c, it->id, NULL)) ret_idset_add(&s->hidden, it->id);
    }
    for (uint32_t h = 0; old->deleted.slots && h <= old->deleted.mask; h++) {
        uint64_t id = old->deleted.slots[h];
        if (!id) continue;
        ret_idset_add(&s->deleted, id);
        if (ret_catalog_find(c, id, NULL)) ret_idset_add(&s->hidden, id);
    }
    *out = s;
    return RP_OK;
}
