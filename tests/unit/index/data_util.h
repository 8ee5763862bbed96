/* Helpers shared by the dataset tests (test_dataset.c, test_import.c, test_synth.c). */
#ifndef TEST_DATA_UTIL_H
#define TEST_DATA_UTIL_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idx/fsutil.h"

/* A fresh scratch directory under $TMPDIR (or /tmp), removed by td_cleanup. */
static char td_root[PATH_MAX];

static inline const char *td_make(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(td_root, sizeof td_root, "%s/recpipe-data-test-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(td_root)) {
        perror("mkdtemp");
        abort();
    }
    return td_root;
}

static inline void td_cleanup(void)
{
    if (td_root[0]) idx_rmtree(td_root);
    td_root[0] = '\0';
}

/* td_root + "/" + name, in a static ring of buffers. */
static inline const char *td_path(const char *name)
{
    static char ring[8][PATH_MAX];
    static int k;
    char *p = ring[k++ % 8];
    snprintf(p, PATH_MAX, "%s/%s", td_root, name);
    return p;
}

/* Writes bytes to td_path(name); returns the path. */
static inline const char *td_write(const char *name, const void *bytes, size_t n)
{
    const char *p = td_path(name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(bytes, 1, n, f) != n || fclose(f) != 0) {
        perror(p);
        abort();
    }
    return p;
}

static inline const char *td_writes(const char *name, const char *text)
{
    return td_write(name, text, strlen(text));
}

static inline int td_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* The project's copy of MovieLens ml-latest-small. */
static inline const char *td_ml(const char *file)
{
    static char ring[4][PATH_MAX];
    static int k;
    char *p = ring[k++ % 4];
    const char *src = getenv("RECPIPE_SOURCE_DIR");
    snprintf(p, PATH_MAX, "%s/data/ml-latest-small/%s", src ? src : ".", file);
    return p;
}

/* The committed fixtures under tests/data. */
static inline const char *td_fixture(const char *file)
{
    static char ring[4][PATH_MAX];
    static int k;
    char *p = ring[k++ % 4];
    const char *src = getenv("RECPIPE_SOURCE_DIR");
    snprintf(p, PATH_MAX, "%s/tests/data/%s", src ? src : ".", file);
    return p;
}

/* Number of entries in a directory other than . and .. (-1 when it cannot be read). */
static inline int td_count_entries(const char *dir);

#include <dirent.h>
static inline int td_count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

#endif
