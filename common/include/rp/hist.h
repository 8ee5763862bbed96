/*
 * rp/hist.h — a log-linear latency histogram (HdrHistogram-style).
 *
 * Values are nanoseconds. Values below RP_HIST_SUB (256 ns) have their own bucket;
 * above, each power of two is split into RP_HIST_SUB / 2 = 128 equal sub-buckets, so a
 * bucket is at most 1/128 (0.78 %) of its lower bound wide. A value is reported as
 * the midpoint of its bucket, so any reported figure (percentile, min, max, mean of
 * bucket representatives) is within 0.4 % of a recorded value. The range is 0 to
 * RP_HIST_MAX_NS (60 s); larger values are clamped to it and counted in `clamped`.
 *
 * Not thread-safe: keep one histogram per thread and rp_hist_merge them at the end.
 * A histogram is a caller-owned struct of fixed size (about 30 KiB), initialised by
 * rp_hist_reset; it holds no pointers, so copying it with memcpy is fine.
 */
#ifndef RP_HIST_H
#define RP_HIST_H

#include <stdbool.h>
#include <stdint.h>

#define RP_HIST_SUB_BITS 8
#define RP_HIST_SUB (1u << RP_HIST_SUB_BITS) /* 256 */
#define RP_HIST_HALF (RP_HIST_SUB / 2)       /* 128 sub-buckets per power of two */
#define RP_HIST_MAX_NS 60000000000ull        /* 60 s */
/* Buckets: 0..255 exact, then 128 per power of two from 2^8 up to 2^36 (> 60 s). */
#define RP_HIST_MAGNITUDES 28
#define RP_HIST_NBUCKETS (RP_HIST_SUB + RP_HIST_MAGNITUDES * RP_HIST_HALF)

typedef struct rp_hist {
    uint64_t count;   /* values recorded */
    uint64_t clamped; /* values above RP_HIST_MAX_NS (recorded as RP_HIST_MAX_NS) */
    uint64_t min_ns;  /* exact smallest recorded value (UINT64_MAX when empty) */
    uint64_t max_ns;  /* exact largest recorded value (0 when empty) */
    double sum_ns;    /* exact sum, for the mean */
    uint64_t counts[RP_HIST_NBUCKETS];
} rp_hist;

/* Empties h. */
void rp_hist_reset(rp_hist *h);
/* Records one value (n times for record_n). */
void rp_hist_record(rp_hist *h, uint64_t ns);
void rp_hist_record_n(rp_hist *h, uint64_t ns, uint64_t n);
/* Adds every value of src into dst. */
void rp_hist_merge(rp_hist *dst, const rp_hist *src);

/* The bucket index holding ns (clamped to the range). */
uint32_t rp_hist_bucket(uint64_t ns);
/* The half-open value range [lo, hi) of bucket b < RP_HIST_NBUCKETS. */
void rp_hist_bucket_bounds(uint32_t b, uint64_t *lo, uint64_t *hi);

/*
 * The value at percentile p (0..100): the smallest recorded value v such that at least
 * p % of the values are <= v, reported as its bucket's midpoint and kept within
 * [min_ns, max_ns]. p = 0 gives min_ns, p = 100 gives max_ns. 0 when empty.
 */
uint64_t rp_hist_percentile(const rp_hist *h, double p);
/* Exact mean of the recorded values; 0 when empty. */
double rp_hist_mean(const rp_hist *h);
/* min_ns, or 0 when empty. */
uint64_t rp_hist_min(const rp_hist *h);
uint64_t rp_hist_max(const rp_hist *h);

/*
 * Iterates over non-empty buckets in increasing order: start with *b = 0, then
 * `while (rp_hist_next(h, &b, &lo, &hi, &n)) { ...; }`. Returns false at the end.
 * On true, [lo, hi) is the bucket's range and n its count; *b has moved past it.
 */
bool rp_hist_next(const rp_hist *h, uint32_t *b, uint64_t *lo, uint64_t *hi, uint64_t *n);

#endif
