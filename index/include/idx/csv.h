/*
 * idx/csv.h — a streaming reader of delimited text (RFC 4180 CSV, TSV, '|'-separated).
 *
 * Reads one record at a time from a file with a fixed-size read buffer, so memory stays
 * bounded by the longest record. Handles: a UTF-8 byte-order mark at the start (skipped),
 * CRLF or LF line ends, blank lines (skipped), RFC 4180 quoting when enabled (separators,
 * line breaks and doubled quotes inside quoted fields), text in another encoding
 * (converted to UTF-8 with iconv) and UTF-8 validation.
 *
 * Errors name the place: "PATH:LINE:COL: reason" with LINE the 1-based line where the
 * record starts and COL the 1-based byte column on that line.
 */
#ifndef IDX_CSV_H
#define IDX_CSV_H

#include "rp/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A record longer than this is refused (unless idx_csv_opts.max_record says otherwise). */
#define IDX_CSV_MAX_RECORD (16u << 20)

typedef struct idx_csv idx_csv;

typedef struct idx_csv_opts {
    char sep;             /* field separator; 0 = detect from the first line: a tab if it
                             has one, else ',' */
    bool quotes;          /* honour RFC 4180 double quotes */
    const char *encoding; /* NULL, "utf-8" or "utf8": the input is UTF-8 and is validated;
                             anything else is an iconv name ("latin1", "cp1252") and every
                             field is converted to UTF-8 */
    size_t max_record;    /* bytes; 0 = IDX_CSV_MAX_RECORD */
} idx_csv_opts;

typedef struct idx_csv_rec {
    size_t n;             /* number of fields, >= 1 */
    char **field;         /* field[i]: NUL-terminated UTF-8, writable; valid until the next
                             idx_csv_next or idx_csv_close */
    const uint32_t *col;  /* col[i]: 1-based byte column where field i starts */
    uint64_t line;        /* 1-based line where the record starts */
} idx_csv_rec;

/* Opens path for reading. RP_ENOENT (missing), RP_EIO (unreadable, a directory),
 * RP_EINVAL (unknown encoding) with err naming the path. */
int idx_csv_open(const char *path, const idx_csv_opts *opts, idx_csv **out, rp_error *err);

/* Reads the next non-blank record into *rec. Returns 1 with a record, 0 at end of file,
 * RP_EPARSE for a malformed record (err: "PATH:LINE:COL: reason"; reading may go on
 * with the next record, which starts on the line after the bad one), RP_EIO when the
 * file cannot be read (fatal), RP_ENOMEM. */
int idx_csv_next(idx_csv *r, idx_csv_rec *rec, rp_error *err);

/* True after an error that ends reading (I/O error, a UTF-16 file): idx_csv_next
 * returns that error again. After any other RP_EPARSE, reading can go on. */
bool idx_csv_fatal(const idx_csv *r);
/* The separator in use (after detection, once the first record was read). */
char idx_csv_sep(const idx_csv *r);
/* The path given to idx_csv_open (owned by the reader). */
const char *idx_csv_path(const idx_csv *r);
/* Bytes of the file consumed so far (for progress). */
uint64_t idx_csv_offset(const idx_csv *r);
/* Number of physical lines consumed so far. */
uint64_t idx_csv_lines(const idx_csv *r);

/* Closes the file and frees the reader. NULL is a no-op. */
void idx_csv_close(idx_csv *r);

/* Returns the byte offset of the first invalid UTF-8 sequence in s[0..len), or -1 when
 * s is valid UTF-8 (overlongs, surrogates and values above U+10FFFF are invalid). */
long idx_utf8_invalid_at(const char *s, size_t len);

#endif
