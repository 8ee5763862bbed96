/* Internal to index/: what tune.c needs from ann.c. */
#ifndef IDX_ANN_INT_H
#define IDX_ANN_INT_H

#include "idx/ann.h"

/*
 * For an index that is a bare IVF (no wrapper): the k nearest IVF lists of each of n
 * vectors, in probing order, into lists (n × k). RP_EUNIMPL when the index is not a bare
 * IVF (the caller falls back to measuring).
 */
int idx__ann_ivf_lists(const idx_ann *a, size_t n, const float *x, size_t k, int64_t *lists,
                       rp_error *err);

#endif
