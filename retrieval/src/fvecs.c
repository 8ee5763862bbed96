/* .fvecs files: per row an int32 dimension, then that many float32 (little-endian). */
#include "ret/als.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ret_fvecs_write(const char *path, const float *rows, uint32_t n, uint32_t k, rp_error *err)
{
    FILE *f = fopen(path, "wb");
    if (!f) return rp_errorf(err, RP_EIO, "%s: cannot create: %s", path, strerror(errno));
    int32_t dim = (int32_t)k;
    for (uint32_t i = 0; i < n; i++) {
        if (fwrite(&dim, sizeof dim, 1, f) != 1 ||
            fwrite(rows + (size_t)i * k, sizeof(float), k, f) != k) {
            int e = errno;
            fclose(f);
            return rp_errorf(err, RP_EIO, "%s: write failed at row %u: %s", path, i, strerror(e));
        }
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        int e = errno;
        fclose(f);
        return rp_errorf(err, RP_EIO, "%s: write failed: %s", path, strerror(e));
    }
    if (fclose(f) != 0) return rp_errorf(err, RP_EIO, "%s: close failed: %s", path, strerror(errno));
    return RP_OK;
}

int ret_fvecs_read(const char *path, float **rows, uint32_t *n, uint32_t *k, rp_error *err)
{
    *rows = NULL;
    *n = *k = 0;
    int rc = RP_OK;
    float *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return rp_errorf(err, errno == ENOENT ? RP_ENOENT : RP_EIO, "%s: cannot open: %s", path,
                         strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) goto io;
    long size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) goto io;
    if (size == 0) goto done;
    int32_t dim;
    if (fread(&dim, sizeof dim, 1, f) != 1) goto io;
    if (dim <= 0 || dim > 65536) {
        rc = rp_errorf(err, RP_ECORRUPT, "%s: row 0: dimension %d is outside 1..65536", path, dim);
        goto done;
    }
    size_t rowbytes = sizeof(int32_t) + (size_t)dim * sizeof(float);
    if ((size_t)size % rowbytes != 0) {
        rc = rp_errorf(err, RP_ECORRUPT,
                       "%s: %ld bytes is not a whole number of %d-dimensional rows (truncated "
                       "or ragged)",
                       path, size, dim);
        goto done;
    }
    size_t nrows = (size_t)size / rowbytes;
    if (nrows > UINT32_MAX) {
        rc = rp_errorf(err, RP_ETOOBIG, "%s: %zu rows exceed the limit %u", path, nrows, UINT32_MAX);
        goto done;
    }
    buf = malloc(nrows * (size_t)dim * sizeof(float));
    if (!buf) {
        rc = rp_errorf(err, RP_ENOMEM, "%s: out of memory for %zu rows", path, nrows);
        goto done;
    }
    if (fseek(f, 0, SEEK_SET) != 0) goto io;
    for (size_t i = 0; i < nrows; i++) {
        int32_t d;
        if (fread(&d, sizeof d, 1, f) != 1) goto io;
        if (d != dim) {
            rc = rp_errorf(err, RP_ECORRUPT, "%s: row %zu: dimension %d differs from row 0's %d",
                           path, i, d, dim);
            goto done;
        }
        if (fread(buf + i * (size_t)dim, sizeof(float), (size_t)dim, f) != (size_t)dim) goto io;
    }
    *rows = buf;
    *n = (uint32_t)nrows;
    *k = (uint32_t)dim;
    buf = NULL;
    goto done;
io:
    rc = rp_errorf(err, RP_EIO, "%s: read failed: %s", path, ferror(f) ? strerror(errno) : "unexpected end of file");
done:
    free(buf);
    fclose(f);
    return rc;
}
