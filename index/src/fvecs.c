/* TEXMEX .fvecs / .ivecs files and text id lists. */
#include "idx/fvecs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Reads records of (int32 dim, dim × 4-byte values) into one array. */
static int read_vecs(const char *path, void **out, size_t *n_out, uint32_t *dim_out,
                     rp_error *err)
{
    *out = NULL;
    *n_out = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return rp_errorf(err, errno == ENOENT ? RP_ENOENT : RP_EIO, "%s: %s", path,
                         strerror(errno));
    int rc = RP_OK;
    unsigned char *data = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        rc = rp_errorf(err, RP_EIO, "%s: %s", path, strerror(errno));
        goto out;
    }
    int32_t d;
    if (fread(&d, 4, 1, f) != 1) {
        rc = rp_errorf(err, RP_EPARSE, "%s: empty file (no vectors)", path);
        goto out;
    }
    if (d <= 0 || d > 65536) {
        rc = rp_errorf(err, RP_EPARSE, "%s: record 0: dimension %d is outside 1..65536", path, d);
        goto out;
    }
    size_t rec = 4 + 4 * (size_t)d;
    if ((size_t)st.st_size % rec != 0) {
        rc = rp_errorf(err, RP_EPARSE,
                       "%s: size %lld is not a multiple of the record size %zu (dimension %d): "
                       "truncated file or mixed dimensions",
                       path, (long long)st.st_size, rec, d);
        goto out;
    }
    size_t n = (size_t)st.st_size / rec;
    data = malloc(n * 4 * (size_t)d);
    if (!data) {
        rc = rp_errorf(err, RP_ENOMEM, "%s: out of memory for %zu vectors", path, n);
        goto out;
    }
    rewind(f);
    for (size_t i = 0; i < n; i++) {
        int32_t di;
        if (fread(&di, 4, 1, f) != 1 || fread(data + i * 4 * (size_t)d, 4, (size_t)d, f) != (size_t)d) {
            rc = rp_errorf(err, RP_EPARSE, "%s: record %zu: truncated", path, i);
            goto out;
        }
        if (di != d) {
            rc = rp_errorf(err, RP_EPARSE, "%s: record %zu: dimension %d differs from %d", path,
                           i, di, d);
            goto out;
        }
    }
    *out = data;
    data = NULL;
    *n_out = n;
    *dim_out = (uint32_t)d;
out:
    free(data);
    fclose(f);
    return rc;
}

int idx_fvecs_read(const char *path, float **out, size_t *n, uint32_t *dim, rp_error *err)
{
    return read_vecs(path, (void **)out, n, dim, err);
}

int idx_ivecs_read(const char *path, int32_t **out, size_t *n, uint32_t *dim, rp_error *err)
{
    return read_vecs(path, (void **)out, n, dim, err);
}

int idx_fvecs_write(const char *path, const float *x, size_t n, uint32_t dim, rp_error *err)
{
    FILE *f = fopen(path, "wb");
    if (!f) return rp_errorf(err, RP_EIO, "%s: %s", path, strerror(errno));
    int32_t d = (int32_t)dim;
    for (size_t i = 0; i < n; i++) {
        if (fwrite(&d, 4, 1, f) != 1 || fwrite(x + i * dim, 4, dim, f) != dim) {
            fclose(f);
            return rp_errorf(err, RP_EIO, "%s: write: %s", path, strerror(errno));
        }
    }
    if (fclose(f) != 0) return rp_errorf(err, RP_EIO, "%s: close: %s", path, strerror(errno));
    return RP_OK;
}

int idx_ids_read(const char *path, uint64_t **out, size_t *n_out, rp_error *err)
{
    *out = NULL;
    *n_out = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return rp_errorf(err, errno == ENOENT ? RP_ENOENT : RP_EIO, "%s: %s", path,
                         strerror(errno));
    int rc = RP_OK;
    uint64_t *ids = NULL;
    size_t n = 0, cap = 0, line = 0;
    char buf[256];
    while (fgets(buf, sizeof buf, f)) {
        line++;
        char *p = buf;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '\0' || *p == '\n' || *p == '\r' || *p == '#') continue;
        char *end;
        errno = 0;
        if (*p == '-') goto bad;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || errno) goto bad;
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') end++;
        if (*end) goto bad;
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            uint64_t *g = realloc(ids, cap * sizeof *g);
            if (!g) {
                rc = rp_errorf(err, RP_ENOMEM, "%s: out of memory", path);
                goto out;
            }
            ids = g;
        }
        ids[n++] = v;
        continue;
    bad:
        buf[strcspn(buf, "\r\n")] = '\0';
        rc = rp_errorf(err, RP_EPARSE, "%s:%zu: '%.40s' is not an unsigned 64-bit id", path,
                       line, buf);
        goto out;
    }
    *out = ids;
    ids = NULL;
    *n_out = n;
out:
    free(ids);
    fclose(f);
    return rc;
}
