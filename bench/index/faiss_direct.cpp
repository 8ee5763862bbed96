// The baseline of bench_index: FAISS's C++ API called directly (no recpipe code in the
// path), with the same factory string, metric and nprobe as the wrapper being measured.
#include <faiss/AutoTune.h>
#include <faiss/Index.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <cstdint>
#include <cstdio>

extern "C" {

void *direct_build(const char *factory, int d, int ip, int64_t n, const float *x)
{
    try {
        faiss::Index *index = faiss::index_factory(
            d, factory, ip ? faiss::METRIC_INNER_PRODUCT : faiss::METRIC_L2);
        index->train(n, x);
        index->add(n, x);
        return index;
    } catch (std::exception &e) {
        std::fprintf(stderr, "direct FAISS: %s\n", e.what());
        return nullptr;
    }
}

int direct_set(void *index, const char *name, double value)
{
    try {
        faiss::ParameterSpace().set_index_parameter(static_cast<faiss::Index *>(index), name,
                                                    value);
        return 0;
    } catch (std::exception &e) {
        std::fprintf(stderr, "direct FAISS: %s\n", e.what());
        return -1;
    }
}

void direct_search(void *index, int64_t nq, const float *q, int64_t k, float *dist,
                   int64_t *labels)
{
    static_cast<faiss::Index *>(index)->search(nq, q, k, dist, labels);
}

void direct_free(void *index)
{
    delete static_cast<faiss::Index *>(index);
}
}
