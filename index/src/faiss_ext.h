/* Internal to index/: the one FAISS call the 1.7.3 C API lacks, implemented in
 * faiss_shim.cpp with the C API's conventions (0 or an error code; message through
 * faiss_get_last_error on the same thread). */
#ifndef IDX_FAISS_EXT_H
#define IDX_FAISS_EXT_H

#include <faiss/c_api/Index_c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Index::search with SearchParametersIVF carrying nprobe (through a PCA/OPQ
 * pre-transform when there is one). The index itself is not modified, so this may run
 * alongside other searches. Any other name is refused (FAISS 1.7.3 ignores a per-call
 * efSearch). */
int idx__faiss_search_param(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                            const char *name, double value, float *distances, idx_t *labels);

#ifdef __cplusplus
}
#endif

#endif
