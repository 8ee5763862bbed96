/*
 * idx/fsutil.h — directories that appear only when complete.
 *
 * Writers (import, bundle build) create a temporary directory next to the final path,
 * fill it, fsync it, then rename it into place: a crash, Ctrl-C or full disk leaves
 * at most a ".tmp-*" directory behind, never a half-written result.
 */
#ifndef IDX_FSUTIL_H
#define IDX_FSUTIL_H

#include "rp/err.h"

#include <stddef.h>

/* Creates an empty directory "<dirname(final)>/.<basename(final)>.tmp-XXXXXX" and
 * writes its path into tmp (of size cap). RP_EIO with the reason when the parent is
 * missing or not writable. */
int idx_tmpdir_near(const char *final_path, char *tmp, size_t cap, rp_error *err);
/* fsyncs every regular file in dir, then dir itself. */
int idx_fsync_tree(const char *dir, rp_error *err);
/* Moves the finished tmp directory to final_path. If final_path exists and replace is
 * non-zero, the old directory is swapped out atomically (renameat2 RENAME_EXCHANGE)
 * and removed; otherwise an existing final_path is RP_EEXIST. fsyncs the parent. */
int idx_publish_dir(const char *tmp, const char *final_path, int replace, rp_error *err);
/* Removes a directory tree (best effort; used to clean up a failed build). */
void idx_rmtree(const char *path);
/* fsyncs the directory containing path. */
int idx_fsync_parent(const char *path, rp_error *err);
/* The errno a failed write to path really means: LMDB reports a short write as EIO,
 * which on a file system with no room left is ENOSPC. Returns rc unchanged otherwise. */
int idx_write_errno(const char *path, int rc);

#endif
