/*
 * tests/fuzz/fuzz_service.h — what the service fuzz targets share: a private temporary
 * directory with a small bundle (items, categories, ranker), built once per process.
 */
#ifndef TESTS_FUZZ_SERVICE_H
#define TESTS_FUZZ_SERVICE_H

#include "hard_common.h"
#include "inproc.h"

#include "rp/log.h"

static char fz_dir[256];

static void fz_cleanup(void)
{
    if (fz_dir[0]) th_rmtree(fz_dir);
}

/* A private temporary directory, removed at exit. */
static inline const char *fz_tmpdir(void)
{
    if (fz_dir[0]) return fz_dir;
    char *d = th_tmpdir("fuzz");
    snprintf(fz_dir, sizeof fz_dir, "%s", d);
    free(d);
    atexit(fz_cleanup);
    return fz_dir;
}

/* Builds the bundle once; returns its path (a process-lifetime string). Aborts on error. */
static inline const char *fz_bundle(void)
{
    static char path[300];
    if (path[0]) return path;
    rp_log_set_level(RP_LOG_ERROR);
    snprintf(path, sizeof path, "%s/bundle", fz_tmpdir());
    rp_error err = {0};
    if (hc_build_bundle(path, "fuzz-v1", &err)) {
        fprintf(stderr, "fuzz: bundle: %s\n", err.msg);
        abort();
    }
    return path;
}

#endif
