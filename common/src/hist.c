#include "rp/hist.h"

#include <math.h>
#include <string.h>

void rp_hist_reset(rp_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min_ns = UINT64_MAX;
}

uint32_t rp_hist_bucket(uint64_t ns)
{
    if (ns > RP_HIST_MAX_NS) ns = RP_HIST_MAX_NS;
    if (ns < RP_HIST_SUB) return (uint32_t)ns;
    unsigned m = 63u - (unsigned)__builtin_clzll(ns); /* 8..35 */
    unsigned shift = m - (RP_HIST_SUB_BITS - 1);
    uint64_t sub = ns >> shift; /* 128..255 */
    return RP_HIST_SUB + (m - RP_HIST_SUB_BITS) * RP_HIST_HALF + (uint32_t)(sub - RP_HIST_HALF);
}

void rp_hist_bucket_bounds(uint32_t b, uint64_t *lo, uint64_t *hi)
{
    if (b < RP_HIST_SUB) {
        *lo = b;
        *hi = (uint64_t)b + 1;
        return;
    }
    uint32_t k = b - RP_HIST_SUB;
    unsigned m = RP_HIST_SUB_BITS + k / RP_HIST_HALF;
    unsigned shift = m - (RP_HIST_SUB_BITS - 1);
    uint64_t sub = RP_HIST_HALF + k % RP_HIST_HALF;
    *lo = sub << shift;
    *hi = (sub + 1) << shift;
}

void rp_hist_record_n(rp_hist *h, uint64_t ns, uint64_t n)
{
    if (n == 0) return;
    if (ns > RP_HIST_MAX_NS) {
        h->clamped += n;
        ns = RP_HIST_MAX_NS;
    }
    h->counts[rp_hist_bucket(ns)] += n;
    h->count += n;
    h->sum_ns += (double)ns * (double)n;
    if (ns < h->min_ns) h->min_ns = ns;
    if (ns > h->max_ns) h->max_ns = ns;
}

void rp_hist_record(rp_hist *h, uint64_t ns)
{
    rp_hist_record_n(h, ns, 1);
}

void rp_hist_merge(rp_hist *dst, const rp_hist *src)
{
    if (src->count == 0) return;
    for (uint32_t b = 0; b < RP_HIST_NBUCKETS; b++) dst->counts[b] += src->counts[b];
    dst->count += src->count;
    dst->clamped += src->clamped;
    dst->sum_ns += src->sum_ns;
    if (src->min_ns < dst->min_ns) dst->min_ns = src->min_ns;
    if (src->max_ns > dst->max_ns) dst->max_ns = src->max_ns;
}

uint64_t rp_hist_percentile(const rp_hist *h, double p)
{
    if (h->count == 0) return 0;
    if (!(p > 0)) return h->min_ns;
    if (p >= 100) return h->max_ns;
    /* The rank of the value wanted, 1-based: at least p % of values are at or below it. */
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (rank < 1) rank = 1;
    if (rank > h->count) rank = h->count;
    uint64_t seen = 0;
    for (uint32_t b = 0; b < RP_HIST_NBUCKETS; b++) {
        seen += h->counts[b];
        if (seen >= rank) {
            uint64_t lo, hi;
            rp_hist_bucket_bounds(b, &lo, &hi);
            uint64_t v = lo + (hi - lo) / 2;
            if (v < h->min_ns) v = h->min_ns;
            if (v > h->max_ns) v = h->max_ns;
            return v;
        }
    }
    return h->max_ns;
}

double rp_hist_mean(const rp_hist *h)
{
    return h->count ? h->sum_ns / (double)h->count : 0.0;
}

uint64_t rp_hist_min(const rp_hist *h)
{
    return h->count ? h->min_ns : 0;
}

uint64_t rp_hist_max(const rp_hist *h)
{
    return h->max_ns;
}

bool rp_hist_next(const rp_hist *h, uint32_t *b, uint64_t *lo, uint64_t *hi, uint64_t *n)
{
    for (uint32_t i = *b; i < RP_HIST_NBUCKETS; i++) {
        if (h->counts[i]) {
            rp_hist_bucket_bounds(i, lo, hi);
            *n = h->counts[i];
            *b = i + 1;
            return true;
        }
    }
    *b = RP_HIST_NBUCKETS;
    return false;
}
