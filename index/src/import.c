/* recpipe import: parse interactions, catalogue and tags; build and write DATA_DIR. */
#include "idx/import.h"

#include "dataset_int.h"
#include "idx/csv.h"
#include "idx/fsutil.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

enum { TYPE_VIEW = 1, TYPE_RATING = 5 };

static const char *const ML100K_GENRES[19] = {
    "unknown", "Action",  "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western"};

/* ---- small containers ---- */

/* u64 → u32 open-addressing map (value UINT32_MAX = empty slot). */
typedef struct u64map {
    uint64_t *keys;
    uint32_t *vals;
    size_t cap, n;
} u64map;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static int u64map_grow(u64map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    uint64_t *k = malloc(cap * sizeof *k);
    uint32_t *v = malloc(cap * sizeof *v);
    if (!k || !v) {
        free(k);
        free(v);
        return RP_ENOMEM;
    }
    memset(v, 0xff, cap * sizeof *v);
    for (size_t i = 0; i < m->cap; i++) {
        if (m->vals[i] == UINT32_MAX) continue;
        size_t h = mix64(m->keys[i]) & (cap - 1);
        while (v[h] != UINT32_MAX) h = (h + 1) & (cap - 1);
        k[h] = m->keys[i];
        v[h] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = k;
    m->vals = v;
    m->cap = cap;
    return RP_OK;
}

/* Finds key; when absent and val != UINT32_MAX inserts it. Returns the stored value,
 * UINT32_MAX when absent (lookup) or on allocation failure (*oom set). */
static uint32_t u64map_get(u64map *m, uint64_t key, uint32_t val, bool *oom)
{
    if (val != UINT32_MAX && (m->n + 1) * 2 > m->cap && u64map_grow(m)) {
        *oom = true;
        return UINT32_MAX;
    }
    if (!m->cap) return UINT32_MAX;
    size_t h = mix64(key) & (m->cap - 1);
    while (m->vals[h] != UINT32_MAX) {
        if (m->keys[h] == key) return m->vals[h];
        h = (h + 1) & (m->cap - 1);
    }
    if (val == UINT32_MAX) return UINT32_MAX;
    m->keys[h] = key;
    m->vals[h] = val;
    m->n++;
    return val;
}

static void u64map_free(u64map *m)
{
    free(m->keys);
    free(m->vals);
}

/* Interned strings: a blob of NUL-terminated strings and a hash of their offsets. */
typedef struct strtab {
    char *blob;
    size_t len, cap;
    size_t *off;    /* [n] */
    uint32_t n, ncap;
    uint32_t *slot; /* hash slots: index + 1, 0 = empty */
    size_t nslot;
} strtab;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int strtab_rehash(strtab *t)
{
    size_t ns = t->nslot ? t->nslot * 2 : 256;
    uint32_t *slot = calloc(ns, sizeof *slot);
    if (!slot) return RP_ENOMEM;
    for (uint32_t i = 0; i < t->n; i++) {
        size_t h = hash_str(t->blob + t->off[i]) & (ns - 1);
        while (slot[h]) h = (h + 1) & (ns - 1);
        slot[h] = i + 1;
    }
    free(t->slot);
    t->slot = slot;
    t->nslot = ns;
    return RP_OK;
}

/* Returns the index of s, adding it when absent; UINT32_MAX on allocation failure. */
static uint32_t strtab_intern(strtab *t, const char *s)
{
    if (((size_t)t->n + 1) * 2 > t->nslot && strtab_rehash(t)) return UINT32_MAX;
    size_t h = hash_str(s) & (t->nslot - 1);
    while (t->slot[h]) {
        uint32_t i = t->slot[h] - 1;
        if (!strcmp(t->blob + t->off[i], s)) return i;
        h = (h + 1) & (t->nslot - 1);
    }
    if (t->n == UINT32_MAX - 1) return UINT32_MAX;
    size_t l = strlen(s) + 1;
    if (t->len + l > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + l) cap *= 2;
        char *b = realloc(t->blob, cap);
        if (!b) return UINT32_MAX;
        t->blob = b;
        t->cap = cap;
    }
    if (t->n == t->ncap) {
        uint32_t nc = t->ncap ? t->ncap * 2 : 64;
        size_t *o = realloc(t->off, nc * sizeof *o);
        if (!o) return UINT32_MAX;
        t->off = o;
        t->ncap = nc;
    }
    memcpy(t->blob + t->len, s, l);
    t->off[t->n] = t->len;
    t->len += l;
    t->slot[h] = t->n + 1;
    return t->n++;
}

static void strtab_free(strtab *t)
{
    free(t->blob);
    free(t->off);
    free(t->slot);
}

/* Pointer array onto the strings of t (valid while t lives). */
static char **strtab_ptrs(const strtab *t)
{
    char **p = malloc((t->n ? t->n : 1) * sizeof *p);
    if (p)
        for (uint32_t i = 0; i < t->n; i++) p[i] = t->blob + t->off[i];
    return p;
}

#define VEC_PUSH(arr, n, cap, val, fail)                                                   \
    do {                                                                                   \
        if ((n) == (cap)) {                                                                \
            size_t nc_ = (cap) ? (cap) * 2 : 1024;                                         \
            void *p_ = realloc((arr), nc_ * sizeof *(arr));                                \
            if (!p_) goto fail;                                                            \
            (arr) = p_;                                                                    \
            (cap) = nc_;                                                                   \
        }                                                                                  \
        (arr)[(n)++] = (val);                                                              \
    } while (0)

/* ---- the import state ---- */

typedef struct raw_ev {
    uint64_t user, item;
    uint64_t line; /* file order: records start on distinct, increasing lines */
    int64_t ts;
    float value;
    uint32_t dense_item;
} raw_ev;

typedef struct cat_item {
    uint64_t id;
    size_t title;   /* offset into titles blob */
    uint32_t c0, nc; /* categories: cats[c0 .. c0+nc) */
} cat_item;

typedef struct tag_raw {
    uint64_t item;
    uint32_t tag;
} tag_raw;

typedef struct line_item {
    uint64_t line, item;
} line_item;

typedef struct imp {
    const idx_import_opts *o;
    idx_import_stats st;
    unsigned reported;

    cat_item *items;
    size_t nitems, items_cap;
    u64map item_line; /* catalogue id → line where it was listed (first) */
    char *titles;
    size_t titles_len, titles_cap;
    uint16_t *cats;
    size_t ncats, cats_cap;
    strtab catnames;
    int cat_cols[3];     /* id, title, categories (-1: none) */
    size_t cat_ncols;    /* 0: positional, 2 or 3 columns */

    raw_ev *ev;
    size_t nev, ev_cap;
    bool has_rating, has_ts;

    strtab tagnames;
    tag_raw *traw;
    size_t ntraw, traw_cap;
} imp;

static void report(imp *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(imp *m, const char *fmt, ...)
{
    if (!m->o->report) return;
    char b[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    m->o->report(m->o->report_ctx, b);
}

/* Reports reading progress every 64k records. */
static void progress(const imp *m, const char *phase, idx_csv *r, uint64_t records,
                     uint64_t size)
{
    if (m->o->progress && (records & 0xffff) == 0)
        m->o->progress(m->o->progress_ctx, phase, idx_csv_offset(r), size);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* True (with err set) when the caller asked to stop. */
static bool canceled(const imp *m, rp_error *err)
{
    if (!m->o->cancel || !*m->o->cancel) return false;
    rp_errorf(err, RP_ECANCELED, "interrupted; nothing was written");
    return true;
}

/* A malformed line: fatal unless skip_bad, which counts and reports it. */
static int bad_line(imp *m, int rc, rp_error *err)
{
    if (!m->o->skip_bad) return rc;
    m->st.skipped++;
    unsigned max = m->o->max_reported ? m->o->max_reported : 10;
    if (m->reported < max) report(m, "skipped %s", rp_error_text(err));
    else if (m->reported == max) report(m, "(more skipped lines are not shown)");
    m->reported++;
    rp_error_clear(err);
    return RP_OK;
}

/* A UTF-8 error in a file that is probably in a single-byte encoding: say which flag
 * names the encoding. */
static void encoding_hint(rp_error *err, const char *flag)
{
    if (!err || !strstr(err->msg, "invalid UTF-8")) return;
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof err->msg - n, "; if the file is Latin-1, pass %s latin1", flag);
}

/* Shows a field in a message: at most 40 bytes, then "...". */
static const char *shown(const char *s, char *buf, size_t cap)
{
    size_t n = strlen(s);
    if (n <= 40) snprintf(buf, cap, "%s", s);
    else snprintf(buf, cap, "%.40s...", s);
    return buf;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
    return s;
}

static bool is_number_start(const char *s)
{
    while (*s == ' ') s++;
    if (*s == '-' || *s == '+') s++;
    return *s >= '0' && *s <= '9';
}

static int parse_id(const char *path, const idx_csv_rec *r, size_t f, const char *what,
                    uint64_t *out, rp_error *err)
{
    char *s = trim(r->field[f]);
    char b[64];
    if (!*s)
        return rp_errorf(err, RP_EPARSE, "%s:%" PRIu64 ":%u: empty %s", path, r->line, r->col[f],
                         what);
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return rp_errorf(err, RP_EPARSE,
                             "%s:%" PRIu64 ":%u: %s '%s' is not a non-negative integer", path,
                             r->line, r->col[f], what, shown(s, b, sizeof b));
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno == ERANGE)
        return rp_errorf(err, RP_EPARSE, "%s:%" PRIu64 ":%u: %s '%s' is larger than 2^64-1",
                         path, r->line, r->col[f], what, shown(s, b, sizeof b));
    *out = v;
    return RP_OK;
}

/* ---- catalogue ---- */

static int add_title(imp *m, const char *s, size_t *off)
{
    size_t l = strlen(s) + 1;
    if (m->titles_len + l > m->titles_cap) {
        size_t cap = m->titles_cap ? m->titles_cap : 65536;
        while (cap < m->titles_len + l) cap *= 2;
        char *b = realloc(m->titles, cap);
        if (!b) return RP_ENOMEM;
        m->titles = b;
        m->titles_cap = cap;
    }
    memcpy(m->titles + m->titles_len, s, l);
    *off = m->titles_len;
    m->titles_len += l;
    return RP_OK;
}

static int add_cat(imp *m, const char *name, const char *path, uint64_t line, rp_error *err)
{
    uint32_t c = strtab_intern(&m->catnames, name);
    if (c == UINT32_MAX) return rp_errorf(err, RP_ENOMEM, "out of memory");
    if (c > UINT16_MAX)
        return rp_errorf(err, RP_EPARSE, "%s:%" PRIu64 ": more than 65536 distinct categories",
                         path, line);
    /* an item listing a category twice keeps it once */
    cat_item *it = &m->items[m->nitems];
    for (uint32_t k = it->c0; k < it->c0 + it->nc; k++)
        if (m->cats[k] == c) return RP_OK;
    VEC_PUSH(m->cats, m->ncats, m->cats_cap, (uint16_t)c, oom);
    it->nc++;
    return RP_OK;
oom:
    return rp_errorf(err, RP_ENOMEM, "out of memory");
}

/* Parses one catalogue record into m->items[m->nitems] (committed by the caller). */
static int catalogue_record(imp *m, const char *path, idx_csv_rec *r, rp_error *err)
{
    bool ml = m->o->items_format == IDX_ITEMS_ML100K;
    int idc = 0, tc = 1, cc = r->n >= 3 ? 2 : -1;
    if (ml && r->n != 24)
        return rp_errorf(err, RP_EPARSE,
                         "%s:%" PRIu64 ": %zu columns, expected 24 "
                         "(id|title|release date|video release date|IMDb URL|19 genre flags)",
                         path, r->line, r->n);
    if (!ml && m->cat_ncols) { /* columns named by the header */
        if (r->n != m->cat_ncols)
            return rp_errorf(err, RP_EPARSE, "%s:%" PRIu64 ": %zu columns, expected %zu like the "
                             "header (a title containing the separator must be quoted)",
                             path, r->line, r->n, m->cat_ncols);
        idc = m->cat_cols[0];
        tc = m->cat_cols[1];
        cc = m->cat_cols[2];
    } else if (!ml && r->n < 2) {
        return rp_errorf(err, RP_EPARSE,
                         "%s:%" PRIu64 ": missing column 2 (title); expected id,title,categories",
                         path, r->line);
    } else if (!ml && r->n > 3) {
        return rp_errorf(err, RP_EPARSE,
                         "%s:%" PRIu64 ":%u: %zu columns, expected 3 (id,title,categories); "
                         "a title containing the separator must be quoted",
                         path, r->line, r->col[3], r->n);
    }
    uint64_t id;
    int rc = parse_id(path, r, (size_t)idc, "item id", &id, err);
    if (rc) return rc;
    bool oom = false;
    uint32_t prev = u64map_get(&m->item_line, id, UINT32_MAX, &oom);
    if (prev != UINT32_MAX)
        return rp_errorf(err, RP_EPARSE, "%s:%" PRIu64 ":%u: item id %" PRIu64
                         " is listed twice (first on line %u)", path, r->line, r->col[idc], id, prev);
    if (m->nitems == m->items_cap) {
        size_t cap = m->items_cap ? m->items_cap * 2 : 1024;
        cat_item *p = realloc(m->items, cap * sizeof *p);
        if (!p) return rp_errorf(err, RP_ENOMEM, "out of memory");
        m->items = p;
        m->items_cap = cap;
    }
    size_t ncats_before = m->ncats;
    cat_item *it = &m->items[m->nitems];
    it->id = id;
    it->c0 = (uint32_t)m->ncats;
    it->nc = 0;
    if (ml) {
        for (size_t g = 0; g < 19; g++) {
            const char *f = trim(r->field[5 + g]);
            if (strcmp(f, "0") && strcmp(f, "1")) {
                char b[64];
                m->ncats = ncats_before;
                return rp_errorf(err, RP_EPARSE,
                                 "%s:%" PRIu64 ":%u: genre flag %zu (%s) is '%s', expected 0 or 1",
                                 path, r->line, r->col[5 + g], g + 1, ML100K_GENRES[g],
                                 shown(f, b, sizeof b));
            }
            if (f[0] == '1' && (rc = add_cat(m, ML100K_GENRES[g], path, r->line, err))) {
                m->ncats = ncats_before;
                return rc;
            }
        }
    } else if (cc >= 0) {
        char *g = trim(r->field[cc]);
        if (strcmp(g, "(no genres listed)") != 0) {
            char *save = NULL;
            for (char *tok = strtok_r(g, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
                tok = trim(tok);
                if (!*tok) continue;
                if ((rc = add_cat(m, tok, path, r->line, err))) {
                    m->ncats = ncats_before;
                    return rc;
                }
            }
        }
    }
    if ((rc = add_title(m, trim(r->field[tc]), &it->title))) {
        m->ncats = ncats_before;
        return rp_errorf(err, RP_ENOMEM, "out of memory");
    }
    if (u64map_get(&m->item_line, id, r->line > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)r->line,
                   &oom) == UINT32_MAX && oom)
        return rp_errorf(err, RP_ENOMEM, "out of memory");
    m->nitems++;
    return RP_OK;
}

/* A header naming the id and title columns (id, itemId, item_id, movieId, movie_id;
 * title, name; categories, category, genres) maps them by name; other columns are then
 * ignored. Otherwise columns are positional. */
static void map_catalogue_header(imp *m, const idx_csv_rec *h)
{
    static const struct {
        const char *name;
        int role;
    } names[] = {{"id", 0},         {"itemid", 0},     {"item_id", 0},  {"item", 0},
                 {"movieid", 0},    {"movie_id", 0},   {"title", 1},    {"name", 1},
                 {"categories", 2}, {"category", 2},   {"genres", 2},   {"genre", 2}};
    int cols[3] = {-1, -1, -1};
    for (size_t k = 0; k < h->n && k < 1024; k++) {
        char b[32];
        snprintf(b, sizeof b, "%s", h->field[k]);
        const char *t = trim(b);
        for (size_t j = 0; j < sizeof names / sizeof names[0]; j++) {
            if (strcasecmp(t, names[j].name) != 0) continue;
            if (cols[names[j].role] >= 0) return; /* named twice: stay positional */
            cols[names[j].role] = (int)k;
        }
    }
    if (cols[0] < 0 || cols[1] < 0) return;
    memcpy(m->cat_cols, cols, sizeof cols);
    m->cat_ncols = h->n;
}

static int read_catalogue(imp *m, rp_error *err)
{
    const idx_import_opts *o = m->o;
    bool ml = o->items_format == IDX_ITEMS_ML100K;
    idx_csv_opts co = {
        .sep = o->items_sep ? o->items_sep : (ml ? '|' : ','),
        .quotes = !ml,
        .encoding = o->items_encoding,
    };
    idx_csv *r = NULL;
    idx_csv_rec rec;
    int rc = idx_csv_open(o->items, &co, &r, err);
    if (rc) return rc;
    if (ml) /* the genre table is fixed: keep its order whatever the items use */
        for (int g = 0; g < 19; g++)
            if (strtab_intern(&m->catnames, ML100K_GENRES[g]) == UINT32_MAX) {
                rc = rp_errorf(err, RP_ENOMEM, "out of memory");
                goto cleanup;
            }
    bool first = true;
    int header = ml ? 0 : o->items_header;
    uint64_t seen = 0, size = file_size(o->items);
    while ((rc = idx_csv_next(r, &rec, err)) != 0) {
        if (canceled(m, err)) {
            rc = RP_ECANCELED;
            goto cleanup;
        }
        if (rc < 0) {
            encoding_hint(err, "--items-encoding");
            if (rc != RP_EPARSE || idx_csv_fatal(r) || (rc = bad_line(m, rc, err))) goto cleanup;
            continue;
        }
        seen++;
        progress(m, "items", r, seen, size);
        if (first) {
            first = false;
            if (header == 1 || (header == -1 && !is_number_start(rec.field[0]))) {
                map_catalogue_header(m, &rec);
                continue;
            }
        }
        rc = catalogue_record(m, o->items, &rec, err);
        if (rc == RP_EPARSE) rc = bad_line(m, rc, err);
        if (rc) goto cleanup;
    }
    if (m->nitems == 0) {
        rc = rp_errorf(err, RP_EPARSE, "%s: the catalogue is empty (%s)", o->items,
                       seen ? "no valid item lines" : "no lines");
        goto cleanup;
    }
    m->st.catalogue_items = (uint32_t)m->nitems;
cleanup:
    idx_csv_close(r);
    return rc;
}

/* ---- interactions ---- */

enum { COL_USER, COL_ITEM, COL_RATING, COL_TS };

static int column_kind(const char *name)
{
    static const struct {
        const char *name;
        int kind;
    } names[] = {{"user", COL_USER},     {"userid", COL_USER},   {"user_id", COL_USER},
                 {"item", COL_ITEM},     {"itemid", COL_ITEM},   {"item_id", COL_ITEM},
                 {"movieid", COL_ITEM},  {"movie_id", COL_ITEM}, {"rating", COL_RATING},
                 {"value", COL_RATING},  {"score", COL_RATING},  {"timestamp", COL_TS},
                 {"ts", COL_TS},         {"time", COL_TS}};
    char b[32];
    snprintf(b, sizeof b, "%s", name);
    char *t = trim(b);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(t, names[i].name)) return names[i].kind;
    return -1;
}

/* "item,user,-,timestamp": the role of each column in order, '-' for ignored ones. */
static int parse_columns(const char *list, int *colmap, size_t *ncols, rp_error *err)
{
    char b[256];
    snprintf(b, sizeof b, "%s", list);
    for (int k = 0; k < 4; k++) colmap[k] = -1;
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(b, ",", &save); t; t = strtok_r(NULL, ",", &save), n++) {
        t = trim(t);
        if (!strcmp(t, "-") || !strcasecmp(t, "skip")) continue;
        int kind = column_kind(t);
        if (kind < 0)
            return rp_errorf(err, RP_EINVAL, "ratings columns: unknown column '%s' (use user, "
                             "item, rating, timestamp or -)", t);
        if (colmap[kind] >= 0)
            return rp_errorf(err, RP_EINVAL, "ratings columns: '%s' is named twice", t);
        colmap[kind] = (int)n;
    }
    if (colmap[COL_USER] < 0 || colmap[COL_ITEM] < 0)
        return rp_errorf(err, RP_EINVAL, "ratings columns: '%s' must name user and item", list);
    *ncols = n;
    return RP_OK;
}

static const char *const COL_NAMES[] = {"user id", "item id", "rating", "timestamp"};

static int interaction_record(imp *m, const char *path, const idx_csv_rec *r, const int *colmap,
                              size_t ncols, rp_error *err)
{
    char b[64];
    if (r->n < ncols) {
        int missing = -1;
        for (size_t k = 0; k < 4; k++)
            if (colmap[k] == (int)r->n) missing = (int)k;
        return rp_errorf(err, RP_EPARSE, "%s:%" PRIu64 ": missing column %zu%s%s%s (found %zu of %zu)",
                         path, r->line, r->n + 1, missing >= 0 ? " (" : "",
                         missing >= 0 ? COL_NAMES[missing] : "", missing >= 0 ? ")" : "", r->n,
                         ncols);
    }
    if (r->n > ncols)
        return rp_errorf(err, RP_EPARSE, "%s:%" PRIu64 ":%u: %zu columns, expected %zu like the "
                         "first line", path, r->line, r->col[ncols], r->n, ncols);
    raw_ev e = {.line = r->line, .value = 1.0f};
    int rc;
    if ((rc = parse_id(path, r, (size_t)colmap[COL_USER], "user id", &e.user, err))) return rc;
    if ((rc = parse_id(path, r, (size_t)colmap[COL_ITEM], "item id", &e.item, err))) return rc;
    if (colmap[COL_RATING] >= 0) {
        size_t f = (size_t)colmap[COL_RATING];
        char *s = trim(r->field[f]), *end;
        errno = 0;
        double v = strtod(s, &end);
        if (!*s || *end || !isfinite(v) || fabs(v) > 3.0e38)
            return rp_errorf(err, RP_EPARSE, "%s:%" PRIu64 ":%u: rating '%s' is not a number",
                             path, r->line, r->col[f], shown(s, b, sizeof b));
        e.value = (float)v;
    }
    if (colmap[COL_TS] >= 0) {
        size_t f = (size_t)colmap[COL_TS];
        char *s = trim(r->field[f]), *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (!*s || *end || errno == ERANGE)
            return rp_errorf(err, RP_EPARSE,
                             "%s:%" PRIu64 ":%u: timestamp '%s' is not an integer (Unix seconds)",
                             path, r->line, r->col[f], shown(s, b, sizeof b));
        e.ts = v;
    }
    VEC_PUSH(m->ev, m->nev, m->ev_cap, e, oom);
    return RP_OK;
oom:
    return rp_errorf(err, RP_ENOMEM, "out of memory after %zu interactions", m->nev);
}

static int read_interactions(imp *m, rp_error *err)
{
    const idx_import_opts *o = m->o;
    idx_csv_opts co = {.sep = o->ratings_sep, .quotes = true, .encoding = o->ratings_encoding};
    idx_csv *r = NULL;
    idx_csv_rec rec;
    int colmap[4] = {-1, -1, -1, -1};
    size_t ncols = 0;
    bool first = true, had_header = false;
    uint64_t seen = 0, size = file_size(o->ratings);
    int spec[4];
    size_t spec_cols = 0;
    bool explicit_cols = o->ratings_columns && *o->ratings_columns;
    if (explicit_cols && parse_columns(o->ratings_columns, spec, &spec_cols, err))
        return RP_EINVAL;
    int rc = idx_csv_open(o->ratings, &co, &r, err);
    if (rc) return rc;
    while ((rc = idx_csv_next(r, &rec, err)) != 0) {
        if (canceled(m, err)) {
            rc = RP_ECANCELED;
            goto cleanup;
        }
        if (rc < 0) {
            encoding_hint(err, "--ratings-encoding");
            if (rc != RP_EPARSE || idx_csv_fatal(r) || (rc = bad_line(m, rc, err))) goto cleanup;
            continue;
        }
        seen++;
        progress(m, "ratings", r, seen, size);
        if (first) {
            first = false;
            bool header = o->ratings_header == 1 ||
                          (o->ratings_header == -1 && !is_number_start(rec.field[0]));
            if (explicit_cols) {
                ncols = spec_cols;
                memcpy(colmap, spec, sizeof colmap);
            } else {
                int named[4] = {-1, -1, -1, -1};
                bool dup = false;
                for (size_t k = 0; header && k < rec.n && k < 64; k++) {
                    int kind = column_kind(rec.field[k]);
                    if (kind < 0) continue;
                    if (named[kind] >= 0) dup = true;
                    named[kind] = (int)k;
                }
                if (header && !dup && named[COL_USER] >= 0 && named[COL_ITEM] >= 0) {
                    /* columns by name; other columns are ignored */
                    ncols = rec.n;
                    memcpy(colmap, named, sizeof colmap);
                } else if (rec.n >= 2 && rec.n <= 4) {
                    ncols = rec.n;
                    for (size_t k = 0; k < ncols; k++) colmap[k] = (int)k;
                } else {
                    char sep = idx_csv_sep(r);
                    rc = rp_errorf(err, RP_EPARSE,
                                   "%s:%" PRIu64 ": %zu column%s; expected user,item[,rating]"
                                   "[,timestamp] separated by '%s' (name the columns with a "
                                   "header or --ratings-columns)",
                                   o->ratings, rec.line, rec.n, rec.n == 1 ? "" : "s",
                                   sep == '\t' ? "\\t" : (char[]){sep, 0});
                    goto cleanup; /* the layout is unknown: no line can be read */
                }
            }
            if (header) {
                had_header = true;
                continue;
            }
        }
        rc = interaction_record(m, o->ratings, &rec, colmap, ncols, err);
        if (rc == RP_EPARSE) rc = bad_line(m, rc, err);
        if (rc) goto cleanup;
    }
    m->has_rating = colmap[COL_RATING] >= 0;
    m->has_ts = colmap[COL_TS] >= 0;
    if (m->nev == 0) {
        rc = rp_errorf(err, RP_EPARSE, "%s: no interactions (%s)", o->ratings,
                       !seen ? "the file is empty" : had_header && seen == 1 ? "only a header"
                                                                         : "no valid lines");
        goto cleanup;
    }
cleanup:
    idx_csv_close(r);
    return rc;
}

/* ---- tags ---- */

static int read_tags(imp *m, rp_error *err)
{
    const idx_import_opts *o = m->o;
    idx_csv_opts co = {.sep = 0, .quotes = true, .encoding = o->tags_encoding};
    idx_csv *r = NULL;
    idx_csv_rec rec;
    bool first = true;
    uint64_t seen = 0, size = file_size(o->tags);
    int rc = idx_csv_open(o->tags, &co, &r, err);
    if (rc) return rc;
    while ((rc = idx_csv_next(r, &rec, err)) != 0) {
        if (canceled(m, err)) {
            rc = RP_ECANCELED;
            goto cleanup;
        }
        if (rc < 0) {
            encoding_hint(err, "--tags-encoding");
            if (rc != RP_EPARSE || idx_csv_fatal(r) || (rc = bad_line(m, rc, err))) goto cleanup;
            continue;
        }
        progress(m, "tags", r, ++seen, size);
        if (first) {
            first = false;
            if (!is_number_start(rec.field[0])) continue;
        }
        uint64_t user, item;
        if (rec.n < 3 || rec.n > 4) {
            rc = rp_errorf(err, RP_EPARSE, "%s:%" PRIu64 ": %zu columns, expected "
                           "user,item,tag[,timestamp]", o->tags, rec.line, rec.n);
        } else if (!(rc = parse_id(o->tags, &rec, 0, "user id", &user, err)) &&
                   !(rc = parse_id(o->tags, &rec, 1, "item id", &item, err))) {
            m->st.tag_lines++;
            char *t = trim(rec.field[2]);
            if (!*t) {
                rc = rp_errorf(err, RP_EPARSE, "%s:%" PRIu64 ":%u: empty tag", o->tags, rec.line,
                               rec.col[2]);
            } else {
                uint32_t tag = strtab_intern(&m->tagnames, t);
                if (tag == UINT32_MAX) {
                    rc = rp_errorf(err, RP_ENOMEM, "out of memory");
                    goto cleanup;
                }
                VEC_PUSH(m->traw, m->ntraw, m->traw_cap, ((tag_raw){item, tag}), oom);
            }
        }
        if (rc == RP_EPARSE) rc = bad_line(m, rc, err);
        if (rc) goto cleanup;
    }
cleanup:
    idx_csv_close(r);
    return rc;
oom:
    rc = rp_errorf(err, RP_ENOMEM, "out of memory");
    goto cleanup;
}

/* ---- build ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* user, item, then the later occurrence last */
static int cmp_pair(const void *a, const void *b)
{
    const raw_ev *x = a, *y = b;
    if (x->user != y->user) return x->user < y->user ? -1 : 1;
    if (x->item != y->item) return x->item < y->item ? -1 : 1;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line);
}

/* user, then time, ties in file order */
static int cmp_time(const void *a, const void *b)
{
    const raw_ev *x = a, *y = b;
    if (x->user != y->user) return x->user < y->user ? -1 : 1;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line);
}

static bool find_u64(const uint64_t *a, size_t n, uint64_t key, uint32_t *out)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < key) lo = mid + 1;
        else hi = mid;
    }
    if (lo < n && a[lo] == key) {
        *out = (uint32_t)lo;
        return true;
    }
    return false;
}

typedef struct built {
    idx_dataset ds;
    uint64_t *user_ids, *item_ids, *user_off;
    idx_event *events;
    char **titles;
    uint32_t *cat_off;
    uint16_t *cats;
    char **cat_names;
    int64_t *created;
    uint8_t *in_cat;
    uint32_t *tag_off, *tags;
    char **tag_names;
} built;

static void built_free(built *b)
{
    free(b->user_ids);
    free(b->item_ids);
    free(b->user_off);
    free(b->events);
    free(b->titles);
    free(b->cat_off);
    free(b->cats);
    free(b->cat_names);
    free(b->created);
    free(b->in_cat);
    free(b->tag_off);
    free(b->tags);
    free(b->tag_names);
}

static int build(imp *m, built *b, rp_error *err)
{
    /* items: the catalogue plus every item named by an interaction */
    size_t nall = m->nitems + m->nev, ni = 0;
    uint64_t *all = malloc((nall ? nall : 1) * sizeof *all);
    if (!all) goto oom;
    for (size_t i = 0; i < m->nitems; i++) all[ni++] = m->items[i].id;
    for (size_t e = 0; e < m->nev; e++) all[ni++] = m->ev[e].item;
    qsort(all, ni, sizeof *all, cmp_u64);
    size_t w = 0;
    for (size_t i = 0; i < ni; i++)
        if (w == 0 || all[i] != all[w - 1]) all[w++] = all[i];
    ni = w;
    if (ni >= UINT32_MAX) {
        free(all);
        return rp_errorf(err, RP_ETOOBIG, "%zu items (limit 4294967294)", ni);
    }
    b->item_ids = all;
    b->titles = malloc(ni * sizeof *b->titles);
    b->created = calloc(ni, sizeof *b->created);
    b->in_cat = calloc(ni, 1);
    b->cat_off = malloc((ni + 1) * sizeof *b->cat_off);
    b->cats = malloc((m->ncats ? m->ncats : 1) * sizeof *b->cats);
    uint8_t *rated = calloc(ni, 1);
    if (!b->titles || !b->created || !b->in_cat || !b->cat_off || !b->cats || !rated) {
        free(rated);
        goto oom;
    }
    /* per dense item, the catalogue entry (or none) */
    uint32_t *entry = malloc(ni * sizeof *entry);
    if (!entry) {
        free(rated);
        goto oom;
    }
    memset(entry, 0xff, ni * sizeof *entry);
    for (size_t i = 0; i < m->nitems; i++) {
        uint32_t d = 0;
        find_u64(all, ni, m->items[i].id, &d);
        entry[d] = (uint32_t)i;
        b->in_cat[d] = 1;
    }
    size_t cpos = 0;
    for (size_t d = 0; d < ni; d++) {
        b->cat_off[d] = (uint32_t)cpos;
        if (entry[d] == UINT32_MAX) {
            b->titles[d] = "";
            continue;
        }
        const cat_item *it = &m->items[entry[d]];
        b->titles[d] = m->titles + it->title;
        for (uint32_t k = 0; k < it->nc; k++) b->cats[cpos++] = m->cats[it->c0 + k];
    }
    b->cat_off[ni] = (uint32_t)cpos;
    free(entry);

    /* created = first interaction over all occurrences; items outside the catalogue */
    uint64_t missing_events = 0;
    for (size_t e = 0; e < m->nev; e++) {
        raw_ev *ev = &m->ev[e];
        find_u64(all, ni, ev->item, &ev->dense_item);
        uint32_t d = ev->dense_item;
        if (!rated[d] || ev->ts < b->created[d]) b->created[d] = ev->ts;
        rated[d] = 1;
    }
    uint32_t nrated = 0;
    for (size_t d = 0; d < ni; d++) nrated += rated[d];
    free(rated);

    /* merge duplicates: the later occurrence wins */
    qsort(m->ev, m->nev, sizeof *m->ev, cmp_pair);
    w = 0;
    for (size_t e = 0; e < m->nev; e++) {
        if (w > 0 && m->ev[w - 1].user == m->ev[e].user && m->ev[w - 1].item == m->ev[e].item) {
            m->ev[w - 1] = m->ev[e];
            m->st.duplicates++;
        } else {
            m->ev[w++] = m->ev[e];
        }
    }
    m->nev = w;
    qsort(m->ev, m->nev, sizeof *m->ev, cmp_time);

    /* items missing from the catalogue: count and report the first few (by line) */
    unsigned max = m->o->max_reported ? m->o->max_reported : 10, shown_n = 0;
    uint8_t *seen_missing = calloc(ni, 1);
    if (!seen_missing) goto oom;
    for (size_t e = 0; e < m->nev; e++) {
        uint32_t d = m->ev[e].dense_item;
        if (b->in_cat[d]) continue;
        missing_events++;
        if (!seen_missing[d]) {
            seen_missing[d] = 1;
            m->st.not_in_catalogue_items++;
        }
    }
    if (m->st.not_in_catalogue_items) {
        /* report in file order: the earliest line naming each missing item */
        line_item *li = malloc(missing_events * sizeof *li);
        if (!li) {
            free(seen_missing);
            goto oom;
        }
        size_t nl = 0;
        for (size_t e = 0; e < m->nev; e++)
            if (!b->in_cat[m->ev[e].dense_item])
                li[nl++] = (line_item){m->ev[e].line, m->ev[e].item};
        qsort(li, nl, sizeof *li, cmp_u64); /* line is the first member */
        memset(seen_missing, 0, ni);
        for (size_t k = 0; k < nl && shown_n < max; k++) {
            uint32_t d = 0;
            find_u64(all, ni, li[k].item, &d);
            if (seen_missing[d]) continue;
            seen_missing[d] = 1;
            report(m, "%s:%" PRIu64 ": item %" PRIu64 " is not in the catalogue %s (kept)",
                   m->o->ratings, li[k].line, li[k].item, m->o->items);
            shown_n++;
        }
        free(li);
        if (m->st.not_in_catalogue_items > shown_n)
            report(m, "... %u items not in the catalogue in all, named by %" PRIu64
                   " interactions (kept)", m->st.not_in_catalogue_items, missing_events);
    }
    free(seen_missing);
    m->st.not_in_catalogue_events = missing_events;

    /* users and events */
    size_t nu = 0;
    for (size_t e = 0; e < m->nev; e++)
        if (e == 0 || m->ev[e].user != m->ev[e - 1].user) nu++;
    if (nu >= UINT32_MAX) return rp_errorf(err, RP_ETOOBIG, "%zu users (limit 4294967294)", nu);
    b->user_ids = malloc(nu * sizeof *b->user_ids);
    b->user_off = malloc((nu + 1) * sizeof *b->user_off);
    b->events = malloc(m->nev * sizeof *b->events);
    if (!b->user_ids || !b->user_off || !b->events) goto oom;
    size_t u = 0;
    uint8_t type = m->has_rating ? TYPE_RATING : TYPE_VIEW;
    for (size_t e = 0; e < m->nev; e++) {
        if (e == 0 || m->ev[e].user != m->ev[e - 1].user) {
            b->user_ids[u] = m->ev[e].user;
            b->user_off[u++] = e;
        }
        b->events[e] = (idx_event){.item = m->ev[e].dense_item, .type = type,
                                   .value = m->ev[e].value, .ts = m->ev[e].ts};
    }
    b->user_off[nu] = m->nev;

    /* tags: distinct (item, tag) pairs, items resolved against the final item list */
    b->tag_off = calloc(ni + 1, sizeof *b->tag_off);
    if (!b->tag_off) goto oom;
    size_t np = 0;
    uint64_t *pairs = malloc((m->ntraw ? m->ntraw : 1) * sizeof *pairs);
    if (!pairs) goto oom;
    for (size_t k = 0; k < m->ntraw; k++) {
        uint32_t d = 0;
        if (!find_u64(all, ni, m->traw[k].item, &d)) {
            if (m->st.tags_unknown_item++ < max)
                report(m, "%s: item %" PRIu64 " has a tag but is neither in the catalogue nor "
                       "rated (tag ignored)", m->o->tags, m->traw[k].item);
            continue;
        }
        pairs[np++] = (uint64_t)d << 32 | m->traw[k].tag;
    }
    qsort(pairs, np, sizeof *pairs, cmp_u64);
    w = 0;
    for (size_t k = 0; k < np; k++)
        if (w == 0 || pairs[k] != pairs[w - 1]) pairs[w++] = pairs[k];
    np = w;
    b->tags = malloc((np ? np : 1) * sizeof *b->tags);
    if (!b->tags) {
        free(pairs);
        goto oom;
    }
    for (size_t k = 0; k < np; k++) {
        b->tags[k] = (uint32_t)pairs[k];
        b->tag_off[(pairs[k] >> 32) + 1]++;
    }
    free(pairs);
    for (size_t d = 0; d < ni; d++) b->tag_off[d + 1] += b->tag_off[d];

    b->cat_names = strtab_ptrs(&m->catnames);
    b->tag_names = strtab_ptrs(&m->tagnames);
    if (!b->cat_names || !b->tag_names) goto oom;

    idx_dataset *ds = &b->ds;
    ds->n_users = (uint32_t)nu;
    ds->n_items = (uint32_t)ni;
    ds->n_categories = m->catnames.n;
    ds->n_events = m->nev;
    ds->user_ids = b->user_ids;
    ds->item_ids = b->item_ids;
    ds->user_off = b->user_off;
    ds->events = b->events;
    ds->titles = (const char *const *)b->titles;
    ds->item_cat_off = b->cat_off;
    ds->item_cats = b->cats;
    ds->category_names = (const char *const *)b->cat_names;
    ds->item_created = b->created;
    ds->item_in_catalogue = b->in_cat;
    ds->n_tags = np ? m->tagnames.n : 0;
    ds->item_tag_off = b->tag_off;
    ds->item_tags = b->tags;
    ds->tag_names = (const char *const *)b->tag_names;

    m->st.users = ds->n_users;
    m->st.items = ds->n_items;
    m->st.rated_items = nrated;
    m->st.categories = ds->n_categories;
    m->st.tags = ds->n_tags;
    m->st.events = ds->n_events;
    return RP_OK;
oom:
    return rp_errorf(err, RP_ENOMEM, "out of memory building the dataset");
}

int idx_import(const idx_import_opts *o, idx_import_stats *stats, rp_error *err)
{
    imp m = {.o = o};
    built b = {0};
    char tmp[PATH_MAX] = "";
    int rc;
    struct stat st;

    if (!o->ratings || !o->items || !o->out)
        return rp_errorf(err, RP_EINVAL, "ratings, items and out are required");
    if (o->items_format != IDX_ITEMS_CSV && o->items_format != IDX_ITEMS_ML100K)
        return rp_errorf(err, RP_EINVAL, "unknown items format %d", (int)o->items_format);
    if (lstat(o->out, &st) == 0 && !o->force)
        return rp_errorf(err, RP_EEXIST, "%s already exists (use --force to replace it)", o->out);

    if ((rc = read_catalogue(&m, err))) goto cleanup;
    if ((rc = read_interactions(&m, err))) goto cleanup;
    if (o->tags && (rc = read_tags(&m, err))) goto cleanup;
    if ((rc = build(&m, &b, err))) goto cleanup;
    if (canceled(&m, err)) {
        rc = RP_ECANCELED;
        goto cleanup;
    }

    if (o->progress) o->progress(o->progress_ctx, "writing", 0, 0);
    if ((rc = idx_tmpdir_near(o->out, tmp, sizeof tmp, err))) {
        tmp[0] = '\0';
        goto cleanup;
    }
    char nbuf[8][32], when[32];
    snprintf(nbuf[0], 32, "%" PRIu64, m.st.duplicates);
    snprintf(nbuf[1], 32, "%" PRIu64, m.st.skipped);
    snprintf(nbuf[2], 32, "%" PRIu64, m.st.not_in_catalogue_events);
    snprintf(nbuf[3], 32, "%u", m.st.not_in_catalogue_items);
    snprintf(nbuf[4], 32, "%u", m.st.catalogue_items);
    snprintf(when, sizeof when, "%lld", (long long)time(NULL));
    const char *meta[] = {
        "kind", "import",
        "created_at", when,
        "source.ratings", o->ratings,
        "source.items", o->items,
        "source.tags", o->tags ? o->tags : "",
        "import.duplicates_merged", nbuf[0],
        "import.lines_skipped", nbuf[1],
        "import.not_in_catalogue_events", nbuf[2],
        "import.not_in_catalogue_items", nbuf[3],
        "import.catalogue_items", nbuf[4],
    };
    if ((rc = idx__dataset_write(tmp, &b.ds, meta, sizeof meta / sizeof meta[0] / 2, err)))
        goto cleanup;
    static const char *const files[] = {"data.mdb"};
    if ((rc = idx__dataset_write_sums(tmp, files, 1, err))) goto cleanup;
    if ((rc = idx_fsync_tree(tmp, err))) goto cleanup;
    if (canceled(&m, err)) {
        rc = RP_ECANCELED;
        goto cleanup;
    }
    if ((rc = idx_publish_dir(tmp, o->out, o->force, err))) goto cleanup;
    tmp[0] = '\0';

cleanup:
    if (tmp[0]) idx_rmtree(tmp);
    if (stats) *stats = m.st;
    built_free(&b);
    free(m.items);
    u64map_free(&m.item_line);
    free(m.titles);
    free(m.cats);
    strtab_free(&m.catnames);
    free(m.ev);
    strtab_free(&m.tagnames);
    free(m.traw);
    return rc;
}
