#include "idx/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <sys/statvfs.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void split(const char *path, char *dir, char *base)
{
    char a[PATH_MAX], b[PATH_MAX];
    snprintf(a, sizeof a, "%s", path);
    snprintf(b, sizeof b, "%s", path);
    /* Trailing slashes would make basename() return "". */
    for (size_t n = strlen(b); n > 1 && b[n - 1] == '/'; n--) b[n - 1] = a[n - 1] = '\0';
    snprintf(dir, PATH_MAX, "%s", dirname(a));
    snprintf(base, PATH_MAX, "%s", basename(b));
}

int idx_tmpdir_near(const char *final_path, char *tmp, size_t cap, rp_error *err)
{
    char dir[PATH_MAX], base[PATH_MAX];
    split(final_path, dir, base);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return rp_errorf(err, RP_EIO, "%s: parent directory %s does not exist", final_path, dir);
    int n = snprintf(tmp, cap, "%s/.%s.tmp-XXXXXX", dir, base);
    if (n < 0 || (size_t)n >= cap) return rp_errorf(err, RP_EINVAL, "%s: path too long", final_path);
    if (!mkdtemp(tmp))
        return rp_errorf(err, RP_EIO, "%s: cannot create a directory in %s: %s", final_path, dir,
                         strerror(errno));
    return RP_OK;
}

static int fsync_path(const char *path, int flags, rp_error *err)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0) return rp_errorf(err, RP_EIO, "%s: open: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && e != EINVAL) return rp_errorf(err, RP_EIO, "%s: fsync: %s", path, strerror(e));
    return RP_OK;
}

int idx_fsync_tree(const char *dir, rp_error *err)
{
    DIR *d = opendir(dir);
    if (!d) return rp_errorf(err, RP_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = RP_OK;
    char path[PATH_MAX];
    while (rc == RP_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) rc = idx_fsync_tree(path, err);
        else if (S_ISREG(st.st_mode)) rc = fsync_path(path, O_RDONLY, err);
    }
    closedir(d);
    if (rc == RP_OK) rc = fsync_path(dir, O_RDONLY | O_DIRECTORY, err);
    return rc;
}

int idx_fsync_parent(const char *path, rp_error *err)
{
    char dir[PATH_MAX], base[PATH_MAX];
    split(path, dir, base);
    return fsync_path(dir, O_RDONLY | O_DIRECTORY, err);
}

int idx_publish_dir(const char *tmp, const char *final_path, int replace, rp_error *err)
{
    struct stat st;
    if (lstat(final_path, &st) == 0) {
        if (!replace)
            return rp_errorf(err, RP_EEXIST, "%s already exists (remove it or choose another path)",
                             final_path);
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final_path, RENAME_EXCHANGE) != 0)
            return rp_errorf(err, RP_EIO, "%s: cannot swap in the new directory: %s", final_path,
                             strerror(errno));
        idx_rmtree(tmp); /* now holds the old contents */
    } else if (rename(tmp, final_path) != 0) {
        return rp_errorf(err, RP_EIO, "%s: rename: %s", final_path, strerror(errno));
    }
    return idx_fsync_parent(final_path, err);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void idx_rmtree(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int idx_write_errno(const char *path, int rc)
{
    if (rc != EIO) return rc;
    struct statvfs v;
    /* Less than 1 MiB left after a failed write: the write did not fit. */
    if (statvfs(path, &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize < (1u << 20)) return ENOSPC;
    return rc;
}
