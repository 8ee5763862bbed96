/*
 * idx/ann.h — approximate nearest neighbours: the one wrapper over FAISS.
 *
 * Only index/ sees FAISS. An idx_ann is one FAISS index built from an index factory
 * string ("Flat", "IVF256,Flat", "IVF1024,PQ16", "HNSW32", ...) with a metric. Labels
 * are row numbers: the n-th vector added gets label ntotal + n (the bundle maps rows
 * to item ids). FAISS errors are copied into the rp_error at once (RP_EFAISS with
 * FAISS's own message); our own checks come first and name the limit.
 *
 * Scores are what FAISS computes: the inner product for IDX_METRIC_IP (larger is
 * better) and the *squared* L2 distance for IDX_METRIC_L2 (smaller is better). Missing
 * results (fewer than k vectors reachable) have label -1.
 *
 * Threads: searches on one idx_ann may run concurrently from any number of threads.
 * Train, add, set_param and write must not overlap with anything else on that index.
 * FAISS uses OpenMP inside a call; services set 1 thread (rp_compute_threads).
 */
#ifndef IDX_ANN_H
#define IDX_ANN_H

#include "rp/err.h"

#include <stddef.h>
#include <stdint.h>

typedef enum idx_metric {
    IDX_METRIC_IP = 0, /* inner product, larger is better (FAISS METRIC_INNER_PRODUCT) */
    IDX_METRIC_L2 = 1, /* squared Euclidean distance, smaller is better (METRIC_L2) */
} idx_metric;

/* "ip" / "l2". */
const char *idx_metric_name(idx_metric m);
/* Parses "ip" / "l2" (also "inner_product"); RP_EINVAL naming the accepted values. */
int idx_metric_parse(const char *s, idx_metric *out, rp_error *err);
/* Non-zero when score a ranks before score b under metric m. */
static inline int idx_metric_better(idx_metric m, float a, float b)
{
    return m == IDX_METRIC_IP ? a > b : a < b;
}

typedef struct idx_ann idx_ann;

/* Dimension and count limits checked before FAISS sees anything. */
#define IDX_ANN_MAX_DIM 65536

/*
 * Creates an empty index. RP_EINVAL for dim outside 1..IDX_ANN_MAX_DIM; RP_EFAISS with
 * FAISS's message ("could not parse index string ...") when the factory is rejected.
 * Note: FAISS trains "IVFn,PQm" with polysemous codes by default, which takes minutes
 * even on 10k vectors; "IVFn,PQmnp" skips it (recpipe never uses polysemous search).
 */
int idx_ann_create(const char *factory, uint32_t dim, idx_metric metric, idx_ann **out,
                   rp_error *err);
/* Frees the index. NULL is a no-op. */
void idx_ann_close(idx_ann *a);

/*
 * Trains on n vectors (n × dim floats, row-major). A no-op for indexes that need no
 * training (Flat, HNSW). Errors: RP_EINVAL when a value is NaN/inf (names the vector
 * and component), or when n is below the IVF list count ("IVF1024 needs at least 1024
 * training vectors, got 500"); RP_EFAISS otherwise.
 */
int idx_ann_train(idx_ann *a, size_t n, const float *x, rp_error *err);
/* Adds n vectors with labels ntotal .. ntotal+n-1. Same checks; RP_EPRECOND when the
 * index needs training and has not been trained. */
int idx_ann_add(idx_ann *a, size_t n, const float *x, rp_error *err);
/* Train (when needed, on all n vectors; FAISS subsamples) then add. */
int idx_ann_build(idx_ann *a, size_t n, const float *x, rp_error *err);

/* Top-k of one query (dim floats) into scores[k] and labels[k]. k in 1..100000. */
int idx_ann_search(const idx_ann *a, const float *q, size_t k, float *scores, int64_t *labels,
                   rp_error *err);
/* Top-k of nq queries: scores and labels are nq × k, row-major. FAISS uses BLAS for
 * batches of 20 queries or more. */
int idx_ann_search_batch(const idx_ann *a, size_t nq, const float *q, size_t k, float *scores,
                         int64_t *labels, rp_error *err);

/*
 * Search-time parameters. The tunable knob of an index: "nprobe" for IVF indexes,
 * "efSearch" for HNSW, NULL when there is none (Flat, PQ without IVF). Set through
 * FAISS's ParameterSpace, so it reaches wrapped indexes too. nprobe is saved in the
 * index file: readers set it explicitly after idx_ann_read (the bundle does).
 */
const char *idx_ann_param_name(const idx_ann *a);
/* Sets one parameter ("nprobe", 16). RP_EINVAL when the index has no such parameter,
 * with FAISS's message. */
int idx_ann_set_param(idx_ann *a, const char *name, double value, rp_error *err);
/*
 * Like idx_ann_search_batch with the knob set to `value` for this call only: the index
 * is not modified, so this is safe alongside other searches (idx_ann_set_param is not).
 * A service uses it to search wider for one request without a second copy of the index.
 * IVF nprobe only (also under a PCA/OPQ pre-transform): RP_EINVAL with FAISS's message
 * for HNSW (FAISS 1.7.3 ignores a per-call efSearch), Flat, or other wrappers.
 */
int idx_ann_search_param(const idx_ann *a, size_t nq, const float *q, size_t k, double value,
                         float *scores, int64_t *labels, rp_error *err);
/* The current value of the knob (0 when there is none). */
double idx_ann_param_value(const idx_ann *a);
/* The IVF list count parsed from the factory string (0 when not IVF). */
uint32_t idx_ann_nlist(const idx_ann *a);

/* Writes / reads the FAISS index file. read: RP_ENOENT when missing, RP_ECORRUPT with
 * FAISS's message when unreadable. The reader learns the factory string from the
 * caller (it is not in the FAISS file): pass the manifest's, or NULL. */
int idx_ann_write(const idx_ann *a, const char *path, rp_error *err);
int idx_ann_read(const char *path, const char *factory, idx_ann **out, rp_error *err);

uint32_t idx_ann_dim(const idx_ann *a);
idx_metric idx_ann_metric(const idx_ann *a);
uint64_t idx_ann_ntotal(const idx_ann *a);
int idx_ann_is_trained(const idx_ann *a);
/* The factory string the index was created with ("" when read without one). */
const char *idx_ann_factory(const idx_ann *a);
/* Bytes the index holds in memory: its serialized size (for Flat, IVF and PQ indexes
 * the same arrays as in RAM; HNSW adds a little per node). */
uint64_t idx_ann_memory_bytes(const idx_ann *a);

/*
 * The default factory for n vectors, written into buf (cap ≥ 32): "Flat" below 50,000
 * vectors (exact search is fast enough and needs no tuning); above, "IVF<nlist>,Flat"
 * with nlist = sqrt(n) rounded to the nearest power of two, clamped to 256..65536 —
 * about sqrt(n) vectors per list keeps both the k-means training and the scan per
 * probe short.
 */
void idx_ann_default_factory(uint64_t n, char *buf, size_t cap);

/* Checks that every value is finite; RP_EINVAL naming vector and component. */
int idx_check_finite(const float *x, size_t n, uint32_t dim, const char *what, rp_error *err);

/*
 * Exact top-k over candidate vectors: vecs is n × dim (row-major), ids[n] their
 * labels (NULL: the row numbers). Writes min(k, n) results best first into scores and
 * labels, padding up to k with label -1. Used for filtered search over a posting list
 * and as the ground truth for tuning. Cannot fail.
 */
size_t idx_exact_topk(idx_metric m, uint32_t dim, const float *q, size_t n, const float *vecs,
                      const int64_t *ids, size_t k, float *scores, int64_t *labels);
/*
 * Exact k-NN of nq queries against n base vectors (labels = base rows), nq × k into
 * labels (scores may be NULL). Uses a FAISS flat index (BLAS); all cores.
 */
int idx_exact_knn(idx_metric m, uint32_t dim, size_t n, const float *base, size_t nq,
                  const float *q, size_t k, int64_t *labels, rp_error *err);

/* recall@k: mean over queries of |found ∩ truth| / min(k, |truth|), both nq × k with -1
 * padding (truth rows may have stride truth_k ≥ k). */
double idx_recall_at(size_t nq, size_t k, const int64_t *found, size_t found_k,
                     const int64_t *truth, size_t truth_k);

/* Auto-tuning (index/src/tune.c). */
typedef struct idx_tune_result {
    char param[16];   /* "nprobe", "efSearch", or "" when the index has no knob */
    double value;     /* the chosen value (0 when param is "") */
    double recall;    /* recall@k measured at that value */
    int reached;      /* 1 when recall >= target; 0 when even the largest value fell short */
} idx_tune_result;

/*
 * Finds the smallest knob value whose recall@k of the index against `truth` (nq × k
 * exact labels from idx_exact_knn) reaches target: doubling from 1 (nprobe, up to
 * nlist) or 16 (efSearch, up to 4096), then bisecting the last interval (recall is
 * taken to grow with the knob). Leaves the
 * index set to the chosen value (the largest tried when the target is not reached) and
 * reports it. An index with no knob is measured once.
 */
int idx_ann_tune(idx_ann *a, size_t nq, const float *q, size_t k, const int64_t *truth,
                 double target, idx_tune_result *out, rp_error *err);
/*
 * The same, given the base vectors the index was built from (n × dim, row = label): for
 * a bare IVF index the recall curve over every nprobe is first computed from the lists
 * the queries probe and the lists their true neighbours live in (one quantizer pass),
 * and the search starts at the value it predicts — usually two measured searches instead
 * of a dozen. The result is still the measured one.
 */
int idx_ann_tune_base(idx_ann *a, const float *base, size_t nq, const float *q, size_t k,
                      const int64_t *truth, double target, idx_tune_result *out, rp_error *err);

#endif
