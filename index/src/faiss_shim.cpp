// The FAISS C API functions recpipe calls, implemented over Debian's libfaiss.a (which
// ships the C API headers but not their implementation). Compiled against those
// headers so that every signature is checked, and with NDEBUG so the shipped
// CATCH_AND_HANDLE macro does not print each exception. Every C++ exception becomes an
// error code; its message stays readable through faiss_get_last_error() on the same
// thread until the next failing call.
#ifndef NDEBUG
#define NDEBUG 1
#endif

#include <faiss/AutoTune.h>
#include <faiss/Index.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>
#include <faiss/c_api/macros_impl.h>

#include "faiss_ext.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

thread_local std::exception_ptr faiss_last_exception;

namespace {
thread_local std::string last_error_text;

faiss::Index *cpp(FaissIndex *i) { return reinterpret_cast<faiss::Index *>(i); }
const faiss::Index *cpp(const FaissIndex *i) { return reinterpret_cast<const faiss::Index *>(i); }
const faiss::ParameterSpace *cpp(const FaissParameterSpace *p)
{
    return reinterpret_cast<const faiss::ParameterSpace *>(p);
}
} // namespace

extern "C" {

const char *faiss_get_last_error()
{
    if (!faiss_last_exception) return nullptr;
    try {
        std::rethrow_exception(faiss_last_exception);
    } catch (faiss::FaissException &e) {
        // FAISS prefixes "Error in <function> at <file>:<line>: "; keep only the reason,
        // which is what a user can act on.
        last_error_text = e.msg;
        if (last_error_text.rfind("Error in ", 0) == 0) {
            size_t at = last_error_text.find(" at ");
            size_t colon = at == std::string::npos ? at : last_error_text.find(": ", at);
            if (colon != std::string::npos) last_error_text.erase(0, colon + 2);
        }
    } catch (std::exception &e) {
        last_error_text = e.what();
    } catch (...) {
        last_error_text = "Unknown error";
    }
    return last_error_text.c_str();
}

int faiss_index_factory(FaissIndex **p_index, int d, const char *description,
                        FaissMetricType metric)
{
    try {
        *p_index = reinterpret_cast<FaissIndex *>(
            faiss::index_factory(d, description, static_cast<faiss::MetricType>(metric)));
    }
    CATCH_AND_HANDLE
}

DEFINE_DESTRUCTOR(Index)
DEFINE_GETTER(Index, int, d)
DEFINE_GETTER(Index, int, is_trained)
DEFINE_GETTER(Index, idx_t, ntotal)
DEFINE_GETTER(Index, FaissMetricType, metric_type)

int faiss_Index_train(FaissIndex *index, idx_t n, const float *x)
{
    try {
        cpp(index)->train(n, x);
    }
    CATCH_AND_HANDLE
}

int faiss_Index_add(FaissIndex *index, idx_t n, const float *x)
{
    try {
        cpp(index)->add(n, x);
    }
    CATCH_AND_HANDLE
}

int faiss_Index_add_with_ids(FaissIndex *index, idx_t n, const float *x, const idx_t *xids)
{
    try {
        cpp(index)->add_with_ids(n, x, xids);
    }
    CATCH_AND_HANDLE
}

int faiss_Index_search(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                       float *distances, idx_t *labels)
{
    try {
        cpp(index)->search(n, x, k, distances, labels);
    }
    CATCH_AND_HANDLE
}

int faiss_Index_reconstruct(const FaissIndex *index, idx_t key, float *recons)
{
    try {
        cpp(index)->reconstruct(key, recons);
    }
    CATCH_AND_HANDLE
}

int faiss_write_index(const FaissIndex *idx, FILE *f)
{
    try {
        faiss::write_index(cpp(idx), f);
    }
    CATCH_AND_HANDLE
}

int faiss_write_index_fname(const FaissIndex *idx, const char *fname)
{
    try {
        faiss::write_index(cpp(idx), fname);
    }
    CATCH_AND_HANDLE
}

int faiss_read_index_fname(const char *fname, int io_flags, FaissIndex **p_out)
{
    try {
        *p_out = reinterpret_cast<FaissIndex *>(faiss::read_index(fname, io_flags));
    }
    CATCH_AND_HANDLE
}

DEFINE_INDEX_DOWNCAST(IndexIVF)
DEFINE_GETTER(IndexIVF, size_t, nlist)
DEFINE_GETTER_PERMISSIVE(IndexIVF, FaissIndex *, quantizer)
DEFINE_GETTER(IndexIVF, size_t, nprobe)
DEFINE_SETTER(IndexIVF, size_t, nprobe)

DEFINE_DESTRUCTOR(ParameterSpace)

int faiss_ParameterSpace_new(FaissParameterSpace **space)
{
    try {
        *space = reinterpret_cast<FaissParameterSpace *>(new faiss::ParameterSpace());
    }
    CATCH_AND_HANDLE
}

int faiss_ParameterSpace_set_index_parameters(const FaissParameterSpace *space,
                                              FaissIndex *index, const char *params)
{
    try {
        cpp(space)->set_index_parameters(cpp(index), params);
    }
    CATCH_AND_HANDLE
}

int faiss_ParameterSpace_set_index_parameter(const FaissParameterSpace *space,
                                             FaissIndex *index, const char *name, double value)
{
    try {
        cpp(space)->set_index_parameter(cpp(index), name, value);
    }
    CATCH_AND_HANDLE
}

int idx__faiss_search_param(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                            const char *name, double value, float *distances, idx_t *labels)
{
    try {
        const faiss::Index *top = cpp(index);
        const faiss::Index *inner = top;
        auto *pre = dynamic_cast<const faiss::IndexPreTransform *>(top);
        if (pre) inner = pre->index;
        faiss::SearchParametersIVF ivf;
        faiss::SearchParameters *p = nullptr;
        // IVF only: 1.7.3's IndexHNSW::search accepts SearchParametersHNSW but its
        // graph walk keeps the index's own efSearch (measured: results of a per-call
        // efSearch=40 differ from efSearch set to 40), so it is refused here.
        if (!std::strcmp(name, "nprobe") && dynamic_cast<const faiss::IndexIVF *>(inner)) {
            ivf.nprobe = static_cast<size_t>(value);
            p = &ivf;
        } else {
            FAISS_THROW_FMT("%s cannot be set for one search on this index (IVF nprobe "
                            "only; set it with ParameterSpace instead)",
                            name);
        }
        faiss::SearchParametersPreTransform outer;
        if (pre) {
            outer.index_params = p;
            p = &outer;
        }
        top->search(n, x, k, distances, labels, p);
    }
    CATCH_AND_HANDLE
}

} // extern "C"
