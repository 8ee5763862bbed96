/* Shared by the files of the retrieval module only. */
#ifndef RET_INTERNAL_H
#define RET_INTERNAL_H

#include <stdint.h>

static inline uint32_t ret__hash64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

#endif
