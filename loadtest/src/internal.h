/* Shared by the files of loadtest/ only. */
#ifndef LT_INTERNAL_H
#define LT_INTERNAL_H

#include <stddef.h>

/* The percentiles of the latency spectrum (JSON and SVG), ascending, 0 .. 100. */
extern const double lt__spectrum_ps[];
extern const size_t lt__spectrum_n;

#endif
