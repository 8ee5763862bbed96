/*
 * idx/fvecs.h — the TEXMEX vector formats (.fvecs, .ivecs) and id lists.
 *
 * Each record is a little-endian int32 dimension followed by that many float32 (.fvecs)
 * or int32 (.ivecs) values; every record of a file has the same dimension.
 */
#ifndef IDX_FVECS_H
#define IDX_FVECS_H

#include "rp/err.h"

#include <stddef.h>
#include <stdint.h>

/* Reads a whole .fvecs file: *out is malloc'd n × dim floats (caller frees). Errors name
 * the file and the record: RP_ENOENT, RP_EPARSE (dimension ≤ 0 or changing, truncated
 * record, empty file). */
int idx_fvecs_read(const char *path, float **out, size_t *n, uint32_t *dim, rp_error *err);
/* The same for .ivecs (int32 values). */
int idx_ivecs_read(const char *path, int32_t **out, size_t *n, uint32_t *dim, rp_error *err);
/* Writes n × dim floats as .fvecs. */
int idx_fvecs_write(const char *path, const float *x, size_t n, uint32_t dim, rp_error *err);
/* Reads a text file of unsigned 64-bit ids, one per line (blank lines and '#' comments
 * skipped): *out malloc'd. RP_EPARSE naming file and line. */
int idx_ids_read(const char *path, uint64_t **out, size_t *n, rp_error *err);

#endif
