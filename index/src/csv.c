#include "idx/csv.h"

#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define RBUF 65536
#define RD_EOF (-1)
#define RD_ERR (-2)

struct idx_csv {
    FILE *f;
    char *path;
    unsigned char rbuf[RBUF];
    size_t rpos, rlen;
    uint64_t filled; /* bytes read from the file so far */
    int io_errno; /* set when fread failed */
    bool at_eof;

    char sep;
    bool quotes;
    bool validate;  /* UTF-8 input: validate fields */
    iconv_t cd;     /* other input: convert fields */
    char *encoding; /* as given, for messages */
    size_t max_record;
    bool started; /* the byte-order mark check is done */
    bool fatal;   /* a fatal error was reported: the reader returns it again */
    bool done;    /* the end of the file was consumed by a bad record */
    int fatal_rc;

    uint64_t line; /* line and column of the next byte */
    uint32_t col;

    char *buf; /* the record: fields back to back, each NUL-terminated */
    size_t len, cap;
    size_t *start;  /* field offsets in buf */
    uint32_t *cols; /* field columns */
    char **ptr;
    size_t nf, fcap;

    char *cbuf; /* converted fields (iconv) */
    size_t ccap;
};

static int fill(idx_csv *r)
{
    if (r->at_eof) return 0;
    r->rlen = fread(r->rbuf, 1, RBUF, r->f);
    r->rpos = 0;
    r->filled += r->rlen;
    if (r->rlen == 0) {
        if (ferror(r->f)) {
            r->io_errno = errno ? errno : EIO;
            return RD_ERR;
        }
        r->at_eof = true;
        return 0;
    }
    return (int)r->rlen;
}

static inline int peek(idx_csv *r)
{
    if (r->rpos == r->rlen) {
        int n = fill(r);
        if (n == RD_ERR) return RD_ERR;
        if (n == 0) return RD_EOF;
    }
    return r->rbuf[r->rpos];
}

static inline int get(idx_csv *r)
{
    int c = peek(r);
    if (c < 0) return c;
    r->rpos++;
    if (c == '\n') {
        r->line++;
        r->col = 1;
    } else {
        r->col++;
    }
    return c;
}

int idx_csv_open(const char *path, const idx_csv_opts *opts, idx_csv **out, rp_error *err)
{
    *out = NULL;
    idx_csv_opts o = opts ? *opts : (idx_csv_opts){.sep = ',', .quotes = true};
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        return rp_errorf(err, e == ENOENT ? RP_ENOENT : RP_EIO, "%s: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) return rp_errorf(err, RP_EIO, "%s: is a directory, not a file", path);
    idx_csv *r = calloc(1, sizeof *r);
    if (!r) return rp_errorf(err, RP_ENOMEM, "%s: out of memory", path);
    r->cd = (iconv_t)-1;
    r->path = strdup(path);
    if (!r->path) goto nomem;
    r->sep = o.sep;
    r->quotes = o.quotes;
    r->max_record = o.max_record ? o.max_record : IDX_CSV_MAX_RECORD;
    r->line = 1;
    r->col = 1;
    const char *enc = o.encoding;
    if (!enc || !strcasecmp(enc, "utf-8") || !strcasecmp(enc, "utf8")) {
        r->validate = true;
    } else {
        r->encoding = strdup(enc);
        if (!r->encoding) goto nomem;
        r->cd = iconv_open("UTF-8", enc);
        if (r->cd == (iconv_t)-1) {
            rp_errorf(err, RP_EINVAL, "%s: unknown encoding '%s' (try latin1, cp1252, utf-8)",
                      path, enc);
            idx_csv_close(r);
            return RP_EINVAL;
        }
    }
    r->f = fopen(path, "rb");
    if (!r->f) {
        int e = errno;
        rp_errorf(err, e == ENOENT ? RP_ENOENT : RP_EIO, "%s: %s", path, strerror(e));
        idx_csv_close(r);
        return err ? err->code : RP_EIO;
    }
    *out = r;
    return RP_OK;
nomem:
    idx_csv_close(r);
    return rp_errorf(err, RP_ENOMEM, "%s: out of memory", path);
}

void idx_csv_close(idx_csv *r)
{
    if (!r) return;
    if (r->f) fclose(r->f);
    if (r->cd != (iconv_t)-1) iconv_close(r->cd);
    free(r->path);
    free(r->encoding);
    free(r->buf);
    free(r->start);
    free(r->cols);
    free(r->ptr);
    free(r->cbuf);
    free(r);
}

char idx_csv_sep(const idx_csv *r)
{
    return r->sep;
}

const char *idx_csv_path(const idx_csv *r)
{
    return r->path;
}

bool idx_csv_fatal(const idx_csv *r)
{
    return r->fatal;
}

uint64_t idx_csv_offset(const idx_csv *r)
{
    return r->filled - (r->rlen - r->rpos);
}

uint64_t idx_csv_lines(const idx_csv *r)
{
    return r->col > 1 ? r->line : r->line - 1;
}

long idx_utf8_invalid_at(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return (long)i;
        }
        for (size_t k = 1; k <= n; k++) {
            if (i + k >= len || (s[i + k] & 0xc0) != 0x80) return (long)i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return (long)i;
        i += n + 1;
    }
    return -1;
}

static int grow(idx_csv *r, size_t need, rp_error *err)
{
    if (need <= r->cap) return RP_OK;
    size_t cap = r->cap ? r->cap : 256;
    while (cap < need) cap *= 2;
    char *b = realloc(r->buf, cap);
    if (!b) return rp_errorf(err, RP_ENOMEM, "%s: out of memory for a %zu-byte line", r->path, need);
    r->buf = b;
    r->cap = cap;
    return RP_OK;
}

static int new_field(idx_csv *r, rp_error *err)
{
    if (r->nf == r->fcap) {
        size_t cap = r->fcap ? r->fcap * 2 : 16;
        size_t *s = realloc(r->start, cap * sizeof *s);
        if (s) r->start = s;
        uint32_t *c = realloc(r->cols, cap * sizeof *c);
        if (c) r->cols = c;
        char **p = realloc(r->ptr, cap * sizeof *p);
        if (p) r->ptr = p;
        if (!s || !c || !p) return rp_errorf(err, RP_ENOMEM, "%s: out of memory", r->path);
        r->fcap = cap;
    }
    r->start[r->nf] = r->len;
    r->cols[r->nf] = r->col;
    r->nf++;
    return RP_OK;
}

/* Skips the rest of the current physical line, so that reading resumes after it. */
static void skip_line(idx_csv *r)
{
    int c;
    while ((c = get(r)) >= 0 && c != '\n') {
    }
}

static int io_error(idx_csv *r, rp_error *err)
{
    r->fatal = true;
    r->fatal_rc = rp_errorf(err, RP_EIO, "%s: read error: %s", r->path, strerror(r->io_errno));
    return r->fatal_rc;
}

/* Converts or validates the fields of the finished record and points r->ptr at them. */
static int finish(idx_csv *r, uint64_t rec_line, rp_error *err)
{
    if (r->cd == (iconv_t)-1) {
        for (size_t i = 0; i < r->nf; i++) {
            char *s = r->buf + r->start[i];
            r->ptr[i] = s;
            if (r->validate) {
                long bad = idx_utf8_invalid_at(s, strlen(s));
                if (bad >= 0)
                    return rp_errorf(err, RP_EPARSE,
                                     "%s:%llu:%lu: invalid UTF-8 (byte 0x%02X)",
                                     r->path, (unsigned long long)rec_line,
                                     (unsigned long)(r->cols[i] + (uint32_t)bad),
                                     (unsigned)(unsigned char)s[bad]);
            }
        }
        return RP_OK;
    }
    size_t used = 0;
    size_t *off = r->start; /* reused: after conversion, offsets into cbuf */
    for (size_t i = 0; i < r->nf; i++) {
        char *in = r->buf + r->start[i];
        size_t inleft = strlen(in);
        off[i] = used;
        iconv(r->cd, NULL, NULL, NULL, NULL);
        for (;;) {
            size_t need = used + inleft * 4 + 8;
            if (need > r->ccap) {
                size_t cap = r->ccap ? r->ccap : 256;
                while (cap < need) cap *= 2;
                char *b = realloc(r->cbuf, cap);
                if (!b) return rp_errorf(err, RP_ENOMEM, "%s: out of memory", r->path);
                r->cbuf = b;
                r->ccap = cap;
            }
            char *o = r->cbuf + used;
            size_t oleft = r->ccap - used - 1;
            size_t rc = iconv(r->cd, &in, &inleft, &o, &oleft);
            used = (size_t)(o - r->cbuf);
            if (rc != (size_t)-1) break;
            if (errno == E2BIG) continue;
            return rp_errorf(err, RP_EPARSE, "%s:%llu:%lu: byte 0x%02X is not valid %s", r->path,
                             (unsigned long long)rec_line,
                             (unsigned long)(r->cols[i] + (uint32_t)(in - (r->buf + r->start[i]))),
                             (unsigned)(unsigned char)*in, r->encoding);
        }
        r->cbuf[used++] = '\0';
    }
    for (size_t i = 0; i < r->nf; i++) r->ptr[i] = r->cbuf + off[i];
    return RP_OK;
}

static void detect_sep(idx_csv *r)
{
    if (r->sep) return;
    if (r->rpos == r->rlen) fill(r);
    r->sep = ',';
    for (size_t i = r->rpos; i < r->rlen && r->rbuf[i] != '\n'; i++) {
        if (r->rbuf[i] == '\t') {
            r->sep = '\t';
            break;
        }
    }
}

int idx_csv_next(idx_csv *r, idx_csv_rec *rec, rp_error *err)
{
    if (r->fatal) return r->fatal_rc;
    if (r->done) return 0;
    if (!r->started) {
        r->started = true;
        if (peek(r) == RD_ERR) return io_error(r, err);
        /* fill() made the whole start of the file visible */
        if (r->rlen >= 2 && ((r->rbuf[0] == 0xff && r->rbuf[1] == 0xfe) ||
                             (r->rbuf[0] == 0xfe && r->rbuf[1] == 0xff))) {
            r->fatal = true;
            r->fatal_rc = rp_errorf(err, RP_EPARSE,
                                    "%s:1:1: the file is UTF-16 (byte-order mark); convert it to "
                                    "UTF-8", r->path);
            return r->fatal_rc;
        }
        if (r->validate && r->rlen >= 3 && r->rbuf[0] == 0xef && r->rbuf[1] == 0xbb &&
            r->rbuf[2] == 0xbf)
            r->rpos = 3; /* the UTF-8 byte-order mark carries no data */
        detect_sep(r);
    }
    for (;;) {
        r->len = 0;
        r->nf = 0;
        uint64_t rec_line = r->line;
        bool any = false; /* consumed at least one byte of this record */
        bool quoted_any = false;
        int rc = new_field(r, err);
        if (rc) return rc;
        enum { START, PLAIN, QUOTED, AFTER } st = START;
        uint64_t qline = 0;
        uint32_t qcol = 0;
        for (;;) {
            uint32_t ccol = r->col;
            uint64_t cline = r->line;
            int c = get(r);
            if (c == RD_ERR) return io_error(r, err);
            if (c != RD_EOF) any = true;
            if (st == QUOTED) {
                if (c == RD_EOF) {
                    /* the rest of the file went into this record: nothing more to read */
                    r->done = true;
                    return rp_errorf(err, RP_EPARSE,
                                     "%s:%llu:%lu: quoted field never closed (the file ends "
                                     "inside it)",
                                     r->path, (unsigned long long)qline, (unsigned long)qcol);
                }
                if (c == '"') {
                    int n = peek(r);
                    if (n == '"') {
                        get(r);
                    } else {
                        st = AFTER;
                        continue;
                    }
                } else if (c == 0) {
                    skip_line(r);
                    return rp_errorf(err, RP_EPARSE, "%s:%llu:%lu: NUL byte (is this a text file?)",
                                     r->path, (unsigned long long)cline, (unsigned long)ccol);
                }
                if (r->len + 1 >= r->max_record) goto too_long;
                if ((rc = grow(r, r->len + 2, err))) return rc;
                r->buf[r->len++] = (char)c;
                continue;
            }
            bool eol = c == RD_EOF || c == '\n';
            if (c == '\r') {
                if (peek(r) == '\n') {
                    get(r);
                } else { /* a lone CR ends a line too (classic Mac files) */
                    r->line++;
                    r->col = 1;
                }
                eol = true;
            }
            if (eol || c == r->sep) {
                if ((rc = grow(r, r->len + 1, err))) return rc;
                r->buf[r->len++] = '\0';
                if (eol) break;
                if ((rc = new_field(r, err))) return rc;
                st = START;
                continue;
            }
            if (st == AFTER) {
                skip_line(r);
                return rp_errorf(err, RP_EPARSE,
                                 "%s:%llu:%lu: unexpected '%c' after a closing quote (a quote "
                                 "inside a quoted field must be doubled)",
                                 r->path, (unsigned long long)cline, (unsigned long)ccol,
                                 c >= 32 && c < 127 ? c : '?');
            }
            if (st == START && c == '"' && r->quotes) {
                st = QUOTED;
                quoted_any = true;
                qline = cline;
                qcol = ccol;
                continue;
            }
            if (c == 0) {
                skip_line(r);
                return rp_errorf(err, RP_EPARSE, "%s:%llu:%lu: NUL byte (is this a text file?)",
                                 r->path, (unsigned long long)cline, (unsigned long)ccol);
            }
            st = PLAIN;
            if (r->len + 1 >= r->max_record) goto too_long;
            if ((rc = grow(r, r->len + 2, err))) return rc;
            r->buf[r->len++] = (char)c;
        }
        if (!any) return 0; /* end of file */
        if (r->nf == 1 && r->len == 1 && !quoted_any) continue; /* blank line */
        if ((rc = finish(r, rec_line, err))) return rc;
        rec->n = r->nf;
        rec->field = r->ptr;
        rec->col = r->cols;
        rec->line = rec_line;
        return 1;
    too_long:
        skip_line(r);
        return rp_errorf(err, RP_EPARSE, "%s:%llu: line longer than %zu bytes", r->path,
                         (unsigned long long)rec_line, r->max_record);
    }
}
