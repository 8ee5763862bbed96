/* The ANN wrapper: the only code that calls the FAISS C API (through faiss_shim.cpp). */
#include "ann_int.h"
#include "faiss_ext.h"

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct idx_ann {
    FaissIndex *index;
    FaissParameterSpace *ps;
    char factory[128];
    uint32_t dim;
    idx_metric metric;
    char param[16];
    double param_value;
    uint32_t nlist;
};

#define MAX_K 100000

/* FAISS overwrites its per-thread message on the next failing call: copy it now. */
static int faiss_fail(rp_error *err, int code, const char *what)
{
    const char *m = faiss_get_last_error();
    return rp_errorf(err, code, "%s: %s", what, m && *m ? m : "unknown FAISS error");
}

const char *idx_metric_name(idx_metric m)
{
    return m == IDX_METRIC_IP ? "ip" : "l2";
}

int idx_metric_parse(const char *s, idx_metric *out, rp_error *err)
{
    if (s && (!strcmp(s, "ip") || !strcmp(s, "inner_product"))) {
        *out = IDX_METRIC_IP;
        return RP_OK;
    }
    if (s && !strcmp(s, "l2")) {
        *out = IDX_METRIC_L2;
        return RP_OK;
    }
    return rp_errorf(err, RP_EINVAL, "metric: '%s' is not one of ip, l2", s ? s : "");
}

int idx_check_finite(const float *x, size_t n, uint32_t dim, const char *what, rp_error *err)
{
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < dim; j++)
            if (!isfinite(x[i * dim + j]))
                return rp_errorf(err, RP_EINVAL, "%s: vector %zu has %s at component %u", what,
                                 i, isnan(x[i * dim + j]) ? "NaN" : "an infinite value", j);
    return RP_OK;
}

/* The IVF list count of a factory string: the digits after "IVF" (0 when none). */
static uint32_t parse_nlist(const char *factory)
{
    const char *p = strstr(factory, "IVF");
    if (!p) return 0;
    p += 3;
    unsigned long v = 0;
    while (isdigit((unsigned char)*p) && v < 100000000UL) v = v * 10 + (unsigned long)(*p++ - '0');
    return (uint32_t)v;
}

static void classify(idx_ann *a)
{
    a->nlist = parse_nlist(a->factory);
    if (a->nlist > 0) snprintf(a->param, sizeof a->param, "nprobe");
    else if (strstr(a->factory, "HNSW")) snprintf(a->param, sizeof a->param, "efSearch");
    else a->param[0] = '\0';
}

static int make(FaissIndex *index, const char *factory, idx_ann **out, rp_error *err)
{
    idx_ann *a = calloc(1, sizeof *a);
    if (!a) {
        faiss_Index_free(index);
        return rp_errorf(err, RP_ENOMEM, "ANN index: out of memory");
    }
    a->index = index;
    if (faiss_ParameterSpace_new(&a->ps) != 0) {
        int rc = faiss_fail(err, RP_EFAISS, "ParameterSpace");
        idx_ann_close(a);
        return rc;
    }
    snprintf(a->factory, sizeof a->factory, "%s", factory ? factory : "");
    a->dim = (uint32_t)faiss_Index_d(index);
    a->metric = faiss_Index_metric_type(index) == METRIC_INNER_PRODUCT ? IDX_METRIC_IP
                                                                       : IDX_METRIC_L2;
    classify(a);
    if (!a->param[0] && faiss_IndexIVF_cast(index)) {
        /* Read without a factory string: a bare IVF index still has its knob. */
        snprintf(a->param, sizeof a->param, "nprobe");
    }
    if (a->param[0] == 'n') {
        /* The file or factory's nprobe: read it back where FAISS lets us. */
        FaissIndexIVF *ivf = faiss_IndexIVF_cast(index);
        a->param_value = ivf ? (double)faiss_IndexIVF_nprobe(ivf) : 1;
        if (ivf) a->nlist = (uint32_t)faiss_IndexIVF_nlist(ivf);
    } else if (a->param[0] == 'e') {
        a->param_value = 16; /* FAISS's default efSearch */
    }
    *out = a;
    return RP_OK;
}

int idx_ann_create(const char *factory, uint32_t dim, idx_metric metric, idx_ann **out,
                   rp_error *err)
{
    *out = NULL;
    if (!factory || !*factory) return rp_errorf(err, RP_EINVAL, "index factory: empty string");
    if (strlen(factory) >= 128)
        return rp_errorf(err, RP_EINVAL, "index factory: longer than 127 characters");
    if (dim < 1 || dim > IDX_ANN_MAX_DIM)
        return rp_errorf(err, RP_EINVAL, "dimension: %u is outside 1..%u", dim, IDX_ANN_MAX_DIM);
    if (metric != IDX_METRIC_IP && metric != IDX_METRIC_L2)
        return rp_errorf(err, RP_EINVAL, "metric: %d is not ip or l2", (int)metric);
    FaissIndex *index = NULL;
    if (faiss_index_factory(&index, (int)dim, factory,
                            metric == IDX_METRIC_IP ? METRIC_INNER_PRODUCT : METRIC_L2) != 0) {
        char what[160];
        snprintf(what, sizeof what, "index factory '%s'", factory);
        return faiss_fail(err, RP_EFAISS, what);
    }
    return make(index, factory, out, err);
}

void idx_ann_close(idx_ann *a)
{
    if (!a) return;
    if (a->ps) faiss_ParameterSpace_free(a->ps);
    if (a->index) faiss_Index_free(a->index);
    free(a);
}

int idx_ann_train(idx_ann *a, size_t n, const float *x, rp_error *err)
{
    if (faiss_Index_is_trained(a->index)) return RP_OK;
    if (n == 0) return rp_errorf(err, RP_EINVAL, "%s: no training vectors", a->factory);
    if (a->nlist > 0 && n < a->nlist)
        return rp_errorf(err, RP_EINVAL,
                         "%s needs at least %u training vectors (one per IVF list), got %zu: "
                         "choose fewer lists or a Flat index",
                         a->factory, a->nlist, n);
    int rc = idx_check_finite(x, n, a->dim, "training vectors", err);
    if (rc) return rc;
    if (faiss_Index_train(a->index, (idx_t)n, x) != 0) return faiss_fail(err, RP_EFAISS, "train");
    return RP_OK;
}

int idx_ann_add(idx_ann *a, size_t n, const float *x, rp_error *err)
{
    if (!faiss_Index_is_trained(a->index))
        return rp_errorf(err, RP_EPRECOND, "%s: add before training", a->factory);
    int rc = idx_check_finite(x, n, a->dim, "vectors", err);
    if (rc) return rc;
    if (n && faiss_Index_add(a->index, (idx_t)n, x) != 0) return faiss_fail(err, RP_EFAISS, "add");
    return RP_OK;
}

int idx_ann_build(idx_ann *a, size_t n, const float *x, rp_error *err)
{
    int rc = idx_ann_train(a, n, x, err);
    return rc ? rc : idx_ann_add(a, n, x, err);
}

int idx_ann_search_batch(const idx_ann *a, size_t nq, const float *q, size_t k, float *scores,
                         int64_t *labels, rp_error *err)
{
    if (k < 1 || k > MAX_K)
        return rp_errorf(err, RP_EINVAL, "k: %zu is outside 1..%d", k, MAX_K);
    if (nq == 0) return RP_OK;
    for (size_t i = 0; i < nq * a->dim; i++)
        if (!isfinite(q[i]))
            return rp_errorf(err, RP_EINVAL, "query %zu: component %zu is not finite",
                             i / a->dim, i % a->dim);
    if (faiss_Index_search(a->index, (idx_t)nq, q, (idx_t)k, scores, labels) != 0)
        return faiss_fail(err, RP_EFAISS, "search");
    return RP_OK;
}

int idx_ann_search_param(const idx_ann *a, size_t nq, const float *q, size_t k, double value,
                         float *scores, int64_t *labels, rp_error *err)
{
    if (!a->param[0])
        return rp_errorf(err, RP_EINVAL, "%s: the index has no search parameter to set",
                         a->factory[0] ? a->factory : "index");
    if (!isfinite(value) || value < 1 || value > 1e7)
        return rp_errorf(err, RP_EINVAL, "%s: %g is outside 1..1e7", a->param, value);
    if (k < 1 || k > MAX_K) return rp_errorf(err, RP_EINVAL, "k: %zu is outside 1..%d", k, MAX_K);
    if (nq == 0) return RP_OK;
    for (size_t i = 0; i < nq * a->dim; i++)
        if (!isfinite(q[i]))
            return rp_errorf(err, RP_EINVAL, "query %zu: component %zu is not finite",
                             i / a->dim, i % a->dim);
    if (idx__faiss_search_param(a->index, (idx_t)nq, q, (idx_t)k, a->param, value, scores,
                                labels) != 0)
        return faiss_fail(err, RP_EINVAL, "search");
    return RP_OK;
}

int idx_ann_search(const idx_ann *a, const float *q, size_t k, float *scores, int64_t *labels,
                   rp_error *err)
{
    return idx_ann_search_batch(a, 1, q, k, scores, labels, err);
}

const char *idx_ann_param_name(const idx_ann *a)
{
    return a->param[0] ? a->param : NULL;
}

int idx_ann_set_param(idx_ann *a, const char *name, double value, rp_error *err)
{
    if (!name || !*name) return rp_errorf(err, RP_EINVAL, "search parameter: empty name");
    if (!isfinite(value) || value < 1 || value > 1e7)
        return rp_errorf(err, RP_EINVAL, "%s: %g is outside 1..1e7", name, value);
    if (faiss_ParameterSpace_set_index_parameter(a->ps, a->index, name, value) != 0) {
        char what[96];
        snprintf(what, sizeof what, "%s: cannot set %s", a->factory, name);
        return faiss_fail(err, RP_EINVAL, what);
    }
    if (a->param[0] && !strcmp(name, a->param)) a->param_value = value;
    return RP_OK;
}

double idx_ann_param_value(const idx_ann *a)
{
    return a->param[0] ? a->param_value : 0;
}

int idx__ann_ivf_lists(const idx_ann *a, size_t n, const float *x, size_t k, int64_t *lists,
                       rp_error *err)
{
    FaissIndexIVF *ivf = faiss_IndexIVF_cast(a->index);
    FaissIndex *quantizer = ivf ? faiss_IndexIVF_quantizer(ivf) : NULL;
    if (!quantizer) return rp_errorf(err, RP_EUNIMPL, "%s: not a bare IVF index", a->factory);
    float *d = malloc(n * k * sizeof *d);
    if (!d) return rp_errorf(err, RP_ENOMEM, "IVF lists: out of memory");
    int rc = faiss_Index_search(quantizer, (idx_t)n, x, (idx_t)k, d, lists) != 0
                 ? faiss_fail(err, RP_EFAISS, "IVF lists")
                 : RP_OK;
    free(d);
    return rc;
}

uint32_t idx_ann_nlist(const idx_ann *a)
{
    return a->nlist;
}

int idx_ann_write(const idx_ann *a, const char *path, rp_error *err)
{
    if (faiss_write_index_fname(a->index, path) != 0) {
        char what[4200];
        snprintf(what, sizeof what, "%s: write", path);
        return faiss_fail(err, RP_EIO, what);
    }
    return RP_OK;
}

int idx_ann_read(const char *path, const char *factory, idx_ann **out, rp_error *err)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return rp_errorf(err, errno == ENOENT ? RP_ENOENT : RP_EIO, "%s: %s", path,
                         strerror(errno));
    FaissIndex *index = NULL;
    if (faiss_read_index_fname(path, 0, &index) != 0) {
        char what[4200];
        snprintf(what, sizeof what, "%s: not a readable FAISS index", path);
        return faiss_fail(err, RP_ECORRUPT, what);
    }
    return make(index, factory, out, err);
}

uint32_t idx_ann_dim(const idx_ann *a)
{
    return a->dim;
}

idx_metric idx_ann_metric(const idx_ann *a)
{
    return a->metric;
}

uint64_t idx_ann_ntotal(const idx_ann *a)
{
    return (uint64_t)faiss_Index_ntotal(a->index);
}

int idx_ann_is_trained(const idx_ann *a)
{
    return faiss_Index_is_trained(a->index);
}

const char *idx_ann_factory(const idx_ann *a)
{
    return a->factory;
}

static ssize_t count_write(void *cookie, const char *buf, size_t size)
{
    (void)buf;
    *(uint64_t *)cookie += size;
    return (ssize_t)size;
}

uint64_t idx_ann_memory_bytes(const idx_ann *a)
{
    uint64_t n = 0;
    cookie_io_functions_t io = {.write = count_write};
    FILE *f = fopencookie(&n, "w", io);
    if (!f) return 0;
    setvbuf(f, NULL, _IOFBF, 1 << 16);
    int rc = faiss_write_index(a->index, f);
    fclose(f);
    return rc == 0 ? n : 0;
}

void idx_ann_default_factory(uint64_t n, char *buf, size_t cap)
{
    if (n < 50000) {
        snprintf(buf, cap, "Flat");
        return;
    }
    double s = sqrt((double)n);
    uint32_t nlist = 256;
    while (nlist < 65536 && fabs(log2(nlist * 2.0) - log2(s)) < fabs(log2((double)nlist) - log2(s)))
        nlist *= 2;
    snprintf(buf, cap, "IVF%u,Flat", nlist);
}

/* ---- exact search ------------------------------------------------------------- */

typedef struct hit {
    float score;
    int64_t label;
} hit;

/* A heap whose root is the worst kept hit. */
static int worse(idx_metric m, const hit *x, const hit *y)
{
    if (x->score != y->score) return idx_metric_better(m, y->score, x->score);
    return x->label > y->label; /* ties: lower label ranks first */
}

static void sift_down(idx_metric m, hit *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && worse(m, &h[l], &h[w])) w = l;
        if (r < n && worse(m, &h[r], &h[w])) w = r;
        if (w == i) return;
        hit t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void sift_up(idx_metric m, hit *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!worse(m, &h[i], &h[p])) return;
        hit t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

size_t idx_exact_topk(idx_metric m, uint32_t dim, const float *q, size_t n, const float *vecs,
                      const int64_t *ids, size_t k, float *scores, int64_t *labels)
{
    hit stackbuf[128];
    hit *h = k <= 128 ? stackbuf : malloc(k * sizeof *h);
    size_t kept = 0;
    if (h) {
        for (size_t i = 0; i < n; i++) {
            const float *v = vecs + i * (size_t)dim;
            float s = 0;
            if (m == IDX_METRIC_IP) {
                for (uint32_t j = 0; j < dim; j++) s += q[j] * v[j];
            } else {
                for (uint32_t j = 0; j < dim; j++) {
                    float d = q[j] - v[j];
                    s += d * d;
                }
            }
            hit c = {s, ids ? ids[i] : (int64_t)i};
            if (kept < k) {
                h[kept] = c;
                sift_up(m, h, kept++);
            } else if (worse(m, &h[0], &c)) {
                h[0] = c;
                sift_down(m, h, kept, 0);
            }
        }
        /* Pop worst-first into the tail: best first in the output. */
        for (size_t out = kept; out > 0; out--) {
            scores[out - 1] = h[0].score;
            labels[out - 1] = h[0].label;
            h[0] = h[out - 1];
            sift_down(m, h, out - 1, 0);
        }
    }
    for (size_t i = kept; i < k; i++) {
        scores[i] = m == IDX_METRIC_IP ? -INFINITY : INFINITY;
        labels[i] = -1;
    }
    if (h != stackbuf) free(h);
    return kept;
}

int idx_exact_knn(idx_metric m, uint32_t dim, size_t n, const float *base, size_t nq,
                  const float *q, size_t k, int64_t *labels, rp_error *err)
{
    idx_ann *flat = NULL;
    float *scores = malloc(nq * k * sizeof *scores);
    if (!scores) return rp_errorf(err, RP_ENOMEM, "exact search: out of memory");
    int rc = idx_ann_create("Flat", dim, m, &flat, err);
    if (rc) goto out;
    rc = idx_ann_add(flat, n, base, err);
    if (rc) goto out;
    rc = idx_ann_search_batch(flat, nq, q, k, scores, labels, err);
out:
    idx_ann_close(flat);
    free(scores);
    return rc;
}

double idx_recall_at(size_t nq, size_t k, const int64_t *found, size_t found_k,
                     const int64_t *truth, size_t truth_k)
{
    if (nq == 0 || k == 0) return 0;
    double sum = 0;
    for (size_t i = 0; i < nq; i++) {
        const int64_t *t = truth + i * truth_k, *f = found + i * found_k;
        size_t nt = 0, hits = 0;
        for (size_t j = 0; j < k && j < truth_k; j++)
            if (t[j] >= 0) nt++;
        if (nt == 0) {
            sum += 1;
            continue;
        }
        for (size_t j = 0; j < k && j < found_k; j++) {
            if (f[j] < 0) continue;
            for (size_t l = 0; l < k && l < truth_k; l++)
                if (t[l] == f[j]) {
                    hits++;
                    break;
                }
        }
        sum += (double)hits / (double)nt;
    }
    return sum / (double)nq;
}
