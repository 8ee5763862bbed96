/* Exclusions and filters (ret/filter.h). */
#include "ret/filter.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int ret_idset_init(ret_idset *s, uint32_t n, rp_arena *a)
{
    uint32_t cap = 8;
    while (cap < 2 * (uint64_t)n) cap <<= 1;
    s->slots = a ? rp_arena_calloc(a, cap, sizeof *s->slots) : calloc(cap, sizeof *s->slots);
    s->mask = s->slots ? cap - 1 : 0;
    s->count = 0;
    return s->slots ? RP_OK : RP_ENOMEM;
}

void ret_idset_free(ret_idset *s)
{
    free(s->slots);
    s->slots = NULL;
    s->mask = s->count = 0;
}

bool ret_idset_add(ret_idset *s, uint64_t id)
{
    for (uint32_t h = ret__hash64(id) & s->mask;; h = (h + 1) & s->mask) {
        if (s->slots[h] == id) return false;
        if (!s->slots[h]) {
            s->slots[h] = id;
            s->count++;
            return true;
        }
    }
}

bool ret_idset_has(const ret_idset *s, uint64_t id)
{
    if (!s->slots) return false;
    for (uint32_t h = ret__hash64(id) & s->mask;; h = (h + 1) & s->mask) {
        if (s->slots[h] == id) return true;
        if (!s->slots[h]) return false;
    }
}

static int compile_cats(const ret_catalog *c, const char *field, const char *const *names,
                        uint32_t n, rp_arena *a, const uint8_t **bits_out, uint16_t **list_out,
                        rp_error *err)
{
    *bits_out = NULL;
    if (list_out) *list_out = NULL;
    if (n == 0) return RP_OK;
    if (n > RET_MAX_FILTER_CATEGORIES)
        return rp_errorf(err, RP_EINVAL, "filter.%s: %u categories exceed the limit of %u", field,
                         n, RET_MAX_FILTER_CATEGORIES);
    uint8_t *bits = rp_arena_calloc(a, (c->n_categories + 8) / 8, 1);
    uint16_t *list = rp_arena_alloc(a, sizeof *list * n);
    if (!bits || !list) return rp_errorf(err, RP_ENOMEM, "filter: out of memory");
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint16_t k;
        if (!names[i] || !ret_catalog_find_category(c, names[i], &k))
            return rp_errorf(err, RP_EINVAL, "filter.%s[%u]: unknown category \"%.100s\"", field, i,
                             names[i] ? names[i] : "");
        if (!((bits[k >> 3] >> (k & 7)) & 1)) list[m++] = k;
        bits[k >> 3] |= (uint8_t)(1u << (k & 7));
    }
    *bits_out = bits;
    if (list_out) *list_out = list;
    return (int)m;
}

int ret_filter_compile(ret_filter *f, const ret_catalog *c, const char *const *include,
                       uint32_t n_include, const char *const *exclude, uint32_t n_exclude,
                       int64_t created_after, int64_t created_before,
                       const uint64_t *exclude_ids, uint32_t n_exclude_ids, rp_arena *a,
                       rp_error *err)
{
    memset(f, 0, sizeof *f);
    if (n_exclude_ids > RET_MAX_EXCLUDE)
        return rp_errorf(err, RP_EINVAL, "exclude_ids: %u ids exceed the limit of %u",
                         n_exclude_ids, RET_MAX_EXCLUDE);
    if (created_after && created_before && created_before <= created_after)
        return rp_errorf(err, RP_EINVAL,
                         "filter.created_before: %lld is not after filter.created_after %lld",
                         (long long)created_before, (long long)created_after);
    uint16_t *list;
    int rc = compile_cats(c, "include_categories", include, n_include, a, &f->include_bits, &list, err);
    if (rc < 0) return rc;
    f->include = list;
    f->n_include = (uint32_t)rc;
    const uint8_t *ex;
    rc = compile_cats(c, "exclude_categories", exclude, n_exclude, a, &ex, NULL, err);
    if (rc < 0) return rc;
    f->exclude_bits = ex;
    f->n_exclude = (uint32_t)rc;
    f->created_after = created_after;
    f->created_before = created_before;
    if (ret_idset_init(&f->excluded, n_exclude_ids, a) != RP_OK)
        return rp_errorf(err, RP_ENOMEM, "exclude_ids: out of memory");
    for (uint32_t i = 0; i < n_exclude_ids; i++)
        if (exclude_ids[i]) ret_idset_add(&f->excluded, exclude_ids[i]);
    return RP_OK;
}

bool ret_filter_restricts(const ret_filter *f)
{
    return f->include_bits || f->exclude_bits || f->created_after || f->created_before;
}

int ret_filter_candidates(const ret_filter *f, const ret_catalog *c, rp_arena *a,
                          uint32_t **out, uint32_t *n)
{
    *out = NULL;
    *n = c->n_items;
    if (!f->include_bits) return RP_OK;
    uint64_t total = 0;
    for (uint32_t j = 0; j < f->n_include; j++)
        total += c->post_off[f->include[j] + 1] - c->post_off[f->include[j]];
    if (f->n_include == 1) {
        /* One posting list is already the answer: borrow it. */
        *out = c->post + c->post_off[f->include[0]];
        *n = (uint32_t)total;
        return RP_OK;
    }
    /* Union of several ascending lists: mark a bitmap when the lists are long,
     * otherwise concatenate, sort and drop duplicates. */
    if (total * 8 >= c->n_items) {
        uint8_t *seen = rp_arena_calloc(a, (c->n_items + 8) / 8, 1);
        if (!seen) return RP_ENOMEM;
        uint32_t m = 0;
        for (uint32_t j = 0; j < f->n_include; j++)
            for (uint32_t p = c->post_off[f->include[j]]; p < c->post_off[f->include[j] + 1]; p++) {
                uint32_t i = c->post[p];
                if (!((seen[i >> 3] >> (i & 7)) & 1)) m++;
                seen[i >> 3] |= (uint8_t)(1u << (i & 7));
            }
        uint32_t *v = rp_arena_alloc(a, sizeof *v * (m ? m : 1));
        if (!v) return RP_ENOMEM;
        uint32_t w = 0;
        for (uint32_t i = 0; i < c->n_items; i++)
            if ((seen[i >> 3] >> (i & 7)) & 1) v[w++] = i;
        *out = v;
        *n = w;
        return RP_OK;
    }
    uint32_t *v = rp_arena_alloc(a, sizeof *v * (total ? total : 1));
    if (!v) return RP_ENOMEM;
    /* k-way merge by repeated two-way merges into a scratch buffer. */
    uint32_t *tmp = rp_arena_alloc(a, sizeof *tmp * (total ? total : 1));
    if (!tmp) return RP_ENOMEM;
    uint32_t m = 0;
    for (uint32_t j = 0; j < f->n_include; j++) {
        const uint32_t *b = c->post + c->post_off[f->include[j]];
        uint32_t nb = c->post_off[f->include[j] + 1] - c->post_off[f->include[j]];
        uint32_t x = 0, y = 0, w = 0;
        while (x < m || y < nb) {
            uint32_t val;
            if (y >= nb || (x < m && v[x] < b[y])) val = v[x++];
            else if (x >= m || b[y] < v[x]) val = b[y++];
            else { val = v[x++]; y++; }
            tmp[w++] = val;
        }
        memcpy(v, tmp, sizeof *v * w);
        m = w;
    }
    *out = v;
    *n = m;
    return RP_OK;
}
