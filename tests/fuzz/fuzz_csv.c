/*
 * libFuzzer target: the CSV reader the importer uses (idx/csv.h) over a file holding the
 * input. The first byte picks the options (quotes, separator, encoding).
 */
#include "fuzz_service.h"

#include "idx/csv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[400];
    if (!path[0]) snprintf(path, sizeof path, "%s/in.csv", fz_tmpdir());
    if (size < 1) return 0;
    uint8_t o = data[0];
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    fwrite(data + 1, 1, size - 1, f);
    fclose(f);
    static const char seps[4] = {0, ',', '\t', '|'};
    idx_csv_opts opts = {.sep = seps[o & 3], .quotes = (o & 4) != 0,
                         .encoding = (o & 8) ? "latin1" : NULL, .max_record = (o & 16) ? 64 : 0};
    idx_csv *r;
    rp_error err = {0};
    if (idx_csv_open(path, &opts, &r, &err)) abort();
    idx_csv_rec rec;
    for (int i = 0; i < 100000; i++) {
        int rc = idx_csv_next(r, &rec, &err);
        if (rc == 0) break;
        if (rc == 1) {
            for (size_t k = 0; k < rec.n; k++)
                if (!rec.field[k] || idx_utf8_invalid_at(rec.field[k], strlen(rec.field[k])) >= 0)
                    abort(); /* fields are NUL-terminated valid UTF-8 */
            continue;
        }
        if (!err.msg[0] || !strstr(err.msg, path)) abort(); /* errors name the file */
        if (idx_csv_fatal(r)) break;
    }
    idx_csv_close(r);
    return 0;
}
