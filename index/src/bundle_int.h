/* Internal to index/: shared by itemstore.c, bundle.c and builder.c. */
#ifndef IDX_BUNDLE_INT_H
#define IDX_BUNDLE_INT_H

#include "idx/bundle.h"
#include "idx/itemstore.h"

#include <stddef.h>
#include <stdint.h>

/* ---- string interning (category names) ---- */
typedef struct idx__strtab {
    char **names;     /* [n] owned copies, in first-seen order */
    uint32_t n, cap;
    uint32_t *slots;  /* open addressing: index+1, 0 = empty */
    uint32_t nslots;  /* power of two */
} idx__strtab;

/* Returns the index of s, adding it when new; UINT32_MAX on out of memory. */
uint32_t idx__strtab_intern(idx__strtab *t, const char *s);
void idx__strtab_free(idx__strtab *t);

/* ---- item store ---- */
#define IDX__ITEMS_FILE "items.mdb"

typedef struct idx__itemstore_writer idx__itemstore_writer;

/* Creates the LMDB file path (must not exist) sized for about `bytes` of records. */
int idx__itemstore_writer_open(const char *path, uint32_t dim, uint64_t bytes,
                               idx__itemstore_writer **out, rp_error *err);
/* Adds one item; ids must come in strictly ascending order. */
int idx__itemstore_writer_put(idx__itemstore_writer *w, const idx_item *item, const float *vec,
                              rp_error *err);
/* Writes the posting lists and counts, commits and closes. Consumes w. */
int idx__itemstore_writer_finish(idx__itemstore_writer *w, rp_error *err);
/* Discards w (the file is left for the caller to remove). NULL is a no-op. */
void idx__itemstore_writer_abort(idx__itemstore_writer *w);
/* Bytes one record takes (for sizing the map). */
size_t idx__itemstore_record_size(uint32_t dim, size_t title_len, size_t cats_len);

int idx__itemstore_open(const char *path, idx_itemstore **out, rp_error *err);
void idx__itemstore_close(idx_itemstore *s);

/* ---- checksums ---- */
/* SHA-256 of a file as 64 lowercase hex digits into hex[65]; size into *size. */
int idx__sha256_file(const char *path, char hex[65], uint64_t *size, rp_error *err);

#endif
