/*
 * idx/import.h — `recpipe import`: interactions + item catalogue (+ tags) → DATA_DIR.
 *
 * Inputs
 * - interactions: `user,item[,rating][,timestamp]`, comma or tab separated (detected from
 *   the first line unless given), RFC 4180 quoting, CRLF or LF. A first line whose first
 *   field is not a number is a header; a header naming the user and item columns (user,
 *   userId, user_id; item, itemId, item_id, movieId, movie_id; rating, value, score;
 *   timestamp, ts, time) maps the columns by name and other columns are ignored;
 *   ratings_columns names them explicitly; otherwise columns are taken in the order above.
 *   With a rating column events are EVENT_TYPE_RATING (5) carrying the rating; without,
 *   EVENT_TYPE_VIEW (1) with value 1.0. Without a timestamp column ts is 0.
 * - catalogue, format IDX_ITEMS_CSV: `id,title[,categories]`, '|'-separated categories,
 *   "(no genres listed)" meaning none, header detected as above; a header naming the id
 *   and title columns (id, itemId, item_id, item, movieId, movie_id; title, name;
 *   categories, category, genres, genre) maps them by name and other columns are ignored.
 *   Format IDX_ITEMS_ML100K (MovieLens 100k u.item): '|'-separated, no quoting, no header,
 *   `id|title|release date|video release date|IMDb URL|` then 19 genre flags (0/1) for
 *   unknown, Action, Adventure, Animation, Children's, Comedy, Crime, Documentary, Drama,
 *   Fantasy, Film-Noir, Horror, Musical, Mystery, Romance, Sci-Fi, Thriller, War, Western.
 * - tags (optional): `user,item,tag[,timestamp]` (MovieLens tags.csv); each item gets the
 *   distinct tag texts given to it.
 * Text is converted to UTF-8 from the named encoding (iconv names: latin1, cp1252, ...);
 * UTF-8 input is validated. A UTF-8 byte-order mark is skipped.
 *
 * Output (see idx/dataset.h): users and items get dense indices in ascending external
 * id; items are the catalogue plus items seen only in interactions (those are kept,
 * counted and reported). Each user's events are sorted by timestamp, ties in file order.
 * A repeated (user, item) pair is merged into one event: the later occurrence (by
 * timestamp, then file order) wins, so the merged event has the latest timestamp and
 * the last rating given; the merge is counted. An item's created time is its first
 * interaction (over all occurrences, 0 when it has none).
 *
 * Bad input: a malformed line is RP_EPARSE with err "FILE:LINE[:COL]: reason", and
 * nothing is written; with skip_bad the line is skipped, counted and (the first
 * max_reported of them) reported. The output directory is written next to its final
 * path and renamed into place only when complete.
 */
#ifndef IDX_IMPORT_H
#define IDX_IMPORT_H

#include "rp/err.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum idx_items_format {
    IDX_ITEMS_CSV = 0,
    IDX_ITEMS_ML100K = 1,
} idx_items_format;

typedef struct idx_import_opts {
    const char *ratings; /* interactions file (required) */
    const char *items;   /* catalogue file (required) */
    const char *tags;    /* tags file, or NULL */
    const char *out;     /* DATA_DIR to create */

    char ratings_sep;    /* 0 = detect: tab if the first line has one, else ',' */
    int ratings_header;  /* -1 = detect, 0 = no header, 1 = the first line is a header */
    const char *ratings_encoding; /* NULL = UTF-8 */
    const char *ratings_columns;  /* NULL = by header names or positional; else the role of
                                     each column in order, "-" for one to ignore:
                                     "item,user,-,timestamp" */

    idx_items_format items_format;
    char items_sep;      /* 0 = ',' for CSV, '|' for ML100K */
    int items_header;    /* -1 = detect, 0 = none, 1 = the first line is a header */
    const char *items_encoding; /* NULL = UTF-8; "latin1" for MovieLens 100k */

    const char *tags_encoding;  /* NULL = UTF-8 */

    bool skip_bad;       /* skip and count malformed lines instead of failing */
    bool force;          /* replace an existing `out` */
    unsigned max_reported; /* skipped lines and missing items reported; 0 = 10 */

    /* Receives one warning line at a time (a skipped line, items not in the catalogue,
     * tags naming unknown items); may be NULL. The string is valid during the call. */
    void (*report)(void *ctx, const char *msg);
    void *report_ctx;

    /* Called now and then while a file is read, with the phase ("items", "ratings",
     * "tags", then "writing" with done = total = 0); may be NULL. */
    void (*progress)(void *ctx, const char *phase, uint64_t done, uint64_t total);
    void *progress_ctx;

    /* When non-NULL and set (by a signal handler), the import stops at the next check
     * with RP_ECANCELED and removes what it had written. */
    const volatile sig_atomic_t *cancel;
} idx_import_opts;

typedef struct idx_import_stats {
    uint32_t users;
    uint32_t items;           /* catalogue items + items seen only in interactions */
    uint32_t catalogue_items; /* items listed in the catalogue */
    uint32_t rated_items;     /* items with at least one interaction */
    uint32_t categories;
    uint32_t tags;            /* distinct tag texts */
    uint64_t events;          /* after merging duplicates */
    uint64_t duplicates;      /* interactions merged into an earlier (user, item) pair */
    uint64_t skipped;         /* malformed lines skipped (skip_bad), all files */
    uint64_t not_in_catalogue_events; /* kept events whose item the catalogue lacks */
    uint32_t not_in_catalogue_items;  /* distinct such items */
    uint64_t tag_lines;       /* tag lines read */
    uint64_t tags_unknown_item; /* tag lines naming an item neither listed nor rated */
} idx_import_stats;

/* Runs the import. stats may be NULL. Errors: RP_EPARSE (malformed input, err
 * "FILE:LINE:COL: reason" or "FILE: reason" for an empty file), RP_ENOENT / RP_EIO
 * (a file cannot be read, the output cannot be written), RP_EEXIST (out exists and
 * force is off), RP_EINVAL (bad options), RP_ENOMEM, RP_EFULL, RP_ECANCELED. On error nothing is left
 * at `out` (an existing directory is left untouched). */
int idx_import(const idx_import_opts *opts, idx_import_stats *stats, rp_error *err);

#endif
